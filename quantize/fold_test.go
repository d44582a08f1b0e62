package quantize

import (
	"math/rand/v2"
	"testing"

	"github.com/edgefleet/edgefleet/quantize/internal/graph"
	"github.com/edgefleet/edgefleet/quantize/onnxpb"
)

// TestFoldGraph folds Conv → BatchNormalization → Mul → Add → hard-swish
// (Add 3, Clip 0..6, Mul, Div 6) into one Conv and x·HardSigmoid(x), and
// checks in onnxruntime that the outputs stay the same.
func TestFoldGraph(t *testing.T) {
	needRuntime(t)
	r := rand.New(rand.NewPCG(1, 2))
	rnd := func(n int, lo, hi float32) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = lo + (hi-lo)*r.Float32()
		}
		return v
	}
	b := newBuilder(13).input("x", graph.Float, 1, 3, 6, 6).output("y", graph.Float, 1, 4, 6, 6).
		init("w", []int64{4, 3, 3, 3}, rnd(108, -1, 1)).
		init("g", []int64{4}, rnd(4, 0.5, 2)).init("beta", []int64{4}, rnd(4, -1, 1)).
		init("mean", []int64{4}, rnd(4, -1, 1)).init("var", []int64{4}, rnd(4, 0.1, 2)).
		init("k", []int64{4, 1, 1}, rnd(4, 0.5, 1.5)).init("c", nil, []float32{0.25}).
		init("three", nil, []float32{3}).init("zero", nil, []float32{0}).init("six", nil, []float32{6}).
		node("Conv", "conv", []string{"x", "w"}, []string{"a"}, ints("pads", 1, 1, 1, 1)).
		node("BatchNormalization", "bn", []string{"a", "g", "beta", "mean", "var"}, []string{"b"}).
		node("Mul", "scale", []string{"k", "b"}, []string{"c1"}).
		node("Add", "shift", []string{"c1", "c"}, []string{"d"}).
		node("Add", "hs_add", []string{"d", "three"}, []string{"e"}).
		node("Clip", "hs_clip", []string{"e", "zero", "six"}, []string{"f"}).
		node("Mul", "hs_mul", []string{"d", "f"}, []string{"h"}).
		node("Div", "hs_div", []string{"h", "six"}, []string{"y"})
	model := b.bytes(t)
	in := Batch{{Name: "x", Shape: []int64{1, 3, 6, 6}, Data: rnd(108, -2, 2)}}
	want := runModel(t, model, in)
	m, err := graph.Decode(model, "")
	if err != nil {
		t.Fatal(err)
	}
	done, err := foldGraph(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"BatchNormalization into Conv", "Mul into Conv", "Add into Conv", "hard-swish to HardSigmoid·x"} {
		if done[k] != 1 {
			t.Errorf("rewrites %v: want one %q", done, k)
		}
	}
	ops := map[string]int{}
	for _, n := range m.Graph.Node {
		ops[n.GetOpType()]++
	}
	if len(m.Graph.Node) != 3 || ops["Conv"] != 1 || ops["HardSigmoid"] != 1 || ops["Mul"] != 1 {
		t.Errorf("folded graph has %v, want Conv, HardSigmoid, Mul", ops)
	}
	folded, err := graph.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	sameOutputs(t, "folded", runModel(t, folded, in), want, 1e-5)
}

func ints(name string, v ...int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: name, Type: onnxpb.AttributeProto_INTS, Ints: v}
}
