package quantize

import (
	"context"
	"fmt"

	"github.com/edgefleet/edgefleet/quantize/internal/graph"
	"github.com/edgefleet/edgefleet/quantize/onnxpb"
)

// dynamicOpset is the default-domain opset DynamicQuantizeLinear needs.
const dynamicOpset = 11

// msDomain is onnxruntime's contrib operator domain.
const msDomain = "com.microsoft"

// DynamicOpTypes are the operator types Dynamic converts by default (the
// integer-op registry of onnxruntime's quantize_dynamic).
var DynamicOpTypes = []string{"MatMul", "Gemm", "Conv"}

// Dynamic quantizes model dynamically: every selected MatMul, Gemm and Conv
// whose weight (second input) is a constant float32 tensor becomes
//
//	DynamicQuantizeLinear(A) -> MatMulInteger(A_q, W_q, A_zp, W_zp)
//	  -> Cast(float) -> Mul(A_scale * W_scale) [-> Add(bias)]
//
// (ConvInteger for Conv) with uint8 activations and int8 (or
// Options.WeightType) weights, per tensor unless Options.DynamicPerChannel
// is set, as onnxruntime's quantize_dynamic produces (whose per_channel
// leaves Conv per tensor; here symmetric Conv weights get one scale per
// output channel too).
// Gemm's transB is folded into the stored weight and alpha into its scale;
// Gemm with transA is left in float. Weights kept in Constant nodes are
// handled like initializers, and nodes inside If/Loop/Scan bodies are
// converted too (their weights may live in the enclosing graph).
//
// DynamicQuantizeLinear needs default-domain opset 11. An older model's
// opset is raised when none of its operators changed meaning on the way;
// otherwise (PaddleOCR's opset-9 exports, say) MatMul and Gemm become
// onnxruntime's com.microsoft DynamicQuantizeMatMul, the fused form
// onnxruntime itself rewrites the sequence above into, Conv weights are
// stored as per-channel int8 behind com.microsoft DequantizeLinear (the
// Conv itself computes in float), and the default-domain opset stays as it
// is.
//
// Dynamic needs no data and does not run onnxruntime.
func Dynamic(ctx context.Context, model []byte, opts Options) ([]byte, *Report, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, nil, err
	}
	m, err := graph.Decode(model, opts.ExternalDataDir)
	if err != nil {
		return nil, nil, err
	}
	rep := &Report{
		Mode:           ModeDynamic,
		WeightType:     opts.WeightType.String(),
		ActivationType: Uint8.String(),
		PerChannel:     opts.DynamicPerChannel,
		SizeBefore:     len(model),
	}
	rep.OpsetBefore, _ = graph.Opset(m, graph.DefaultDomain)
	d := &dynamicQuantizer{opts: opts, rep: rep, names: graph.ModelNames(m)}
	if rep.OpsetBefore < dynamicOpset {
		if err := checkRaise(m, dynamicOpset); err != nil {
			d.fused = true
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("opset %d kept (%v); MatMul/Gemm become com.microsoft DynamicQuantizeMatMul", rep.OpsetBefore, err))
		}
	}
	if err := d.graph(ctx, m.Graph, nil); err != nil {
		return nil, nil, err
	}
	if len(rep.Quantized) == 0 {
		return nil, rep, fmt.Errorf("%w: no MatMul, Gemm or Conv with a constant float32 weight (%d candidates skipped)", ErrNothingToQuantize, len(rep.Skipped))
	}
	graph.RemoveUnused(m.Graph)
	if d.fused {
		graph.EnsureDomain(m, msDomain, 1)
	} else {
		warn, err := raiseOpset(m, dynamicOpset)
		if err != nil {
			return nil, nil, err
		}
		if warn != "" {
			rep.Warnings = append(rep.Warnings, warn)
		}
	}
	rep.OpsetAfter, _ = graph.Opset(m, graph.DefaultDomain)
	opts.finish(m, rep)
	out, err := graph.Encode(m)
	if err != nil {
		return nil, nil, err
	}
	rep.SizeAfter = len(out)
	opts.Logger.Info("dynamic quantization done", "report", rep.String())
	return out, rep, nil
}

type dynamicQuantizer struct {
	opts  Options
	rep   *Report
	names graph.Names
	// fused selects com.microsoft DynamicQuantizeMatMul for MatMul/Gemm
	// and weight-only Conv.
	fused           bool
	weightOnlyNoted bool
}

