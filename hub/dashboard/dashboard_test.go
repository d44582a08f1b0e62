package dashboard_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/deploy/testenv"
	"github.com/edgefleet/edgefleet/hil-tests/fleetsim"
	"github.com/edgefleet/edgefleet/hub"
	"github.com/edgefleet/edgefleet/hub/dashboard"
	"github.com/edgefleet/edgefleet/hub/enroll"
	"github.com/edgefleet/edgefleet/hub/hubtest"
	"github.com/edgefleet/edgefleet/hub/rollout"
	"github.com/edgefleet/edgefleet/ota"
	"github.com/edgefleet/edgefleet/ota/artifact"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// These tests run the real hub in-process with its dashboard listener,
// simulated devices that speak the real protocol over loopback MQTT
// (hil-tests/fleetsim: enrollment, presence, reported state), real rollouts
// (artifacts pushed to the hub's registry), and telemetry stored through
// the hub's telemetry store's ingest path.

const fleetSize = 5

// clock is the rollouts' fake clock: bake times never pass by themselves.
type clock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// env is a running hub with a fleet, rollouts and telemetry.
type env struct {
	*hub.Hub
	fleet *fleetsim.Fleet
	// canary is running (wave 1 baking); halted was halted by the NaN
	// gate.
	canary, halted rollout.Status
	// seq numbers each device's telemetry snapshots.
	seq map[string]uint64
	// offline is the device that went offline.
	offline *fleetsim.Device
}

func (e *env) url(path string) string { return strings.TrimSuffix(e.DashboardURL(), "/") + path }

// health is what simulated devices report: vad v2 emits NaNs.
func health(_ *fleetsim.Device, name string, rm wire.ReportedModel) wire.Health {
	if name == "vad" && rm.ActiveVersion == "2" {
		return wire.Health{Requests: 300, NaNs: 40, P99Ms: 4}
	}
	return wire.Health{Requests: 300, Errors: 1, P99Ms: 3}
}

// behavior activates at once; device 0 runs on CUDA.
func behavior(d *fleetsim.Device, name string, want wire.DesiredModel, cur wire.ReportedModel) (wire.ReportedModel, error) {
	out, err := fleetsim.Activate(d, name, want, cur)
	if d.Index == 0 {
		out.Provider = "cuda"
	}
	return out, err
}

