package quantize

import (
	"strings"

	"github.com/edgefleet/edgefleet/ota/artifact"
)

// Tool names this quantizer in artifact configs.
const Tool = "edgefleet-quantize"

// skipExcluded is the Skip reason of nodes the options kept in float.
const skipExcluded = "excluded by options"

// samples counts the samples of batches: the leading dimension of each
// batch's first tensor (1 for a scalar).
func samples(batches []Batch) int {
	n := 0
	for _, b := range batches {
		switch {
		case len(b) == 0:
		case len(b[0].Shape) == 0:
			n++
		default:
			n += int(b[0].Shape[0])
		}
	}
	return n
}

// ArtifactPrecision is the precision an OCI artifact config declares for
// the model r describes: int8 or uint8 (the weight type) for INT8 models,
// fp16, or mixed when nodes the quantizer would have converted were kept
// in float on request (Options.ExcludeNodes, ExcludeOpTypes, accuracy
// fallback).
func (r *Report) ArtifactPrecision() artifact.Precision {
	if r.Mode == ModeFP16 {
		return artifact.PrecisionFP16
	}
	if len(r.floatNodes()) > 0 {
		return artifact.PrecisionMixed
	}
	if r.WeightType == Uint8.String() {
		return artifact.PrecisionUINT8
	}
	return artifact.PrecisionINT8
}

// ArtifactQuantization maps r to the quantization record of an OCI
// artifact config (ota/artifact.Config.Quantization): method, types,
// per-channel weights, the calibration method and sample count, and the
// nodes kept in float on request. Pass the result of AccuracyControl to
// AccuracyResult.ArtifactQuantization instead to include its metrics.
func (r *Report) ArtifactQuantization() *artifact.Quantization {
	q := &artifact.Quantization{
		WeightType:     r.WeightType,
		ActivationType: r.ActivationType,
		PerChannel:     r.PerChannel,
		FloatNodes:     r.floatNodes(),
		Tool:           Tool,
	}
	switch r.Mode {
	case ModeDynamic:
		q.Method = "dynamic"
	case ModeStatic:
		q.Method = "static-qdq"
	case ModeFP16:
		q.Method = "fp16"
		q.WeightType = "FP16"
	}
	if c := r.Calibration; c != nil {
		q.Calibration = &artifact.Calibration{Method: c.Method, Samples: c.Samples, Percentile: c.Percentile}
	}
	return q
}

// floatNodes lists the nodes kept in float by the options.
func (r *Report) floatNodes() []string {
	var out []string
	for _, s := range r.Skipped {
		if s.Reason == skipExcluded {
			out = append(out, s.Name)
		}
	}
	return out
}

// ArtifactQuantization is Report.ArtifactQuantization of the chosen model
// with the evaluation added to its metrics, under the metric's name
// (lower-case, "accuracy" say): the FP32 baseline as name+"FP32", the
// quantized model's value as name and the loss as name+"Drop".
func (a *AccuracyResult) ArtifactQuantization(metric string) *artifact.Quantization {
	q := a.Report.ArtifactQuantization()
	metric = strings.TrimSpace(metric)
	if metric == "" {
		metric = "metric"
	}
	q.Metrics = map[string]float64{
		metric:          a.Metric,
		metric + "FP32": a.Baseline,
		metric + "Drop": a.Drop,
	}
	return q
}
