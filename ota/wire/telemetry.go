package wire

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// Telemetry reports.
//
// An agent samples its metrics every interval into a Snapshot and appends it
// to a durable queue, numbering snapshots 1, 2, 3, … within a Stream (the
// queue's identity; a recreated queue starts a new stream). It ships the
// oldest queued snapshots as a TelemetryReport, either as an MQTT message on
// its telemetry topic (QoS 1) or as one QUIC stream (ALPN TelemetryALPN),
// and deletes them only when the hub answers with a TelemetryReportAck
// naming the highest sequence number it has stored. The hub keeps a
// high-water mark per (device, stream) and ignores snapshots at or below it,
// so a report replayed after a crash, a lost acknowledgement or a broker
// redelivery is counted once.

// TelemetryALPN is the TLS application protocol of telemetry over QUIC.
// A client opens one bidirectional stream per report, writes the JSON
// TelemetryReport and closes its send side; the hub answers on the same
// stream with a JSON TelemetryReportAck and closes it.
const TelemetryALPN = "edgefleet-telemetry/1"

// MaxSnapshotBytes bounds one encoded Snapshot.
const MaxSnapshotBytes = 64 << 10

// MaxSnapshotModels bounds the model versions in one Snapshot.
const MaxSnapshotModels = 256

// TelemetryReport is a batch of consecutive snapshots from one device's
// queue, oldest first.
type TelemetryReport struct {
	DeviceID string `json:"device_id"`
	// Stream identifies the device's queue; sequence numbers count
	// within it.
	Stream string `json:"stream"`
	// Snapshots are in increasing Seq order; gaps are snapshots the
	// device dropped (see Dropped).
	Snapshots []Snapshot `json:"snapshots"`
	// Dropped counts the snapshots the device discarded unsent since the
	// stream began (its queue's byte budget was exceeded). It is
	// cumulative, so a lost report loses no count.
	Dropped uint64 `json:"dropped,omitempty"`
}

// TelemetryReportAck answers a TelemetryReport on the device's
// telemetry/ack topic or on the report's QUIC stream.
type TelemetryReportAck struct {
	// Stream is the report's stream.
	Stream string `json:"stream"`
	// Seq is the highest sequence number of the stream the hub has
	// stored (also when it stored it earlier): the device may delete
	// every snapshot up to and including it.
	Seq uint64 `json:"seq"`
	// Rejected counts snapshots of the report the hub discarded as
	// invalid (they are acknowledged, so they do not block the queue).
	Rejected uint64 `json:"rejected,omitempty"`
	// Error says why the hub refused the whole report; the device keeps
	// the snapshots above Seq and retries later.
	Error string `json:"error,omitempty"`
}

// Snapshot is one sampling interval of a device: counters are deltas over
// the interval that ends at Time, gauges are values at Time.
type Snapshot struct {
	// Seq numbers the snapshot within its stream, from 1.
	Seq uint64 `json:"seq"`
	// Time is when the interval ended (the device's clock, UTC).
	Time time.Time `json:"time"`
	// IntervalMs is the length of the interval the deltas cover.
	IntervalMs int64 `json:"interval_ms"`
	// Box is the machine's state.
	Box BoxStats `json:"box"`
	// Models holds one entry per model version that was loaded or
	// served requests during the interval.
	Models []ModelStats `json:"models,omitempty"`
}

// BoxStats describes the device's machine at the end of an interval.
type BoxStats struct {
	// ProcessCPU is the agent process's CPU use over the interval in
	// cores (1 = one core fully busy).
	ProcessCPU float64 `json:"process_cpu"`
	// SystemCPU is the busy fraction of all the machine's cores over the
	// interval (0 to 1).
	SystemCPU float64 `json:"system_cpu"`
	// Cores is the number of logical CPUs.
	Cores int `json:"cores,omitempty"`
	// RSSBytes is the agent process's resident memory.
	RSSBytes uint64 `json:"rss_bytes"`
	// MemAvailableBytes and MemTotalBytes describe the machine's memory
	// (0 when unknown).
	MemAvailableBytes uint64 `json:"mem_available_bytes,omitempty"`
	MemTotalBytes     uint64 `json:"mem_total_bytes,omitempty"`
	// DiskFreeBytes and DiskTotalBytes describe the file system of the
	// agent's data folder.
	DiskFreeBytes  uint64 `json:"disk_free_bytes"`
	DiskTotalBytes uint64 `json:"disk_total_bytes,omitempty"`
	// GPUs is empty on machines without an NVIDIA GPU.
	GPUs []GPUStats `json:"gpus,omitempty"`
}

