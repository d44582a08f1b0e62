package telemetry

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/hub/hubdb"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// Defaults for the zero values of Options.
const (
	DefaultWindow    = 180 // half an hour of 10-second snapshots per device, on disk (~1 KiB each)
	DefaultRing      = 6   // the last minute of them per device, in memory
	DefaultMaxSeries = 10000
	DefaultStep      = 10 * time.Second
	DefaultSpan      = time.Hour
	// MaxReportSnapshots bounds the snapshots of one report.
	MaxReportSnapshots = 10000
	// keepStreams is how many streams per device keep their high-water
	// mark (a device's queue is recreated rarely).
	keepStreams = 4
)

// OverflowDevice is the device label of the per-device series beyond
// Options.MaxSeries: their numbers are summed into it.
const OverflowDevice = "_overflow"

// The telemetry.* buckets of the hub's file (package hubdb draws the schema).
var (
	bucketDevices = hubdb.TelemetryDevices
	bucketWindow  = hubdb.TelemetryWindow
	bucketTotals  = hubdb.TelemetryTotals
)

// Options configure a Store. DB is required.
type Options struct {
	// DB is the hub's bbolt database; the store keeps its buckets there.
	DB *bolt.DB
	// Window is how many of each device's latest snapshots are kept on
	// disk (DefaultWindow); Ring how many of them also in memory
	// (DefaultRing).
	Window, Ring int
	// MaxSeries bounds the (device, model, version) label sets on
	// /metrics (DefaultMaxSeries); the rest are summed under
	// OverflowDevice. It also bounds the devices with per-device machine
	// series.
	MaxSeries int
	// Step and Span are the resolution and the length of the fleet
	// roll-up series per model version (DefaultStep, DefaultSpan).
	Step, Span time.Duration
	// Now is the clock (time.Now).
	Now func() time.Time
	// Logger, optional.
	Logger *slog.Logger
}

// Entry is one stored snapshot.
type Entry struct {
	// Stream is the device queue's stream the snapshot came from.
	Stream string `json:"stream"`
	// Received is when the hub stored it (the hub's clock).
	Received time.Time `json:"received"`
	// Transport is "mqtt" or "quic".
	Transport string `json:"transport,omitempty"`
	wire.Snapshot
}

// Totals are a model version's cumulative numbers on one device (or, from
// VersionTotals, the fleet) since the hub first heard of it.
type Totals struct {
	Requests     uint64 `json:"requests"`
	Errors       uint64 `json:"errors"`
	ClientErrors uint64 `json:"client_errors"`
	Rejected     uint64 `json:"rejected"`
	NonFinite    uint64 `json:"nonfinite"`
	Fallbacks    uint64 `json:"fallbacks"`
	// Latency is the cumulative request latency histogram (seconds).
	Latency wire.Histogram `json:"latency"`
	// BatchSize is the cumulative batch size histogram, when batched.
	BatchSize *wire.Histogram `json:"batch_size,omitempty"`
	// Provider is the execution provider last reported.
	Provider string `json:"provider,omitempty"`
	// First and Last are the device times of the first and the last
	// snapshot that named this version.
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
}

func (t *Totals) add(m *wire.ModelStats, at time.Time) {
	t.Requests += m.Requests
	t.Errors += m.Errors
	t.ClientErrors += m.ClientErrors
	t.Rejected += m.Rejected
	t.NonFinite += m.NonFinite
	t.Fallbacks += m.Fallbacks
	t.Latency.Add(m.Latency)
	if m.BatchSize != nil {
		if t.BatchSize == nil {
			t.BatchSize = &wire.Histogram{}
		}
		t.BatchSize.Add(*m.BatchSize)
	}
	if m.Provider != "" {
		t.Provider = m.Provider
	}
	if t.First.IsZero() || at.Before(t.First) {
		t.First = at
	}
	if at.After(t.Last) {
		t.Last = at
	}
}

func (t *Totals) merge(o *Totals) {
	t.Requests += o.Requests
	t.Errors += o.Errors
	t.ClientErrors += o.ClientErrors
	t.Rejected += o.Rejected
	t.NonFinite += o.NonFinite
	t.Fallbacks += o.Fallbacks
	t.Latency.Add(o.Latency)
	if o.BatchSize != nil {
		if t.BatchSize == nil {
			t.BatchSize = &wire.Histogram{}
		}
		t.BatchSize.Add(*o.BatchSize)
	}
	if o.Last.After(t.Last) {
		t.Last = o.Last
		if o.Provider != "" {
			t.Provider = o.Provider
		}
	}
	if t.First.IsZero() || (!o.First.IsZero() && o.First.Before(t.First)) {
		t.First = o.First
	}
}

