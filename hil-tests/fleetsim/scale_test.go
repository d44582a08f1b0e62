//go:build scale

// The 10,000-device scenario: one hub in this process, 10,000 simulated
// agents in a child process (each with its own key, certificate and TLS
// connection), a canary rollout to all of them. It reports the time the
// rollout takes, the hub's memory per connected device and the hub's CPU.
//
//	go test -tags scale -run '^TestScale10k$' -v ./hil-tests/fleetsim/
//
// FLEETSIM_SCALE_COUNT changes the number of devices; EDGEFLEET_BENCH_OUT
// names a Markdown file for the figures.
package fleetsim_test

import (
	"bufio"
	"context"
	"fmt"
	"github.com/edgefleet/edgefleet/deploy/testenv"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/hil-tests/fleetsim"
	"github.com/edgefleet/edgefleet/hub"
	"github.com/edgefleet/edgefleet/hub/api"
	"github.com/edgefleet/edgefleet/hub/registry"
	"github.com/edgefleet/edgefleet/hub/rollout"
	"github.com/edgefleet/edgefleet/ota"
	"github.com/edgefleet/edgefleet/ota/artifact"
	"github.com/edgefleet/edgefleet/ota/wire"
)

const childEnv = "FLEETSIM_SCALE_CHILD"

func scaleCount() int {
	if n, err := strconv.Atoi(os.Getenv("FLEETSIM_SCALE_COUNT")); err == nil && n > 0 {
		return n
	}
	return 10000
}

// TestScaleChild is the simulator process the scale test starts: it
// enrolls and connects the devices, prints progress lines, and runs until
// its standard input closes.
func TestScaleChild(t *testing.T) {
	if os.Getenv(childEnv) == "" {
		t.Skip("runs only as the scale test's child process")
	}
	ctx := context.Background()
	n := scaleCount()
	base, cfg, err := api.AdminCredentials(os.Getenv("FLEETSIM_HUB_DATA"), "")
	if err != nil {
		t.Fatal(err)
	}
	c := api.NewClient(base, cfg)
	f, err := fleetsim.New(fleetsim.Options{HubURL: base, Count: n, IDPrefix: "scale-",
		Token: func(ctx context.Context, id string) (string, error) {
			tr, err := c.CreateToken(ctx, api.TokenRequest{DeviceID: id})
			return tr.Token, err
		},
		Labels: func(i int) map[string]string {
			return map[string]string{"site": "s" + strconv.Itoa(i%10), "fleet": "scale"}
		},
		Hardware: wire.Hardware{CPU: "simulated", Cores: 1, Providers: []string{"cpu"}},
		// Heartbeats every 30 s, as agents send them by default.
		HeartbeatInterval: 30 * time.Second, Concurrency: 64})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := f.Enroll(ctx); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("ENROLLED %d %d\n", n, time.Since(start).Milliseconds())
	start = time.Now()
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("CONNECTED %d %d\n", f.Connected(), time.Since(start).Milliseconds())
	io.Copy(io.Discard, os.Stdin) // until the parent closes our stdin
	f.Close()
}

// usage is the process's CPU time so far.
func usage() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rss is the process's resident set in bytes.
func rss() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func heap() uint64 {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse
}

