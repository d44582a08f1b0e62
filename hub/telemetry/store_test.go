package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/hub/telemetry"
	"github.com/edgefleet/edgefleet/ota/wire"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

type fixture struct {
	path  string
	db    *bolt.DB
	store *telemetry.Store
	clock *clock
	opts  telemetry.Options
}

func openFixture(t *testing.T, path string, opts telemetry.Options) *fixture {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "hub.db")
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	c := &clock{now: t0.Add(time.Hour)}
	opts.DB, opts.Now = db, c.Now
	s, err := telemetry.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{path: path, db: db, store: s, clock: c, opts: opts}
}

// reopen closes the database and opens the store again on the same file,
// as after a hub restart.
func (f *fixture) reopen(t *testing.T) *fixture {
	t.Helper()
	f.db.Close()
	g := openFixture(t, f.path, telemetry.Options{Window: f.opts.Window, Ring: f.opts.Ring, MaxSeries: f.opts.MaxSeries})
	g.clock.Set(f.clock.Now())
	return g
}

// snapshot seq at t0 + seq*10s with 10 requests of digits/v (one error,
// latency 1 ms).
func snapshot(seq uint64, version string) wire.Snapshot {
	return wire.Snapshot{Seq: seq, Time: t0.Add(time.Duration(seq) * 10 * time.Second), IntervalMs: 10000,
		Box: wire.BoxStats{ProcessCPU: 0.01, SystemCPU: 0.25, RSSBytes: 30 << 20, DiskFreeBytes: 5 << 30,
			GPUs: []wire.GPUStats{{Index: 0, MemUsedBytes: 1 << 30, MemTotalBytes: 80 << 30}}},
		Models: []wire.ModelStats{{Model: "digits", Version: version, Provider: "cpu", Requests: 10, Errors: 1,
			Latency: wire.Histogram{Count: 10, Sum: 0.01, Buckets: []wire.Bucket{{Le: 0.0005, N: 0}, {Le: 0.001, N: 10}}}}}}
}

func report(dev, stream string, from, to uint64) *wire.TelemetryReport {
	r := &wire.TelemetryReport{DeviceID: dev, Stream: stream}
	for s := from; s <= to; s++ {
		r.Snapshots = append(r.Snapshots, snapshot(s, "1"))
	}
	return r
}

func ingest(t *testing.T, s *telemetry.Store, dev string, r *wire.TelemetryReport) wire.TelemetryReportAck {
	t.Helper()
	ack, err := s.Ingest(context.Background(), dev, telemetry.TransportMQTT, r)
	if err != nil {
		t.Fatalf("Ingest: %v", err)
	}
	return ack
}

func seqs(entries []telemetry.Entry) string {
	var b strings.Builder
	for i, e := range entries {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprint(&b, e.Seq)
	}
	return b.String()
}

func TestIngestDeduplicates(t *testing.T) {
	f := openFixture(t, "", telemetry.Options{})
	s := f.store
	if ack := ingest(t, s, "d1", report("d1", "st1", 1, 5)); ack.Seq != 5 || ack.Stream != "st1" || ack.Error != "" {
		t.Fatalf("ack %+v", ack)
	}
	tests := []struct {
		name     string
		r        *wire.TelemetryReport
		wantAck  uint64
		wantSeqs string
	}{
		{"exact replay", report("d1", "st1", 1, 5), 5, "1,2,3,4,5"},
		{"overlap", report("d1", "st1", 3, 7), 7, "1,2,3,4,5,6,7"},
		{"old part only", report("d1", "st1", 2, 4), 7, "1,2,3,4,5,6,7"},
		{"gap (device dropped 8-9)", report("d1", "st1", 10, 11), 11, "1,2,3,4,5,6,7,10,11"},
		{"empty report", &wire.TelemetryReport{DeviceID: "d1", Stream: "st1"}, 11, "1,2,3,4,5,6,7,10,11"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ack := ingest(t, s, "d1", tt.r)
			w, err := s.Window("d1", time.Time{}, 0)
			if err != nil {
				t.Fatal(err)
			}
			if ack.Seq != tt.wantAck || seqs(w) != tt.wantSeqs {
				t.Fatalf("ack %d, window %s; want %d, %s", ack.Seq, seqs(w), tt.wantAck, tt.wantSeqs)
			}
		})
	}
	tot, ok := s.Totals("d1", "digits", "1")
	if !ok || tot.Requests != 90 || tot.Errors != 9 || tot.Latency.Count != 90 {
		t.Fatalf("totals %+v, want 9 snapshots' worth", tot)
	}
	d, _ := s.Device("d1")
	if d.Stored != 9 || d.Duplicates != 5+3+3 || len(d.Streams) != 1 || d.Streams[0].Seq != 11 {
		t.Fatalf("device %+v", d)
	}
}

