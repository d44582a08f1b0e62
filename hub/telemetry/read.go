package telemetry

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/ota/wire"
)

// ModelVersion names a model version.
type ModelVersion struct {
	Model   string `json:"model"`
	Version string `json:"version"`
}

// StreamInfo is a device stream's state.
type StreamInfo struct {
	ID string `json:"id"`
	// Seq is the highest sequence number stored (the high-water mark).
	Seq uint64 `json:"seq"`
	// Dropped is what the device reported discarding in this stream.
	Dropped uint64    `json:"dropped"`
	Updated time.Time `json:"updated"`
}

// DeviceModel is a model version as one device reported it.
type DeviceModel struct {
	Model    string `json:"model"`
	Version  string `json:"version"`
	Provider string `json:"provider,omitempty"`
	// Current is true when the device's latest snapshot names the
	// version.
	Current bool `json:"current"`
	// Totals are the cumulative numbers since the hub first heard of it.
	Totals Totals `json:"totals"`
}

// DeviceSummary is a device's telemetry at a glance.
type DeviceSummary struct {
	ID string `json:"id"`
	// LastReport is when the hub last stored a report (hub clock).
	LastReport time.Time `json:"last_report"`
	// Reporting is true when the last report is younger than three of
	// the device's intervals.
	Reporting bool `json:"reporting"`
	// Last is the newest snapshot, nil before the first.
	Last       *Entry       `json:"last,omitempty"`
	Streams    []StreamInfo `json:"streams"`
	Stored     uint64       `json:"stored"`
	Duplicates uint64       `json:"duplicates"`
	Invalid    uint64       `json:"invalid"`
	// Dropped sums what the device reported discarding.
	Dropped uint64        `json:"dropped"`
	Models  []DeviceModel `json:"models,omitempty"`
}

// VersionSummary is a model version across the fleet.
type VersionSummary struct {
	Model   string `json:"model"`
	Version string `json:"version"`
	// Devices counts the devices whose latest snapshot names the
	// version; Providers splits them by execution provider.
	Devices   int            `json:"devices"`
	Providers map[string]int `json:"providers,omitempty"`
	// Totals are the fleet's cumulative numbers.
	Totals Totals `json:"totals"`
	// Recent summarises the last Overview window (RPS, error rate,
	// latency quantiles; Time is the window's start).
	Recent Point `json:"recent"`
}

// Overview is the fleet's telemetry at a glance.
type Overview struct {
	Time time.Time `json:"time"`
	// Devices counts devices that ever reported telemetry; Reporting
	// those whose last report is recent (see DeviceSummary.Reporting).
	Devices   int `json:"devices"`
	Reporting int `json:"reporting"`
	// Stored, Duplicates, Invalid and Dropped sum the devices' counters.
	Stored     uint64 `json:"stored"`
	Duplicates uint64 `json:"duplicates"`
	Invalid    uint64 `json:"invalid"`
	Dropped    uint64 `json:"dropped"`
	// Providers counts devices by the execution providers their current
	// model versions run on (a device with two providers counts twice).
	Providers map[string]int   `json:"providers,omitempty"`
	Versions  []VersionSummary `json:"versions"`
}

// Update tells a watcher that a device's report was stored.
type Update struct {
	Device string `json:"device"`
	// Seq is the stream's new high-water mark.
	Seq uint64 `json:"seq"`
	// Snapshots is how many were stored; Time the newest one's time.
	Snapshots int       `json:"snapshots"`
	Time      time.Time `json:"time"`
}

// reportingLocked tells whether a device's last report is recent.
func (s *Store) reportingLocked(d *device, now time.Time) bool {
	if d.rec.LastReport.IsZero() {
		return false
	}
	iv := s.opts.Step
	if n := len(d.ring); n > 0 && d.ring[n-1].IntervalMs > 0 {
		iv = time.Duration(d.ring[n-1].IntervalMs) * time.Millisecond
	}
	return now.Sub(d.rec.LastReport) <= 3*iv
}

