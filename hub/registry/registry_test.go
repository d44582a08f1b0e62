package registry

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/ota/wire"
)

func openDB(t *testing.T, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func newRegistry(t *testing.T) (*Registry, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hub.db")
	db := openDB(t, path)
	t.Cleanup(func() { db.Close() })
	r, err := New(db)
	if err != nil {
		t.Fatal(err)
	}
	return r, path
}

func enroll(t *testing.T, r *Registry, id, serial string, labels map[string]string) Device {
	t.Helper()
	d, err := r.Enroll(context.Background(), Enrollment{ID: id, CertSerial: serial, Labels: labels,
		Hardware: wire.Hardware{Cores: 2}, AgentVersion: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestEnrollAndCheck(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t)
	d := enroll(t, r, "d1", "aa", map[string]string{"site": "berlin"})
	if d.ID != "d1" || d.Labels["site"] != "berlin" || d.Hardware.Cores != 2 || d.Enrolled.IsZero() {
		t.Fatalf("enrolled device %+v", d)
	}
	if err := r.Check(ctx, "d1", "aa"); err != nil {
		t.Fatalf("Check current cert: %v", err)
	}
	tests := []struct {
		name   string
		id     string
		serial string
		want   error
	}{
		{"unknown device", "d2", "aa", ErrNotFound},
		{"other serial", "d1", "bb", ErrSuperseded},
	}
	for _, tt := range tests {
		if err := r.Check(ctx, tt.id, tt.serial); !errors.Is(err, tt.want) {
			t.Errorf("%s: Check = %v, want %v", tt.name, err, tt.want)
		}
	}

	// Re-enrollment needs Replace; then the old certificate is superseded.
	if _, err := r.Enroll(ctx, Enrollment{ID: "d1", CertSerial: "bb"}); !errors.Is(err, ErrExists) {
		t.Fatalf("re-enroll without Replace = %v, want ErrExists", err)
	}
	if err := r.Check(ctx, "d1", "aa"); err != nil {
		t.Fatalf("refused re-enrollment changed the device: %v", err)
	}
	d, err := r.Enroll(ctx, Enrollment{ID: "d1", CertSerial: "bb", Labels: map[string]string{"rack": "2"}, Replace: true})
	if err != nil {
		t.Fatal(err)
	}
	if d.Labels["site"] != "berlin" || d.Labels["rack"] != "2" {
		t.Fatalf("labels not merged: %v", d.Labels)
	}
	if err := r.Check(ctx, "d1", "aa"); !errors.Is(err, ErrSuperseded) {
		t.Fatalf("old cert after re-enrollment: %v, want ErrSuperseded", err)
	}
	if err := r.Check(ctx, "d1", "bb"); err != nil {
		t.Fatalf("new cert: %v", err)
	}
	revoked, err := r.RevokedCerts(ctx)
	if err != nil || len(revoked) != 1 || revoked[0].Serial != "aa" || revoked[0].Device != "d1" {
		t.Fatalf("RevokedCerts = %+v, %v", revoked, err)
	}
}

func TestEnrollRejects(t *testing.T) {
	r, _ := newRegistry(t)
	tests := []struct {
		name string
		e    Enrollment
	}{
		{"bad id", Enrollment{ID: "a/b", CertSerial: "1"}},
		{"reserved id", Enrollment{ID: "_hub", CertSerial: "1"}},
		{"bad label", Enrollment{ID: "d1", CertSerial: "1", Labels: map[string]string{"a b": "c"}}},
		{"no serial", Enrollment{ID: "d1"}},
	}
	for _, tt := range tests {
		if _, err := r.Enroll(context.Background(), tt.e); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", tt.name, err)
		}
	}
	if devs, _ := r.List(context.Background(), Selector{}); len(devs) != 0 {
		t.Fatalf("refused enrollments left devices: %+v", devs)
	}
}

func TestRevoke(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t)
	enroll(t, r, "d1", "aa", nil)
	d, err := r.Revoke(ctx, "d1")
	if err != nil || !d.Revoked || d.RevokedAt.IsZero() {
		t.Fatalf("Revoke = %+v, %v", d, err)
	}
	if _, err := r.Revoke(ctx, "d1"); err != nil {
		t.Fatalf("second Revoke: %v", err)
	}
	if _, err := r.Revoke(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Revoke unknown = %v", err)
	}
	checks := []struct {
		name string
		err  error
	}{
		{"check", r.Check(ctx, "d1", "aa")},
		{"enroll", func() error {
			_, err := r.Enroll(ctx, Enrollment{ID: "d1", CertSerial: "cc", Replace: true})
			return err
		}()},
		{"desired", func() error { _, _, err := r.SetDesired(ctx, "d1", nil); return err }()},
		{"report", r.Report(ctx, wire.ReportedState{DeviceID: "d1"})},
		{"heartbeat", r.Heartbeat(ctx, "d1", wire.Heartbeat{})},
	}
	for _, c := range checks {
		if !errors.Is(c.err, ErrRevoked) {
			t.Errorf("%s after revoke: %v, want ErrRevoked", c.name, c.err)
		}
	}
	if err := r.SetPresence(ctx, "d1", wire.Presence{Online: true}); err != nil {
		t.Fatal(err)
	}
	if d, _ := r.Get(ctx, "d1"); d.Online || d.IsOnline(time.Now()) {
		t.Fatal("revoked device shown online")
	}
	revoked, _ := r.RevokedCerts(ctx)
	if len(revoked) != 1 || revoked[0].Serial != "aa" {
		t.Fatalf("RevokedCerts = %+v", revoked)
	}
}

func TestDesiredRevisions(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t)
	enroll(t, r, "d1", "aa", nil)
	ds, err := r.Desired(ctx, "d1")
	if err != nil || ds.Revision != 0 || len(ds.Models) != 0 || ds.DeviceID != "d1" {
		t.Fatalf("initial desired %+v, %v", ds, err)
	}
	m1 := map[string]wire.DesiredModel{"digits": {Ref: "reg/models/digits:1"}}
	m2 := map[string]wire.DesiredModel{"digits": {Ref: "reg/models/digits:2"}}
	steps := []struct {
		name        string
		models      map[string]wire.DesiredModel
		wantRev     int64
		wantChanged bool
		wantErr     error
	}{
		{"first", m1, 1, true, nil},
		{"same again", m1, 1, false, nil},
		{"new version", m2, 2, true, nil},
		{"invalid ref", map[string]wire.DesiredModel{"digits": {Ref: ""}}, 0, false, ErrInvalid},
		{"invalid name", map[string]wire.DesiredModel{"a/b": {Ref: "r"}}, 0, false, ErrInvalid},
		{"same as current", m2, 2, false, nil},
	}
	for _, s := range steps {
		ds, changed, err := r.SetDesired(ctx, "d1", s.models)
		if !errors.Is(err, s.wantErr) || (err == nil && (ds.Revision != s.wantRev || changed != s.wantChanged)) {
			t.Fatalf("%s: rev %d changed %v err %v; want rev %d changed %v err %v",
				s.name, ds.Revision, changed, err, s.wantRev, s.wantChanged, s.wantErr)
		}
	}
	ds, _ = r.Desired(ctx, "d1")
	if ds.Revision != 2 || ds.Models["digits"].Ref != "reg/models/digits:2" {
		t.Fatalf("refused updates changed the desired state: %+v", ds)
	}
	if d, _ := r.Get(ctx, "d1"); d.DesiredRevision != 2 {
		t.Fatalf("device DesiredRevision %d", d.DesiredRevision)
	}
	// UpdateDesired changes one model and keeps the others.
	ds, changed, err := r.UpdateDesired(ctx, "d1", func(m map[string]wire.DesiredModel) error {
		m["vad"] = wire.DesiredModel{Ref: "reg/models/vad:1", Rollout: "r1"}
		return nil
	})
	if err != nil || !changed || ds.Revision != 3 || len(ds.Models) != 2 {
		t.Fatalf("UpdateDesired = %+v %v %v", ds, changed, err)
	}
	boom := errors.New("boom")
	if _, _, err := r.UpdateDesired(ctx, "d1", func(m map[string]wire.DesiredModel) error {
		delete(m, "vad")
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("UpdateDesired error = %v", err)
	}
	if ds, _ := r.Desired(ctx, "d1"); len(ds.Models) != 2 {
		t.Fatalf("failed UpdateDesired changed the state: %+v", ds)
	}
	if _, _, err := r.SetDesired(ctx, "nope", m1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("SetDesired unknown = %v", err)
	}
	var seen []string
	enroll(t, r, "d2", "bb", nil)
	if err := r.ForEachDesired(ctx, func(ds wire.DesiredState) error { seen = append(seen, ds.DeviceID); return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seen) != "[d1]" {
		t.Fatalf("ForEachDesired visited %v, want [d1]", seen)
	}
}

func TestReportUpdatesInventory(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t)
	enroll(t, r, "d1", "aa", map[string]string{"site": "berlin"})
	rs := wire.ReportedState{
		DeviceID:        "d1",
		AgentVersion:    "1.1.0",
		Hardware:        wire.Hardware{GPU: "T4", Providers: []string{"cuda", "cpu"}},
		Labels:          map[string]string{"site": "spoofed"},
		Models:          map[string]wire.ReportedModel{"digits": {ActiveVersion: "2", ActiveDigest: "sha256:x", State: wire.StateActive}},
		AppliedRevision: 4,
		Time:            time.Now(),
	}
	if err := r.Report(ctx, rs); err != nil {
		t.Fatal(err)
	}
	d, _ := r.Get(ctx, "d1")
	if d.AgentVersion != "1.1.0" || d.Hardware.GPU != "T4" || d.Models["digits"].ActiveDigest != "sha256:x" ||
		d.AppliedRevision != 4 || d.LastSeen.IsZero() {
		t.Fatalf("inventory not updated: %+v", d)
	}
	if d.Labels["site"] != "berlin" {
		t.Fatalf("device relabelled itself: %v", d.Labels)
	}
	got, ok, err := r.Reported(ctx, "d1")
	if err != nil || !ok || got.AppliedRevision != 4 {
		t.Fatalf("Reported = %+v %v %v", got, ok, err)
	}
	if err := r.Report(ctx, wire.ReportedState{DeviceID: "ghost"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("report from unknown device: %v", err)
	}
	if err := r.Report(ctx, wire.ReportedState{DeviceID: "d1", Models: map[string]wire.ReportedModel{"a b": {}}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("invalid report: %v", err)
	}
}

func TestPresenceAndHeartbeat(t *testing.T) {
	ctx := context.Background()
	r, path := newRegistry(t)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := base
	r.now = func() time.Time { return now }
	enroll(t, r, "d1", "aa", nil)
	if err := r.SetPresence(ctx, "d1", wire.Presence{Online: true}); err != nil {
		t.Fatal(err)
	}
	now = base.Add(10 * time.Second)
	if err := r.Heartbeat(ctx, "d1", wire.Heartbeat{IntervalSeconds: 30}); err != nil {
		t.Fatal(err)
	}
	d, _ := r.Get(ctx, "d1")
	if !d.Online || !d.LastSeen.Equal(now) || d.HeartbeatSeconds != 30 {
		t.Fatalf("after heartbeat: %+v", d)
	}
	if !d.IsOnline(now.Add(89*time.Second)) || d.IsOnline(now.Add(91*time.Second)) {
		t.Fatal("staleness after three missed heartbeats not applied")
	}
	now = base.Add(20 * time.Second)
	if err := r.Heartbeat(ctx, "d1", wire.Heartbeat{IntervalSeconds: 30}); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.SetPresence(ctx, "d1", wire.Presence{Online: false}); err != nil {
		t.Fatal(err)
	}
	// Reopen: LastSeen was flushed; presence persisted.
	r.db.Close()
	db := openDB(t, path)
	defer db.Close()
	r2, err := New(db)
	if err != nil {
		t.Fatal(err)
	}
	d, err = r2.Get(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	if d.Online || !d.LastSeen.Equal(base.Add(20*time.Second)) {
		t.Fatalf("after reopen: online %v last seen %v", d.Online, d.LastSeen)
	}
	if err := r2.Heartbeat(ctx, "ghost", wire.Heartbeat{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("heartbeat from unknown device: %v", err)
	}
}

func TestListAndLabels(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t)
	enroll(t, r, "c", "1", map[string]string{"site": "berlin", "gpu": "true"})
	enroll(t, r, "a", "2", map[string]string{"site": "berlin"})
	enroll(t, r, "b", "3", map[string]string{"site": "paris", "gpu": "true"})
	tests := []struct {
		sel  string
		want string
	}{
		{"", "[a b c]"},
		{"site=berlin", "[a c]"},
		{"site=berlin,gpu=true", "[c]"},
		{"site==paris", "[b]"},
		{"site!=berlin", "[b]"},
		{"gpu", "[b c]"},
		{"!gpu", "[a]"},
		{"site=rome", "[]"},
	}
	for _, tt := range tests {
		sel, err := ParseSelector(tt.sel)
		if err != nil {
			t.Fatalf("ParseSelector(%q): %v", tt.sel, err)
		}
		devs, err := r.List(ctx, sel)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, d := range devs {
			ids = append(ids, d.ID)
		}
		if got := fmt.Sprint(ids); got != tt.want && !(tt.want == "[]" && len(ids) == 0) {
			t.Errorf("List(%q) = %v, want %v", tt.sel, got, tt.want)
		}
	}
	d, err := r.SetLabels(ctx, "a", map[string]string{"site": "rome", "tier": "edge"})
	if err != nil || d.Labels["site"] != "rome" || len(d.Labels) != 2 {
		t.Fatalf("SetLabels = %+v, %v", d, err)
	}
	if _, err := r.SetLabels(ctx, "a", map[string]string{"bad key": "x"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad label accepted: %v", err)
	}
	if d, _ := r.Get(ctx, "a"); d.Labels["site"] != "rome" {
		t.Fatalf("refused relabel changed labels: %v", d.Labels)
	}
}

func TestParseSelectorRejects(t *testing.T) {
	for _, s := range []string{"=v", "a b=c", "k=v w", ",", "k=" + string(make([]byte, 64))} {
		if _, err := ParseSelector(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseSelector(%q) = %v, want ErrInvalid", s, err)
		}
	}
	sel, err := ParseSelector(" gpu=true , site=berlin ")
	if err != nil || sel.String() != "gpu=true,site=berlin" {
		t.Fatalf("String() = %q, %v", sel.String(), err)
	}
}

// TestConcurrentWriters drives the batched write paths from many goroutines
// (as the broker does, one goroutine per connection).
func TestConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t)
	const n = 20
	for i := range n {
		enroll(t, r, fmt.Sprintf("d%02d", i), fmt.Sprint(i), nil)
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("d%02d", i)
			for j := range 5 {
				if err := r.SetPresence(ctx, id, wire.Presence{Online: true}); err != nil {
					t.Error(err)
				}
				if err := r.Report(ctx, wire.ReportedState{DeviceID: id, AppliedRevision: int64(j + 1)}); err != nil {
					t.Error(err)
				}
				r.Touch(id, time.Now())
			}
		}()
	}
	wg.Wait()
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	devs, _ := r.List(ctx, Selector{})
	for _, d := range devs {
		if d.AppliedRevision != 5 || !d.Online {
			t.Errorf("%s: applied %d online %v", d.ID, d.AppliedRevision, d.Online)
		}
	}
}
