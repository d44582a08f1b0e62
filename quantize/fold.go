package quantize

import (
	"fmt"
	"math"
	"slices"

	"github.com/edgefleet/edgefleet/quantize/internal/graph"
	"github.com/edgefleet/edgefleet/quantize/onnxpb"
)

// foldGraph rewrites m's main graph into a form with fewer float operators
// between the Convs, before static quantization places its
// QuantizeLinear/DequantizeLinear pairs (Options.Fold), as onnxruntime's
// quant_pre_process does through its graph optimizer:
//
//   - a BatchNormalization, or a Mul or Add by a constant (a scalar or one
//     value per output channel, PaddleOCR's learnable affine blocks), that
//     alone reads a Conv's output folds into the Conv's weights and bias;
//   - x·Clip(x+3, 0, 6)/6 (hard-swish as Paddle2ONNX spells it: Add, Clip,
//     Mul, Div) becomes x·HardSigmoid(x) with alpha 1/6, beta 0.5.
//
// Each float operator left between two quantized Convs costs a
// DequantizeLinear and a QuantizeLinear on a whole activation at run
// time, and a BatchNormalization between a Conv and its QuantizeLinear
// keeps onnxruntime from folding it at all. It returns the count of each
// rewrite.
func foldGraph(m *onnxpb.ModelProto) (map[string]int, error) {
	done := map[string]int{}
	names := graph.ModelNames(m)
	for {
		ix := graph.NewIndexNames(m.Graph, names)
		what, err := foldOnce(m.Graph, ix)
		if err != nil {
			return done, err
		}
		if what == "" {
			break
		}
		done[what]++
	}
	graph.RemoveUnused(m.Graph)
	return done, graph.TopoSort(m.Graph)
}

// soleConsumer returns the only node reading value v, if v is not a graph
// output.
func soleConsumer(ix *graph.Index, v string) (*onnxpb.NodeProto, bool) {
	if ix.Outputs[v] || len(ix.Consumers[v]) != 1 {
		return nil, false
	}
	return ix.G.Node[ix.Consumers[v][0]], true
}

// foldOnce applies the first rewrite it finds and names it ("" if none).
func foldOnce(g *onnxpb.GraphProto, ix *graph.Index) (string, error) {
	for _, n := range g.Node {
		if graph.IsDefaultDomain(n) && n.GetOpType() == "Add" {
			if what := fuseHardSwish(g, ix, n); what != "" {
				return what, nil
			}
		}
		if graph.IsDefaultDomain(n) && n.GetOpType() == "Conv" {
			if what := foldAfterConv(g, ix, n); what != "" {
				return what, nil
			}
		}
	}
	return "", nil
}

// convParams returns a Conv's weights and bias (zeros when absent).
func convParams(ix *graph.Index, n *onnxpb.NodeProto) (w []float32, wdims []int64, b []float32, ok bool) {
	if len(n.Input) < 2 {
		return nil, nil, nil, false
	}
	wt, ok := ix.Const(n.Input[1])
	if !ok || graph.Elem(wt.GetDataType()) != graph.Float || len(wt.GetDims()) < 3 {
		return nil, nil, nil, false
	}
	w, err := graph.Floats(wt)
	if err != nil {
		return nil, nil, nil, false
	}
	out := int(wt.GetDims()[0])
	b = make([]float32, out)
	if len(n.Input) > 2 && n.Input[2] != "" {
		bt, ok := ix.Const(n.Input[2])
		if !ok {
			return nil, nil, nil, false
		}
		if b, err = graph.Floats(bt); err != nil || len(b) != out {
			return nil, nil, nil, false
		}
	}
	return w, slices.Clone(wt.GetDims()), b, true
}

// foldAfterConv folds the BatchNormalization, or the Mul or Add by a
// constant (scalar or per output channel), reading Conv c's output into
// c's weights and bias.
func foldAfterConv(g *onnxpb.GraphProto, ix *graph.Index, c *onnxpb.NodeProto) string {
	w, wdims, b, ok := convParams(ix, c)
	if !ok || len(c.Output) != 1 {
		return ""
	}
	next, ok := soleConsumer(ix, c.Output[0])
	if !ok || !graph.IsDefaultDomain(next) || len(next.Output) != 1 {
		return ""
	}
	out := len(b)
	per := len(w) / out
	scale, shift := make([]float64, out), make([]float64, out)
	switch next.GetOpType() {
	case "BatchNormalization":
		if len(next.Input) != 5 || next.Input[0] != c.Output[0] {
			return ""
		}
		p := make([][]float32, 4)
		for k := range 4 {
			t, ok := ix.Const(next.Input[1+k])
			if !ok {
				return ""
			}
			v, err := graph.Floats(t)
			if err != nil || len(v) != out {
				return ""
			}
			p[k] = v
		}
		eps := float64(graph.AttrFloat(next, "epsilon", 1e-5))
		for o := range out {
			scale[o] = float64(p[0][o]) / math.Sqrt(float64(p[3][o])+eps)
			shift[o] = float64(p[1][o]) - float64(p[2][o])*scale[o]
		}
	case "Mul", "Add":
		k, ok := channelConst(ix, next, c.Output[0], out)
		if !ok {
			return ""
		}
		for o := range out {
			if next.GetOpType() == "Mul" {
				scale[o] = float64(k[o])
			} else {
				scale[o], shift[o] = 1, float64(k[o])
			}
		}
	default:
		return ""
	}
	nw, nb := make([]float32, len(w)), make([]float32, out)
	for o := range out {
		for i := range per {
			nw[o*per+i] = float32(float64(w[o*per+i]) * scale[o])
		}
		nb[o] = float32(float64(b[o])*scale[o] + shift[o])
	}
	wn, bn := ix.Unique(c.Input[1]+"_folded"), ix.Unique(c.Input[1]+"_bias_folded")
	g.Initializer = append(g.Initializer, graph.FloatTensor(wn, wdims, nw), graph.FloatTensor(bn, []int64{int64(out)}, nb))
	c.Input = append(c.Input[:1], wn, bn)
	c.Output[0] = next.Output[0]
	g.Node = slices.DeleteFunc(g.Node, func(m *onnxpb.NodeProto) bool { return m == next })
	return next.GetOpType() + " into Conv"
}

