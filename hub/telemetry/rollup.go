package telemetry

import (
	"time"

	"github.com/edgefleet/edgefleet/ota/wire"
)

// rollup is a model version's fleet-wide numbers per Step over the last
// Span, in a ring of slots indexed by time.
type rollup struct {
	slots []slot
}

type slot struct {
	idx int64 // unix time / step; 0 when unused
	sums
}

// sums are numbers summed over device snapshots.
type sums struct {
	Requests, Errors, ClientErrors, Rejected, NonFinite, Fallbacks uint64
	Latency                                                        wire.Histogram
	// Reports counts the device snapshots that named the version.
	Reports int
}

func (a *sums) add(m *wire.ModelStats) {
	a.Requests += m.Requests
	a.Errors += m.Errors
	a.ClientErrors += m.ClientErrors
	a.Rejected += m.Rejected
	a.NonFinite += m.NonFinite
	a.Fallbacks += m.Fallbacks
	a.Latency.Add(m.Latency)
	a.Reports++
}

func (a *sums) merge(b *sums) {
	a.Requests += b.Requests
	a.Errors += b.Errors
	a.ClientErrors += b.ClientErrors
	a.Rejected += b.Rejected
	a.NonFinite += b.NonFinite
	a.Fallbacks += b.Fallbacks
	a.Latency.Add(b.Latency)
	a.Reports += b.Reports
}

// addRollupLocked adds a snapshot's model numbers to the roll-ups, at the
// snapshot's time (clamped to now for clocks ahead of the hub's); numbers
// older than the span are left out.
func (s *Store) addRollupLocked(sn *wire.Snapshot, now time.Time) {
	if len(sn.Models) == 0 {
		return
	}
	at := sn.Time
	if at.After(now) {
		at = now
	}
	if now.Sub(at) >= s.opts.Span {
		return
	}
	step := int64(s.opts.Step)
	idx := at.UnixNano() / step
	n := int(s.opts.Span / s.opts.Step)
	for i := range sn.Models {
		m := &sn.Models[i]
		k := mvKey{m.Model, m.Version}
		r := s.rollups[k]
		if r == nil {
			r = &rollup{slots: make([]slot, n)}
			s.rollups[k] = r
		}
		sl := &r.slots[idx%int64(n)]
		if sl.idx != idx {
			if sl.idx > idx {
				continue // the slot holds newer numbers already
			}
			*sl = slot{idx: idx}
		}
		sl.add(m)
	}
}

// Point is a model version's fleet-wide numbers over one step.
type Point struct {
	// Time is the start of the step.
	Time         time.Time `json:"time"`
	Requests     uint64    `json:"requests"`
	Errors       uint64    `json:"errors"`
	ClientErrors uint64    `json:"client_errors"`
	Rejected     uint64    `json:"rejected"`
	NonFinite    uint64    `json:"nonfinite"`
	Fallbacks    uint64    `json:"fallbacks"`
	// Reports counts the device snapshots in the step that named the
	// version (about the number of devices serving it when the devices'
	// interval equals the step).
	Reports int `json:"reports"`
	// RPS is Requests per second of the step.
	RPS float64 `json:"rps"`
	// ErrorRate is Errors / Requests (0 without requests).
	ErrorRate float64 `json:"error_rate"`
	// P50Ms, P99Ms and MeanMs summarise the latency in milliseconds.
	P50Ms  float64 `json:"p50_ms"`
	P99Ms  float64 `json:"p99_ms"`
	MeanMs float64 `json:"mean_ms"`
}

func pointOf(t time.Time, d time.Duration, a *sums) Point {
	p := Point{Time: t.UTC(), Requests: a.Requests, Errors: a.Errors, ClientErrors: a.ClientErrors,
		Rejected: a.Rejected, NonFinite: a.NonFinite, Fallbacks: a.Fallbacks, Reports: a.Reports}
	if d > 0 {
		p.RPS = float64(a.Requests) / d.Seconds()
	}
	if a.Requests > 0 {
		p.ErrorRate = float64(a.Errors) / float64(a.Requests)
	}
	p.P50Ms = a.Latency.Quantile(0.5) * 1000
	p.P99Ms = a.Latency.Quantile(0.99) * 1000
	p.MeanMs = a.Latency.Mean() * 1000
	return p
}

// Series returns a model version's fleet-wide numbers for every step from
// from to to (both clipped to the roll-up span ending now), oldest first;
// steps without reports are zero. A zero to means now; a zero from means
// the whole span.
func (s *Store) Series(model, version string, from, to time.Time) []Point {
	now := s.opts.Now()
	step := s.opts.Step
	if to.IsZero() || to.After(now) {
		to = now
	}
	if earliest := now.Add(-s.opts.Span + step); from.IsZero() || from.Before(earliest) {
		from = earliest
	}
	if from.After(to) {
		return nil
	}
	first, last := from.UnixNano()/int64(step), to.UnixNano()/int64(step)
	s.mu.RLock()
	defer s.mu.RUnlock()
	r := s.rollups[mvKey{model, version}]
	out := make([]Point, 0, last-first+1)
	for idx := first; idx <= last; idx++ {
		var a sums
		if r != nil {
			if sl := &r.slots[idx%int64(len(r.slots))]; sl.idx == idx {
				a = sl.sums
			}
		}
		out = append(out, pointOf(time.Unix(0, idx*int64(step)), step, &a))
	}
	return out
}

// recentLocked sums a model version's steps over the last d.
func (s *Store) recentLocked(k mvKey, now time.Time, d time.Duration) sums {
	var a sums
	r := s.rollups[k]
	if r == nil {
		return a
	}
	step := int64(s.opts.Step)
	first, last := now.Add(-d).UnixNano()/step+1, now.UnixNano()/step
	for idx := first; idx <= last; idx++ {
		if sl := &r.slots[idx%int64(len(r.slots))]; sl.idx == idx {
			a.merge(&sl.sums)
		}
	}
	return a
}
