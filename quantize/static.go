package quantize

import (
	"context"
	"fmt"
	"slices"

	"github.com/edgefleet/edgefleet/quantize/internal/graph"
	"github.com/edgefleet/edgefleet/quantize/onnxpb"
	"github.com/edgefleet/edgefleet/quantize/quantmath"
)

// Operator groups of static (QDQ) quantization, after onnxruntime's
// QDQRegistry and the QDQ selectors of its CPU provider.
var (
	// qdqWeighted ops get quantized activations, weights and int32 biases.
	qdqWeighted = []string{"Conv", "ConvTranspose", "MatMul", "Gemm"}
	// qdqRemovable activations disappear into the preceding quantization
	// when their range makes the clamp implicit (QDQRemovableActivation).
	qdqRemovable = []string{"Relu", "Clip"}
	// qdqDirect ops move 8-bit data unchanged: their outputs share the
	// input's scale and zero point, and they are only quantized when their
	// input already is (QDQDirect8BitOp and friends).
	qdqDirect = []string{"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "MaxPool",
		"AveragePool", "Resize", "Split", "Gather", "GatherElements", "DepthToSpace", "SpaceToDepth"}
	// qdqGeneric ops get every float input and output quantized.
	qdqGeneric = []string{"Add", "Mul", "Concat", "Sigmoid", "LeakyRelu", "GlobalAveragePool"}
	// qdqOptIn ops stay float unless Options.IncludeOpTypes names them.
	qdqOptIn = []string{"Softmax", "LayerNormalization", "InstanceNormalization", "BatchNormalization"}
)

// StaticOpTypes lists every operator type Static can quantize.
func StaticOpTypes() []string {
	return slices.Concat(qdqWeighted, qdqRemovable, qdqDirect, qdqGeneric, qdqOptIn)
}

// Static quantizes model statically in QDQ format. Activations get
// QuantizeLinear/DequantizeLinear pairs with ranges calibrated by running
// the FP32 model on calib in onnxruntime (Options.Calibration); weights of
// Conv, ConvTranspose, MatMul and Gemm are stored as int8 with symmetric
// per-output-channel scales (Conv axis 0, MatMul axis 1, Gemm axis 0 or 1
// by transB) behind DequantizeLinear; their biases become int32 with scale
// input scale × weight scale. Relu (and Clip from 0) after a quantized
// output is dropped when the output range makes it implicit. The operators
// onnxruntime's CPU provider fuses with QDQ (Add, Mul, Concat, pooling,
// reshaping ops, ...) are quantized too; Softmax and the normalizations stay
// float unless Options.IncludeOpTypes names them.
//
// Per-channel DequantizeLinear needs default-domain opset 13; an older
// model is raised to 13 when that is safe, else its weights are quantized
// per tensor (noted in Report.Warnings).
func Static(ctx context.Context, model []byte, calib []Batch, opts Options) ([]byte, *Report, error) {
	j, err := newStaticJob(model, calib, opts)
	if err != nil {
		return nil, nil, err
	}
	return j.quantize(ctx, j.opts)
}

// staticJob holds what repeated static quantizations of one model share:
// the decoded model, its value types and the calibrated ranges.
type staticJob struct {
	model   []byte
	m       *onnxpb.ModelProto
	types   map[string]graph.Elem
	batches []Batch
	opts    Options
	// opsetBefore is the model's own default-domain opset; conversion is
	// the upgrade applied to m (nil when none), convertErr why it failed.
	opsetBefore int64
	conversion  *ConversionReport
	convertErr  error
	// folded counts the Options.Fold rewrites applied to m.
	folded map[string]int
	// ranges caches calibrated tensor ranges.
	ranges map[string][2]float32
}

