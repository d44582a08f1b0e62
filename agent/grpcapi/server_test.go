package grpcapi_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/edgefleet/edgefleet/agent/grpcapi"
	"github.com/edgefleet/edgefleet/agent/grpcapi/grpcapitest"
	pb "github.com/edgefleet/edgefleet/agent/grpcapi/inferencepb"
	"github.com/edgefleet/edgefleet/agent/metrics"
	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/tensor"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// le returns vals as little-endian bytes (reflection is fine in tests).
func le(vals any) []byte {
	b, err := binary.Append(nil, binary.LittleEndian, vals)
	if err != nil {
		panic(err)
	}
	return b
}

// dtypeCases holds one tensor per data type, with edge values.
func dtypeCases() []tensor.Tensor {
	return []tensor.Tensor{
		{Name: "bool", DType: tensor.Bool, Shape: []int64{2, 2}, Data: []byte{1, 0, 0, 1}},
		{Name: "uint8", DType: tensor.Uint8, Shape: []int64{3}, Data: []byte{0, 127, 255}},
		{Name: "uint16", DType: tensor.Uint16, Shape: []int64{3}, Data: le([]uint16{0, 1, math.MaxUint16})},
		{Name: "uint32", DType: tensor.Uint32, Shape: []int64{3}, Data: le([]uint32{0, 1 << 31, math.MaxUint32})},
		{Name: "uint64", DType: tensor.Uint64, Shape: []int64{1, 3}, Data: le([]uint64{0, 1 << 63, math.MaxUint64})},
		{Name: "int8", DType: tensor.Int8, Shape: []int64{4}, Data: le([]int8{math.MinInt8, -1, 0, math.MaxInt8})},
		{Name: "int16", DType: tensor.Int16, Shape: []int64{4}, Data: le([]int16{math.MinInt16, -1, 300, math.MaxInt16})},
		{Name: "int32", DType: tensor.Int32, Shape: []int64{3}, Data: le([]int32{math.MinInt32, -1, math.MaxInt32})},
		{Name: "int64", DType: tensor.Int64, Shape: []int64{3}, Data: le([]int64{math.MinInt64, -1, math.MaxInt64})},
		{Name: "fp16", DType: tensor.FP16, Shape: []int64{3}, Data: le([]uint16{0x3c00, 0xc000, 0x7c00})},
		{Name: "bf16", DType: tensor.BF16, Shape: []int64{2}, Data: le([]uint16{0x3f80, 0xff80})},
		{Name: "fp32", DType: tensor.FP32, Shape: []int64{2, 2}, Data: le([]float32{1.5, float32(math.Copysign(0, -1)), float32(math.Inf(-1)), math.MaxFloat32})},
		{Name: "fp64", DType: tensor.FP64, Shape: []int64{3}, Data: le([]float64{math.Pi, -1e-300, math.Inf(1)})},
		{Name: "bytes", DType: tensor.Bytes, Shape: []int64{3}, Strings: [][]byte{[]byte("hello"), {}, {0, 0xff, 0}}},
		{Name: "empty", DType: tensor.FP32, Shape: []int64{0, 4}},
	}
}

func assertTensorEqual(t *testing.T, what string, got, want tensor.Tensor) {
	t.Helper()
	if got.Name != want.Name || got.DType != want.DType || !slices.Equal(got.Shape, want.Shape) {
		t.Fatalf("%s: got %s %v %v, want %s %v %v", what, got.Name, got.DType, got.Shape, want.Name, want.DType, want.Shape)
	}
	if !bytes.Equal(got.Data, want.Data) {
		t.Fatalf("%s %q: data %x, want %x", what, want.Name, got.Data, want.Data)
	}
	if len(got.Strings) != len(want.Strings) {
		t.Fatalf("%s %q: %d strings, want %d", what, want.Name, len(got.Strings), len(want.Strings))
	}
	for i := range want.Strings {
		if !bytes.Equal(got.Strings[i], want.Strings[i]) {
			t.Fatalf("%s %q: string %d = %q, want %q", what, want.Name, i, got.Strings[i], want.Strings[i])
		}
	}
}

