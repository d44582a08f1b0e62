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
// QuantizeLinear/DequantizeLinear pairs (Options.Fold): x·Clip(x+3, 0, 6)/6
// (hard-swish as Paddle2ONNX and others spell it: Add, Clip, Mul, Div)
// becomes x·HardSigmoid(x) with alpha 1/6, beta 0.5 (two operators).
//
// Folding BatchNormalization and constant Mul/Add into the Convs' weights
// was tried too and left out: onnxruntime 1.24 then kept most of those
// Convs in float (DequantizeLinear → Conv → QuantizeLinear unfused), which
// cost more than the element-wise operators saved (see RESULTS.md). It
// returns the count of each rewrite.
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
	}
	return "", nil
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
