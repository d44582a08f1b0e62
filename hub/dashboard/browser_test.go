package dashboard_test

import (
	"bytes"
	"context"
	"image/png"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/ota/wire"
)

// chromiumFlags make headless Chromium quiet, offline and reproducible.
var chromiumFlags = []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
	"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
	"--disable-dev-shm-usage", "--hide-scrollbars",
	"--window-size=1280,900"}

// chromium finds Debian's chromium (or $EDGEFLEET_CHROMIUM). Without it
// the test is skipped, except under CI where it fails.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("EDGEFLEET_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium not found: install Debian's chromium (make deps-apt) or set EDGEFLEET_CHROMIUM")
	}
	t.Skip("chromium not found (apt-get install chromium); CI runs this test")
	return ""
}

// artifacts is where screenshots go: $EDGEFLEET_ARTIFACTS/dashboard, or
// the test's artifact directory (kept with go test -artifacts).
func artifacts(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("EDGEFLEET_ARTIFACTS"); d != "" {
		d = filepath.Join(d, "dashboard")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.ArtifactDir()
}

// load opens u in headless Chromium for budget of virtual time and returns
// the DOM then; with a screenshot path it also saves a 1280×900 PNG.
func load(t *testing.T, bin, u string, budget time.Duration, screenshot string) string {
	t.Helper()
	profile, err := os.MkdirTemp("", "edgefleet-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(profile)
	args := append(append([]string{}, chromiumFlags...), "--user-data-dir="+profile,
		"--virtual-time-budget="+strconv.Itoa(int(budget.Milliseconds())))
	if screenshot != "" {
		args = append(args, "--screenshot="+screenshot)
	}
	args = append(args, "--dump-dom", u)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "HOME="+profile)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\n%s", u, err, tail(stderr.String(), 3000))
	}
	dom := stdout.String()
	if !strings.Contains(dom, `data-loaded="true"`) {
		t.Fatalf("%s: the page did not render:\n%s", u, tail(dom, 4000))
	}
	if screenshot != "" {
		checkScreenshot(t, screenshot)
	}
	return dom
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// checkScreenshot checks a screenshot's size and that it is not blank.
func checkScreenshot(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot %s: %v", path, err)
	}
	if b := img.Bounds(); b.Dx() != 1280 || b.Dy() != 900 {
		t.Errorf("screenshot %s is %v, want 1280×900", path, b)
	}
	colors := map[[3]uint32]bool{}
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y += 3 {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x += 3 {
			r, g, b, _ := img.At(x, y).RGBA()
			colors[[3]uint32{r >> 8, g >> 8, b >> 8}] = true
		}
	}
	if len(colors) < 50 {
		t.Errorf("screenshot %s looks blank: %d colors", path, len(colors))
	}
	t.Logf("screenshot: %s", path)
}

// check is a pattern the DOM must match (at least min times).
type check struct {
	re  string
	min int
}

func has(re string) check            { return check{re, 1} }
func hasN(re string, n int) check    { return check{re, n} }
func quoted(s string) string         { return regexp.QuoteMeta(s) }
func attr(name, value string) string { return quoted(name + `="` + value + `"`) }

