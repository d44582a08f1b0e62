package quantize

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"

	"github.com/edgefleet/edgefleet/quantize/internal/graph"
	"github.com/edgefleet/edgefleet/quantize/onnxpb"
)

// NodeSensitivity measures how far one quantized node's output drifts from
// the FP32 model's.
type NodeSensitivity struct {
	Node   string `json:"node"`
	OpType string `json:"op_type"`
	// Output is the compared tensor (the node's output, or the output of
	// the Relu folded into it).
	Output string `json:"output"`
	// SQNR is the signal-to-quantization-noise ratio in dB over all data
	// (+Inf when identical); lower is more sensitive.
	SQNR float64 `json:"sqnr_db"`
	// Cosine is the cosine similarity of the outputs over all data.
	Cosine float64 `json:"cosine"`
}

// MarshalJSON encodes an infinite SQNR (identical outputs) as null, which
// encoding/json cannot represent otherwise.
func (s NodeSensitivity) MarshalJSON() ([]byte, error) {
	type plain NodeSensitivity
	out := struct {
		plain
		SQNR *float64 `json:"sqnr_db"`
	}{plain: plain(s)}
	if !math.IsInf(s.SQNR, 0) && !math.IsNaN(s.SQNR) {
		out.SQNR = &s.SQNR
	}
	return json.Marshal(out)
}

// Sensitivity runs the FP32 model and its quantized version (made by
// Dynamic or Static, whose report is rep) on data in onnxruntime and
// compares, for every quantized node, its output in both. The result is
// sorted from the most sensitive node (lowest SQNR) to the least.
func Sensitivity(ctx context.Context, fp32, quantized []byte, data []Batch, rep *Report) ([]NodeSensitivity, error) {
	fm, err := graph.Decode(fp32, "")
	if err != nil {
		return nil, fmt.Errorf("fp32 model: %w", err)
	}
	qm, err := graph.Decode(quantized, "")
	if err != nil {
		return nil, fmt.Errorf("quantized model: %w", err)
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: sensitivity needs data", ErrEmptyCalibration)
	}
	if err := checkBatches(fm, data); err != nil {
		return nil, err
	}
	fix := graph.NewIndex(fm.Graph)
	qix := graph.NewIndex(qm.Graph)
	byName := map[string]*onnxpb.NodeProto{}
	for i, n := range fm.Graph.Node {
		byName[nodeName(n, i)] = n
	}
	type pair struct {
		res          NodeSensitivity
		fname, qname string
	}
	var pairs []*pair
	for _, ni := range rep.Quantized {
		n := byName[ni.Name]
		if n == nil || len(n.Output) == 0 {
			continue
		}
		out := n.Output[0]
		qname, ok := observed(qix, out)
		if !ok {
			// The output may have been folded into a following Relu/Clip.
			if cs := fix.Consumers[out]; len(cs) == 1 {
				next := fm.Graph.Node[cs[0]]
				if slices.Contains(qdqRemovable, next.GetOpType()) {
					out = next.Output[0]
					qname, ok = observed(qix, out)
				}
			}
		}
		if !ok {
			continue
		}
		pairs = append(pairs, &pair{res: NodeSensitivity{Node: ni.Name, OpType: ni.OpType, Output: out}, fname: out, qname: qname})
	}
	if len(pairs) == 0 {
		return nil, fmt.Errorf("%w: no quantized node output found in both models", ErrNothingToQuantize)
	}
	fnames := make([]string, len(pairs))
	qnames := make([]string, len(pairs))
	for i, p := range pairs {
		fnames[i], qnames[i] = p.fname, p.qname
	}
	fs, err := outputSession(fm, fnames)
	if err != nil {
		return nil, fmt.Errorf("fp32 model: %w", err)
	}
	defer fs.Close()
	qs, err := outputSession(qm, qnames)
	if err != nil {
		return nil, fmt.Errorf("quantized model: %w", err)
	}
	defer qs.Close()
	type acc struct{ sig, noise, dot, nf, nq float64 }
	accs := make([]acc, len(pairs))
	for bi, b := range data {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		fo, err := fs.Run(b)
		if err != nil {
			return nil, fmt.Errorf("batch %d: %w", bi, err)
		}
		qo, err := qs.Run(b)
		if err != nil {
			return nil, fmt.Errorf("batch %d: %w", bi, err)
		}
		for i := range pairs {
			f, q := fo[i].F32, qo[i].F32
			if len(f) != len(q) {
				return nil, fmt.Errorf("tensor %q: %d fp32 values, %d quantized", pairs[i].fname, len(f), len(q))
			}
			a := &accs[i]
			for k := range f {
				x, y := float64(f[k]), float64(q[k])
				a.sig += x * x
				a.noise += (x - y) * (x - y)
				a.dot += x * y
				a.nf += x * x
				a.nq += y * y
			}
		}
	}
	out := make([]NodeSensitivity, len(pairs))
	for i, p := range pairs {
		a := accs[i]
		r := p.res
		switch {
		case a.noise == 0:
			r.SQNR = math.Inf(1)
		case a.sig == 0:
			r.SQNR = math.Inf(-1)
		default:
			r.SQNR = 10 * math.Log10(a.sig/a.noise)
		}
		switch {
		case a.nf == 0 && a.nq == 0:
			r.Cosine = 1
		case a.nf == 0 || a.nq == 0:
			r.Cosine = 0
		default:
			r.Cosine = a.dot / math.Sqrt(a.nf*a.nq)
		}
		out[i] = r
	}
	slices.SortStableFunc(out, func(a, b NodeSensitivity) int { return cmp.Compare(a.SQNR, b.SQNR) })
	return out, nil
}

