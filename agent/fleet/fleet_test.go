package fleet_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/edgefleet/edgefleet/deploy/testenv"
	"github.com/edgefleet/edgefleet/hub/hubtest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/fleet"
	"github.com/edgefleet/edgefleet/hub"
	"github.com/edgefleet/edgefleet/hub/enroll"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// These tests run the real hub in-process (the fleet package itself does
// not import it; only its tests do).

// applier records what it is asked to apply; failRev makes one revision
// fail (the fault the tests inject).
type applier struct {
	mu      sync.Mutex
	applied []int64
	failRev int64
	// transient fails the first this many Apply calls with
	// fleet.ErrTransient (a full disk, say).
	transient int
}

func (a *applier) Apply(_ context.Context, ds wire.DesiredState) (map[string]wire.ReportedModel, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.applied = append(a.applied, ds.Revision)
	out := map[string]wire.ReportedModel{}
	for name, m := range ds.Models {
		out[name] = wire.ReportedModel{ActiveVersion: m.Version, ActiveDigest: m.Digest, State: wire.StateActive}
	}
	if ds.Revision == a.failRev {
		return out, fmt.Errorf("golden vector mismatch in revision %d", ds.Revision)
	}
	if a.transient > 0 {
		a.transient--
		return out, fmt.Errorf("%w: write cache: no space left on device", fleet.ErrTransient)
	}
	return out, nil
}

func (a *applier) revisions() []int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]int64(nil), a.applied...)
}

// agent is a running fleet client.
type agent struct {
	*fleet.Client
	stop func()
}

func runAgent(t *testing.T, opts fleet.Options) *agent {
	t.Helper()
	opts.MinBackoff, opts.MaxBackoff = 20*time.Millisecond, 200*time.Millisecond
	if opts.HeartbeatInterval == 0 {
		opts.HeartbeatInterval = time.Second
	}
	c, err := fleet.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("fleet Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return &agent{Client: c, stop: stop}
}

func model(v string) map[string]wire.DesiredModel {
	return map[string]wire.DesiredModel{"digits": {Ref: "127.0.0.1:5000/models/digits:" + v, Version: v}}
}

func TestEnrollApplyRestartConverge(t *testing.T) {
	ctx := context.Background()
	h := hubtest.Start(t, hub.Options{})
	dir := t.TempDir()
	app := &applier{}
	tok := h.Token(t, enroll.TokenOptions{Labels: map[string]string{"site": "berlin"}})
	a := runAgent(t, fleet.Options{Dir: dir, HubURL: h.APIURL(), Token: tok, DeviceID: "edge-1",
		AgentVersion: "1.2.3", Applier: app, Hardware: wire.Hardware{Providers: []string{"cpu"}}})

	testenv.Eventually(t, "device online", 15*time.Second, func() bool {
		d, err := h.Registry().Get(ctx, "edge-1")
		return err == nil && d.IsOnline(time.Now()) && d.AgentVersion == "1.2.3" && d.HeartbeatSeconds == 1
	})
	d, _ := h.Registry().Get(ctx, "edge-1")
	if d.Labels["site"] != "berlin" || d.Hardware.Cores == 0 || d.Hardware.Providers[0] != "cpu" || d.HeartbeatSeconds != 1 {
		t.Fatalf("inventory %+v", d)
	}

	// Desired state reaches the running agent and is reported back.
	if _, err := h.SetDesired(ctx, "edge-1", model("1")); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "revision 1 applied and reported", 15*time.Second, func() bool {
		d, _ := h.Registry().Get(ctx, "edge-1")
		return d.AppliedRevision == 1 && d.Models["digits"].ActiveVersion == "1"
	})
	// The same models again: no new revision, nothing applied.
	if ds, err := h.SetDesired(ctx, "edge-1", model("1")); err != nil || ds.Revision != 1 {
		t.Fatalf("SetDesired same = %+v, %v", ds, err)
	}

	// Restart: no token needed, same identity, the retained revision 1 is
	// a no-op.
	a.stop()
	testenv.Eventually(t, "device offline after a clean stop", 15*time.Second, func() bool {
		d, _ := h.Registry().Get(ctx, "edge-1")
		return !d.Online
	})
	// Offline for "days": two revisions pile up; only the newest matters.
	if _, err := h.SetDesired(ctx, "edge-1", model("2")); err != nil {
		t.Fatal(err)
	}
	if _, err := h.SetDesired(ctx, "edge-1", model("3")); err != nil {
		t.Fatal(err)
	}
	a2 := runAgent(t, fleet.Options{Dir: dir, HubURL: h.APIURL(), Applier: app, AgentVersion: "1.2.3"})
	if id, ok := a2.Identity(); !ok || id.DeviceID != "edge-1" {
		t.Fatalf("restarted agent identity %+v (re-enrolled?)", id)
	}
	testenv.Eventually(t, "revision 3 applied after reconnecting", 15*time.Second, func() bool {
		d, _ := h.Registry().Get(ctx, "edge-1")
		return d.AppliedRevision == 3 && d.Models["digits"].ActiveVersion == "3"
	})
	if got := fmt.Sprint(app.revisions()); got != "[1 3]" {
		t.Fatalf("applied revisions %s, want [1 3] (each once, skipping the superseded 2)", got)
	}
	if devs, _ := h.Registry().List(ctx, mustSelector(t, "")); len(devs) != 1 {
		t.Fatalf("%d devices registered, want 1", len(devs))
	}
}