// Overview summarises the fleet; recent is the window of each version's
// Recent point (5 minutes when 0).
func (s *Store) Overview(recent time.Duration) Overview {
	if recent <= 0 {
		recent = 5 * time.Minute
	}
	now := s.opts.Now()
	s.mu.RLock()
	defer s.mu.RUnlock()
	o := Overview{Time: now.UTC(), Devices: len(s.devices), Providers: map[string]int{}}
	vs := map[mvKey]*VersionSummary{}
	get := func(k mvKey) *VersionSummary {
		v := vs[k]
		if v == nil {
			v = &VersionSummary{Model: k.model, Version: k.version, Providers: map[string]int{}}
			vs[k] = v
		}
		return v
	}
	for _, d := range s.devices {
		if s.reportingLocked(d, now) {
			o.Reporting++
		}
		o.Stored += d.rec.Stored
		o.Duplicates += d.rec.Duplicates
		o.Invalid += d.rec.Invalid
		o.Dropped += d.rec.dropped()
		if n := len(d.ring); n > 0 {
			seen := map[string]bool{}
			for _, m := range d.ring[n-1].Models {
				v := get(mvKey{m.Model, m.Version})
				v.Devices++
				if m.Provider != "" {
					v.Providers[m.Provider]++
					if !seen[m.Provider] {
						seen[m.Provider] = true
						o.Providers[m.Provider]++
					}
				}
			}
		}
	}
	for k, t := range s.totals {
		get(mvKey{k.model, k.version}).Totals.merge(t)
	}
	for k, v := range vs {
		a := s.recentLocked(k, now, recent)
		v.Recent = pointOf(now.Add(-recent), recent, &a)
		o.Versions = append(o.Versions, *v)
	}
	sort.Slice(o.Versions, func(i, j int) bool {
		a, b := o.Versions[i], o.Versions[j]
		if a.Model != b.Model {
			return a.Model < b.Model
		}
		return a.Version < b.Version
	})
	return o
}

func (s *Store) summaryLocked(d *device, now time.Time) DeviceSummary {
	sum := DeviceSummary{ID: d.id, LastReport: d.rec.LastReport, Reporting: s.reportingLocked(d, now),
		Stored: d.rec.Stored, Duplicates: d.rec.Duplicates, Invalid: d.rec.Invalid, Dropped: d.rec.dropped()}
	for _, st := range d.rec.Streams {
		sum.Streams = append(sum.Streams, StreamInfo{ID: st.ID, Seq: st.HWM, Dropped: st.Dropped, Updated: st.Updated})
	}
	if n := len(d.ring); n > 0 {
		last := d.ring[n-1]
		sum.Last = &last
	}
	return sum
}

// Devices summarises every device that reported telemetry, by id, without
// their models (see Device).
func (s *Store) Devices() []DeviceSummary {
	now := s.opts.Now()
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]DeviceSummary, 0, len(s.devices))
	for _, d := range s.devices {
		out = append(out, s.summaryLocked(d, now))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Device summarises one device with its model versions; ok is false when
// it never reported.
func (s *Store) Device(id string) (DeviceSummary, bool) {
	now := s.opts.Now()
	s.mu.RLock()
	defer s.mu.RUnlock()
	d := s.devices[id]
	if d == nil {
		return DeviceSummary{}, false
	}
	sum := s.summaryLocked(d, now)
	current := map[mvKey]bool{}
	if sum.Last != nil {
		for _, m := range sum.Last.Models {
			current[mvKey{m.Model, m.Version}] = true
		}
	}
	for k, t := range s.totals {
		if k.device != id {
			continue
		}
		sum.Models = append(sum.Models, DeviceModel{Model: k.model, Version: k.version, Provider: t.Provider,
			Current: current[mvKey{k.model, k.version}], Totals: *t})
	}
	sort.Slice(sum.Models, func(i, j int) bool {
		a, b := sum.Models[i], sum.Models[j]
		if a.Model != b.Model {
			return a.Model < b.Model
		}
		return a.Version < b.Version
	})
	return sum, true
}

// Window returns a device's newest snapshots, oldest first: at most limit
// of them (all that are kept when limit <= 0), none older than since
// (device clock; zero for no bound). Short windows come from memory,
// longer ones from disk. A device that never reported has none.
func (s *Store) Window(id string, since time.Time, limit int) ([]Entry, error) {
	if limit <= 0 || limit > s.opts.Window {
		limit = s.opts.Window
	}
	s.mu.RLock()
	d := s.devices[id]
	var ring []Entry
	n := uint64(0)
	if d != nil {
		ring = d.ring
		n = d.rec.N
	}
	s.mu.RUnlock()
	if d == nil {
		return nil, nil
	}
	// The ring holds everything asked for when it reaches back far
	// enough or holds every entry there is.
	if len(ring) >= limit || uint64(len(ring)) >= n || (len(ring) > 0 && !ring[0].Time.After(since) && !since.IsZero()) {
		out := make([]Entry, 0, min(limit, len(ring)))
		for i := len(ring) - 1; i >= 0 && len(out) < limit; i-- {
			if ring[i].Time.Before(since) {
				break
			}
			out = append(out, ring[i])
		}
		reverse(out)
		return out, nil
	}
	var out []Entry
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketWindow).Bucket([]byte(id))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Last(); k != nil && len(out) < limit; k, v = c.Prev() {
			var e Entry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("telemetry: window of %s: %w", id, err)
			}
			if e.Time.Before(since) {
				break
			}
			out = append(out, e)
		}
		return nil
	})
	reverse(out)
	return out, err
}

