package quantize

import (
	"context"
	"slices"
	"testing"

	"github.com/edgefleet/edgefleet/ota/artifact"
)

// TestArtifactQuantization maps the reports of each conversion of the
// digits CNN to an artifact config and checks the config validates and
// carries precision and calibration.
func TestArtifactQuantization(t *testing.T) {
	needRuntime(t)
	ctx := context.Background()
	fp32 := loadModel(t, "cnn.onnx")
	calib := rebatch(t, calibFile(), 32)
	var samples int
	for _, b := range calib {
		samples += int(b[0].Shape[0])
	}
	tests := []struct {
		name      string
		quant     func() ([]byte, *Report, error)
		precision artifact.Precision
		want      artifact.Quantization
	}{
		{"dynamic", func() ([]byte, *Report, error) { return Dynamic(ctx, fp32, Options{}) },
			artifact.PrecisionINT8, artifact.Quantization{Method: "dynamic", WeightType: "INT8", ActivationType: "UINT8", Tool: Tool}},
		{"dynamic uint8 weights", func() ([]byte, *Report, error) { return Dynamic(ctx, fp32, Options{WeightType: Uint8}) },
			artifact.PrecisionUINT8, artifact.Quantization{Method: "dynamic", WeightType: "UINT8", ActivationType: "UINT8", Tool: Tool}},
		{"static percentile", func() ([]byte, *Report, error) {
			return Static(ctx, fp32, calib, Options{Calibration: Percentile, Percentile: 99.99})
		}, artifact.PrecisionINT8, artifact.Quantization{Method: "static-qdq", WeightType: "INT8", ActivationType: "INT8", PerChannel: true, Tool: Tool,
			Calibration: &artifact.Calibration{Method: "percentile", Samples: samples, Percentile: 99.99}}},
		{"static with a node in float", func() ([]byte, *Report, error) {
			return Static(ctx, fp32, calib, Options{ExcludeNodes: []string{firstConv(t, fp32)}})
		}, artifact.PrecisionMixed, artifact.Quantization{Method: "static-qdq", WeightType: "INT8", ActivationType: "INT8", PerChannel: true, Tool: Tool,
			Calibration: &artifact.Calibration{Method: "minmax", Samples: samples}, FloatNodes: []string{firstConv(t, fp32)}}},
		{"fp16", func() ([]byte, *Report, error) { return FP16(ctx, fp32, Options{}) },
			artifact.PrecisionFP16, artifact.Quantization{Method: "fp16", WeightType: "FP16", Tool: Tool}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, rep, err := tc.quant()
			if err != nil {
				t.Fatal(err)
			}
			if got := rep.ArtifactPrecision(); got != tc.precision {
				t.Errorf("precision %q, want %q", got, tc.precision)
			}
			q := rep.ArtifactQuantization()
			checkQuantization(t, q, &tc.want)
			cfg := artifact.Config{
				Name: "digits-cnn", Version: "1",
				Inputs:    []artifact.TensorSpec{{Name: "input", Datatype: "FP32", Shape: []int64{-1, 1, 8, 8}}},
				Outputs:   []artifact.TensorSpec{{Name: "logits", Datatype: "FP32", Shape: []int64{-1, 10}}},
				Precision: rep.ArtifactPrecision(), Quantization: q,
			}
			blob, err := cfg.Marshal()
			if err != nil {
				t.Fatalf("config does not validate: %v", err)
			}
			back, err := artifact.ParseConfig(blob)
			if err != nil {
				t.Fatal(err)
			}
			checkQuantization(t, back.Quantization, &tc.want)
		})
	}
}

// TestAccuracyResultArtifact checks the accuracy metrics reach the config.
func TestAccuracyResultArtifact(t *testing.T) {
	res := &AccuracyResult{
		Report:   &Report{Mode: ModeStatic, WeightType: "INT8", ActivationType: "INT8", Skipped: []Skip{{Name: "conv1", OpType: "Conv", Reason: skipExcluded}}},
		Baseline: 0.98, Metric: 0.975, Drop: 0.005, Met: true, Float: []string{"conv1"},
	}
	q := res.ArtifactQuantization("accuracy")
	want := map[string]float64{"accuracy": 0.975, "accuracyFP32": 0.98, "accuracyDrop": 0.005}
	for k, v := range want {
		if q.Metrics[k] != v {
			t.Errorf("metrics[%q] = %v, want %v (all: %v)", k, q.Metrics[k], v, q.Metrics)
		}
	}
	if !slices.Equal(q.FloatNodes, []string{"conv1"}) || res.Report.ArtifactPrecision() != artifact.PrecisionMixed {
		t.Errorf("float nodes %v, precision %q", q.FloatNodes, res.Report.ArtifactPrecision())
	}
}

func checkQuantization(t *testing.T, got, want *artifact.Quantization) {
	t.Helper()
	if got == nil {
		t.Fatal("no quantization record")
	}
	if got.Method != want.Method || got.WeightType != want.WeightType || got.ActivationType != want.ActivationType ||
		got.PerChannel != want.PerChannel || got.Tool != want.Tool || !slices.Equal(got.FloatNodes, want.FloatNodes) {
		t.Errorf("quantization %+v, want %+v", got, want)
	}
	switch {
	case (got.Calibration == nil) != (want.Calibration == nil):
		t.Errorf("calibration %+v, want %+v", got.Calibration, want.Calibration)
	case got.Calibration != nil && *got.Calibration != *want.Calibration:
		t.Errorf("calibration %+v, want %+v", *got.Calibration, *want.Calibration)
	}
}

// firstConv names the first Conv node of model.
func firstConv(t *testing.T, model []byte) string {
	t.Helper()
	for _, n := range opNodes(t, model) {
		if n.OpType == "Conv" {
			return n.Name
		}
	}
	t.Fatal("no Conv")
	return ""
}

// opNodes lists model's quantizable nodes (Candidates).
func opNodes(t *testing.T, model []byte) []NodeInfo {
	t.Helper()
	c, err := Candidates(model)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
