package telemetry

import (
	"errors"
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgefleet/edgefleet/ota/wire"
)

// Metric names on the hub's /metrics. Per-device series carry device,
// model and version labels (at most Options.MaxSeries label sets; the
// rest are summed under device="_overflow"); the edgefleet_fleet_model_*
// roll-ups sum every device per model and version.
var (
	seriesLabels = []string{"device", "model", "version"}
	mvLabels     = []string{"model", "version"}

	descRequests     = prometheus.NewDesc("edgefleet_fleet_requests_total", "Inference requests per device and model version, from agent telemetry.", seriesLabels, nil)
	descErrors       = prometheus.NewDesc("edgefleet_fleet_errors_total", "Inference requests that failed on the server side.", seriesLabels, nil)
	descClientErrors = prometheus.NewDesc("edgefleet_fleet_client_errors_total", "Inference requests refused as malformed or for unknown versions.", seriesLabels, nil)
	descRejected     = prometheus.NewDesc("edgefleet_fleet_rejected_total", "Inference requests refused because the model's queue was full.", seriesLabels, nil)
	descNonFinite    = prometheus.NewDesc("edgefleet_fleet_nonfinite_outputs_total", "Inference responses with NaN or Inf outputs.", seriesLabels, nil)
	descFallbacks    = prometheus.NewDesc("edgefleet_fleet_provider_fallbacks_total", "Runs that fell back from the requested execution provider to the CPU.", seriesLabels, nil)
	descLatency      = prometheus.NewDesc("edgefleet_fleet_request_duration_seconds", "Inference request latency per device and model version (count and sum).", seriesLabels, nil)
	descProvider     = prometheus.NewDesc("edgefleet_fleet_model_provider", "1 for the execution provider a device's current model version runs on.", []string{"device", "model", "version", "provider"}, nil)

	descMVRequests  = prometheus.NewDesc("edgefleet_fleet_model_requests_total", "Inference requests per model version over the fleet.", mvLabels, nil)
	descMVErrors    = prometheus.NewDesc("edgefleet_fleet_model_errors_total", "Failed inference requests per model version over the fleet.", mvLabels, nil)
	descMVRejected  = prometheus.NewDesc("edgefleet_fleet_model_rejected_total", "Requests refused for a full queue per model version over the fleet.", mvLabels, nil)
	descMVNonFinite = prometheus.NewDesc("edgefleet_fleet_model_nonfinite_outputs_total", "Responses with NaN or Inf outputs per model version over the fleet.", mvLabels, nil)
	descMVFallbacks = prometheus.NewDesc("edgefleet_fleet_model_provider_fallbacks_total", "GPU to CPU fallbacks per model version over the fleet.", mvLabels, nil)
	descMVLatency   = prometheus.NewDesc("edgefleet_fleet_model_request_duration_seconds", "Inference request latency per model version over the fleet.", mvLabels, nil)
	descMVDevices   = prometheus.NewDesc("edgefleet_fleet_model_devices", "Devices whose latest telemetry names the model version, by execution provider.", []string{"model", "version", "provider"}, nil)

	descDevProcCPU   = prometheus.NewDesc("edgefleet_fleet_device_process_cpu_cores", "The agent process's CPU use (cores) in the device's latest snapshot.", []string{"device"}, nil)
	descDevSysCPU    = prometheus.NewDesc("edgefleet_fleet_device_system_cpu_ratio", "Busy fraction of the device's cores in its latest snapshot.", []string{"device"}, nil)
	descDevRSS       = prometheus.NewDesc("edgefleet_fleet_device_rss_bytes", "The agent's resident memory in the device's latest snapshot.", []string{"device"}, nil)
	descDevDiskFree  = prometheus.NewDesc("edgefleet_fleet_device_disk_free_bytes", "Free bytes of the device's data file system.", []string{"device"}, nil)
	descDevGPUMem    = prometheus.NewDesc("edgefleet_fleet_device_gpu_memory_used_bytes", "GPU memory in use on the device.", []string{"device", "gpu"}, nil)
	descDevLast      = prometheus.NewDesc("edgefleet_fleet_device_last_report_timestamp_seconds", "When the hub last stored a report of the device.", []string{"device"}, nil)
	descDevReporting = prometheus.NewDesc("edgefleet_fleet_device_reporting", "1 while the device's reports arrive on time.", []string{"device"}, nil)
	descDevDropped   = prometheus.NewDesc("edgefleet_fleet_device_telemetry_dropped_total", "Snapshots the device discarded unsent (queue budget).", []string{"device"}, nil)
	descDevStored    = prometheus.NewDesc("edgefleet_fleet_device_snapshots_total", "Snapshots of the device the hub stored.", []string{"device"}, nil)

	descDevices  = prometheus.NewDesc("edgefleet_fleet_devices", "Devices that sent telemetry, by whether their reports arrive on time.", []string{"state"}, nil)
	descOverflow = prometheus.NewDesc("edgefleet_fleet_series_overflow", "Device/model/version label sets summed under device=\"_overflow\" (cardinality limit).", nil, nil)
)

