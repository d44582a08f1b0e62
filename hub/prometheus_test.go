package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/edgefleet/edgefleet/hub"
	"github.com/edgefleet/edgefleet/hub/telemetry"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// prometheusBinary is Debian's Prometheus (apt-get install prometheus).
const prometheusBinary = "/usr/bin/prometheus"

// TestPrometheusScrapesFleetSeries runs Debian's Prometheus with
// deploy/prometheus/prometheus.yml (target, interval and paths rewritten
// for the test) against a running hub and reads a fleet series back
// through Prometheus's HTTP API.
func TestPrometheusScrapesFleetSeries(t *testing.T) {
	if _, err := os.Stat(prometheusBinary); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("prometheus not installed (apt-get install prometheus; make deps-apt)")
		}
		t.Skip("prometheus not installed; set CI to make this a failure")
	}
	r := startHub(t, t.TempDir(), func(o *hub.Options) { o.MetricsAddr = "127.0.0.1:0" })
	rep := telemetryReport("edge-p", 1, 3)
	if _, err := r.Telemetry().Ingest(context.Background(), "edge-p", telemetry.TransportQUIC, &rep); err != nil {
		t.Fatal(err)
	}

	// The documented configuration, pointed at this hub.
	raw, err := os.ReadFile(filepath.Join("..", "deploy", "prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	metricsURL, _ := url.Parse(r.MetricsURL())
	cfg["global"].(map[string]any)["scrape_interval"] = "1s"
	var rules []any
	for _, f := range cfg["rule_files"].([]any) {
		rules = append(rules, filepath.Join("..", "deploy", "prometheus", f.(string)))
	}
	cfg["rule_files"] = rules
	jobs := cfg["scrape_configs"].([]any)
	if len(jobs) != 1 {
		t.Fatalf("%d scrape jobs in prometheus.yml, want the hub's", len(jobs))
	}
	job := jobs[0].(map[string]any)
	if job["metrics_path"] != metricsURL.Path {
		t.Fatalf("metrics_path %v, the hub serves %s", job["metrics_path"], metricsURL.Path)
	}
	job["static_configs"] = []any{map[string]any{"targets": []any{metricsURL.Host}}}
	dir := t.TempDir()
	for i, f := range rules {
		abs, _ := filepath.Abs(f.(string))
		rules[i] = abs
	}
	out, _ := yaml.Marshal(cfg)
	confPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(confPath, out, 0o600); err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var logs strings.Builder
	cmd := exec.Command(prometheusBinary, "--config.file="+confPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})

	query := func(q string) (float64, bool) {
		resp, err := http.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return 0, false
		}
		defer resp.Body.Close()
		var body struct {
			Status string `json:"status"`
			Data   struct {
				Result []struct {
					Value [2]any `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if json.NewDecoder(resp.Body).Decode(&body) != nil || body.Status != "success" || len(body.Data.Result) != 1 {
			return 0, false
		}
		var v float64
		fmt.Sscan(body.Data.Result[0].Value[1].(string), &v)
		return v, true
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		v, ok := query(`edgefleet_fleet_requests_total{device="edge-p",model="digits",version="1"}`)
		if ok && v == 30 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus did not scrape the fleet series (last %v, %v)\n%s", v, ok, logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if v, ok := query(`sum(edgefleet_fleet_model_request_duration_seconds_count{model="digits"})`); !ok || v != 30 {
		t.Fatalf("roll-up histogram count %v, %v", v, ok)
	}
	if v, ok := query(`edgefleet_fleet_device_rss_bytes{device="edge-p"}`); !ok || v != 25<<20 {
		t.Fatalf("device RSS %v, %v", v, ok)
	}

	// Every query of the Grafana dashboard is valid PromQL for this
	// Prometheus.
	for _, expr := range dashboardExprs(t) {
		q := strings.NewReplacer("$__rate_interval", "1m", "$model", ".*", "$device", "edge-p").Replace(expr)
		resp, err := http.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Status string `json:"status"`
			Error  string `json:"error"`
		}
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if body.Status != "success" {
			t.Errorf("dashboard query %q: %s", q, body.Error)
		}
	}
}

// dashboardExprs returns the PromQL of every panel of the Grafana
// dashboard.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "deploy", "grafana", "edgefleet-fleet.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("edgefleet-fleet.json: %v", err)
	}
	var out []string
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			out = append(out, tg.Expr)
		}
	}
	if len(out) < 10 {
		t.Fatalf("dashboard has %d queries", len(out))
	}
	return out
}

// TestGrafanaDashboardUsesHubSeries: every metric the dashboard queries
// is one the hub serves.
func TestGrafanaDashboardUsesHubSeries(t *testing.T) {
	r := startHub(t, t.TempDir(), nil)
	rep := telemetryReport("edge-g", 1, 1)
	rep.Snapshots[0].Box.GPUs = []wire.GPUStats{{Index: 0, MemUsedBytes: 1}}
	if _, err := r.Telemetry().Ingest(context.Background(), "edge-g", telemetry.TransportMQTT, &rep); err != nil {
		t.Fatal(err)
	}
	fams, err := r.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	served := map[string]bool{}
	for _, f := range fams {
		served[f.GetName()] = true
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			served[f.GetName()+suffix] = true
		}
	}
	name := regexp.MustCompile(`edgefleet_[a-z0-9_]+`)
	for _, expr := range dashboardExprs(t) {
		for _, m := range name.FindAllString(expr, -1) {
			if !served[m] {
				t.Errorf("dashboard queries %s, which the hub does not serve", m)
			}
		}
	}
}