func newStaticJob(model []byte, batches []Batch, opts Options) (*staticJob, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	m, err := graph.Decode(model, opts.ExternalDataDir)
	if err != nil {
		return nil, err
	}
	if len(batches) == 0 {
		return nil, fmt.Errorf("%w: static quantization needs at least one batch", ErrEmptyCalibration)
	}
	if err := checkBatches(m, batches); err != nil {
		return nil, err
	}
	for _, op := range opts.IncludeOpTypes {
		if !slices.Contains(StaticOpTypes(), op) {
			return nil, fmt.Errorf("%w: cannot quantize operator type %q (supported: %v)", ErrUnsupported, op, StaticOpTypes())
		}
	}
	if err := checkDomains(m); err != nil {
		return nil, err
	}
	j := &staticJob{model: model, m: m, batches: batches, opts: opts, ranges: map[string][2]float32{}}
	j.opsetBefore, _ = graph.Opset(m, graph.DefaultDomain)
	// QuantizeLinear needs opset 10 and per-channel DequantizeLinear 13:
	// convert older models first (on a copy; a model that cannot be
	// converted falls back to raising the opset where that is safe).
	if need := int64(10); j.opsetBefore < StaticOpset && (!opts.PerTensor || j.opsetBefore < need) {
		c := graph.Clone(m)
		if rep, err := convertModel(c, StaticOpset); err != nil {
			j.convertErr = err
			opts.Logger.Warn("opset conversion failed", "err", err)
		} else {
			j.m, j.conversion = c, rep
			opts.Logger.Info("opset converted", "report", rep.String())
		}
	}
	if opts.Fold {
		if j.folded, err = foldGraph(j.m); err != nil {
			return nil, err
		}
		opts.Logger.Info("folded", "rewrites", j.folded)
	}
	if j.types, err = inferTypes(j.m); err != nil {
		return nil, err
	}
	return j, nil
}

// knownDomains are the operator domains onnxruntime's CPU provider runs.
var knownDomains = map[string]bool{"": true, "ai.onnx": true, "ai.onnx.ml": true, "com.microsoft": true, "com.microsoft.nchwc": true}

// checkDomains rejects nodes of operator domains onnxruntime cannot run
// (custom operators), which calibration would trip over.
func checkDomains(m *onnxpb.ModelProto) error {
	for i, n := range m.Graph.Node {
		if !knownDomains[n.GetDomain()] {
			return fmt.Errorf("%w: node %q uses operator %s of domain %q, which onnxruntime cannot run without its custom-op library",
				ErrUnsupported, nodeName(n, i), n.GetOpType(), n.GetDomain())
		}
	}
	return nil
}

// tensor kinds of a static plan.
const (
	kindActivation = iota // calibrated, QuantizeLinear + DequantizeLinear
	kindWeight            // constant, stored quantized + DequantizeLinear
	kindConst             // constant input of a generic op, activation type
)

type tensorPlan struct {
	kind int
	// axis is the per-channel axis of a weight, -1 per tensor.
	axis int
	// share names the tensor whose parameters this one reuses.
	share string
}

type biasPlan struct {
	node                 int
	bias, input, weight  string
	beta                 float32
	weightAxisPerChannel bool
}

type staticPlan struct {
	order   []string
	tensors map[string]*tensorPlan
	biases  []biasPlan
	// removed maps the index of each dropped Relu/Clip to its input.
	removed map[int]string
	nodes   []NodeInfo
	skipped []Skip
}

func (p *staticPlan) add(name string, tp *tensorPlan, override bool) {
	if _, ok := p.tensors[name]; ok && !override {
		return
	}
	if _, ok := p.tensors[name]; !ok {
		p.order = append(p.order, name)
	}
	p.tensors[name] = tp
}