// ingestMetrics count what the hub receives.
type ingestMetrics struct {
	reports   *prometheus.CounterVec
	snapshots *prometheus.CounterVec
	duration  *prometheus.HistogramVec
}

func newIngestMetrics() *ingestMetrics {
	return &ingestMetrics{
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "edgefleet", Subsystem: "hub", Name: "telemetry_reports_total",
			Help: "Telemetry reports received, by transport and outcome (stored, refused, error).",
		}, []string{"transport", "outcome"}),
		snapshots: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "edgefleet", Subsystem: "hub", Name: "telemetry_snapshots_total",
			Help: "Telemetry snapshots received, by transport and result (stored, duplicate, invalid).",
		}, []string{"transport", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "edgefleet", Subsystem: "hub", Name: "telemetry_ingest_duration_seconds",
			Help:    "Time to deduplicate and store one telemetry report (including the commit).",
			Buckets: prometheus.ExponentialBuckets(1e-4, 2, 16),
		}, []string{"transport"}),
	}
}

func (m *ingestMetrics) observe(transport string, res IngestResult, err error, d time.Duration) {
	outcome := "stored"
	if err != nil {
		outcome = "error"
		if errors.Is(err, wire.ErrInvalid) {
			outcome = "refused"
		}
	}
	m.reports.WithLabelValues(transport, outcome).Inc()
	m.snapshots.WithLabelValues(transport, "stored").Add(float64(res.Stored))
	m.snapshots.WithLabelValues(transport, "duplicate").Add(float64(res.Duplicates))
	m.snapshots.WithLabelValues(transport, "invalid").Add(float64(res.Invalid))
	m.duration.WithLabelValues(transport).Observe(d.Seconds())
}

// Describe implements prometheus.Collector.
func (s *Store) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRequests, descErrors, descClientErrors, descRejected, descNonFinite,
		descFallbacks, descLatency, descProvider, descMVRequests, descMVErrors, descMVRejected, descMVNonFinite,
		descMVFallbacks, descMVLatency, descMVDevices, descDevProcCPU, descDevSysCPU, descDevRSS, descDevDiskFree,
		descDevGPUMem, descDevLast, descDevReporting, descDevDropped, descDevStored, descDevices, descOverflow} {
		ch <- d
	}
	s.ingestMetrics.reports.Describe(ch)
	s.ingestMetrics.snapshots.Describe(ch)
	s.ingestMetrics.duration.Describe(ch)
}

