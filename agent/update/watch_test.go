package update_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/edgefleet/edgefleet/deploy/testenv"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/agent/update"
)

// fastWatch watches for a minute, evaluating every 20 ms after 5 requests.
// Latency is not compared: tests assert no timing (see evaluate's tests).
func fastWatch(c *config.Config) {
	c.Update.Watch = config.Watch{Window: time.Minute, Interval: 20 * time.Millisecond, MinRequests: 5, MaxP99Ratio: -1}
}

// rolledBack reports whether the rollback to version 1 has finished.
func rolledBack(t *testing.T, r *running) func() bool {
	return func() bool {
		s := r.status(t, "m")
		return s.Active == "1" && !s.Updating
	}
}

// driveUntil sends x to the model's default version until cond holds.
func driveUntil(t *testing.T, r *running, x [4]float32, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out driving traffic until %s", what)
		}
		_, _, _ = r.infer(context.Background(), "m", x) // failures are what some cases provoke
	}
}

func TestWatchRollsBack(t *testing.T) {
	rs := startRegistry(t)
	ref1 := push(t, rs, "m", "1", fixture(t, "scale2.onnx"), nil)
	tests := []struct {
		name   string
		model  string
		x      [4]float32 // live traffic that makes the bad version misbehave
		inject bool       // fail the version's "GPU" runs so they fall back to the CPU
		reason string
	}{
		{"NaN outputs", "nan4.onnx", [4]float32{-1, 2, 3, 4}, false, "NaN/Inf outputs"},
		{"errors", "err5.onnx", [4]float32{1, 2, 3, 400}, false, "error rate"},
		{"GPU to CPU fallback", "scale3.onnx", [4]float32{1, 2, 3, 4}, true, "fell back from GPU to CPU"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ref2 := pushTag(t, rs, "m", strings.TrimSuffix(tc.model, ".onnx"), "2", fixture(t, tc.model), nil)
			r := startAgent(t, t.TempDir(), fastWatch)
			mustUpdate(t, r, "m", ref1, update.UpdateOptions{})
			res := mustUpdate(t, r, "m", ref2, update.UpdateOptions{})
			if res.State != update.ResultWatching || !res.WatchUntil.After(time.Now()) {
				t.Fatalf("update: %+v, want a running watch", res)
			}
			if tc.inject {
				if err := r.a.Models().TestOnlyInjectGPUFault("m", "2", "cuda", func() error { return errors.New("injected CUDA failure") }); err != nil {
					t.Fatal(err)
				}
			}
			// Healthy traffic first: the bad version passes it.
			for range 3 {
				if _, ver, err := r.infer(context.Background(), "m", [4]float32{1, 2, 3, 4}); err != nil || ver != "2" {
					t.Fatalf("healthy request: version %s, %v", ver, err)
				}
			}
			if s := r.status(t, "m"); s.Active != "2" || s.Watch == nil || s.Watch.Requests != 3 {
				t.Fatalf("before the bad traffic: %+v watch %+v", s, s.Watch)
			}
			driveUntil(t, r, tc.x, "the rollback", rolledBack(t, r))

			s := r.status(t, "m")
			if s.Last == nil || s.Last.Result != update.ResultRolledBack || !strings.Contains(s.Last.Reason, tc.reason) || s.Last.Version != "2" {
				t.Fatalf("last outcome %+v, want a rollback of 2 because of %q", s.Last, tc.reason)
			}
			if s.Watch != nil || s.Previous != "" {
				t.Fatalf("after rollback: watch %+v, previous %q", s.Watch, s.Previous)
			}
			digest := ref2[strings.Index(ref2, "@")+1:]
			if !strings.Contains(s.Rejected[digest], tc.reason) {
				t.Fatalf("rejected %v, want %s recorded", s.Rejected, digest)
			}
			if k, ver := r.scaleOf(t, "m"); k != 2 || ver != "1" {
				t.Fatalf("after rollback: ×%g from %s, want ×2 from 1", k, ver)
			}
			if got := cachedVersions(t, r, "m"); !slices.Equal(got, []string{"1"}) {
				t.Fatalf("cached versions %v after rollback, want [1]", got)
			}
			// The controller asking again does not reinstall it.
			if _, err := r.u.Update(context.Background(), "m", ref2, update.UpdateOptions{}); !errors.Is(err, update.ErrRefused) {
				t.Fatalf("reinstalling the rolled-back artifact: %v, want ErrRefused", err)
			}
		})
	}
}