// plan decides, walking the graph in order as onnxruntime does, which
// tensors get quantized and how.
func (j *staticJob) plan(opts Options, perChannel bool) *staticPlan {
	g := j.m.Graph
	ix := graph.NewIndex(g)
	scope := &graph.Scope{Ix: ix}
	p := &staticPlan{tensors: map[string]*tensorPlan{}, removed: map[int]string{}}
	isFloat := func(name string) bool { return name != "" && j.types[name] == graph.Float }
	isConst := func(name string) bool { _, ok := ix.Const(name); return ok }
	act := func(name string) {
		if !isFloat(name) {
			return
		}
		kind := kindActivation
		if isConst(name) {
			kind = kindConst
		}
		p.add(name, &tensorPlan{kind: kind, axis: -1}, false)
	}
	weight := func(name string, axis int) {
		if !isFloat(name) {
			return
		}
		if !isConst(name) {
			act(name)
			return
		}
		if !perChannel {
			axis = -1
		}
		p.add(name, &tensorPlan{kind: kindWeight, axis: axis}, true)
	}
	opset, _ := graph.Opset(j.m, graph.DefaultDomain)
	for i, n := range g.Node {
		op := n.GetOpType()
		name := nodeName(n, i)
		if !graph.IsDefaultDomain(n) || !slices.Contains(StaticOpTypes(), op) {
			continue
		}
		if opts.ConvOnly && slices.Contains(qdqGeneric, op) {
			p.skipped = append(p.skipped, Skip{Name: name, OpType: op, Reason: "element-wise operator kept in float (Options.ConvOnly)"})
			continue
		}
		if slices.Contains(qdqOptIn, op) && !slices.Contains(opts.IncludeOpTypes, op) {
			p.skipped = append(p.skipped, Skip{Name: name, OpType: op, Reason: "kept in float by default (Options.IncludeOpTypes)"})
			continue
		}
		if !opts.selected(name, op) {
			p.skipped = append(p.skipped, Skip{Name: name, OpType: op, Reason: skipExcluded})
			continue
		}
		done := true
		switch {
		case slices.Contains(qdqWeighted, op):
			if len(n.Input) < 2 || !isFloat(n.Input[0]) {
				p.skipped = append(p.skipped, Skip{Name: name, OpType: op, Reason: "input is not float32"})
				continue
			}
			act(n.Input[0])
			axis := -1
			wt, _ := scope.Const(n.Input[1])
			rank := len(wt.GetDims())
			switch op {
			case "Conv":
				axis = 0
			case "ConvTranspose":
				if graph.AttrInt(n, "group", 1) == 1 {
					axis = 1
				}
			case "MatMul":
				if rank == 2 {
					axis = 1
				}
			case "Gemm":
				axis = 1
				if graph.AttrInt(n, "transB", 0) != 0 {
					axis = 0
				}
			}
			if op == "MatMul" && !isConst(n.Input[1]) {
				act(n.Input[1])
			} else {
				weight(n.Input[1], axis)
			}
			act(n.Output[0])
			if (op == "Conv" || op == "Gemm" || op == "ConvTranspose") && len(n.Input) > 2 && isFloat(n.Input[2]) && isConst(n.Input[2]) && isConst(n.Input[1]) {
				beta := float32(1)
				if op == "Gemm" {
					beta = graph.AttrFloat(n, "beta", 1)
				}
				p.biases = append(p.biases, biasPlan{node: i, bias: n.Input[2], input: n.Input[0], weight: n.Input[1], beta: beta})
			}
		case slices.Contains(qdqRemovable, op):
			in, out := n.Input[0], n.Output[0]
			if !isFloat(in) {
				continue
			}
			if removable(n, ix, opts, scope) {
				if _, planned := p.tensors[in]; planned {
					delete(p.tensors, in)
					p.order = slices.DeleteFunc(p.order, func(s string) bool { return s == in })
				}
				p.removed[i] = in
			} else {
				act(in)
			}
			act(out)
		case slices.Contains(qdqDirect, op):
			if op == "MaxPool" && opset < 12 {
				done = false
				p.skipped = append(p.skipped, Skip{Name: name, OpType: op, Reason: "8-bit MaxPool needs opset 12"})
				break
			}
			if _, ok := p.tensors[n.Input[0]]; !ok || !isFloat(n.Input[0]) {
				done = false
				break
			}
			for _, o := range n.Output {
				if isFloat(o) {
					p.add(o, &tensorPlan{kind: kindActivation, axis: -1, share: n.Input[0]}, true)
				}
			}
		case op == "LayerNormalization" || op == "InstanceNormalization" || op == "BatchNormalization":
			act(n.Input[0])
			act(n.Output[0])
		default: // generic
			for _, in := range n.Input {
				act(in)
			}
			for _, o := range n.Output {
				act(o)
			}
		}
		if done {
			p.nodes = append(p.nodes, NodeInfo{Name: name, OpType: op})
		}
	}
	// A shared tensor whose provider is no longer planned gets its own range.
	for _, name := range p.order {
		tp := p.tensors[name]
		if tp.share != "" {
			if _, ok := p.tensors[tp.share]; !ok {
				tp.share = ""
			}
		}
	}
	return p
}

