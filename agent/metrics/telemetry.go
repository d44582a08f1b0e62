package metrics

import (
	"encoding/binary"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgefleet/edgefleet/agent/tensor"
)

// Outputs holds the collectors that judge what models produce and how they
// are batched; telemetry samples them with the Agent's collectors. A nil
// *Outputs is valid and records nothing.
type Outputs struct {
	NonFinite *prometheus.CounterVec   // model, version: responses with a NaN or Inf output
	BatchSize *prometheus.HistogramVec // model, version: rows per batched run
}

// batchBuckets are powers of two up to 1024 rows.
var batchBuckets = prometheus.ExponentialBuckets(1, 2, 11)

// NewOutputs creates the output collectors and registers them on reg (if
// reg is non-nil).
func NewOutputs(reg prometheus.Registerer) *Outputs {
	o := &Outputs{
		NonFinite: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "edgefleet", Subsystem: "agent", Name: "nonfinite_outputs_total",
			Help: "Inference responses with at least one NaN or Inf in a floating-point output.",
		}, []string{"model", "version"}),
		BatchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "edgefleet", Subsystem: "agent", Name: "batch_size_rows",
			Help: "Rows per batched session run (dynamic batching).", Buckets: batchBuckets,
		}, []string{"model", "version"}),
	}
	if reg != nil {
		reg.MustRegister(o.NonFinite, o.BatchSize)
	}
	return o
}

// ObserveOutputs counts a response whose outputs hold a NaN or an Inf.
func (o *Outputs) ObserveOutputs(model, version string, outs []tensor.Tensor) {
	if o == nil || !NonFinite(outs) {
		return
	}
	o.NonFinite.WithLabelValues(model, version).Inc()
}

// ObserveBatch records the rows of one batched run; it fits
// batching.Options.ObserveBatch through a closure.
func (o *Outputs) ObserveBatch(model, version string, rows int) {
	if o == nil {
		return
	}
	o.BatchSize.WithLabelValues(model, version).Observe(float64(rows))
}

// NonFinite reports whether any floating-point tensor (FP16, BF16, FP32,
// FP64) holds a NaN or an Inf. Other types are skipped.
func NonFinite(outs []tensor.Tensor) bool {
	for i := range outs {
		t := &outs[i]
		switch t.DType {
		case tensor.FP32:
			for j := 0; j+4 <= len(t.Data); j += 4 {
				if binary.LittleEndian.Uint32(t.Data[j:])&0x7f800000 == 0x7f800000 {
					return true
				}
			}
		case tensor.FP64:
			for j := 0; j+8 <= len(t.Data); j += 8 {
				if binary.LittleEndian.Uint64(t.Data[j:])&0x7ff0000000000000 == 0x7ff0000000000000 {
					return true
				}
			}
		case tensor.FP16:
			for j := 0; j+2 <= len(t.Data); j += 2 {
				if binary.LittleEndian.Uint16(t.Data[j:])&0x7c00 == 0x7c00 {
					return true
				}
			}
		case tensor.BF16:
			for j := 0; j+2 <= len(t.Data); j += 2 {
				if binary.LittleEndian.Uint16(t.Data[j:])&0x7f80 == 0x7f80 {
					return true
				}
			}
		}
	}
	return false
}
