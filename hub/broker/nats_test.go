package broker_test

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/hub/broker/natsbus"
	"github.com/edgefleet/edgefleet/hub/ca"
)

// natsNode starts one NATS node with the hub CA's server certificate and
// the registry's check.
func natsNode(t *testing.T, c *ca.CA, check natsbus.CheckFunc, name string, clusterPort int, routes []string) *natsbus.Node {
	t.Helper()
	srv, err := c.IssueServer([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s, err := natsbus.StartNode(natsbus.NodeOptions{Name: name, Dir: t.TempDir(), Port: -1, MQTTPort: -1,
		ClusterPort: clusterPort, Routes: routes, TLS: c.ServerTLS(srv, 0, nil),
		Auth: &natsbus.Authenticator{Registry: check}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// newNATS is one NATS node (JetStream, MQTT listener) and the hub's
// natsbus.Bus on it.
func newNATS(t *testing.T) *env {
	t.Helper()
	c, err := ca.New("")
	if err != nil {
		t.Fatal(err)
	}
	reg := newRegistry(t)
	s := natsNode(t, c, reg.Check, "n1", 0, nil)
	hubCert, err := c.IssueClient(ca.HubIdentity, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := natsbus.Dial(ctx, natsbus.BusOptions{NATS: []string{s.ClientURL()}, MQTT: s.MQTTURL, TLS: c.ClientTLS(&hubCert)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return &env{name: "nats", url: s.MQTTURL, ca: c, reg: reg, hub: b, nats: s}
}

// TestRevocationNATS: a revoked device is cut off (Kick) and cannot come
// back; superseded, unknown and foreign certificates never get in.
func TestRevocationNATS(t *testing.T) {
	e := newNATS(t)
	cert := e.device(t, "dev-r")
	keep := e.device(t, "dev-k")
	lost := make(chan error, 1)
	if _, err := e.connect(t, cert, connOpts{onLost: func(err error) { lost <- err }}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.Revoke(context.Background(), "dev-r"); err != nil {
		t.Fatal(err)
	}
	if n := e.nats.Kick("dev-r"); n != 1 {
		t.Fatalf("Kick cut %d connections, want 1", n)
	}
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("kicked device still connected")
	}
	if _, err := e.connect(t, cert, connOpts{}); err == nil {
		t.Fatal("revoked device reconnected")
	}
	e.mustConnect(t, keep)

	other, _ := ca.New("other")
	stranger, _ := other.IssueClient("dev-x", time.Hour)
	unenrolled, _ := e.ca.IssueClient("ghost", time.Hour)
	superseded, _ := e.ca.IssueClient("dev-s", time.Hour)
	e.device(t, "dev-s") // enrolls with a newer certificate
	for name, c := range map[string]tls.Certificate{"another CA": stranger, "not enrolled": unenrolled, "superseded": superseded} {
		if _, err := e.connect(t, c, connOpts{}); err == nil {
			t.Errorf("%s: connected", name)
		}
	}
}
