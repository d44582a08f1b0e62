package telemetry

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/edgefleet/edgefleet/agent/fleet"
	"github.com/edgefleet/edgefleet/agent/metrics"
	"github.com/edgefleet/edgefleet/hub"
	"github.com/edgefleet/edgefleet/hub/api"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// hubChildEnv makes the test binary run a hub in $EDGEFLEET_TELEMETRY_HUB
// (see runHubChild), so that benchmarks measure the agent's side in a
// process of its own.
const hubChildEnv = "EDGEFLEET_TELEMETRY_HUB"

// runHubChild runs a hub on loopback until its standard input closes,
// printing "ready <api-url> <quic-addr>".
func runHubChild(dir string) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h, err := hub.New(ctx, hub.Options{DataDir: dir, APIAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0", RegistryAddr: hub.Off})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	fmt.Printf("ready %s %s\n", h.APIURL(), h.QUICAddr())
	go func() {
		bufio.NewReader(os.Stdin).ReadString('\n') // EOF when the parent goes
		cancel()
	}()
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

type hubChild struct {
	dir, api, quic string
	cmd            *exec.Cmd
	stdin          interface{ Close() error }
}

func startHubChild(tb testing.TB) *hubChild {
	tb.Helper()
	dir := tb.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), hubChildEnv+"="+dir)
	cmd.Stderr = os.Stderr
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	f := strings.Fields(line)
	if err != nil || len(f) != 3 || f[0] != "ready" {
		tb.Fatalf("hub child: %q %v", line, err)
	}
	h := &hubChild{dir: dir, api: f[1], quic: f[2], cmd: cmd, stdin: in}
	tb.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Signal(syscall.SIGKILL)
			<-done
		}
	})
	return h
}

