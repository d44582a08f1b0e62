//go:build !agentonly

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/edgefleet/edgefleet/deploy/testenv"
	"github.com/edgefleet/edgefleet/ota/artifact"
	"github.com/edgefleet/edgefleet/quantize"
	"github.com/edgefleet/edgefleet/quantize/onnxpb"
)

const digitsDir = "../../agent/testdata/digits"

// needQuantizeRuntime initialises onnxruntime, skipping the test when the
// library is missing (failing it under CI).
func needQuantizeRuntime(t *testing.T) {
	t.Helper()
	if err := quantize.InitRuntime(testenv.ORTLibrary(t)); err != nil {
		t.Fatalf("onnxruntime: %v", err)
	}
}

// execQuantize runs `edgefleet quantize ARGS...` in-process and returns its
// standard output.
func execQuantize(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newQuantizeCmd(&globalFlags{logLevel: "error"})
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

// digitsAccuracy runs model in onnxruntime on the held-out digits set.
func digitsAccuracy(t *testing.T, model []byte) float64 {
	t.Helper()
	b, labels, err := quantize.ReadCSVFile(filepath.Join(digitsDir, "test.csv"), quantize.CSVFormat{
		Input: "input", Shape: []int64{1, 8, 8}, Scale: 1.0 / 16, LabelColumn: 0, Header: true, BatchSize: 64,
	})
	if err != nil {
		t.Fatal(err)
	}
	acc, err := quantize.Classification(b, labels, "logits")(context.Background(), model)
	if err != nil {
		t.Fatalf("quantized model does not run in onnxruntime: %v", err)
	}
	return acc
}

// csvFlags read the digits CSVs: label first, pixels 0..16.
var csvFlags = []string{"--label-column", "0", "--scale", "0.0625"}

func TestQuantizeCommand(t *testing.T) {
	needQuantizeRuntime(t)
	dir := t.TempDir()
	cnn := filepath.Join(digitsDir, "cnn.onnx")
	calib := filepath.Join(digitsDir, "calib.csv")
	test := filepath.Join(digitsDir, "test.csv")
	fp32, err := os.ReadFile(cnn)
	if err != nil {
		t.Fatal(err)
	}
	base := digitsAccuracy(t, fp32)
	tests := []struct {
		name      string
		args      []string
		precision artifact.Precision
		method    string
		stdout    string
	}{
		{"dynamic", []string{"dynamic", cnn}, artifact.PrecisionINT8, "dynamic", "int8-dynamic"},
		{"dynamic per-channel", []string{"dynamic", cnn, "--per-channel", "--strip-node-metadata"}, artifact.PrecisionINT8, "dynamic", "int8-dynamic"},
		{"static minmax", append([]string{"static", cnn, "--calib", calib}, csvFlags...), artifact.PrecisionINT8, "static-qdq", "int8-static-qdq"},
		{"static entropy uint8 per-tensor", append([]string{"static", cnn, "--calib", calib, "--method", "entropy", "--activation-type", "uint8", "--per-tensor"}, csvFlags...),
			artifact.PrecisionINT8, "static-qdq", "int8-static-qdq"},
		{"static excluding a node", append([]string{"static", cnn, "--calib", calib, "--exclude-nodes", firstConvName(t, fp32)}, csvFlags...),
			artifact.PrecisionMixed, "static-qdq", "1 skipped"},
		{"static with accuracy control", append([]string{"static", cnn, "--calib", calib, "--method", "percentile", "--eval", test, "--metric", "accuracy", "--max-drop", "0.01"}, csvFlags...),
			artifact.PrecisionINT8, "static-qdq", "accuracy: fp32"},
		{"fp16", []string{"fp16", cnn}, artifact.PrecisionFP16, "fp16", "fp16"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, tc.name+".onnx")
			report := filepath.Join(dir, tc.name+".json")
			stdout, err := execQuantize(t, append(tc.args, "-o", out, "--report", report)...)
			if err != nil {
				t.Fatalf("quantize %v: %v\n%s", tc.args, err, stdout)
			}
			if !strings.Contains(stdout, tc.stdout) {
				t.Errorf("output does not mention %q:\n%s", tc.stdout, stdout)
			}
			q, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			acc := digitsAccuracy(t, q)
			t.Logf("%s: accuracy %.4f (fp32 %.4f), %d bytes (fp32 %d)", tc.name, acc, base, len(q), len(fp32))
			if acc < base-0.01 {
				t.Errorf("accuracy %.4f is more than a point below fp32 %.4f", acc, base)
			}
			if len(q) >= len(fp32) {
				t.Errorf("output %d bytes, fp32 %d", len(q), len(fp32))
			}
			var res quantizeResult
			b, err := os.ReadFile(report)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &res); err != nil {
				t.Fatal(err)
			}
			if res.Precision != tc.precision || res.Quantization == nil || res.Quantization.Method != tc.method {
				t.Fatalf("report precision %q quantization %+v, want %q %q", res.Precision, res.Quantization, tc.precision, tc.method)
			}
			if res.Report == nil || res.Report.SizeAfter != len(q) {
				t.Errorf("report %+v does not describe the %d-byte output", res.Report, len(q))
			}
			if tc.method == "static-qdq" && (res.Quantization.Calibration == nil || res.Quantization.Calibration.Samples != 200) {
				t.Errorf("calibration %+v, want 200 samples", res.Quantization.Calibration)
			}
			if strings.Contains(tc.name, "accuracy") {
				if res.Accuracy == nil || !res.Accuracy.Met || res.Quantization.Metrics["accuracyFP32"] != base {
					t.Errorf("accuracy control %+v, metrics %v", res.Accuracy, res.Quantization.Metrics)
				}
			}
		})
	}

	t.Run("sensitivity", func(t *testing.T) {
		q := filepath.Join(dir, "static minmax.onnx")
		for _, extra := range [][]string{nil, {"--report", filepath.Join(dir, "static minmax.json")}, {"--report", filepath.Join(dir, "dynamic.json")}} {
			model := q
			if strings.Contains(strings.Join(extra, " "), "dynamic") {
				model = filepath.Join(dir, "dynamic.onnx")
			}
			args := append(append([]string{"sensitivity", cnn, model, "--calib", calib}, csvFlags...), extra...)
			stdout, err := execQuantize(t, args...)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%v:\n%s", extra, stdout)
			lines := strings.Split(strings.TrimSpace(stdout), "\n")
			if len(lines) < 3 || !strings.HasPrefix(lines[0], "NODE") {
				t.Fatalf("want a header and a row per node:\n%s", stdout)
			}
			convs := 0
			for _, l := range lines[1:] {
				f := strings.Fields(l)
				if len(f) != 5 {
					t.Fatalf("row %q: want 5 columns", l)
				}
				if f[1] == "Conv" {
					convs++
					if f[3] == "inf" || f[4] == "1.000000" {
						t.Errorf("Conv row %q: a quantized Conv cannot match FP32 exactly", l)
					}
				}
			}
			if convs == 0 {
				t.Errorf("no Conv rows:\n%s", stdout)
			}
		}
		stdout, err := execQuantize(t, append([]string{"sensitivity", cnn, q, "--calib", calib, "--json"}, csvFlags...)...)
		if err != nil {
			t.Fatal(err)
		}
		var sens []quantize.NodeSensitivity
		if err := json.Unmarshal([]byte(stdout), &sens); err != nil || len(sens) == 0 {
			t.Fatalf("--json: %v\n%s", err, stdout)
		}
	})
}