func TestScale10k(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		t.Skip("child process")
	}
	n := scaleCount()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	data := t.TempDir()
	h, err := hub.New(ctx, hub.Options{DataDir: data, APIAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0", RegistryAddr: "127.0.0.1:0",
		RolloutTick: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	hubDone := make(chan error, 1)
	go func() { hubDone <- h.Run(ctx) }()
	defer func() {
		cancel()
		<-hubDone
	}()
	heap0, rss0 := heap(), rss()

	// The simulator runs in a child process: each side needs a file
	// descriptor per device.
	child := exec.Command(os.Args[0], "-test.run=^TestScaleChild$", "-test.v", "-test.timeout=30m")
	child.Env = append(os.Environ(), childEnv+"=1", "FLEETSIM_HUB_DATA="+data, "FLEETSIM_SCALE_COUNT="+strconv.Itoa(n))
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	cpu0, t0 := usage(), time.Now()
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		child.Wait()
	}()
	lines := bufio.NewScanner(stdout)
	var enrollMs, connectMs int64
	connected := 0
	for lines.Scan() {
		f := strings.Fields(lines.Text())
		if len(f) == 3 && f[0] == "ENROLLED" {
			enrollMs, _ = strconv.ParseInt(f[2], 10, 64)
			t.Logf("%s devices enrolled in %v", f[1], time.Duration(enrollMs)*time.Millisecond)
		}
		if len(f) == 3 && f[0] == "CONNECTED" {
			connected, _ = strconv.Atoi(f[1])
			connectMs, _ = strconv.ParseInt(f[2], 10, 64)
			break
		}
	}
	if connected != n {
		t.Fatalf("the simulator connected %d of %d devices", connected, n)
	}
	setupCPU, setupWall := usage()-cpu0, time.Since(t0)
	t.Logf("%d devices connected in %v", n, time.Duration(connectMs)*time.Millisecond)

	// Wait until the hub has heard from every device.
	reg := h.Registry()
	testenv.Eventually(t, "every device online at the hub", 2*time.Minute, func() bool {
		devs, err := reg.List(ctx, mustSel(t, "fleet=scale"))
		online := 0
		for _, d := range devs {
			if d.IsOnline(time.Now()) && d.AgentVersion != "" {
				online++
			}
		}
		return err == nil && online == n
	})
	time.Sleep(2 * time.Second) // let the connection burst settle before measuring
	heap1, rss1 := heap(), rss()
	// FLEETSIM_CPUPROFILE profiles the hub from here on (idle, then the
	// rollout).
	if p := os.Getenv("FLEETSIM_CPUPROFILE"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	idleCPU0 := usage()
	time.Sleep(5 * time.Second)
	idleCPU := (usage() - idleCPU0) / 5

	// The rollout: 1%, 10%, 50%, 100% of every device, gates on, no bake.
	spec := []artifact.TensorSpec{{Name: "x", Datatype: "FP32", Shape: []int64{-1, 4}}}
	ref := h.RegistryAddr() + "/models/scale-model:1"
	if _, err := ota.Push(ctx, ref, ota.Artifact{Model: ota.BytesFile("m.onnx", []byte("scale")), Config: artifact.Config{
		SchemaVersion: artifact.ConfigSchemaVersion, Name: "scale-model", Version: "1", Inputs: spec, Outputs: spec,
		Precision: artifact.PrecisionFP32}}); err != nil {
		t.Fatal(err)
	}
	cpu1, t1 := usage(), time.Now()
	st, err := h.Rollouts().Create(ctx, rollout.Spec{Model: "scale-model", Ref: ref, Selector: "fleet=scale",
		Waves: []float64{1, 10, 50, 100}, Bake: -1})
	if err != nil {
		t.Fatal(err)
	}
	var waveAt []time.Duration
	testenv.Eventually(t, "rollout completed", 5*time.Minute, func() bool {
		s, err := h.Rollouts().Get(ctx, st.ID, false)
		if err != nil {
			t.Fatal(err)
		}
		for len(waveAt) < s.Wave && len(waveAt) < len(s.Spec.Waves) {
			waveAt = append(waveAt, time.Since(t1))
		}
		if rollout.Final(s.State) && s.State != rollout.StateCompleted {
			t.Fatalf("rollout %s: %s", s.State, s.Reason)
		}
		st = s
		return s.State == rollout.StateCompleted
	})
	took, rolloutCPU := time.Since(t1), usage()-cpu1
	if st.Counts.Updated != n {
		t.Fatalf("completed with %+v", st.Counts)
	}

	perDevHeap := float64(heap1-heap0) / float64(n)
	perDevRSS := float64(rss1-rss0) / float64(n)
	rows := [][2]string{
		{"devices", strconv.Itoa(n)},
		{"enrollment (one token each, through the admin API)", fmt.Sprintf("%v", time.Duration(enrollMs)*time.Millisecond)},
		{"connection (mutual TLS, subscribe, presence, report)", fmt.Sprintf("%v", time.Duration(connectMs)*time.Millisecond)},
		{"hub CPU during enrollment and connection", fmt.Sprintf("%.1f s over %.1f s", setupCPU.Seconds(), setupWall.Seconds())},
		{"**rollout to every device (waves 1/10/50/100 %, no bake)**", fmt.Sprintf("**%.2f s**", took.Seconds())},
		{"waves promoted at", fmt.Sprint(roundAll(waveAt))},
		{"hub CPU during the rollout", fmt.Sprintf("%.2f s (%.0f%% of one core)", rolloutCPU.Seconds(), 100*rolloutCPU.Seconds()/took.Seconds())},
		{"hub CPU, idle with all devices connected (30 s heartbeats)", fmt.Sprintf("%.0f ms/s (%.1f%% of one core)", float64(idleCPU.Milliseconds()), float64(idleCPU)/float64(time.Second)*100)},
		{"hub memory per connected device (Go heap + stacks)", fmt.Sprintf("%.1f KiB", perDevHeap/1024)},
		{"hub memory per connected device (RSS)", fmt.Sprintf("%.1f KiB", perDevRSS/1024)},
		{"hub RSS with all devices connected", fmt.Sprintf("%.0f MiB", float64(rss1)/(1<<20))},
	}
	var md strings.Builder
	fmt.Fprintf(&md, "# Hub at scale: %d simulated agents on loopback\n\n", n)
	fmt.Fprintf(&md, "`go test -tags scale -run '^TestScale10k$' ./hil-tests/fleetsim/` on %d CPUs (%s/%s), %s.\n", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, time.Now().UTC().Format(time.DateOnly))
	fmt.Fprintf(&md, "Hub in the test process (embedded broker, bbolt, REST API); simulated agents in a child process, each with its own key, certificate and TLS connection.\n\n")
	md.WriteString("| measure | value |\n|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&md, "| %s | %s |\n", r[0], r[1])
		t.Logf("%s: %s", strings.Trim(r[0], "*"), strings.Trim(r[1], "*"))
	}
	if out := os.Getenv("EDGEFLEET_BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(md.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
	t.Logf("goal: under 60 s for 10,000 devices; this run: %.2f s for %d", took.Seconds(), n)
}

func mustSel(t *testing.T, s string) registry.Selector {
	t.Helper()
	sel, err := registry.ParseSelector(s)
	if err != nil {
		t.Fatal(err)
	}
	return sel
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(10 * time.Millisecond)
	}
	return out
}