// sensitivityGroups orders the quantized nodes of rep for moving back to
// float, most sensitive first. Nodes Sensitivity observed through the same
// tensor (a Conv and the Relu folded into it) form one group, ranked by
// their output SQNR; nodes it cannot observe (inside If/Loop bodies) are
// groups of one ranked by the SQNR of their quantized weight (weightSQNR),
// merged into the same order by value, and nodes with neither measure come
// last in graph order.
func sensitivityGroups(model []byte, mode Mode, opts Options, rep *Report, sens []NodeSensitivity) ([][]string, error) {
	type group struct {
		nodes []string
		sqnr  float64
	}
	var groups []*group
	at := map[string]*group{}
	seen := map[string]bool{}
	for _, s := range sens {
		seen[s.Node] = true
		if g, ok := at[s.Output]; ok {
			g.nodes = append(g.nodes, s.Node)
			continue
		}
		g := &group{nodes: []string{s.Node}, sqnr: s.SQNR}
		at[s.Output] = g
		groups = append(groups, g)
	}
	var ws map[string]float64
	var rest []string
	for _, n := range rep.Quantized {
		if seen[n.Name] {
			continue
		}
		seen[n.Name] = true
		if ws == nil {
			m, err := graph.Decode(model, opts.ExternalDataDir)
			if err != nil {
				return nil, err
			}
			o, err := opts.withDefaults()
			if err != nil {
				return nil, err
			}
			ws = weightSQNR(m, mode, o)
		}
		if v, ok := ws[n.Name]; ok {
			groups = append(groups, &group{nodes: []string{n.Name}, sqnr: v})
		} else {
			rest = append(rest, n.Name)
		}
	}
	slices.SortStableFunc(groups, func(a, b *group) int { return cmp.Compare(a.sqnr, b.sqnr) })
	out := make([][]string, 0, len(groups)+len(rest))
	for _, g := range groups {
		out = append(out, g.nodes)
	}
	for _, n := range rest {
		out = append(out, []string{n})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no quantized node to move back to float", ErrNothingToQuantize)
	}
	return out, nil
}

// observed returns the name under which a quantized model exposes the
// value of name as its consumers see it: the DequantizeLinear output after
// a QuantizeLinear of it, else name itself if the model has it.
func observed(ix *graph.Index, name string) (string, bool) {
	for _, src := range []string{name, name + "_QuantizeLinear_Input"} {
		for _, ci := range ix.Consumers[src] {
			q := ix.G.Node[ci]
			if q.GetOpType() != "QuantizeLinear" {
				continue
			}
			for _, di := range ix.Consumers[q.Output[0]] {
				if dq := ix.G.Node[di]; dq.GetOpType() == "DequantizeLinear" {
					return dq.Output[0], true
				}
			}
		}
	}
	if _, ok := ix.Producer[name]; ok || ix.Inputs[name] {
		return name, true
	}
	return "", false
}