func TestIngestRefusesAndSkips(t *testing.T) {
	f := openFixture(t, "", telemetry.Options{})
	s := f.store
	ingest(t, s, "d1", report("d1", "st1", 1, 2))
	unordered := report("d1", "st1", 3, 4)
	unordered.Snapshots[0], unordered.Snapshots[1] = unordered.Snapshots[1], unordered.Snapshots[0]
	tests := []struct {
		name string
		dev  string
		r    *wire.TelemetryReport
	}{
		{"report of another device", "d1", report("d2", "st1", 3, 3)},
		{"bad stream", "d1", report("d1", "st 1", 3, 3)},
		{"unordered", "d1", unordered},
		{"bad sender id", "../x", report("../x", "st1", 3, 3)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ack, err := s.Ingest(context.Background(), tt.dev, telemetry.TransportQUIC, tt.r)
			if !errors.Is(err, wire.ErrInvalid) || ack.Error == "" {
				t.Fatalf("Ingest = %+v, %v; want a refusal", ack, err)
			}
			if w, _ := s.Window("d1", time.Time{}, 0); seqs(w) != "1,2" {
				t.Fatalf("window after a refusal: %s", seqs(w))
			}
		})
	}
	// An invalid snapshot inside a good report is skipped, counted and
	// acknowledged, so it cannot block the device's queue.
	r := report("d1", "st1", 3, 5)
	r.Snapshots[1].Models[0].Latency.Count = 99
	ack := ingest(t, s, "d1", r)
	if ack.Seq != 5 || ack.Rejected != 1 {
		t.Fatalf("ack %+v, want seq 5 with 1 rejected", ack)
	}
	if w, _ := s.Window("d1", time.Time{}, 0); seqs(w) != "1,2,3,5" {
		t.Fatalf("window %s", seqs(w))
	}
	if d, _ := s.Device("d1"); d.Invalid != 1 {
		t.Fatalf("invalid count %d", d.Invalid)
	}
}

func TestRestartKeepsDedupeTotalsAndWindows(t *testing.T) {
	f := openFixture(t, "", telemetry.Options{Window: 5, Ring: 2})
	ingest(t, f.store, "d1", report("d1", "st1", 1, 12))
	r := report("d1", "st1", 13, 13)
	r.Dropped = 4
	ingest(t, f.store, "d1", r)
	g := f.reopen(t)
	s := g.store
	// The replay after the restart is a duplicate.
	if ack := ingest(t, s, "d1", report("d1", "st1", 10, 13)); ack.Seq != 13 {
		t.Fatalf("ack after restart %+v", ack)
	}
	tot, _ := s.Totals("d1", "digits", "1")
	if tot.Requests != 130 {
		t.Fatalf("requests %d after a restart and a replay, want 130", tot.Requests)
	}
	tests := []struct {
		name  string
		since time.Time
		limit int
		want  string
	}{
		{"whole window (disk)", time.Time{}, 0, "9,10,11,12,13"},
		{"ring", time.Time{}, 2, "12,13"},
		{"limit beyond ring", time.Time{}, 4, "10,11,12,13"},
		{"since", t0.Add(110 * time.Second), 0, "11,12,13"},
		{"since and limit", t0.Add(110 * time.Second), 1, "13"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := s.Window("d1", tt.since, tt.limit)
			if err != nil || seqs(w) != tt.want {
				t.Fatalf("Window = %s, %v; want %s", seqs(w), err, tt.want)
			}
		})
	}
	d, ok := s.Device("d1")
	if !ok || d.Dropped != 4 || d.Last == nil || d.Last.Seq != 13 || len(d.Models) != 1 || !d.Models[0].Current {
		t.Fatalf("device after restart %+v", d)
	}
	if w, _ := s.Window("nobody", time.Time{}, 0); len(w) != 0 {
		t.Fatalf("window of an unknown device: %v", w)
	}
}

func TestNewStreamStartsOver(t *testing.T) {
	f := openFixture(t, "", telemetry.Options{})
	s := f.store
	r := report("d1", "old", 1, 3)
	r.Dropped = 2
	ingest(t, s, "d1", r)
	// The device's queue was recreated: seq 1 again, in a new stream.
	r = report("d1", "new", 1, 2)
	r.Dropped = 1
	if ack := ingest(t, s, "d1", r); ack.Seq != 2 || ack.Stream != "new" {
		t.Fatalf("ack %+v", ack)
	}
	// A late replay of the old stream is still recognised.
	if ack := ingest(t, s, "d1", report("d1", "old", 1, 3)); ack.Seq != 3 {
		t.Fatalf("old stream ack %+v", ack)
	}
	d, _ := s.Device("d1")
	if d.Stored != 5 || d.Dropped != 3 || len(d.Streams) != 2 {
		t.Fatalf("device %+v", d)
	}
}

