package quantize

import (
	"math"
	"slices"

	"github.com/edgefleet/edgefleet/quantize/internal/graph"
	"github.com/edgefleet/edgefleet/quantize/onnxpb"
	"github.com/edgefleet/edgefleet/quantize/quantmath"
)

// weightSQNR returns, for every MatMul, Gemm, Conv and ConvTranspose with a
// constant float32 weight (in the main graph and, recursively, in If/Loop
// bodies), the SQNR in dB of its weight quantized as mode and opts would
// (per tensor or per channel, the weight type's range) against the float
// weight. It needs no data: AccuracyControl ranks the nodes Sensitivity
// cannot observe (those inside subgraphs) by it, lowest first.
func weightSQNR(m *onnxpb.ModelProto, mode Mode, opts Options) map[string]float64 {
	perChannel := mode == ModeStatic && !opts.PerTensor || mode == ModeDynamic && opts.DynamicPerChannel
	out := map[string]float64{}
	var walk func(g *onnxpb.GraphProto, parent *graph.Scope)
	walk = func(g *onnxpb.GraphProto, parent *graph.Scope) {
		scope := &graph.Scope{Ix: graph.NewIndex(g), Parent: parent}
		for i, n := range g.GetNode() {
			for _, a := range n.GetAttribute() {
				if a.GetG() != nil {
					walk(a.GetG(), scope)
				}
				for _, sg := range a.GetGraphs() {
					walk(sg, scope)
				}
			}
			op := n.GetOpType()
			if !graph.IsDefaultDomain(n) || !slices.Contains([]string{"MatMul", "Gemm", "Conv", "ConvTranspose"}, op) || len(n.GetInput()) < 2 {
				continue
			}
			t, w, why := constFloat32(scope, n.Input[1])
			if why != "" || len(w) == 0 {
				continue
			}
			dims := t.GetDims()
			axis := -1
			if perChannel && len(dims) >= 2 {
				switch {
				case op == "Conv":
					axis = 0
				case op == "ConvTranspose":
					axis = 1
				case op == "Gemm" && graph.AttrInt(n, "transB", 0) != 0:
					axis = 0
				default:
					axis = len(dims) - 1
				}
			}
			if s, ok := quantizedSQNR(w, dims, axis, opts); ok {
				out[nodeName(n, i)] = s
			}
		}
	}
	walk(m.GetGraph(), nil)
	return out
}

// quantizedSQNR quantizes w and returns the SQNR of the round trip.
func quantizedSQNR(w []float32, dims []int64, axis int, opts Options) (float64, bool) {
	sym, rr := opts.weightSymmetric(), opts.ReduceRange
	deq := make([]float32, len(w))
	if axis < 0 {
		p, q, err := quantmath.QuantizeData(w, opts.WeightType, sym, rr, 0)
		if err != nil {
			return 0, false
		}
		copy(deq, quantmath.Dequantize(q, p.Scale, p.ZeroPoint))
	} else {
		ps, q, err := quantmath.QuantizePerChannel(w, dims, axis, opts.WeightType, sym, rr, 0)
		if err != nil {
			return 0, false
		}
		inner := 1
		for _, d := range dims[axis+1:] {
			inner *= int(d)
		}
		for i := range w {
			p := ps[(i/inner)%len(ps)]
			deq[i] = (float32(q[i]) - float32(p.ZeroPoint)) * p.Scale
		}
	}
	s := quantmath.SQNR(w, deq)
	return s, !math.IsNaN(s)
}