// TestDTypeRoundTrip sends every data type raw and typed through a real gRPC
// connection, checks the bytes the backend received and the reply, and that
// the reply is raw exactly when the request was (or the type has no typed form).
func TestDTypeRoundTrip(t *testing.T) {
	b := newEchoBackend()
	h := grpcapitest.Start(t, b, grpcapi.Options{})
	for _, raw := range []bool{true, false} {
		for _, in := range dtypeCases() {
			name := in.Name + map[bool]string{true: "/raw", false: "/typed"}[raw]
			t.Run(name, func(t *testing.T) {
				req := &models.InferRequest{ID: "id-" + name, Inputs: []tensor.Tensor{in}}
				pr, err := grpcapi.NewInferRequest("echo", "", req, raw)
				if err != nil {
					t.Fatal(err)
				}
				wantRaw := raw || !grpcapi.HasTypedContents(in.DType)
				if got := len(pr.RawInputContents) > 0; got != wantRaw {
					t.Fatalf("request raw = %v, want %v", got, wantRaw)
				}
				resp, err := h.Client.ModelInfer(ctxT(t), pr)
				if err != nil {
					t.Fatal(err)
				}
				if got := len(resp.RawOutputContents) > 0; got != wantRaw {
					t.Fatalf("response raw = %v, want %v", got, wantRaw)
				}
				if !wantRaw && resp.Outputs[0].Contents == nil {
					t.Fatal("typed response without contents")
				}
				if resp.Outputs[0].Datatype != in.DType.String() {
					t.Fatalf("datatype %q, want %q", resp.Outputs[0].Datatype, in.DType)
				}
				assertTensorEqual(t, "backend input", b.lastRequest().Inputs[0], in)
				res, err := grpcapi.DecodeOutputs(resp)
				if err != nil {
					t.Fatal(err)
				}
				if res.ID != req.ID || res.ModelName != "echo" || res.ModelVersion != "2" {
					t.Fatalf("response id/model/version = %q/%q/%q", res.ID, res.ModelName, res.ModelVersion)
				}
				assertTensorEqual(t, "output", res.Outputs[0], in)
			})
		}
	}
}

// TestAllDTypesInOneRequest sends every type in one raw request: raw entries
// must stay paired with their inputs.
func TestAllDTypesInOneRequest(t *testing.T) {
	b := newEchoBackend()
	h := grpcapitest.Start(t, b, grpcapi.Options{})
	ins := dtypeCases()
	res, err := h.Infer(ctxT(t), "echo", "1", &models.InferRequest{Inputs: ins}, true)
	if err != nil {
		t.Fatal(err)
	}
	if res.ModelVersion != "1" || len(res.Outputs) != len(ins) {
		t.Fatalf("version %q, %d outputs", res.ModelVersion, len(res.Outputs))
	}
	for i := range ins {
		assertTensorEqual(t, "output", res.Outputs[i], ins[i])
	}
}

// TestTypedWireValues checks the typed contents on the wire against values
// written out by hand, so a symmetric encode/decode bug cannot hide.
func TestTypedWireValues(t *testing.T) {
	h := grpcapitest.Start(t, newEchoBackend(), grpcapi.Options{})
	req := &pb.ModelInferRequest{
		ModelName: "echo",
		Inputs: []*pb.ModelInferRequest_InferInputTensor{
			{Name: "i8", Datatype: "INT8", Shape: []int64{2}, Contents: &pb.InferTensorContents{IntContents: []int32{-2, 5}}},
			{Name: "u16", Datatype: "UINT16", Shape: []int64{2}, Contents: &pb.InferTensorContents{UintContents: []uint32{258, 65535}}},
			{Name: "f32", Datatype: "FP32", Shape: []int64{1}, Contents: &pb.InferTensorContents{Fp32Contents: []float32{1}}},
			{Name: "b", Datatype: "BOOL", Shape: []int64{2}, Contents: &pb.InferTensorContents{BoolContents: []bool{true, false}}},
		},
	}
	resp, err := h.Client.ModelInfer(ctxT(t), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.RawOutputContents) != 0 {
		t.Fatal("typed request got a raw response")
	}
	for i, in := range req.Inputs {
		if !proto.Equal(resp.Outputs[i].Contents, in.Contents) {
			t.Errorf("output %q contents %v, want %v", in.Name, resp.Outputs[i].Contents, in.Contents)
		}
	}

	raw := &pb.ModelInferRequest{
		ModelName: "echo",
		Inputs: []*pb.ModelInferRequest_InferInputTensor{
			{Name: "i16", Datatype: "INT16", Shape: []int64{2}},
			{Name: "s", Datatype: "BYTES", Shape: []int64{2}},
		},
		RawInputContents: [][]byte{{0xfe, 0xff, 0x2c, 0x01}, {2, 0, 0, 0, 'h', 'i', 0, 0, 0, 0}},
	}
	resp, err = h.Client.ModelInfer(ctxT(t), raw)
	if err != nil {
		t.Fatal(err)
	}
	for i := range raw.RawInputContents {
		if !bytes.Equal(resp.RawOutputContents[i], raw.RawInputContents[i]) {
			t.Errorf("raw output %d = %x, want %x", i, resp.RawOutputContents[i], raw.RawInputContents[i])
		}
		if resp.Outputs[i].Contents != nil {
			t.Errorf("raw response output %d has typed contents", i)
		}
	}
	res, err := grpcapi.DecodeOutputs(resp)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Outputs[0].Data; !bytes.Equal(got, le([]int16{-2, 300})) {
		t.Errorf("INT16 decoded %x", got)
	}
	if got := res.Outputs[1].Strings; len(got) != 2 || string(got[0]) != "hi" || len(got[1]) != 0 {
		t.Errorf("BYTES decoded %q", got)
	}
}