func TestWatchPasses(t *testing.T) {
	rs := startRegistry(t)
	ref1 := push(t, rs, "m", "1", fixture(t, "scale2.onnx"), nil)
	ref2 := push(t, rs, "m", "2", fixture(t, "scale3.onnx"), nil)
	r := startAgent(t, t.TempDir(), func(c *config.Config) {
		fastWatch(c)
		c.Update.Watch.Window = 300 * time.Millisecond
	})
	mustUpdate(t, r, "m", ref1, update.UpdateOptions{})
	mustUpdate(t, r, "m", ref2, update.UpdateOptions{})
	driveUntil(t, r, [4]float32{-1, 2, 3, 400}, "the watch passes", func() bool {
		s := r.status(t, "m")
		return s.Watch == nil
	})
	s := r.status(t, "m")
	if s.Active != "2" || s.Previous != "1" || s.Last.Result != update.ResultHealthy {
		t.Fatalf("after the watch: %+v last %+v", s, s.Last)
	}
}

// TestWatchSurvivesRestart restarts the agent during the watch window: the
// watch resumes and still rolls back a bad version.
func TestWatchSurvivesRestart(t *testing.T) {
	rs := startRegistry(t)
	ref1 := push(t, rs, "m", "1", fixture(t, "scale2.onnx"), nil)
	ref2 := push(t, rs, "m", "2", fixture(t, "nan4.onnx"), nil)
	dir := t.TempDir()
	r := startAgent(t, dir, fastWatch)
	mustUpdate(t, r, "m", ref1, update.UpdateOptions{})
	mustUpdate(t, r, "m", ref2, update.UpdateOptions{})
	r.stop()

	r = startAgent(t, dir, fastWatch)
	if s := r.status(t, "m"); s.Active != "2" || s.Watch == nil || s.Watch.Version != "2" {
		t.Fatalf("after restart: %+v watch %+v", s, s.Watch)
	}
	driveUntil(t, r, [4]float32{-1, 2, 3, 4}, "the rollback", rolledBack(t, r))
	if k, ver := r.scaleOf(t, "m"); k != 2 || ver != "1" {
		t.Fatalf("after rollback: ×%g from %s", k, ver)
	}
}

// TestSwitchUnderLoad drives requests without a version from several
// goroutines while the model is updated, rolled back and updated again: no
// request fails, every answer comes from a whole version (never a mix), and
// once an update returns every new request gets the new version.
func TestSwitchUnderLoad(t *testing.T) {
	rs := startRegistry(t)
	ref1 := push(t, rs, "m", "1", fixture(t, "scale2.onnx"), nil)
	ref2 := push(t, rs, "m", "2", fixture(t, "scale3.onnx"), nil)
	r := startAgent(t, t.TempDir(), nil)
	mustUpdate(t, r, "m", ref1, update.UpdateOptions{})

	// phase is the version every request must get while no switch runs; a
	// new phase starts when a switch begins ("" while it runs) and ends.
	type phase struct{ version string }
	var (
		cur      atomic.Pointer[phase]
		requests atomic.Int64
		mu       sync.Mutex // guards failures
		failures []string
	)
	cur.Store(&phase{version: "1"})
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(failures) < 10 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				before := cur.Load()
				y, ver, err := r.infer(ctx, "m", [4]float32{1, 2, 3, 4})
				if ctx.Err() != nil {
					return
				}
				requests.Add(1)
				switch {
				case err != nil:
					fail("request failed: %v", err)
				case !(ver == "1" && y[0] == 2 && y[3] == 8) && !(ver == "2" && y[0] == 3 && y[3] == 12):
					fail("version %s answered %v", ver, y)
				case cur.Load() == before && before.version != "" && ver != before.version:
					fail("version %s answered between switches, after the switch to %s returned", ver, before.version)
				}
			}
		})
	}
	waitMore := func(n int64) {
		target := requests.Load() + n
		testenv.Eventually(t, "traffic", 20*time.Second, func() bool { return requests.Load() >= target })
	}
	waitMore(100)
	switches := []func() string{
		func() string { return mustUpdate(t, r, "m", ref2, update.UpdateOptions{}).Version },
		func() string {
			res, err := r.u.Rollback(context.Background(), "m")
			if err != nil {
				t.Error(err)
				return ""
			}
			return res.Version
		},
		func() string { return mustUpdate(t, r, "m", ref2, update.UpdateOptions{}).Version },
	}
	for _, sw := range switches {
		cur.Store(&phase{})
		start := time.Now()
		v := sw()
		t.Logf("switch to %s took %v", v, time.Since(start))
		cur.Store(&phase{version: v})
		waitMore(100)
	}
	cancel()
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d requests; failures:\n%s", requests.Load(), strings.Join(failures, "\n"))
	}
	t.Logf("%d requests across 3 switches, none failed", requests.Load())
}