// firstConvName names the first Conv node of model.
func firstConvName(t *testing.T, model []byte) string {
	t.Helper()
	c, err := quantize.Candidates(model)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c {
		if n.OpType == "Conv" {
			return n.Name
		}
	}
	t.Fatal("no Conv in the model")
	return ""
}

func TestQuantizeCommandBadInput(t *testing.T) {
	needQuantizeRuntime(t)
	dir := t.TempDir()
	cnn := filepath.Join(digitsDir, "cnn.onnx")
	calib := filepath.Join(digitsDir, "calib.csv")
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	notONNX := write("notes.onnx", []byte("this is a text file, not a model\n"))
	headerOnly := write("empty.csv", []byte("label,p0,p1\n"))

	// The CNN with its first weight moved to an external file that is missing.
	m := &onnxpb.ModelProto{}
	fp32, err := os.ReadFile(cnn)
	if err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(fp32, m); err != nil {
		t.Fatal(err)
	}
	w := m.Graph.Initializer[0]
	w.RawData, w.FloatData = nil, nil
	w.DataLocation = onnxpb.TensorProto_EXTERNAL
	w.ExternalData = []*onnxpb.StringStringEntryProto{{Key: "location", Value: "cnn.weights.bin"}}
	extModel, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	ext := write("external.onnx", extModel)

	tests := []struct {
		name string
		args []string
		want error
		msg  string
	}{
		{"not ONNX", []string{"dynamic", notONNX}, quantize.ErrNotONNX, "not an ONNX model"},
		{"not ONNX (static)", append([]string{"static", notONNX, "--calib", calib}, csvFlags...), quantize.ErrNotONNX, "notes.onnx"},
		{"external data missing", []string{"dynamic", ext}, quantize.ErrExternalData, "cnn.weights.bin"},
		{"unsupported op type", append([]string{"static", cnn, "--calib", calib, "--include-op-types", "FancyOp"}, csvFlags...), quantize.ErrUnsupported, "FancyOp"},
		{"empty calibration set", append([]string{"static", cnn, "--calib", headerOnly}, csvFlags...), quantize.ErrEmptyCalibration, "empty.csv"},
		{"static without --calib", []string{"static", cnn}, quantize.ErrEmptyCalibration, "--calib"},
		{"calibration file missing", append([]string{"static", cnn, "--calib", filepath.Join(dir, "nope.csv")}, csvFlags...), quantize.ErrDataset, "nope.csv"},
		{"calibration rows of the wrong width", append([]string{"static", cnn, "--calib", calib, "--shape", "1x4x4"}, csvFlags...), quantize.ErrDataset, "line"},
		{"unknown method", append([]string{"static", cnn, "--calib", calib, "--method", "median"}, csvFlags...), quantize.ErrInvalidOptions, "median"},
		{"unknown node", []string{"dynamic", cnn, "--exclude-nodes", "conv_typo"}, quantize.ErrInvalidOptions, "conv_typo"},
		{"metric without evaluator", append([]string{"static", cnn, "--calib", calib, "--eval", calib, "--metric", "cer"}, csvFlags...), quantize.ErrInvalidOptions, "cer"},
		{"eval without labels", []string{"dynamic", cnn, "--eval", calib, "--scale", "0.0625"}, quantize.ErrInvalidOptions, "--label-column"},
		{"bad weight type", []string{"dynamic", cnn, "--weight-type", "int4"}, quantize.ErrInvalidOptions, "int4"},
		{"no output", []string{"dynamic", cnn, "-o", ""}, nil, "-o OUT.onnx"},
		{"sensitivity without --calib", []string{"sensitivity", cnn, cnn}, quantize.ErrEmptyCalibration, "--calib"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, "out.onnx")
			args := tc.args
			if tc.args[0] != "sensitivity" && !slices.Contains(args, "-o") {
				args = append(args, "-o", out)
			}
			_, err := execQuantize(t, args...)
			if err == nil {
				t.Fatal("no error")
			}
			t.Logf("edgefleet quantize %s: %v", strings.Join(tc.args, " "), err)
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("error %q does not match %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not mention %q", err, tc.msg)
			}
			if _, serr := os.Stat(out); serr == nil {
				t.Errorf("a failed run wrote %s", out)
			}
		})
	}
}