// TestScalar sends 0-d tensors (Silero VAD's sr input is a scalar int64).
func TestScalar(t *testing.T) {
	b := newEchoBackend()
	h := grpcapitest.Start(t, b, grpcapi.Options{})
	sr := tensor.Tensor{Name: "sr", DType: tensor.Int64, Shape: []int64{}, Data: le([]int64{16000})}
	s := tensor.Tensor{Name: "s", DType: tensor.Bytes, Shape: []int64{}, Strings: [][]byte{[]byte("x")}}
	for _, raw := range []bool{true, false} {
		res, err := h.Infer(ctxT(t), "echo", "", &models.InferRequest{Inputs: []tensor.Tensor{sr, s}}, raw)
		if err != nil {
			t.Fatalf("raw=%v: %v", raw, err)
		}
		got := b.lastRequest().Inputs[0]
		if len(got.Shape) != 0 || got.NumElements() != 1 || !bytes.Equal(got.Data, sr.Data) {
			t.Fatalf("raw=%v: backend got %v %x", raw, got.Shape, got.Data)
		}
		assertTensorEqual(t, "output", res.Outputs[0], sr)
		assertTensorEqual(t, "output", res.Outputs[1], s)
	}
}

func TestOutputSubsetAndID(t *testing.T) {
	b := newEchoBackend()
	h := grpcapitest.Start(t, b, grpcapi.Options{})
	ins := []tensor.Tensor{
		{Name: "a", DType: tensor.FP32, Shape: []int64{1}, Data: le([]float32{1})},
		{Name: "b", DType: tensor.Int32, Shape: []int64{1}, Data: le([]int32{2})},
		{Name: "c", DType: tensor.Uint8, Shape: []int64{1}, Data: []byte{3}},
	}
	tests := []struct {
		name    string
		id      string
		outputs []string
		want    []string
	}{
		{"all", "", nil, []string{"a", "b", "c"}},
		{"one", "req-1", []string{"b"}, []string{"b"}},
		{"two reordered", "ünïcode id", []string{"c", "a"}, []string{"c", "a"}},
	}
	for _, tt := range tests {
		for _, raw := range []bool{true, false} {
			res, err := h.Infer(ctxT(t), "echo", "", &models.InferRequest{ID: tt.id, Inputs: ins, Outputs: tt.outputs}, raw)
			if err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			var got []string
			for _, o := range res.Outputs {
				got = append(got, o.Name)
			}
			if !slices.Equal(got, tt.want) || res.ID != tt.id {
				t.Errorf("%s raw=%v: outputs %v id %q, want %v id %q", tt.name, raw, got, res.ID, tt.want, tt.id)
			}
			if !slices.Equal(b.lastRequest().Outputs, tt.outputs) {
				t.Errorf("%s: backend asked for %v, want %v", tt.name, b.lastRequest().Outputs, tt.outputs)
			}
		}
	}
}

func fp32In(name string, shape []int64, vals ...float32) *pb.ModelInferRequest_InferInputTensor {
	return &pb.ModelInferRequest_InferInputTensor{Name: name, Datatype: "FP32", Shape: shape, Contents: &pb.InferTensorContents{Fp32Contents: vals}}
}

func rawIn(name, dt string, shape ...int64) *pb.ModelInferRequest_InferInputTensor {
	return &pb.ModelInferRequest_InferInputTensor{Name: name, Datatype: dt, Shape: shape}
}

