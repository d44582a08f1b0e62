package rollout_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/edgefleet/edgefleet/deploy/testenv"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/hil-tests/fleetsim"
	"github.com/edgefleet/edgefleet/hub/rollout"
	"github.com/edgefleet/edgefleet/ota/wire"
)

const model = "digits"

// healthy reports plenty of traffic with a 10 ms p99 on every version.
func healthy(_ *fleetsim.Device, _ string, rm wire.ReportedModel) wire.Health {
	if rm.ActiveVersion == "" {
		return wire.Health{}
	}
	return wire.Health{Requests: 500, P99Ms: 10}
}

func TestCanaryRolloutCompletes(t *testing.T) {
	th := startHub(t)
	site := func(i int) map[string]string {
		if i < 10 {
			return map[string]string{"site": "berlin"}
		}
		return map[string]string{"site": "paris"}
	}
	f := th.fleet(t, 12, fleetsim.Options{Labels: site, Health: healthy})
	th.baseline(t, model, "1")

	ref, digest := th.push(t, model, "2")
	const bake = 10 * time.Minute
	id := th.create(t, rollout.Spec{Model: model, Ref: ref, Selector: "site=berlin", Waves: []float64{10, 50, 100},
		Bake: rollout.Duration(bake), MaxFailures: 0})
	st := th.status(t, id)
	if st.Spec.Digest != digest || st.Spec.Version != "2" {
		t.Fatalf("rollout spec %+v: want the tag resolved to %s, version 2", st.Spec, digest)
	}

	// 10 matching devices: waves of 1, 5 and 10.
	for w, want := range []int{1, 5, 10} {
		testenv.Eventually(t, fmt.Sprintf("wave %d updated", w), 20*time.Second, func() bool {
			st = th.status(t, id)
			return st.Wave == w && st.Counts.Updated == want
		})
		if st.Counts.Assigned != want || st.Counts.Matching != 10 {
			t.Fatalf("wave %d: counts %+v, want %d assigned of 10 matching", w, st.Counts, want)
		}
		n := 0
		for _, v := range active(f, model) {
			if v == "2" {
				n++
			}
		}
		if n != want {
			t.Fatalf("wave %d: %d devices run version 2, want %d", w, n, want)
		}
		th.bakeWave(t, id, w, bake)
	}
	st = th.waitState(t, id, rollout.StateCompleted)
	for _, g := range st.Gates {
		if !g.OK {
			t.Errorf("gate %+v not ok on a healthy rollout", g)
		}
	}
	for dev, v := range active(f, model) {
		want := "2"
		if !strings.HasPrefix(dev, "sim-0000") { // sim-00010, sim-00011: paris
			want = "1"
		}
		if v != want {
			t.Errorf("%s runs version %q, want %q", dev, v, want)
		}
	}
	// Every updated device kept its previous desired model for a rollback.
	for _, d := range st.Devices {
		if d.Phase != rollout.PhaseUpdated || d.Previous == nil || d.Previous.Version != "1" || d.PrevP99Ms != 10 {
			t.Errorf("device %+v: want updated with previous version 1 and its p99", d)
		}
	}
}