// actQ names the outputs of a DynamicQuantizeLinear.
type actQ struct{ q, scale, zp string }

// graph rewrites g (and, recursively, its subgraphs) in place.
func (d *dynamicQuantizer) graph(ctx context.Context, g *onnxpb.GraphProto, parent *graph.Scope) error {
	ix := graph.NewIndexNames(g, d.names)
	nm := newNamer(ix, d.opts)
	scope := &graph.Scope{Ix: ix, Parent: parent}
	acts := map[string]actQ{}
	weights := map[string]*qweight{}
	var nodes []*onnxpb.NodeProto
	for i, n := range g.Node {
		if err := ctx.Err(); err != nil {
			return err
		}
		for _, a := range n.GetAttribute() {
			for _, sg := range append([]*onnxpb.GraphProto{a.GetG()}, a.GetGraphs()...) {
				if sg != nil {
					if err := d.graph(ctx, sg, scope); err != nil {
						return err
					}
				}
			}
		}
		op := n.GetOpType()
		if !graph.IsDefaultDomain(n) || op != "MatMul" && op != "Gemm" && op != "Conv" {
			nodes = append(nodes, n)
			continue
		}
		name := nodeName(n, i)
		rewritten, reason, err := d.node(scope, nm, g, n, name, acts, weights)
		if err != nil {
			return fmt.Errorf("node %q: %w", name, err)
		}
		if reason != "" {
			d.rep.Skipped = append(d.rep.Skipped, Skip{Name: name, OpType: op, Reason: reason})
			nodes = append(nodes, n)
			continue
		}
		nodes = append(nodes, rewritten...)
		d.rep.Quantized = append(d.rep.Quantized, NodeInfo{Name: name, OpType: op})
	}
	g.Node = nodes
	return graph.TopoSort(g)
}

