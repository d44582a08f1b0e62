package telemetry

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/hub/registry"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// anyDevice admits every device.
type anyDevice struct{}

func (anyDevice) Get(_ context.Context, id string) (registry.Device, error) {
	return registry.Device{ID: id}, nil
}
func (anyDevice) Check(context.Context, string, string) error { return nil }

// FuzzReceive feeds arbitrary payloads to the receiver: it must answer
// every one, never panic, and never acknowledge above what it stored.
func FuzzReceive(f *testing.F) {
	good, _ := wire.Encode(wire.TelemetryReport{DeviceID: "d1", Stream: "s", Snapshots: []wire.Snapshot{{Seq: 1,
		Time: time.Unix(1e9, 0).UTC(), Models: []wire.ModelStats{{Model: "m", Version: "1", Requests: 1,
			Latency: wire.Histogram{Count: 1, Sum: 0.1, Buckets: []wire.Bucket{{Le: 0.25, N: 1}}}}}}}})
	for _, seed := range []string{string(good), `{}`, `{"device_id":"d1","stream":"s","snapshots":[{"seq":2},{"seq":1}]}`,
		`{"device_id":"d1","stream":"s","snapshots":[{"seq":1,"time":"2026-01-01T00:00:00Z","models":[{"model":"m","latency":{"count":1,"buckets":[{"le":1e308,"n":1}]}}]}]}`,
		`[`, `null`} {
		f.Add([]byte(seed))
	}
	db, err := bolt.Open(filepath.Join(f.TempDir(), "hub.db"), 0o600, nil)
	if err != nil {
		f.Fatal(err)
	}
	defer db.Close()
	s, err := Open(Options{DB: db, Window: 50})
	if err != nil {
		f.Fatal(err)
	}
	r := NewReceiver(s, anyDevice{}, nil)
	f.Fuzz(func(t *testing.T, payload []byte) {
		ack := r.receive(context.Background(), "d1", TransportMQTT, payload)
		if ack.Error != "" {
			return
		}
		d, ok := s.Device("d1")
		if !ok {
			t.Fatalf("acknowledged %+v without a device record", ack)
		}
		for _, st := range d.Streams {
			if st.ID == ack.Stream && st.Seq != ack.Seq {
				t.Fatalf("ack seq %d, stored high-water mark %d", ack.Seq, st.Seq)
			}
		}
		s.Overview(0)
		s.Window("d1", time.Time{}, 0)
	})
}
