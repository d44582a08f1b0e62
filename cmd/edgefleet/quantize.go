//go:build !agentonly

package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/edgefleet/edgefleet/ota/artifact"
	"github.com/edgefleet/edgefleet/ota/durable"
	"github.com/edgefleet/edgefleet/quantize"
)

// newQuantizeCmd is `edgefleet quantize`: FP32 ONNX models to INT8
// (dynamic, static QDQ) or FP16, with optional accuracy control, and the
// per-node sensitivity of a quantized model.
func newQuantizeCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "quantize",
		Short: "Quantize ONNX models to INT8 or FP16, with accuracy control",
		Long: `Quantize FP32 ONNX models as onnxruntime's quantization tool does:
  dynamic      MatMul/Gemm/Conv weights to int8, activations quantized at run time (no data needed)
  static       QDQ format, activations calibrated on --calib (minmax, percentile or entropy)
  fp16         float16 weights and operators, a block list kept in float32
  sensitivity  SQNR and cosine similarity of each quantized node against FP32
  auto         try the recipes that fit, measure accuracy and latency here, keep the smallest within budget
  convert      upgrade the default-domain opset (e.g. 9 -> 13), rewriting the operators that changed

Datasets (--calib, --eval) are CSV files, one sample per row (a header row is
detected; --label-column names the label; --scale multiplies the features), or
folders of ONNX test-data sets (test_data_set_N/input_K.pb).

With --eval and --max-drop, the most sensitive nodes are moved back to float
until the metric is within budget; if it cannot be met the best plan found is
written and the command fails.`,
	}
	cmd.AddCommand(
		newQuantizeModeCmd(g, quantize.ModeDynamic),
		newQuantizeModeCmd(g, quantize.ModeStatic),
		newQuantizeModeCmd(g, quantize.ModeFP16),
		newQuantizeSensitivityCmd(g),
		newQuantizeConvertCmd(g),
		newQuantizeAutoCmd(g),
	)
	return cmd
}

// datasetFlags describe how a dataset file feeds the model.
type datasetFlags struct {
	format      string
	input       string
	shape       string
	scale       float32
	labelColumn int
	batchSize   int
}

func (d *datasetFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&d.format, "calib-format", "auto", "dataset format: csv, pb (folder of ONNX test-data sets) or auto (pb for a folder)")
	f.StringVar(&d.input, "input", "", "CSV: the model input the features feed (default: the model's only input)")
	f.StringVar(&d.shape, "shape", "", "CSV: one sample's shape without the batch dimension, e.g. 1x8x8 (default: from the model)")
	f.Float32Var(&d.scale, "scale", 1, "CSV: factor applied to every feature (e.g. 0.0625 for 0..16 pixels)")
	f.IntVar(&d.labelColumn, "label-column", -1, "CSV: index of the integer label column, -1 for none (--eval needs one)")
	f.IntVar(&d.batchSize, "batch-size", 32, "CSV: samples per batch")
}

// read loads path as batches for model (and labels, when the CSV has a
// label column); the flags only map to quantize.DatasetSpec.
func (d *datasetFlags) read(path string, model []byte, needLabels bool) ([]quantize.Batch, []int, error) {
	spec := quantize.DatasetSpec{Format: d.format, Input: d.input, Scale: d.scale, LabelColumn: d.labelColumn, BatchSize: d.batchSize}
	if d.shape != "" {
		var err error
		if spec.Shape, err = quantize.ParseShape(d.shape); err != nil {
			return nil, nil, fmt.Errorf("--shape: %w", err)
		}
	}
	if needLabels && d.labelColumn < 0 && d.format != "pb" {
		return nil, nil, fmt.Errorf("%w: --eval needs --label-column (the CSV column holding the class index)", quantize.ErrInvalidOptions)
	}
	return quantize.LoadDataset(path, model, spec, needLabels)
}

// quantizeFlags are the flags of `quantize dynamic|static|fp16`.
type quantizeFlags struct {
	out, calib, method, report, ortLib             string
	weightType, activationType                     string
	excludeNodes, excludeOps, includeOps, fp16Keep []string
	perTensor, perChannel, strip, fp16IO           bool
	fold, convOnly                                 bool
	percentile                                     float64
	data                                           datasetFlags
	eval, metric, evalOutput                       string
	maxDrop                                        float64
	maxTrials                                      int
}