// TestBadInput sends malformed requests: each must be INVALID_ARGUMENT with
// a message naming the problem, must not reach the backend when the front
// end can tell, and the server must keep serving.
func TestBadInput(t *testing.T) {
	type in = pb.ModelInferRequest_InferInputTensor
	type out = pb.ModelInferRequest_InferRequestedOutputTensor
	type contents = pb.InferTensorContents
	tests := []struct {
		name     string
		req      *pb.ModelInferRequest
		msg      string // substring of the status message
		reachesB bool   // the backend is the one to reject it
	}{
		{"no model", &pb.ModelInferRequest{}, "model_name is empty", false},
		{"unknown datatype", &pb.ModelInferRequest{Inputs: []*in{{Name: "x", Datatype: "FLOAT32", Shape: []int64{1}}}, RawInputContents: [][]byte{{0, 0, 0, 0}}}, `input "x": datatype "FLOAT32" is not one of`, false},
		{"empty datatype", &pb.ModelInferRequest{Inputs: []*in{{Name: "x", Shape: []int64{1}}}}, `datatype "" is not one of`, false},
		{"negative dim", &pb.ModelInferRequest{Inputs: []*in{fp32In("x", []int64{-1, 2}, 1, 2)}}, "negative dimension", false},
		{"overflowing shape", &pb.ModelInferRequest{Inputs: []*in{fp32In("x", []int64{math.MaxInt64, 4}, 1)}}, "overflows", false},
		{"typed count", &pb.ModelInferRequest{Inputs: []*in{fp32In("x", []int64{2, 2}, 1, 2, 3)}}, `input "x": shape [2 2] needs 4 elements, fp32_contents has 3`, false},
		{"no data", &pb.ModelInferRequest{Inputs: []*in{rawIn("x", "FP32", 2)}}, `input "x": no data`, false},
		{"wrong field", &pb.ModelInferRequest{Inputs: []*in{{Name: "x", Datatype: "FP32", Shape: []int64{1}, Contents: &contents{IntContents: []int32{1}}}}}, "FP32 takes its elements in fp32_contents, got int_contents", false},
		{"extra field", &pb.ModelInferRequest{Inputs: []*in{{Name: "x", Datatype: "INT64", Shape: []int64{1}, Contents: &contents{Int64Contents: []int64{1}, BytesContents: [][]byte{{1}}}}}}, "got bytes_contents", false},
		{"typed fp16", &pb.ModelInferRequest{Inputs: []*in{{Name: "h", Datatype: "FP16", Shape: []int64{1}, Contents: &contents{Fp32Contents: []float32{1}}}}}, "FP16 has no typed contents field", false},
		{"int8 range", &pb.ModelInferRequest{Inputs: []*in{{Name: "x", Datatype: "INT8", Shape: []int64{2}, Contents: &contents{IntContents: []int32{1, 128}}}}}, "element 1 is 128, out of range for INT8", false},
		{"int16 range", &pb.ModelInferRequest{Inputs: []*in{{Name: "x", Datatype: "INT16", Shape: []int64{1}, Contents: &contents{IntContents: []int32{-32769}}}}}, "out of range for INT16", false},
		{"uint8 range", &pb.ModelInferRequest{Inputs: []*in{{Name: "x", Datatype: "UINT8", Shape: []int64{1}, Contents: &contents{UintContents: []uint32{256}}}}}, "out of range for UINT8", false},
		{"uint16 range", &pb.ModelInferRequest{Inputs: []*in{{Name: "x", Datatype: "UINT16", Shape: []int64{1}, Contents: &contents{UintContents: []uint32{70000}}}}}, "out of range for UINT16", false},
		{"raw size", &pb.ModelInferRequest{Inputs: []*in{rawIn("x", "FP32", 1, 3)}, RawInputContents: [][]byte{make([]byte, 8)}}, `input "x": shape [1 3] of FP32 needs 3 elements (12 bytes), raw contents hold 8 bytes`, false},
		{"raw huge shape", &pb.ModelInferRequest{Inputs: []*in{rawIn("x", "FP64", 1<<62)}, RawInputContents: [][]byte{make([]byte, 8)}}, "more than 2^63 bytes", false},
		{"raw count", &pb.ModelInferRequest{Inputs: []*in{rawIn("x", "UINT8", 1), rawIn("y", "UINT8", 1)}, RawInputContents: [][]byte{{1}}}, "raw_input_contents has 1 entries for 2 inputs", false},
		{"raw and contents", &pb.ModelInferRequest{Inputs: []*in{fp32In("x", []int64{1}, 1)}, RawInputContents: [][]byte{make([]byte, 4)}}, `input "x": contents must not be set when the request uses raw_input_contents`, false},
		{"raw bool", &pb.ModelInferRequest{Inputs: []*in{rawIn("b", "BOOL", 3)}, RawInputContents: [][]byte{{0, 1, 2}}}, "BOOL element 2 is byte 2", false},
		{"bytes short prefix", &pb.ModelInferRequest{Inputs: []*in{rawIn("s", "BYTES", 2)}, RawInputContents: [][]byte{{1, 0, 0, 0, 'a', 0, 0, 0}}}, "missing 4-byte length prefix", false},
		{"bytes long element", &pb.ModelInferRequest{Inputs: []*in{rawIn("s", "BYTES", 1)}, RawInputContents: [][]byte{{9, 0, 0, 0, 'a'}}}, "declares 9 bytes, only 1 remain", false},
		{"bytes trailing", &pb.ModelInferRequest{Inputs: []*in{rawIn("s", "BYTES", 1)}, RawInputContents: [][]byte{{1, 0, 0, 0, 'a', 'b'}}}, "1 bytes after the 1 elements", false},
		{"bytes count", &pb.ModelInferRequest{Inputs: []*in{rawIn("s", "BYTES", 1000)}, RawInputContents: [][]byte{{0, 0, 0, 0}}}, "cannot hold 1000 elements", false},
		{"typed bytes count", &pb.ModelInferRequest{Inputs: []*in{{Name: "s", Datatype: "BYTES", Shape: []int64{2}, Contents: &contents{BytesContents: [][]byte{{1}}}}}}, "bytes_contents has 1", false},
		{"duplicate input", &pb.ModelInferRequest{Inputs: []*in{fp32In("x", []int64{1}, 1), fp32In("x", []int64{1}, 2)}}, `input "x" appears more than once`, false},
		{"unnamed input", &pb.ModelInferRequest{Inputs: []*in{fp32In("", []int64{1}, 1)}}, "input 0 has no name", false},
		{"duplicate output", &pb.ModelInferRequest{Inputs: []*in{fp32In("x", []int64{1}, 1)}, Outputs: []*out{{Name: "x"}, {Name: "x"}}}, `output "x" is requested more than once`, false},
		{"unnamed output", &pb.ModelInferRequest{Inputs: []*in{fp32In("x", []int64{1}, 1)}, Outputs: []*out{{}}}, "requested output 0 has no name", false},
		{"unknown output", &pb.ModelInferRequest{Inputs: []*in{fp32In("x", []int64{1}, 1)}, Outputs: []*out{{Name: "nope"}}}, `has no output "nope"`, true},
	}
	// Many inputs take the map path of the duplicate check.
	many := &pb.ModelInferRequest{}
	for i := range 40 {
		many.Inputs = append(many.Inputs, fp32In(string(rune('A'+i)), []int64{1}, 1))
	}
	many.Inputs = append(many.Inputs, fp32In("C", []int64{1}, 1))
	tests = append(tests, struct {
		name     string
		req      *pb.ModelInferRequest
		msg      string
		reachesB bool
	}{"duplicate among many", many, `input "C" appears more than once`, false})

	b := newEchoBackend()
	h := grpcapitest.Start(t, b, grpcapi.Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.req.ModelName == "" && tt.name != "no model" {
				tt.req.ModelName = "echo"
			}
			before := b.calls.Load()
			_, err := h.Client.ModelInfer(ctxT(t), tt.req)
			st := status.Convert(err)
			if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tt.msg) {
				t.Fatalf("got %v %q, want InvalidArgument containing %q", st.Code(), st.Message(), tt.msg)
			}
			if reached := b.calls.Load() != before; reached != tt.reachesB {
				t.Fatalf("backend reached = %v, want %v", reached, tt.reachesB)
			}
		})
	}
	// Still serving.
	if _, err := h.Infer(ctxT(t), "echo", "", &models.InferRequest{Inputs: dtypeCases()[:1]}, true); err != nil {
		t.Fatalf("after bad input: %v", err)
	}
}

