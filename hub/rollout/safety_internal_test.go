package rollout

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/hub/registry"
	"github.com/edgefleet/edgefleet/hub/shadow"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// These tests drive the manager step by step: the real registry on a bbolt
// file, device messages injected as shadow events (in the order a broker
// would deliver them), and the manager's clock moved by hand. Nothing
// sleeps: "did not promote" is checked after an explicit step.

// eventShadow hands device events to the manager and records the desired
// states it publishes.
type eventShadow struct {
	mu        sync.Mutex
	listeners []func(shadow.Event)
	published []wire.DesiredState
}

func (s *eventShadow) PublishDesired(_ context.Context, ds wire.DesiredState) {
	s.mu.Lock()
	s.published = append(s.published, ds)
	s.mu.Unlock()
}

func (s *eventShadow) Listen(fn func(shadow.Event)) {
	s.mu.Lock()
	s.listeners = append(s.listeners, fn)
	s.mu.Unlock()
}

func (s *eventShadow) emit(e shadow.Event) {
	s.mu.Lock()
	ls := slices.Clone(s.listeners)
	s.mu.Unlock()
	for _, fn := range ls {
		fn(e)
	}
}

// stepEnv is a manager over n enrolled devices dev-0 … dev-(n-1).
type stepEnv struct {
	t   *testing.T
	m   *Manager
	reg *registry.Registry
	sh  *eventShadow
	now time.Time
	ids []string
}

