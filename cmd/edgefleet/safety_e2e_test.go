//go:build !agentonly

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/deploy/testenv"
	"github.com/edgefleet/edgefleet/hub/api"
	"github.com/edgefleet/edgefleet/hub/rollout"
)

// execEnv makes the test binary run edgefleet's main instead of the tests:
// the end-to-end tests start hubs and agents as processes of their own, the
// same code as bin/edgefleet without building it a second time.
const execEnv = "EDGEFLEET_TEST_EXEC_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(execEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// proc is an edgefleet process started by a test; its JSON log goes to a
// file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan error
}

// startProc runs `edgefleet --log-format json <args>` until the test ends
// (SIGTERM, then the process's own drain).
func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, log: filepath.Join(t.TempDir(), name+".log"), done: make(chan error, 1)}
	f, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(os.Args[0], append([]string{"--log-format", "json", "--log-level", "info"}, args...)...)
	p.cmd.Env = append(os.Environ(), execEnv+"=1")
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait(); f.Close() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("%s log:\n%s", name, lastLines(string(b), 60))
		}
	})
	return p
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// logEntry is one line of a process's JSON log.
type logEntry struct {
	Time time.Time      `json:"time"`
	Msg  string         `json:"msg"`
	All  map[string]any `json:"-"`
}

// entries returns the process's log lines whose message is msg.
func (p *proc) entries(t *testing.T, msg string) []logEntry {
	t.Helper()
	b, err := os.ReadFile(p.log)
	if err != nil {
		t.Fatal(err)
	}
	var out []logEntry
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e logEntry
		if json.Unmarshal(sc.Bytes(), &e) != nil || e.Msg != msg {
			continue
		}
		_ = json.Unmarshal(sc.Bytes(), &e.All)
		out = append(out, e)
	}
	return out
}

// e2eFleet is a hub process and agent processes enrolled with it.
type e2eFleet struct {
	hubData  string
	registry string
	hub      *proc
	client   *api.Client
	agents   []*e2eAgent
}

type e2eAgent struct {
	id   string
	http string
	*proc
}

// startE2EFleet starts a hub process and n agent processes labelled
// site=lab; agentYAML is appended to each agent's configuration file.
func startE2EFleet(t *testing.T, n int, agentYAML string) *e2eFleet {
	t.Helper()
	initORT(t)
	f := &e2eFleet{hubData: t.TempDir(), registry: testenv.FreeAddr(t)}
	apiAddr, mqttAddr := testenv.FreeAddr(t), testenv.FreeAddr(t)
	f.hub = startProc(t, "hub", "hub", "--data", f.hubData, "--api", apiAddr, "--mqtt", mqttAddr, "--registry", f.registry,
		"--metrics", "off", "--dashboard", "off")
	ctx := context.Background()
	testenv.Eventually(t, "hub admin credentials", 60*time.Second, func() bool {
		base, cfg, err := api.AdminCredentials(f.hubData, "")
		if err != nil {
			return false
		}
		f.client = api.NewClient(base, cfg)
		return f.client.Health(ctx) == nil
	})
	lib := testenv.ORTLibrary(t)
	for i := range n {
		id := fmt.Sprintf("e2e-%d", i)
		tok, err := f.client.CreateToken(ctx, api.TokenRequest{DeviceID: id})
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		a := &e2eAgent{id: id, http: testenv.FreeAddr(t)}
		cfg := fmt.Sprintf(`data: %s
http: %s
grpc: "off"
ort_lib: %s
telemetry:
  disabled: true
hub:
  url: https://%s
  token: %q
  device_id: %s
  labels: {site: lab}
  heartbeat_interval: 1s
%s`, dir, a.http, lib, apiAddr, tok.Token, id, agentYAML)
		path := filepath.Join(dir, "agent.yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		a.proc = startProc(t, id, "agent", "-c", path)
		f.agents = append(f.agents, a)
	}
	testenv.Eventually(t, "agents online", 60*time.Second, func() bool {
		devs, err := f.client.Devices(ctx, "site=lab")
		online := 0
		for _, d := range devs {
			if d.Online {
				online++
			}
		}
		return err == nil && online == n
	})
	return f
}

// push pushes an ONNX file as model digits version v to the hub's registry.
func (f *e2eFleet) push(t *testing.T, v, file string, extra ...string) string {
	t.Helper()
	ref := f.registry + "/models/digits:" + v
	args := append([]string{"model", "push", "--name", "digits", "--version", v}, extra...)
	if out, err := run(t, append(args, file, ref)...); err != nil {
		t.Fatalf("model push: %v\n%s", err, out)
	}
	return ref
}

// waitFinal polls a rollout until it reaches a final state.
func (f *e2eFleet) waitFinal(t *testing.T, id string, d time.Duration) rollout.Status {
	t.Helper()
	var st rollout.Status
	testenv.Eventually(t, "rollout "+id+" final", d, func() bool {
		var err error
		st, err = f.client.Rollout(context.Background(), id, true)
		return err == nil && rollout.Final(st.State)
	})
	return st
}

func agentOf(f *e2eFleet, id string) *e2eAgent {
	for _, a := range f.agents {
		if a.id == id {
			return a
		}
	}
	return nil
}

// traffic sends the sample digit (top-left pixel 0) to every agent until
// stop is called.
func traffic(t *testing.T, agents []*e2eAgent) (stop func()) {
	t.Helper()
	body, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "agent", "testdata", "digits", "sample-request.json"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, a := range agents {
		wg.Go(func() {
			url := "http://" + a.http + "/v2/models/digits/infer"
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
				if resp, err := http.DefaultClient.Do(req); err == nil {
					resp.Body.Close()
				}
				select {
				case <-ctx.Done():
				case <-time.After(10 * time.Millisecond):
				}
			}
		})
	}
	return func() { cancel(); wg.Wait() }
}

