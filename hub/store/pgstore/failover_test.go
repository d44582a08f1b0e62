package pgstore_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/deploy/testenv"
	"github.com/edgefleet/edgefleet/hub/registry"
	"github.com/edgefleet/edgefleet/hub/rollout"
	"github.com/edgefleet/edgefleet/hub/shadow"
	"github.com/edgefleet/edgefleet/hub/store/pgstore"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// fleet stands in for the devices and the messaging between them and the
// hub replicas: a published desired state is applied and reported back to
// every replica's listeners a moment later.
type fleet struct {
	store *pgstore.Store
	mu    sync.Mutex
	fns   []func(shadow.Event)
	pubs  map[string][]int64 // device → published revisions
}

func (f *fleet) Listen(fn func(shadow.Event)) {
	f.mu.Lock()
	f.fns = append(f.fns, fn)
	f.mu.Unlock()
}

func (f *fleet) PublishDesired(ctx context.Context, ds wire.DesiredState) {
	f.mu.Lock()
	f.pubs[ds.DeviceID] = append(f.pubs[ds.DeviceID], ds.Revision)
	f.mu.Unlock()
	go func() {
		time.Sleep(30 * time.Millisecond) // the device downloads and activates
		models := map[string]wire.ReportedModel{}
		for name, m := range ds.Models {
			models[name] = wire.ReportedModel{ActiveVersion: m.Version, ActiveDigest: m.Digest, State: "active"}
		}
		rs := wire.ReportedState{DeviceID: ds.DeviceID, Time: time.Now(), AppliedRevision: ds.Revision, Models: models}
		f.store.Report(context.Background(), rs)
		f.mu.Lock()
		fns := append([]func(shadow.Event){}, f.fns...)
		f.mu.Unlock()
		for _, fn := range fns {
			fn(shadow.Event{Kind: shadow.EventReported, DeviceID: ds.DeviceID, Reported: &rs})
		}
	}()
}

// TestRolloutFailover runs a rollout's waves in whichever of two hub
// replicas holds the lease. The leader is stopped in the middle of a wave
// (its lease context ends between two store transactions, as a crash
// would leave it); the other replica loads the rollout from PostgreSQL and
// finishes it: every device is taken in once (one desired revision), and
// every wave has its devices.
func TestRolloutFailover(t *testing.T) {
	srv := testenv.SharedPostgres(t)
	dsn := srv.DB(t)
	s := open(t, dsn)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n = 40
	for i := range n {
		id := fmt.Sprintf("dev-%02d", i)
		if _, err := s.Enroll(ctx, registry.Enrollment{ID: id, CertSerial: fmt.Sprint(i + 1)}); err != nil {
			t.Fatal(err)
		}
		// Connected devices announce themselves (a new leader reads
		// presence from the registry).
		if err := s.SetPresence(ctx, id, wire.Presence{Online: true}); err != nil {
			t.Fatal(err)
		}
	}
	fl := &fleet{store: s, pubs: map[string][]int64{}}
	digest := "sha256:" + fmt.Sprintf("%064x", 5)
	spec := rollout.Spec{Model: "digits", Ref: "reg/digits@" + digest, Digest: digest, Version: "2",
		Waves: []float64{10, 30, 60, 100}, Bake: rollout.Duration(time.Millisecond)}
	creator, err := rollout.New(rollout.Options{Store: s.Rollouts(), Registry: s, Shadow: &fleet{pubs: map[string][]int64{}}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := creator.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}

	leaders := make(chan string, 4)
	replica := func(name string) context.CancelFunc {
		rctx, rcancel := context.WithCancel(ctx)
		go pgstore.RunLeader(rctx, pgstore.LeaderOptions{DSN: dsn, Key: 7, Poll: 50 * time.Millisecond},
			func(lctx context.Context) {
				// A new term loads the rollouts as the last leader left them.
				m, err := rollout.New(rollout.Options{Store: s.Rollouts(), Registry: s, Shadow: fl,
					Tick: 20 * time.Millisecond, Relist: 100 * time.Millisecond, Logger: verboseLog(name)})
				if err != nil {
					t.Error(err)
					return
				}
				leaders <- name
				m.Run(lctx)
			})
		return rcancel
	}
	stopA := replica("a")
	if l := <-leaders; l != "a" {
		t.Fatalf("first leader %s", l)
	}
	stopB := replica("b")
	defer stopB()

	state := func() (rollout.Rollout, []rollout.Device) {
		rs, devs, err := s.Rollouts().Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.ID == st.ID {
				return r, devs[r.ID]
			}
		}
		t.Fatalf("rollout %s not stored", st.ID)
		return rollout.Rollout{}, nil
	}
	testenv.Eventually(t, "wave 2 under way", time.Minute, func() bool { r, _ := state(); return r.Wave >= 1 })
	stopA()
	killedAt, _ := state()
	if l := <-leaders; l != "b" {
		t.Fatalf("leader after a stopped: %s", l)
	}
	testenv.Eventually(t, "rollout completed by b", time.Minute, func() bool {
		r, _ := state()
		return r.State == rollout.StateCompleted
	})
	r, devs := state()
	t.Logf("a stopped at wave %d; b completed at wave %d", killedAt.Wave, r.Wave)
	if len(devs) != n {
		t.Errorf("%d devices taken in, want %d", len(devs), n)
	}
	waves := map[int]int{}
	for _, d := range devs {
		waves[d.Wave]++
		ds, err := s.Desired(ctx, d.ID)
		if err != nil || ds.Revision != 1 {
			t.Errorf("%s: desired revision %d (%v), want 1: taken in once", d.ID, ds.Revision, err)
		}
	}
	for w := range spec.Waves {
		if waves[w] == 0 {
			t.Errorf("wave %d has no device (skipped): %v", w, waves)
		}
	}
	fl.mu.Lock()
	defer fl.mu.Unlock()
	for id, revs := range fl.pubs {
		if len(revs) != 1 {
			t.Errorf("%s: desired published %d times (%v), want once", id, len(revs), revs)
		}
	}
}

func verboseLog(replica string) *slog.Logger {
	if !testing.Verbose() {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, nil)).With("replica", replica)
}
