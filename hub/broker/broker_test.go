package broker_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/deploy/testenv"
	"github.com/edgefleet/edgefleet/hub/broker"
	"github.com/edgefleet/edgefleet/hub/broker/natsbus"
	"github.com/edgefleet/edgefleet/hub/ca"
	"github.com/edgefleet/edgefleet/hub/registry"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// bus is what the hub needs from either broker.
type bus interface {
	Publish(ctx context.Context, topic string, payload []byte, retain bool, qos byte) error
	Subscribe(ctx context.Context, filter string, h broker.Handler) error
}

// env is one broker under test.
type env struct {
	name string
	url  string
	ca   *ca.CA
	reg  *registry.Registry
	hub  bus
	// embedded is set for the embedded broker.
	embedded *broker.Embedded
	mosq     *testenv.Mosquitto
	nats     *natsbus.Node
}

func newRegistry(t *testing.T) *registry.Registry {
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
	return reg
}

func newEmbedded(t *testing.T) *env {
	t.Helper()
	c, err := ca.New("")
	if err != nil {
		t.Fatal(err)
	}
	reg := newRegistry(t)
	srv, err := c.IssueServer([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e, err := broker.NewEmbedded(broker.EmbeddedOptions{
		Addr:  "127.0.0.1:0",
		TLS:   c.ServerTLS(srv, tls.RequireAndVerifyClientCert, nil),
		Check: reg.Check,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return &env{name: "embedded", url: "mqtts://" + e.Addr().String(), ca: c, reg: reg, hub: e, embedded: e}
}

func newMosquitto(t *testing.T) *env {
	t.Helper()
	testenv.RequireMosquitto(t)
	c, err := ca.New("")
	if err != nil {
		t.Fatal(err)
	}
	m := testenv.StartMosquitto(t, c, nil)
	hubCert, err := c.IssueClient(ca.HubIdentity, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	x, err := broker.DialExternal(ctx, broker.ExternalOptions{URL: m.URL, TLS: c.ClientTLS(&hubCert), Ordered: true})
	if err != nil {
		t.Fatalf("%v\n%s", err, m.Log())
	}
	t.Cleanup(func() { x.Close() })
	return &env{name: "mosquitto", url: m.URL, ca: c, reg: newRegistry(t), hub: x, mosq: m}
}

// device enrolls id in the registry and returns its client certificate.
func (e *env) device(t *testing.T, id string) tls.Certificate {
	t.Helper()
	cert, err := e.ca.IssueClient(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.Enroll(context.Background(), registry.Enrollment{ID: id, CertSerial: ca.SerialString(cert.Leaf.SerialNumber)}); err != nil {
		t.Fatal(err)
	}
	return cert
}

type connOpts struct {
	clientID string
	will     string
	onLost   func(error)
	// conn receives the network connection, to cut it without a
	// DISCONNECT (so the broker sends the last will).
	conn chan<- net.Conn
}

// connect connects an MQTT 3.1.1 client with cert, without retries.
func (e *env) connect(t *testing.T, cert tls.Certificate, o connOpts) (paho.Client, error) {
	t.Helper()
	id := o.clientID
	if id == "" {
		id = cert.Leaf.Subject.CommonName
	}
	po := paho.NewClientOptions().AddBroker(e.url).SetClientID(id).
		SetTLSConfig(e.ca.ClientTLS(&cert)).SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second).
		SetOrderMatters(true)
	if o.will != "" {
		po.SetWill(o.will, `{"online":false}`, 1, true)
	}
	if o.onLost != nil {
		po.SetConnectionLostHandler(func(_ paho.Client, err error) { o.onLost(err) })
	}
	if o.conn != nil {
		cfg := e.ca.ClientTLS(&cert)
		po.SetCustomOpenConnectionFn(func(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
			c, err := tls.Dial("tcp", u.Host, cfg)
			if err == nil {
				o.conn <- c
			}
			return c, err
		})
	}
	c := paho.NewClient(po)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

func (e *env) mustConnect(t *testing.T, cert tls.Certificate) paho.Client {
	t.Helper()
	c, err := e.connect(t, cert, connOpts{})
	if err != nil {
		t.Fatalf("%s: connect %s: %v", e.name, cert.Leaf.Subject.CommonName, err)
	}
	return c
}

// subscribe returns the SUBACK code for filter.
func subscribe(t *testing.T, c paho.Client, filter string, h paho.MessageHandler) byte {
	t.Helper()
	tok := c.Subscribe(filter, 1, h)
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatalf("subscribe %s timed out", filter)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("subscribe %s: %v", filter, err)
	}
	return tok.(*paho.SubscribeToken).Result()[filter]
}

func publish(t *testing.T, c paho.Client, topic string, qos byte, retain bool, payload string) {
	t.Helper()
	tok := c.Publish(topic, qos, retain, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// recorder collects messages in arrival order.
type recorder struct {
	mu   sync.Mutex
	msgs []string // "topic payload"
	ch   chan string
}

func newRecorder() *recorder { return &recorder{ch: make(chan string, 100)} }

func (r *recorder) add(topic string, payload []byte) {
	m := topic + " " + string(payload)
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
	r.ch <- m
}

func (r *recorder) paho(_ paho.Client, m paho.Message) { r.add(m.Topic(), m.Payload()) }

// waitFor waits for message want and returns everything received before it.
func (r *recorder) waitFor(t *testing.T, want string) []string {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m := <-r.ch:
			if m == want {
				r.mu.Lock()
				defer r.mu.Unlock()
				return append([]string(nil), r.msgs...)
			}
		case <-timeout:
			t.Fatalf("message %q not received; got %v", want, r.all())
		}
	}
}

func (r *recorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs...)
}

// observer records what the hub receives, in the order the broker forwards
// one publisher's messages (the embedded broker's inline subscriptions run
// on the publisher's goroutine; the External is Ordered).
func (e *env) observer(t *testing.T, filter string) *recorder {
	t.Helper()
	rec := newRecorder()
	if err := e.hub.Subscribe(context.Background(), filter, rec.add); err != nil {
		t.Fatal(err)
	}
	return rec
}

func brokers(t *testing.T, fn func(t *testing.T, e *env)) {
	t.Run("embedded", func(t *testing.T) { t.Parallel(); fn(t, newEmbedded(t)) })
	t.Run("mosquitto", func(t *testing.T) { t.Parallel(); fn(t, newMosquitto(t)) })
	t.Run("nats", func(t *testing.T) { t.Parallel(); fn(t, newNATS(t)) })
}

func TestSubscribeOnlyOwnTopics(t *testing.T) {
	brokers(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		a := e.mustConnect(t, e.device(t, "dev-a"))
		e.device(t, "dev-b")
		// A retained secret of dev-b exists before dev-a subscribes.
		if err := e.hub.Publish(ctx, wire.Topic("dev-b", wire.KindDesired), []byte("retained secret"), true, 1); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			filter string
			ok     bool
		}{
			{wire.Topic("dev-a", wire.KindDesired), true},
			{wire.DeviceFilter("dev-a"), true},
			{wire.Topic("dev-b", wire.KindDesired), false},
			{wire.DeviceFilter("dev-b"), false},
			{wire.Filter(wire.KindDesired), false},
			{"edgefleet/v1/#", false},
			{"#", false},
			{"$SYS/#", false},
		}
		rec := newRecorder()
		for _, tt := range tests {
			code := subscribe(t, a, tt.filter, rec.paho)
			// The embedded broker refuses in the SUBACK; Mosquitto grants
			// MQTT 3.1.1 subscriptions and filters every delivery by ACL.
			if ok := code < 0x80; e.embedded != nil && ok != tt.ok {
				t.Errorf("%s: subscribe %q: code %#x, want allowed=%v", e.name, tt.filter, code, tt.ok)
			}
		}
		if err := e.hub.Publish(ctx, wire.Topic("dev-b", wire.KindDesired), []byte("live secret"), false, 1); err != nil {
			t.Fatal(err)
		}
		if err := e.hub.Publish(ctx, wire.Topic("dev-b", wire.KindReported), []byte("live secret"), false, 1); err != nil {
			t.Fatal(err)
		}
		marker := wire.Topic("dev-a", wire.KindDesired)
		if err := e.hub.Publish(ctx, marker, []byte("marker"), false, 1); err != nil {
			t.Fatal(err)
		}
		for _, m := range rec.waitFor(t, marker+" marker") {
			if m != marker+" marker" {
				t.Errorf("%s: dev-a received %q", e.name, m)
			}
		}
	})
}

func TestPublishOnlyOwnTopics(t *testing.T) {
	brokers(t, func(t *testing.T, e *env) {
		a := e.mustConnect(t, e.device(t, "dev-a"))
		e.device(t, "dev-b")
		rec := e.observer(t, "edgefleet/v1/#")
		// Forbidden publications (QoS 0: brokers drop them silently)...
		forbidden := []string{
			wire.Topic("dev-b", wire.KindReported),
			wire.Topic("dev-b", wire.KindPresence),
			wire.Topic("dev-a", wire.KindDesired),
			wire.Topic("dev-a", wire.KindTelemetryAck),
			"edgefleet/v1/other",
		}
		for _, topic := range forbidden {
			publish(t, a, topic, 0, false, "forbidden")
		}
		// ...then an allowed one: the broker handles one client's packets
		// in order, so once it arrives, anything forbidden would have too.
		marker := wire.Topic("dev-a", wire.KindReported)
		publish(t, a, marker, 1, false, "marker")
		got := rec.waitFor(t, marker+" marker")
		for _, m := range got {
			if m != marker+" marker" {
				t.Errorf("%s: forbidden publication delivered: %q", e.name, m)
			}
		}
	})
}

func TestRetainedDesiredReachesLateDevice(t *testing.T) {
	brokers(t, func(t *testing.T, e *env) {
		cert := e.device(t, "late")
		topic := wire.Topic("late", wire.KindDesired)
		if err := e.hub.Publish(context.Background(), topic, []byte(`{"revision":1}`), true, 1); err != nil {
			t.Fatal(err)
		}
		if err := e.hub.Publish(context.Background(), topic, []byte(`{"revision":2}`), true, 1); err != nil {
			t.Fatal(err)
		}
		c := e.mustConnect(t, cert)
		rec := newRecorder()
		if code := subscribe(t, c, topic, rec.paho); code >= 0x80 {
			t.Fatalf("subscribe refused: %#x", code)
		}
		rec.waitFor(t, topic+` {"revision":2}`)
	})
}

func TestNoSessionTakeover(t *testing.T) {
	brokers(t, func(t *testing.T, e *env) {
		lost := make(chan error, 1)
		b, err := e.connect(t, e.device(t, "dev-b"), connOpts{onLost: func(err error) { lost <- err }})
		if err != nil {
			t.Fatal(err)
		}
		// dev-a connects with dev-b's client id: the embedded broker and
		// NATS refuse; Mosquitto replaces the id with the certificate's name.
		_, err = e.connect(t, e.device(t, "dev-a"), connOpts{clientID: "dev-b"})
		if (e.embedded != nil || e.nats != nil) && err == nil {
			t.Fatalf("%s accepted a foreign client id", e.name)
		}
		rec := e.observer(t, wire.Topic("dev-b", wire.KindHeartbeat))
		publish(t, b, wire.Topic("dev-b", wire.KindHeartbeat), 1, false, "still here")
		rec.waitFor(t, wire.Topic("dev-b", wire.KindHeartbeat)+" still here")
		select {
		case err := <-lost:
			t.Fatalf("%s: dev-b lost its connection: %v", e.name, err)
		default:
		}
	})
}

func TestForeignWillRefused(t *testing.T) {
	brokers(t, func(t *testing.T, e *env) {
		e.device(t, "dev-b")
		certA := e.device(t, "dev-a")
		rec := e.observer(t, "edgefleet/v1/#")
		conns := make(chan net.Conn, 1)
		_, err := e.connect(t, certA, connOpts{will: wire.Topic("dev-b", wire.KindPresence), conn: conns})
		if e.embedded != nil {
			if err == nil {
				t.Fatal("embedded broker accepted a last will on another device's topic")
			}
			return
		}
		// Mosquitto accepts the connection but must not publish the will:
		// cut the connection so it would, then reconnect as dev-a (the
		// broker has handled the old connection, will included, before it
		// acknowledges the new one) and publish a marker.
		if err != nil {
			t.Fatal(err)
		}
		(<-conns).Close()
		again := e.mustConnect(t, certA)
		marker := wire.Topic("dev-a", wire.KindReported)
		publish(t, again, marker, 1, false, "marker")
		for _, m := range rec.waitFor(t, marker+" marker") {
			if m != marker+" marker" {
				t.Errorf("%s: foreign last will delivered: %q", e.name, m)
			}
		}
	})
}

func TestUnknownIdentitiesRefused(t *testing.T) {
	e := newEmbedded(t)
	other, _ := ca.New("other")
	stranger, _ := other.IssueClient("dev-x", time.Hour)
	admin, _ := e.ca.IssueClient(ca.AdminIdentity, time.Hour)
	unenrolled, _ := e.ca.IssueClient("ghost", time.Hour)
	superseded, _ := e.ca.IssueClient("dev-s", time.Hour)
	e.device(t, "dev-s") // enrolls with a newer certificate
	tests := []struct {
		name string
		cert tls.Certificate
	}{
		{"certificate of another CA", stranger},
		{"admin identity", admin},
		{"not enrolled", unenrolled},
		{"superseded certificate", superseded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := e.connect(t, tt.cert, connOpts{}); err == nil {
				t.Fatal("connected")
			}
		})
	}
	// Without any client certificate the TLS handshake fails.
	conn, err := tls.Dial("tcp", e.embedded.Addr().String(), &tls.Config{RootCAs: e.ca.Pool()})
	if err == nil {
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	var netErr net.Error
	if err == nil || errors.As(err, &netErr) && netErr.Timeout() {
		t.Fatalf("connection without client certificate: %v", err)
	}
}

func TestRevocationEmbedded(t *testing.T) {
	e := newEmbedded(t)
	cert := e.device(t, "dev-r")
	rec := e.observer(t, wire.Topic("dev-r", wire.KindPresence))
	lost := make(chan error, 1)
	if _, err := e.connect(t, cert, connOpts{will: wire.Topic("dev-r", wire.KindPresence), onLost: func(err error) { lost <- err }}); err != nil {
		t.Fatal(err)
	}
	if !e.embedded.Connected("dev-r") {
		t.Fatal("Connected = false for a connected device")
	}
	if _, err := e.reg.Revoke(context.Background(), "dev-r"); err != nil {
		t.Fatal(err)
	}
	if !e.embedded.Kick("dev-r") {
		t.Fatal("Kick found no connection")
	}
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("kicked device still connected")
	}
	// The last will announces it offline.
	rec.waitFor(t, wire.Topic("dev-r", wire.KindPresence)+` {"online":false}`)
	if _, err := e.connect(t, cert, connOpts{}); err == nil {
		t.Fatal("revoked device reconnected")
	}
	if e.embedded.Kick("dev-r") {
		t.Fatal("Kick of a disconnected device reported a connection")
	}
}

func TestRevocationMosquittoCRL(t *testing.T) {
	e := newMosquitto(t)
	cert := e.device(t, "dev-r")
	keep := e.device(t, "dev-k")
	e.mustConnect(t, cert)
	if _, err := e.reg.Revoke(context.Background(), "dev-r"); err != nil {
		t.Fatal(err)
	}
	revoked, err := e.reg.RevokedCerts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var entries []ca.Revoked
	for _, r := range revoked {
		entries = append(entries, ca.Revoked{Serial: mustSerial(t, r.Serial), At: r.At})
	}
	crl, err := e.ca.CRL(entries, 2, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e.mosq.WriteCRL(crl)
	// The reload is asynchronous; once a fresh connection of the revoked
	// device fails, the CRL is in force.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := e.connect(t, cert, connOpts{})
		if err != nil {
			break
		}
		c.Disconnect(0)
		if time.Now().After(deadline) {
			t.Fatalf("revoked device still connects after CRL reload\n%s", e.mosq.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := e.connect(t, cert, connOpts{}); err == nil {
		t.Fatal("revoked device connected after the CRL reload")
	}
	e.mustConnect(t, keep)
}

// TestOwnWillDelivered is the control for TestForeignWillRefused: a device's
// last will on its own presence topic is published when its connection is
// cut, before the broker acknowledges its next connection.
func TestOwnWillDelivered(t *testing.T) {
	brokers(t, func(t *testing.T, e *env) {
		cert := e.device(t, "dev-w")
		presence := wire.Topic("dev-w", wire.KindPresence)
		rec := e.observer(t, presence)
		conns := make(chan net.Conn, 1)
		if _, err := e.connect(t, cert, connOpts{will: presence, conn: conns}); err != nil {
			t.Fatal(err)
		}
		(<-conns).Close()
		rec.waitFor(t, presence+` {"online":false}`)
	})
}