// enrollMany enrolls n devices ("sim-0"…) and returns their fleet
// clients (identities under dirs of their own).
func (h *hubChild) enrollMany(tb testing.TB, n int) []*fleet.Client {
	tb.Helper()
	base, cfg, err := api.AdminCredentials(h.dir, "")
	if err != nil {
		tb.Fatal(err)
	}
	admin := api.NewClient(base, cfg)
	out := make([]*fleet.Client, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	work := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range work {
				ctx := context.Background()
				tok, err := admin.CreateToken(ctx, api.TokenRequest{})
				if err != nil {
					errs <- err
					continue
				}
				c, err := fleet.New(fleet.Options{Dir: filepath.Join(h.dir, "agents", strconv.Itoa(i)), HubURL: h.api,
					Token: tok.Token, DeviceID: fmt.Sprintf("sim-%d", i), Applier: nopApplier{}})
				if err == nil {
					_, err = c.Enroll(ctx)
				}
				if err != nil {
					errs <- err
					continue
				}
				out[i] = c
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
	return out
}

// benchSnapshot is a realistic snapshot: two model versions with traffic,
// a machine with a GPU.
func benchSnapshot(seq uint64, at time.Time) wire.Snapshot {
	lat := wire.Histogram{Count: 1200, Sum: 0.36, Buckets: []wire.Bucket{
		{Le: 9.765625e-05, N: 0}, {Le: 0.000244140625, N: 900}, {Le: 0.0006103515625, N: 280}, {Le: 0.00152587890625, N: 20}}}
	return wire.Snapshot{Seq: seq, Time: at, IntervalMs: 10000,
		Box: wire.BoxStats{ProcessCPU: 0.21, SystemCPU: 0.34, Cores: 8, RSSBytes: 61 << 20, MemAvailableBytes: 5 << 30,
			MemTotalBytes: 8 << 30, DiskFreeBytes: 40 << 30, DiskTotalBytes: 64 << 30,
			GPUs: []wire.GPUStats{{Index: 0, Name: "NVIDIA Jetson Orin", MemUsedBytes: 900 << 20, MemTotalBytes: 8 << 30, Utilization: 0.4}}},
		Models: []wire.ModelStats{
			{Model: "digits-cnn", Version: "3", Provider: "cuda", Requests: 1200, Errors: 1, Latency: lat},
			{Model: "ocr-rec", Version: "12", Provider: "cpu", Requests: 40, Latency: wire.Histogram{Count: 40, Sum: 1.3,
				Buckets: []wire.Bucket{{Le: 0.0238418579, N: 0}, {Le: 0.0596046448, N: 40}}}},
		}}
}

// simAgent sends reports of its own, numbering snapshots.
type simAgent struct {
	id     string
	stream string
	seq    uint64
	tr     Transport
	mqtt   paho.Client
}

func (a *simAgent) send(ctx context.Context, perReport int) error {
	b := Batch{Stream: a.stream, First: a.seq + 1}
	now := time.Now().UTC()
	for range perReport {
		a.seq++
		raw, _ := json.Marshal(benchSnapshot(a.seq, now))
		b.Snapshots = append(b.Snapshots, raw)
	}
	b.Last = a.seq
	ack, err := a.tr.Send(ctx, encodeReport(a.id, b), b.Stream, b.Last)
	if err != nil {
		return err
	}
	if ack.Seq != b.Last || ack.Error != "" {
		return fmt.Errorf("%s: ack %+v for %d", a.id, ack, b.Last)
	}
	return nil
}

func simAgents(tb testing.TB, h *hubChild, clients []*fleet.Client, transport string) []*simAgent {
	tb.Helper()
	agents := make([]*simAgent, len(clients))
	var wg sync.WaitGroup
	errs := make(chan error, len(clients))
	for i, c := range clients {
		wg.Go(func() {
			id, _ := c.Identity()
			cfg, err := c.TLSConfig()
			if err != nil {
				errs <- err
				return
			}
			a := &simAgent{id: id.DeviceID, stream: transport + "-" + id.DeviceID}
			switch transport {
			case TransportMQTT:
				pc := paho.NewClient(paho.NewClientOptions().AddBroker(id.MQTTURL).SetClientID(id.DeviceID).
					SetTLSConfig(cfg).SetCleanSession(true).SetAutoReconnect(false).SetOrderMatters(false).
					SetConnectTimeout(30 * time.Second).SetKeepAlive(60 * time.Second))
				if tok := pc.Connect(); !tok.WaitTimeout(60*time.Second) || tok.Error() != nil {
					errs <- fmt.Errorf("%s: connect: %v", id.DeviceID, tok.Error())
					return
				}
				a.mqtt = pc
				a.tr = newMQTTTransport(id.DeviceID, func() MQTTClient { return pc }, 60*time.Second, slog.New(slog.DiscardHandler))
			case TransportQUIC:
				a.tr = newQUICTransport(id.DeviceID, h.quic, cfg, 30*time.Second, 60*time.Second)
			}
			agents[i] = a
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		for _, a := range agents {
			a.tr.Close()
			if a.mqtt != nil {
				a.mqtt.Disconnect(0)
			}
		}
	})
	return agents
}

func benchAgentCount() int {
	if n, err := strconv.Atoi(os.Getenv("EDGEFLEET_BENCH_AGENTS")); err == nil && n > 0 {
		return n
	}
	return 1000
}

// BenchmarkHubIngest: 1,000 simulated agents (EDGEFLEET_BENCH_AGENTS)
// connected to one hub (a separate process) each send one report per
// iteration, all at once, and wait for its acknowledgement; reported as
// snapshots stored per second. per_report=1 is the steady state (one
// snapshot every interval); per_report=50 is agents draining backlogs.
func BenchmarkHubIngest(b *testing.B) {
	h := startHubChild(b)
	clients := h.enrollMany(b, benchAgentCount())
	for _, transport := range []string{TransportMQTT, TransportQUIC} {
		agents := simAgents(b, h, clients, transport)
		for _, per := range []int{1, 50} {
			b.Run(fmt.Sprintf("%s/agents=%d/per_report=%d", transport, len(agents), per), func(b *testing.B) {
				ctx := context.Background()
				// A first round opens connections; a hub refuses some of
				// a thousand simultaneous QUIC handshakes (its accept
				// queue is full), and agents retry, as real ones do.
				if err := warmUp(ctx, agents); err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				start := time.Now()
				for b.Loop() {
					if err := sendAll(ctx, agents, per); err != nil {
						b.Fatal(err)
					}
				}
				el := time.Since(start)
				b.ReportMetric(float64(b.N*len(agents)*per)/el.Seconds(), "snapshots/s")
				b.ReportMetric(float64(b.N*len(agents))/el.Seconds(), "reports/s")
			})
		}
		for _, a := range agents {
			a.tr.Close()
			if a.mqtt != nil {
				a.mqtt.Disconnect(0)
				a.mqtt = nil
			}
		}
	}
}

func warmUp(ctx context.Context, agents []*simAgent) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(agents))
	for _, a := range agents {
		wg.Go(func() {
			var err error
			for try := range 10 {
				if err = a.send(ctx, 1); err == nil {
					return
				}
				a.seq-- // the hub did not store it: send the same number again
				time.Sleep(time.Duration(try+1) * 100 * time.Millisecond)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func sendAll(ctx context.Context, agents []*simAgent, per int) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(agents))
	for _, a := range agents {
		wg.Go(func() {
			if err := a.send(ctx, per); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// benchTelemetry is an agent's telemetry attached to the hub child, with
// a registry holding traffic for two model versions.
func benchTelemetry(b *testing.B, h *hubChild, transport string) (*Telemetry, *metrics.Agent, func()) {
	b.Helper()
	c := h.enrollMany(b, 1)[0]
	// As the agent's registry: Go and process collectors too.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.New(reg)
	metrics.NewOutputs(reg)
	dir := b.TempDir()
	tl, err := New(Options{Dir: dir, Gatherer: reg, Transport: transport, NoFallback: true})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { c.Run(ctx) })
	up, err := FleetUplink(c, h.quic)
	if err != nil {
		b.Fatal(err)
	}
	if err := tl.Attach(up); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for up.MQTT() == nil || !up.MQTT().IsConnectionOpen() {
		if time.Now().After(deadline) {
			b.Fatal("agent not connected")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return tl, m, func() {
		cancel()
		wg.Wait()
		tl.Close()
	}
}

// BenchmarkAgentTelemetryCPU measures the agent's CPU time for one
// telemetry interval: gather the metrics, build the snapshot (two model
// versions, the machine), queue it durably, ship it and delete it on the
// hub's acknowledgement. cpu_%_at_10s is that CPU time as a share of one
// core at the default 10-second interval (goal: under 1 %).
func BenchmarkAgentTelemetryCPU(b *testing.B) {
	h := startHubChild(b)
	for _, transport := range []string{TransportMQTT, TransportQUIC} {
		b.Run(transport, func(b *testing.B) {
			tl, m, stop := benchTelemetry(b, h, transport)
			defer stop()
			ctx := context.Background()
			for _, model := range []string{"digits-cnn", "ocr-rec"} {
				m.Provider.WithLabelValues(model, "1", "cpu", "cpu").Set(1)
			}
			cycle := func() {
				for i := range 50 {
					m.ObserveRequest("digits-cnn", "1", "rest", metrics.OutcomeSuccess, time.Duration(100+i)*time.Microsecond)
				}
				m.ObserveRequest("ocr-rec", "1", "grpc", metrics.OutcomeSuccess, 30*time.Millisecond)
				if _, err := tl.SampleNow(time.Now()); err != nil {
					b.Fatal(err)
				}
				if err := tl.Ship(ctx); err != nil {
					b.Fatal(err)
				}
			}
			cycle() // connect
			// 100 intervals per iteration, so that -benchtime=1x still
			// averages over enough of them.
			const cycles = 100
			b.ResetTimer()
			cpu0 := processCPU()
			for b.Loop() {
				for range cycles {
					cycle()
				}
			}
			cpu := processCPU() - cpu0
			perCycle := cpu / time.Duration(b.N*cycles)
			b.ReportMetric(float64(perCycle.Microseconds()), "cpu_µs/interval")
			b.ReportMetric(100*perCycle.Seconds()/DefaultInterval.Seconds(), "cpu_%_at_10s")
		})
	}
}

// BenchmarkDrainWeekBacklog: an agent that was offline for 7 days at the
// default interval holds 60,480 snapshots (two model versions each); the
// benchmark times shipping all of them to the hub once it is back.
func BenchmarkDrainWeekBacklog(b *testing.B) {
	const backlog = 7 * 24 * 60 * 60 / 10
	h := startHubChild(b)
	for _, transport := range []string{TransportMQTT, TransportQUIC} {
		b.Run(transport, func(b *testing.B) {
			tl, _, stop := benchTelemetry(b, h, transport)
			defer stop()
			ctx := context.Background()
			var total time.Duration
			for range b.N {
				b.StopTimer()
				start := time.Now().Add(-7 * 24 * time.Hour)
				for i := 0; i < backlog; {
					chunk := make([]wire.Snapshot, 0, 2000)
					for ; i < backlog && len(chunk) < cap(chunk); i++ {
						chunk = append(chunk, benchSnapshot(0, start.Add(time.Duration(i)*10*time.Second)))
					}
					if _, err := tl.Queue().Append(chunk...); err != nil {
						b.Fatal(err)
					}
				}
				if st := tl.Queue().Stats(); st.Snapshots != backlog || st.Dropped != 0 {
					b.Fatalf("backlog %+v", st)
				}
				bytes := tl.Queue().Stats().Bytes
				b.StartTimer()
				t0 := time.Now()
				if err := tl.Ship(ctx); err != nil {
					b.Fatal(err)
				}
				total += time.Since(t0)
				if st := tl.Queue().Stats(); st.Snapshots != 0 {
					b.Fatalf("after the drain: %+v", st)
				}
				b.ReportMetric(float64(bytes)/(1<<20), "backlog_MiB")
			}
			b.ReportMetric(total.Seconds()/float64(b.N), "s/backlog")
			b.ReportMetric(float64(backlog)*float64(b.N)/total.Seconds(), "snapshots/s")
		})
	}
}
