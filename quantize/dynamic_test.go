package quantize

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/edgefleet/edgefleet/quantize/internal/graph"
	"github.com/edgefleet/edgefleet/quantize/onnxpb"
	"github.com/edgefleet/edgefleet/quantize/quantmath"
)

// refDynamicMatMul computes what DynamicQuantizeLinear + MatMulInteger +
// Cast + Mul compute for x [m,k] times w [k,n] (per-tensor int8 weights),
// following the ONNX operator definitions.
func refDynamicMatMul(x []float32, m, k int, w []float32, n int) []float32 {
	xmin, xmax := float32(0), float32(0)
	for _, v := range x {
		xmin, xmax = min(xmin, v), max(xmax, v)
	}
	xs := (xmax - xmin) / 255
	xzp := int32(math.RoundToEven(float64(max(0, min(255, 0-xmin/xs)))))
	xq := quantmath.Quantize(x, xs, xzp, 0, 255)
	p, wq, err := quantmath.QuantizeData(w, quantmath.Int8, true, false, 0)
	if err != nil {
		panic(err)
	}
	scale := xs * p.Scale
	out := make([]float32, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var acc int32
			for l := 0; l < k; l++ {
				acc += (xq[i*k+l] - xzp) * wq[l*n+j]
			}
			out[i*n+j] = float32(acc) * scale
		}
	}
	return out
}

func TestDynamicMatMulNumerics(t *testing.T) {
	needRuntime(t)
	r := rand.New(rand.NewPCG(7, 7))
	const m, k, n = 5, 16, 8
	w := randFloats(r, k*n, 0.5)
	for _, tc := range []struct {
		name     string
		constant bool
	}{{"initializer weight", false}, {"Constant node weight", true}} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBuilder(17).input("x", graph.Float, -1, k).output("y", graph.Float, -1, n)
			if tc.constant {
				b.constant("w", []int64{k, n}, w)
			} else {
				b.init("w", []int64{k, n}, w)
			}
			b.node("MatMul", "mm", []string{"x", "w"}, []string{"y"})
			q, rep, err := Dynamic(context.Background(), b.bytes(t), Options{})
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Quantized) != 1 || rep.Weights != 1 {
				t.Fatalf("report = %+v", rep)
			}
			ops := opCounts(t, q)
			want := map[string]int{"DynamicQuantizeLinear": 1, "MatMulInteger": 1, "Cast": 1, "Mul": 2}
			for op, c := range want {
				if ops[op] != c {
					t.Fatalf("ops = %v, want %v", ops, want)
				}
			}
			if ops["MatMul"] != 0 || ops["Constant"] != 0 {
				t.Fatalf("float MatMul or Constant left: %v", ops)
			}
			x := randFloats(r, m*k, 2)
			x[3] = -2.5 // asymmetric activation range
			got := run(t, q, Batch{{Name: "x", Shape: []int64{m, k}, Data: x}})[0]
			ref := refDynamicMatMul(x, m, k, w, n)
			if d := maxAbsDiff(got, ref); d > 1e-5*maxAbs(ref) {
				t.Fatalf("onnxruntime output differs from the reference by %g (max |ref| %g)", d, maxAbs(ref))
			}
			fp32 := run(t, b.bytes(t), Batch{{Name: "x", Shape: []int64{m, k}, Data: x}})[0]
			if d := maxAbsDiff(got, fp32); d > 0.05*maxAbs(fp32) {
				t.Fatalf("int8 output differs from fp32 by %g (max |fp32| %g)", d, maxAbs(fp32))
			}
		})
	}
}