// TestCanaryLocalRollbackHaltsRolloutAtOnce is issue 17's scenario with
// real processes: a hub and two agents, a version that passes its golden
// vector but answers NaN on live traffic, rolled out in waves 50 %, 100 %
// with a bake time shorter than the agents' report interval. The canary's
// post-activation watch rolls it back; the agent reports that at once and
// the hub halts before the bake time ends, so the second device is never
// assigned the bad version. The time from the canary's breach to the hub's
// halt is logged.
func TestCanaryLocalRollbackHaltsRolloutAtOnce(t *testing.T) {
	const (
		reportInterval = time.Minute
		bake           = 5 * time.Second
	)
	f := startE2EFleet(t, 2, fmt.Sprintf(`  report_interval: %s
update:
  watch:
    window: 1m
    interval: 200ms
    min_requests: 20
`, reportInterval))
	ctx := context.Background()
	cnn := filepath.Join(testenv.RepoRoot(), "agent", "testdata", "digits", "cnn.onnx")
	// The NaN model answers its golden input (top-left pixel 0.5) right and
	// every real digit (top-left pixel 0) with NaN.
	var sample struct {
		Inputs []map[string]any `json:"inputs"`
	}
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "agent", "testdata", "digits", "sample-request.json"))
	if err != nil || json.Unmarshal(b, &sample) != nil {
		t.Fatalf("sample request: %v", err)
	}
	sample.Inputs[0]["data"].([]any)[0] = 0.5
	golden := filepath.Join(t.TempDir(), "golden.json")
	if b, err = json.Marshal(sample); err != nil || os.WriteFile(golden, b, 0o600) != nil {
		t.Fatal(err)
	}
	ref1 := f.push(t, "1", cnn)
	ref2 := f.push(t, "2", filepath.Join(testenv.RepoRoot(), "agent", "testdata", "fleet", "cnn_nan.onnx"), "--golden-input", golden)

	st, err := f.client.CreateRollout(ctx, rollout.Spec{Model: "digits", Ref: ref1, Selector: "site=lab", Waves: []float64{100}, Bake: -1})
	if err != nil {
		t.Fatal(err)
	}
	if st = f.waitFinal(t, st.ID, 60*time.Second); st.State != rollout.StateCompleted {
		t.Fatalf("baseline rollout %s: %s", st.State, st.Reason)
	}
	stop := traffic(t, f.agents)
	defer stop()

	st, err = f.client.CreateRollout(ctx, rollout.Spec{Model: "digits", Ref: ref2, Selector: "site=lab",
		Waves: []float64{50, 100}, Bake: rollout.Duration(bake)})
	if err != nil {
		t.Fatal(err)
	}
	digest2 := st.Spec.Digest
	st = f.waitFinal(t, st.ID, 60*time.Second)
	if st.State != rollout.StateRolledBack {
		t.Fatalf("rollout of the NaN version ended %s (%s), want rolled_back", st.State, st.Reason)
	}
	if st.Counts.Assigned != 1 || st.Wave != 0 || len(st.Devices) != 1 {
		t.Fatalf("rollout wave %d, counts %+v: want only the canary assigned", st.Wave, st.Counts)
	}
	canary := st.Devices[0].ID
	t.Logf("rolled back: %s", st.Reason)

	// No agent but the canary ever started installing version 2.
	for _, a := range f.agents {
		started := 0
		for _, e := range a.entries(t, "update started") {
			if ref, _ := e.All["ref"].(string); strings.Contains(ref, digest2) {
				started++
			}
		}
		if a.id == canary && started == 0 {
			t.Fatalf("the canary %s never installed version 2", a.id)
		}
		if a.id != canary && started > 0 {
			t.Fatalf("%s, outside the canary wave, installed version 2", a.id)
		}
	}

	// The canary's watch decided: version 2 is gone from it, as from a
	// device the hub reverted (agent/fleetapply's TestFleetRollouts).
	resp, err := http.Get("http://" + agentOf(f, canary).http + "/v2/models/digits/versions/2/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("canary: versions/2/ready answered %d, want 404", resp.StatusCode)
	}

	// From the canary's breach to the hub's halt.
	breaches := agentOf(f, canary).entries(t, "post-activation watch breached; rolling back")
	halts := f.hub.entries(t, "rollout halted; rolling back")
	if len(breaches) != 1 || len(halts) != 1 {
		t.Fatalf("%d breaches on the canary, %d halts at the hub: want one each", len(breaches), len(halts))
	}
	took := halts[0].Time.Sub(breaches[0].Time)
	t.Logf("canary breach → hub halt: %v (bake %v, report interval %v)", took.Round(time.Millisecond), bake, reportInterval)
	if took < 0 || took >= bake {
		t.Fatalf("breach at %v, halt at %v: the halt must follow the breach within the bake time", breaches[0].Time, halts[0].Time)
	}
	if out := os.Getenv("EDGEFLEET_BREACH_HALT_FILE"); out != "" {
		_ = os.WriteFile(out, []byte(took.String()+"\n"), 0o644)
	}
}