func TestSeriesOverviewHealth(t *testing.T) {
	f := openFixture(t, "", telemetry.Options{})
	s := f.store
	f.clock.Set(t0.Add(10 * time.Minute))
	// d1 and d2 serve digits/1 from t0+10s; d2 moves to digits/2 at 30 s.
	ingest(t, s, "d1", report("d1", "a", 1, 6))
	r := report("d2", "b", 1, 2)
	for seq := uint64(3); seq <= 6; seq++ {
		sn := snapshot(seq, "2")
		sn.Models[0].Provider = "cuda"
		sn.Models[0].NonFinite = 2
		sn.Models[0].Latency = wire.Histogram{Count: 10, Sum: 0.1, Buckets: []wire.Bucket{{Le: 0.005, N: 0}, {Le: 0.01, N: 10}}}
		r.Snapshots = append(r.Snapshots, sn)
	}
	ingest(t, s, "d2", r)

	pts := s.Series("digits", "1", t0, t0.Add(60*time.Second))
	if len(pts) != 7 {
		t.Fatalf("%d points for 7 steps", len(pts))
	}
	want := []uint64{0, 20, 20, 10, 10, 10, 10} // t0 is empty; d2 leaves version 1 after 20 s
	for i, p := range pts {
		if p.Requests != want[i] || !p.Time.Equal(t0.Add(time.Duration(i)*10*time.Second)) {
			t.Fatalf("point %d = %+v, want %d requests", i, p, want[i])
		}
	}
	if p := pts[1]; p.RPS != 2 || p.ErrorRate != 0.1 || p.P99Ms <= 0.5 || p.P99Ms > 1 || p.Reports != 2 {
		t.Fatalf("point %+v", p)
	}
	if v2 := s.Series("digits", "2", t0, t0.Add(60*time.Second)); v2[3].NonFinite != 2 || v2[3].P99Ms <= 5 {
		t.Fatalf("version 2 series %+v", v2[3])
	}

	o := s.Overview(10 * time.Minute)
	if o.Devices != 2 || o.Stored != 12 || len(o.Versions) != 2 || o.Providers["cpu"] != 1 || o.Providers["cuda"] != 1 {
		t.Fatalf("overview %+v", o)
	}
	v1, v2 := o.Versions[0], o.Versions[1]
	if v1.Version != "1" || v1.Devices != 1 || v1.Totals.Requests != 80 || v2.Devices != 1 || v2.Providers["cuda"] != 1 {
		t.Fatalf("versions %+v", o.Versions)
	}
	if v1.Recent.Requests != 80 {
		t.Fatalf("recent %+v", v1.Recent)
	}
	if mv := s.ModelVersions(); len(mv) != 2 || mv[1] != (telemetry.ModelVersion{Model: "digits", Version: "2"}) {
		t.Fatalf("model versions %+v", mv)
	}

	h, ok := s.ModelHealth("d2", "digits", "2")
	if !ok || h.Requests != 40 || h.Errors != 4 || h.NaNs != 8 || h.P99Ms <= 5 || h.P99Ms > 10 {
		t.Fatalf("health %+v", h)
	}
	if _, ok := s.ModelHealth("d1", "digits", "2"); ok {
		t.Fatal("health of a version the device never ran")
	}
	fleet, n := s.VersionHealth("digits", "1")
	if fleet.Requests != 80 || n != 2 {
		t.Fatalf("fleet health %+v on %d devices", fleet, n)
	}
	since, err := s.ModelHealthSince("d2", "digits", "2", t0.Add(50*time.Second))
	if err != nil || since.Requests != 20 || since.NaNs != 4 {
		t.Fatalf("health since 50 s %+v, %v", since, err)
	}
	// Reporting: the last report is at the clock's now.
	if d, _ := s.Device("d1"); !d.Reporting {
		t.Fatal("device not reporting right after a report")
	}
	f.clock.Set(t0.Add(20 * time.Minute))
	if d, _ := s.Device("d1"); d.Reporting || s.Overview(0).Reporting != 0 {
		t.Fatal("device still reporting 10 minutes after its last report")
	}
}

func TestSeriesRebuiltAfterRestart(t *testing.T) {
	f := openFixture(t, "", telemetry.Options{})
	f.clock.Set(t0.Add(5 * time.Minute))
	ingest(t, f.store, "d1", report("d1", "a", 1, 3))
	g := f.reopen(t)
	pts := g.store.Series("digits", "1", t0, t0.Add(30*time.Second))
	if len(pts) != 4 || pts[1].Requests != 10 || pts[3].Requests != 10 {
		t.Fatalf("series after restart %+v", pts)
	}
}