// GPUStats describes one GPU.
type GPUStats struct {
	Index         int    `json:"index"`
	Name          string `json:"name,omitempty"`
	MemUsedBytes  uint64 `json:"mem_used_bytes"`
	MemTotalBytes uint64 `json:"mem_total_bytes"`
	// Utilization is the fraction of time a kernel ran (0 to 1).
	Utilization float64 `json:"utilization"`
}

// ModelStats is one model version's activity over an interval.
type ModelStats struct {
	Model   string `json:"model"`
	Version string `json:"version"`
	// Provider is the execution provider the version runs on ("" when
	// it is not loaded).
	Provider string `json:"provider,omitempty"`
	// Requests counts finished inference requests of every outcome.
	Requests uint64 `json:"requests"`
	// Errors counts server-side failures.
	Errors uint64 `json:"errors,omitempty"`
	// ClientErrors counts requests refused as malformed or for unknown
	// versions.
	ClientErrors uint64 `json:"client_errors,omitempty"`
	// Rejected counts requests refused because the queue was full.
	Rejected uint64 `json:"rejected,omitempty"`
	// NonFinite counts responses with NaN or Inf outputs.
	NonFinite uint64 `json:"nonfinite,omitempty"`
	// Fallbacks counts runs that fell back from the requested (GPU)
	// provider to the CPU.
	Fallbacks uint64 `json:"fallbacks,omitempty"`
	// Latency is the end-to-end request latency in seconds.
	Latency Histogram `json:"latency"`
	// BatchSize is the number of rows per batch run, when the model is
	// batched.
	BatchSize *Histogram `json:"batch_size,omitempty"`
}

// Histogram is a delta histogram in sparse form: the number of
// observations per bucket, only for the buckets that have any and the
// (empty) bucket just below each of those, so that every non-empty
// bucket's lower bound is the Le of the entry before it (0 for the first).
type Histogram struct {
	// Count and Sum are the number and the sum of the observations.
	Count uint64  `json:"count"`
	Sum   float64 `json:"sum"`
	// Buckets are finite buckets in increasing Le order; each counts the
	// observations v with previous bound < v <= Le.
	Buckets []Bucket `json:"buckets,omitempty"`
	// Inf counts observations above the largest bound.
	Inf uint64 `json:"inf,omitempty"`
}

// Bucket is one histogram bucket.
type Bucket struct {
	// Le is the bucket's upper bound.
	Le float64 `json:"le"`
	// N is the number of observations in the bucket (not cumulative).
	N uint64 `json:"n"`
}

// Validate checks a report: device id, stream, snapshot order and
// contents. The error wraps ErrInvalid.
func (r TelemetryReport) Validate() error {
	if err := ValidateDeviceID(r.DeviceID); err != nil {
		return err
	}
	if err := ValidateStream(r.Stream); err != nil {
		return err
	}
	var prev uint64
	for i := range r.Snapshots {
		s := &r.Snapshots[i]
		if s.Seq <= prev {
			return fmt.Errorf("snapshot %d: seq %d after %d: want increasing sequence numbers: %w", i, s.Seq, prev, ErrInvalid)
		}
		prev = s.Seq
		if err := s.Validate(); err != nil {
			return fmt.Errorf("snapshot seq %d: %w", s.Seq, err)
		}
	}
	return nil
}

// ValidateStream checks a stream id: 1 to 64 letters, digits, '-' and '_'.
// The error wraps ErrInvalid.
func ValidateStream(s string) error {
	if s == "" || len(s) > 64 || strings.Trim(s, "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_") != "" {
		return fmt.Errorf("telemetry stream %q: want 1 to 64 letters, digits, '-' or '_': %w", s, ErrInvalid)
	}
	return nil
}

