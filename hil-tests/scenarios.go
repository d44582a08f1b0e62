package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgefleet/edgefleet/hil-tests/netns"
	"github.com/edgefleet/edgefleet/hub/rollout"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// suite is the state shared by the scenarios.
type suite struct {
	f       *Fleet
	cfg     Config
	log     *slog.Logger
	cnn     []byte
	good    Artifact // the version every device runs between scenarios
	rolling sync.Mutex
}

type scenario struct {
	name string
	run  func(s *suite, ctx context.Context, r *Result) error
}

func scenarioByID(n int) scenario {
	switch n {
	case 1:
		return scenario{"OTA over a 200 ms RTT, 5% loss, 1 Mbit/s link", (*suite).s1SlowLossyOTA}
	case 2:
		return scenario{"link down mid-download and again mid-resume", (*suite).s2LinkDown}
	case 3:
		return scenario{"power cuts during OTA and telemetry", (*suite).s3PowerCuts}
	case 4:
		return scenario{"hub unreachable for a long period", (*suite).s4HubAway}
	case 5:
		return scenario{"disk full during a pull", (*suite).s5DiskFull}
	case 6:
		return scenario{"broker/hub restarts and a partition of half the fleet during a rollout", (*suite).s6Restarts}
	case 7:
		return scenario{"bad model over bad links: gates trip, fleet-wide revert", (*suite).s7BadModel}
	case 8:
		return scenario{"clock skew of ±1 h on a device", (*suite).s8ClockSkew}
	}
	panic(n)
}

// baseline rolls the plain CNN out to the fleet: the known-good state
// every scenario starts from.
func (s *suite) baseline(ctx context.Context) error {
	var err error
	if s.cnn, err = os.ReadFile("agent/testdata/digits/cnn.onnx"); err != nil {
		return err
	}
	if s.good, err = s.f.Push(ctx, s.cnn, 0, nil, false); err != nil {
		return err
	}
	id, err := s.f.Rollout(ctx, rollout.Spec{Ref: s.good.Ref, Waves: []float64{100}, Bake: -1})
	if err != nil {
		return err
	}
	st, err := s.f.WaitRollout(ctx, id, 3*time.Minute)
	if err != nil {
		return err
	}
	if st.State != rollout.StateCompleted {
		return fmt.Errorf("baseline rollout %s: %s", st.State, st.Reason)
	}
	return s.f.WaitActive(ctx, s.f.devs, s.good.Version, time.Minute)
}