// Collect implements prometheus.Collector: the fleet series from the
// stored totals and the devices' latest snapshots.
func (s *Store) Collect(ch chan<- prometheus.Metric) {
	s.ingestMetrics.reports.Collect(ch)
	s.ingestMetrics.snapshots.Collect(ch)
	s.ingestMetrics.duration.Collect(ch)
	now := s.opts.Now()

	s.mu.RLock()
	defer s.mu.RUnlock()
	counter := func(d *prometheus.Desc, v uint64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), lv...)
	}
	gauge := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
	perSeries := func(t *Totals, lv ...string) {
		counter(descRequests, t.Requests, lv...)
		counter(descErrors, t.Errors, lv...)
		counter(descClientErrors, t.ClientErrors, lv...)
		counter(descRejected, t.Rejected, lv...)
		counter(descNonFinite, t.NonFinite, lv...)
		counter(descFallbacks, t.Fallbacks, lv...)
		ch <- prometheus.MustNewConstSummary(descLatency, t.Latency.Count, t.Latency.Sum, nil, lv...)
	}

	current := map[seriesKey]string{} // current versions → provider
	mvDevices := map[mvKey]map[string]int{}
	for _, d := range s.devices {
		if n := len(d.ring); n > 0 {
			for _, m := range d.ring[n-1].Models {
				current[seriesKey{d.id, m.Model, m.Version}] = m.Provider
				k := mvKey{m.Model, m.Version}
				if mvDevices[k] == nil {
					mvDevices[k] = map[string]int{}
				}
				mvDevices[k][m.Provider]++
			}
		}
	}

	overflow := map[mvKey]*Totals{}
	fleet := map[mvKey]*Totals{}
	for _, k := range s.order {
		t := s.totals[k]
		mk := mvKey{k.model, k.version}
		if fleet[mk] == nil {
			fleet[mk] = &Totals{}
		}
		fleet[mk].merge(t)
		if !s.labelled[k] {
			if overflow[mk] == nil {
				overflow[mk] = &Totals{}
			}
			overflow[mk].merge(t)
			continue
		}
		perSeries(t, k.device, k.model, k.version)
		if p, ok := current[k]; ok && p != "" {
			gauge(descProvider, 1, k.device, k.model, k.version, p)
		}
	}
	for k, t := range overflow {
		perSeries(t, OverflowDevice, k.model, k.version)
	}
	gauge(descOverflow, float64(len(s.order)-len(s.labelled)))
	for k, t := range fleet {
		counter(descMVRequests, t.Requests, k.model, k.version)
		counter(descMVErrors, t.Errors, k.model, k.version)
		counter(descMVRejected, t.Rejected, k.model, k.version)
		counter(descMVNonFinite, t.NonFinite, k.model, k.version)
		counter(descMVFallbacks, t.Fallbacks, k.model, k.version)
		count, sum, buckets := promBuckets(&t.Latency)
		ch <- prometheus.MustNewConstHistogram(descMVLatency, count, sum, buckets, k.model, k.version)
	}
	for k, byProvider := range mvDevices {
		for p, n := range byProvider {
			gauge(descMVDevices, float64(n), k.model, k.version, p)
		}
	}

	// Per-device machine series for the first MaxSeries devices by id.
	ids := make([]string, 0, len(s.devices))
	reporting := 0
	for id, d := range s.devices {
		ids = append(ids, id)
		if s.reportingLocked(d, now) {
			reporting++
		}
	}
	gauge(descDevices, float64(reporting), "reporting")
	gauge(descDevices, float64(len(s.devices)-reporting), "silent")
	sort.Strings(ids)
	if len(ids) > s.opts.MaxSeries {
		ids = ids[:s.opts.MaxSeries]
	}
	for _, id := range ids {
		d := s.devices[id]
		counter(descDevDropped, d.rec.dropped(), id)
		counter(descDevStored, d.rec.Stored, id)
		if !d.rec.LastReport.IsZero() {
			gauge(descDevLast, float64(d.rec.LastReport.UnixNano())/1e9, id)
		}
		rep := 0.0
		if s.reportingLocked(d, now) {
			rep = 1
		}
		gauge(descDevReporting, rep, id)
		if n := len(d.ring); n > 0 {
			b := d.ring[n-1].Box
			gauge(descDevProcCPU, b.ProcessCPU, id)
			gauge(descDevSysCPU, b.SystemCPU, id)
			gauge(descDevRSS, float64(b.RSSBytes), id)
			gauge(descDevDiskFree, float64(b.DiskFreeBytes), id)
			for _, g := range b.GPUs {
				gauge(descDevGPUMem, float64(g.MemUsedBytes), id, strconv.Itoa(g.Index))
			}
		}
	}
}

// promBuckets converts a sparse histogram into Prometheus's cumulative
// buckets.
func promBuckets(h *wire.Histogram) (count uint64, sum float64, buckets map[float64]uint64) {
	buckets = make(map[float64]uint64, len(h.Buckets))
	var cum uint64
	for _, b := range h.Buckets {
		cum += b.N
		buckets[b.Le] = cum
	}
	return h.Count, h.Sum, buckets
}

var _ prometheus.Collector = (*Store)(nil)
