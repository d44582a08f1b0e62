package metrics

import (
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
	if o == nil || !tensor.HasNonFinite(outs) {
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