func TestGateBreachRollsBackFleetWide(t *testing.T) {
	tests := []struct {
		name     string
		behavior fleetsim.Behavior
		health   fleetsim.HealthFunc
		gates    rollout.Gates
		reason   string
		// sustained: the breach must last the latency gate's sustain time
		// (on the fake clock) before it halts.
		sustained bool
	}{
		{
			name: "activation fails (golden vector)",
			behavior: func(d *fleetsim.Device, name string, want wire.DesiredModel, cur wire.ReportedModel) (wire.ReportedModel, error) {
				if want.Version == "2" {
					return cur, errors.New("update refused: golden vector mismatch")
				}
				return fleetsim.Activate(d, name, want, cur)
			},
			reason: "activation_failures",
		},
		{
			name:   "NaN outputs",
			health: versionHealth(wire.Health{Requests: 300, NaNs: 30, P99Ms: 10}),
			reason: "nan_rate",
		},
		{
			name:      "3x slower",
			health:    versionHealth(wire.Health{Requests: 300, P99Ms: 30}),
			reason:    "p99_ratio",
			sustained: true,
		},
		{
			name:   "errors",
			health: versionHealth(wire.Health{Requests: 300, Errors: 40, P99Ms: 10}),
			reason: "error_rate",
		},
		{
			name:   "GPU to CPU fallback",
			health: versionHealth(wire.Health{Requests: 300, Fallbacks: 1, P99Ms: 10}),
			reason: "fallback_rate",
		},
		{
			name: "rolled back by the device's own watch",
			behavior: func(d *fleetsim.Device, name string, want wire.DesiredModel, cur wire.ReportedModel) (wire.ReportedModel, error) {
				if want.Version == "2" {
					out := cur
					out.State, out.LastError = wire.StateRolledBack, "post-activation watch: NaN/Inf outputs"
					return out, nil
				}
				return fleetsim.Activate(d, name, want, cur)
			},
			reason: "activation_failures",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // each case has its own hub and fleet
			th := startHub(t)
			health := tt.health
			if health == nil {
				health = healthy
			}
			f := th.fleet(t, 10, fleetsim.Options{Behavior: tt.behavior, Health: health})
			_, d1 := th.baseline(t, model, "1")
			ref, _ := th.push(t, model, "2")
			id := th.create(t, rollout.Spec{Model: model, Ref: ref, Waves: []float64{20, 100}, Bake: rollout.Duration(time.Hour), Gates: tt.gates})
			if tt.sustained {
				testenv.Eventually(t, "latency breach held back", 20*time.Second, func() bool {
					st := th.status(t, id)
					for _, g := range st.Gates {
						if g.Name == tt.reason && !g.OK {
							return st.State == rollout.StateRunning
						}
					}
					return false
				})
				time.Sleep(100 * time.Millisecond) // several manager ticks
				if st := th.status(t, id); st.State != rollout.StateRunning {
					t.Fatalf("halted before the breach lasted its sustain time: %s", st.Reason)
				}
				th.clock.Advance(rollout.DefaultLatencySustain)
			}

			st := th.waitState(t, id, rollout.StateRolledBack)
			if !strings.Contains(st.Reason, tt.reason) {
				t.Fatalf("reason %q does not name gate %s", st.Reason, tt.reason)
			}
			if st.Wave != 0 || st.Counts.Assigned != 2 || st.Counts.Reverted != 2 {
				t.Fatalf("counts %+v in wave %d: want the 2 canary devices reverted", st.Counts, st.Wave)
			}
			canary := map[string]bool{}
			for _, d := range st.Devices {
				canary[d.ID] = true
				dm, rev := th.desired(t, d.ID, model)
				if dm.Digest != d1 || dm.Version != "1" || rev != d.RevertRevision || d.RevertRevision <= d.Revision || dm.Reject != st.Spec.Digest {
					t.Errorf("%s desires %+v at revision %d: want version 1 (%s) at a new revision after %d, rejecting version 2", d.ID, dm, rev, d1, d.Revision)
				}
			}
			// Every device runs version 1 again, and those outside the canary
			// wave were never asked for version 2.
			testenv.Eventually(t, "fleet back on version 1", 10*time.Second, func() bool {
				for _, v := range active(f, model) {
					if v != "1" {
						return false
					}
				}
				return true
			})
			for _, d := range f.Devices() {
				if canary[d.ID] {
					continue
				}
				if dm, _ := th.desired(t, d.ID, model); dm.Version != "1" || dm.Rollout == id {
					t.Errorf("%s outside the canary wave desires %+v", d.ID, dm)
				}
			}
		})
	}
}

// versionHealth reports h for version 2 and healthy figures otherwise.
func versionHealth(h wire.Health) fleetsim.HealthFunc {
	return func(d *fleetsim.Device, name string, rm wire.ReportedModel) wire.Health {
		if rm.ActiveVersion == "2" {
			return h
		}
		return healthy(d, name, rm)
	}
}