// node returns the quantized replacement of n, or why it stays float.
func (d *dynamicQuantizer) node(scope *graph.Scope, nm *namer, g *onnxpb.GraphProto, n *onnxpb.NodeProto, name string, acts map[string]actQ, weights map[string]*qweight) ([]*onnxpb.NodeProto, string, error) {
	op := n.GetOpType()
	if !d.opts.selected(name, op) {
		return nil, skipExcluded, nil
	}
	if len(n.Input) < 2 || len(n.Output) != 1 {
		return nil, "unexpected arity", nil
	}
	wt, wdata, why := constFloat32(scope, n.Input[1])
	if why != "" {
		return nil, "weight " + why, nil
	}
	dims := wt.GetDims()
	var alpha, beta float32 = 1, 1
	wkey := n.Input[1]
	switch op {
	case "Gemm":
		if graph.AttrInt(n, "transA", 0) != 0 {
			return nil, "transA=1 is not supported", nil
		}
		if len(dims) != 2 {
			return nil, "weight is not 2-D", nil
		}
		alpha = graph.AttrFloat(n, "alpha", 1)
		beta = graph.AttrFloat(n, "beta", 1)
		if graph.AttrInt(n, "transB", 0) != 0 {
			wdata = transpose2D(wdata, dims[0], dims[1])
			dims = []int64{dims[1], dims[0]}
			wkey += "/transposed"
		}
	case "MatMul":
		if len(dims) < 2 {
			return nil, "weight has rank < 2", nil
		}
	case "Conv":
		if len(dims) < 3 {
			return nil, "weight has rank < 3", nil
		}
	}
	weightOnly := op == "Conv" && d.fused
	wkey = fmt.Sprintf("%s/alpha=%g/weightonly=%v", wkey, alpha, weightOnly)
	qw, ok := weights[wkey]
	if !ok {
		axis := -1
		// Per-channel Conv weights need one zero point for ConvInteger
		// (onnxruntime's kernel takes a scalar): symmetric weights only.
		convPerChannel := op == "Conv" && d.opts.DynamicPerChannel && d.opts.weightSymmetric() && !weightOnly
		switch {
		case convPerChannel:
			axis = 0
		case d.opts.DynamicPerChannel && op != "Conv":
			axis = len(dims) - 1
		}
		if weightOnly {
			axis = 0 // per output channel: no activation scale to share
		}
		var err error
		qw, err = quantizeWeight(nm, g, n.Input[1], dims, wdata, d.opts.WeightType, d.opts.weightSymmetric(), d.opts.ReduceRange, axis)
		if err != nil {
			return nil, "", err
		}
		if convPerChannel {
			// ConvInteger's output is [N, M, spatial...]: the scales
			// broadcast as [M, 1, ...]; the zero point is the scalar 0.
			sdims := make([]int64, len(dims)-1)
			sdims[0] = dims[0]
			for j := 1; j < len(sdims); j++ {
				sdims[j] = 1
			}
			replaceInit(g, graph.FloatTensor(qw.Scale, sdims, qw.Scales))
			replaceInit(g, graph.IntTensor(qw.ZP, graph.Elem(d.opts.WeightType), nil, []int32{0}))
		}
		if alpha != 1 {
			for j := range qw.Scales {
				qw.Scales[j] *= alpha // fold alpha into the weight scale
			}
			replaceInit(g, graph.FloatTensor(qw.Scale, scaleDims(qw), qw.Scales))
		}
		weights[wkey] = qw
		d.rep.Weights++
	}
	if weightOnly {
		// ConvInteger needs DynamicQuantizeLinear (opset 11): keep the Conv
		// in float and store its weight as int8 behind onnxruntime's
		// com.microsoft DequantizeLinear.
		var nodes []*onnxpb.NodeProto
		if qw.Dequantized == "" {
			wb := nm.group(n.Input[1], "w")
			qw.Dequantized = nm.value(wb, "_DequantizeLinear_Output", "_dq")
			dq := graph.Node("DequantizeLinear", nm.node(wb, "_DequantizeLinear"),
				[]string{qw.Q, qw.Scale, qw.ZP}, []string{qw.Dequantized}, graph.IntAttr("axis", 0))
			dq.Domain = msDomain
			nodes = append(nodes, dq)
		}
		n.Input[1] = qw.Dequantized
		if !d.weightOnlyNoted {
			d.weightOnlyNoted = true
			d.rep.Warnings = append(d.rep.Warnings, "Conv weights stored as int8 behind com.microsoft DequantizeLinear (weight-only: Conv computes in float)")
		}
		return append(nodes, n), "", nil
	}
	if d.fused {
		return fusedDynamic(scope, nm, g, n, name, qw, beta), "", nil
	}

	var nodes []*onnxpb.NodeProto
	a := n.Input[0]
	aq, ok := acts[a]
	if !ok {
		ab := nm.group(a, "a")
		aq = actQ{q: nm.value(ab, "_quantized", "_q"), scale: nm.value(ab, "_scale", "_s"), zp: nm.value(ab, "_zero_point", "_z")}
		acts[a] = aq
		nodes = append(nodes, graph.Node("DynamicQuantizeLinear", nm.node(ab, "_QuantizeLinear"),
			[]string{a}, []string{aq.q, aq.scale, aq.zp}))
	}
	out := n.Output[0]
	// onnxruntime derives these names from the output and the node name.
	ob, base := out, name+"_quant"
	if !d.opts.ORTNames {
		ob = nm.group(out, "m")
		base = ob
	}
	intOut := nm.value(ob, "_output_quantized", "_i")
	castOut := nm.value(ob, "_output_quantized_cast_output", "_f")
	scalesOut := nm.value(base, "_scales_mul:0", "_s")
	final := out
	var post []*onnxpb.NodeProto
	if len(n.Input) > 2 && n.Input[2] != "" {
		final = nm.value(ob, "_before_bias", "_b")
		c := n.Input[2]
		switch {
		case op == "Conv":
			// Reshape the [M] bias to [M, 1, ...] to broadcast over the
			// spatial dimensions.
			bt, bdata, why := constFloat32(scope, c)
			if why != "" {
				return nil, "bias " + why, nil
			}
			bdims := make([]int64, len(dims)-1)
			bdims[0] = graph.NumElements(bt.GetDims())
			for j := 1; j < len(bdims); j++ {
				bdims[j] = 1
			}
			c = nm.value(nm.group(c, "c"), "_reshaped", "")
			g.Initializer = append(g.Initializer, graph.FloatTensor(c, bdims, bdata))
		case beta == 1:
			// C is added as it is.
		default:
			if ct, cdata, why := constFloat32(scope, c); why == "" {
				for j := range cdata {
					cdata[j] *= beta
				}
				c = nm.value(nm.group(c, "c"), "_beta", "")
				g.Initializer = append(g.Initializer, graph.FloatTensor(c, ct.GetDims(), cdata))
			} else {
				betaName := nm.value(base, "_beta", "_beta")
				g.Initializer = append(g.Initializer, graph.FloatTensor(betaName, nil, []float32{beta}))
				scaled := nm.value(base, "_times_beta", "_cb")
				nodes = append(nodes, graph.Node("Mul", nm.node(base, "_beta_mul"), []string{c, betaName}, []string{scaled}))
				c = scaled
			}
		}
		post = append(post, graph.Node("Add", nm.node(base, "_bias_add"), []string{final, c}, []string{out}))
	}
	// The integer node keeps the original node's name (onnxruntime adds
	// "_quant").
	intName := name + "_quant"
	if !d.opts.ORTNames {
		intName = n.GetName()
	}
	intOp := graph.Node("MatMulInteger", intName, []string{aq.q, qw.Q, aq.zp, qw.ZP}, []string{intOut})
	if op == "Conv" {
		intOp.OpType = "ConvInteger"
		intOp.Attribute = n.Attribute // auto_pad, dilations, group, kernel_shape, pads, strides
	}
	nodes = append(nodes,
		intOp,
		graph.Node("Cast", nm.node(intOut, "_cast"), []string{intOut}, []string{castOut}, graph.IntAttr("to", int64(graph.Float))),
		graph.Node("Mul", nm.node(base, "_scales_mul"), []string{aq.scale, qw.Scale}, []string{scalesOut}),
		graph.Node("Mul", nm.node(base, "_output_scale_mul"), []string{castOut, scalesOut}, []string{final}),
	)
	return append(nodes, post...), "", nil
}

