package quantize

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/edgefleet/edgefleet/quantize/internal/graph"
	"github.com/edgefleet/edgefleet/quantize/onnxpb"
)

// tinyTransformer builds one attention block with LayerNorm and a
// classifier: x [N, 8, 16] -> logits [N, 10].
func tinyTransformer(t testing.TB, r *rand.Rand) []byte {
	const d = 16
	ints := func(name string, v ...int64) *onnxpb.AttributeProto {
		return &onnxpb.AttributeProto{Name: name, Type: onnxpb.AttributeProto_INTS, Ints: v}
	}
	b := newBuilder(17).input("x", graph.Float, -1, 8, d).output("logits", graph.Float, -1, 10)
	for _, w := range []string{"wq", "wk", "wv", "wo"} {
		b.init(w, []int64{d, d}, randFloats(r, d*d, 0.4))
	}
	ones := make([]float32, d)
	for i := range ones {
		ones[i] = 1
	}
	b.init("bo", []int64{d}, randFloats(r, d, 0.1)).init("gamma", []int64{d}, ones).init("beta", []int64{d}, make([]float32, d)).
		init("scale", nil, []float32{0.25}).init("fc.w", []int64{10, d}, randFloats(r, 10*d, 0.5)).init("fc.b", []int64{10}, randFloats(r, 10, 0.1)).
		node("MatMul", "q", []string{"x", "wq"}, []string{"q"}).
		node("MatMul", "k", []string{"x", "wk"}, []string{"k"}).
		node("MatMul", "v", []string{"x", "wv"}, []string{"v"}).
		node("Transpose", "kt", []string{"k"}, []string{"kt"}, ints("perm", 0, 2, 1)).
		node("MatMul", "scores", []string{"q", "kt"}, []string{"s"}).
		node("Mul", "scaled", []string{"s", "scale"}, []string{"ss"}).
		node("Softmax", "softmax", []string{"ss"}, []string{"a"}, graph.IntAttr("axis", -1)).
		node("MatMul", "attend", []string{"a", "v"}, []string{"o"}).
		node("MatMul", "proj", []string{"o", "wo"}, []string{"p"}).
		node("Add", "proj_bias", []string{"p", "bo"}, []string{"pb"}).
		node("Add", "residual", []string{"pb", "x"}, []string{"res"}).
		node("LayerNormalization", "ln", []string{"res", "gamma", "beta"}, []string{"ln"}, graph.IntAttr("axis", -1)).
		node("ReduceMean", "pool", []string{"ln"}, []string{"pooled"}, ints("axes", 1), graph.IntAttr("keepdims", 0)).
		node("Gemm", "fc", []string{"pooled", "fc.w", "fc.b"}, []string{"logits"}, graph.IntAttr("transB", 1))
	return b.bytes(t)
}

func TestTinyTransformer(t *testing.T) {
	needRuntime(t)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(51, 52))
	fp32 := tinyTransformer(t, r)
	batches := func(n int) []Batch {
		out := make([]Batch, n)
		for i := range out {
			out[i] = Batch{{Name: "x", Shape: []int64{4, 8, 16}, Data: randFloats(r, 4*8*16, 1)}}
		}
		return out
	}
	// Random inputs give every batch its own extremes; compare on a
	// calibrated batch so that saturation outside the calibrated ranges
	// (a property of the data, not of the quantizer) does not blur the test.
	calib := batches(8)
	test := calib[0]
	want := run(t, fp32, test)[0]

	t.Run("dynamic", func(t *testing.T) {
		q, rep, err := Dynamic(ctx, fp32, Options{})
		if err != nil {
			t.Fatal(err)
		}
		// q, k, v, proj and fc have constant weights; the attention
		// products (q×kᵀ, a×v) do not and stay float.
		if len(rep.Quantized) != 5 || len(rep.Skipped) != 2 {
			t.Fatalf("quantized %v, skipped %v", rep.Quantized, rep.Skipped)
		}
		if ops := opCounts(t, q); ops["MatMul"] != 2 || ops["MatMulInteger"] != 5 || ops["DynamicQuantizeLinear"] != 3 {
			t.Fatalf("ops = %v: want x quantized once for q, k, v", ops)
		}
		got := run(t, q, test)[0]
		if d := maxAbsDiff(got, want); d > 0.05*maxAbs(want) {
			t.Fatalf("differs from fp32 by %g (max %g)", d, maxAbs(want))
		}
	})
	t.Run("static keeps Softmax and LayerNorm float", func(t *testing.T) {
		q, rep, err := Static(ctx, fp32, calib, Options{})
		if err != nil {
			t.Fatal(err)
		}
		skipped := map[string]bool{}
		for _, s := range rep.Skipped {
			skipped[s.OpType] = true
		}
		if !skipped["Softmax"] || !skipped["LayerNormalization"] {
			t.Fatalf("skipped %v: want Softmax and LayerNormalization", rep.Skipped)
		}
		got := run(t, q, test)[0]
		if d := maxAbsDiff(got, want); d > 0.1*maxAbs(want) {
			t.Fatalf("differs from fp32 by %g (max %g)", d, maxAbs(want))
		}
	})
	t.Run("static with Softmax and LayerNorm", func(t *testing.T) {
		q, rep, err := Static(ctx, fp32, calib, Options{IncludeOpTypes: []string{"Softmax", "LayerNormalization"}})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range rep.Skipped {
			if s.OpType == "Softmax" || s.OpType == "LayerNormalization" {
				t.Fatalf("%s skipped: %s", s.Name, s.Reason)
			}
		}
		got := run(t, q, test)[0]
		if d := maxAbsDiff(got, want); d > 0.15*maxAbs(want) {
			t.Fatalf("differs from fp32 by %g (max %g)", d, maxAbs(want))
		}
	})
	t.Run("fp16", func(t *testing.T) {
		q, _, err := FP16(ctx, fp32, Options{})
		if err != nil {
			t.Fatal(err)
		}
		got := run(t, q, test)[0]
		if d := maxAbsDiff(got, want); d > 1e-2*maxAbs(want) {
			t.Fatalf("differs from fp32 by %g (max %g)", d, maxAbs(want))
		}
	})
}