func TestErrorCodes(t *testing.T) {
	h := grpcapitest.Start(t, newEchoBackend(), grpcapi.Options{})
	x := []tensor.Tensor{{Name: "x", DType: tensor.FP32, Shape: []int64{1}, Data: le([]float32{1})}}
	tests := []struct {
		model, version string
		timeout        time.Duration
		code           codes.Code
		msg            string
	}{
		{"nope", "", 0, codes.NotFound, `model "nope": not found`},
		{"echo", "7", 0, codes.NotFound, `version "7": not found`},
		{"overloaded", "", 0, codes.ResourceExhausted, "queue full"},
		{"unavailable", "", 0, codes.Unavailable, "unloading"},
		{"internal", "", 0, codes.Internal, "session run failed"},
		{"badout", "", 0, codes.Internal, `model "badout": output 0`},
		{"slow", "", 50 * time.Millisecond, codes.DeadlineExceeded, ""},
	}
	for _, tt := range tests {
		t.Run(tt.model+"/"+tt.version, func(t *testing.T) {
			ctx := ctxT(t)
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			_, err := h.Infer(ctx, tt.model, tt.version, &models.InferRequest{Inputs: x}, true)
			st := status.Convert(err)
			if st.Code() != tt.code || !strings.Contains(st.Message(), tt.msg) {
				t.Fatalf("got %v %q, want %v containing %q", st.Code(), st.Message(), tt.code, tt.msg)
			}
		})
	}
}

