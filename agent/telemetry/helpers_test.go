package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgefleet/edgefleet/agent/fleet"
	"github.com/edgefleet/edgefleet/agent/metrics"
	"github.com/edgefleet/edgefleet/hub"
	"github.com/edgefleet/edgefleet/hub/enroll"
	"github.com/edgefleet/edgefleet/hub/telemetry"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// These tests run the real hub in-process (the telemetry package itself
// does not import it; only its tests do) and real agents' telemetry.

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("EDGEFLEET_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// hubProc is a hub that can be stopped and started again on the same
// folder and addresses.
type hubProc struct {
	t      testing.TB
	dir    string
	opts   hub.Options
	h      *hub.Hub
	cancel context.CancelFunc
	done   chan error
}

func startHub(t testing.TB, mod func(*hub.Options)) *hubProc {
	t.Helper()
	p := &hubProc{t: t, dir: t.TempDir()}
	p.opts = hub.Options{DataDir: p.dir, APIAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0", RegistryAddr: hub.Off,
		TelemetryWindow: 100000, Logger: testLogger(t)}
	if mod != nil {
		mod(&p.opts)
	}
	p.start()
	// Restarts reuse the addresses the first start picked.
	p.opts.APIAddr = strings.TrimPrefix(p.h.APIURL(), "https://")
	if p.opts.Broker == "" {
		p.opts.MQTTAddr = strings.TrimPrefix(p.h.MQTTURL(), "mqtts://")
	}
	t.Cleanup(p.stop)
	return p
}

func (p *hubProc) start() {
	p.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var h *hub.Hub
	var err error
	// The previous process's UDP socket may take a moment to go.
	for range 50 {
		if h, err = hub.New(ctx, p.opts); err == nil || !strings.Contains(err.Error(), "address already in use") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		cancel()
		p.t.Fatal(err)
	}
	p.h, p.cancel, p.done = h, cancel, make(chan error, 1)
	go func() { p.done <- h.Run(ctx) }()
}

func (p *hubProc) stop() {
	if p.cancel == nil {
		return
	}
	p.cancel()
	if err := <-p.done; err != nil {
		p.t.Errorf("hub Run: %v", err)
	}
	p.cancel = nil
}

func (p *hubProc) store() *telemetry.Store { return p.h.Telemetry() }

// enroll makes an identity for device id under dir/fleet.
func enrollDevice(t testing.TB, p *hubProc, dir, id string) {
	t.Helper()
	tok, _, err := p.h.CreateToken(context.Background(), enroll.TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := fleet.New(fleet.Options{Dir: filepath.Join(dir, "fleet"), HubURL: p.h.APIURL(), Token: tok, DeviceID: id, Applier: nopApplier{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Enroll(ctx); err != nil {
		t.Fatal(err)
	}
}

type nopApplier struct{}

func (nopApplier) Apply(context.Context, wire.DesiredState) (map[string]wire.ReportedModel, error) {
	return nil, nil
}

// agent is a device's fleet client and telemetry, shipping in the
// background; snapshots are taken by the test.
type agent struct {
	fleet *fleet.Client
	tel   *Telemetry
	m     *metrics.Agent
	stop  func()
}

// runAgent starts the fleet client and the shipper for the device whose
// identity is in dir/fleet. quicAddr "" means the hub's default.
func runAgent(t testing.TB, dir string, opts Options, quicAddr string) *agent {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	metrics.NewOutputs(reg)
	fc, err := fleet.New(fleet.Options{Dir: filepath.Join(dir, "fleet"), Applier: nopApplier{},
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, HeartbeatInterval: time.Second,
		Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	opts.Dir, opts.Gatherer = dir, reg
	if opts.MinBackoff == 0 {
		opts.MinBackoff, opts.MaxBackoff = 20*time.Millisecond, 200*time.Millisecond
	}
	if opts.AckTimeout == 0 {
		opts.AckTimeout = 2 * time.Second
	}
	if opts.DialTimeout == 0 {
		opts.DialTimeout = time.Second
	}
	opts.Logger = testLogger(t)
	tl, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	up, err := FleetUplink(fc, quicAddr)
	if err != nil {
		t.Fatal(err)
	}
	if err := tl.Attach(up); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := fc.Run(ctx); err != nil {
			t.Errorf("fleet Run: %v", err)
		}
	})
	wg.Go(func() { tl.shipLoop(ctx) })
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			tl.Close()
		})
	}
	t.Cleanup(stop)
	return &agent{fleet: fc, tel: tl, m: m, stop: stop}
}

// produce takes n snapshots with some traffic in each.
func (a *agent) produce(t testing.TB, n int) {
	t.Helper()
	for i := range n {
		a.m.Provider.WithLabelValues("digits", "1", "cpu", "cpu").Set(1)
		for range i%3 + 1 {
			a.m.ObserveRequest("digits", "1", "rest", metrics.OutcomeSuccess, time.Millisecond)
		}
		if _, err := a.tel.SampleNow(time.Now()); err != nil {
			t.Fatal(err)
		}
	}
}

// checkExactlyOnce asserts the hub stored seqs first..last of the
// device's (single) stream once each, in order, over the transport.
func checkExactlyOnce(t testing.TB, s *telemetry.Store, id string, first, last uint64, transport string) {
	t.Helper()
	entries, err := s.Window(id, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := int(last - first + 1)
	if len(entries) != want {
		t.Fatalf("hub holds %d snapshots of %s, want %d (%d..%d)", len(entries), id, want, first, last)
	}
	for i, e := range entries {
		if e.Seq != first+uint64(i) {
			t.Fatalf("snapshot %d has seq %d, want %d: not exactly once in order", i, e.Seq, first+uint64(i))
		}
		if transport != "" && e.Transport != transport {
			t.Fatalf("snapshot %d came over %s, want %s", e.Seq, e.Transport, transport)
		}
	}
	d, _ := s.Device(id)
	if d.Stored != uint64(want) {
		t.Fatalf("device stored %d, want %d", d.Stored, want)
	}
}

func (a *agent) String() string { return fmt.Sprint(a.tel.Status()) }