// recover puts the fleet back after a scenario: clean links, agents
// running, the hub up, no rollout left running.
func (s *suite) recover(ctx context.Context) error {
	if s.f.hubCmd == nil {
		if err := s.f.startHub(ctx); err != nil {
			return err
		}
	}
	if ros, err := s.f.api.Rollouts(ctx); err == nil {
		for _, ro := range ros {
			if !rollout.Final(ro.State) {
				_, _ = s.f.api.RolloutAction(ctx, ro.ID, "abort")
			}
		}
	}
	for _, d := range s.f.devs {
		if err := d.Shape(ctx, netns.Link{}); err != nil {
			return err
		}
		d.FS.SetCapacity(s.cfg.DiskBytes)
		if d.cmd == nil {
			if err := d.Start(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// traffic sends inference requests to every device every 100 ms.
type traffic struct {
	served, failed atomic.Int64
	stop           func()
}

func (s *suite) traffic(devs []*Device) *traffic {
	tr := &traffic{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, d := range devs {
		wg.Go(func() {
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				if !d.up.Load() {
					continue // powered off or restarting
				}
				rctx, c := context.WithTimeout(ctx, 5*time.Second)
				_, err := d.Infer(rctx)
				c()
				if ctx.Err() != nil {
					return
				}
				if err != nil && d.up.Load() {
					tr.failed.Add(1)
				} else {
					tr.served.Add(1)
				}
			}
		})
	}
	tr.stop = func() { cancel(); wg.Wait() }
	return tr
}

func (tr *traffic) done(r *Result) {
	tr.stop()
	r.Requests.Served += tr.served.Load()
	r.Requests.Failed += tr.failed.Load()
}

// telemetryOf waits until the devices' queues are empty and counts the
// hub's stored snapshots against what the devices produced.
func (s *suite) telemetryOf(ctx context.Context, devs []*Device) (*Telemetry, error) {
	t := &Telemetry{}
	for _, d := range devs {
		err := waitFor(ctx, 90*time.Second, d.ID+" telemetry queue drained", func() error {
			n, err := d.Metric(ctx, "edgefleet_agent_telemetry_queue_snapshots", "")
			if err != nil {
				return err
			}
			if n > 1 {
				return fmt.Errorf("%v snapshots queued", n)
			}
			return nil
		})
		if err != nil {
			return t, err
		}
		entries, err := s.f.api.TelemetryWindow(ctx, d.ID, time.Time{}, 0)
		if err != nil {
			return t, err
		}
		sum, err := s.f.api.TelemetryDevice(ctx, d.ID)
		if err != nil {
			return t, err
		}
		type key struct {
			stream string
			seq    uint64
		}
		seen := map[key]int{}
		hwm := map[string]uint64{}
		for _, e := range entries {
			seen[key{e.Stream, e.Seq}]++
			hwm[e.Stream] = max(hwm[e.Stream], e.Seq)
		}
		var produced uint64
		for _, h := range hwm {
			produced += h
		}
		t.Streams += len(hwm)
		t.Produced += produced
		t.Received += uint64(len(seen))
		t.Duplicated += uint64(len(entries) - len(seen))
		t.Dropped += sum.Dropped
		if lost := int64(produced) - int64(len(seen)) - int64(sum.Dropped); lost > 0 {
			t.Lost += uint64(lost)
		}
	}
	return t, nil
}

// otaBytes returns the received-byte counters of the devices.
func rxAll(ctx context.Context, devs []*Device) []uint64 {
	out := make([]uint64, len(devs))
	for i, d := range devs {
		out[i] = d.RxBytes(ctx)
	}
	return out
}

func otaFigures(ctx context.Context, devs []*Device, before []uint64, size int64) *OTA {
	o := &OTA{ArtifactBytes: size}
	for i, d := range devs {
		moved := d.RxBytes(ctx) - before[i]
		o.BytesMoved = append(o.BytesMoved, moved)
		o.MaxRatio = max(o.MaxRatio, float64(moved)/float64(size))
	}
	return o
}

// rolloutTo rolls art out to the whole fleet in one wave and waits.
func (s *suite) rolloutTo(ctx context.Context, art Artifact, timeout time.Duration) (*Rollout, error) {
	start := time.Now()
	id, err := s.f.Rollout(ctx, rollout.Spec{Ref: art.Ref, Waves: []float64{100}, Bake: -1,
		Gates: rollout.Gates{ActivationTimeout: rollout.Duration(timeout), MaxP99Ratio: benchP99Ratio}})
	if err != nil {
		return nil, err
	}
	st, err := s.f.WaitRollout(ctx, id, timeout+time.Minute)
	ro := &Rollout{State: st.State, Reason: st.Reason, Seconds: time.Since(start).Seconds()}
	if err != nil {
		return ro, err
	}
	if st.State != rollout.StateCompleted {
		return ro, fmt.Errorf("rollout %s: %s", st.State, st.Reason)
	}
	s.good = art
	return ro, nil
}

// s1SlowLossyOTA: OTA over a 200 ms RTT, 5%-loss, 1 Mbit/s link completes
// with fewer than 1.3× the artifact's bytes moved.
func (s *suite) s1SlowLossyOTA(ctx context.Context, r *Result) error {
	devs := s.f.devs
	link := netns.Link{Delay: 100 * time.Millisecond, LossPct: 5, RateKbit: 1000}
	r.Faults["200 ms RTT"] = s.f.mech.Delay
	r.Faults["5% loss"] = s.f.mech.Loss
	r.Faults["1 Mbit/s"] = s.f.mech.Rate
	size := 1 << 20
	if s.cfg.Compress {
		size = 512 << 10
	}
	art, err := s.f.Push(ctx, s.cnn, size, nil, false)
	if err != nil {
		return err
	}
	for _, d := range devs {
		if err := d.Shape(ctx, link); err != nil {
			return err
		}
	}
	tr := s.traffic(devs)
	before := rxAll(ctx, devs)
	ro, err := s.rolloutTo(ctx, art, 10*time.Minute)
	tr.done(r)
	r.Rollout = ro
	r.OTA = otaFigures(ctx, devs, before, art.Size)
	r.note("link %s on %d devices at once (they share nothing but the hub)", link, len(devs))
	if err != nil {
		return err
	}
	if r.OTA.MaxRatio >= 1.3 {
		return fmt.Errorf("a device received %.2f× the artifact's bytes, want < 1.3×", r.OTA.MaxRatio)
	}
	return s.f.WaitActive(ctx, devs, art.Version, time.Minute)
}

// s2LinkDown: the link goes down mid-download for Outage and again
// mid-resume; the update completes and resumes rather than restarts.
func (s *suite) s2LinkDown(ctx context.Context, r *Result) error {
	devs := s.f.devs
	r.Faults["link down"] = s.f.mech.Partition
	r.Faults["2 Mbit/s link (to make the download last)"] = s.f.mech.Rate
	size := 2 << 20
	if s.cfg.Compress {
		size = 1 << 20
	}
	art, err := s.f.Push(ctx, s.cnn, size, nil, false)
	if err != nil {
		return err
	}
	link := netns.Link{RateKbit: 2000}
	for _, d := range devs {
		if err := d.Shape(ctx, link); err != nil {
			return err
		}
	}
	tr := s.traffic(devs)
	before := rxAll(ctx, devs)
	lead := devs[0]
	errc := make(chan error, 1)
	var ro *Rollout
	go func() {
		var err error
		ro, err = s.rolloutTo(ctx, art, 10*time.Minute)
		errc <- err
	}()
	// Cut every link when the first device has 30% and then 65% of the
	// artifact.
	for _, frac := range []float64{0.3, 0.65} {
		target := before[0] + uint64(frac*float64(art.Size))
		if err := waitFor(ctx, 3*time.Minute, fmt.Sprintf("%s at %.0f%% of the download", lead.ID, 100*frac), func() error {
			if lead.RxBytes(ctx) < target {
				return errors.New("not yet")
			}
			return nil
		}); err != nil {
			tr.done(r)
			return err
		}
		for _, d := range devs {
			if err := d.Shape(ctx, netns.Link{Down: true}); err != nil {
				return err
			}
		}
		r.note("links down at %.0f%% of %s's download for %v", 100*frac, lead.ID, s.cfg.Outage)
		select {
		case <-time.After(s.cfg.Outage):
		case <-ctx.Done():
			return ctx.Err()
		}
		for _, d := range devs {
			if err := d.Shape(ctx, link); err != nil {
				return err
			}
		}
	}
	err = <-errc
	tr.done(r)
	r.Rollout = ro
	r.OTA = otaFigures(ctx, devs, before, art.Size)
	if err != nil {
		return err
	}
	// Resumed, not restarted: a restart after 65% would move > 1.65×.
	if r.OTA.MaxRatio >= 1.3 {
		return fmt.Errorf("a device received %.2f× the artifact's bytes: the download restarted instead of resuming", r.OTA.MaxRatio)
	}
	return s.f.WaitActive(ctx, devs, art.Version, time.Minute)
}

// s3PowerCuts: power cuts at random moments of updates (download, verify,
// activate) and of telemetry. After each: the cache passes its check, one
// version is active and serves, the device converges; at the end the hub
// holds every snapshot once.
func (s *suite) s3PowerCuts(ctx context.Context, r *Result) error {
	devs := s.f.devs
	r.Faults["power cut"] = "powerfs (FUSE, go-fuse/v2): unsynced file data and directory entries discarded, agent SIGKILLed and restarted on a fresh mount"
	perDev := (s.cfg.Cuts + len(devs) - 1) / len(devs)
	// One new version per cut and device: versions only go up.
	var arts []Artifact
	for range perDev {
		a, err := s.f.Push(ctx, s.cnn, 384<<10, nil, false)
		if err != nil {
			return err
		}
		arts = append(arts, a)
	}
	link := netns.Link{RateKbit: 8000}
	for _, d := range devs {
		if err := d.Shape(ctx, link); err != nil {
			return err
		}
	}
	r.Faults["8 Mbit/s link (so that cuts land in the download)"] = s.f.mech.Rate
	rng := rand.New(rand.NewPCG(uint64(s.cfg.Seed), 3))
	var (
		mu     sync.Mutex
		phases = map[string]int{}
		cuts   int
		lost   powerStats
	)
	cutOne := func(d *Device, prev, next Artifact, window time.Duration, delay time.Duration) error {
		if _, err := s.f.api.SetDesired(ctx, d.ID, map[string]wire.DesiredModel{modelName: {Ref: next.Ref}}); err != nil {
			return err
		}
		time.Sleep(delay)
		phase := "idle/telemetry"
		if st, err := d.Status(ctx); err == nil {
			switch {
			case st.Pending != nil:
				phase = st.Pending.Step
			case st.Active == next.Version:
				phase = "active (telemetry)"
			}
		}
		if err := d.PowerCut(); err != nil {
			return err
		}
		mu.Lock()
		phases[phase]++
		cuts++
		mu.Unlock()
		// The cache must pass its consistency check on what the disk kept.
		if out, err := exec.CommandContext(ctx, os.Args[0], "check-cache", filepath.Join(d.Dir, "cache.db")).CombinedOutput(); err != nil {
			return fmt.Errorf("%s after a cut in %s: cache check: %v: %s", d.ID, phase, err, out)
		}
		if err := d.Start(ctx); err != nil {
			return fmt.Errorf("%s after a cut in %s: %w", d.ID, phase, err)
		}
		st, err := d.Status(ctx)
		if err != nil {
			return fmt.Errorf("%s after a cut in %s: %w", d.ID, phase, err)
		}
		if st.Active != prev.Version && st.Active != next.Version {
			return fmt.Errorf("%s after a cut in %s: active version %q, want %s or %s", d.ID, phase, st.Active, prev.Version, next.Version)
		}
		if err := waitFor(ctx, 30*time.Second, d.ID+" serving after the cut", func() error { _, err := d.Infer(ctx); return err }); err != nil {
			return fmt.Errorf("after a cut in %s: %w", phase, err)
		}
		if err := s.f.WaitActive(ctx, []*Device{d}, next.Version, 2*time.Minute); err != nil {
			return fmt.Errorf("after a cut in %s: %w", phase, err)
		}
		return nil
	}
	tr := s.traffic(devs)
	var wg sync.WaitGroup
	errs := make([]error, len(devs))
	for i, d := range devs {
		delays := make([]time.Duration, perDev)
		for k := range delays {
			delays[k] = time.Duration(rng.Int64N(int64(1500 * time.Millisecond)))
		}
		wg.Go(func() {
			prev := s.good
			for k, next := range arts {
				if err := cutOne(d, prev, next, 0, delays[k]); err != nil {
					errs[i] = err
					return
				}
				prev = next
			}
		})
	}
	wg.Wait()
	tr.done(r)
	for _, d := range devs {
		st := d.FS.Stats()
		lost.bytes += st.LostBytes
		lost.entries += st.LostEntries
	}
	r.note("%d power cuts, by the step the device was in: %v", cuts, phases)
	r.note("what the cuts threw away (unsynced): %d bytes of file data, %d directory entries", lost.bytes, lost.entries)
	if err := errors.Join(errs...); err != nil {
		return err
	}
	s.good = arts[len(arts)-1]
	t, err := s.telemetryOf(ctx, devs)
	r.Telemetry = t
	if err != nil {
		return err
	}
	if t.Duplicated > 0 || t.Lost > 0 {
		return fmt.Errorf("telemetry at the hub: %d duplicated, %d lost", t.Duplicated, t.Lost)
	}
	// Every version but the last was superseded; the cut devices converged.
	return s.f.WaitActive(ctx, devs, s.good.Version, time.Minute)
}

// benchP99Ratio is the rollouts' p99 gate: the devices share two loaded
// cores (CPU-limited by cgroups), so the default 2x trips on scheduling
// noise; the scenarios judge links, power and partitions, not latency.
const benchP99Ratio = 20

type powerStats struct{ bytes, entries int64 }

// s4HubAway: the hub is unreachable for a long period with a short
// telemetry interval; the agent keeps serving, the queue stays within its
// budget (oldest dropped and counted), the rest is delivered once.
func (s *suite) s4HubAway(ctx context.Context, r *Result) error {
	d := s.f.devs[len(s.f.devs)-1]
	r.Faults["hub unreachable"] = s.f.mech.Partition
	const budget = 64 << 10 // the smallest the agent accepts
	interval := 100 * time.Millisecond
	away := 5 * time.Minute
	if s.cfg.Compress {
		away = 40 * time.Second
	}
	if err := d.Reconfigure(ctx, interval, budget); err != nil {
		_ = d.Reconfigure(ctx, s.cfg.TelemetryInterval, s.cfg.TelemetryBudget)
		return err
	}
	r.note("%s: telemetry every %v, queue budget %d bytes, hub away for %v (%d snapshots: %.1f h at a 1 min interval)",
		d.ID, interval, budget, away, int(away/interval), float64(away/interval)/60)
	tr := s.traffic([]*Device{d})
	if err := d.Shape(ctx, netns.Link{Down: true}); err != nil {
		return err
	}
	var maxBytes float64
	deadline := time.Now().Add(away)
	for time.Now().Before(deadline) {
		if b, err := d.Metric(ctx, "edgefleet_agent_telemetry_queue_bytes", ""); err == nil {
			maxBytes = max(maxBytes, b)
		}
		time.Sleep(500 * time.Millisecond)
	}
	dropped, _ := d.Metric(ctx, "edgefleet_agent_telemetry_dropped_total", "")
	served, failed := tr.served.Load(), tr.failed.Load()
	if err := d.Shape(ctx, netns.Link{}); err != nil {
		return err
	}
	t, err := s.telemetryOf(ctx, []*Device{d})
	tr.done(r)
	r.Telemetry = t
	r.note("while away: %d requests served, %d failed; queue peaked at %.0f bytes; %v snapshots dropped (agent's count)", served, failed, maxBytes, dropped)
	restore := d.Reconfigure(ctx, s.cfg.TelemetryInterval, s.cfg.TelemetryBudget)
	switch {
	case err != nil:
		return err
	case failed > 0 || served == 0:
		return fmt.Errorf("serving while the hub was away: %d served, %d failed", served, failed)
	case maxBytes > budget:
		return fmt.Errorf("queue reached %.0f bytes, budget %d", maxBytes, budget)
	case dropped == 0 || t.Dropped == 0:
		return fmt.Errorf("nothing dropped (agent %v, hub %d): the outage did not exceed the budget", dropped, t.Dropped)
	case t.Duplicated > 0 || t.Lost > 0:
		return fmt.Errorf("telemetry: %d duplicated, %d lost beyond the %d dropped", t.Duplicated, t.Lost, t.Dropped)
	}
	return restore
}

// Reconfigure restarts the agent with another telemetry interval and budget.
func (d *Device) Reconfigure(ctx context.Context, interval time.Duration, budget int64) error {
	b, err := os.ReadFile(d.conf)
	if err != nil {
		return err
	}
	old := fmt.Sprintf("telemetry: {interval: %s, budget: %d}", d.f.cfg.TelemetryInterval, d.f.cfg.TelemetryBudget)
	conf := string(b)
	if d.tel != "" {
		old = d.tel
	}
	d.tel = fmt.Sprintf("telemetry: {interval: %s, budget: %d}", interval, budget)
	conf = replaceOnce(conf, old, d.tel)
	if err := os.WriteFile(d.conf, []byte(conf), 0o600); err != nil {
		return err
	}
	d.Stop()
	return d.Start(ctx)
}

// s7BadModel: a model that answers NaN is rolled out over lossy, slow
// links; the gates trip, the fleet reverts, every device serves the old
// version.
func (s *suite) s7BadModel(ctx context.Context, r *Result) error {
	devs := s.f.devs
	link := netns.Link{LossPct: 3, RateKbit: 2000}
	r.Faults["3% loss"] = s.f.mech.Loss
	r.Faults["2 Mbit/s"] = s.f.mech.Rate
	nan, err := os.ReadFile("agent/testdata/fleet/cnn_nan.onnx")
	if err != nil {
		return err
	}
	bad, err := s.f.Push(ctx, nan, 0, nil, true)
	if err != nil {
		return err
	}
	for _, d := range devs {
		if err := d.Shape(ctx, link); err != nil {
			return err
		}
	}
	tr := s.traffic(devs)
	start := time.Now()
	bake := 30 * time.Second
	id, err := s.f.Rollout(ctx, rollout.Spec{Ref: bad.Ref, Waves: []float64{50, 100}, Bake: rollout.Duration(bake),
		Gates: rollout.Gates{MinRequests: 10}})
	if err != nil {
		tr.done(r)
		return err
	}
	st, err := s.f.WaitRollout(ctx, id, 5*time.Minute)
	r.Rollout = &Rollout{State: st.State, Reason: st.Reason, Seconds: time.Since(start).Seconds()}
	if err != nil {
		tr.done(r)
		return err
	}
	for _, g := range st.Gates {
		r.note("gate %+v", g)
	}
	if st.State != rollout.StateRolledBack && st.State != rollout.StateHalted {
		tr.done(r)
		return fmt.Errorf("rollout ended %s (%s), want rolled back", st.State, st.Reason)
	}
	err = s.f.WaitActive(ctx, devs, s.good.Version, 3*time.Minute)
	tr.done(r)
	if err != nil {
		return fmt.Errorf("after the revert: %w", err)
	}
	r.note("rollout %s: %s", st.State, st.Reason)
	return nil
}

// s5DiskFull: the device's disk fills up during a pull: a clear error,
// no corruption, serving continues, and the pull completes once space
// returns.
func (s *suite) s5DiskFull(ctx context.Context, r *Result) error {
	d := s.f.devs[0]
	r.Faults["disk full"] = "powerfs capacity lowered to the bytes in use + 64 KiB once 2% of the artifact arrived (writes fail with ENOSPC)"
	r.Faults["2 Mbit/s link (to make the download last)"] = s.f.mech.Rate
	art, err := s.f.Push(ctx, s.cnn, 1<<20, nil, false)
	if err != nil {
		return err
	}
	if err := d.Shape(ctx, netns.Link{RateKbit: 2000}); err != nil {
		return err
	}
	tr := s.traffic([]*Device{d})
	defer tr.done(r)
	before := d.RxBytes(ctx)
	if _, err := s.f.api.SetDesired(ctx, d.ID, map[string]wire.DesiredModel{modelName: {Ref: art.Ref}}); err != nil {
		return err
	}
	// Fill the disk as soon as the download begins: bbolt grows its file
	// in doubling steps, so a later moment may find the room already
	// allocated.
	if err := waitFor(ctx, time.Minute, "download under way", func() error {
		if d.RxBytes(ctx) < before+uint64(art.Size/50) {
			return errors.New("not yet")
		}
		return nil
	}); err != nil {
		return err
	}
	d.FS.SetCapacity(d.FS.Used() + 64<<10)
	var last string
	if err := waitFor(ctx, 2*time.Minute, "the update to fail for lack of space", func() error {
		st, err := d.Status(ctx)
		if err != nil {
			return err
		}
		if st.Last != nil && st.Last.Version == art.Version && st.Last.Result != "active" && st.Last.Result != "watching" {
			last = st.Last.Result + ": " + st.Last.Reason
			return nil
		}
		if st.Active == art.Version {
			return fmt.Errorf("%w: the update completed on a full disk", errStop)
		}
		return fmt.Errorf("last %+v", st.Last)
	}); err != nil {
		return err
	}
	r.note("the agent's answer to the full disk: %s", last)
	if !strings.Contains(strings.ToLower(last), "space") {
		return fmt.Errorf("the error does not say the disk is full: %q", last)
	}
	// Serving continues on the old version.
	for range 10 {
		v, err := d.Infer(ctx)
		if err != nil {
			return fmt.Errorf("serving on a full disk: %w", err)
		}
		if v != s.good.Version {
			return fmt.Errorf("serving version %s on a full disk, want %s", v, s.good.Version)
		}
	}
	// Space returns: the pull completes (the hub's desired state is
	// unchanged; the agent retries).
	d.FS.SetCapacity(s.cfg.DiskBytes)
	if err := s.f.WaitActive(ctx, []*Device{d}, art.Version, 3*time.Minute); err != nil {
		return fmt.Errorf("after space returned: %w", err)
	}
	// No corruption: the cache passes its check (the agent stopped).
	d.Stop()
	out, err := exec.CommandContext(ctx, os.Args[0], "check-cache", filepath.Join(d.Dir, "cache.db")).CombinedOutput()
	if serr := d.Start(ctx); serr != nil {
		return serr
	}
	if err != nil {
		return fmt.Errorf("cache check after the full disk: %v: %s", err, out)
	}
	r.OTA = otaFigures(ctx, []*Device{d}, []uint64{before}, art.Size)
	// The other devices follow through a rollout.
	_, err = s.rolloutTo(ctx, art, 5*time.Minute)
	return err
}

// s6Restarts: during a rollout half the fleet is cut off and the hub
// (with its embedded broker) is killed and restarted; the rollout waits
// for the cut devices instead of completing without them, and they
// converge when they return.
func (s *suite) s6Restarts(ctx context.Context, r *Result) error {
	devs := s.f.devs
	r.Faults["partition of half the fleet"] = s.f.mech.Partition
	r.Faults["hub and broker restart"] = "SIGKILL of the hub process (embedded MQTT broker and registry), restart on the same data"
	art, err := s.f.Push(ctx, s.cnn, 256<<10, nil, false)
	if err != nil {
		return err
	}
	var cut, kept []*Device
	for i, d := range devs {
		if i%2 == 1 {
			cut = append(cut, d)
		} else {
			kept = append(kept, d)
		}
	}
	tr := s.traffic(devs)
	defer tr.done(r)
	for _, d := range cut {
		if err := d.Shape(ctx, netns.Link{Down: true}); err != nil {
			return err
		}
	}
	start := time.Now()
	id, err := s.f.Rollout(ctx, rollout.Spec{Ref: art.Ref, Waves: []float64{50, 100}, Bake: rollout.Duration(5 * time.Second),
		Gates: rollout.Gates{ActivationTimeout: rollout.Duration(10 * time.Minute), MaxP99Ratio: benchP99Ratio}})
	if err != nil {
		return err
	}
	time.Sleep(3 * time.Second)
	s.f.StopHub(true)
	r.note("hub killed %.0f s into the rollout", time.Since(start).Seconds())
	time.Sleep(5 * time.Second)
	if err := s.f.startHub(ctx); err != nil {
		return fmt.Errorf("hub restart: %w", err)
	}
	// Hold the partition: the reachable half converges, the rollout must
	// not complete without the cut half.
	hold := 60 * time.Second
	if s.cfg.Compress {
		hold = 30 * time.Second
	}
	time.Sleep(hold)
	st, err := s.f.api.Rollout(ctx, id, true)
	if err != nil {
		return err
	}
	r.note("after %v of partition: rollout %s (%s), wave %d", hold, st.State, st.Reason, st.Wave)
	if st.State == rollout.StateCompleted {
		return errors.New("the rollout completed while half the fleet was cut off")
	}
	// The hub picks the first wave; a cut device in it holds the rollout,
	// so the reachable half is only required to serve, not to update.
	for _, d := range kept {
		if _, err := d.Infer(ctx); err != nil {
			return fmt.Errorf("reachable half: %w", err)
		}
	}
	for _, d := range cut {
		if st, err := d.Status(ctx); err == nil && st.Active == art.Version {
			return fmt.Errorf("%s updated although cut off", d.ID)
		}
	}
	for _, d := range cut {
		if err := d.Shape(ctx, netns.Link{}); err != nil {
			return err
		}
	}
	fin, err := s.f.WaitRollout(ctx, id, 5*time.Minute)
	r.Rollout = &Rollout{State: fin.State, Reason: fin.Reason, Seconds: time.Since(start).Seconds()}
	if err != nil {
		return err
	}
	if fin.State != rollout.StateCompleted {
		return fmt.Errorf("rollout ended %s (%s) after the partition healed", fin.State, fin.Reason)
	}
	s.good = art
	return s.f.WaitActive(ctx, devs, art.Version, 2*time.Minute)
}

func (s *suite) s8ClockSkew(ctx context.Context, r *Result) error {
	return errors.New("not implemented in this version of the suite")
}

func runBoards(inventory string, cfg Config, log *slog.Logger) int {
	log.Error("real boards over SSH are not implemented in this version of the suite", "inventory", inventory)
	return 2
}