// outputSession opens m with the named values as its outputs.
func outputSession(m *onnxpb.ModelProto, names []string) (*session, error) {
	c := graph.Clone(m)
	have := map[string]bool{}
	for _, vi := range c.Graph.Output {
		have[vi.GetName()] = true
	}
	for _, n := range names {
		if !have[n] {
			have[n] = true
			c.Graph.Output = append(c.Graph.Output, graph.ValueInfo(n, graph.Float))
		}
	}
	data, err := graph.Encode(c)
	if err != nil {
		return nil, err
	}
	return newSession(data, modelInputs(m), names)
}

// Evaluator scores a model on a dataset with a metric (accuracy, CER, F1,
// ...). It must be deterministic for the same model.
type Evaluator func(ctx context.Context, model []byte) (float64, error)

// AccuracyOptions configure AccuracyControl.
type AccuracyOptions struct {
	// Mode is ModeDynamic or ModeStatic (the default).
	Mode Mode
	// Evaluate scores a model; required.
	Evaluate Evaluator
	// LowerIsBetter marks error metrics (CER): a drop is then an increase.
	LowerIsBetter bool
	// MaxDrop is the largest acceptable metric loss against FP32, in the
	// metric's units (0.01 for one point of an accuracy in [0, 1]).
	MaxDrop float64
	// Calibration is the calibration set (static) and the data sensitivity
	// is measured on (both modes); required.
	Calibration []Batch
	// MaxTrials bounds the quantize-and-evaluate rounds after the first
	// (0 means 16).
	MaxTrials int
}

// Trial is one quantization plan tried by AccuracyControl.
type Trial struct {
	// Float lists the nodes kept in float beyond Options.ExcludeNodes.
	Float  []string `json:"float"`
	Metric float64  `json:"metric"`
	Drop   float64  `json:"drop"`
}

// AccuracyResult is the outcome of AccuracyControl.
type AccuracyResult struct {
	// Model is the best quantized model found (the first within budget, or
	// the one losing least).
	Model  []byte  `json:"-"`
	Report *Report `json:"report"`
	// Baseline is the FP32 model's metric.
	Baseline float64 `json:"baseline"`
	// Metric and Drop are the chosen model's metric and loss.
	Metric float64 `json:"metric"`
	Drop   float64 `json:"drop"`
	// Met reports whether Drop <= MaxDrop.
	Met bool `json:"met"`
	// Float lists the nodes moved back to float in the chosen plan.
	Float []string `json:"float"`
	// Trials lists every plan evaluated, the full quantization first.
	Trials []Trial `json:"trials"`
	// Sensitivity ranks the nodes of the full quantization.
	Sensitivity []NodeSensitivity `json:"sensitivity,omitempty"`
}

// ErrNoEvaluator is returned when AccuracyOptions.Evaluate is nil.
var ErrNoEvaluator = errors.New("no evaluator")