const (
	stepModel = "digits"
	digestV1  = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	digestV2  = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

func newStepEnv(t *testing.T, n int) *stepEnv {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "hub.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	reg, err := registry.New(db)
	if err != nil {
		t.Fatal(err)
	}
	e := &stepEnv{t: t, reg: reg, sh: &eventShadow{}, now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	for i := range n {
		id := fmt.Sprintf("dev-%d", i)
		if _, err := reg.Enroll(context.Background(), registry.Enrollment{ID: id, Labels: map[string]string{"site": "lab"},
			CertSerial: fmt.Sprint(i + 1), CertNotAfter: e.now.Add(24 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
		e.ids = append(e.ids, id)
	}
	e.m, err = New(Options{DB: db, Registry: reg, Shadow: e.sh, Now: func() time.Time { return e.now }})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range e.ids {
		e.online(id, true)
		e.report(id, 0, digestV1, "1", wire.StateActive, wire.Health{})
	}
	return e
}

func (e *stepEnv) step() { e.m.step(context.Background()) }

func (e *stepEnv) advance(d time.Duration) { e.now = e.now.Add(d) }

func (e *stepEnv) online(id string, on bool) {
	e.sh.emit(shadow.Event{Kind: shadow.EventPresence, DeviceID: id, Presence: &wire.Presence{Online: on}})
}

// report delivers a reported state: applied revision rev, the model active
// at digest (version v) in state.
func (e *stepEnv) report(id string, rev int64, digest, v, state string, h wire.Health) {
	e.sh.emit(shadow.Event{Kind: shadow.EventReported, DeviceID: id, Reported: &wire.ReportedState{DeviceID: id,
		AppliedRevision: rev, Models: map[string]wire.ReportedModel{stepModel: {ActiveVersion: v, ActiveDigest: digest,
			State: state, Health: h}}}})
}

// desired returns the device's desired model and revision.
func (e *stepEnv) desired(id string) (wire.DesiredModel, int64) {
	e.t.Helper()
	ds, err := e.reg.Desired(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return ds.Models[stepModel], ds.Revision
}

// activate reports that the device applied its desired revision and runs
// version 2.
func (e *stepEnv) activate(id string) {
	e.t.Helper()
	dm, rev := e.desired(id)
	if dm.Digest != digestV2 {
		e.t.Fatalf("%s desires %+v, not version 2", id, dm)
	}
	e.report(id, rev, digestV2, "2", wire.StateActive, wire.Health{Requests: 50})
}

// create starts a rollout of version 2 in waves 50 %, 100 % and steps once:
// the canary wave takes half the devices in.
func (e *stepEnv) create(bake time.Duration) (string, []string) {
	e.t.Helper()
	st, err := e.m.Create(context.Background(), Spec{Model: stepModel, Ref: "hub:5000/models/digits:2", Digest: digestV2,
		Version: "2", Selector: "site=lab", Waves: []float64{50, 100}, Bake: Duration(bake)})
	if err != nil {
		e.t.Fatal(err)
	}
	e.step()
	s := e.status(st.ID)
	if s.State != StateRunning || s.Counts.Assigned != len(e.ids)/2 {
		e.t.Fatalf("after the first step: %s, counts %+v", s.State, s.Counts)
	}
	var canary []string
	for _, d := range s.Devices {
		canary = append(canary, d.ID)
	}
	return st.ID, canary
}

func (e *stepEnv) status(id string) Status {
	e.t.Helper()
	st, err := e.m.Get(context.Background(), id, true)
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

// outsiders fails the test if a device outside the canary was ever
// published a desired state naming the rollout.
func (e *stepEnv) noneOutside(id string, canary []string) {
	e.t.Helper()
	e.sh.mu.Lock()
	defer e.sh.mu.Unlock()
	for _, ds := range e.sh.published {
		if dm := ds.Models[stepModel]; dm.Rollout == id && !slices.Contains(canary, ds.DeviceID) {
			e.t.Fatalf("%s, outside the canary wave %v, was assigned the new version (revision %d)", ds.DeviceID, canary, ds.Revision)
		}
	}
}

// A canary device that has not reported the new version when it drops
// off holds the wave: it may have rolled back on its own.
func TestWaveHeldByCanaryThatWentOfflineUnreported(t *testing.T) {
	e := newStepEnv(t, 4)
	const bake = 10 * time.Second
	id, canary := e.create(bake)
	e.activate(canary[0])
	e.online(canary[1], false) // no report of version 2
	e.step()
	e.advance(time.Hour)
	e.step()
	if st := e.status(id); st.Wave != 0 || st.Counts.Assigned != 2 || !st.Settled.IsZero() {
		t.Fatalf("wave %d, settled %v, counts %+v: want the canary wave held", st.Wave, st.Settled, st.Counts)
	}
	e.noneOutside(id, canary)

	// It comes back and reports the new version: the bake time starts
	// from its activation, not from the first device's.
	e.online(canary[1], true)
	e.activate(canary[1])
	e.step()
	e.advance(bake - time.Second)
	e.step()
	if st := e.status(id); st.Wave != 0 {
		t.Fatalf("promoted %v after the last canary's activation, bake %v", bake-time.Second, bake)
	}
	e.noneOutside(id, canary)
	e.advance(time.Second)
	e.step()
	e.step() // the promoted wave takes its devices in
	if st := e.status(id); st.Wave != 1 || st.Counts.Assigned != 4 {
		t.Fatalf("wave %d, counts %+v: want promoted once the bake time passed", st.Wave, st.Counts)
	}
}

// A canary device that reported the new version and then went offline
// holds the wave too: a rollback it makes meanwhile cannot reach the hub.
func TestWaveHeldByUpdatedCanaryOffline(t *testing.T) {
	e := newStepEnv(t, 4)
	id, canary := e.create(time.Second)
	e.activate(canary[0])
	e.activate(canary[1])
	e.step()
	e.online(canary[1], false)
	e.advance(time.Hour)
	e.step()
	if st := e.status(id); st.Wave != 0 || st.State != StateRunning {
		t.Fatalf("%s wave %d: want the canary wave held while a canary is offline", st.State, st.Wave)
	}
	e.noneOutside(id, canary)
}

// The bake time counts from the latest confirmed activation in the wave:
// with one canary device offline when the first reports, the wave does
// not settle at the first report.
func TestBakeCountsFromLastActivation(t *testing.T) {
	e := newStepEnv(t, 4)
	const bake = 30 * time.Second
	id, canary := e.create(bake)
	e.online(canary[1], false)
	e.activate(canary[0])
	first := e.now
	e.step()
	e.advance(20 * time.Second)
	e.online(canary[1], true)
	e.activate(canary[1])
	last := e.now
	e.step()
	st := e.status(id)
	if !st.Settled.Equal(last) {
		t.Fatalf("settled %v: want the last activation %v (the first was %v)", st.Settled, last, first)
	}
	e.advance(bake - time.Millisecond)
	e.step()
	if st := e.status(id); st.Wave != 0 {
		t.Fatalf("promoted before the bake time after the last activation")
	}
	e.noneOutside(id, canary)
}

// A local rollback the agent reports ends the rollout in the step that
// reads the report, also when the bake time has passed meanwhile: no device
// outside the canary wave is ever assigned.
func TestLocalRollbackReportHaltsBeforePromotion(t *testing.T) {
	e := newStepEnv(t, 4)
	const bake = 5 * time.Second
	id, canary := e.create(bake)
	e.activate(canary[0])
	e.activate(canary[1])
	e.step()
	e.advance(bake)
	_, rev := e.desired(canary[0])
	e.report(canary[0], rev, digestV1, "1", wire.StateRolledBack, wire.Health{Requests: 10})
	e.step()
	st := e.status(id)
	if st.State != StateHalted && st.State != StateRolledBack {
		t.Fatalf("%s (%s): want halted on the canary's rollback", st.State, st.Reason)
	}
	if !strings.Contains(st.Reason, "rolled_back") {
		t.Fatalf("reason %q: want the device's rollback named", st.Reason)
	}
	e.noneOutside(id, canary)
	for _, dev := range canary {
		if dm, _ := e.desired(dev); dm.Digest != digestV1 {
			t.Fatalf("%s desires %+v after the halt, want version 1", dev, dm)
		}
	}
}

// The last wave completes with an offline device still to update: it
// catches up when it returns, and nothing is spread further.
func TestLastWaveCompletesWithOfflineDevice(t *testing.T) {
	e := newStepEnv(t, 4)
	id, canary := e.create(time.Second)
	for _, d := range canary {
		e.activate(d)
	}
	e.step()
	e.advance(time.Second)
	e.step()
	e.step() // the promoted wave takes its devices in
	st := e.status(id)
	if st.Wave != 1 || st.Counts.Assigned != 4 {
		t.Fatalf("wave %d counts %+v", st.Wave, st.Counts)
	}
	var rest []string
	for _, d := range st.Devices {
		if d.Wave == 1 {
			rest = append(rest, d.ID)
		}
	}
	e.online(rest[1], false)
	e.activate(rest[0])
	e.step()
	e.advance(time.Second)
	e.step()
	if st := e.status(id); st.State != StateCompleted || st.Counts.Updating != 1 {
		t.Fatalf("%s counts %+v: want completed with the offline device pending", st.State, st.Counts)
	}
}