// Health converts the totals into the rollout gates' summary.
func (t *Totals) Health() wire.Health {
	return wire.Health{Requests: t.Requests, Errors: t.Errors, NaNs: t.NonFinite, Fallbacks: t.Fallbacks,
		P99Ms: t.Latency.Quantile(0.99) * 1000}
}

// streamRec is a device stream's high-water mark.
type streamRec struct {
	ID      string    `json:"id"`
	HWM     uint64    `json:"hwm"`
	Dropped uint64    `json:"dropped"`
	Updated time.Time `json:"updated"`
}

// deviceRec is what telemetry.devices holds per device.
type deviceRec struct {
	Streams []streamRec `json:"streams"`
	// N is the key of the newest window entry.
	N uint64 `json:"n"`
	// Stored, Duplicates and Invalid count snapshots.
	Stored     uint64    `json:"stored"`
	Duplicates uint64    `json:"duplicates"`
	Invalid    uint64    `json:"invalid"`
	LastReport time.Time `json:"last_report"`
}

func (d *deviceRec) dropped() uint64 {
	var n uint64
	for _, s := range d.Streams {
		n += s.Dropped
	}
	return n
}

func (d *deviceRec) stream(id string) *streamRec {
	for i := range d.Streams {
		if d.Streams[i].ID == id {
			return &d.Streams[i]
		}
	}
	return nil
}

// seriesKey names one model version on one device.
type seriesKey struct{ device, model, version string }

func (k seriesKey) bytes() []byte { return []byte(k.device + "\x00" + k.model + "\x00" + k.version) }

func parseSeriesKey(b []byte) (seriesKey, bool) {
	p := strings.SplitN(string(b), "\x00", 3)
	if len(p) != 3 {
		return seriesKey{}, false
	}
	return seriesKey{p[0], p[1], p[2]}, true
}

// device is a device's state in memory.
type device struct {
	ingest sync.Mutex // serialises Ingest calls for the device

	// The fields below are guarded by Store.mu.
	id   string
	rec  deviceRec
	ring []Entry // newest last, at most Options.Ring
}

// Store keeps the fleet's telemetry: deduplicated snapshots per device (a
// window on disk and a shorter ring in memory), cumulative totals per
// device and model version, and roll-up series per model version. It is
// safe for concurrent use.
type Store struct {
	opts Options
	db   *bolt.DB
	log  *slog.Logger

	mu      sync.RWMutex // guards devices, totals, order, rollups and the device fields noted
	devices map[string]*device
	totals  map[seriesKey]*Totals
	// order lists series keys in first-seen order: the first MaxSeries
	// get their own labels on /metrics.
	order    []seriesKey
	labelled map[seriesKey]bool
	rollups  map[mvKey]*rollup

	watchMu  sync.Mutex // guards watchers
	watchers map[chan Update]struct{}

	ingestMetrics *ingestMetrics
}

// mvKey names a model version.
type mvKey struct{ model, version string }