// AccuracyControl quantizes model (statically or dynamically), evaluates
// it against the FP32 model and, while the metric drops by more than
// MaxDrop, moves quantized nodes back to float and re-evaluates:
//
//  1. the quantized nodes are ranked by SQNR on the calibration data
//     (Sensitivity), nodes observed through one tensor forming a group;
//     nodes inside If/Loop bodies, which Sensitivity cannot observe, by
//     the SQNR of their quantized weights;
//  2. when there are at most MaxTrials/2 groups, each group is moved back
//     alone and the groups are re-ranked by the metric that bought;
//  3. groups are moved back cumulatively in rank order.
//
// It returns the first plan within budget, or the plan losing least with
// Met false when the budget cannot be met within MaxTrials rounds.
func AccuracyControl(ctx context.Context, model []byte, opts Options, ac AccuracyOptions) (*AccuracyResult, error) {
	if ac.Evaluate == nil {
		return nil, ErrNoEvaluator
	}
	if ac.MaxDrop < 0 || math.IsNaN(ac.MaxDrop) {
		return nil, fmt.Errorf("%w: max drop %v", ErrInvalidOptions, ac.MaxDrop)
	}
	if len(ac.Calibration) == 0 {
		return nil, fmt.Errorf("%w: accuracy control needs calibration data", ErrEmptyCalibration)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if ac.MaxTrials == 0 {
		ac.MaxTrials = 16
	}
	if ac.Mode == "" {
		ac.Mode = ModeStatic
	}
	var quant func(ctx context.Context, o Options) ([]byte, *Report, error)
	switch ac.Mode {
	case ModeStatic:
		j, err := newStaticJob(model, ac.Calibration, opts)
		if err != nil {
			return nil, err
		}
		quant = func(ctx context.Context, o Options) ([]byte, *Report, error) {
			o, err := o.withDefaults()
			if err != nil {
				return nil, nil, err
			}
			return j.quantize(ctx, o)
		}
	case ModeDynamic:
		quant = func(ctx context.Context, o Options) ([]byte, *Report, error) { return Dynamic(ctx, model, o) }
	default:
		return nil, fmt.Errorf("%w: accuracy control mode %q", ErrInvalidOptions, ac.Mode)
	}
	baseline, err := ac.Evaluate(ctx, model)
	if err != nil {
		return nil, fmt.Errorf("evaluating the fp32 model: %w", err)
	}
	drop := func(metric float64) float64 {
		if ac.LowerIsBetter {
			return metric - baseline
		}
		return baseline - metric
	}
	res := &AccuracyResult{Baseline: baseline, Drop: math.Inf(1)}
	// try quantizes with float kept in float and evaluates; the first plan
	// within budget wins (it keeps the most of the model quantized),
	// otherwise the least lossy one.
	try := func(float []string) (bool, error) {
		o := opts
		o.ExcludeNodes = slices.Concat(opts.ExcludeNodes, float)
		q, rep, err := quant(ctx, o)
		if err != nil {
			return false, err
		}
		metric, err := ac.Evaluate(ctx, q)
		if err != nil {
			return false, fmt.Errorf("evaluating a quantized model: %w", err)
		}
		d := drop(metric)
		ok := d <= ac.MaxDrop
		res.Trials = append(res.Trials, Trial{Float: float, Metric: metric, Drop: d})
		logger.Info("accuracy trial", "float_nodes", len(float), "metric", metric, "drop", d)
		if ok || d < res.Drop {
			res.Model, res.Report, res.Metric, res.Drop, res.Float = q, rep, metric, d, float
		}
		return ok, nil
	}
	if ok, err := try(nil); err != nil || ok {
		res.Met = ok
		return res, err
	}
	sens, err := Sensitivity(ctx, model, res.Model, ac.Calibration, res.Report)
	if err != nil && !errors.Is(err, ErrNothingToQuantize) {
		return nil, fmt.Errorf("sensitivity: %w", err)
	}
	res.Sensitivity = sens
	groups, err := sensitivityGroups(model, ac.Mode, opts, res.Report, sens)
	if err != nil {
		return nil, err
	}
	budget := func() bool { return len(res.Trials) <= ac.MaxTrials }
	// With few groups, measure what moving each one alone buys and rank by
	// that; otherwise keep the SQNR order.
	if len(groups) <= ac.MaxTrials/2 {
		gain := make([]float64, len(groups))
		for i, grp := range groups {
			ok, err := try(grp)
			if errors.Is(err, ErrNothingToQuantize) {
				gain[i] = math.Inf(1)
				continue
			}
			if err != nil {
				return nil, err
			}
			if ok {
				res.Met = true
				return res, nil
			}
			gain[i] = res.Trials[len(res.Trials)-1].Drop
		}
		idx := make([]int, len(groups))
		for i := range idx {
			idx[i] = i
		}
		slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(gain[a], gain[b]) })
		ranked := make([][]string, len(groups))
		for i, j := range idx {
			ranked[i] = groups[j]
		}
		groups = ranked
	}
	var float []string
	for k, grp := range groups {
		float = append(slices.Clone(float), grp...)
		if k == 0 && len(res.Trials) > 1 {
			continue // already tried alone
		}
		if !budget() {
			break
		}
		ok, err := try(float)
		if errors.Is(err, ErrNothingToQuantize) {
			break // everything is back in float
		}
		if err != nil {
			return nil, err
		}
		if ok {
			res.Met = true
			return res, nil
		}
	}
	return res, nil
}
