package hub_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/hub"
	"github.com/edgefleet/edgefleet/hub/api"
	"github.com/edgefleet/edgefleet/ota/wire"
)

func telemetryReport(id string, from, to uint64) wire.TelemetryReport {
	r := wire.TelemetryReport{DeviceID: id, Stream: "st-1"}
	now := time.Now().UTC().Truncate(time.Second)
	for s := from; s <= to; s++ {
		r.Snapshots = append(r.Snapshots, wire.Snapshot{Seq: s, Time: now.Add(time.Duration(s-to) * 10 * time.Second),
			IntervalMs: 10000, Box: wire.BoxStats{RSSBytes: 25 << 20, DiskFreeBytes: 1 << 30},
			Models: []wire.ModelStats{{Model: "digits", Version: "1", Provider: "cpu", Requests: 10,
				Latency: wire.Histogram{Count: 10, Sum: 0.02, Buckets: []wire.Bucket{{Le: 0.001, N: 0}, {Le: 0.0025, N: 10}}}}}})
	}
	return r
}

// TestTelemetryOverMQTTAndAPI: a device's reports are stored once and
// acknowledged on its ack topic; the API and /metrics show them.
func TestTelemetryOverMQTTAndAPI(t *testing.T) {
	ctx := context.Background()
	r := startHub(t, t.TempDir(), func(o *hub.Options) { o.MetricsAddr = "127.0.0.1:0" })
	d := mustEnroll(t, r, "edge-t")
	cl, err := connect(t, d, r.roots(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	acks := make(chan wire.TelemetryReportAck, 10)
	tok := cl.Subscribe(wire.Topic("edge-t", wire.KindTelemetryAck), 1, func(_ paho.Client, m paho.Message) {
		var a wire.TelemetryReportAck
		json.Unmarshal(m.Payload(), &a)
		acks <- a
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	recvAck := func() wire.TelemetryReportAck {
		t.Helper()
		select {
		case a := <-acks:
			return a
		case <-time.After(10 * time.Second):
			t.Fatal("no acknowledgement")
		}
		return wire.TelemetryReportAck{}
	}
	topic := wire.Topic("edge-t", wire.KindTelemetry)
	tests := []struct {
		name      string
		payload   any
		wantSeq   uint64
		wantError bool
	}{
		{"first report", telemetryReport("edge-t", 1, 2), 2, false},
		{"replay", telemetryReport("edge-t", 1, 2), 2, false},
		{"next", telemetryReport("edge-t", 3, 3), 3, false},
		{"another device's report", telemetryReport("edge-x", 4, 4), 0, true},
		{"not JSON", json.RawMessage(`"x"`), 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub(t, cl, topic, tt.payload)
			a := recvAck()
			if (a.Error != "") != tt.wantError || (!tt.wantError && a.Seq != tt.wantSeq) {
				t.Fatalf("ack %+v", a)
			}
		})
	}

	admin := r.admin(t)
	o, err := admin.TelemetryOverview(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if o.Devices != 1 || o.Stored != 3 || o.Duplicates != 2 || len(o.Versions) != 1 || o.Versions[0].Totals.Requests != 30 {
		t.Fatalf("overview %+v", o)
	}
	dev, err := admin.TelemetryDevice(ctx, "edge-t")
	if err != nil || dev.Last == nil || dev.Last.Seq != 3 || dev.Last.Transport != "mqtt" || len(dev.Models) != 1 {
		t.Fatalf("device %+v, %v", dev, err)
	}
	win, err := admin.TelemetryWindow(ctx, "edge-t", time.Time{}, 2)
	if err != nil || len(win) != 2 || win[0].Seq != 2 || win[1].Seq != 3 {
		t.Fatalf("window %+v, %v", win, err)
	}
	series, err := admin.TelemetrySeries(ctx, "digits", "1", time.Now().Add(-time.Minute), time.Time{})
	if err != nil || series.Devices != 1 || series.Health.Requests != 30 || len(series.Points) < 6 {
		t.Fatalf("series %+v, %v", series, err)
	}
	var reqs uint64
	for _, p := range series.Points {
		reqs += p.Requests
	}
	if reqs != 30 {
		t.Fatalf("series points sum to %d requests, want 30", reqs)
	}
	var se *api.StatusError
	if _, err := admin.TelemetryDevice(ctx, "nobody"); !errors.As(err, &se) || se.Code != http.StatusNotFound {
		t.Fatalf("unknown device: %v", err)
	}

	// Devices may not read the fleet's telemetry.
	devClient := api.NewClient(r.APIURL(), &tls.Config{RootCAs: r.roots(t), Certificates: []tls.Certificate{d.cert}})
	if _, err := devClient.TelemetryOverview(ctx, 0); !errors.As(err, &se) || se.Code != http.StatusForbidden {
		t.Fatalf("device reading telemetry: %v", err)
	}
	// Bad parameters are 400s.
	resp := adminGet(t, r, "/v1/telemetry/devices/edge-t/window?since=yesterday")
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad since: %s", resp.Status)
	}

	// Prometheus endpoint.
	res, err := http.Get(r.MetricsURL())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{
		`edgefleet_fleet_requests_total{device="edge-t",model="digits",version="1"} 30`,
		`edgefleet_fleet_model_requests_total{model="digits",version="1"} 30`,
		`edgefleet_hub_telemetry_snapshots_total{result="duplicate",transport="mqtt"} 2`,
		`go_goroutines`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func adminGet(t *testing.T, r *running, path string) *http.Response {
	t.Helper()
	base, cfg, err := api.AdminCredentials(r.dir, "")
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	resp, err := hc.Get(base + path)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}