func reverse[T any](s []T) {
	for i, j := 0, len(s)-1; i < j; i, j = i+1, j-1 {
		s[i], s[j] = s[j], s[i]
	}
}

// ModelVersions lists the model versions with roll-up or total numbers.
func (s *Store) ModelVersions() []ModelVersion {
	s.mu.RLock()
	seen := map[mvKey]bool{}
	for k := range s.totals {
		seen[mvKey{k.model, k.version}] = true
	}
	for k := range s.rollups {
		seen[k] = true
	}
	s.mu.RUnlock()
	out := make([]ModelVersion, 0, len(seen))
	for k := range seen {
		out = append(out, ModelVersion{Model: k.model, Version: k.version})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Model != out[j].Model {
			return out[i].Model < out[j].Model
		}
		return out[i].Version < out[j].Version
	})
	return out
}

// Totals returns a model version's cumulative numbers on a device.
func (s *Store) Totals(device, model, version string) (Totals, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t, ok := s.totals[seriesKey{device, model, version}]
	if !ok {
		return Totals{}, false
	}
	return *t, true
}

// ModelHealth is a model version's health on a device since the hub first
// heard of it (cumulative; p99 from the latency histogram); ok is false
// when the device never reported the version. Rollout gates compare it
// across versions.
func (s *Store) ModelHealth(device, model, version string) (wire.Health, bool) {
	t, ok := s.Totals(device, model, version)
	if !ok {
		return wire.Health{}, false
	}
	return t.Health(), true
}

// VersionTotals sums a model version's totals over the fleet and counts
// the devices that reported it.
func (s *Store) VersionTotals(model, version string) (Totals, int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var sum Totals
	n := 0
	for k, t := range s.totals {
		if k.model == model && k.version == version {
			sum.merge(t)
			n++
		}
	}
	return sum, n
}

// VersionHealth is a model version's health over the fleet and the number
// of devices that reported it.
func (s *Store) VersionHealth(model, version string) (wire.Health, int) {
	t, n := s.VersionTotals(model, version)
	return t.Health(), n
}

// ModelHealthSince is a model version's health on a device over the
// snapshots in its window taken at or after since (device clock), for
// gates that judge a bake period rather than the whole life of a version.
func (s *Store) ModelHealthSince(device, model, version string, since time.Time) (wire.Health, error) {
	entries, err := s.Window(device, since, 0)
	if err != nil {
		return wire.Health{}, err
	}
	var t Totals
	for i := range entries {
		for j := range entries[i].Models {
			m := &entries[i].Models[j]
			if m.Model == model && m.Version == version {
				t.add(m, entries[i].Time)
			}
		}
	}
	return t.Health(), nil
}

// Watch returns a channel of stored reports until ctx ends. A watcher
// that falls behind misses updates (the channel holds 64); readers
// re-read what they show rather than rely on every update.
func (s *Store) Watch(ctx context.Context) <-chan Update {
	ch := make(chan Update, 64)
	s.watchMu.Lock()
	s.watchers[ch] = struct{}{}
	s.watchMu.Unlock()
	go func() {
		<-ctx.Done()
		s.watchMu.Lock()
		delete(s.watchers, ch)
		s.watchMu.Unlock()
		close(ch)
	}()
	return ch
}

func (s *Store) notify(u Update) {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	for ch := range s.watchers {
		select {
		case ch <- u:
		default:
		}
	}
}