// TestCode checks the error → status mapping directly, including wrapped
// context errors that a client deadline alone would not prove.
func TestCode(t *testing.T) {
	tests := []struct {
		err  error
		want codes.Code
	}{
		{nil, codes.OK},
		{models.ErrNotFound, codes.NotFound},
		{fmt.Errorf("m: %w", models.ErrInvalidInput), codes.InvalidArgument},
		{fmt.Errorf("m: %w", models.ErrUnavailable), codes.Unavailable},
		{fmt.Errorf("m: %w", models.ErrOverloaded), codes.ResourceExhausted},
		{fmt.Errorf("run: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{fmt.Errorf("run: %w", context.Canceled), codes.Canceled},
		{status.Error(codes.PermissionDenied, "no"), codes.PermissionDenied},
		{io.ErrUnexpectedEOF, codes.Internal},
	}
	for _, tt := range tests {
		if got := grpcapi.Code(tt.err); got != tt.want {
			t.Errorf("Code(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestMetadataRPCs(t *testing.T) {
	b := newEchoBackend()
	h := grpcapitest.Start(t, b, grpcapi.Options{})
	ctx := ctxT(t)
	c := h.Client

	live, err := c.ServerLive(ctx, &pb.ServerLiveRequest{})
	if err != nil || !live.Live {
		t.Fatalf("ServerLive = %v, %v", live, err)
	}
	ready, err := c.ServerReady(ctx, &pb.ServerReadyRequest{})
	if err != nil || !ready.Ready {
		t.Fatalf("ServerReady = %v, %v", ready, err)
	}
	b.ready.Store(false)
	ready, err = c.ServerReady(ctx, &pb.ServerReadyRequest{})
	if err != nil || ready.Ready {
		t.Fatalf("ServerReady when not ready = %v, %v", ready, err)
	}
	b.ready.Store(true)

	smd, err := c.ServerMetadata(ctx, &pb.ServerMetadataRequest{})
	if err != nil || smd.Name != "edgefleet" || smd.Version != "test" || !slices.Equal(smd.Extensions, []string{"model_repository"}) {
		t.Fatalf("ServerMetadata = %v, %v", smd, err)
	}

	v1 := "1"
	md, err := c.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: "echo", Version: &v1})
	if err != nil {
		t.Fatal(err)
	}
	if md.Name != "echo" || md.Platform != "onnxruntime_onnx" || !slices.Equal(md.Versions, []string{"1", "2"}) ||
		len(md.Inputs) != 1 || md.Inputs[0].Name != "x" || md.Inputs[0].Datatype != "FP32" || !slices.Equal(md.Inputs[0].Shape, []int64{-1, 1, 8, 8}) ||
		len(md.Outputs) != 1 || md.Outputs[0].Datatype != "FP32" || md.Properties["execution_provider"] != "cpu" || md.Properties["version"] != "1" {
		t.Fatalf("ModelMetadata = %v", md)
	}

	rtests := []struct {
		name, version string
		ready         bool
		code          codes.Code
	}{
		{"echo", "", true, codes.OK},
		{"echo", "1", true, codes.OK},
		{"loading", "", false, codes.OK},
		{"echo", "9", false, codes.NotFound},
		{"nope", "", false, codes.NotFound},
		{"", "", false, codes.InvalidArgument},
	}
	for _, tt := range rtests {
		req := &pb.ModelReadyRequest{Name: tt.name}
		if tt.version != "" {
			req.Version = &tt.version
		}
		r, err := c.ModelReady(ctx, req)
		if status.Code(err) != tt.code || r.GetReady() != tt.ready {
			t.Errorf("ModelReady(%q, %q) = %v, %v; want %v, %v", tt.name, tt.version, r.GetReady(), err, tt.ready, tt.code)
		}
	}
	for _, name := range []string{"nope", ""} {
		_, err := c.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: name})
		if want := map[string]codes.Code{"nope": codes.NotFound, "": codes.InvalidArgument}[name]; status.Code(err) != want {
			t.Errorf("ModelMetadata(%q) = %v, want %v", name, err, want)
		}
	}
}

func TestHealth(t *testing.T) {
	b := newEchoBackend()
	h := grpcapitest.Start(t, b, grpcapi.Options{})
	ctx := ctxT(t)
	check := func(service string) healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		r, err := h.Health.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("Check(%q): %v", service, err)
		}
		return r.Status
	}
	for _, svc := range []string{"", grpcapi.ServiceName} {
		if got := check(svc); got != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("Check(%q) = %v, want SERVING", svc, got)
		}
	}
	if _, err := h.Health.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("Check(nope) = %v, want NotFound", err)
	}

	watch, err := h.Health.Watch(ctx, &healthpb.HealthCheckRequest{Service: grpcapi.ServiceName})
	if err != nil {
		t.Fatal(err)
	}
	recv := func() healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		r, err := watch.Recv()
		if err != nil {
			t.Fatalf("Watch: %v", err)
		}
		return r.Status
	}
	if got := recv(); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch first = %v", got)
	}

	b.ready.Store(false)
	if got := check(""); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Check when not ready = %v", got)
	}
	if got := recv(); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Watch after not ready = %v", got)
	}

	// WatchHealth pushes a change without any Check.
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { h.Server.WatchHealth(wctx, time.Millisecond); close(done) }()
	b.ready.Store(true)
	if got := recv(); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch after ready again = %v", got)
	}
	stop()
	<-done

	h.Server.Shutdown()
	if got := check(grpcapi.ServiceName); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Check after Shutdown = %v", got)
	}
	// Inference still answers while draining.
	if _, err := h.Infer(ctx, "echo", "", &models.InferRequest{Inputs: dtypeCases()[:1]}, false); err != nil {
		t.Fatalf("infer after Shutdown: %v", err)
	}
}

