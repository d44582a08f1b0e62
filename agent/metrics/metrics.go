// Package metrics defines the agent's Prometheus metrics. All collectors are
// registered on a Registerer passed in by the caller, never the global one,
// so tests can build as many agents as they like.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcome labels for RequestsTotal.
const (
	OutcomeSuccess     = "success"
	OutcomeClientError = "client_error"
	OutcomeNotFound    = "not_found"
	OutcomeOverloaded  = "overloaded"
	OutcomeServerError = "server_error"
)

// Agent holds the agent's collectors. A nil *Agent is valid and records nothing.
type Agent struct {
	RequestsTotal   *prometheus.CounterVec   // model, version, protocol, outcome
	RequestDuration *prometheus.HistogramVec // model, version, protocol: end to end in the front end
	QueueDuration   *prometheus.HistogramVec // model, version: waiting for a session
	ComputeDuration *prometheus.HistogramVec // model, version, provider: session run
	InFlight        *prometheus.GaugeVec     // model, version
	LoadDuration    *prometheus.HistogramVec // model, version, provider
	Provider        *prometheus.GaugeVec     // model, version, provider, requested: 1 for the provider in use
	Degraded        *prometheus.GaugeVec     // model, version: 1 after a GPU→CPU runtime fallback
	Fallbacks       *prometheus.CounterVec   // model, version, from, to
	CacheBytes      prometheus.Gauge
	CacheBlobs      prometheus.Gauge
}

// latency buckets from 10µs to ~10s.
var latencyBuckets = prometheus.ExponentialBuckets(10e-6, 2.5, 16)

// New creates the collectors and registers them on reg (if reg is non-nil).
func New(reg prometheus.Registerer) *Agent {
	m := &Agent{
		RequestsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "edgefleet", Subsystem: "agent", Name: "requests_total",
			Help: "Inference requests by model, version, protocol and outcome.",
		}, []string{"model", "version", "protocol", "outcome"}),
		RequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "edgefleet", Subsystem: "agent", Name: "request_duration_seconds",
			Help: "End-to-end inference request latency in the protocol front end.", Buckets: latencyBuckets,
		}, []string{"model", "version", "protocol"}),
		QueueDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "edgefleet", Subsystem: "agent", Name: "queue_duration_seconds",
			Help: "Time an inference request waited for a free session.", Buckets: latencyBuckets,
		}, []string{"model", "version"}),
		ComputeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "edgefleet", Subsystem: "agent", Name: "compute_duration_seconds",
			Help: "Time spent in the onnxruntime session run.", Buckets: latencyBuckets,
		}, []string{"model", "version", "provider"}),
		InFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "edgefleet", Subsystem: "agent", Name: "inflight_requests",
			Help: "Inference requests in progress.",
		}, []string{"model", "version"}),
		LoadDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "edgefleet", Subsystem: "agent", Name: "model_load_duration_seconds",
			Help: "Time to create a model version's sessions.", Buckets: prometheus.ExponentialBuckets(1e-3, 2, 16),
		}, []string{"model", "version", "provider"}),
		Provider: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "edgefleet", Subsystem: "agent", Name: "model_execution_provider",
			Help: "1 for the execution provider a loaded model version runs on; requested is the configured first choice.",
		}, []string{"model", "version", "provider", "requested"}),
		Degraded: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "edgefleet", Subsystem: "agent", Name: "model_degraded",
			Help: "1 when a model version fell back from its requested execution provider.",
		}, []string{"model", "version"}),
		Fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "edgefleet", Subsystem: "agent", Name: "provider_fallbacks_total",
			Help: "Execution provider fallbacks at load or run time.",
		}, []string{"model", "version", "from", "to"}),
		CacheBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "edgefleet", Subsystem: "agent", Name: "cache_bytes",
			Help: "Bytes of model blobs in the local cache.",
		}),
		CacheBlobs: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "edgefleet", Subsystem: "agent", Name: "cache_blobs",
			Help: "Model blobs in the local cache.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.RequestsTotal, m.RequestDuration, m.QueueDuration, m.ComputeDuration,
			m.InFlight, m.LoadDuration, m.Provider, m.Degraded, m.Fallbacks, m.CacheBytes, m.CacheBlobs)
	}
	return m
}

// ObserveRequest records one finished front-end request.
func (m *Agent) ObserveRequest(model, version, protocol, outcome string, d time.Duration) {
	if m == nil {
		return
	}
	m.RequestsTotal.WithLabelValues(model, version, protocol, outcome).Inc()
	m.RequestDuration.WithLabelValues(model, version, protocol).Observe(d.Seconds())
}

// HTTPOutcome maps an HTTP status to the outcome label of RequestsTotal.
func HTTPOutcome(status int) string {
	switch {
	case status < 400:
		return OutcomeSuccess
	case status == 404:
		return OutcomeNotFound
	case status == 429:
		return OutcomeOverloaded
	case status < 500:
		return OutcomeClientError
	}
	return OutcomeServerError
}