// TestQuantizeConvertCLI converts PaddleOCR's opset-9 direction classifier
// to opset 13 and checks the refusal of a target the converter lacks.
func TestQuantizeConvertCLI(t *testing.T) {
	needQuantizeRuntime(t)
	in := filepath.Join("..", "..", ".deps", "models", "ch_ppocr_mobile_v2.0_cls_infer.onnx")
	if _, err := os.Stat(in); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("%v (run make deps)", err)
		}
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "cls.op13.onnx")
	stdout, err := execQuantize(t, "convert", in, "-o", out, "--opset", "13")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout, "from 9 to 13") || !strings.Contains(stdout, "Slice@10") {
		t.Errorf("output %q does not report the conversion", stdout)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	m := &onnxpb.ModelProto{}
	if err := proto.Unmarshal(b, m); err != nil {
		t.Fatal(err)
	}
	if v := m.GetOpsetImport()[0].GetVersion(); v != 13 {
		t.Errorf("written model imports opset %d, want 13", v)
	}
	bad := filepath.Join(t.TempDir(), "bad.onnx")
	if _, err := execQuantize(t, "convert", in, "-o", bad, "--opset", "40"); !errors.Is(err, quantize.ErrUnsupported) {
		t.Errorf("opset 40: err = %v, want ErrUnsupported", err)
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Errorf("a refused conversion wrote %s", bad)
	}
}