func TestDynamicGemmAndSharing(t *testing.T) {
	needRuntime(t)
	r := rand.New(rand.NewPCG(3, 4))
	const k, h, n = 12, 10, 6
	// y1 = Gemm(x, W1^T, b1, alpha=0.5, beta=2); y2 = MatMul(x, W2) sharing
	// x's quantization; y3 = Gemm(relu(y1), W3) with no bias.
	b := newBuilder(13).input("x", graph.Float, -1, k).
		output("y1", graph.Float, -1, h).output("y2", graph.Float, -1, n).output("y3", graph.Float, -1, n).
		init("W1", []int64{h, k}, randFloats(r, h*k, 1)).
		init("b1", []int64{h}, randFloats(r, h, 1)).
		init("W2", []int64{k, n}, randFloats(r, k*n, 1)).
		init("W3", []int64{h, n}, randFloats(r, h*n, 1)).
		node("Gemm", "g1", []string{"x", "W1", "b1"}, []string{"y1"},
			graph.IntAttr("transB", 1),
			&onnxpb.AttributeProto{Name: "alpha", Type: onnxpb.AttributeProto_FLOAT, F: 0.5},
			&onnxpb.AttributeProto{Name: "beta", Type: onnxpb.AttributeProto_FLOAT, F: 2}).
		node("MatMul", "m2", []string{"x", "W2"}, []string{"y2"}).
		node("Relu", "r", []string{"y1"}, []string{"h1"}).
		node("Gemm", "g3", []string{"h1", "W3"}, []string{"y3"})
	fp32 := b.bytes(t)
	q, rep, err := Dynamic(context.Background(), fp32, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Quantized) != 3 {
		t.Fatalf("quantized %v, want 3 nodes", rep.Quantized)
	}
	ops := opCounts(t, q)
	if ops["DynamicQuantizeLinear"] != 2 || ops["MatMulInteger"] != 3 || ops["Gemm"] != 0 || ops["MatMul"] != 0 {
		t.Fatalf("ops = %v: want x quantized once for g1 and m2, h1 once for g3", ops)
	}
	x := randFloats(r, 4*k, 1)
	in := Batch{{Name: "x", Shape: []int64{4, k}, Data: x}}
	want := run(t, fp32, in)
	got := run(t, q, in)
	for i := range want {
		if d := maxAbsDiff(got[i], want[i]); d > 0.05*maxAbs(want[i]) {
			t.Errorf("output %d: int8 differs from fp32 by %g (max %g)", i, d, maxAbs(want[i]))
		}
	}
	// Every weight matrix is stored as int8; no float weight is left.
	qm, err := graph.Decode(q, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, init := range qm.Graph.Initializer {
		if graph.NumElements(init.Dims) > h && graph.Elem(init.DataType) != graph.Int8 {
			t.Errorf("initializer %q is %v, want INT8", init.Name, graph.Elem(init.DataType))
		}
	}
}

func TestDynamicOptions(t *testing.T) {
	needRuntime(t)
	r := rand.New(rand.NewPCG(5, 6))
	b := newBuilder(17).input("x", graph.Float, -1, 8).output("y", graph.Float, -1, 4).
		init("w1", []int64{8, 8}, randFloats(r, 64, 1)).init("w2", []int64{8, 4}, randFloats(r, 32, 1)).
		node("MatMul", "first", []string{"x", "w1"}, []string{"h"}).
		node("MatMul", "second", []string{"h", "w2"}, []string{"y"})
	model := b.bytes(t)
	tests := []struct {
		name      string
		opts      Options
		quantized int
		err       error
	}{
		{"default", Options{}, 2, nil},
		{"exclude node", Options{ExcludeNodes: []string{"first"}}, 1, nil},
		{"only nodes", Options{Nodes: []string{"second"}}, 1, nil},
		{"exclude op type", Options{ExcludeOpTypes: []string{"MatMul"}}, 0, ErrNothingToQuantize},
		{"per channel uint8", Options{DynamicPerChannel: true, WeightType: Uint8}, 2, nil},
		{"reduce range", Options{ReduceRange: true}, 2, nil},
		{"bad weight type", Options{WeightType: quantmath.Int16}, 0, ErrUnsupported},
	}
	x := randFloats(r, 3*8, 1)
	in := Batch{{Name: "x", Shape: []int64{3, 8}, Data: x}}
	want := run(t, model, in)[0]
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q, rep, err := Dynamic(context.Background(), model, tc.opts)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("error = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Quantized) != tc.quantized {
				t.Fatalf("quantized %v, want %d nodes", rep.Quantized, tc.quantized)
			}
			got := run(t, q, in)[0]
			if d := maxAbsDiff(got, want); d > 0.08*maxAbs(want) {
				t.Fatalf("differs from fp32 by %g (max %g)", d, maxAbs(want))
			}
		})
	}
}

func TestDynamicOpsetRaise(t *testing.T) {
	needRuntime(t)
	r := rand.New(rand.NewPCG(9, 9))
	mk := func(opset int64, extra bool) []byte {
		b := newBuilder(opset).input("x", graph.Float, 2, 4).output("y", graph.Float, 2, 3).
			init("w", []int64{4, 3}, randFloats(r, 12, 1))
		if extra {
			// Clip changed meaning in opset 11 (min/max moved to inputs).
			b.node("Clip", "clip", []string{"x"}, []string{"xc"}).node("MatMul", "mm", []string{"xc", "w"}, []string{"y"})
		} else {
			b.node("MatMul", "mm", []string{"x", "w"}, []string{"y"})
		}
		b.m.IrVersion = 5
		return b.bytes(t)
	}
	q, rep, err := Dynamic(context.Background(), mk(10, false), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OpsetBefore != 10 || rep.OpsetAfter != 11 || len(rep.Warnings) == 0 {
		t.Fatalf("opset %d -> %d, warnings %v", rep.OpsetBefore, rep.OpsetAfter, rep.Warnings)
	}
	run(t, q, Batch{{Name: "x", Shape: []int64{2, 4}, Data: randFloats(r, 8, 1)}})
	// Raising across Clip's opset-11 change is unsafe: the fused contrib op
	// is used and the opset stays.
	fp32 := mk(10, true)
	q, rep, err = Dynamic(context.Background(), fp32, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OpsetAfter != 10 || opCounts(t, q)["DynamicQuantizeMatMul"] != 1 || len(rep.Warnings) == 0 {
		t.Fatalf("opset %d, ops %v, warnings %v: want opset 10 and one DynamicQuantizeMatMul", rep.OpsetAfter, opCounts(t, q), rep.Warnings)
	}
	in := Batch{{Name: "x", Shape: []int64{2, 4}, Data: randFloats(r, 8, 1)}}
	want, got := run(t, fp32, in)[0], run(t, q, in)[0]
	if d := maxAbsDiff(got, want); d > 0.05*maxAbs(want) {
		t.Fatalf("fused int8 differs from fp32 by %g (max %g)", d, maxAbs(want))
	}
	// A model already at a recent opset keeps it.
	_, rep, err = Dynamic(context.Background(), mk(17, false), Options{})
	if err != nil || rep.OpsetAfter != 17 || len(rep.Warnings) != 0 {
		t.Fatalf("opset 17: %v, report %+v", err, rep)
	}
}