func TestReflection(t *testing.T) {
	h := grpcapitest.Start(t, newEchoBackend(), grpcapi.Options{})
	stream, err := reflectionpb.NewServerReflectionClient(h.Conn).ServerReflectionInfo(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.CloseSend()
	ask := func(req *reflectionpb.ServerReflectionRequest) *reflectionpb.ServerReflectionResponse {
		t.Helper()
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		r, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := ask(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
	var names []string
	for _, s := range r.GetListServicesResponse().GetService() {
		names = append(names, s.Name)
	}
	for _, want := range []string{grpcapi.ServiceName, "grpc.health.v1.Health"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}
	r = ask(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: grpcapi.ServiceName}})
	files := r.GetFileDescriptorResponse().GetFileDescriptorProto()
	if len(files) == 0 {
		t.Fatalf("no descriptor for %s: %v", grpcapi.ServiceName, r)
	}
	var fd descriptorpb.FileDescriptorProto
	if err := proto.Unmarshal(files[0], &fd); err != nil {
		t.Fatal(err)
	}
	var methods []string
	for _, s := range fd.GetService() {
		for _, m := range s.GetMethod() {
			methods = append(methods, m.GetName())
		}
	}
	if want := []string{"ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer",
		"RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"}; !slices.Equal(methods, want) {
		t.Errorf("methods %v, want %v", methods, want)
	}
}

// TestWireCompat pins the field numbers and types of the canonical
// open_inference_grpc.proto, so an edit of the .proto cannot silently break
// compatibility with KServe and Triton clients.
func TestWireCompat(t *testing.T) {
	fd := protodesc.ToFileDescriptorProto(pb.File_open_inference_grpc_proto)
	if fd.GetPackage() != "inference" {
		t.Fatalf("package %q", fd.GetPackage())
	}
	want := map[string]string{
		"ServerLiveResponse.live":                                 "1 bool",
		"ServerReadyResponse.ready":                               "1 bool",
		"ModelReadyRequest.name":                                  "1 string",
		"ModelReadyRequest.version":                               "2 string",
		"ModelReadyResponse.ready":                                "1 bool",
		"ServerMetadataResponse.name":                             "1 string",
		"ServerMetadataResponse.version":                          "2 string",
		"ServerMetadataResponse.extensions":                       "3 string repeated",
		"ModelMetadataRequest.name":                               "1 string",
		"ModelMetadataRequest.version":                            "2 string",
		"ModelMetadataResponse.name":                              "1 string",
		"ModelMetadataResponse.versions":                          "2 string repeated",
		"ModelMetadataResponse.platform":                          "3 string",
		"ModelMetadataResponse.inputs":                            "4 message repeated",
		"ModelMetadataResponse.outputs":                           "5 message repeated",
		"ModelMetadataResponse.properties":                        "6 message repeated",
		"ModelMetadataResponse.TensorMetadata.name":               "1 string",
		"ModelMetadataResponse.TensorMetadata.datatype":           "2 string",
		"ModelMetadataResponse.TensorMetadata.shape":              "3 int64 repeated",
		"ModelInferRequest.model_name":                            "1 string",
		"ModelInferRequest.model_version":                         "2 string",
		"ModelInferRequest.id":                                    "3 string",
		"ModelInferRequest.parameters":                            "4 message repeated",
		"ModelInferRequest.inputs":                                "5 message repeated",
		"ModelInferRequest.outputs":                               "6 message repeated",
		"ModelInferRequest.raw_input_contents":                    "7 bytes repeated",
		"ModelInferRequest.InferInputTensor.name":                 "1 string",
		"ModelInferRequest.InferInputTensor.datatype":             "2 string",
		"ModelInferRequest.InferInputTensor.shape":                "3 int64 repeated",
		"ModelInferRequest.InferInputTensor.parameters":           "4 message repeated",
		"ModelInferRequest.InferInputTensor.contents":             "5 message",
		"ModelInferRequest.InferRequestedOutputTensor.name":       "1 string",
		"ModelInferRequest.InferRequestedOutputTensor.parameters": "2 message repeated",
		"ModelInferResponse.model_name":                           "1 string",
		"ModelInferResponse.model_version":                        "2 string",
		"ModelInferResponse.id":                                   "3 string",
		"ModelInferResponse.parameters":                           "4 message repeated",
		"ModelInferResponse.outputs":                              "5 message repeated",
		"ModelInferResponse.raw_output_contents":                  "6 bytes repeated",
		"ModelInferResponse.InferOutputTensor.name":               "1 string",
		"ModelInferResponse.InferOutputTensor.datatype":           "2 string",
		"ModelInferResponse.InferOutputTensor.shape":              "3 int64 repeated",
		"ModelInferResponse.InferOutputTensor.parameters":         "4 message repeated",
		"ModelInferResponse.InferOutputTensor.contents":           "5 message",
		"InferParameter.bool_param":                               "1 bool",
		"InferParameter.int64_param":                              "2 int64",
		"InferParameter.string_param":                             "3 string",
		"InferParameter.double_param":                             "4 double",
		"InferParameter.uint64_param":                             "5 uint64",
		"InferTensorContents.bool_contents":                       "1 bool repeated",
		"InferTensorContents.int_contents":                        "2 int32 repeated",
		"InferTensorContents.int64_contents":                      "3 int64 repeated",
		"InferTensorContents.uint_contents":                       "4 uint32 repeated",
		"InferTensorContents.uint64_contents":                     "5 uint64 repeated",
		"InferTensorContents.fp32_contents":                       "6 float repeated",
		"InferTensorContents.fp64_contents":                       "7 double repeated",
		"InferTensorContents.bytes_contents":                      "8 bytes repeated",
		// Triton's model repository extension (grpc_service.proto).
		"ModelRepositoryParameter.bool_param":          "1 bool",
		"ModelRepositoryParameter.int64_param":         "2 int64",
		"ModelRepositoryParameter.string_param":        "3 string",
		"ModelRepositoryParameter.bytes_param":         "4 bytes",
		"RepositoryIndexRequest.repository_name":       "1 string",
		"RepositoryIndexRequest.ready":                 "2 bool",
		"RepositoryIndexResponse.models":               "1 message repeated",
		"RepositoryIndexResponse.ModelIndex.name":      "1 string",
		"RepositoryIndexResponse.ModelIndex.version":   "2 string",
		"RepositoryIndexResponse.ModelIndex.state":     "3 string",
		"RepositoryIndexResponse.ModelIndex.reason":    "4 string",
		"RepositoryModelLoadRequest.repository_name":   "1 string",
		"RepositoryModelLoadRequest.model_name":        "2 string",
		"RepositoryModelLoadRequest.parameters":        "3 message repeated",
		"RepositoryModelUnloadRequest.repository_name": "1 string",
		"RepositoryModelUnloadRequest.model_name":      "2 string",
		"RepositoryModelUnloadRequest.parameters":      "3 message repeated",
	}
	got := map[string]string{}
	var walk func(prefix string, msgs []*descriptorpb.DescriptorProto)
	walk = func(prefix string, msgs []*descriptorpb.DescriptorProto) {
		for _, m := range msgs {
			if m.GetOptions().GetMapEntry() {
				continue
			}
			for _, f := range m.GetField() {
				s := strings.TrimPrefix(strings.ToLower(f.GetType().String()), "type_") // TYPE_INT64 → int64
				s = strings.TrimSpace(strings.Join([]string{strconv.Itoa(int(f.GetNumber())), s}, " "))
				if f.GetLabel() == descriptorpb.FieldDescriptorProto_LABEL_REPEATED {
					s += " repeated"
				}
				got[prefix+m.GetName()+"."+f.GetName()] = s
			}
			walk(prefix+m.GetName()+".", m.GetNestedType())
		}
	}
	walk("", fd.GetMessageType())
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected field %s (%s)", k, got[k])
		}
	}
	// The parameter value is a oneof named parameter_choice.
	for _, m := range fd.GetMessageType() {
		if m.GetName() == "InferParameter" && (len(m.GetOneofDecl()) != 1 || m.GetOneofDecl()[0].GetName() != "parameter_choice") {
			t.Errorf("InferParameter oneofs %v", m.GetOneofDecl())
		}
	}
}