// channelConst returns the constant operand of binary node n whose other
// operand is x, as one value per channel of an NCHW tensor with c
// channels: a scalar, or a tensor varying along the channel axis only
// ([C,1,1] or [1,C,1,1]).
func channelConst(ix *graph.Index, n *onnxpb.NodeProto, x string, c int) ([]float32, bool) {
	if len(n.Input) != 2 || (n.Input[0] != x && n.Input[1] != x) || n.Input[0] == n.Input[1] {
		return nil, false
	}
	other := n.Input[0]
	if other == x {
		other = n.Input[1]
	}
	t, ok := ix.Const(other)
	if !ok || graph.Elem(t.GetDataType()) != graph.Float {
		return nil, false
	}
	v, err := graph.Floats(t)
	if err != nil {
		return nil, false
	}
	if len(v) == 1 && len(t.GetDims()) <= 4 {
		out := make([]float32, c)
		for i := range out {
			out[i] = v[0]
		}
		return out, true
	}
	dims := t.GetDims()
	if len(v) != c || len(dims) < 3 || len(dims) > 4 || dims[len(dims)-3] != int64(c) {
		return nil, false
	}
	return v, true
}

// scalarConst returns the single value of a constant input.
func scalarConst(ix *graph.Index, name string) (float32, bool) {
	t, ok := ix.Const(name)
	if !ok || graph.Elem(t.GetDataType()) != graph.Float {
		return 0, false
	}
	v, err := graph.Floats(t)
	if err != nil || len(v) != 1 {
		return 0, false
	}
	return v[0], true
}

// fuseHardSwish rewrites add = x+3 → Clip(0, 6) → Mul(x, ·) → Div(6) into
// Mul(x, HardSigmoid(x; 1/6, 0.5)).
func fuseHardSwish(g *onnxpb.GraphProto, ix *graph.Index, add *onnxpb.NodeProto) string {
	if len(add.Input) != 2 || len(add.Output) != 1 {
		return ""
	}
	var x string
	switch {
	case func() bool { v, ok := scalarConst(ix, add.Input[1]); return ok && v == 3 }():
		x = add.Input[0]
	case func() bool { v, ok := scalarConst(ix, add.Input[0]); return ok && v == 3 }():
		x = add.Input[1]
	default:
		return ""
	}
	clip, ok := soleConsumer(ix, add.Output[0])
	if !ok || clip.GetOpType() != "Clip" || !graph.IsDefaultDomain(clip) {
		return ""
	}
	lo, hi := graph.AttrFloat(clip, "min", float32(math.Inf(-1))), graph.AttrFloat(clip, "max", float32(math.Inf(1)))
	if len(clip.Input) > 1 && clip.Input[1] != "" {
		if lo, ok = scalarConst(ix, clip.Input[1]); !ok {
			return ""
		}
	}
	if len(clip.Input) > 2 && clip.Input[2] != "" {
		if hi, ok = scalarConst(ix, clip.Input[2]); !ok {
			return ""
		}
	}
	if lo != 0 || hi != 6 {
		return ""
	}
	mul, ok := soleConsumer(ix, clip.Output[0])
	if !ok || mul.GetOpType() != "Mul" || len(mul.Input) != 2 || !slices.Contains(mul.Input, x) || !slices.Contains(mul.Input, clip.Output[0]) {
		return ""
	}
	div, ok := soleConsumer(ix, mul.Output[0])
	if !ok || !graph.IsDefaultDomain(div) || len(div.Input) != 2 || div.Input[0] != mul.Output[0] {
		return ""
	}
	d, ok := scalarConst(ix, div.Input[1])
	if !ok || !(div.GetOpType() == "Div" && d == 6 || div.GetOpType() == "Mul" && math.Abs(float64(d)-1.0/6) < 1e-7) {
		return ""
	}
	hs := ix.Unique(x + "_hardsigmoid")
	sig := graph.Node("HardSigmoid", ix.Unique(nodeName(add, 0)+"_hardsigmoid"), []string{x}, []string{hs},
		&onnxpb.AttributeProto{Name: "alpha", Type: onnxpb.AttributeProto_FLOAT, F: float32(1.0 / 6)},
		&onnxpb.AttributeProto{Name: "beta", Type: onnxpb.AttributeProto_FLOAT, F: 0.5})
	out := graph.Node("Mul", mul.GetName(), []string{x, hs}, []string{div.Output[0]})
	drop := map[*onnxpb.NodeProto]bool{add: true, clip: true, mul: true, div: true}
	var nodes []*onnxpb.NodeProto
	for _, n := range g.Node {
		if n == add {
			nodes = append(nodes, sig, out)
		}
		if !drop[n] {
			nodes = append(nodes, n)
		}
	}
	g.Node = nodes
	return "hard-swish to HardSigmoid·x"
}

// foldSummary renders fold counts for a report warning.
func foldSummary(done map[string]int) string {
	s := "folded before quantizing:"
	for _, k := range sortedKeys(done) {
		s += fmt.Sprintf(" %s×%d", k, done[k])
	}
	return s
}