func metricValue(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			return value(m), true
		}
	}
	return 0, false
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Summary != nil:
		return float64(m.GetSummary().GetSampleCount())
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return 0
}

func TestCollectorCardinalityLimit(t *testing.T) {
	f := openFixture(t, "", telemetry.Options{MaxSeries: 2})
	s := f.store
	f.clock.Set(t0.Add(time.Minute))
	for _, dev := range []string{"d1", "d2", "d3", "d4"} {
		ingest(t, s, dev, report(dev, "a", 1, 2))
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(s)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric lint: %s: %s", p.Metric, p.Text)
	}
	tests := []struct {
		name   string
		metric string
		labels map[string]string
		want   float64
	}{
		{"first device has its own series", "edgefleet_fleet_requests_total", map[string]string{"device": "d1", "model": "digits", "version": "1"}, 20},
		{"second too", "edgefleet_fleet_requests_total", map[string]string{"device": "d2"}, 20},
		{"the rest are summed", "edgefleet_fleet_requests_total", map[string]string{"device": telemetry.OverflowDevice}, 40},
		{"overflow count", "edgefleet_fleet_series_overflow", nil, 2},
		{"roll-up", "edgefleet_fleet_model_requests_total", map[string]string{"model": "digits", "version": "1"}, 80},
		{"roll-up histogram", "edgefleet_fleet_model_request_duration_seconds", map[string]string{"version": "1"}, 80},
		{"errors", "edgefleet_fleet_errors_total", map[string]string{"device": "d1"}, 2},
		{"provider", "edgefleet_fleet_model_provider", map[string]string{"device": "d1", "provider": "cpu"}, 1},
		{"devices per version", "edgefleet_fleet_model_devices", map[string]string{"version": "1", "provider": "cpu"}, 4},
		{"machine series", "edgefleet_fleet_device_rss_bytes", map[string]string{"device": "d2"}, 30 << 20},
		{"gpu memory", "edgefleet_fleet_device_gpu_memory_used_bytes", map[string]string{"device": "d1", "gpu": "0"}, 1 << 30},
		{"reporting", "edgefleet_fleet_devices", map[string]string{"state": "reporting"}, 4},
		{"ingest counter", "edgefleet_hub_telemetry_snapshots_total", map[string]string{"transport": "mqtt", "result": "stored"}, 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := metricValue(t, reg, tt.metric, tt.labels)
			if !ok || got != tt.want {
				t.Fatalf("%s%v = %v (found %v), want %v", tt.metric, tt.labels, got, ok, tt.want)
			}
		})
	}
	// Devices beyond the limit have no machine series.
	if _, ok := metricValue(t, reg, "edgefleet_fleet_device_rss_bytes", map[string]string{"device": "d3"}); ok {
		t.Fatal("machine series of a device beyond the limit")
	}
}

func TestConcurrentIngest(t *testing.T) {
	f := openFixture(t, "", telemetry.Options{})
	s := f.store
	var wg sync.WaitGroup
	const devices, reports = 8, 10
	for d := range devices {
		dev := fmt.Sprintf("d%d", d)
		wg.Go(func() {
			for r := uint64(0); r < reports; r++ {
				rep := report(dev, "s", r*3+1, r*3+3)
				// The same report arrives twice at once (a broker
				// redelivery racing the original).
				var inner sync.WaitGroup
				for range 2 {
					inner.Go(func() {
						if _, err := s.Ingest(context.Background(), dev, telemetry.TransportMQTT, rep); err != nil {
							t.Error(err)
						}
					})
				}
				inner.Wait()
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	updates := s.Watch(ctx)
	wg.Wait()
	cancel()
	for range updates {
	}
	for d := range devices {
		dev := fmt.Sprintf("d%d", d)
		tot, _ := s.Totals(dev, "digits", "1")
		info, _ := s.Device(dev)
		if tot.Requests != reports*3*10 || info.Stored != reports*3 || info.Duplicates != reports*3 {
			t.Fatalf("%s: %d requests, %d stored, %d duplicates", dev, tot.Requests, info.Stored, info.Duplicates)
		}
	}
}

func TestWatch(t *testing.T) {
	f := openFixture(t, "", telemetry.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	ch := f.store.Watch(ctx)
	ingest(t, f.store, "d1", report("d1", "a", 1, 3))
	ingest(t, f.store, "d1", report("d1", "a", 1, 3)) // duplicates only: no update
	ingest(t, f.store, "d1", report("d1", "a", 4, 4))
	u1, u2 := <-ch, <-ch
	if u1.Device != "d1" || u1.Seq != 3 || u1.Snapshots != 3 || u2.Seq != 4 {
		t.Fatalf("updates %+v %+v", u1, u2)
	}
	cancel()
	for range ch {
		t.Fatal("update after the duplicate-only report")
	}
}
