package telemetry

import (
	"math"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/edgefleet/edgefleet/agent/metrics"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// The agent's metric families the sampler reads (see agent/metrics).
const (
	famRequests  = "edgefleet_agent_requests_total"
	famLatency   = "edgefleet_agent_request_duration_seconds"
	famProvider  = "edgefleet_agent_model_execution_provider"
	famFallbacks = "edgefleet_agent_provider_fallbacks_total"
	famNonFinite = "edgefleet_agent_nonfinite_outputs_total"
	famBatch     = "edgefleet_agent_batch_size_rows"
)

// mv names a model version.
type mv struct{ model, version string }

// Sampler turns the agent's cumulative Prometheus metrics into per-interval
// snapshots: it remembers the previous values of every series and reports
// the differences. It is not safe for concurrent use.
type Sampler struct {
	gather prometheus.Gatherer
	box    *boxSampler
	// prev holds the cumulative value of each series at the previous
	// sample, keyed by family and label values.
	prev map[string]float64
	// prevHist holds each histogram series' cumulative bucket counts and
	// sum.
	prevHist map[string]histState
	last     time.Time
}

type histState struct {
	bounds []float64
	cum    []uint64 // cumulative counts per bound, then the total
	sum    float64
}

// NewSampler samples the metrics gathered from g and the machine; dataDir
// is the folder whose file system's free space is reported.
func NewSampler(g prometheus.Gatherer, dataDir string) *Sampler {
	return &Sampler{gather: g, box: newBoxSampler(dataDir), prev: map[string]float64{}, prevHist: map[string]histState{}}
}

// Sample takes a snapshot of the interval since the previous call (since
// the counters started, for the first). The snapshot has no Seq yet.
func (s *Sampler) Sample(now time.Time) (wire.Snapshot, error) {
	snap := wire.Snapshot{Time: now.UTC()}
	if !s.last.IsZero() {
		snap.IntervalMs = now.Sub(s.last).Milliseconds()
	}
	s.last = now
	snap.Box = s.box.sample(now)
	if s.gather == nil {
		return snap, nil
	}
	fams, err := s.gather.Gather()
	if err != nil && len(fams) == 0 {
		return snap, err
	}
	models := map[mv]*wire.ModelStats{}
	get := func(model, version string) *wire.ModelStats {
		k := mv{model, version}
		m := models[k]
		if m == nil {
			m = &wire.ModelStats{Model: model, Version: version}
			models[k] = m
		}
		return m
	}
	for _, f := range fams {
		switch f.GetName() {
		case famRequests:
			for _, m := range f.GetMetric() {
				l := labels(m)
				if l["model"] == "" {
					continue // requests for unknown models carry no name
				}
				d := s.counterDelta(famRequests, m)
				ms := get(l["model"], l["version"])
				ms.Requests += d
				switch l["outcome"] {
				case metrics.OutcomeServerError:
					ms.Errors += d
				case metrics.OutcomeClientError, metrics.OutcomeNotFound:
					ms.ClientErrors += d
				case metrics.OutcomeOverloaded:
					ms.Rejected += d
				}
			}
		case famLatency:
			for _, m := range f.GetMetric() {
				l := labels(m)
				if l["model"] == "" {
					continue
				}
				h := s.histDelta(famLatency, m)
				get(l["model"], l["version"]).Latency.Add(h)
			}
		case famBatch:
			for _, m := range f.GetMetric() {
				l := labels(m)
				h := s.histDelta(famBatch, m)
				if h.Count == 0 {
					continue
				}
				ms := get(l["model"], l["version"])
				if ms.BatchSize == nil {
					ms.BatchSize = &wire.Histogram{}
				}
				ms.BatchSize.Add(h)
			}
		case famProvider:
			for _, m := range f.GetMetric() {
				if m.GetGauge().GetValue() != 1 {
					continue
				}
				l := labels(m)
				get(l["model"], l["version"]).Provider = l["provider"]
			}
		case famFallbacks:
			for _, m := range f.GetMetric() {
				l := labels(m)
				get(l["model"], l["version"]).Fallbacks += s.counterDelta(famFallbacks, m)
			}
		case famNonFinite:
			for _, m := range f.GetMetric() {
				l := labels(m)
				get(l["model"], l["version"]).NonFinite += s.counterDelta(famNonFinite, m)
			}
		}
	}
	keys := make([]mv, 0, len(models))
	for k := range models {
		if wire.ValidateModelName(k.model) == nil {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].model != keys[j].model {
			return keys[i].model < keys[j].model
		}
		return keys[i].version < keys[j].version
	})
	if len(keys) > wire.MaxSnapshotModels {
		keys = keys[:wire.MaxSnapshotModels]
	}
	for _, k := range keys {
		m := models[k]
		// A version neither loaded nor busy is old news.
		if m.Provider == "" && m.Requests == 0 && m.Fallbacks == 0 && m.NonFinite == 0 && m.BatchSize == nil {
			continue
		}
		snap.Models = append(snap.Models, *m)
	}
	return snap, nil
}