// removable reports whether Relu/Clip n can be dropped into the
// quantization of its input (try_replacing_upstream_output).
func removable(n *onnxpb.NodeProto, ix *graph.Index, opts Options, scope *graph.Scope) bool {
	if opts.ActivationSymmetric {
		return false
	}
	in := n.Input[0]
	if len(ix.Consumers[in]) != 1 || ix.Outputs[in] || ix.Inputs[in] {
		return false
	}
	if _, ok := ix.Producer[in]; !ok {
		return false
	}
	if n.GetOpType() == "Relu" {
		return true
	}
	// Clip: only a clamp from 0 (Relu6 and the like) is implicit in an
	// asymmetric range that starts at 0.
	if a := graph.Attr(n, "min"); a != nil {
		return a.GetF() == 0
	}
	if len(n.Input) < 2 || n.Input[1] == "" {
		return false
	}
	t, ok := scope.Const(n.Input[1])
	if !ok {
		return false
	}
	v, err := graph.Floats(t)
	return err == nil && len(v) == 1 && v[0] == 0
}

// activationTensors lists the tensors of p that need calibrated ranges.
func (p *staticPlan) activationTensors() []string {
	var out []string
	for _, name := range p.order {
		tp := p.tensors[name]
		if tp.kind == kindActivation && tp.share == "" {
			out = append(out, name)
		}
	}
	return out
}

// quantize plans, calibrates what the cache lacks and builds the QDQ model.
func (j *staticJob) quantize(ctx context.Context, opts Options) ([]byte, *Report, error) {
	rep := &Report{
		Mode:           ModeStatic,
		WeightType:     opts.WeightType.String(),
		ActivationType: opts.ActivationType.String(),
		SizeBefore:     len(j.model),
	}
	rep.OpsetBefore = j.opsetBefore
	qm := graph.Clone(j.m)
	perChannel := !opts.PerTensor
	if j.conversion != nil {
		rep.Conversion = j.conversion
		rep.Warnings = append(rep.Warnings, j.conversion.String())
	} else if j.convertErr != nil {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("opset conversion to %d failed: %v", StaticOpset, j.convertErr))
	}
	if len(j.folded) > 0 {
		rep.Folded = j.folded
		rep.Warnings = append(rep.Warnings, foldSummary(j.folded))
	}
	if cur, _ := graph.Opset(qm, graph.DefaultDomain); cur < 10 {
		warn, err := raiseOpset(qm, 11)
		if err != nil {
			return nil, nil, err
		}
		rep.Warnings = append(rep.Warnings, warn)
	}
	if cur, _ := graph.Opset(qm, graph.DefaultDomain); perChannel && cur < 13 {
		if err := checkRaise(qm, 13); err != nil {
			perChannel = false
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("per-channel weights need opset 13; quantized per tensor instead (%v)", err))
		} else {
			warn, _ := raiseOpset(qm, 13)
			rep.Warnings = append(rep.Warnings, warn)
		}
	}
	rep.PerChannel = perChannel
	p := j.plan(opts, perChannel)
	rep.Skipped = p.skipped
	if len(p.nodes) == 0 {
		return nil, rep, fmt.Errorf("%w: no node qualifies for static quantization (%d skipped)", ErrNothingToQuantize, len(p.skipped))
	}
	var missing []string
	for _, name := range p.activationTensors() {
		if _, ok := j.ranges[name]; !ok {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		opts.Logger.Info("calibrating", "tensors", len(missing), "batches", len(j.batches), "method", opts.Calibration.String())
		ranges, err := calibrate(ctx, j.m, missing, j.batches, opts)
		if err != nil {
			return nil, nil, err
		}
		for k, v := range ranges {
			j.ranges[k] = v
		}
	}
	rep.Calibration = &CalibrationInfo{Method: opts.Calibration.String(), Batches: len(j.batches), Samples: samples(j.batches), Ranges: map[string][2]float32{}}
	if opts.Calibration == Percentile {
		rep.Calibration.Percentile = opts.Percentile
	}
	for _, name := range p.activationTensors() {
		rep.Calibration.Ranges[name] = j.ranges[name]
	}
	if err := j.build(qm, p, opts, rep); err != nil {
		return nil, nil, err
	}
	rep.Quantized = p.nodes
	rep.OpsetAfter, _ = graph.Opset(qm, graph.DefaultDomain)
	opts.finish(qm, rep)
	out, err := graph.Encode(qm)
	if err != nil {
		return nil, nil, err
	}
	rep.SizeAfter = len(out)
	opts.Logger.Info("static quantization done", "report", rep.String())
	return out, rep, nil
}

