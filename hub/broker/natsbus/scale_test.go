//go:build scale

package natsbus_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/deploy/testenv"
	"github.com/edgefleet/edgefleet/hub/broker/natsbus"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// TestScaleIngest measures device → hub throughput through three NATS
// nodes (stream R3): devices publish telemetry over MQTT (QoS 1), one hub
// replica and then three consume through the shared durable consumer, in
// one run (`make bench-cluster`). A message carries batch samples.
func TestScaleIngest(t *testing.T) {
	devices, _ := strconv.Atoi(os.Getenv("EDGEFLEET_SCALE_DEVICES"))
	if devices <= 0 {
		devices = 300
	}
	const perDevice, batch = 40, 20
	cl := startCluster(t, 3)
	cl.hub(t, 0, time.Second).Close() // waits for the JetStream meta leader and the MQTT streams
	var clients []paho.Client
	for i := range devices {
		clients = append(clients, cl.device(t, fmt.Sprintf("dev-%d", i), i%3))
	}
	payload := make([]byte, 0, batch*60)
	payload = append(payload, '[')
	for i := range batch {
		if i > 0 {
			payload = append(payload, ',')
		}
		payload = append(payload, []byte(`{"seq":1,"model":"digits","p99_ms":1.5,"requests":100}`)...)
	}
	payload = append(payload, ']')

	out := fmt.Sprintf("devices %d, %d messages each, %d samples per message, 3 NATS nodes (R3 stream)\n", devices, perDevice, batch)
	for round, replicas := range []int{1, 3} {
		var got atomic.Int64
		filter := wire.Filter(wire.KindTelemetry)
		var hubs []*natsbus.Bus
		for i := range replicas {
			h := cl.hub(t, i, 30*time.Second)
			hubs = append(hubs, h)
			if err := h.Subscribe(context.Background(), filter, func(string, []byte) { got.Add(1) }); err != nil {
				t.Fatal(err)
			}
		}
		want := int64(devices * perDevice)
		start := time.Now()
		var wg sync.WaitGroup
		sem := make(chan struct{}, 64)
		for i, c := range clients {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				topic := wire.Topic(fmt.Sprintf("dev-%d", i), wire.KindTelemetry)
				var toks []paho.Token
				for range perDevice {
					toks = append(toks, c.Publish(topic, 1, false, payload))
				}
				for _, tok := range toks {
					tok.WaitTimeout(60 * time.Second)
				}
			})
		}
		wg.Wait()
		testenv.Eventually(t, "all messages consumed", 5*time.Minute, func() bool { return got.Load() >= want })
		el := time.Since(start)
		line := fmt.Sprintf("round %d: %d hub replica(s): %d messages (%d samples) in %v: %.0f messages/s, %.0f samples/s\n",
			round, replicas, want, want*batch, el.Round(time.Millisecond), float64(want)/el.Seconds(), float64(want*batch)/el.Seconds())
		t.Log(line)
		out += line
		for _, h := range hubs {
			h.Close()
		}
	}
	if p := os.Getenv("EDGEFLEET_BENCH_OUT"); p != "" {
		os.WriteFile(p, []byte(out), 0o644)
	}
}
