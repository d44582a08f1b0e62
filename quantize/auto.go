package quantize

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/edgefleet/edgefleet/ota/artifact"
)

// Recipe is one way Auto tries to convert a model.
type Recipe struct {
	// Name identifies the recipe in reports ("static-minmax", ...).
	Name string `json:"name"`
	// Mode is the conversion.
	Mode Mode `json:"mode"`
	// Options overlay the caller's options: Calibration, Fold, ConvOnly,
	// PerTensor and (when set) ActivationType are taken from here.
	Options Options `json:"-"`
	// Mixed runs AccuracyControl: the most sensitive nodes move back to
	// float until the metric is within budget.
	Mixed bool `json:"mixed,omitempty"`
}

// DefaultRecipes are the recipes Auto tries, in order: static QDQ with
// per-channel int8 weights and uint8 activations for each calibration
// method (Fold, ConvOnly: the form onnxruntime's CPU provider runs
// fastest), the same with every supported operator quantized, dynamic
// INT8, FP16, and static with the sensitive nodes in float.
func DefaultRecipes() []Recipe {
	var out []Recipe
	fast := func(c CalibrationMethod) Options {
		return Options{Calibration: c, Fold: true, ConvOnly: true, ActivationType: Uint8}
	}
	for _, c := range []CalibrationMethod{MinMax, Percentile, Entropy} {
		out = append(out, Recipe{Name: "static-" + c.String(), Mode: ModeStatic, Options: fast(c)})
	}
	all := fast(MinMax)
	all.ConvOnly = false
	return append(out,
		Recipe{Name: "static-minmax-all-ops", Mode: ModeStatic, Options: all},
		Recipe{Name: "dynamic", Mode: ModeDynamic},
		Recipe{Name: "fp16", Mode: ModeFP16},
		Recipe{Name: "static-mixed", Mode: ModeStatic, Options: fast(MinMax), Mixed: true},
	)
}

// AutoOptions configure Auto.
type AutoOptions struct {
	// Evaluate scores a model; required.
	Evaluate Evaluator
	// LowerIsBetter marks error metrics (CER).
	LowerIsBetter bool
	// MaxDrop is the largest acceptable metric loss against FP32.
	MaxDrop float64
	// Calibration is the static calibration set; recipes needing it are
	// skipped when it is empty.
	Calibration []Batch
	// Request is one inference request the latency is measured on; required.
	Request Batch
	// MaxLatency is the largest acceptable latency as a fraction of FP32's;
	// 0 means 1 (at least as fast as FP32).
	MaxLatency float64
	// Rounds is the number of interleaved timing rounds (0 means 20); each
	// times every model for about Round (0 means 30 ms) on one onnxruntime
	// intra-op thread, and a model's latency is its fastest round.
	Rounds int
	Round  time.Duration
	// Recipes replaces DefaultRecipes.
	Recipes []Recipe
}

// AutoTrial is the outcome of one recipe.
type AutoTrial struct {
	Recipe string `json:"recipe"`
	Mode   Mode   `json:"mode"`
	// Size is the model's size in bytes, SizeRatio against FP32.
	Size      int     `json:"size"`
	SizeRatio float64 `json:"size_ratio"`
	// Metric and Drop (loss against FP32, in the metric's units).
	Metric float64 `json:"metric"`
	Drop   float64 `json:"drop"`
	// LatencyNS is one request's latency; LatencyRatio against FP32 in the
	// same interleaved run.
	LatencyNS    int64   `json:"latency_ns"`
	LatencyRatio float64 `json:"latency_ratio"`
	// Fits reports whether the trial meets both budgets; Failed names the
	// constraints it misses and by how much.
	Fits   bool     `json:"fits"`
	Failed []string `json:"failed,omitempty"`
	// Error is why the recipe produced no model.
	Error  string  `json:"error,omitempty"`
	Report *Report `json:"-"`
	model  []byte
}