// Validate checks a snapshot's numbers and names. The error wraps
// ErrInvalid.
func (s *Snapshot) Validate() error {
	if s.Seq == 0 {
		return fmt.Errorf("seq 0: sequence numbers start at 1: %w", ErrInvalid)
	}
	if s.Time.IsZero() {
		return fmt.Errorf("time missing: %w", ErrInvalid)
	}
	if s.IntervalMs < 0 {
		return fmt.Errorf("interval %d ms: %w", s.IntervalMs, ErrInvalid)
	}
	if len(s.Models) > MaxSnapshotModels {
		return fmt.Errorf("%d model versions: at most %d: %w", len(s.Models), MaxSnapshotModels, ErrInvalid)
	}
	if !finite(s.Box.ProcessCPU, s.Box.SystemCPU) || s.Box.ProcessCPU < 0 || s.Box.SystemCPU < 0 {
		return fmt.Errorf("box CPU %v/%v: want finite, non-negative numbers: %w", s.Box.ProcessCPU, s.Box.SystemCPU, ErrInvalid)
	}
	for _, g := range s.Box.GPUs {
		if !finite(g.Utilization) {
			return fmt.Errorf("GPU %d utilization: not finite: %w", g.Index, ErrInvalid)
		}
	}
	for i := range s.Models {
		m := &s.Models[i]
		if err := ValidateModelName(m.Model); err != nil {
			return err
		}
		if len(m.Version) > 128 || strings.ContainsAny(m.Version, "\x00\r\n") {
			return fmt.Errorf("model %q version %q: want at most 128 characters, no control characters: %w", m.Model, m.Version, ErrInvalid)
		}
		if len(m.Provider) > 64 {
			return fmt.Errorf("model %q provider %q: too long: %w", m.Model, m.Provider, ErrInvalid)
		}
		if err := m.Latency.Validate(); err != nil {
			return fmt.Errorf("model %q version %q latency: %w", m.Model, m.Version, err)
		}
		if m.BatchSize != nil {
			if err := m.BatchSize.Validate(); err != nil {
				return fmt.Errorf("model %q version %q batch size: %w", m.Model, m.Version, err)
			}
		}
	}
	return nil
}

// Validate checks that bounds are finite and increasing and that the
// buckets add up to Count. The error wraps ErrInvalid.
func (h *Histogram) Validate() error {
	if !finite(h.Sum) {
		return fmt.Errorf("sum not finite: %w", ErrInvalid)
	}
	total := h.Inf
	prev := math.Inf(-1)
	for _, b := range h.Buckets {
		if !finite(b.Le) || b.Le <= prev {
			return fmt.Errorf("bucket bound %v after %v: want finite, increasing bounds: %w", b.Le, prev, ErrInvalid)
		}
		prev = b.Le
		total += b.N
	}
	if total != h.Count {
		return fmt.Errorf("buckets hold %d observations, count says %d: %w", total, h.Count, ErrInvalid)
	}
	return nil
}

func finite(vs ...float64) bool {
	for _, v := range vs {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return false
		}
	}
	return true
}

// Add merges o into h: counts of equal bounds add up, other bounds are
// inserted in order.
func (h *Histogram) Add(o Histogram) {
	h.Count += o.Count
	h.Sum += o.Sum
	h.Inf += o.Inf
	if len(o.Buckets) == 0 {
		return
	}
	if len(h.Buckets) == 0 {
		h.Buckets = append([]Bucket(nil), o.Buckets...)
		return
	}
	out := make([]Bucket, 0, len(h.Buckets)+len(o.Buckets))
	i, j := 0, 0
	for i < len(h.Buckets) || j < len(o.Buckets) {
		switch {
		case j == len(o.Buckets) || (i < len(h.Buckets) && h.Buckets[i].Le < o.Buckets[j].Le):
			out = append(out, h.Buckets[i])
			i++
		case i == len(h.Buckets) || o.Buckets[j].Le < h.Buckets[i].Le:
			out = append(out, o.Buckets[j])
			j++
		default:
			out = append(out, Bucket{Le: h.Buckets[i].Le, N: h.Buckets[i].N + o.Buckets[j].N})
			i++
			j++
		}
	}
	h.Buckets = out
}

// Quantile estimates the q-quantile (0 <= q <= 1) by linear interpolation
// within the bucket that holds it, as Prometheus's histogram_quantile
// does; observations above the largest bound count as that bound. It is
// 0 for an empty histogram.
func (h *Histogram) Quantile(q float64) float64 {
	if h.Count == 0 || len(h.Buckets) == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := q * float64(h.Count)
	var cum uint64
	lower := 0.0
	for _, b := range h.Buckets {
		if b.N > 0 && float64(cum+b.N) >= rank {
			frac := (rank - float64(cum)) / float64(b.N)
			return lower + (b.Le-lower)*min(max(frac, 0), 1)
		}
		cum += b.N
		lower = b.Le
	}
	return h.Buckets[len(h.Buckets)-1].Le
}

// Mean is Sum / Count, 0 for an empty histogram.
func (h *Histogram) Mean() float64 {
	if h.Count == 0 {
		return 0
	}
	return h.Sum / float64(h.Count)
}
