package quantize

import (
	"context"
	"fmt"
	"slices"

	"github.com/edgefleet/edgefleet/quantize/internal/graph"
	"github.com/edgefleet/edgefleet/quantize/onnxpb"
)

// DefaultFP16Block lists the operator types FP16 keeps in float32 (the
// default block list of onnxconverter-common's float16 converter, which
// onnxruntime's tools use): ML operators, and operators that are inaccurate
// or unsupported in float16.
var DefaultFP16Block = []string{
	"ArrayFeatureExtractor", "Binarizer", "CastMap", "CategoryMapper", "DictVectorizer", "FeatureVectorizer",
	"Imputer", "LabelEncoder", "LinearClassifier", "LinearRegressor", "Normalizer", "OneHotEncoder",
	"RandomUniformLike", "SVMClassifier", "SVMRegressor", "Scaler", "TreeEnsembleClassifier",
	"TreeEnsembleRegressor", "ZipMap", "NonMaxSuppression", "TopK", "RoiAlign", "Resize", "Range", "CumSum",
	"Min", "Max", "Upsample",
	// Operators whose output type comes from an attribute.
	"RandomNormal", "RandomUniform", "RandomNormalLike", "EyeLike", "Multinomial", "Bernoulli",
	// Squares of activations (the variance of a decomposed LayerNorm)
	// overflow float16 easily; onnxruntime 1.24's SimplifiedLayerNormFusion
	// also fails on the float16 form of that pattern.
	"Pow",
}

// anyTypeInput ops accept inputs of any type: no Cast is put before them.
var anyTypeInput = []string{"Cast", "Shape", "Size", "CastLike"}

// FP16 converts the float32 tensors and operators of model's main graph to
// float16. Operators of DefaultFP16Block and Options.FP16Block, operators
// of other domains and operators with subgraphs (If, Loop, Scan) stay in
// float32, with Cast nodes wherever a value crosses between the two. The
// model's inputs and outputs stay float32 (Casts inside the graph) unless
// Options.FP16IO is set. Weights are clamped to float16's finite range,
// with tiny magnitudes kept at the smallest subnormal instead of flushed to
// zero, as onnxconverter-common does.
//
// FP16 runs onnxruntime once to learn the value types.
func FP16(ctx context.Context, model []byte, opts Options) ([]byte, *Report, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, nil, err
	}
	m, err := graph.Decode(model, opts.ExternalDataDir)
	if err != nil {
		return nil, nil, err
	}
	types, err := inferTypes(m)
	if err != nil {
		return nil, nil, err
	}
	rep := &Report{Mode: ModeFP16, SizeBefore: len(model)}
	rep.OpsetBefore, _ = graph.Opset(m, graph.DefaultDomain)
	block := slices.Concat(DefaultFP16Block, opts.FP16Block)
	c := &fp16Converter{
		g:      m.Graph,
		ix:     graph.NewIndexNames(m.Graph, graph.ModelNames(m)),
		types:  types,
		opts:   opts,
		name16: map[string]string{}, name32: map[string]string{},
	}
	if err := c.convert(ctx, block, rep); err != nil {
		return nil, nil, err
	}
	if len(rep.Quantized) == 0 {
		return nil, rep, fmt.Errorf("%w: no float32 operator to convert", ErrNothingToQuantize)
	}
	rep.OpsetAfter, _ = graph.Opset(m, graph.DefaultDomain)
	opts.finish(m, rep)
	out, err := graph.Encode(m)
	if err != nil {
		return nil, nil, err
	}
	rep.SizeAfter = len(out)
	opts.Logger.Info("fp16 conversion done", "report", rep.String())
	return out, rep, nil
}

type fp16Converter struct {
	g     *onnxpb.GraphProto
	ix    *graph.Index
	types map[string]graph.Elem
	opts  Options
	// name16 and name32 map an originally float32 value to the names of
	// its float16 and float32 versions, once they exist.
	name16, name32 map[string]string
	// pending holds the Casts the current node needs, emitted before it.
	pending []*onnxpb.NodeProto
	// constWeights counts Constant node tensors converted.
	constWeights int
}