// AutoResult is Auto's outcome.
type AutoResult struct {
	// Baseline is FP32's metric, BaselineLatencyNS its latency, Size its
	// size.
	Baseline          float64     `json:"baseline"`
	BaselineLatencyNS int64       `json:"baseline_latency_ns"`
	Size              int         `json:"size"`
	MaxDrop           float64     `json:"max_drop"`
	MaxLatency        float64     `json:"max_latency"`
	Trials            []AutoTrial `json:"trials"`
	// Chosen is the recipe whose model was picked ("" when none fits).
	Chosen string `json:"chosen,omitempty"`
	// Model and Report are the chosen model and its conversion report.
	Model  []byte  `json:"-"`
	Report *Report `json:"report,omitempty"`
	// Failure says, when no recipe fits, which constraint each closest
	// candidate misses and by how much.
	Failure string `json:"failure,omitempty"`
}

// ErrNoRecipeFits is returned (with the AutoResult) when no recipe meets
// both the accuracy and the latency budget.
var ErrNoRecipeFits = errors.New("no recipe meets the budgets")

// Auto tries each recipe on model, evaluates every result, measures the
// latency of all of them and FP32 interleaved on this machine (one
// onnxruntime intra-op thread, one request), and picks the smallest model
// whose metric is within MaxDrop of FP32 and whose latency is at most
// MaxLatency × FP32's. When none fits it returns the result, with Failure
// naming the missed constraints and their margins, and an error wrapping
// ErrNoRecipeFits.
func Auto(ctx context.Context, model []byte, opts Options, ao AutoOptions) (*AutoResult, error) {
	if ao.Evaluate == nil || len(ao.Request) == 0 {
		return nil, fmt.Errorf("%w: Auto needs an evaluator and a request to time", ErrInvalidOptions)
	}
	if ao.MaxDrop < 0 {
		return nil, fmt.Errorf("%w: negative MaxDrop", ErrInvalidOptions)
	}
	if ao.MaxLatency == 0 {
		ao.MaxLatency = 1
	}
	if ao.Rounds == 0 {
		ao.Rounds = 20
	}
	if ao.Round == 0 {
		ao.Round = 30 * time.Millisecond
	}
	recipes := ao.Recipes
	if recipes == nil {
		recipes = DefaultRecipes()
	}
	log := opts.Logger
	if log == nil {
		o, _ := opts.withDefaults()
		log = o.Logger
	}
	res := &AutoResult{Size: len(model), MaxDrop: ao.MaxDrop, MaxLatency: ao.MaxLatency}
	var err error
	if res.Baseline, err = ao.Evaluate(ctx, model); err != nil {
		return nil, fmt.Errorf("evaluating FP32: %w", err)
	}
	loss := func(m float64) float64 {
		if ao.LowerIsBetter {
			return m - res.Baseline
		}
		return res.Baseline - m
	}
	for _, r := range recipes {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		tr := AutoTrial{Recipe: r.Name, Mode: r.Mode}
		o := opts
		o.Calibration, o.Fold, o.ConvOnly, o.PerTensor = r.Options.Calibration, r.Options.Fold, r.Options.ConvOnly, r.Options.PerTensor
		if r.Options.ActivationType != 0 {
			o.ActivationType = r.Options.ActivationType
		}
		var q []byte
		switch {
		case r.Mode == ModeStatic && len(ao.Calibration) == 0:
			err = fmt.Errorf("%w: static recipes need calibration data", ErrEmptyCalibration)
		case r.Mixed:
			if slices.ContainsFunc(res.Trials, func(t AutoTrial) bool { return t.Mode == r.Mode && t.Error == "" && t.Drop <= ao.MaxDrop }) {
				log.Info("auto: skipping", "recipe", r.Name, "why", "a full recipe of the mode is already within the accuracy budget")
				continue
			}
			var ac *AccuracyResult
			ac, err = AccuracyControl(ctx, model, o, AccuracyOptions{Mode: r.Mode, Evaluate: ao.Evaluate, LowerIsBetter: ao.LowerIsBetter,
				MaxDrop: ao.MaxDrop, Calibration: ao.Calibration})
			if err == nil {
				q, tr.Report = ac.Model, ac.Report
			}
		case r.Mode == ModeStatic:
			q, tr.Report, err = Static(ctx, model, ao.Calibration, o)
		case r.Mode == ModeDynamic:
			q, tr.Report, err = Dynamic(ctx, model, o)
		case r.Mode == ModeFP16:
			q, tr.Report, err = FP16(ctx, model, o)
		default:
			err = fmt.Errorf("%w: recipe %q: mode %q", ErrInvalidOptions, r.Name, r.Mode)
		}
		if err == nil {
			tr.Metric, err = ao.Evaluate(ctx, q)
		}
		if err != nil {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return nil, err
			}
			tr.Error = err.Error()
			log.Warn("auto: recipe failed", "recipe", r.Name, "err", err)
			res.Trials = append(res.Trials, tr)
			continue
		}
		tr.model, tr.Size = q, len(q)
		tr.SizeRatio = float64(len(q)) / float64(len(model))
		tr.Drop = loss(tr.Metric)
		log.Info("auto: recipe", "recipe", r.Name, "size", tr.Size, "metric", tr.Metric, "drop", tr.Drop)
		res.Trials = append(res.Trials, tr)
	}
	// Time FP32 and every candidate together.
	models := [][]byte{model}
	var idx []int
	for i, t := range res.Trials {
		if t.Error == "" {
			models = append(models, t.model)
			idx = append(idx, i)
		}
	}
	lat, err := Latencies(ctx, models, ao.Request, ao.Rounds, ao.Round)
	if err != nil {
		return nil, err
	}
	res.BaselineLatencyNS = lat[0].Nanoseconds()
	best := -1
	for k, i := range idx {
		t := &res.Trials[i]
		t.LatencyNS = lat[k+1].Nanoseconds()
		t.LatencyRatio = float64(lat[k+1]) / float64(lat[0])
		if t.Drop > ao.MaxDrop+1e-12 {
			t.Failed = append(t.Failed, fmt.Sprintf("metric loss %.4f > budget %.4f (by %.4f)", t.Drop, ao.MaxDrop, t.Drop-ao.MaxDrop))
		}
		if t.LatencyRatio > ao.MaxLatency {
			t.Failed = append(t.Failed, fmt.Sprintf("latency %.2f× FP32 > %.2f× (by %.2f)", t.LatencyRatio, ao.MaxLatency, t.LatencyRatio-ao.MaxLatency))
		}
		t.Fits = len(t.Failed) == 0
		if t.Fits && (best < 0 || t.Size < res.Trials[best].Size) {
			best = i
		}
	}
	if best >= 0 {
		t := res.Trials[best]
		res.Chosen, res.Model, res.Report = t.Recipe, t.model, t.Report
		return res, nil
	}
	var why []string
	for _, t := range res.Trials {
		switch {
		case t.Error != "":
			why = append(why, fmt.Sprintf("%s: %s", t.Recipe, t.Error))
		default:
			why = append(why, fmt.Sprintf("%s: %s", t.Recipe, strings.Join(t.Failed, "; ")))
		}
	}
	res.Failure = strings.Join(why, " | ")
	return res, fmt.Errorf("%w: %s", ErrNoRecipeFits, res.Failure)
}