// options maps the flags to quantize.Options.
func (f *quantizeFlags) options(g *globalFlags, in string) (quantize.Options, error) {
	o := quantize.Options{
		PerTensor:         f.perTensor,
		DynamicPerChannel: f.perChannel,
		Percentile:        f.percentile,
		ExcludeNodes:      f.excludeNodes,
		ExcludeOpTypes:    f.excludeOps,
		IncludeOpTypes:    f.includeOps,
		StripNodeMetadata: f.strip,
		ExternalDataDir:   filepath.Dir(in),
		FP16Block:         f.fp16Keep,
		FP16IO:            f.fp16IO,
		Fold:              f.fold,
		ConvOnly:          f.convOnly,
		Logger:            g.logger(),
	}
	var err error
	if o.Calibration, err = quantize.ParseCalibrationMethod(f.method); err != nil {
		return o, err
	}
	for _, t := range []struct {
		flag, v string
		dst     *quantize.Type
	}{{"--weight-type", f.weightType, &o.WeightType}, {"--activation-type", f.activationType, &o.ActivationType}} {
		switch strings.ToLower(t.v) {
		case "int8":
			*t.dst = quantize.Int8
		case "uint8":
			*t.dst = quantize.Uint8
		default:
			return o, fmt.Errorf("%w: %s %q (want int8 or uint8)", quantize.ErrInvalidOptions, t.flag, t.v)
		}
	}
	return o, nil
}

// quantizeResult is what --report writes: the conversion report, the
// accuracy control outcome, and the artifact config fields for the model.
type quantizeResult struct {
	Report       *quantize.Report           `json:"report"`
	Accuracy     *quantize.AccuracyResult   `json:"accuracy,omitempty"`
	Precision    artifact.Precision         `json:"precision"`
	Quantization *artifact.Quantization     `json:"quantization"`
	Sensitivity  []quantize.NodeSensitivity `json:"sensitivity,omitempty"`
}

func newQuantizeModeCmd(g *globalFlags, mode quantize.Mode) *cobra.Command {
	f := &quantizeFlags{}
	name := map[quantize.Mode]string{quantize.ModeDynamic: "dynamic", quantize.ModeStatic: "static", quantize.ModeFP16: "fp16"}[mode]
	short := map[quantize.Mode]string{
		quantize.ModeDynamic: "INT8 weights, activations quantized at run time (MatMul, Gemm, Conv)",
		quantize.ModeStatic:  "INT8 QDQ model with activations calibrated on a dataset",
		quantize.ModeFP16:    "FP16 weights and operators, a block list kept in FP32",
	}[mode]
	examples := map[quantize.Mode]string{
		quantize.ModeDynamic: "  edgefleet quantize dynamic model.onnx -o model.int8.onnx --report report.json",
		quantize.ModeStatic: "  edgefleet quantize static agent/testdata/digits/cnn.onnx -o cnn.int8.onnx \\\n" +
			"    --calib agent/testdata/digits/calib.csv --label-column 0 --scale 0.0625 --method percentile \\\n" +
			"    --eval agent/testdata/digits/test.csv --metric accuracy --max-drop 0.01",
		quantize.ModeFP16: "  edgefleet quantize fp16 model.onnx -o model.fp16.onnx --fp16-block Resize",
	}[mode]
	cmd := &cobra.Command{
		Use:     name + " IN.onnx -o OUT.onnx",
		Short:   short,
		Example: examples,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runQuantize(cmd, g, mode, args[0], f)
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.out, "output", "o", "", "output model file (required)")
	fl.StringVar(&f.report, "report", "", "write a JSON report (conversion, accuracy, artifact precision/quantization) to this file")
	fl.StringSliceVar(&f.excludeNodes, "exclude-nodes", nil, "node names kept in float (comma-separated)")
	fl.StringSliceVar(&f.excludeOps, "exclude-op-types", nil, "operator types kept in float (comma-separated)")
	fl.BoolVar(&f.strip, "strip-node-metadata", false, "drop the nodes' metadata_props (exporter stack traces)")
	fl.StringVar(&f.ortLib, "ort-lib", "", "onnxruntime shared library (default $"+quantize.RuntimeLibraryEnv+" or .deps/)")
	if mode != quantize.ModeFP16 {
		fl.StringVar(&f.weightType, "weight-type", "int8", "weight type: int8 or uint8")
		fl.BoolVar(&f.perTensor, "per-tensor", false, "one weight scale per tensor instead of per output channel (static)")
		fl.StringVar(&f.eval, "eval", "", "evaluation dataset (CSV with labels) for accuracy control")
		fl.StringVar(&f.metric, "metric", "accuracy", "evaluation metric: accuracy (top-1 classification)")
		fl.StringVar(&f.evalOutput, "eval-output", "", "model output the metric reads (default: the first output)")
		fl.Float64Var(&f.maxDrop, "max-drop", 0.01, "largest acceptable metric loss (0.01 = one point of accuracy)")
		fl.IntVar(&f.maxTrials, "max-trials", 16, "quantize-and-evaluate rounds after the first")
		fl.StringVar(&f.calib, "calib", "", "calibration dataset (static: required; dynamic: data for --eval's sensitivity ranking)")
		f.data.register(cmd)
	} else {
		f.weightType, f.activationType = "int8", "int8"
		fl.StringSliceVar(&f.fp16Keep, "fp16-block", nil, "operator types kept in float32 besides the default block list")
		fl.BoolVar(&f.fp16IO, "fp16-io", false, "make the model's float inputs and outputs float16 too")
	}
	if mode == quantize.ModeDynamic {
		fl.BoolVar(&f.perChannel, "per-channel", false, "one weight scale per output channel (onnxruntime: per tensor; Conv per channel needs int8 weights)")
	}
	if mode == quantize.ModeStatic {
		fl.StringVar(&f.activationType, "activation-type", "int8", "activation type: int8 or uint8")
		fl.StringVar(&f.method, "method", "minmax", "calibration method: minmax, percentile or entropy")
		fl.Float64Var(&f.percentile, "percentile", 99.999, "percentile kept by --method percentile")
		fl.BoolVar(&f.fold, "fold", false, "rewrite hard-swish (x*Clip(x+3,0,6)/6) to x*HardSigmoid(x) before quantizing: fewer float ops between Convs")
		fl.BoolVar(&f.convOnly, "conv-only", false, "quantize only Conv/MatMul/Gemm and the 8-bit data movers; element-wise Add/Mul/Concat stay float (faster in onnxruntime)")
		fl.StringSliceVar(&f.includeOps, "include-op-types", nil, "operator types kept in float by default to quantize too (Softmax, LayerNormalization, ...)")
	} else {
		f.activationType, f.method = "int8", "minmax"
	}
	return cmd
}