func TestMaxRecvMsgSize(t *testing.T) {
	b := newEchoBackend()
	h := grpcapitest.Start(t, b, grpcapi.Options{MaxRecvMsgSize: 4096})
	big := tensor.Tensor{Name: "x", DType: tensor.Uint8, Shape: []int64{8192}, Data: make([]byte, 8192)}
	_, err := h.Infer(ctxT(t), "echo", "", &models.InferRequest{Inputs: []tensor.Tensor{big}}, true)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("oversized request: %v, want ResourceExhausted", err)
	}
	if b.calls.Load() != 0 {
		t.Fatal("oversized request reached the backend")
	}
	small := tensor.Tensor{Name: "x", DType: tensor.Uint8, Shape: []int64{16}, Data: make([]byte, 16)}
	if _, err := h.Infer(ctxT(t), "echo", "", &models.InferRequest{Inputs: []tensor.Tensor{small}}, true); err != nil {
		t.Fatalf("small request after oversized: %v", err)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := metrics.New(reg)
	h := grpcapitest.Start(t, newEchoBackend(), grpcapi.Options{Metrics: m})
	x := []tensor.Tensor{{Name: "x", DType: tensor.FP32, Shape: []int64{1}, Data: le([]float32{1})}}
	ctx := ctxT(t)
	for range 2 {
		if _, err := h.Infer(ctx, "echo", "", &models.InferRequest{Inputs: x}, true); err != nil {
			t.Fatal(err)
		}
	}
	_, _ = h.Infer(ctx, "nope", "", &models.InferRequest{Inputs: x}, true)
	_, _ = h.Infer(ctx, "overloaded", "", &models.InferRequest{Inputs: x}, true)
	_, _ = h.Client.ModelInfer(ctx, &pb.ModelInferRequest{ModelName: "echo", Inputs: []*pb.ModelInferRequest_InferInputTensor{fp32In("x", []int64{2}, 1)}})
	_, _ = h.Infer(ctx, "internal", "", &models.InferRequest{Inputs: x}, true)
	tests := []struct {
		labels []string
		want   float64
	}{
		{[]string{"echo", "2", "grpc", metrics.OutcomeSuccess}, 2},
		{[]string{"", "", "grpc", metrics.OutcomeNotFound}, 1},
		{[]string{"overloaded", "", "grpc", metrics.OutcomeOverloaded}, 1},
		{[]string{"echo", "", "grpc", metrics.OutcomeClientError}, 1},
		{[]string{"internal", "", "grpc", metrics.OutcomeServerError}, 1},
	}
	for _, tt := range tests {
		if got := testutil.ToFloat64(m.RequestsTotal.WithLabelValues(tt.labels...)); got != tt.want {
			t.Errorf("requests_total%v = %v, want %v", tt.labels, got, tt.want)
		}
	}
	if n := testutil.CollectAndCount(m.RequestDuration, "edgefleet_agent_request_duration_seconds"); n != 5 {
		t.Errorf("request_duration series = %d, want 5", n)
	}
}