func (c *fp16Converter) convert(ctx context.Context, block []string, rep *Report) error {
	g, ix := c.g, c.ix
	isF32 := func(v string) bool { return v != "" && c.types[v] == graph.Float }
	half := make([]bool, len(g.Node))
	for i, n := range g.Node {
		name := nodeName(n, i)
		switch {
		case !graph.IsDefaultDomain(n):
			rep.Skipped = append(rep.Skipped, Skip{Name: name, OpType: n.GetOpType(), Reason: "operator of domain " + n.GetDomain()})
		case hasSubgraph(n):
			rep.Skipped = append(rep.Skipped, Skip{Name: name, OpType: n.GetOpType(), Reason: "has subgraphs"})
		case slices.Contains(block, n.GetOpType()):
			rep.Skipped = append(rep.Skipped, Skip{Name: name, OpType: n.GetOpType(), Reason: "in the FP16 block list"})
		case !c.opts.selected(name, n.GetOpType()):
			rep.Skipped = append(rep.Skipped, Skip{Name: name, OpType: n.GetOpType(), Reason: skipExcluded})
		default:
			half[i] = true
		}
	}
	// readBySubgraph: values a subgraph reads keep a float32 version under
	// their own name.
	readBySubgraph := map[string]bool{}
	for _, n := range g.Node {
		direct := map[string]bool{}
		for _, in := range n.Input {
			direct[in] = true
		}
		for _, r := range graph.NodeReads(n) {
			if !direct[r] {
				readBySubgraph[r] = true
			}
		}
	}
	graphIn := map[string]*onnxpb.ValueInfoProto{}
	for _, vi := range g.Input {
		graphIn[vi.GetName()] = vi
	}
	graphOut := map[string]*onnxpb.ValueInfoProto{}
	for _, vi := range g.Output {
		graphOut[vi.GetName()] = vi
	}

	// Initializers: float16 when every reader is a float16 node.
	for i, t := range g.Initializer {
		name := t.GetName()
		if graph.Elem(t.GetDataType()) != graph.Float {
			continue
		}
		all16 := len(ix.Consumers[name]) > 0 && !readBySubgraph[name] && graphIn[name] == nil
		for _, ci := range ix.Consumers[name] {
			if !half[ci] || slices.Contains(anyTypeInput, g.Node[ci].GetOpType()) {
				all16 = false
			}
		}
		if !all16 {
			c.name32[name] = name
			continue
		}
		v, err := graph.Floats(t)
		if err != nil {
			return err
		}
		g.Initializer[i] = graph.Float16Tensor(name, t.GetDims(), v)
		c.name16[name] = name
		rep.Weights++
	}
	// Graph inputs.
	for name, vi := range graphIn {
		if _, init := ix.Init[name]; init || !isF32(name) {
			continue
		}
		if c.opts.FP16IO {
			vi.GetType().GetTensorType().ElemType = int32(graph.Float16)
			c.name16[name] = name
		} else {
			c.name32[name] = name
		}
	}

	var nodes []*onnxpb.NodeProto
	for i, n := range g.Node {
		if err := ctx.Err(); err != nil {
			return err
		}
		op := n.GetOpType()
		if !slices.Contains(anyTypeInput, op) {
			for k, in := range n.Input {
				if !isF32(in) {
					continue
				}
				if half[i] {
					n.Input[k] = c.as16(in)
				} else {
					n.Input[k] = c.as32(in)
				}
			}
		} else {
			for k, in := range n.Input {
				if isF32(in) {
					n.Input[k] = c.any(in)
				}
			}
		}
		nodes = append(nodes, c.pending...)
		c.pending = nil
		if !half[i] {
			for _, o := range n.Output {
				if isF32(o) {
					c.name32[o] = o
				}
			}
			nodes = append(nodes, n)
			continue
		}
		if err := c.retype(n); err != nil {
			return fmt.Errorf("node %q: %w", nodeName(n, i), err)
		}
		rep.Quantized = append(rep.Quantized, NodeInfo{Name: nodeName(n, i), OpType: op})
		nodes = append(nodes, n)
		for k, o := range n.Output {
			if !isF32(o) || op == "Cast" && graph.AttrInt(n, "to", 0) != int64(graph.Float16) {
				if isF32(o) {
					c.name32[o] = o
				}
				continue
			}
			keep32 := readBySubgraph[o] || graphOut[o] != nil && !c.opts.FP16IO
			if !keep32 {
				c.name16[o] = o
				continue
			}
			h := c.ix.Unique(o + "_fp16")
			n.Output[k] = h
			c.name16[o] = h
			c.name32[o] = o
			nodes = append(nodes, graph.Node("Cast", c.ix.Unique(o+"_cast_to_fp32"), []string{h}, []string{o},
				graph.IntAttr("to", int64(graph.Float))))
		}
	}
	g.Node = nodes
	rep.Weights += c.constWeights
	if c.opts.FP16IO {
		for name, vi := range graphOut {
			if c.name16[name] == name {
				vi.GetType().GetTensorType().ElemType = int32(graph.Float16)
			}
		}
	}
	for _, vi := range g.ValueInfo {
		if c.name16[vi.GetName()] == vi.GetName() && vi.GetType().GetTensorType() != nil {
			vi.GetType().GetTensorType().ElemType = int32(graph.Float16)
		}
	}
	graph.RemoveUnused(g)
	return graph.TopoSort(g)
}