func startEnv(t *testing.T) *env {
	t.Helper()
	ck := &clock{t: time.Now()}
	h := hubtest.Start(t, hub.Options{RegistryAddr: "127.0.0.1:0", DashboardAddr: "127.0.0.1:0",
		RolloutClock: ck.Now, RolloutTick: 20 * time.Millisecond}).Hub
	if h.DashboardURL() == "" {
		t.Fatal("no dashboard URL")
	}

	sites := []string{"berlin", "berlin", "paris", "paris", "lisbon"}
	f, err := fleetsim.New(fleetsim.Options{HubURL: h.APIURL(), Count: fleetSize,
		Token: func(ctx context.Context, id string) (string, error) {
			tok, _, err := h.CreateToken(ctx, enroll.TokenOptions{DeviceID: id})
			return tok, err
		},
		Labels: func(i int) map[string]string { return map[string]string{"site": sites[i], "tier": "edge"} },
		Hardware: wire.Hardware{CPU: "Cortex-A78AE", Cores: 8, MemBytes: 16 << 30, GPU: "Orin Ampere",
			Providers: []string{"cuda", "cpu"}, OS: "linux", Arch: "arm64"},
		Behavior: behavior, Health: health, HeartbeatInterval: time.Second, ReportInterval: 100 * time.Millisecond,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()
	if err := f.Enroll(sctx); err != nil {
		t.Fatal(err)
	}
	if err := f.Start(sctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	e := &env{Hub: h, fleet: f, seq: map[string]uint64{}}

	// digits v1 everywhere, then a canary of v2 that stays in its first
	// wave (the fake clock never ends the bake); vad v1 everywhere, then
	// v2, which emits NaNs and is rolled back.
	e.rollout(t, rollout.Spec{Model: "digits", Ref: push(t, h, "digits", "1"), Waves: []float64{100}, Bake: -1}, rollout.StateCompleted)
	e.rollout(t, rollout.Spec{Model: "vad", Ref: push(t, h, "vad", "1"), Waves: []float64{100}, Bake: -1}, rollout.StateCompleted)
	e.halted = e.rollout(t, rollout.Spec{Model: "vad", Ref: push(t, h, "vad", "2"), Waves: []float64{50, 100}, Bake: -1}, rollout.StateRolledBack)
	e.canary = e.rollout(t, rollout.Spec{Model: "digits", Ref: push(t, h, "digits", "2"), Selector: "tier=edge",
		Waves: []float64{20, 60, 100}, Bake: rollout.Duration(10 * time.Minute)}, rollout.StateRunning)
	testenv.Eventually(t, "the canary's first wave to settle", 30*time.Second, func() bool {
		st, err := h.Rollouts().Get(context.Background(), e.canary.ID, false)
		e.canary = st
		return err == nil && !st.Settled.IsZero() && st.Counts.Updated == 1
	})

	// Fifteen minutes of telemetry, every 10 s, from every device: what
	// each runs now.
	now := time.Now().UTC().Truncate(time.Second)
	for _, d := range f.Devices() {
		_, _, ms := d.State()
		var snaps []wire.Snapshot
		for i := 90; i >= 1; i-- {
			snaps = append(snaps, e.snapshot(d.ID, d.Index, now.Add(-time.Duration(i-1)*10*time.Second), ms))
		}
		e.ingest(t, d.ID, snaps)
	}
	// The last device outside the canary's wave goes offline (an offline
	// canary would hold the wave: no "baking since").
	full, err := h.Rollouts().Get(context.Background(), e.canary.ID, true)
	if err != nil {
		t.Fatal(err)
	}
	off := f.Devices()[fleetSize-1]
	for i := fleetSize - 1; i >= 0; i-- {
		if !slices.ContainsFunc(full.Devices, func(d rollout.Device) bool { return d.ID == f.Devices()[i].ID }) {
			off = f.Devices()[i]
			break
		}
	}
	off.GoOffline()
	e.offline = off
	testenv.Eventually(t, "a device offline", 30*time.Second, func() bool {
		d, err := h.Registry().Get(context.Background(), off.ID)
		return err == nil && !d.IsOnline(time.Now())
	})
	return e
}

// snapshot is a device's telemetry for 10 s ending at at, for the active
// versions in ms; the numbers vary with time so the charts have shape.
func (e *env) snapshot(id string, idx int, at time.Time, ms map[string]wire.ReportedModel) wire.Snapshot {
	e.seq[id]++
	wave := 0.5 + 0.5*math.Sin(float64(at.Unix())/180) // a 19-minute cycle
	sn := wire.Snapshot{Seq: e.seq[id], Time: at, IntervalMs: 10000,
		Box: wire.BoxStats{ProcessCPU: 0.2 + 0.3*wave, SystemCPU: 0.3 + 0.2*wave, Cores: 8,
			RSSBytes: uint64(40+idx*3+int(4*wave)) << 20, DiskFreeBytes: 12 << 30, DiskTotalBytes: 32 << 30}}
	for j, name := range []string{"digits", "vad"} {
		m, ok := ms[name]
		if !ok || m.ActiveVersion == "" {
			continue
		}
		req := uint64(200 + 100*idx + 150*j + int(300*wave))
		// Slower under load; digits v2 is faster than v1.
		slowShare := 0.02 + 0.1*wave
		if name == "digits" && m.ActiveVersion == "2" {
			slowShare /= 3
		}
		slow := uint64(float64(req) * slowShare)
		fast := req - slow
		lat := wire.Histogram{Count: req, Sum: float64(fast)*0.0015 + float64(slow)*0.006,
			Buckets: []wire.Bucket{{Le: 0.001, N: fast / 4}, {Le: 0.0025, N: fast - fast/4}, {Le: 0.005, N: slow / 2}, {Le: 0.01, N: slow - slow/2}}}
		sn.Models = append(sn.Models, wire.ModelStats{Model: name, Version: m.ActiveVersion, Provider: m.Provider,
			Requests: req, Errors: req / 500, Latency: lat})
	}
	return sn
}

func (e *env) ingest(t *testing.T, id string, snaps []wire.Snapshot) {
	t.Helper()
	ack, err := e.Telemetry().Ingest(context.Background(), id, "mqtt", &wire.TelemetryReport{DeviceID: id, Stream: "st-1", Snapshots: snaps})
	if err != nil || ack.Error != "" {
		t.Fatalf("ingest %s: %v %+v", id, err, ack)
	}
}

// rollout creates a rollout and waits for state.
func (e *env) rollout(t *testing.T, spec rollout.Spec, state string) rollout.Status {
	t.Helper()
	st, err := e.Rollouts().Create(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, fmt.Sprintf("rollout of %s %s", spec.Model, state), 30*time.Second, func() bool {
		st, err = e.Rollouts().Get(context.Background(), st.ID, false)
		if err != nil {
			t.Fatal(err)
		}
		if rollout.Final(st.State) && st.State != state {
			t.Fatalf("rollout %s ended %s (%s), want %s", st.ID, st.State, st.Reason, state)
		}
		return st.State == state
	})
	return st
}

// push publishes a tiny artifact of model version v to the hub's registry.
func push(t *testing.T, h *hub.Hub, model, v string) string {
	t.Helper()
	spec := []artifact.TensorSpec{{Name: "x", Datatype: "FP32", Shape: []int64{-1, 4}}}
	cfg := artifact.Config{SchemaVersion: artifact.ConfigSchemaVersion, Name: model, Version: v,
		Inputs: spec, Outputs: spec, Precision: artifact.PrecisionFP32}
	ref := h.RegistryAddr() + "/models/" + model + ":" + v
	if _, err := ota.Push(context.Background(), ref, ota.Artifact{Config: cfg,
		Model: ota.BytesFile(model+".onnx", []byte("model "+model+" v"+v))}); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref
}

func getJSON(t *testing.T, u string, v any) int {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil && resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
	}
	return resp.StatusCode
}

// TestDashboard checks the JSON endpoints, the event stream and, in
// headless Chromium, the page.
func TestDashboard(t *testing.T) {
	e := startEnv(t)
	t.Run("api", func(t *testing.T) { testAPI(t, e) })
	t.Run("refusals", func(t *testing.T) { testRefusals(t, e) })
	t.Run("events", func(t *testing.T) { testEvents(t, e) })
	t.Run("browser", func(t *testing.T) { testBrowser(t, e) })
}

func testAPI(t *testing.T, e *env) {
	var o dashboard.Overview
	if code := getJSON(t, e.url("/api/overview"), &o); code != http.StatusOK {
		t.Fatalf("overview: %d", code)
	}
	if o.Devices != (dashboard.DeviceCounts{Total: fleetSize, Online: fleetSize - 1, Offline: 1}) {
		t.Errorf("device counts %+v", o.Devices)
	}
	versions := map[string]int{}
	for _, m := range o.Models {
		for _, v := range m.Versions {
			versions[m.Model+":"+v.Version] = v.Devices
			if v.Serving == 0 || v.Recent == nil || v.Recent.Requests == 0 {
				t.Errorf("%s:%s has no recent telemetry: %+v", m.Model, v.Version, v)
			}
		}
	}
	want := map[string]int{"digits:1": fleetSize - 1, "digits:2": 1, "vad:1": fleetSize}
	if fmt.Sprint(versions) != fmt.Sprint(want) {
		t.Errorf("versions %v, want %v", versions, want)
	}
	providers := map[string]dashboard.ProviderCount{}
	for _, p := range o.Providers {
		providers[p.Name] = p
	}
	if providers["cuda"].InUse != 1 || providers["cpu"].InUse != fleetSize-1 || providers["cuda"].Available != fleetSize {
		t.Errorf("providers %+v", o.Providers)
	}
	if len(o.Rollouts.Active) != 1 || o.Rollouts.Active[0].ID != e.canary.ID || o.Rollouts.Total != 4 {
		t.Errorf("rollouts %+v", o.Rollouts)
	}
	if o.Telemetry.Devices != fleetSize || o.Telemetry.Stored != 90*fleetSize {
		t.Errorf("telemetry %+v", o.Telemetry)
	}

	tests := []struct {
		name, q string
		total   int
	}{
		{"all", "", fleetSize},
		{"by label", "site=paris", 2},
		{"by id", "sim-00003", 1},
		{"by version", "digits:2", 1},
		{"none", "nowhere", 0},
	}
	for _, tt := range tests {
		t.Run("devices "+tt.name, func(t *testing.T) {
			var l dashboard.DeviceList
			getJSON(t, e.url("/api/devices?q="+url.QueryEscape(tt.q)), &l)
			if l.Total != tt.total || len(l.Devices) != tt.total {
				t.Errorf("q=%q: total %d, %d rows, want %d", tt.q, l.Total, len(l.Devices), tt.total)
			}
		})
	}
	var page dashboard.DeviceList
	getJSON(t, e.url("/api/devices?limit=2&offset=2"), &page)
	if page.Total != fleetSize || len(page.Devices) != 2 || page.Devices[0].ID != "sim-00002" {
		t.Errorf("page %+v", page)
	}

	var dd dashboard.DeviceDetail
	getJSON(t, e.url("/api/devices/sim-00000?window=20"), &dd)
	if dd.Device.ID != "sim-00000" || !dd.Device.Online || dd.Device.Hardware.CPU != "Cortex-A78AE" ||
		len(dd.Window) != 20 || dd.Window[19].Seq != 90 || dd.Telemetry == nil || len(dd.Telemetry.Models) == 0 ||
		dd.Desired.Models["digits"].Version == "" || len(dd.Rollouts) < 2 {
		t.Errorf("device detail %+v", dd)
	}

	var rl dashboard.RolloutList
	getJSON(t, e.url("/api/rollouts"), &rl)
	if len(rl.Rollouts) != 4 || rl.Rollouts[0].ID != e.canary.ID {
		t.Fatalf("rollouts %+v", rl)
	}
	var halted rollout.Status
	getJSON(t, e.url("/api/rollouts/"+e.halted.ID), &halted)
	if halted.State != rollout.StateRolledBack || !strings.Contains(halted.Reason, "NaN") || len(halted.Devices) == 0 {
		t.Errorf("halted rollout %+v", halted)
	}

	var ms dashboard.Models
	getJSON(t, e.url("/api/models?minutes=15"), &ms)
	if len(ms.Series) != 3 { // digits 1 and 2, vad 1 (v2 was rolled back before any telemetry)
		t.Errorf("%d series, want 3", len(ms.Series))
	}
	var reqs uint64
	for _, se := range ms.Series {
		if se.Model == "digits" && se.Version == "1" {
			for _, p := range se.Points {
				reqs += p.Requests
			}
		}
	}
	if reqs == 0 {
		t.Errorf("no digits v1 requests in the series: %+v", ms.Series)
	}
}

func testRefusals(t *testing.T, e *env) {
	tests := []struct {
		name, method, path, host string
		code                     int
	}{
		{"unknown device", "GET", "/api/devices/nobody", "", http.StatusNotFound},
		{"unknown rollout", "GET", "/api/rollouts/ro-none", "", http.StatusNotFound},
		{"bad limit", "GET", "/api/devices?limit=0", "", http.StatusBadRequest},
		{"bad window", "GET", "/api/devices/sim-00000?window=x", "", http.StatusBadRequest},
		{"bad minutes", "GET", "/api/models?minutes=-5", "", http.StatusBadRequest},
		{"bad stream max", "GET", "/api/events?max=0", "", http.StatusBadRequest},
		{"write", "POST", "/api/overview", "", http.StatusMethodNotAllowed},
		{"delete", "DELETE", "/api/devices/sim-00000", "", http.StatusMethodNotAllowed},
		{"rebinding host", "GET", "/api/overview", "evil.example:7080", http.StatusMisdirectedRequest},
		{"localhost", "GET", "/api/overview", "localhost:7080", http.StatusOK},
		{"page", "GET", "/", "", http.StatusOK},
		{"script", "GET", "/assets/app.js", "", http.StatusOK},
		{"no such page", "GET", "/admin", "", http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, e.url(tt.path), nil)
			if tt.host != "" {
				req.Host = tt.host
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.code {
				t.Errorf("%s %s: %s, want %d", tt.method, tt.path, resp.Status, tt.code)
			}
			if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
				t.Errorf("CSP %q", csp)
			}
		})
	}
}