// WriteTable writes the trials as an aligned table.
func (r *AutoResult) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	io.WriteString(tw, "RECIPE\tSIZE\t%FP32\tMETRIC\tDROP\tLATENCY\t×FP32\tFITS\n")
	fmt.Fprintf(tw, "fp32\t%d\t100.0\t%.4f\t-\t%v\t1.00\t-\n", r.Size, r.Baseline, time.Duration(r.BaselineLatencyNS))
	for _, t := range r.Trials {
		if t.Error != "" {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\terror: %s\n", t.Recipe, t.Error)
			continue
		}
		fits := "yes"
		if !t.Fits {
			fits = "no: " + strings.Join(t.Failed, "; ")
		}
		if t.Recipe == r.Chosen {
			fits += " (chosen)"
		}
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.4f\t%+.4f\t%v\t%.2f\t%s\n", t.Recipe, t.Size, 100*t.SizeRatio, t.Metric, t.Drop,
			time.Duration(t.LatencyNS).Round(time.Microsecond), t.LatencyRatio, fits)
	}
	return tw.Flush()
}

// ArtifactQuantization is the chosen model's quantization record for an
// OCI artifact config, with the metric (under its name), its FP32 value and
// loss, the size ratio and the latency ratio measured by Auto; nil when
// nothing was chosen.
func (r *AutoResult) ArtifactQuantization(metric string) *artifact.Quantization {
	if r.Report == nil {
		return nil
	}
	q := r.Report.ArtifactQuantization()
	if metric == "" {
		metric = "metric"
	}
	for _, t := range r.Trials {
		if t.Recipe == r.Chosen {
			q.Metrics = map[string]float64{
				metric: t.Metric, metric + "FP32": r.Baseline, metric + "Drop": t.Drop,
				"sizeRatio": t.SizeRatio, "latencyRatio": t.LatencyRatio,
			}
		}
	}
	return q
}