func TestFailedRevisionNotRetried(t *testing.T) {
	ctx := context.Background()
	h := hubtest.Start(t, hub.Options{})
	dir := t.TempDir()
	app := &applier{failRev: 1}
	a := runAgent(t, fleet.Options{Dir: dir, HubURL: h.APIURL(), Token: h.Token(t, enroll.TokenOptions{}), DeviceID: "edge-f", Applier: app})
	testenv.Eventually(t, "online", 15*time.Second, func() bool {
		d, err := h.Registry().Get(ctx, "edge-f")
		return err == nil && d.Online
	})
	if _, err := h.SetDesired(ctx, "edge-f", model("bad")); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "failure reported", 15*time.Second, func() bool {
		d, _ := h.Registry().Get(ctx, "edge-f")
		return d.FailedRevision == 1 && strings.Contains(d.LastError, "golden vector")
	})
	// Reconnecting redelivers the retained revision 1: not applied again.
	a.stop()
	testenv.Eventually(t, "offline", 15*time.Second, func() bool {
		d, _ := h.Registry().Get(ctx, "edge-f")
		return !d.Online
	})
	a = runAgent(t, fleet.Options{Dir: dir, Applier: app})
	testenv.Eventually(t, "reconnected and reported", 15*time.Second, func() bool {
		d, _ := h.Registry().Get(ctx, "edge-f")
		return d.Online && d.FailedRevision == 1
	})
	if _, err := h.SetDesired(ctx, "edge-f", model("good")); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "revision 2 applied", 15*time.Second, func() bool {
		d, _ := h.Registry().Get(ctx, "edge-f")
		return d.AppliedRevision == 2 && d.LastError == ""
	})
	if got := fmt.Sprint(app.revisions()); got != "[1 2]" {
		t.Fatalf("applied revisions %s, want [1 2] (the failed one not retried)", got)
	}
	_ = a
}

// A revision that failed for a reason that passes on its own (a full disk)
// is retried with backoff until it applies, and never recorded as failed;
// found by the HIL suite's disk-full scenario, where the device stayed on
// the old version after space returned.
func TestTransientFailureRetried(t *testing.T) {
	ctx := context.Background()
	h := hubtest.Start(t, hub.Options{})
	app := &applier{transient: 3}
	runAgent(t, fleet.Options{Dir: t.TempDir(), HubURL: h.APIURL(), Token: h.Token(t, enroll.TokenOptions{}), DeviceID: "edge-t", Applier: app})
	testenv.Eventually(t, "online", 15*time.Second, func() bool {
		d, err := h.Registry().Get(ctx, "edge-t")
		return err == nil && d.Online
	})
	if _, err := h.SetDesired(ctx, "edge-t", model("1")); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "revision 1 applied after the retries", 15*time.Second, func() bool {
		d, _ := h.Registry().Get(ctx, "edge-t")
		return d.AppliedRevision == 1 && d.LastError == ""
	})
	d, _ := h.Registry().Get(ctx, "edge-t")
	if d.FailedRevision != 0 {
		t.Fatalf("failed revision %d: a transient failure must not be recorded as failed", d.FailedRevision)
	}
	if got := fmt.Sprint(app.revisions()); got != "[1 1 1 1]" {
		t.Fatalf("applied revisions %s, want [1 1 1 1] (three transient failures, then success)", got)
	}
}