func TestToleratedFailuresDoNotHalt(t *testing.T) {
	th := startHub(t)
	bad := "sim-00003"
	f := th.fleet(t, 10, fleetsim.Options{Health: healthy, Behavior: func(d *fleetsim.Device, name string, want wire.DesiredModel, cur wire.ReportedModel) (wire.ReportedModel, error) {
		if d.ID == bad && want.Version == "2" {
			return cur, errors.New("disk full")
		}
		return fleetsim.Activate(d, name, want, cur)
	}})
	th.baseline(t, model, "1")
	ref, _ := th.push(t, model, "2")
	id := th.create(t, rollout.Spec{Model: model, Ref: ref, Waves: []float64{100}, Bake: -1, MaxFailures: 20})
	st := th.waitState(t, id, rollout.StateCompleted)
	if st.Counts.Failed != 1 || st.Counts.Updated != 9 {
		t.Fatalf("counts %+v: want 9 updated and 1 failed", st.Counts)
	}
	if v := active(f, model)[bad]; v != "1" {
		t.Fatalf("the failing device runs %q, want 1", v)
	}
}

func TestPauseResumeAbortAndManualRollback(t *testing.T) {
	th := startHub(t)
	f := th.fleet(t, 4, fleetsim.Options{Health: healthy})
	th.baseline(t, model, "1")
	ref, _ := th.push(t, model, "2")
	ctx := context.Background()
	rs := th.Rollouts()
	const bake = time.Hour
	id := th.create(t, rollout.Spec{Model: model, Ref: ref, Waves: []float64{25, 100}, Bake: rollout.Duration(bake)})
	testenv.Eventually(t, "canary updated", 20*time.Second, func() bool { return th.status(t, id).Counts.Updated == 1 })

	// A second rollout of the model is refused while this one runs.
	if _, err := rs.Create(ctx, rollout.Spec{Model: model, Ref: ref}); !errors.Is(err, rollout.ErrConflict) {
		t.Fatalf("second rollout: %v, want ErrConflict", err)
	}
	if _, err := rs.Pause(ctx, id); err != nil {
		t.Fatal(err)
	}
	th.clock.Advance(2 * bake)
	time.Sleep(100 * time.Millisecond) // several manager ticks
	if st := th.status(t, id); st.State != rollout.StatePaused || st.Wave != 0 || st.Counts.Assigned != 1 {
		t.Fatalf("paused rollout moved: %s wave %d counts %+v", st.State, st.Wave, st.Counts)
	}
	if _, err := rs.Resume(ctx, id); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "promotion after resume", 20*time.Second, func() bool { return th.status(t, id).Counts.Updated == 4 })

	// An operator rolls the whole rollout back.
	if _, err := rs.Rollback(ctx, id); err != nil {
		t.Fatal(err)
	}
	st := th.waitState(t, id, rollout.StateRolledBack)
	if st.Counts.Reverted != 4 || !strings.Contains(st.Reason, "operator") {
		t.Fatalf("after rollback: counts %+v reason %q", st.Counts, st.Reason)
	}
	testenv.Eventually(t, "fleet on version 1", 10*time.Second, func() bool {
		for _, v := range active(f, model) {
			if v != "1" {
				return false
			}
		}
		return true
	})
	if _, err := rs.Pause(ctx, id); !errors.Is(err, rollout.ErrConflict) {
		t.Fatalf("pause a rolled back rollout: %v, want ErrConflict", err)
	}
	if _, err := rs.Get(ctx, "ro-nope", false); !errors.Is(err, rollout.ErrNotFound) {
		t.Fatalf("unknown rollout: %v", err)
	}

	// Abort leaves devices where they are.
	ref3, _ := th.push(t, model, "3")
	id3 := th.create(t, rollout.Spec{Model: model, Ref: ref3, Waves: []float64{25, 100}, Bake: rollout.Duration(bake)})
	testenv.Eventually(t, "canary of 3 updated", 20*time.Second, func() bool { return th.status(t, id3).Counts.Updated == 1 })
	if _, err := rs.Abort(ctx, id3); err != nil {
		t.Fatal(err)
	}
	th.clock.Advance(2 * bake)
	time.Sleep(100 * time.Millisecond)
	st = th.status(t, id3)
	if st.State != rollout.StateAborted || st.Counts.Assigned != 1 {
		t.Fatalf("aborted rollout: %s counts %+v", st.State, st.Counts)
	}
	n := 0
	for _, v := range active(f, model) {
		if v == "3" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d devices run version 3 after abort, want the 1 canary", n)
	}
	list, err := rs.List(ctx)
	if err != nil || len(list) != 3 || list[0].ID != id3 {
		t.Fatalf("list: %v, %d rollouts, first %v", err, len(list), list)
	}
}