// fusedDynamic returns the com.microsoft DynamicQuantizeMatMul form of the
// MatMul or Gemm n with quantized weight qw: the bias goes into the fused
// node when it is a constant vector, else into an Add after it.
func fusedDynamic(scope *graph.Scope, nm *namer, g *onnxpb.GraphProto, n *onnxpb.NodeProto, name string, qw *qweight, beta float32) []*onnxpb.NodeProto {
	out := n.Output[0]
	base := name
	if !nm.ort {
		base = nm.group(out, "m")
	}
	inputs := []string{n.Input[0], qw.Q, qw.Scale, qw.ZP}
	var pre, post []*onnxpb.NodeProto
	final := out
	if n.GetOpType() == "Gemm" && len(n.Input) > 2 && n.Input[2] != "" {
		c := n.Input[2]
		ct, cdata, why := constFloat32(scope, c)
		if why == "" && len(ct.GetDims()) <= 1 && (len(cdata) == 1 || int64(len(cdata)) == qw.Cols) {
			bias := make([]float32, qw.Cols)
			for j := range bias {
				bias[j] = cdata[min(j, len(cdata)-1)] * beta
			}
			bname := nm.value(base, "_bias", "_bias")
			g.Initializer = append(g.Initializer, graph.FloatTensor(bname, []int64{qw.Cols}, bias))
			inputs = append(inputs, bname)
		} else {
			final = nm.value(base, "_before_bias", "_b")
			if beta != 1 {
				betaName := nm.value(base, "_beta", "_beta")
				g.Initializer = append(g.Initializer, graph.FloatTensor(betaName, nil, []float32{beta}))
				scaled := nm.value(base, "_times_beta", "_cb")
				pre = append(pre, graph.Node("Mul", nm.node(base, "_beta_mul"), []string{c, betaName}, []string{scaled}))
				c = scaled
			}
			post = append(post, graph.Node("Add", nm.node(base, "_quant_bias_add"), []string{final, c}, []string{out}))
		}
	}
	fusedName := name + "_quant"
	if !nm.ort {
		fusedName = n.GetName()
	}
	fusedNode := graph.Node("DynamicQuantizeMatMul", fusedName, inputs, []string{final})
	fusedNode.Domain = msDomain
	return append(append(pre, fusedNode), post...)
}

func scaleDims(qw *qweight) []int64 {
	if qw.Axis < 0 {
		return nil
	}
	return []int64{int64(len(qw.Scales))}
}

// replaceInit replaces the initializer with t's name by t.
func replaceInit(g *onnxpb.GraphProto, t *onnxpb.TensorProto) {
	for i, x := range g.Initializer {
		if x.GetName() == t.GetName() {
			g.Initializer[i] = t
			return
		}
	}
	g.Initializer = append(g.Initializer, t)
}
