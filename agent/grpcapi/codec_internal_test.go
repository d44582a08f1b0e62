package grpcapi

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"
	"unsafe"

	"google.golang.org/protobuf/proto"

	"github.com/edgefleet/edgefleet/agent/grpcapi/inferencepb"
	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/tensor"
)

func leBytes(vals any) []byte {
	b, err := binary.Append(nil, binary.LittleEndian, vals)
	if err != nil {
		panic(err)
	}
	return b
}

// fixedCases are the types whose typed contents may alias tensor bytes.
var fixedCases = []tensor.Tensor{
	{Name: "u32", DType: tensor.Uint32, Shape: []int64{3}, Data: leBytes([]uint32{0, 1 << 31, math.MaxUint32})},
	{Name: "i32", DType: tensor.Int32, Shape: []int64{3}, Data: leBytes([]int32{math.MinInt32, -1, 7})},
	{Name: "u64", DType: tensor.Uint64, Shape: []int64{2}, Data: leBytes([]uint64{1 << 63, 3})},
	{Name: "i64", DType: tensor.Int64, Shape: []int64{2}, Data: leBytes([]int64{math.MinInt64, -5})},
	{Name: "f32", DType: tensor.FP32, Shape: []int64{3}, Data: leBytes([]float32{1.5, -2, float32(math.Inf(1))})},
	{Name: "f64", DType: tensor.FP64, Shape: []int64{2}, Data: leBytes([]float64{math.Pi, -0.25})},
	{Name: "i16", DType: tensor.Int16, Shape: []int64{2}, Data: leBytes([]int16{-2, 300})},
	{Name: "u16", DType: tensor.Uint16, Shape: []int64{2}, Data: leBytes([]uint16{258, 65535})},
}

// withAlias runs f with aliasOK set to v, restoring it afterwards. Tests
// using it must not run in parallel with others.
func withAlias(t *testing.T, v bool, f func()) {
	old := aliasOK
	aliasOK = v
	defer func() { aliasOK = old }()
	f()
}

// TestCopyPathMatchesAliasPath checks that the copying conversion (used on
// big-endian machines and for misaligned buffers) and the aliasing one agree
// on every fixed-size type, in both directions.
func TestCopyPathMatchesAliasPath(t *testing.T) {
	for _, tc := range fixedCases {
		t.Run(tc.Name, func(t *testing.T) {
			var typed [2]*inferencepb.InferTensorContents
			var decoded [2][]byte
			for i, alias := range []bool{true, false} {
				withAlias(t, alias, func() {
					typed[i] = typedContents(&tc)
					req := &inferencepb.ModelInferRequest{Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{
						{Name: tc.Name, Datatype: tc.DType.String(), Shape: tc.Shape, Contents: typed[i]},
					}}
					ts, err := DecodeInputs(req)
					if err != nil {
						t.Fatal(err)
					}
					decoded[i] = ts[0].Data
				})
			}
			if !proto.Equal(typed[0], typed[1]) {
				t.Errorf("typed contents differ: alias %v, copy %v", typed[0], typed[1])
			}
			for i := range decoded {
				if !bytes.Equal(decoded[i], tc.Data) {
					t.Errorf("decoded (alias=%v) %x, want %x", i == 0, decoded[i], tc.Data)
				}
			}

			// A misaligned buffer must be copied, not aliased, and still be right.
			buf := make([]byte, len(tc.Data)+1)
			copy(buf[1:], tc.Data)
			mis := tc
			mis.Data = buf[1:]
			if got := typedContents(&mis); !proto.Equal(got, typed[0]) {
				t.Errorf("misaligned: %v, want %v", got, typed[0])
			}
		})
	}
}

// TestDecodeReferencesWire checks that decoding does no per-element work
// where it can: raw contents and (little-endian) 32/64-bit typed contents are
// referenced, not copied.
func TestDecodeReferencesWire(t *testing.T) {
	if !aliasOK {
		t.Skip("big-endian machine: typed contents are copied by design")
	}
	fp := []float32{1, 2, 3, 4}
	raw := leBytes(fp)
	req := &inferencepb.ModelInferRequest{
		Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{
			{Name: "r", Datatype: "FP32", Shape: []int64{4}},
			{Name: "s", Datatype: "BYTES", Shape: []int64{1}},
		},
		RawInputContents: [][]byte{raw, {2, 0, 0, 0, 'o', 'k'}},
	}
	ts, err := DecodeInputs(req)
	if err != nil {
		t.Fatal(err)
	}
	if &ts[0].Data[0] != &raw[0] {
		t.Error("raw FP32 input was copied")
	}
	if &ts[1].Strings[0][0] != &req.RawInputContents[1][4] {
		t.Error("raw BYTES element was copied")
	}
	typed := &inferencepb.ModelInferRequest{Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{
		{Name: "t", Datatype: "FP32", Shape: []int64{2, 2}, Contents: &inferencepb.InferTensorContents{Fp32Contents: fp}},
	}}
	ts, err = DecodeInputs(typed)
	if err != nil {
		t.Fatal(err)
	}
	if unsafe.Pointer(&ts[0].Data[0]) != unsafe.Pointer(&fp[0]) || !bytes.Equal(ts[0].Data, raw) {
		t.Error("typed FP32 input was copied or differs")
	}
	// Encoding an aligned FP32 output as typed contents references it too.
	out := tensor.Tensor{Name: "y", DType: tensor.FP32, Shape: []int64{4}, Data: raw}
	resp, err := EncodeOutputs(&models.InferResponse{Outputs: []tensor.Tensor{out}}, false)
	if err != nil {
		t.Fatal(err)
	}
	if uintptr(unsafe.Pointer(&raw[0]))%4 == 0 && unsafe.Pointer(&resp.Outputs[0].Contents.Fp32Contents[0]) != unsafe.Pointer(&raw[0]) {
		t.Error("aligned FP32 output was copied")
	}
}

// TestDecodeAllocs is an allocation budget: decoding a raw request allocates
// only the tensor slice, whatever the tensor size.
func TestDecodeAllocs(t *testing.T) {
	req := &inferencepb.ModelInferRequest{
		ModelName:        "m",
		Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "FP32", Shape: []int64{1, 3, 48, 320}}},
		RawInputContents: [][]byte{make([]byte, 4*3*48*320)},
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := DecodeInputs(req); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 1 {
		t.Errorf("DecodeInputs allocates %v times per raw request, want ≤ 1", allocs)
	}
	typed := &inferencepb.ModelInferRequest{
		ModelName: "m",
		Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "FP32", Shape: []int64{1, 3, 48, 320},
			Contents: &inferencepb.InferTensorContents{Fp32Contents: make([]float32, 3*48*320)}}},
	}
	if aliasOK {
		allocs = testing.AllocsPerRun(100, func() {
			if _, err := DecodeInputs(typed); err != nil {
				t.Fatal(err)
			}
		})
		if allocs > 1 {
			t.Errorf("DecodeInputs allocates %v times per typed FP32 request, want ≤ 1", allocs)
		}
	}
}
