package telemetry

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/deploy/testenv"
	"github.com/edgefleet/edgefleet/hub"
	"github.com/edgefleet/edgefleet/hub/ca"
)

// TestHubDownThenBack: the hub is down while the agent takes N snapshots;
// once it is back all N arrive exactly once, in order, over each
// transport and broker.
func TestHubDownThenBack(t *testing.T) {
	tests := []struct {
		name      string
		transport string
		mosquitto bool
	}{
		{"mqtt embedded broker", TransportMQTT, false},
		{"quic", TransportQUIC, false},
		{"mqtt mosquitto", TransportMQTT, true},
		{"quic, hub on mosquitto", TransportQUIC, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mod func(*hub.Options)
			if tt.mosquitto {
				mod = func(o *hub.Options) {
					// The hub's CA must exist before Mosquitto can trust it.
					c, err := ca.LoadOrCreate(o.DataDir, "")
					if err != nil {
						t.Fatal(err)
					}
					o.Broker = testenv.StartMosquitto(t, c, nil).URL
				}
			}
			p := startHub(t, mod)
			dir := t.TempDir()
			enrollDevice(t, p, dir, "edge-1")
			p.stop()

			a := runAgent(t, dir, Options{Transport: tt.transport, NoFallback: true}, "")
			const n = 120
			a.produce(t, n)
			if st := a.tel.Queue().Stats(); st.Snapshots != n {
				t.Fatalf("queued %d of %d while the hub was down", st.Snapshots, n)
			}
			p.start()
			testenv.Eventually(t, "the backlog to drain", 60*time.Second, func() bool {
				return a.tel.Queue().Stats().Snapshots == 0
			})
			checkExactlyOnce(t, p.store(), "edge-1", 1, n, tt.transport)

			// Steady state after the backlog: new snapshots keep
			// flowing, still exactly once.
			a.produce(t, 5)
			testenv.Eventually(t, "new snapshots", 30*time.Second, func() bool { return a.tel.Queue().Stats().Snapshots == 0 })
			checkExactlyOnce(t, p.store(), "edge-1", 1, n+5, tt.transport)
			tot, _ := p.store().Totals("edge-1", "digits", "1")
			// produce sends i%3+1 requests per snapshot.
			want := uint64(0)
			for i := range n {
				want += uint64(i%3 + 1)
			}
			for i := range 5 {
				want += uint64(i%3 + 1)
			}
			if tot.Requests != want {
				t.Fatalf("hub counted %d requests, the agent served %d", tot.Requests, want)
			}
			if st := a.tel.Status(); st.Sent[tt.transport] != n+5 {
				t.Fatalf("agent status %+v", st)
			}
		})
	}
}

// TestBudgetHolds: with the hub down, a queue whose budget holds 10
// snapshots keeps the newest 10 and reports the drops.
func TestBudgetHolds(t *testing.T) {
	p := startHub(t, nil)
	dir := t.TempDir()
	enrollDevice(t, p, dir, "edge-b")
	p.stop()
	// One snapshot of this shape is about 500 bytes; size the budget
	// from the first one.
	a := runAgent(t, dir, Options{Budget: 1 << 20}, "")
	a.produce(t, 1)
	per := a.tel.Queue().Stats().Bytes
	a.stop()
	a = runAgent(t, dir, Options{Budget: 10*per + per/2}, "")
	budget := 10*per + per/2
	const n = 40
	for range n - 1 {
		a.produce(t, 1)
		if b := a.tel.Queue().Stats().Bytes; b > budget {
			t.Fatalf("queue holds %d bytes, budget %d", b, budget)
		}
	}
	st := a.tel.Queue().Stats()
	kept := uint64(st.Snapshots)
	if kept < 8 || kept > 10 || st.Dropped != n-kept {
		t.Fatalf("queue %+v: want about 10 kept and the rest of %d dropped", st, n)
	}
	p.start()
	testenv.Eventually(t, "the kept snapshots to arrive", 30*time.Second, func() bool { return a.tel.Queue().Stats().Snapshots == 0 })
	checkExactlyOnce(t, p.store(), "edge-b", n-kept+1, n, TransportMQTT)
	d, _ := p.store().Device("edge-b")
	if d.Dropped != n-kept || d.Stored+d.Dropped != n {
		t.Fatalf("hub: %d stored, %d dropped; the agent made %d", d.Stored, d.Dropped, n)
	}
}