// Box returns the latest machine sample without taking a new one.
func (s *Sampler) Box() wire.BoxStats { return s.box.latest() }

// Close stops the GPU watcher, if any.
func (s *Sampler) Close() { s.box.close() }

func labels(m *dto.Metric) map[string]string {
	out := make(map[string]string, len(m.GetLabel()))
	for _, lp := range m.GetLabel() {
		out[lp.GetName()] = lp.GetValue()
	}
	return out
}

func seriesKey(fam string, m *dto.Metric) string {
	k := fam
	for _, lp := range m.GetLabel() {
		k += "\x00" + lp.GetName() + "=" + lp.GetValue()
	}
	return k
}

// counterDelta returns the increase of a counter since the previous
// sample; a counter that went down was reset, and its whole value is new.
func (s *Sampler) counterDelta(fam string, m *dto.Metric) uint64 {
	k := seriesKey(fam, m)
	cur := m.GetCounter().GetValue()
	prev, ok := s.prev[k]
	s.prev[k] = cur
	if !ok || cur < prev {
		prev = 0
	}
	return uint64(math.Round(cur - prev))
}

// histDelta returns the observations of a histogram since the previous
// sample in sparse wire form.
func (s *Sampler) histDelta(fam string, m *dto.Metric) wire.Histogram {
	k := seriesKey(fam, m)
	h := m.GetHistogram()
	cur := histState{sum: h.GetSampleSum()}
	for _, b := range h.GetBucket() {
		if math.IsInf(b.GetUpperBound(), +1) {
			continue
		}
		cur.bounds = append(cur.bounds, b.GetUpperBound())
		cur.cum = append(cur.cum, b.GetCumulativeCount())
	}
	cur.cum = append(cur.cum, h.GetSampleCount())
	prev, ok := s.prevHist[k]
	s.prevHist[k] = cur
	if !ok || len(prev.cum) != len(cur.cum) || prev.cum[len(prev.cum)-1] > cur.cum[len(cur.cum)-1] {
		prev = histState{cum: make([]uint64, len(cur.cum))}
	}
	// Per-bucket counts of the interval.
	n := make([]uint64, len(cur.cum))
	var below uint64
	for i := range cur.cum {
		d := cur.cum[i] - prev.cum[i]
		n[i] = d - below
		below = d
	}
	out := wire.Histogram{Count: cur.cum[len(cur.cum)-1] - prev.cum[len(prev.cum)-1], Sum: cur.sum - prev.sum, Inf: n[len(n)-1]}
	if out.Count == 0 {
		return wire.Histogram{}
	}
	for i, b := range cur.bounds {
		// Non-empty buckets and the empty one below each, so that
		// quantiles know every bucket's lower bound.
		if n[i] > 0 || (i+1 < len(cur.bounds) && n[i+1] > 0) || (i+1 == len(cur.bounds) && out.Inf > 0) {
			out.Buckets = append(out.Buckets, wire.Bucket{Le: b, N: n[i]})
		}
	}
	if out.Sum < 0 || math.IsNaN(out.Sum) {
		out.Sum = 0
	}
	return out
}