// TestQuantizeAutoCLI runs `quantize auto` on the digits CNN: with a loose
// latency budget it writes the chosen model and a report whose
// quantization field an artifact config takes; with an impossible one it
// writes no model and names the missed constraint.
func TestQuantizeAutoCLI(t *testing.T) {
	needQuantizeRuntime(t)
	dir := t.TempDir()
	cnn := filepath.Join(digitsDir, "cnn.onnx")
	common := []string{"--calib", filepath.Join(digitsDir, "calib.csv"), "--eval", filepath.Join(digitsDir, "test.csv"),
		"--label-column", "0", "--scale", "0.0625", "--rounds", "1", "--recipes", "static-minmax,dynamic"}
	out, rep := filepath.Join(dir, "cnn.auto.onnx"), filepath.Join(dir, "auto.json")
	stdout, err := execQuantize(t, append([]string{"auto", cnn, "-o", out, "--report", rep, "--max-latency", "1000"}, common...)...)
	if err != nil {
		t.Fatalf("%v\n%s", err, stdout)
	}
	if !strings.Contains(stdout, "chose dynamic") || !strings.Contains(stdout, "static-minmax") {
		t.Errorf("output does not show the recipes and the smallest choice:\n%s", stdout)
	}
	if acc := digitsAccuracy(t, mustRead(t, out)); acc < 0.97 {
		t.Errorf("chosen model accuracy %.4f", acc)
	}
	var r struct {
		Precision    artifact.Precision     `json:"precision"`
		Quantization *artifact.Quantization `json:"quantization"`
	}
	if err := json.Unmarshal(mustRead(t, rep), &r); err != nil || r.Quantization == nil || r.Quantization.Method != "dynamic" || r.Quantization.Metrics["latencyRatio"] <= 0 {
		t.Errorf("report precision %q quantization %+v (%v)", r.Precision, r.Quantization, err)
	}
	none := filepath.Join(dir, "none.onnx")
	_, err = execQuantize(t, append([]string{"auto", cnn, "-o", none, "--max-latency", "0.000001"}, common...)...)
	if !errors.Is(err, quantize.ErrNoRecipeFits) || !strings.Contains(err.Error(), "latency") {
		t.Errorf("impossible budget: err = %v", err)
	}
	if _, err := os.Stat(none); !os.IsNotExist(err) {
		t.Errorf("a failed search wrote %s", none)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