// TestQUICBlockedFallsBackToMQTT: nothing answers on the QUIC address
// (UDP swallowed), so reports go over MQTT.
func TestQUICBlockedFallsBackToMQTT(t *testing.T) {
	p := startHub(t, nil)
	dir := t.TempDir()
	enrollDevice(t, p, dir, "edge-f")
	// A UDP socket that reads and drops everything: a firewall eating
	// the packets, so the handshake times out rather than failing fast.
	hole, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := hole.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	a := runAgent(t, dir, Options{Transport: TransportQUIC, DialTimeout: 300 * time.Millisecond}, hole.LocalAddr().String())
	a.produce(t, 10)
	testenv.Eventually(t, "reports over MQTT", 30*time.Second, func() bool { return a.tel.Queue().Stats().Snapshots == 0 })
	checkExactlyOnce(t, p.store(), "edge-f", 1, 10, TransportMQTT)
	st := a.tel.Status()
	if st.Fallbacks < 1 || st.Transport != TransportMQTT || st.Sent[TransportMQTT] != 10 {
		t.Fatalf("status %+v: want a fallback and 10 sent over MQTT", st)
	}
}

// TestQUICResumesAndRefusesRevoked: a re-dial resumes the TLS session;
// a revoked device is refused, also on a resumed session.
func TestQUICResumesAndRefusesRevoked(t *testing.T) {
	p := startHub(t, nil)
	dir := t.TempDir()
	enrollDevice(t, p, dir, "edge-q")
	a := runAgent(t, dir, Options{Transport: TransportQUIC, NoFallback: true}, "")
	a.produce(t, 1)
	testenv.Eventually(t, "first report", 30*time.Second, func() bool { return a.tel.Queue().Stats().Snapshots == 0 })
	a.tel.mu.Lock()
	qt := a.tel.transport.(*quicTransport)
	a.tel.mu.Unlock()
	if qt.Resumed() {
		t.Fatal("first connection claims a resumed session")
	}
	qt.Close()
	a.produce(t, 1)
	testenv.Eventually(t, "second report", 30*time.Second, func() bool { return a.tel.Queue().Stats().Snapshots == 0 })
	if !qt.Resumed() {
		t.Fatal("re-dial did not resume the TLS session")
	}
	checkExactlyOnce(t, p.store(), "edge-q", 1, 2, TransportQUIC)

	if _, err := p.h.Revoke(context.Background(), "edge-q"); err != nil {
		t.Fatal(err)
	}
	// On the open connection: refused before the report is read.
	a.produce(t, 1)
	time.Sleep(500 * time.Millisecond)
	// On a new (resumed) connection: refused at the handshake.
	qt.Close()
	a.produce(t, 1)
	time.Sleep(time.Second)
	if d, _ := p.store().Device("edge-q"); d.Stored != 2 {
		t.Fatalf("hub stored %d snapshots, 2 before the revocation", d.Stored)
	}
	if st := a.tel.Status(); st.SendErrors[TransportQUIC] == 0 || a.tel.Queue().Stats().Snapshots != 2 {
		t.Fatalf("revoked device: status %+v", st)
	}
}

// TestHubRestartDrain: an agent connected to the hub keeps taking
// snapshots while the hub restarts; once it is back the backlog drains over
// both transports, every snapshot once and in order. Over QUIC the
// connection of the previous hub run is not waited on: the restarted hub
// resets it (its stateless reset key is kept in its data folder), so no
// acknowledgement wait runs out, the report is resent at once on one new
// connection, and dials while the hub is down are retried without a
// growing backoff. The agents run with the default timeouts and backoff;
// the drain times are logged.
func TestHubRestartDrain(t *testing.T) {
	for _, transport := range []string{TransportMQTT, TransportQUIC} {
		t.Run(transport, func(t *testing.T) {
			p := startHub(t, nil)
			dir := t.TempDir()
			enrollDevice(t, p, dir, "edge-r")
			a := runAgent(t, dir, Options{Transport: transport, NoFallback: true, MinBackoff: time.Second,
				MaxBackoff: DefaultMaxBackoff, AckTimeout: DefaultAckTimeout, DialTimeout: DefaultDialTimeout}, "")
			a.produce(t, 5)
			testenv.Eventually(t, "first reports", 30*time.Second, func() bool { return a.tel.Queue().Stats().Snapshots == 0 })
			var qt *quicTransport
			if transport == TransportQUIC {
				a.tel.mu.Lock()
				qt = a.tel.transport.(*quicTransport)
				a.tel.mu.Unlock()
			}
			dials := int64(0)
			if qt != nil {
				dials = qt.dials.Load()
			}

			p.stop()
			const n = 60
			a.produce(t, n)
			p.start()
			start := time.Now()
			testenv.Eventually(t, "the backlog to drain", 60*time.Second, func() bool { return a.tel.Queue().Stats().Snapshots == 0 })
			t.Logf("%s: backlog of %d snapshots drained %v after the hub restarted", transport, n, time.Since(start).Round(time.Millisecond))
			checkExactlyOnce(t, p.store(), "edge-r", 1, n+5, transport)
			if qt == nil {
				return
			}
			if to := qt.ackTimeouts.Load(); to != 0 {
				t.Fatalf("%d acknowledgement waits ran out on a dead connection", to)
			}
			if d := qt.dials.Load() - dials; d != 1 {
				t.Fatalf("%d connections after the restart, want 1", d)
			}
		})
	}
}