func runQuantize(cmd *cobra.Command, g *globalFlags, mode quantize.Mode, in string, f *quantizeFlags) error {
	ctx := cmd.Context()
	if f.out == "" {
		return fmt.Errorf("-o OUT.onnx is required")
	}
	model, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	if _, err := quantize.Inputs(model); err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	opts, err := f.options(g, in)
	if err != nil {
		return err
	}
	if err := checkNodeNames(model, f.excludeNodes); err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	needORT := mode != quantize.ModeDynamic || f.eval != ""
	if needORT {
		if err := quantize.InitRuntime(f.ortLib); err != nil {
			return err
		}
	}
	var calib []quantize.Batch
	if f.calib != "" {
		if calib, _, err = f.data.read(f.calib, model, false); err != nil {
			return fmt.Errorf("--calib: %w", err)
		}
	} else if mode == quantize.ModeStatic {
		return fmt.Errorf("%w: static quantization needs --calib DATASET", quantize.ErrEmptyCalibration)
	}
	res := &quantizeResult{}
	var q []byte
	if f.eval != "" {
		q, err = f.accuracyControl(cmd, mode, model, calib, opts, res)
	} else {
		switch mode {
		case quantize.ModeDynamic:
			q, res.Report, err = quantize.Dynamic(ctx, model, opts)
		case quantize.ModeStatic:
			q, res.Report, err = quantize.Static(ctx, model, calib, opts)
		case quantize.ModeFP16:
			q, res.Report, err = quantize.FP16(ctx, model, opts)
		}
	}
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	res.Precision = res.Report.ArtifactPrecision()
	res.Quantization = res.Report.ArtifactQuantization()
	if res.Accuracy != nil {
		res.Quantization = res.Accuracy.ArtifactQuantization(f.metric)
	}
	if err := durable.WriteFile(f.out, q, 0o644); err != nil {
		return err
	}
	if f.report != "" {
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		if err := durable.WriteFile(f.report, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "%s -> %s\n%v\n", in, f.out, res.Report)
	for _, warn := range res.Report.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	if a := res.Accuracy; a != nil {
		fmt.Fprintf(w, "%s: fp32 %.4f, quantized %.4f (drop %.4f, budget %.4f), %d trials, %d nodes in float %v\n",
			f.metric, a.Baseline, a.Metric, a.Drop, f.maxDrop, len(a.Trials), len(a.Float), a.Float)
		if !a.Met {
			return fmt.Errorf("accuracy budget not met: the best plan found loses %.4f > %.4f (%d nodes in float); it was written to %s",
				a.Drop, f.maxDrop, len(a.Float), f.out)
		}
	}
	return nil
}

// accuracyControl quantizes under an accuracy budget (FP16: evaluates).
func (f *quantizeFlags) accuracyControl(cmd *cobra.Command, mode quantize.Mode, model []byte, calib []quantize.Batch, opts quantize.Options, res *quantizeResult) ([]byte, error) {
	ctx := cmd.Context()
	if f.metric != "accuracy" {
		return nil, fmt.Errorf("%w: --metric %q: the CLI has accuracy (top-1 classification); CER, F1 and others take an Evaluator in the Go API (quantize.AccuracyControl)",
			quantize.ErrInvalidOptions, f.metric)
	}
	evalSet, labels, err := f.data.read(f.eval, model, true)
	if err != nil {
		return nil, fmt.Errorf("--eval: %w", err)
	}
	output := f.evalOutput
	if output == "" {
		outs, err := quantize.Outputs(model)
		if err != nil {
			return nil, err
		}
		output = outs[0]
	}
	if len(calib) == 0 { // dynamic: rank the nodes' sensitivity on the evaluation inputs
		calib = evalSet
	}
	ac, err := quantize.AccuracyControl(ctx, model, opts, quantize.AccuracyOptions{
		Mode: mode, Evaluate: quantize.Classification(evalSet, labels, output),
		MaxDrop: f.maxDrop, Calibration: calib, MaxTrials: f.maxTrials,
	})
	if err != nil {
		return nil, err
	}
	res.Report, res.Accuracy, res.Sensitivity = ac.Report, ac, ac.Sensitivity
	return ac.Model, nil
}

// checkNodeNames rejects --exclude-nodes names the model has no
// quantizable node for (a typo would otherwise be ignored).
func checkNodeNames(model []byte, names []string) error {
	if len(names) == 0 {
		return nil
	}
	cands, err := quantize.Candidates(model)
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, c := range cands {
		have[c.Name] = true
	}
	for _, n := range names {
		if !have[n] {
			return fmt.Errorf("%w: --exclude-nodes: the model has no quantizable node %q (unnamed nodes are OpType_index, as in the report)", quantize.ErrInvalidOptions, n)
		}
	}
	return nil
}

func newQuantizeSensitivityCmd(g *globalFlags) *cobra.Command {
	var (
		calib, report, ortLib string
		asJSON                bool
		data                  datasetFlags
	)
	cmd := &cobra.Command{
		Use:   "sensitivity FP32.onnx QUANTIZED.onnx --calib DATASET",
		Short: "SQNR and cosine similarity of each quantized node's output against FP32",
		Long: `Run the FP32 model and its quantized version on the calibration data and
compare, for each quantized node, its output in both: SQNR in dB (lower is more
sensitive; "inf" when identical) and cosine similarity. Nodes are listed from the
most sensitive. Without --report (the JSON a quantize command wrote), every
node of a quantizable operator type is measured.`,
		Example: "  edgefleet quantize sensitivity agent/testdata/digits/cnn.onnx cnn.int8.onnx \\\n" +
			"    --calib agent/testdata/digits/calib.csv --label-column 0 --scale 0.0625",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if calib == "" {
				return fmt.Errorf("%w: --calib DATASET is required", quantize.ErrEmptyCalibration)
			}
			fp32, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			q, err := os.ReadFile(args[1])
			if err != nil {
				return err
			}
			for i, b := range [][]byte{fp32, q} {
				if _, err := quantize.Inputs(b); err != nil {
					return fmt.Errorf("%s: %w", args[i], err)
				}
			}
			if err := quantize.InitRuntime(ortLib); err != nil {
				return err
			}
			batches, _, err := data.read(calib, fp32, false)
			if err != nil {
				return fmt.Errorf("--calib: %w", err)
			}
			rep := &quantize.Report{}
			if report != "" {
				b, err := os.ReadFile(report)
				if err != nil {
					return err
				}
				var r quantizeResult
				if err := json.Unmarshal(b, &r); err != nil || r.Report == nil {
					return fmt.Errorf("--report %s: not a report written by edgefleet quantize (%v)", report, err)
				}
				rep = r.Report
			} else if rep.Quantized, err = quantize.Candidates(fp32); err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			sens, err := quantize.Sensitivity(cmd.Context(), fp32, q, batches, rep)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(sens)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NODE\tOP\tOUTPUT\tSQNR_DB\tCOSINE")
			for _, s := range sens {
				sqnr := "inf"
				if !math.IsInf(s.SQNR, 1) {
					sqnr = fmt.Sprintf("%.2f", s.SQNR)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.6f\n", s.Node, s.OpType, s.Output, sqnr, s.Cosine)
			}
			return tw.Flush()
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&calib, "calib", "", "dataset the models run on (required)")
	fl.StringVar(&report, "report", "", "JSON report of the quantization (--report of quantize dynamic|static): measure its quantized nodes only")
	fl.BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	fl.StringVar(&ortLib, "ort-lib", "", "onnxruntime shared library (default $"+quantize.RuntimeLibraryEnv+" or .deps/)")
	data.register(cmd)
	return cmd
}

func newQuantizeConvertCmd(g *globalFlags) *cobra.Command {
	var (
		out, ortLib string
		target      int64
	)
	cmd := &cobra.Command{
		Use:   "convert IN.onnx -o OUT.onnx --opset 13",
		Short: "Upgrade a model's default-domain opset, rewriting the operators that changed",
		Long: `Convert the model's default-domain operator set to --opset, as ONNX's version
converter does: Slice's attributes become inputs, Upsample becomes Resize with
opset 10's coordinates spelled out, Clip/Pad/Squeeze/Unsqueeze/Split/ReduceX
attributes become inputs, Softmax keeps its pre-13 meaning, ... An operator the
converter cannot rewrite is named in the error and nothing is written. Static
quantization does this itself when the model's opset is below 13.`,
		Example: "  edgefleet quantize convert .deps/models/ch_PP-OCRv4_rec_infer.onnx -o rec.op13.onnx --opset 13",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("-o OUT.onnx is required")
			}
			model, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			// onnxruntime, when present, types Clip/Pad bounds and ranks Softmax inputs.
			if err := quantize.InitRuntime(ortLib); err != nil {
				g.logger().Warn("onnxruntime unavailable: value types and ranks come from the model's value infos", "err", err)
			}
			conv, rep, err := quantize.Convert(cmd.Context(), model, target, quantize.Options{ExternalDataDir: filepath.Dir(args[0])})
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			if err := durable.WriteFile(out, conv, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s -> %s: %v\n", args[0], out, rep)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&out, "output", "o", "", "output model file (required)")
	fl.Int64Var(&target, "opset", quantize.StaticOpset, "target default-domain opset")
	fl.StringVar(&ortLib, "ort-lib", "", "onnxruntime shared library (default $"+quantize.RuntimeLibraryEnv+" or .deps/)")
	return cmd
}

// autoResult is what `quantize auto --report` writes: the recipe search and
// the artifact config fields of the chosen model, in the same shape as the
// other quantize reports (ota push --variant reads precision and
// quantization).
type autoResult struct {
	Report       *quantize.Report       `json:"report,omitempty"`
	Auto         *quantize.AutoResult   `json:"auto"`
	Precision    artifact.Precision     `json:"precision,omitempty"`
	Quantization *artifact.Quantization `json:"quantization,omitempty"`
}

func newQuantizeAutoCmd(g *globalFlags) *cobra.Command {
	var (
		out, calib, eval, report, ortLib, metric string
		maxDrop, maxLatency                      float64
		recipes                                  []string
		rounds                                   int
		data                                     datasetFlags
	)
	cmd := &cobra.Command{
		Use:   "auto IN.onnx -o OUT.onnx --calib DATASET --eval DATASET --max-drop 0.01",
		Short: "Try the quantization recipes that fit; keep the smallest model within the accuracy and latency budgets",
		Long: `Try static QDQ (per-channel, each calibration method, with and without the
element-wise operators quantized), dynamic INT8, FP16 and static with the most
sensitive nodes in float; evaluate each on --eval, time each against FP32 on
this machine (interleaved rounds, one request from --eval, one onnxruntime
thread), and write the smallest model whose metric loss is at most --max-drop
and whose latency is at most --max-latency × FP32. If none fits, nothing is
written and the error says which constraint each recipe missed and by how much.
The table (and --report JSON, whose quantization field goes into the artifact
config like the other quantize reports) lists every recipe.`,
		Example: "  edgefleet quantize auto agent/testdata/digits/cnn.onnx -o cnn.auto.onnx \\\n" +
			"    --calib agent/testdata/digits/calib.csv --eval agent/testdata/digits/test.csv \\\n" +
			"    --label-column 0 --scale 0.0625 --max-drop 0.01",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" || eval == "" {
				return fmt.Errorf("%w: -o OUT.onnx and --eval DATASET are required", quantize.ErrInvalidOptions)
			}
			if metric != "accuracy" {
				return fmt.Errorf("%w: --metric %q: the CLI has accuracy (top-1 classification); other metrics take an Evaluator in the Go API (quantize.Auto)", quantize.ErrInvalidOptions, metric)
			}
			model, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			if _, err := quantize.Inputs(model); err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			if err := quantize.InitRuntime(ortLib); err != nil {
				return err
			}
			var calibSet []quantize.Batch
			if calib != "" {
				if calibSet, _, err = data.read(calib, model, false); err != nil {
					return fmt.Errorf("--calib: %w", err)
				}
			}
			evalSet, labels, err := data.read(eval, model, true)
			if err != nil {
				return fmt.Errorf("--eval: %w", err)
			}
			one := data
			one.batchSize = 1
			reqs, _, err := one.read(eval, model, true)
			if err != nil {
				return fmt.Errorf("--eval: %w", err)
			}
			outs, err := quantize.Outputs(model)
			if err != nil {
				return err
			}
			ao := quantize.AutoOptions{
				Evaluate: quantize.Classification(evalSet, labels, outs[0]), MaxDrop: maxDrop, MaxLatency: maxLatency,
				Calibration: calibSet, Request: reqs[0], Rounds: rounds,
			}
			if len(recipes) > 0 {
				byName := map[string]quantize.Recipe{}
				var names []string
				for _, r := range quantize.DefaultRecipes() {
					byName[r.Name] = r
					names = append(names, r.Name)
				}
				for _, n := range recipes {
					r, ok := byName[n]
					if !ok {
						return fmt.Errorf("%w: --recipes: unknown recipe %q (have %s)", quantize.ErrInvalidOptions, n, strings.Join(names, ", "))
					}
					ao.Recipes = append(ao.Recipes, r)
				}
			}
			opts := quantize.Options{ExternalDataDir: filepath.Dir(args[0]), Logger: g.logger()}
			res, autoErr := quantize.Auto(cmd.Context(), model, opts, ao)
			if res == nil {
				return fmt.Errorf("%s: %w", args[0], autoErr)
			}
			if err := res.WriteTable(cmd.OutOrStdout()); err != nil {
				return err
			}
			r := autoResult{Report: res.Report, Auto: res, Quantization: res.ArtifactQuantization(metric)}
			if res.Report != nil {
				r.Precision = res.Report.ArtifactPrecision()
			}
			if report != "" {
				b, err := json.MarshalIndent(r, "", "  ")
				if err != nil {
					return err
				}
				if err := durable.WriteFile(report, append(b, '\n'), 0o644); err != nil {
					return err
				}
			}
			if autoErr != nil {
				return fmt.Errorf("%s: %w", args[0], autoErr)
			}
			if err := durable.WriteFile(out, res.Model, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "chose %s: %s -> %s\n", res.Chosen, args[0], out)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&out, "output", "o", "", "output model file (required)")
	fl.StringVar(&calib, "calib", "", "calibration dataset (static recipes are skipped without it)")
	fl.StringVar(&eval, "eval", "", "evaluation dataset, CSV with labels (required)")
	fl.StringVar(&metric, "metric", "accuracy", "evaluation metric: accuracy (top-1 classification)")
	fl.Float64Var(&maxDrop, "max-drop", 0.01, "largest acceptable metric loss (0.01 = one point of accuracy)")
	fl.Float64Var(&maxLatency, "max-latency", 1, "largest acceptable latency as a fraction of FP32's (1 = at least as fast)")
	fl.StringSliceVar(&recipes, "recipes", nil, "recipes to try (default all: static-minmax, static-percentile, static-entropy, static-minmax-all-ops, dynamic, fp16, static-mixed)")
	fl.IntVar(&rounds, "rounds", 20, "interleaved timing rounds (~30 ms each; the fastest counts)")
	fl.StringVar(&report, "report", "", "write the JSON report (recipes, chosen model's artifact precision/quantization) to this file")
	fl.StringVar(&ortLib, "ort-lib", "", "onnxruntime shared library (default $"+quantize.RuntimeLibraryEnv+" or .deps/)")
	data.register(cmd)
	return cmd
}
