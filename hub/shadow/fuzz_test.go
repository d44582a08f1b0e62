package shadow

import (
	"context"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/hub/registry"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// FuzzDeviceMessages feeds arbitrary reported-state, heartbeat and
// presence payloads from an enrolled device to the hub: each is refused or
// stored, never a panic, and a stored report reads back as the device sent
// it (under its own id, whatever id the payload claims).
func FuzzDeviceMessages(f *testing.F) {
	db, err := bolt.Open(filepath.Join(f.TempDir(), "hub.db"), 0o600, nil)
	if err != nil {
		f.Fatal(err)
	}
	defer db.Close()
	// Durability and batching are not what is fuzzed: commit each message
	// at once and without fsync.
	db.NoSync, db.MaxBatchSize = true, 1
	reg, err := registry.New(db)
	if err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()
	if _, err := reg.Enroll(ctx, registry.Enrollment{ID: "d1", CertSerial: "01"}); err != nil {
		f.Fatal(err)
	}
	s := New(nil, reg, Options{})
	rs, _ := wire.Encode(wire.ReportedState{DeviceID: "d1", AppliedRevision: 3, Time: time.Unix(1e9, 0).UTC(),
		Models: map[string]wire.ReportedModel{"digits": {ActiveVersion: "2", State: "active"}}})
	hb, _ := wire.Encode(wire.Heartbeat{DeviceID: "d1", IntervalSeconds: 10})
	for _, seed := range [][]byte{rs, hb, []byte(`{}`), []byte(`{"device_id":"other","applied_revision":-1}`),
		[]byte(`{"models":{"":{"state":"bogus"}}}`), []byte(`[`), nil} {
		for kind := range uint8(3) {
			f.Add(kind, seed)
		}
	}
	f.Fuzz(func(t *testing.T, kind uint8, payload []byte) {
		switch kind % 3 {
		case 0:
			if err := s.onReported(ctx, "d1", payload); err != nil {
				return
			}
			var want wire.ReportedState
			if err := wire.Decode(payload, &want); err != nil {
				t.Fatalf("stored a report that does not decode: %v", err)
			}
			got, ok, err := reg.Reported(ctx, "d1")
			if err != nil || !ok {
				t.Fatalf("accepted report not stored: %v", err)
			}
			if got.DeviceID != "d1" || got.AppliedRevision != want.AppliedRevision || (len(got.Models) > 0 || len(want.Models) > 0) && !reflect.DeepEqual(got.Models, want.Models) {
				t.Fatalf("stored %+v, sent %+v", got, want)
			}
		case 1:
			_ = s.onHeartbeat(ctx, "d1", payload)
		case 2:
			_ = s.onPresence(ctx, "d1", payload)
		}
		if _, err := reg.Get(ctx, "d1"); err != nil {
			t.Fatalf("device unreadable after a message: %v", err)
		}
	})
}
