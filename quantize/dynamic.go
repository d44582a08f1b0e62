package quantize

import (
	"context"
	"fmt"

	"github.com/edgefleet/edgefleet/quantize/internal/graph"
	"github.com/edgefleet/edgefleet/quantize/onnxpb"
)

// dynamicOpset is the default-domain opset DynamicQuantizeLinear needs.
const dynamicOpset = 11

// Dynamic quantizes model dynamically: every selected MatMul and Gemm whose
// weight (second input) is a constant float32 tensor of rank 2 or more
// becomes
//
//	DynamicQuantizeLinear(A) -> MatMulInteger(A_q, W_q, A_zp, W_zp)
//	  -> Cast(float) -> Mul(A_scale * W_scale) [-> Add(beta*C) for Gemm]
//
// with uint8 activations and int8 (or Options.WeightType) weights, per tensor
// unless Options.DynamicPerChannel is set, as onnxruntime's quantize_dynamic
// produces. Gemm's transB is folded into the stored weight and alpha into
// its scale. Weights kept in Constant nodes are handled like initializers.
// It needs no data and does not run onnxruntime.
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
	if err := dynamicGraph(ctx, m, opts, rep); err != nil {
		return nil, nil, err
	}
	if len(rep.Quantized) == 0 {
		return nil, rep, fmt.Errorf("%w: no MatMul or Gemm with a constant float32 weight (%d candidates skipped)", ErrNothingToQuantize, len(rep.Skipped))
	}
	warn, err := raiseOpset(m, dynamicOpset)
	if err != nil {
		return nil, nil, err
	}
	if warn != "" {
		rep.Warnings = append(rep.Warnings, warn)
	}
	rep.OpsetAfter, _ = graph.Opset(m, graph.DefaultDomain)
	out, err := graph.Encode(m)
	if err != nil {
		return nil, nil, err
	}
	rep.SizeAfter = len(out)
	opts.Logger.Info("dynamic quantization done", "report", rep.String())
	return out, rep, nil
}

// dynamicGraph rewrites m's main graph in place.
func dynamicGraph(ctx context.Context, m *onnxpb.ModelProto, opts Options, rep *Report) error {
	g := m.Graph
	ix := graph.NewIndex(g)
	type actQ struct{ q, scale, zp string }
	acts := map[string]actQ{}
	weights := map[string]*qweight{}
	var nodes []*onnxpb.NodeProto
	for i, n := range g.Node {
		if err := ctx.Err(); err != nil {
			return err
		}
		op := n.GetOpType()
		if !graph.IsDefaultDomain(n) || op != "MatMul" && op != "Gemm" {
			nodes = append(nodes, n)
			continue
		}
		name := nodeName(n, i)
		skip := func(reason string) {
			rep.Skipped = append(rep.Skipped, Skip{Name: name, OpType: op, Reason: reason})
			nodes = append(nodes, n)
		}
		if !opts.selected(n.GetName(), op) {
			skip("excluded by options")
			continue
		}
		if len(n.Input) < 2 || len(n.Output) != 1 {
			skip("unexpected arity")
			continue
		}
		wt, wdata, why := constFloat32(ix, n.Input[1])
		if why != "" {
			skip("weight " + why)
			continue
		}
		dims := wt.GetDims()
		var alpha, beta float32 = 1, 1
		wkey := n.Input[1]
		if op == "Gemm" {
			if graph.AttrInt(n, "transA", 0) != 0 {
				skip("transA=1 is not supported")
				continue
			}
			if len(dims) != 2 {
				skip("weight is not 2-D")
				continue
			}
			alpha = graph.AttrFloat(n, "alpha", 1)
			beta = graph.AttrFloat(n, "beta", 1)
			if graph.AttrInt(n, "transB", 0) != 0 {
				wdata = transpose2D(wdata, dims[0], dims[1])
				dims = []int64{dims[1], dims[0]}
				wkey += "/transposed"
			}
		} else if len(dims) < 2 {
			skip("weight has rank < 2")
			continue
		}
		wkey = fmt.Sprintf("%s/alpha=%g", wkey, alpha)
		qw, ok := weights[wkey]
		if !ok {
			axis := -1
			if opts.DynamicPerChannel {
				axis = len(dims) - 1
			}
			var err error
			qw, err = quantizeWeight(ix, g, n.Input[1], dims, wdata, opts.WeightType, opts.weightSymmetric(), opts.ReduceRange, axis)
			if err != nil {
				return err
			}
			if alpha != 1 {
				// Fold alpha into the weight scale.
				for j := range qw.Scales {
					qw.Scales[j] *= alpha
				}
				replaceInit(g, graph.FloatTensor(qw.Scale, scaleDims(qw), qw.Scales))
			}
			weights[wkey] = qw
			rep.Weights++
		}
		a := n.Input[0]
		aq, ok := acts[a]
		if !ok {
			aq = actQ{q: ix.Unique(a + "_quantized"), scale: ix.Unique(a + "_scale"), zp: ix.Unique(a + "_zero_point")}
			acts[a] = aq
			nodes = append(nodes, graph.Node("DynamicQuantizeLinear", ix.Unique(a+"_QuantizeLinear"),
				[]string{a}, []string{aq.q, aq.scale, aq.zp}))
		}
		out := n.Output[0]
		base := name + "_quant"
		mmOut := ix.Unique(out + "_output_quantized")
		castOut := ix.Unique(mmOut + "_cast_output")
		scalesOut := ix.Unique(base + "_scales_mul:0")
		final := out
		var bias *onnxpb.NodeProto
		if op == "Gemm" && len(n.Input) > 2 && n.Input[2] != "" {
			final = ix.Unique(out + "_before_bias")
			c := n.Input[2]
			if beta == 1 {
				// C is added as it is.
			} else if ct, cdata, why := constFloat32(ix, c); why == "" {
				for j := range cdata {
					cdata[j] *= beta
				}
				c = ix.Unique(c + "_beta")
				g.Initializer = append(g.Initializer, graph.FloatTensor(c, ct.GetDims(), cdata))
			} else {
				betaName := ix.Unique(name + "_beta")
				g.Initializer = append(g.Initializer, graph.FloatTensor(betaName, nil, []float32{beta}))
				scaled := ix.Unique(c + "_times_beta")
				nodes = append(nodes, graph.Node("Mul", ix.Unique(name+"_beta_mul"), []string{c, betaName}, []string{scaled}))
				c = scaled
			}
			bias = graph.Node("Add", ix.Unique(base+"_bias_add"), []string{final, c}, []string{out})
		}
		nodes = append(nodes,
			graph.Node("MatMulInteger", ix.Unique(base), []string{aq.q, qw.Q, aq.zp, qw.ZP}, []string{mmOut}),
			graph.Node("Cast", ix.Unique(mmOut+"_cast"), []string{mmOut}, []string{castOut}, graph.IntAttr("to", int64(graph.Float))),
			graph.Node("Mul", ix.Unique(base+"_scales_mul"), []string{aq.scale, qw.Scale}, []string{scalesOut}),
			graph.Node("Mul", ix.Unique(base+"_output_scale_mul"), []string{castOut, scalesOut}, []string{final}),
		)
		if bias != nil {
			nodes = append(nodes, bias)
		}
		rep.Quantized = append(rep.Quantized, NodeInfo{Name: name, OpType: op})
	}
	g.Node = nodes
	graph.RemoveUnused(g)
	return graph.TopoSort(g)
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
