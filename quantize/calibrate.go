package quantize

import (
	"context"
	"errors"
	"fmt"

	"github.com/edgefleet/edgefleet/quantize/internal/calib"
	"github.com/edgefleet/edgefleet/quantize/internal/graph"
	"github.com/edgefleet/edgefleet/quantize/onnxpb"
)

// calibConfig maps options to the collector configuration, with
// calibrate.py's per-method defaults.
func calibConfig(o Options) calib.Config {
	cfg := calib.Config{
		Bins:          o.HistogramBins,
		QuantizedBins: o.QuantizedBins,
		Percentile:    o.Percentile,
	}
	switch o.Calibration {
	case Percentile:
		cfg.Method = calib.Percentile
		cfg.Symmetric = !o.CalibrationAsymmetric
	case Entropy:
		cfg.Method = calib.Entropy
	default:
		cfg.Method = calib.MinMax
	}
	return cfg
}

// checkBatches validates calibration batches against the model's inputs.
func checkBatches(m *onnxpb.ModelProto, batches []Batch) error {
	if len(batches) == 0 {
		return ErrEmptyCalibration
	}
	inputs := modelInputs(m)
	for i, b := range batches {
		have := map[string]bool{}
		for _, t := range b {
			have[t.Name] = true
		}
		for _, name := range inputs {
			if !have[name] {
				return fmt.Errorf("%w: calibration batch %d has no tensor for model input %q", ErrInvalidOptions, i, name)
			}
		}
	}
	return nil
}

// calibrate runs the float model m on batches in onnxruntime and returns
// the range of each named tensor. Graph inputs are measured from the
// batches themselves; other tensors are exposed as extra graph outputs.
func calibrate(ctx context.Context, m *onnxpb.ModelProto, tensors []string, batches []Batch, opts Options) (map[string][2]float32, error) {
	if err := checkBatches(m, batches); err != nil {
		return nil, err
	}
	cfg := calibConfig(opts)
	stats := map[string]*calib.Stats{}
	inputs := map[string]bool{}
	for _, name := range modelInputs(m) {
		inputs[name] = true
	}
	var fetch []string
	for _, name := range tensors {
		if _, dup := stats[name]; dup {
			continue
		}
		stats[name] = calib.New(cfg)
		if !inputs[name] {
			fetch = append(fetch, name)
		}
	}
	c := graph.Clone(m)
	outs := map[string]bool{}
	for _, vi := range c.Graph.Output {
		outs[vi.GetName()] = true
	}
	for _, name := range fetch {
		if !outs[name] {
			c.Graph.Output = append(c.Graph.Output, graph.ValueInfo(name, graph.Float))
		}
	}
	data, err := graph.Encode(c)
	if err != nil {
		return nil, err
	}
	var s *session
	if len(fetch) > 0 {
		s, err = newSessionOpt(data, modelInputs(m), fetch, false)
		if err != nil {
			return nil, fmt.Errorf("calibration model: %w", err)
		}
		defer s.Close()
	}
	passes := 1
	for _, st := range stats {
		if st.TwoPass() {
			passes = 2
		}
		break
	}
	for pass := 0; pass < passes; pass++ {
		for bi, b := range batches {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			observe := func(name string, x []float32) {
				if pass == 0 {
					stats[name].Observe(x)
				} else {
					stats[name].ObserveHistogram(x)
				}
			}
			for _, t := range b {
				if _, ok := stats[t.Name]; ok && inputs[t.Name] {
					x, ok := t.Data.([]float32)
					if !ok {
						return nil, fmt.Errorf("%w: calibration input %q is %T, want []float32", ErrInvalidOptions, t.Name, t.Data)
					}
					observe(t.Name, x)
				}
			}
			if s == nil {
				continue
			}
			res, err := s.Run(b)
			if err != nil {
				return nil, fmt.Errorf("calibration batch %d: %w", bi, err)
			}
			for i, name := range fetch {
				observe(name, res[i].F32)
			}
		}
	}
	ranges := make(map[string][2]float32, len(stats))
	for name, st := range stats {
		lo, hi, err := st.Range()
		if errors.Is(err, calib.ErrNoData) {
			lo, hi, err = 0, 0, nil // an always-empty tensor: any range works
		}
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", name, err)
		}
		ranges[name] = [2]float32{lo, hi}
	}
	return ranges, nil
}
