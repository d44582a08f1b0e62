package shadow_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/deploy/testenv"
	"github.com/edgefleet/edgefleet/hub/broker"
	"github.com/edgefleet/edgefleet/hub/ca"
	"github.com/edgefleet/edgefleet/hub/registry"
	"github.com/edgefleet/edgefleet/hub/shadow"
	"github.com/edgefleet/edgefleet/ota/wire"
)

type fixture struct {
	ca  *ca.CA
	reg *registry.Registry
	bus *broker.Embedded
	url string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "hub.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	reg, err := registry.New(db)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := ca.New("")
	srv, _ := c.IssueServer([]string{"127.0.0.1"}, time.Hour)
	b, err := broker.NewEmbedded(broker.EmbeddedOptions{Addr: "127.0.0.1:0",
		TLS: c.ServerTLS(srv, tls.RequireAndVerifyClientCert, nil), Check: reg.Check})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return &fixture{ca: c, reg: reg, bus: b, url: "mqtts://" + b.Addr().String()}
}

func (f *fixture) enroll(t *testing.T, id string) tls.Certificate {
	t.Helper()
	cert, _ := f.ca.IssueClient(id, time.Hour)
	if _, err := f.reg.Enroll(context.Background(), registry.Enrollment{ID: id, CertSerial: ca.SerialString(cert.Leaf.SerialNumber)}); err != nil {
		t.Fatal(err)
	}
	return cert
}