// Open creates the store's buckets if needed and loads its state.
func Open(opts Options) (*Store, error) {
	if opts.DB == nil {
		return nil, errors.New("telemetry: DB required")
	}
	if opts.Window <= 0 {
		opts.Window = DefaultWindow
	}
	if opts.Ring <= 0 {
		opts.Ring = DefaultRing
	}
	opts.Ring = min(opts.Ring, opts.Window)
	if opts.MaxSeries <= 0 {
		opts.MaxSeries = DefaultMaxSeries
	}
	if opts.Step <= 0 {
		opts.Step = DefaultStep
	}
	if opts.Span < opts.Step {
		opts.Span = max(DefaultSpan, opts.Step)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{opts: opts, db: opts.DB, log: log, devices: map[string]*device{}, totals: map[seriesKey]*Totals{},
		labelled: map[seriesKey]bool{}, rollups: map[mvKey]*rollup{}, watchers: map[chan Update]struct{}{},
		ingestMetrics: newIngestMetrics()}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

// load reads device records, totals, the rings and rebuilds the roll-ups
// from the windows.
func (s *Store) load() error {
	now := s.opts.Now()
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketDevices, bucketWindow, bucketTotals} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("telemetry: %w", err)
			}
		}
		err := tx.Bucket(bucketDevices).ForEach(func(k, v []byte) error {
			var rec deviceRec
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("telemetry: device %q: %w", k, err)
			}
			s.devices[string(k)] = &device{id: string(k), rec: rec}
			return nil
		})
		if err != nil {
			return err
		}
		err = tx.Bucket(bucketTotals).ForEach(func(k, v []byte) error {
			key, ok := parseSeriesKey(k)
			if !ok {
				return nil
			}
			var t Totals
			if err := json.Unmarshal(v, &t); err != nil {
				return fmt.Errorf("telemetry: totals %q: %w", k, err)
			}
			s.addSeriesLocked(key, &t)
			return nil
		})
		if err != nil {
			return err
		}
		win := tx.Bucket(bucketWindow)
		from := now.Add(-s.opts.Span)
		for id, d := range s.devices {
			b := win.Bucket([]byte(id))
			if b == nil {
				continue
			}
			c := b.Cursor()
			var ring []Entry
			for k, v := c.Last(); k != nil; k, v = c.Prev() {
				var e Entry
				if err := json.Unmarshal(v, &e); err != nil {
					continue
				}
				if len(ring) < s.opts.Ring {
					ring = append(ring, e)
				}
				if e.Time.Before(from) && len(ring) >= s.opts.Ring {
					break
				}
				s.addRollupLocked(&e.Snapshot, now)
			}
			slices.Reverse(ring)
			d.ring = ring
		}
		return nil
	})
}

func (s *Store) addSeriesLocked(k seriesKey, t *Totals) {
	if _, ok := s.totals[k]; !ok {
		s.order = append(s.order, k)
		if len(s.labelled) < s.opts.MaxSeries {
			s.labelled[k] = true
		}
	}
	s.totals[k] = t
}

func (s *Store) device(id string) *device {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.devices[id]
	if d == nil {
		d = &device{id: id}
		s.devices[id] = d
	}
	return d
}

// Ingest stores a report from device id (the authenticated identity)
// received over transport. Snapshots at or below the stream's high-water
// mark are duplicates and skipped; invalid snapshots are skipped and
// counted; the rest are stored with the new high-water mark in one
// transaction. The acknowledgement names the high-water mark. A report
// that is invalid as a whole (wrong device, stream, order) is refused:
// the error wraps wire.ErrInvalid and the acknowledgement carries it.
func (s *Store) Ingest(ctx context.Context, id, transport string, r *wire.TelemetryReport) (wire.TelemetryReportAck, error) {
	start := time.Now()
	ack, res, err := s.ingest(ctx, id, transport, r)
	s.ingestMetrics.observe(transport, res, err, time.Since(start))
	return ack, err
}

// IngestResult counts a report's snapshots by fate.
type IngestResult struct {
	Stored, Duplicates, Invalid int
}

