package natsbus_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/hub/broker/natsbus"
	"github.com/edgefleet/edgefleet/hub/ca"
	"github.com/edgefleet/edgefleet/hub/hubdb"
	"github.com/edgefleet/edgefleet/hub/registry"
	"github.com/edgefleet/edgefleet/ota/wire"
)

type cluster struct {
	ca    *ca.CA
	reg   *registry.Registry
	nodes []*natsbus.Node
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startCluster starts n NATS nodes routed to each other.
func startCluster(t *testing.T, n int) *cluster {
	t.Helper()
	c, err := ca.New("")
	if err != nil {
		t.Fatal(err)
	}
	db, err := hubdb.Open(filepath.Join(t.TempDir(), "hub.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	reg, err := registry.New(db)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := c.IssueServer([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ports := make([]int, n)
	var routes []string
	for i := range ports {
		ports[i] = freePort(t)
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[i]))
	}
	cl := &cluster{ca: c, reg: reg}
	var wg sync.WaitGroup
	cl.nodes = make([]*natsbus.Node, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			cl.nodes[i], errs[i] = natsbus.StartNode(natsbus.NodeOptions{Name: "n" + strconv.Itoa(i), Dir: t.TempDir(),
				Port: -1, ClusterPort: ports[i], Routes: routes, TLS: c.ServerTLS(srv, 0, nil),
				Auth: &natsbus.Authenticator{Registry: reg.Check}})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.nodes[i].Shutdown)
	}
	return cl
}

func (cl *cluster) urls() []string {
	var out []string
	for _, n := range cl.nodes {
		out = append(out, n.ClientURL())
	}
	return out
}

func (cl *cluster) hub(t *testing.T, mqttNode int, ackWait time.Duration) *natsbus.Bus {
	t.Helper()
	cert, err := cl.ca.IssueClient(ca.HubIdentity, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := natsbus.Dial(ctx, natsbus.BusOptions{NATS: cl.urls(), MQTT: cl.nodes[mqttNode].MQTTURL,
		TLS: cl.ca.ClientTLS(&cert), Replicas: len(cl.nodes), AckWait: ackWait, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func (cl *cluster) device(t *testing.T, id string, node int) paho.Client {
	t.Helper()
	cert, err := cl.ca.IssueClient(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.reg.Enroll(context.Background(), registry.Enrollment{ID: id, CertSerial: ca.SerialString(cert.Leaf.SerialNumber)}); err != nil {
		t.Fatal(err)
	}
	po := paho.NewClientOptions().AddBroker(cl.nodes[node].MQTTURL).SetClientID(id).
		SetTLSConfig(cl.ca.ClientTLS(&cert)).SetProtocolVersion(4).SetAutoReconnect(true).SetMaxReconnectInterval(time.Second).
		SetConnectTimeout(10 * time.Second)
	c := paho.NewClient(po)
	if tok := c.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("device %s: connect: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// tally counts what the hub replicas were handed.
type tally struct {
	mu    sync.Mutex
	seen  map[string]int
	total int
	by    map[*natsbus.Bus]int
}

func (ta *tally) handler(b *natsbus.Bus) func(string, []byte) {
	return func(topic string, payload []byte) {
		id, _, _ := wire.ParseTopic(topic)
		ta.mu.Lock()
		ta.seen[id+" "+string(payload)]++
		ta.total++
		ta.by[b]++
		ta.mu.Unlock()
	}
}

type sample struct{ dev, seq int }

// missing lists the samples of devices×per that no hub was handed.
func (ta *tally) missing(devices, per int) []sample {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	var out []sample
	for d := range devices {
		for seq := range per {
			if ta.seen[fmt.Sprintf("dev-%d %d", d, seq)] == 0 {
				out = append(out, sample{d, seq})
			}
		}
	}
	return out
}

// TestClusterKillNodeDuringTelemetry: three nodes, a stream with three
// replicas, two hub replicas sharing the durable consumer. One node is
// shut down while devices publish telemetry (QoS 1): every sample reaches
// a hub, and the hubs split the work.
func TestClusterKillNodeDuringTelemetry(t *testing.T) {
	cl := startCluster(t, 3)
	hubs := []*natsbus.Bus{cl.hub(t, 0, 2*time.Second), cl.hub(t, 1, 2*time.Second)}
	ta := &tally{seen: map[string]int{}, by: map[*natsbus.Bus]int{}}
	ctx := context.Background()
	for _, h := range hubs {
		if err := h.Subscribe(ctx, wire.Filter(wire.KindTelemetry), ta.handler(h)); err != nil {
			t.Fatal(err)
		}
	}
	const devices, per = 6, 150
	var clients []paho.Client
	for i := range devices {
		clients = append(clients, cl.device(t, fmt.Sprintf("dev-%d", i), i%2)) // nodes 0 and 1; node 2 dies
	}
	var wg sync.WaitGroup
	half := make(chan struct{}, devices)
	for i, c := range clients {
		wg.Go(func() {
			topic := wire.Topic(fmt.Sprintf("dev-%d", i), wire.KindTelemetry)
			for seq := range per {
				if seq == per/2 {
					half <- struct{}{}
				}
				// A publish cut by the node loss is resent below, as the
				// agent's queue resends what the hub has not acknowledged.
				if tok := c.Publish(topic, 1, false, strconv.Itoa(seq)); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
					t.Logf("publish %s %d: %v", topic, seq, tok.Error())
				}
			}
		})
	}
	for range devices {
		<-half
	}
	cl.nodes[2].Shutdown()
	wg.Wait()
	// NATS's MQTT listener acknowledges a QoS 1 publish once the message
	// is published in NATS, not once JetStream stored it: while the
	// stream elects a new leader after the node loss, acknowledged
	// samples can be dropped (82 of 900 in one run: they never reached a hub). Devices do not rely
	// on the broker for this: the agent's telemetry queue keeps every
	// sample until the hub acknowledges it and sends it again otherwise.
	// Do the same here — resend what no hub was handed — and require
	// that every sample arrives.
	var brokerLost int
	for round := 0; ; round++ {
		time.Sleep(2 * time.Second) // the agent's resend interval, shortened
		missing := ta.missing(devices, per)
		if round == 0 {
			brokerLost = len(missing)
		}
		if len(missing) == 0 {
			break
		}
		if round == 30 {
			t.Fatalf("%d samples still missing after %d resend rounds", len(missing), round)
		}
		for _, m := range missing {
			topic := wire.Topic(fmt.Sprintf("dev-%d", m.dev), wire.KindTelemetry)
			if tok := clients[m.dev].Publish(topic, 1, false, strconv.Itoa(m.seq)); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				t.Logf("resend %s %d: %v", topic, m.seq, tok.Error())
			}
		}
	}
	t.Logf("%d of %d acknowledged samples were not handed to a hub before the resend (stream leader election)", brokerLost, devices*per)
	ta.mu.Lock()
	defer ta.mu.Unlock()
	var dups []string
	for k, n := range ta.seen {
		if n > 1 {
			dups = append(dups, k)
		}
	}
	t.Logf("%d samples, %d handed over more than once (redelivered after the node loss), split %d/%d between the hubs",
		devices*per, len(dups), ta.by[hubs[0]], ta.by[hubs[1]])
	if ta.by[hubs[0]] == 0 || ta.by[hubs[1]] == 0 {
		t.Errorf("one hub replica got nothing: %d/%d", ta.by[hubs[0]], ta.by[hubs[1]])
	}
}

func testLogger(t *testing.T) *slog.Logger {
	if !testing.Verbose() {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