func (f *fixture) connect(t *testing.T, cert tls.Certificate) paho.Client {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker(f.url).SetClientID(cert.Leaf.Subject.CommonName).
		SetTLSConfig(f.ca.ClientTLS(&cert)).SetOrderMatters(true).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// desiredCh subscribes a device to its desired topic.
func desiredCh(t *testing.T, c paho.Client, id string) <-chan wire.DesiredState {
	t.Helper()
	ch := make(chan wire.DesiredState, 10)
	tok := c.Subscribe(wire.Topic(id, wire.KindDesired), 1, func(_ paho.Client, m paho.Message) {
		var ds wire.DesiredState
		if len(m.Payload()) == 0 {
			ds.Revision = -1 // deleted retained message
		} else if err := json.Unmarshal(m.Payload(), &ds); err != nil {
			t.Error(err)
		}
		ch <- ds
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	return ch
}

func next(t *testing.T, ch <-chan wire.DesiredState) wire.DesiredState {
	t.Helper()
	select {
	case ds := <-ch:
		return ds
	case <-time.After(10 * time.Second):
		t.Fatal("no desired state received")
		return wire.DesiredState{}
	}
}

func publish(t *testing.T, c paho.Client, topic string, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	if tok := c.Publish(topic, 1, false, b); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
}

var (
	m1 = map[string]wire.DesiredModel{"digits": {Ref: "127.0.0.1:5000/models/digits:1"}}
	m2 = map[string]wire.DesiredModel{"digits": {Ref: "127.0.0.1:5000/models/digits:2"}}
)

func TestDesiredPublishedOnceAndRetained(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	cert := f.enroll(t, "d1")
	s := shadow.New(f.bus, f.reg, shadow.Options{})
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// Set while the device is offline: the retained message waits.
	if ds, err := s.SetDesired(ctx, "d1", m1); err != nil || ds.Revision != 1 {
		t.Fatalf("SetDesired = %+v, %v", ds, err)
	}
	ch := desiredCh(t, f.connect(t, cert), "d1")
	if ds := next(t, ch); ds.Revision != 1 || ds.Models["digits"] != m1["digits"] || ds.DeviceID != "d1" {
		t.Fatalf("late device got %+v", ds)
	}
	// The same models again: no new revision, nothing published.
	if ds, err := s.SetDesired(ctx, "d1", m1); err != nil || ds.Revision != 1 {
		t.Fatalf("repeated SetDesired = %+v, %v", ds, err)
	}
	if ds, err := s.SetDesired(ctx, "d1", m2); err != nil || ds.Revision != 2 {
		t.Fatalf("SetDesired = %+v, %v", ds, err)
	}
	// Messages from one publisher arrive in order: revision 2 comes next.
	if ds := next(t, ch); ds.Revision != 2 {
		t.Fatalf("got revision %d after an unchanged SetDesired, want 2", ds.Revision)
	}
	if _, err := s.SetDesired(ctx, "ghost", m1); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("SetDesired unknown device: %v", err)
	}
	if _, err := s.SetDesired(ctx, "d1", map[string]wire.DesiredModel{"bad name": {Ref: "x"}}); !errors.Is(err, wire.ErrInvalid) {
		t.Fatalf("invalid desired: %v", err)
	}
}

func TestStartRepublishes(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	cert := f.enroll(t, "d1")
	// Desired state stored while no broker had it (as after a restart of
	// a broker without persistence).
	if _, _, err := f.reg.SetDesired(ctx, "d1", m2); err != nil {
		t.Fatal(err)
	}
	s := shadow.New(f.bus, f.reg, shadow.Options{})
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if ds := next(t, desiredCh(t, f.connect(t, cert), "d1")); ds.Revision != 1 || ds.Models["digits"] != m2["digits"] {
		t.Fatalf("got %+v", ds)
	}
}

func TestIngest(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	c := f.connect(t, f.enroll(t, "d1"))
	f.enroll(t, "d2")
	s := shadow.New(f.bus, f.reg, shadow.Options{})
	var reports atomic.Int32
	s.Listen(func(e shadow.Event) {
		if e.Kind == shadow.EventReported && e.DeviceID == "d1" {
			reports.Add(1)
		}
	})
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	publish(t, c, wire.Topic("d1", wire.KindPresence), wire.Presence{Online: true})
	publish(t, c, wire.Topic("d1", wire.KindHeartbeat), wire.Heartbeat{IntervalSeconds: 30})
	// The payload claims to be d2; the topic (tied to the certificate)
	// decides.
	publish(t, c, wire.Topic("d1", wire.KindReported), wire.ReportedState{DeviceID: "d2", AgentVersion: "9.9.9",
		Models: map[string]wire.ReportedModel{"digits": {ActiveVersion: "2", State: wire.StateActive}}, AppliedRevision: 2})
	testenv.Eventually(t, "report ingested", 10*time.Second, func() bool { return reports.Load() == 1 })
	d, err := f.reg.Get(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	if !d.Online || d.HeartbeatSeconds != 30 || d.AgentVersion != "9.9.9" || d.AppliedRevision != 2 ||
		d.Models["digits"].ActiveVersion != "2" || !d.IsOnline(time.Now()) {
		t.Fatalf("registry after ingest: %+v", d)
	}
	if d2, _ := f.reg.Get(ctx, "d2"); d2.AgentVersion != "" {
		t.Fatalf("d1 wrote d2's record: %+v", d2)
	}
	// Garbage is dropped; the hub keeps going.
	if tok := c.Publish(wire.Topic("d1", wire.KindReported), 1, false, "not json"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	publish(t, c, wire.Topic("d1", wire.KindReported), wire.ReportedState{AppliedRevision: 3})
	testenv.Eventually(t, "second report", 10*time.Second, func() bool { return reports.Load() == 2 })
	// A clean offline announcement.
	publish(t, c, wire.Topic("d1", wire.KindPresence), wire.Presence{Online: false})
	testenv.Eventually(t, "offline", 10*time.Second, func() bool { d, _ := f.reg.Get(ctx, "d1"); return !d.Online })
}

// flaky fails publishes while down is set (fault injection around the real
// broker).
type flaky struct {
	shadow.Bus
	down atomic.Bool
}

func (f *flaky) Publish(ctx context.Context, topic string, payload []byte, retain bool, qos byte) error {
	if f.down.Load() {
		return errors.New("broker unreachable")
	}
	return f.Bus.Publish(ctx, topic, payload, retain, qos)
}

func TestPublishRetried(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := newFixture(t)
	cert := f.enroll(t, "d1")
	bus := &flaky{Bus: f.bus}
	s := shadow.New(bus, f.reg, shadow.Options{RetryInterval: 10 * time.Millisecond})
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	ch := desiredCh(t, f.connect(t, cert), "d1")
	bus.down.Store(true)
	if _, err := s.SetDesired(ctx, "d1", m1); err != nil {
		t.Fatalf("SetDesired must succeed (stored) while the broker is down: %v", err)
	}
	if _, err := s.SetDesired(ctx, "d1", m2); err != nil {
		t.Fatal(err)
	}
	if s.Pending() != 1 {
		t.Fatalf("Pending = %d, want 1 (only the newest revision)", s.Pending())
	}
	bus.down.Store(false)
	if ds := next(t, ch); ds.Revision != 2 {
		t.Fatalf("after recovery got revision %d, want 2", ds.Revision)
	}
	testenv.Eventually(t, "pending drained", 10*time.Second, func() bool { return s.Pending() == 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestForgetClearsRetained(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	cert := f.enroll(t, "d1")
	s := shadow.New(f.bus, f.reg, shadow.Options{})
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetDesired(ctx, "d1", m1); err != nil {
		t.Fatal(err)
	}
	if err := s.Forget(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	c := f.connect(t, cert)
	ch := desiredCh(t, c, "d1")
	// A marker on the same topic after subscribing: had a retained state
	// survived, it would have arrived first.
	if err := f.bus.Publish(ctx, wire.Topic("d1", wire.KindDesired), []byte(`{"revision":99}`), false, 1); err != nil {
		t.Fatal(err)
	}
	if ds := next(t, ch); ds.Revision != 99 {
		t.Fatalf("retained desired state survived Forget: %+v", ds)
	}
}