func TestOfflineAndLateDevicesConverge(t *testing.T) {
	th := startHub(t)
	f := th.fleet(t, 5, fleetsim.Options{Health: healthy})
	th.baseline(t, model, "1")
	off := f.Devices()[4]
	off.GoOffline()
	testenv.Eventually(t, "device offline at the hub", 10*time.Second, func() bool {
		d, _ := th.Registry().Get(context.Background(), off.ID)
		return !d.Online
	})

	ref, _ := th.push(t, model, "2")
	id := th.create(t, rollout.Spec{Model: model, Ref: ref, Waves: []float64{50, 100}, Bake: -1})
	st := th.waitState(t, id, rollout.StateCompleted)
	if st.Counts.Updated != 4 || st.Counts.Updating != 1 || st.Counts.Offline != 1 {
		t.Fatalf("counts %+v: want 4 updated and the offline one pending", st.Counts)
	}
	// The offline device took no part in the canary wave.
	for _, d := range st.Devices {
		if d.ID == off.ID && d.Wave == 0 {
			t.Fatalf("offline device in the canary wave")
		}
	}

	// It converges when it comes back, and a device enrolled later is
	// included as well.
	off.GoOnline()
	late := th.fleet(t, 1, fleetsim.Options{IDPrefix: "late-", Health: healthy})
	testenv.Eventually(t, "offline and late devices updated", 20*time.Second, func() bool {
		st = th.status(t, id)
		return st.Counts.Updated == 6
	})
	if v := active(f, model)[off.ID]; v != "2" {
		t.Fatalf("returned device runs %q", v)
	}
	if v := active(late, model)["late-00000"]; v != "2" {
		t.Fatalf("late device runs %q", v)
	}
}

func TestHubRestartMidRollout(t *testing.T) {
	th := startHub(t)
	f := th.fleet(t, 6, fleetsim.Options{Health: healthy})
	th.baseline(t, model, "1")
	ref, digest := th.push(t, model, "2")
	const bake = time.Hour
	id := th.create(t, rollout.Spec{Model: model, Ref: ref, Waves: []float64{30, 100}, Bake: rollout.Duration(bake)})
	var settled time.Time
	testenv.Eventually(t, "canary settled", 20*time.Second, func() bool {
		st := th.status(t, id)
		settled = st.Settled
		return st.Counts.Updated == 2 && !st.Settled.IsZero()
	})
	before := map[string]int{}
	for _, d := range f.Devices() {
		before[d.ID] = d.Connects()
	}

	th.restart()
	st := th.status(t, id)
	if st.State != rollout.StateRunning || st.Wave != 0 || st.Counts.Assigned != 2 || st.Spec.Digest != digest {
		t.Fatalf("after restart: %s wave %d counts %+v", st.State, st.Wave, st.Counts)
	}
	testenv.Eventually(t, "devices reconnected", 20*time.Second, func() bool {
		for _, d := range f.Devices() {
			if d.Connects() <= before[d.ID] {
				return false
			}
		}
		return f.Connected() == 6
	})
	// The wave settles again (its canaries are back online) at the same
	// time: the bake time counts from their activations, kept across the
	// restart.
	testenv.Eventually(t, "canary settled again", 20*time.Second, func() bool {
		st = th.status(t, id)
		return st.Settled.Equal(settled)
	})
	th.clock.Advance(bake + time.Second)
	th.bakeWave(t, id, 1, bake)
	st = th.waitState(t, id, rollout.StateCompleted)
	if st.Counts.Updated != 6 {
		t.Fatalf("counts %+v after restart", st.Counts)
	}
	for dev, v := range active(f, model) {
		if v != "2" {
			t.Errorf("%s runs %q", dev, v)
		}
	}
}