// Latencies times one run of each model on in, interleaved: rounds
// rounds, each running every model (in rotating order) for about round on
// one onnxruntime intra-op thread; a model's latency is its fastest
// round's mean. The models must have the same inputs; their outputs are
// all fetched.
//
// On Linux a round is timed by the CPU time of the calling thread (which
// runs the single-threaded kernels), not the wall clock: on a machine
// shared with other work the wall clock counts the time the thread waited
// for a core, which does not fall on every model alike. On an idle machine
// the two agree; caches shared with other work still affect both.
func Latencies(ctx context.Context, models [][]byte, in Batch, rounds int, round time.Duration) ([]time.Duration, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if !ort.IsInitialized() {
		if err := InitRuntime(""); err != nil {
			return nil, err
		}
	}
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRuntime, err)
	}
	defer so.Destroy()
	if err := so.SetIntraOpNumThreads(1); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRuntime, err)
	}
	if err := so.SetInterOpNumThreads(1); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRuntime, err)
	}
	inputs := make([]string, len(in))
	vals := make([]ort.Value, len(in))
	for i, x := range in {
		inputs[i] = x.Name
		v, err := toValue(x)
		if err != nil {
			return nil, err
		}
		defer v.Destroy()
		vals[i] = v
	}
	sessions := make([]*ort.DynamicAdvancedSession, len(models))
	nouts := make([]int, len(models))
	for i, m := range models {
		_, outs, err := ort.GetInputOutputInfoWithONNXData(m)
		if err != nil {
			return nil, fmt.Errorf("%w: model %d: %w", ErrRuntime, i, err)
		}
		names := make([]string, len(outs))
		for k, o := range outs {
			names[k] = o.Name
		}
		s, err := ort.NewDynamicAdvancedSessionWithONNXData(m, inputs, names, so)
		if err != nil {
			return nil, fmt.Errorf("%w: model %d: %w", ErrRuntime, i, err)
		}
		defer s.Destroy()
		sessions[i], nouts[i] = s, len(names)
	}
	run := func(i int) error {
		outs := make([]ort.Value, nouts[i])
		if err := sessions[i].Run(vals, outs); err != nil {
			return fmt.Errorf("%w: %w", ErrRuntime, err)
		}
		for _, o := range outs {
			o.Destroy()
		}
		return nil
	}
	iters := make([]int, len(models))
	for i := range sessions { // warm up and size the rounds
		start := time.Now()
		n := 0
		for time.Since(start) < round/2 || n == 0 {
			if err := run(i); err != nil {
				return nil, err
			}
			n++
		}
		iters[i] = max(1, 2*n)
	}
	best := make([]time.Duration, len(models))
	for i := range best {
		best[i] = time.Duration(math.MaxInt64)
	}
	for r := range rounds {
		for k := range sessions {
			i := (k + r) % len(sessions) // rotate who goes first
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			start := time.Now()
			cpu0, cpuOK := threadCPU()
			for range iters[i] {
				if err := run(i); err != nil {
					return nil, err
				}
			}
			took := time.Since(start)
			if cpu1, ok := threadCPU(); ok && cpuOK {
				took = time.Duration(cpu1 - cpu0)
			}
			best[i] = min(best[i], took/time.Duration(iters[i]))
		}
	}
	return best, nil
}