func (s *Store) ingest(ctx context.Context, id, transport string, r *wire.TelemetryReport) (wire.TelemetryReportAck, IngestResult, error) {
	ack := wire.TelemetryReportAck{Stream: r.Stream}
	refuse := func(err error) (wire.TelemetryReportAck, IngestResult, error) {
		ack.Error = err.Error()
		return ack, IngestResult{}, err
	}
	if err := wire.ValidateDeviceID(id); err != nil {
		return refuse(err)
	}
	if r.DeviceID != id {
		return refuse(fmt.Errorf("telemetry: report for device %q sent by %q: %w", r.DeviceID, id, wire.ErrInvalid))
	}
	if err := wire.ValidateStream(r.Stream); err != nil {
		return refuse(err)
	}
	if len(r.Snapshots) > MaxReportSnapshots {
		return refuse(fmt.Errorf("telemetry: %d snapshots in one report, at most %d: %w", len(r.Snapshots), MaxReportSnapshots, wire.ErrInvalid))
	}
	for i := 1; i < len(r.Snapshots); i++ {
		if r.Snapshots[i].Seq <= r.Snapshots[i-1].Seq {
			return refuse(fmt.Errorf("telemetry: seq %d after %d: want increasing sequence numbers: %w", r.Snapshots[i].Seq, r.Snapshots[i-1].Seq, wire.ErrInvalid))
		}
	}
	if err := ctx.Err(); err != nil {
		return refuse(err)
	}
	valid := make([]bool, len(r.Snapshots))
	for i := range r.Snapshots {
		valid[i] = r.Snapshots[i].Validate() == nil
	}

	d := s.device(id)
	d.ingest.Lock()
	defer d.ingest.Unlock()

	now := s.opts.Now().UTC()
	var (
		rec     deviceRec
		stored  []Entry
		totals  map[seriesKey]*Totals
		res     IngestResult
		newKeys []seriesKey
	)
	err := s.db.Batch(func(tx *bolt.Tx) error {
		// Batch may run this more than once: start from the stored state.
		rec, stored, totals, res, newKeys = deviceRec{}, nil, map[seriesKey]*Totals{}, IngestResult{}, nil
		devB := tx.Bucket(bucketDevices)
		if v := devB.Get([]byte(id)); v != nil {
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("device record: %w", err)
			}
		}
		st := rec.stream(r.Stream)
		if st == nil {
			rec.Streams = append(rec.Streams, streamRec{ID: r.Stream})
			st = &rec.Streams[len(rec.Streams)-1]
		}
		win, err := tx.Bucket(bucketWindow).CreateBucketIfNotExists([]byte(id))
		if err != nil {
			return err
		}
		totB := tx.Bucket(bucketTotals)
		for i := range r.Snapshots {
			sn := &r.Snapshots[i]
			if sn.Seq <= st.HWM {
				res.Duplicates++
				continue
			}
			st.HWM = sn.Seq
			if !valid[i] {
				res.Invalid++
				continue
			}
			e := Entry{Stream: r.Stream, Received: now, Transport: transport, Snapshot: *sn}
			b, err := json.Marshal(&e)
			if err != nil {
				return err
			}
			rec.N++
			if err := win.Put(u64(rec.N), b); err != nil {
				return err
			}
			stored = append(stored, e)
			for j := range sn.Models {
				m := &sn.Models[j]
				k := seriesKey{id, m.Model, m.Version}
				t := totals[k]
				if t == nil {
					t = &Totals{}
					if v := totB.Get(k.bytes()); v != nil {
						if err := json.Unmarshal(v, t); err != nil {
							return fmt.Errorf("totals %q: %w", k.bytes(), err)
						}
					} else {
						newKeys = append(newKeys, k)
					}
					totals[k] = t
				}
				t.add(m, sn.Time)
			}
		}
		res.Stored = len(stored)
		for k, t := range totals {
			b, err := json.Marshal(t)
			if err != nil {
				return err
			}
			if err := totB.Put(k.bytes(), b); err != nil {
				return err
			}
		}
		// Trim the window.
		if rec.N > uint64(s.opts.Window) {
			limit := u64(rec.N - uint64(s.opts.Window))
			c := win.Cursor()
			for k, _ := c.First(); k != nil && bytes.Compare(k, limit) <= 0; k, _ = c.First() {
				if err := c.Delete(); err != nil {
					return err
				}
			}
		}
		st.Dropped = max(st.Dropped, r.Dropped)
		st.Updated = now
		rec.Stored += uint64(res.Stored)
		rec.Duplicates += uint64(res.Duplicates)
		rec.Invalid += uint64(res.Invalid)
		rec.LastReport = now
		// Forget the oldest streams.
		if len(rec.Streams) > keepStreams {
			sort.Slice(rec.Streams, func(i, j int) bool { return rec.Streams[i].Updated.After(rec.Streams[j].Updated) })
			rec.Streams = rec.Streams[:keepStreams]
		}
		ack.Seq = rec.stream(r.Stream).HWM
		b, err := json.Marshal(&rec)
		if err != nil {
			return err
		}
		return devB.Put([]byte(id), b)
	})
	if err != nil {
		return refuse(fmt.Errorf("telemetry: store report of %s: %w", id, err))
	}
	ack.Rejected = uint64(res.Invalid)

	// Committed: bring memory in step.
	s.mu.Lock()
	d.rec = rec
	for _, k := range newKeys {
		s.addSeriesLocked(k, totals[k])
	}
	for k, t := range totals {
		s.totals[k] = t
	}
	for i := range stored {
		s.addRollupLocked(&stored[i].Snapshot, now)
	}
	d.ring = append(d.ring, stored...)
	if over := len(d.ring) - s.opts.Ring; over > 0 {
		d.ring = append(d.ring[:0:0], d.ring[over:]...)
	}
	s.mu.Unlock()
	if len(stored) > 0 {
		s.notify(Update{Device: id, Seq: ack.Seq, Snapshots: len(stored), Time: stored[len(stored)-1].Time})
	}
	return ack, res, nil
}

func u64(n uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	return b[:]
}