func TestEnrollmentRefusals(t *testing.T) {
	h := hubtest.Start(t, hub.Options{})
	used := h.Token(t, enroll.TokenOptions{})
	c, err := fleet.New(fleet.Options{Dir: t.TempDir(), HubURL: h.APIURL(), Token: used, Applier: &applier{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Enroll(context.Background()); err != nil {
		t.Fatal(err)
	}
	fresh := h.Token(t, enroll.TokenOptions{})
	secret, _, _ := wire.ParseToken(fresh)
	otherHub := hubtest.Start(t, hub.Options{})
	tests := []struct {
		name  string
		token string
		url   string
		want  error
	}{
		{"reused token", used, h.APIURL(), fleet.ErrEnrollRefused},
		{"wrong CA pin", wire.FormatToken(secret, otherHub.CAFingerprint()), h.APIURL(), fleet.ErrHubMismatch},
		{"right pin, another hub", fresh, otherHub.APIURL(), fleet.ErrHubMismatch},
		{"malformed token", "not-a-token", h.APIURL(), fleet.ErrEnrollRefused},
		{"no token", "", h.APIURL(), fleet.ErrNotEnrolled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := fleet.New(fleet.Options{Dir: t.TempDir(), HubURL: tt.url, Token: tt.token, Applier: &applier{}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Enroll(context.Background()); !errors.Is(err, tt.want) {
				t.Fatalf("Enroll = %v, want %v", err, tt.want)
			}
			if _, ok := c.Identity(); ok {
				t.Fatal("identity stored after a refused enrollment")
			}
		})
	}
	// The fresh token was not consumed by the mismatched attempts.
	c, _ = fleet.New(fleet.Options{Dir: t.TempDir(), HubURL: h.APIURL(), Token: fresh, Applier: &applier{}})
	if _, err := c.Enroll(context.Background()); err != nil {
		t.Fatalf("fresh token after refused attempts: %v", err)
	}
}

func TestRunRetriesUntilHubAppears(t *testing.T) {
	// Nothing listens yet: Run keeps retrying enrollment until ctx ends,
	// then returns nil.
	c, err := fleet.New(fleet.Options{Dir: t.TempDir(), HubURL: "https://127.0.0.1:1",
		Token: wire.FormatToken("AAAAAAAAAAAAAAAAAAAAAA", strings.Repeat("ab", 16)), Applier: &applier{},
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := c.Run(ctx); err != nil {
		t.Fatalf("Run = %v, want nil after ctx ends", err)
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name string
		opts fleet.Options
	}{
		{"no dir", fleet.Options{Applier: &applier{}}},
		{"no applier", fleet.Options{Dir: t.TempDir()}},
		{"bad device id", fleet.Options{Dir: t.TempDir(), Applier: &applier{}, DeviceID: "a/b"}},
	}
	for _, tt := range tests {
		if _, err := fleet.New(tt.opts); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
}

func TestReconnectAcrossHubRestarts(t *testing.T) {
	ctx := context.Background()
	h := hubtest.Start(t, hub.Options{})
	app := &applier{}
	dir := t.TempDir()
	a := runAgent(t, fleet.Options{Dir: dir, HubURL: h.APIURL(), Token: h.Token(t, enroll.TokenOptions{}), DeviceID: "edge-r", Applier: app})
	testenv.Eventually(t, "online", 15*time.Second, func() bool {
		d, err := h.Registry().Get(ctx, "edge-r")
		return err == nil && d.Online
	})

	// Phase 1: the hub goes away under a connected agent; paho's
	// automatic reconnection brings it back to the restarted hub.
	h.Restart()
	if _, err := h.SetDesired(ctx, "edge-r", model("1")); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "revision 1 applied after the hub restarted", 15*time.Second, func() bool {
		d, _ := h.Registry().Get(ctx, "edge-r")
		return d.AppliedRevision == 1 && d.Online
	})

	// Phase 2: the agent starts while the hub is down; its own backoff
	// loop connects once the hub is back.
	h.Stop()
	a.stop()
	a = runAgent(t, fleet.Options{Dir: dir, Applier: app})
	h.Restart()
	if _, err := h.SetDesired(ctx, "edge-r", model("2")); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "revision 2 applied", 15*time.Second, func() bool {
		d, _ := h.Registry().Get(ctx, "edge-r")
		return d.AppliedRevision == 2
	})
	if got := fmt.Sprint(app.revisions()); got != "[1 2]" {
		t.Fatalf("applied %s, want [1 2]", got)
	}
}