// qparams names the scale and zero point of a quantized activation.
type qparams struct {
	base, scale, zp string
	scaleVal        float32
}

// build rewrites qm (a clone of j.m) following p.
func (j *staticJob) build(qm *onnxpb.ModelProto, p *staticPlan, opts Options, rep *Report) error {
	g := qm.Graph
	ix := graph.NewIndexNames(g, graph.ModelNames(qm))
	nm := newNamer(ix, opts)
	scope := &graph.Scope{Ix: ix}
	actType := opts.ActivationType
	aqmin, aqmax, err := quantmath.Range(actType, false, opts.ActivationSymmetric)
	if err != nil {
		return err
	}
	// Drop removable activations: their producer writes their output.
	removedNodes := map[*onnxpb.NodeProto]bool{}
	for i, in := range p.removed {
		relu := g.Node[i]
		prod := g.Node[ix.Producer[in]]
		for k, o := range prod.Output {
			if o == in {
				prod.Output[k] = relu.Output[0]
			}
		}
		removedNodes[relu] = true
	}

	// rename maps a tensor to the name its quantized consumers read.
	rename := map[string]string{}
	params := map[string]qparams{}
	weightScales := map[string][]float32{}
	var head []*onnxpb.NodeProto
	after := map[string][]*onnxpb.NodeProto{} // QDQ nodes emitted after a tensor's producer
	graphOutputs := map[string]bool{}
	for _, vi := range g.Output {
		graphOutputs[vi.GetName()] = true
	}
	producerOf := map[string]*onnxpb.NodeProto{}
	for _, n := range g.Node {
		for _, o := range n.Output {
			producerOf[o] = n
		}
	}

	for _, name := range p.order {
		tp := p.tensors[name]
		switch tp.kind {
		case kindWeight, kindConst:
			t, ok := scope.Const(name)
			if !ok {
				return fmt.Errorf("tensor %q: constant vanished", name)
			}
			data, err := graph.Floats(t)
			if err != nil {
				return err
			}
			qt, sym := opts.WeightType, opts.weightSymmetric()
			if tp.kind == kindConst {
				qt = actType
			}
			if tp.axis >= 0 {
				qt = Int8 // per-channel weights are int8 (QLinearConv needs one type)
				sym = true
			}
			qw, err := quantizeWeight(nm, g, name, t.GetDims(), data, qt, sym, opts.ReduceRange, tp.axis)
			if err != nil {
				return err
			}
			if tp.kind == kindWeight {
				rep.Weights++
			}
			weightScales[name] = qw.Scales
			out := nm.value(name, "_DequantizeLinear_Output", "_dq")
			dq := graph.Node("DequantizeLinear", nm.node(name, "_DequantizeLinear"), []string{qw.Q, qw.Scale, qw.ZP}, []string{out})
			if tp.axis >= 0 {
				dq.Attribute = append(dq.Attribute, graph.IntAttr("axis", int64(tp.axis)))
			}
			head = append(head, dq)
			rename[name] = out
		case kindActivation:
			var qp qparams
			if tp.share != "" {
				var ok bool
				if qp, ok = params[tp.share]; !ok {
					return fmt.Errorf("tensor %q: parameters of %q not ready", name, tp.share)
				}
			} else {
				r := j.ranges[name]
				zp, scale, err := quantmath.ComputeScaleZP(r[0], r[1], aqmin, aqmax, opts.ActivationSymmetric, 0)
				if err != nil {
					return fmt.Errorf("tensor %q: %w", name, err)
				}
				base := nm.group(name, "q")
				qp = qparams{base: base, scale: nm.value(base, "_scale", "_s"), zp: nm.value(base, "_zero_point", "_z"), scaleVal: scale}
				g.Initializer = append(g.Initializer,
					graph.FloatTensor(qp.scale, nil, []float32{scale}),
					graph.IntTensor(qp.zp, graph.Elem(actType), nil, []int32{zp}))
			}
			params[name] = qp
			base := name
			if !opts.ORTNames {
				base = qp.base
				if tp.share != "" {
					base = nm.group(name, "q")
				}
			}
			qIn, dqOut := name, nm.value(base, "_DequantizeLinear_Output", "_dq")
			if graphOutputs[name] {
				// The graph output keeps its name: the producer writes
				// name_QuantizeLinear_Input and the DequantizeLinear the output.
				qIn = nm.value(base, "_QuantizeLinear_Input", "_in")
				if prod := producerOf[name]; prod != nil {
					for k, o := range prod.Output {
						if o == name {
							prod.Output[k] = qIn
						}
					}
					producerOf[qIn] = prod
				}
				dqOut = name
			} else {
				rename[name] = dqOut
			}
			qOut := nm.value(base, "_QuantizeLinear_Output", "_q")
			nodes := []*onnxpb.NodeProto{
				graph.Node("QuantizeLinear", nm.node(base, "_QuantizeLinear"), []string{qIn, qp.scale, qp.zp}, []string{qOut}),
				graph.Node("DequantizeLinear", nm.node(base, "_DequantizeLinear"), []string{qOut, qp.scale, qp.zp}, []string{dqOut}),
			}
			if producerOf[qIn] != nil {
				after[qIn] = append(after[qIn], nodes...)
			} else {
				head = append(head, nodes...)
			}
		}
	}

	// Biases: int32 with scale = input scale × weight scale × beta.
	biasOut := map[int]string{}
	for _, b := range p.biases {
		ip, ok := params[b.input]
		ws, wok := weightScales[b.weight]
		if !ok || !wok {
			continue
		}
		t, ok := scope.Const(b.bias)
		if !ok {
			continue
		}
		data, err := graph.Floats(t)
		if err != nil {
			return err
		}
		if len(ws) > 1 && len(ws) != len(data) || len(t.GetDims()) > 1 {
			continue // a bias that does not line up with the channels stays float
		}
		q, scales, err := quantmath.QuantizeBias(data, ip.scaleVal, ws, b.beta)
		if err != nil {
			return err
		}
		base := nm.group(b.bias, "b")
		qn := nm.value(base, "_quantized", "_q")
		sn := nm.value(base, "_quantized_scale", "_s")
		zn := nm.value(base, "_quantized_zero_point", "_z")
		var sdims []int64
		zp := []int32{0}
		if len(scales) > 1 {
			sdims = []int64{int64(len(scales))}
			zp = make([]int32, len(scales))
		}
		g.Initializer = append(g.Initializer,
			graph.IntTensor(qn, graph.Int32, t.GetDims(), q),
			graph.FloatTensor(sn, sdims, scales),
			graph.IntTensor(zn, graph.Int32, sdims, zp))
		out := nm.value(base, "_DequantizeLinear_Output", "_dq")
		dq := graph.Node("DequantizeLinear", nm.node(base, "_DequantizeLinear"), []string{qn, sn, zn}, []string{out})
		if len(scales) > 1 {
			dq.Attribute = append(dq.Attribute, graph.IntAttr("axis", 0))
		}
		head = append(head, dq)
		biasOut[b.node] = out
	}

	// Rewire and order: QDQ of inputs and weights first, then each node
	// followed by the QDQ of its outputs.
	nodes := append([]*onnxpb.NodeProto(nil), head...)
	for i, n := range g.Node {
		if removedNodes[n] {
			continue
		}
		for k, in := range n.Input {
			if r, ok := rename[in]; ok {
				n.Input[k] = r
			}
		}
		if out, ok := biasOut[i]; ok {
			n.Input[2] = out
			if n.GetOpType() == "Gemm" {
				setFloatAttr(n, "beta", 1)
			}
		}
		nodes = append(nodes, n)
		for _, o := range n.Output {
			nodes = append(nodes, after[o]...)
		}
	}
	g.Node = nodes
	graph.RemoveUnused(g)
	return graph.TopoSort(g)
}

// setFloatAttr sets (or adds) the float attribute name of n.
func setFloatAttr(n *onnxpb.NodeProto, name string, v float32) {
	if a := graph.Attr(n, name); a != nil {
		a.F = v
		return
	}
	n.Attribute = append(n.Attribute, &onnxpb.AttributeProto{Name: name, Type: onnxpb.AttributeProto_FLOAT, F: v})
}
