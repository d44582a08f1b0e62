package grpcapi_test

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/edgefleet/edgefleet/agent/grpcapi"
	pb "github.com/edgefleet/edgefleet/agent/grpcapi/inferencepb"
	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/tensor"
)

// FuzzDecodeInputs feeds arbitrary wire bytes to the request decoder (and,
// as the layouts are alike, to the response decoder). Decoding must never
// panic; what it accepts must be valid tensors that survive a re-encode and
// decode unchanged.
func FuzzDecodeInputs(f *testing.F) {
	for _, raw := range []bool{true, false} {
		for _, in := range dtypeCases() {
			pr, err := grpcapi.NewInferRequest("echo", "1", &models.InferRequest{ID: "x", Inputs: []tensor.Tensor{in}, Outputs: []string{in.Name}}, raw)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(mustMarshal(f, pr))
		}
		all, err := grpcapi.NewInferRequest("echo", "", &models.InferRequest{Inputs: dtypeCases()}, raw)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(mustMarshal(f, all))
	}
	type in = pb.ModelInferRequest_InferInputTensor
	bad := []*pb.ModelInferRequest{
		{ModelName: "m", Inputs: []*in{rawIn("s", "BYTES", 2)}, RawInputContents: [][]byte{{1, 0, 0, 0, 'a', 0xff, 0xff, 0xff, 0x7f}}},
		{ModelName: "m", Inputs: []*in{rawIn("x", "FP32", 1<<40, 1<<40)}, RawInputContents: [][]byte{{0}}},
		{ModelName: "m", Inputs: []*in{rawIn("b", "BOOL", 2)}, RawInputContents: [][]byte{{1, 7}}},
		{ModelName: "m", Inputs: []*in{{Name: "x", Datatype: "INT8", Shape: []int64{1}, Contents: &pb.InferTensorContents{IntContents: []int32{-129}}}}},
		{ModelName: "m", Inputs: []*in{fp32In("x", []int64{}, 1), fp32In("x", nil, 2)}},
	}
	for _, r := range bad {
		f.Add(mustMarshal(f, r))
	}
	f.Add([]byte{})
	f.Add([]byte{0x3a, 0xff, 0xff, 0xff, 0xff, 0x0f})

	f.Fuzz(func(t *testing.T, data []byte) {
		var req pb.ModelInferRequest
		if proto.Unmarshal(data, &req) == nil {
			ts, err := grpcapi.DecodeInputs(&req)
			if err == nil {
				checkReencode(t, ts, len(req.RawInputContents) > 0)
			}
		}
		var resp pb.ModelInferResponse
		if proto.Unmarshal(data, &resp) == nil {
			if res, err := grpcapi.DecodeOutputs(&resp); err == nil {
				for i := range res.Outputs {
					if err := res.Outputs[i].Validate(); err != nil {
						t.Fatalf("DecodeOutputs accepted an invalid tensor: %v", err)
					}
				}
			}
		}
	})
}

func checkReencode(t *testing.T, ts []tensor.Tensor, raw bool) {
	t.Helper()
	for i := range ts {
		if err := ts[i].Validate(); err != nil {
			t.Fatalf("DecodeInputs accepted an invalid tensor: %v", err)
		}
	}
	pr, err := grpcapi.NewInferRequest("m", "", &models.InferRequest{Inputs: ts}, raw)
	if err != nil {
		t.Fatalf("re-encode: %v", err)
	}
	again, err := grpcapi.DecodeInputs(pr)
	if err != nil {
		t.Fatalf("decode of re-encoded request: %v", err)
	}
	for i := range ts {
		a, b := ts[i], again[i]
		if a.Name != b.Name || a.DType != b.DType || len(a.Shape) != len(b.Shape) || !bytes.Equal(a.Data, b.Data) || len(a.Strings) != len(b.Strings) {
			t.Fatalf("round trip changed tensor %d: %+v → %+v", i, a, b)
		}
		for j := range a.Strings {
			if !bytes.Equal(a.Strings[j], b.Strings[j]) {
				t.Fatalf("round trip changed string %d of tensor %d", j, i)
			}
		}
	}
}

func mustMarshal(f *testing.F, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		f.Fatal(err)
	}
	return b
}
