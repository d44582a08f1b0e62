package quantize

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/edgefleet/edgefleet/quantize/internal/graph"
)

func TestFP16(t *testing.T) {
	needRuntime(t)
	r := rand.New(rand.NewPCG(21, 22))
	// MLP with a Softmax head, a blocked TopK reading the logits, and a
	// Constant scaling factor.
	b := newBuilder(17).input("x", graph.Float, -1, 16).
		output("probs", graph.Float, -1, 4).output("top", graph.Float, -1, 2).
		init("w1", []int64{16, 32}, randFloats(r, 16*32, 0.5)).init("b1", []int64{32}, randFloats(r, 32, 0.1)).
		init("w2", []int64{32, 4}, randFloats(r, 32*4, 0.5)).
		constant("half", nil, []float32{0.5}).
		node("MatMul", "mm1", []string{"x", "w1"}, []string{"h"}).
		node("Add", "add1", []string{"h", "b1"}, []string{"hb"}).
		node("Relu", "relu", []string{"hb"}, []string{"hr"}).
		node("MatMul", "mm2", []string{"hr", "w2"}, []string{"logits"}).
		node("Mul", "scale", []string{"logits", "half"}, []string{"scaled"}).
		node("Softmax", "softmax", []string{"scaled"}, []string{"probs"})
	b.m.Graph.Initializer = append(b.m.Graph.Initializer, graph.Int64Tensor("k", []int64{1}, []int64{2}))
	b.node("TopK", "topk", []string{"logits", "k"}, []string{"top", "top_idx"})
	fp32 := b.bytes(t)

	q, rep, err := FP16(context.Background(), fp32, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Quantized) != 7 || len(rep.Skipped) != 1 || rep.Skipped[0].OpType != "TopK" {
		t.Fatalf("converted %v, skipped %v", rep.Quantized, rep.Skipped)
	}
	m, err := graph.Decode(q, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, init := range m.Graph.Initializer {
		if init.Name != "k" && graph.Elem(init.DataType) != graph.Float16 {
			t.Errorf("initializer %s is %v, want FLOAT16", init.Name, graph.Elem(init.DataType))
		}
	}
	for _, vi := range append(m.Graph.Input, m.Graph.Output...) {
		if e, _ := graph.ElemOf(vi); e != graph.Float {
			t.Errorf("graph input/output %s is %v, want FLOAT (IO kept)", vi.Name, e)
		}
	}
	if c := opCounts(t, q)["Cast"]; c < 3 {
		t.Errorf("%d Casts: want at least input, probs and TopK casts", c)
	}
	x := randFloats(r, 5*16, 1)
	in := Batch{{Name: "x", Shape: []int64{5, 16}, Data: x}}
	want := run(t, fp32, in)
	got := run(t, q, in)
	for i := range want {
		if d := maxAbsDiff(got[i], want[i]); d > 5e-3*maxAbs(want[i])+1e-3 {
			t.Errorf("output %d: fp16 differs from fp32 by %g (max %g)", i, d, maxAbs(want[i]))
		}
	}

	t.Run("block list and IO", func(t *testing.T) {
		q, rep, err := FP16(context.Background(), fp32, Options{FP16Block: []string{"Softmax"}, FP16IO: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Skipped) != 2 {
			t.Fatalf("skipped %v, want TopK and Softmax", rep.Skipped)
		}
		m, _ := graph.Decode(q, "")
		if e, _ := graph.ElemOf(m.Graph.Input[0]); e != graph.Float16 {
			t.Fatalf("input is %v, want FLOAT16 with FP16IO", e)
		}
		// Softmax runs in float32, so probs stays float32.
		if e, _ := graph.ElemOf(m.Graph.Output[0]); e != graph.Float {
			t.Fatalf("probs is %v, want FLOAT from the blocked Softmax", e)
		}
		s, err := newSession(q, []string{"x"}, []string{"probs"})
		if err != nil {
			t.Fatalf("onnxruntime rejects the model: %v", err)
		}
		s.Close()
	})
	t.Run("nothing to convert", func(t *testing.T) {
		_, _, err := FP16(context.Background(), fp32, Options{ExcludeOpTypes: []string{"MatMul", "Add", "Relu", "Mul", "Softmax", "Constant"}})
		if !errors.Is(err, ErrNothingToQuantize) {
			t.Fatalf("error = %v, want ErrNothingToQuantize", err)
		}
	})
}

func TestFP16SmallCNN(t *testing.T) {
	needRuntime(t)
	r := rand.New(rand.NewPCG(5, 5))
	fp32 := smallCNN(t, r, true)
	q, _, err := FP16(context.Background(), fp32, Options{})
	if err != nil {
		t.Fatal(err)
	}
	in := randBatches(r, 1, 4)[0]
	want, got := run(t, fp32, in)[0], run(t, q, in)[0]
	if d := maxAbsDiff(got, want); d > 5e-3*maxAbs(want)+1e-3 {
		t.Fatalf("fp16 differs from fp32 by %g (max %g)", d, maxAbs(want))
	}
}
