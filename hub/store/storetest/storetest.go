// Package storetest is the conformance suite of the hub's stores: every
// implementation of store.Registry and store.Tokens (bbolt, PostgreSQL)
// runs Run from its tests, so both keep the registry's rules.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/hub/enroll"
	"github.com/edgefleet/edgefleet/hub/registry"
	"github.com/edgefleet/edgefleet/hub/store"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// Backend is one empty store. Replica opens another instance on the same
// storage (a second hub replica, or the same hub after a restart): it
// shares the records, not the in-memory heartbeat times.
type Backend struct {
	Registry store.Registry
	Tokens   store.Tokens
	Replica  func(t *testing.T) store.Registry
}

// Run runs the suite; open makes a new, empty backend per subtest.
func Run(t *testing.T, open func(t *testing.T) Backend) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, Backend)
	}{
		{"EnrollAndCheck", testEnrollAndCheck},
		{"Revoke", testRevoke},
		{"DesiredRevisions", testDesired},
		{"ReportAndPresence", testReport},
		{"FlushReachesReplicas", testFlush},
		{"ListAndLabels", testList},
		{"ConcurrentReplicas", testConcurrent},
		{"Tokens", testTokens},
		{"TokenRedeemedOnce", testTokenOnce},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

func enroll1(t *testing.T, r store.Registry, id, serial string, labels map[string]string, replace bool) registry.Device {
	t.Helper()
	d, err := r.Enroll(ctx(t), registry.Enrollment{ID: id, CertSerial: serial, Labels: labels, Replace: replace,
		AgentVersion: "1.0", CertNotAfter: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatalf("enroll %s: %v", id, err)
	}
	return d
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: %v, want %v", what, err, want)
	}
}

func testEnrollAndCheck(t *testing.T, b Backend) {
	r, c := b.Registry, ctx(t)
	d := enroll1(t, r, "cam-1", "0a", map[string]string{"site": "a"}, false)
	if d.ID != "cam-1" || d.Labels["site"] != "a" || d.CertSerial != "0a" || d.Enrolled.IsZero() {
		t.Fatalf("enrolled %+v", d)
	}
	if err := r.Check(c, "cam-1", "0a"); err != nil {
		t.Errorf("Check current serial: %v", err)
	}
	wantErr(t, "Check other serial", r.Check(c, "cam-1", "0b"), registry.ErrSuperseded)
	wantErr(t, "Check unknown", r.Check(c, "nope", "0a"), registry.ErrNotFound)
	_, err := r.Enroll(c, registry.Enrollment{ID: "cam-1", CertSerial: "0b"})
	wantErr(t, "second enrollment without Replace", err, registry.ErrExists)
	_, err = r.Enroll(c, registry.Enrollment{ID: "bad id!", CertSerial: "01"})
	wantErr(t, "invalid id", err, registry.ErrInvalid)
	_, err = r.Enroll(c, registry.Enrollment{ID: "cam-9"})
	wantErr(t, "no serial", err, registry.ErrInvalid)

	d = enroll1(t, r, "cam-1", "0b", map[string]string{"row": "2"}, true)
	if d.Labels["site"] != "a" || d.Labels["row"] != "2" {
		t.Errorf("re-enrollment labels %v, want merged", d.Labels)
	}
	wantErr(t, "Check superseded serial", r.Check(c, "cam-1", "0a"), registry.ErrSuperseded)
	if err := r.Check(c, "cam-1", "0b"); err != nil {
		t.Errorf("Check new serial: %v", err)
	}
	rc, err := r.RevokedCerts(c)
	if err != nil || len(rc) != 1 || rc[0].Serial != "0a" || rc[0].Device != "cam-1" {
		t.Errorf("RevokedCerts %+v, %v; want the superseded 0a", rc, err)
	}
}

func testRevoke(t *testing.T, b Backend) {
	r, c := b.Registry, ctx(t)
	enroll1(t, r, "cam-1", "0a", nil, false)
	enroll1(t, r, "cam-2", "0b", nil, false)
	for _, id := range []string{"cam-1", "cam-2"} {
		if _, _, err := r.SetDesired(c, id, map[string]wire.DesiredModel{"m": {Ref: "reg/m@sha256:" + fmt.Sprintf("%064d", 1)}}); err != nil {
			t.Fatal(err)
		}
	}
	d, err := r.Revoke(c, "cam-1")
	if err != nil || !d.Revoked || d.RevokedAt.IsZero() {
		t.Fatalf("Revoke: %+v, %v", d, err)
	}
	if _, err := r.Revoke(c, "cam-1"); err != nil {
		t.Errorf("second Revoke: %v", err)
	}
	wantErr(t, "Check revoked", r.Check(c, "cam-1", "0a"), registry.ErrRevoked)
	_, err = r.Enroll(c, registry.Enrollment{ID: "cam-1", CertSerial: "0c", Replace: true})
	wantErr(t, "re-enroll revoked", err, registry.ErrRevoked)
	_, _, err = r.SetDesired(c, "cam-1", nil)
	wantErr(t, "SetDesired revoked", err, registry.ErrRevoked)
	wantErr(t, "Report revoked", r.Report(c, wire.ReportedState{DeviceID: "cam-1", Time: time.Now()}), registry.ErrRevoked)
	wantErr(t, "Heartbeat revoked", r.Heartbeat(c, "cam-1", wire.Heartbeat{}), registry.ErrRevoked)
	var seen []string
	if err := r.ForEachDesired(c, func(ds wire.DesiredState) error { seen = append(seen, ds.DeviceID); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || seen[0] != "cam-2" {
		t.Errorf("ForEachDesired visited %v, want only cam-2", seen)
	}
	rc, _ := r.RevokedCerts(c)
	if len(rc) != 1 || rc[0].Serial != "0a" {
		t.Errorf("RevokedCerts %+v", rc)
	}
	_, err = r.Revoke(c, "nope")
	wantErr(t, "Revoke unknown", err, registry.ErrNotFound)
}

func ref(n int) string { return "reg/m@sha256:" + fmt.Sprintf("%064x", n) }

func testDesired(t *testing.T, b Backend) {
	r, c := b.Registry, ctx(t)
	enroll1(t, r, "cam-1", "0a", nil, false)
	ds, err := r.Desired(c, "cam-1")
	if err != nil || ds.Revision != 0 || len(ds.Models) != 0 {
		t.Fatalf("Desired before any: %+v, %v", ds, err)
	}
	_, err = r.Desired(c, "nope")
	wantErr(t, "Desired unknown", err, registry.ErrNotFound)
	models := map[string]wire.DesiredModel{"m": {Ref: ref(1)}}
	ds, changed, err := r.SetDesired(c, "cam-1", models)
	if err != nil || !changed || ds.Revision != 1 {
		t.Fatalf("first SetDesired: rev %d changed %v %v", ds.Revision, changed, err)
	}
	ds, changed, err = r.SetDesired(c, "cam-1", models)
	if err != nil || changed || ds.Revision != 1 {
		t.Errorf("same models: rev %d changed %v %v, want rev 1 unchanged", ds.Revision, changed, err)
	}
	ds, changed, err = r.UpdateDesired(c, "cam-1", func(m map[string]wire.DesiredModel) error {
		m["n"] = wire.DesiredModel{Ref: ref(2)}
		return nil
	})
	if err != nil || !changed || ds.Revision != 2 || len(ds.Models) != 2 {
		t.Errorf("UpdateDesired: %+v changed %v %v", ds, changed, err)
	}
	boom := errors.New("boom")
	if _, _, err := r.UpdateDesired(c, "cam-1", func(map[string]wire.DesiredModel) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("UpdateDesired with failing fn: %v", err)
	}
	_, _, err = r.SetDesired(c, "cam-1", map[string]wire.DesiredModel{"m": {Ref: "not a ref"}})
	wantErr(t, "invalid ref", err, wire.ErrInvalid)
	got, _ := r.Desired(c, "cam-1")
	if got.Revision != 2 {
		t.Errorf("revision %d after refused changes, want 2", got.Revision)
	}
	d, _ := r.Get(c, "cam-1")
	if d.DesiredRevision != 2 {
		t.Errorf("device DesiredRevision %d, want 2", d.DesiredRevision)
	}
}

func testReport(t *testing.T, b Backend) {
	r, c := b.Registry, ctx(t)
	enroll1(t, r, "cam-1", "0a", nil, false)
	if _, ok, err := r.Reported(c, "cam-1"); err != nil || ok {
		t.Errorf("Reported before any: ok %v %v", ok, err)
	}
	rs := wire.ReportedState{DeviceID: "cam-1", Time: time.Now(), AgentVersion: "2.0", AppliedRevision: 3,
		Models: map[string]wire.ReportedModel{"m": {ActiveVersion: "4"}}}
	if err := r.Report(c, rs); err != nil {
		t.Fatal(err)
	}
	got, ok, err := r.Reported(c, "cam-1")
	if err != nil || !ok || got.AppliedRevision != 3 || got.Models["m"].ActiveVersion != "4" {
		t.Errorf("Reported: %+v ok %v %v", got, ok, err)
	}
	d, _ := r.Get(c, "cam-1")
	if d.AgentVersion != "2.0" || d.AppliedRevision != 3 || d.Models["m"].ActiveVersion != "4" || d.LastSeen.IsZero() {
		t.Errorf("inventory after report: %+v", d)
	}
	wantErr(t, "Report unknown", r.Report(c, wire.ReportedState{DeviceID: "nope", Time: time.Now()}), registry.ErrNotFound)

	if err := r.SetPresence(c, "cam-1", wire.Presence{Online: true}); err != nil {
		t.Fatal(err)
	}
	if d, _ := r.Get(c, "cam-1"); !d.Online {
		t.Error("online presence not recorded")
	}
	if err := r.SetPresence(c, "cam-1", wire.Presence{Online: false}); err != nil {
		t.Fatal(err)
	}
	if d, _ := r.Get(c, "cam-1"); d.Online {
		t.Error("last will not recorded")
	}
	if err := r.Heartbeat(c, "cam-1", wire.Heartbeat{IntervalSeconds: 30}); err != nil {
		t.Fatal(err)
	}
	if d, _ := r.Get(c, "cam-1"); !d.Online || d.HeartbeatSeconds != 30 {
		t.Errorf("after heartbeat: online %v interval %d", d.Online, d.HeartbeatSeconds)
	}
}

func testFlush(t *testing.T, b Backend) {
	r, c := b.Registry, ctx(t)
	enroll1(t, r, "cam-1", "0a", nil, false)
	if err := r.Heartbeat(c, "cam-1", wire.Heartbeat{IntervalSeconds: 30}); err != nil {
		t.Fatal(err)
	}
	seen, _ := r.Get(c, "cam-1")
	if err := r.Heartbeat(c, "cam-1", wire.Heartbeat{IntervalSeconds: 30}); err != nil {
		t.Fatal(err)
	}
	mem, _ := r.Get(c, "cam-1")
	if mem.LastSeen.Before(seen.LastSeen) {
		t.Fatalf("LastSeen went back: %v then %v", seen.LastSeen, mem.LastSeen)
	}
	if err := r.Flush(c); err != nil {
		t.Fatal(err)
	}
	other := b.Replica(t)
	d, err := other.Get(c, "cam-1")
	if err != nil || !d.LastSeen.Equal(mem.LastSeen) {
		t.Errorf("replica sees LastSeen %v (%v), want the flushed %v", d.LastSeen, err, mem.LastSeen)
	}
}

func testList(t *testing.T, b Backend) {
	r, c := b.Registry, ctx(t)
	enroll1(t, r, "cam-2", "02", map[string]string{"site": "a", "ring": "canary"}, false)
	enroll1(t, r, "cam-1", "01", map[string]string{"site": "a"}, false)
	enroll1(t, r, "cam-3", "03", map[string]string{"site": "b"}, false)
	for _, tc := range []struct {
		sel  string
		want []string
	}{
		{"", []string{"cam-1", "cam-2", "cam-3"}},
		{"site=a", []string{"cam-1", "cam-2"}},
		{"site=a,!ring", []string{"cam-1"}},
		{"ring", []string{"cam-2"}},
		{"site!=a", []string{"cam-3"}},
	} {
		sel, err := registry.ParseSelector(tc.sel)
		if err != nil {
			t.Fatal(err)
		}
		ds, err := r.List(c, sel)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, d := range ds {
			got = append(got, d.ID)
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("List(%q) = %v, want %v", tc.sel, got, tc.want)
		}
	}
	d, err := r.SetLabels(c, "cam-3", map[string]string{"site": "c"})
	if err != nil || d.Labels["site"] != "c" {
		t.Errorf("SetLabels: %+v %v", d.Labels, err)
	}
	_, err = r.SetLabels(c, "cam-3", map[string]string{"bad key!": "x"})
	wantErr(t, "invalid label", err, registry.ErrInvalid)
	_, err = r.SetLabels(c, "nope", nil)
	wantErr(t, "SetLabels unknown", err, registry.ErrNotFound)
}

// testConcurrent changes one device's desired state from two replicas at
// once: every change must get its own revision (no lost update).
func testConcurrent(t *testing.T, b Backend) {
	c := ctx(t)
	enroll1(t, b.Registry, "cam-1", "0a", nil, false)
	replicas := []store.Registry{b.Registry, b.Replica(t)}
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			_, changed, err := replicas[i%2].UpdateDesired(c, "cam-1", func(m map[string]wire.DesiredModel) error {
				m[fmt.Sprintf("m%d", i)] = wire.DesiredModel{Ref: ref(i)}
				return nil
			})
			if err == nil && !changed {
				err = fmt.Errorf("change %d: not changed", i)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	ds, err := b.Registry.Desired(c, "cam-1")
	if err != nil || ds.Revision != n || len(ds.Models) != n {
		t.Errorf("after %d concurrent changes: revision %d, %d models (%v); want %d and %d", n, ds.Revision, len(ds.Models), err, n, n)
	}
}

func testTokens(t *testing.T, b Backend) {
	tk, c := b.Tokens, ctx(t)
	secret, tok, err := tk.Create(c, enroll.TokenOptions{DeviceID: "cam-1", Labels: map[string]string{"site": "a"}, TTL: time.Hour})
	if err != nil || secret == "" || tok.ID == "" || tok.DeviceID != "cam-1" {
		t.Fatalf("Create: %q %+v %v", secret, tok, err)
	}
	if _, _, err := tk.Create(c, enroll.TokenOptions{TTL: -time.Second}); !errors.Is(err, wire.ErrInvalid) {
		t.Errorf("negative TTL: %v", err)
	}
	p, err := tk.Peek(c, secret)
	if err != nil || p.ID != tok.ID || p.Labels["site"] != "a" {
		t.Errorf("Peek: %+v %v", p, err)
	}
	_, err = tk.Peek(c, "wrong")
	wantErr(t, "Peek unknown", err, enroll.ErrTokenUnknown)
	r, err := tk.Redeem(c, secret, "cam-1")
	if err != nil || !r.Used || r.UsedBy != "cam-1" {
		t.Fatalf("Redeem: %+v %v", r, err)
	}
	_, err = tk.Redeem(c, secret, "cam-1")
	wantErr(t, "second Redeem", err, enroll.ErrTokenUsed)
	_, err = tk.Peek(c, secret)
	wantErr(t, "Peek used", err, enroll.ErrTokenUsed)
	if err := tk.Release(c, secret); err != nil {
		t.Fatal(err)
	}
	if _, err := tk.Redeem(c, secret, "cam-1"); err != nil {
		t.Errorf("Redeem after Release: %v", err)
	}
	short, _, err := tk.Create(c, enroll.TokenOptions{TTL: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Millisecond) // past a one-nanosecond lifetime, not a timing assertion
	_, err = tk.Redeem(c, short, "cam-2")
	wantErr(t, "Redeem expired", err, enroll.ErrTokenExpired)
	list, err := tk.List(c)
	if err != nil || len(list) != 2 {
		t.Errorf("List: %d tokens, %v; want 2", len(list), err)
	}
	n, err := tk.Prune(c, time.Now().Add(time.Minute))
	if err != nil || n != 2 {
		t.Errorf("Prune: %d, %v; want both (one used, one expired)", n, err)
	}
	keep, _, _ := tk.Create(c, enroll.TokenOptions{TTL: time.Hour})
	if n, _ := tk.Prune(c, time.Now()); n != 0 {
		t.Errorf("Prune removed %d unexpired unused tokens", n)
	}
	if _, err := tk.Peek(c, keep); err != nil {
		t.Error(err)
	}
}

func testTokenOnce(t *testing.T, b Backend) {
	tk, c := b.Tokens, ctx(t)
	secret, _, err := tk.Create(c, enroll.TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ok atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			if _, err := tk.Redeem(c, secret, fmt.Sprintf("d%d", i)); err == nil {
				ok.Add(1)
			} else if !errors.Is(err, enroll.ErrTokenUsed) {
				t.Errorf("Redeem: %v", err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 {
		t.Errorf("%d concurrent redemptions succeeded, want 1", ok.Load())
	}
}
