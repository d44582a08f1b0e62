package agent_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/agent/internal/testenv"
	"github.com/edgefleet/edgefleet/agent/telemetry"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// TestTelemetrySnapshotsServedTraffic: with no hub, the agent still
// queues snapshots of what it served, and /metrics shows the queue.
func TestTelemetrySnapshotsServedTraffic(t *testing.T) {
	r := startAgent(t, config.Config{Telemetry: config.Telemetry{Interval: 50 * time.Millisecond}},
		map[string][]byte{"digits-cnn": testenv.Fixture(t, "digits/cnn.onnx")})
	d := loadDigits(t, "test.csv")
	ctx := context.Background()
	const n = 12
	for i := range n {
		if _, err := r.infer(ctx, protocols[i%len(protocols)], "digits-cnn", "", d.batch(i, 1)); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.Get("http://" + r.a.Addr("http").String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"edgefleet_agent_telemetry_queue_snapshots", "edgefleet_agent_disk_free_bytes", "edgefleet_agent_telemetry_dropped_total 0"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	dir := filepath.Dir(r.unix)
	// Stop the agent (the last snapshot is taken after the drain); the
	// result goes back for the cleanup's stop.
	r.cancel()
	err = <-r.done
	r.done <- err
	if err != nil {
		t.Fatal(err)
	}

	q, err := telemetry.OpenQueue(filepath.Join(dir, telemetry.QueueFile), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	b, err := q.Peek(100000, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if b.Len() < 2 {
		t.Fatalf("%d snapshots queued", b.Len())
	}
	var requests uint64
	var provider string
	for _, raw := range b.Snapshots {
		var s wire.Snapshot
		if err := json.Unmarshal(raw, &s); err != nil {
			t.Fatal(err)
		}
		for _, m := range s.Models {
			if m.Model == "digits-cnn" {
				requests += m.Requests
				provider = m.Provider
			}
		}
		if s.Box.RSSBytes == 0 || s.Box.DiskTotalBytes == 0 {
			t.Fatalf("snapshot %d without machine numbers: %+v", s.Seq, s.Box)
		}
	}
	if requests != n || provider != "cpu" {
		t.Fatalf("snapshots count %d requests on %q, the agent served %d on cpu", requests, provider, n)
	}
}