// as16 returns the name of v's float16 version, adding a Cast if needed.
func (c *fp16Converter) as16(v string) string {
	if n, ok := c.name16[v]; ok {
		return n
	}
	h := c.ix.Unique(v + "_to_fp16")
	c.pending = append(c.pending, graph.Node("Cast", c.ix.Unique(v+"_cast_to_fp16"), []string{c.name32[v]}, []string{h},
		graph.IntAttr("to", int64(graph.Float16))))
	c.name16[v] = h
	return h
}

// as32 returns the name of v's float32 version, adding a Cast if needed.
func (c *fp16Converter) as32(v string) string {
	if n, ok := c.name32[v]; ok {
		return n
	}
	f := c.ix.Unique(v + "_to_fp32")
	c.pending = append(c.pending, graph.Node("Cast", c.ix.Unique(v+"_cast_to_fp32"), []string{c.name16[v]}, []string{f},
		graph.IntAttr("to", int64(graph.Float))))
	c.name32[v] = f
	return f
}

// any returns an existing version of v.
func (c *fp16Converter) any(v string) string {
	if n, ok := c.name16[v]; ok {
		return n
	}
	return c.as32(v)
}

// retype switches the float32-defining attributes of a float16 node.
func (c *fp16Converter) retype(n *onnxpb.NodeProto) error {
	switch n.GetOpType() {
	case "Cast":
		if a := graph.Attr(n, "to"); a != nil && a.GetI() == int64(graph.Float) {
			a.I = int64(graph.Float16)
		}
	case "Constant", "ConstantOfShape":
		for _, a := range n.GetAttribute() {
			if a.GetName() == "value" && a.GetT() != nil && graph.Elem(a.GetT().GetDataType()) == graph.Float {
				v, err := graph.Floats(a.GetT())
				if err != nil {
					return err
				}
				a.T = graph.Float16Tensor(a.GetT().GetName(), a.GetT().GetDims(), v)
				if n.GetOpType() == "Constant" {
					c.constWeights++
				}
			}
			if n.GetOpType() == "Constant" && a.GetName() == "value_float" {
				a.Name, a.Type = "value", onnxpb.AttributeProto_TENSOR
				a.T = graph.Float16Tensor("", nil, []float32{a.GetF()})
				a.F = 0
			}
			if n.GetOpType() == "Constant" && a.GetName() == "value_floats" {
				vals := a.GetFloats()
				a.Name, a.Type = "value", onnxpb.AttributeProto_TENSOR
				a.T = graph.Float16Tensor("", []int64{int64(len(vals))}, vals)
				a.Floats = nil
			}
		}
		if n.GetOpType() == "ConstantOfShape" && graph.Attr(n, "value") == nil {
			// The default value is a float32 zero.
			n.Attribute = append(n.Attribute, &onnxpb.AttributeProto{Name: "value", Type: onnxpb.AttributeProto_TENSOR,
				T: graph.Float16Tensor("", []int64{1}, []float32{0})})
		}
	}
	return nil
}

func hasSubgraph(n *onnxpb.NodeProto) bool {
	for _, a := range n.GetAttribute() {
		if a.GetG() != nil || len(a.GetGraphs()) > 0 {
			return true
		}
	}
	return false
}