func testBrowser(t *testing.T, e *env) {
	bin := chromium(t)
	dir := artifacts(t)
	canary, halted := e.canary.ID, e.halted.ID
	tests := []struct {
		name, path string
		checks     []check
	}{
		{
			name: "overview", path: "/?live=poll#/",
			checks: []check{
				has(`data-k="devices-total">5<`), has(`data-k="devices-online">4<`), has(`data-k="devices-offline">1<`),
				has(attr("data-version", "digits:1")), has(attr("data-version", "digits:2")), has(attr("data-version", "vad:1")),
				has(attr("data-rollout", canary) + ` data-state="running"`),
				has(attr("data-provider", "cuda")), has(attr("data-provider", "cpu")),
				hasN(`data-device-row="sim-0000\d"`, 5),
				has(`data-chart="latency-digits"[^>]*>.*?<path class="line"`),
				has(`id="live" class="live" data-state="polling"`),
			},
		},
		{
			name: "rollouts", path: "/?live=off#/rollouts",
			checks: []check{
				has(attr("data-rollout", halted) + ` data-state="rolled_back"`),
				has(`data-k="reason"><b>Halted: </b>[^<]*NaN`),
				has(attr("data-gate", "nan_rate") + ` data-ok="false" data-judged="true"`),
				has(attr("data-rollout", canary) + ` data-state="running"`),
				has(`data-wave="1"`), has(`data-wave="3"`), has(`baking since`),
				hasN(attr("data-gate", "activation_failures")+` data-ok="true"`, 1),
			},
		},
		{
			name: "rollout", path: "/?live=off#/rollouts/" + canary,
			checks: []check{
				has(attr("data-rollout", canary) + ` data-state="running"`),
				hasN(`data-device-row="sim-0000\d"`, 1),
				has(`<span class="badge updated" data-state="updated">updated</span>`),
			},
		},
		{
			name: "models", path: "/?live=off#/models",
			checks: []check{
				has(`data-chart="throughput-digits"`), has(`data-chart="latency-vad"`),
				hasN(`<path class="line[^"]*" d="M`, 6),
				has(attr("data-model", "digits")), has(attr("data-model", "vad")),
			},
		},
		{
			name: "device", path: "/?live=off#/devices/sim-00000",
			checks: []check{
				has(`data-k="device-id">.*sim-00000`), has(`Cortex-A78AE`), has(`site=berlin`),
				has(attr("data-model-row", "digits")), has(attr("data-model-row", "vad")),
				has(`data-k="active-version">v\d`), has(`class="chip provider">cuda<`),
				has(attr("data-seq", "90")), has(`data-chart="device-rps"[^>]*>.*?<path class="line"`),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dom := load(t, bin, e.url(tt.path), 3*time.Second, filepath.Join(dir, tt.name+".png"))
			if strings.Contains(dom, `data-error="true"`) {
				t.Fatalf("the page shows an error:\n%s", tail(dom, 3000))
			}
			for _, c := range tt.checks {
				if n := len(regexp.MustCompile(`(?s)`+c.re).FindAllStringIndex(dom, -1)); n < c.min {
					t.Errorf("%d matches of %s, want %d", n, c.re, c.min)
				}
			}
			if t.Failed() {
				os.WriteFile(filepath.Join(dir, tt.name+".html"), []byte(dom), 0o644)
				t.Logf("DOM kept in %s", filepath.Join(dir, tt.name+".html"))
			}
		})
	}
	t.Run("live", func(t *testing.T) { testLive(t, e, bin, dir) })
}

// testLive loads the overview with the event stream on and, once the page
// is connected, brings the offline device back and a new model version's
// telemetry in: the page must show both, having received change events.
// The server ends each stream after 2 s (?stream=2) so Chromium's virtual
// time, which stands still while a request is open, moves on.
func testLive(t *testing.T, e *env, bin, dir string) {
	target, _ := url.Parse(e.DashboardURL())
	connected := make(chan struct{})
	var once sync.Once
	proxy := &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(target) },
		FlushInterval: -1,
		ModifyResponse: func(resp *http.Response) error {
			// The stream's headers mean the page is subscribed.
			if resp.Request.URL.Path == "/api/events" && resp.StatusCode == http.StatusOK {
				once.Do(func() { close(connected) })
			}
			return nil
		},
	}
	srv := httptest.NewServer(proxy)
	defer srv.Close()

	changed := make(chan error, 1)
	go func() {
		select {
		case <-connected:
		case <-time.After(time.Minute):
			changed <- nil
			return
		}
		e.offline.GoOnline()
		id := e.fleet.Devices()[1].ID
		e.seq[id]++
		_, err := e.Telemetry().Ingest(context.Background(), id, "mqtt", &wire.TelemetryReport{DeviceID: id, Stream: "st-1",
			Snapshots: []wire.Snapshot{{Seq: e.seq[id], Time: time.Now().UTC(), IntervalMs: 10000,
				Models: []wire.ModelStats{{Model: "ocr", Version: "7", Provider: "cpu", Requests: 50,
					Latency: wire.Histogram{Count: 50, Sum: 0.5, Buckets: []wire.Bucket{{Le: 0.01, N: 50}}}}}}}})
		changed <- err
	}()
	// No screenshot here: Chromium's capture can wait forever on a page
	// whose event stream is reconnecting when the budget runs out.
	dom := load(t, bin, srv.URL+"/?stream=2#/", 4*time.Second, "")
	if err := <-changed; err != nil {
		t.Fatal(err)
	}
	select {
	case <-connected:
	default:
		t.Fatal("the page never opened the event stream")
	}
	m := regexp.MustCompile(`id="live" class="live" data-state="(\w+)" data-events="(\d+)"`).FindStringSubmatch(dom)
	if m == nil {
		t.Fatalf("no live indicator in the page:\n%s", tail(dom, 3000))
	}
	if n, _ := strconv.Atoi(m[2]); m[1] == "polling" || n < 1 {
		t.Errorf("live indicator %q with %s change events; want the event stream with at least one", m[1], m[2])
	}
	for _, re := range []string{`data-k="devices-online">5<`, `data-k="devices-offline">0<`, attr("data-version", "ocr:7")} {
		if !regexp.MustCompile(re).MatchString(dom) {
			t.Errorf("after the changes the page lacks %s", re)
		}
	}
	if t.Failed() {
		os.WriteFile(filepath.Join(dir, "live.html"), []byte(dom), 0o644)
	}
}
