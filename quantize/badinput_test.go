package quantize

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/quantize/internal/graph"
	"github.com/edgefleet/edgefleet/quantize/onnxpb"
)

// TestBadInput feeds each entry point the inputs users get wrong and checks
// for a clear, matchable error.
func TestBadInput(t *testing.T) {
	needRuntime(t)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(8, 8))

	// A MatMul whose weight lives in an external file.
	ext := newBuilder(17).input("x", graph.Float, -1, 4).output("y", graph.Float, -1, 2).
		node("MatMul", "mm", []string{"x", "w"}, []string{"y"})
	ext.m.Graph.Initializer = []*onnxpb.TensorProto{{
		Name: "w", Dims: []int64{4, 2}, DataType: int32(graph.Float), DataLocation: onnxpb.TensorProto_EXTERNAL,
		ExternalData: []*onnxpb.StringStringEntryProto{{Key: "location", Value: "w.bin"}},
	}}
	extModel := ext.bytes(t)

	// A custom-domain operator onnxruntime cannot run.
	custom := newBuilder(17).input("x", graph.Float, -1, 4).output("y", graph.Float, -1, 2).
		init("w", []int64{4, 2}, randFloats(r, 8, 1)).
		node("MatMul", "mm", []string{"x", "w"}, []string{"h"})
	custom.m.Graph.Node = append(custom.m.Graph.Node, &onnxpb.NodeProto{OpType: "FancyOp", Domain: "com.example", Name: "fancy", Input: []string{"h"}, Output: []string{"y"}})
	custom.m.OpsetImport = append(custom.m.OpsetImport, &onnxpb.OperatorSetIdProto{Domain: "com.example", Version: 1})
	customModel := custom.bytes(t)

	// Only Relu: nothing to quantize.
	relu := newBuilder(17).input("x", graph.Float, -1, 4).output("y", graph.Float, -1, 4).
		node("Relu", "r", []string{"x"}, []string{"y"}).bytes(t)
	calib := []Batch{{{Name: "x", Shape: []int64{1, 4}, Data: []float32{1, 2, 3, 4}}}}

	type entry func(model []byte) error
	dynamic := func(m []byte) error { _, _, err := Dynamic(ctx, m, Options{}); return err }
	static := func(m []byte) error { _, _, err := Static(ctx, m, calib, Options{}); return err }
	fp16 := func(m []byte) error { _, _, err := FP16(ctx, m, Options{}); return err }
	tests := []struct {
		name  string
		fn    entry
		model []byte
		want  error
		msg   string
	}{
		{"dynamic: not ONNX", dynamic, []byte("GIF89a..."), ErrNotONNX, "not an ONNX model"},
		{"static: not ONNX", static, []byte{0x08}, ErrNotONNX, "not an ONNX model"},
		{"fp16: not ONNX", fp16, nil, ErrNotONNX, "empty"},
		{"dynamic: external data missing", dynamic, extModel, ErrExternalData, "w.bin"},
		{"fp16: external data missing", fp16, extModel, ErrExternalData, "w.bin"},
		{"static: unknown domain", static, customModel, ErrUnsupported, "com.example"},
		{"dynamic: nothing to quantize", dynamic, relu, ErrNothingToQuantize, "MatMul"},
		{"static: empty calibration", func(m []byte) error { _, _, err := Static(ctx, m, []Batch{}, Options{}); return err }, relu, ErrEmptyCalibration, "calibration"},
		{"static: calibration dtype", func(m []byte) error {
			_, _, err := Static(ctx, m, []Batch{{{Name: "x", Shape: []int64{1, 4}, Data: []string{"a"}}}}, Options{IncludeOpTypes: nil})
			return err
		}, smallMatMul(t, r), ErrInvalidOptions, "want []float32"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.fn(tc.model)
			if err == nil {
				t.Fatal("no error")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %q does not mention %q", err, tc.msg)
			}
		})
	}

	t.Run("external data loaded with ExternalDataDir", func(t *testing.T) {
		dir := t.TempDir()
		w := graph.FloatTensor("", nil, randFloats(r, 8, 1)).RawData
		if err := os.WriteFile(filepath.Join(dir, "w.bin"), w, 0o644); err != nil {
			t.Fatal(err)
		}
		q, rep, err := Dynamic(ctx, extModel, Options{ExternalDataDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Quantized) != 1 {
			t.Fatalf("quantized %v", rep.Quantized)
		}
		run(t, q, Batch{{Name: "x", Shape: []int64{2, 4}, Data: randFloats(r, 8, 1)}})
	})
	t.Run("context cancelled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, _, err := Dynamic(cctx, smallMatMul(t, r), Options{}); !errors.Is(err, context.Canceled) {
			t.Fatalf("error = %v, want context.Canceled", err)
		}
	})
}

func smallMatMul(t *testing.T, r *rand.Rand) []byte {
	return newBuilder(17).input("x", graph.Float, -1, 4).output("y", graph.Float, -1, 2).
		init("w", []int64{4, 2}, randFloats(r, 8, 1)).
		node("MatMul", "mm", []string{"x", "w"}, []string{"y"}).bytes(t)
}