// testEvents reads the event stream while telemetry arrives and a device
// reports.
func testEvents(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.url("/api/events"), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	events := make(chan [2]string, 16)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		var ev, data string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				ev = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				data = strings.TrimPrefix(line, "data: ")
			case line == "" && ev != "":
				events <- [2]string{ev, data}
				ev, data = "", ""
			}
		}
	}()
	next := func() [2]string {
		t.Helper()
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("stream ended")
			}
			return ev
		case <-ctx.Done():
			t.Fatal("no event")
		}
		return [2]string{}
	}
	if ev := next(); ev[0] != "hello" {
		t.Fatalf("first event %v", ev)
	}
	d := e.fleet.Devices()[1]
	_, _, ms := d.State()
	e.ingest(t, d.ID, []wire.Snapshot{e.snapshot(d.ID, d.Index, time.Now().UTC(), ms)})
	for {
		ev := next()
		if ev[0] != "change" {
			continue
		}
		var c struct {
			Telemetry []string `json:"telemetry"`
			All       bool     `json:"all"`
		}
		if err := json.Unmarshal([]byte(ev[1]), &c); err != nil {
			t.Fatalf("change %q: %v", ev[1], err)
		}
		if c.All || strings.Contains(strings.Join(c.Telemetry, ","), d.ID) {
			return
		}
	}
}
