package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/agent/cache"
	"github.com/edgefleet/edgefleet/agent/grpcapi/inferencepb"
	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/tensor"
	"github.com/edgefleet/edgefleet/hil-tests/loadgen"
	"github.com/edgefleet/edgefleet/hil-tests/v2client"
)

// Goal sets that Serving evaluates after the table (issue 14's targets).
const (
	GoalsNone   = ""
	GoalsDigits = "digits" // a small CNN: CPU per inference and latency against the Node.js peer
	GoalsOCR    = "ocr"    // a large model: throughput against in-process onnxruntime and Node.js
)

// ServingOptions configure Serving. Zero fields take the defaults noted.
type ServingOptions struct {
	Model string // ONNX file to serve
	Name  string // model name on the servers
	// Shapes give dynamic input dimensions, NAME=AxBxC; others take 1.
	Shapes      []string
	Concurrency []int         // concurrency levels; default 1
	Duration    time.Duration // measured time per row; default 3 s
	// Out, when set, also receives the Markdown report.
	Out string
	// NodeModules is a node_modules folder holding onnxruntime-node; set, the
	// Node.js peer (NodeScript) is measured as 1 process and a 2-worker cluster.
	NodeModules string
	NodeScript  string // default hil-tests/nodepeer/server.js
	// SwapModel, when set, is loaded and unloaded in a loop to measure p99
	// during hot swaps.
	SwapModel string
	// Cycles of loading and unloading SwapModel (or Model) for the RSS row.
	Cycles int
	// BatchMax and BatchDelayMicros configure the dynamic-batching rows.
	BatchMax, BatchDelayMicros int
	// AgentExe is the edgefleet binary run as the agent; default this process's executable.
	AgentExe string
	// BaselineExe, when set, is a second edgefleet binary (e.g. built from an
	// older commit) measured in the same run, for before/after ratios.
	BaselineExe string
	// Goals selects the goal table printed after the measurements.
	Goals string
	// Rounds repeats every row; the table reports each metric's median. 0 means 1.
	Rounds int
	// Stdout receives the report as it is produced; nil means os.Stdout.
	Stdout io.Writer
}

func (o *ServingOptions) defaults() error {
	if o.Name == "" {
		o.Name = "model"
	}
	if len(o.Concurrency) == 0 {
		o.Concurrency = []int{1}
	}
	if o.Duration <= 0 {
		o.Duration = 3 * time.Second
	}
	if o.NodeScript == "" {
		o.NodeScript = filepath.Join("hil-tests", "nodepeer", "server.js")
	}
	if o.Rounds <= 0 {
		o.Rounds = 1
	}
	if o.BatchMax == 0 {
		o.BatchMax = 16
	}
	if o.BatchDelayMicros == 0 {
		o.BatchDelayMicros = 100
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.AgentExe == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		o.AgentExe = exe
	}
	return nil
}

// agentUnderTest is one agent binary with its targets.
type agentUnderTest struct {
	label   string
	proc    *agentProc
	rest    *v2client.REST
	unix    *v2client.REST
	grpc    *v2client.GRPC
	targets []namedTarget // in table order
}

type namedTarget struct {
	name    string
	target  loadgen.Target
	batched bool // only at concurrency > 1
}

// Serving runs the serving benchmark and writes its report.
func Serving(ctx context.Context, o ServingOptions) error {
	if err := o.defaults(); err != nil {
		return err
	}
	var report strings.Builder
	pr := func(format string, a ...any) {
		fmt.Fprintf(o.Stdout, format, a...)
		fmt.Fprintf(&report, format, a...)
	}
	model, err := os.ReadFile(o.Model)
	if err != nil {
		return err
	}
	if _, err := runtime.Init(""); err != nil {
		return err
	}
	inputs, err := RandomInputs(model, o.Shapes)
	if err != nil {
		return err
	}
	req := &models.InferRequest{Inputs: inputs}

	// Idle RSS with no model.
	emptyData, err := os.MkdirTemp("", "edgefleet-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(emptyData)
	p, err := startAgentProc(ctx, o.AgentExe, emptyData)
	if err != nil {
		return err
	}
	time.Sleep(time.Second)
	idle := p.rss()
	p.stop()

	var agents []*agentUnderTest
	defer func() {
		for _, a := range agents {
			a.close()
		}
	}()
	exes := []struct{ label, exe string }{{"agent", o.AgentExe}}
	if o.BaselineExe != "" {
		exes = append(exes, struct{ label, exe string }{"baseline agent", o.BaselineExe})
	}
	for _, e := range exes {
		a, err := newAgentUnderTest(ctx, e.label, e.exe, o, model, req)
		if err != nil {
			return fmt.Errorf("%s: %w", e.label, err)
		}
		agents = append(agents, a)
	}
	main := agents[0]
	time.Sleep(500 * time.Millisecond)
	idleModel := main.proc.rss()

	sess, err := runtime.NewSession(model, runtime.Config{IntraOpThreads: 1})
	if err != nil {
		return err
	}
	defer sess.Close()
	inproc := func(context.Context) error { _, err := sess.Run(inputs, nil); return err }

	var nodePeers []*nodePeer
	defer func() {
		for _, np := range nodePeers {
			np.stop()
		}
	}()
	if o.NodeModules != "" {
		for _, workers := range []int{1, 2} {
			np, err := startNodePeer(ctx, o.NodeScript, o.NodeModules, o.Model, o.Name, workers, req)
			if err != nil {
				return err
			}
			nodePeers = append(nodePeers, np)
		}
	}

	st, _ := os.Stat(o.AgentExe)
	pr("# edgefleet serving benchmark\n\n")
	pr("model `%s` (%s), inputs %s; onnxruntime %s, 1 intra-op thread; agent defaults (2 instances); %s per row; "+
		"%d CPUs; %s\n\n", o.Name, humanize.IBytes(uint64(len(model))), shapesOf(inputs), runtime.Version(), o.Duration,
		numCPU(), time.Now().UTC().Format(time.RFC3339))
	pr("CPU per inference is the server process's CPU time (user + system, /proc/PID/stat; all processes of a Node.js " +
		"cluster) during the measured phase divided by the requests served; for in-process onnxruntime it is the bench " +
		"process's own. The load generator runs on the same machine and competes for its CPUs.\n\n")
	if o.Rounds > 1 {
		pr("Each row is the median of %d rounds (all rows run once per round, agent, baseline and Node.js rows of "+
			"a kind next to each other); errors are summed.\n\n", o.Rounds)
	}
	pr("| target | c | CPU per inference | p50 | p99 | req/s | errors |\n|---|---|---|---|---|---|---|\n")
	results := map[string]loadgen.Result{}
	key := func(name string, c int) string { return name + "@" + strconv.Itoa(c) }
	for _, cc := range o.Concurrency {
		type job struct {
			name   string
			target loadgen.Target
			cpu    func() time.Duration
		}
		// Agent, baseline and Node.js rows of the same kind run next to each
		// other, so that load from elsewhere on the machine hits them alike.
		jobs := []job{{name: targetInProcess, target: inproc}}
		for i := range main.targets {
			if main.targets[i].batched && cc == 1 {
				continue
			}
			for _, a := range agents {
				pid := a.proc.cmd.Process.Pid
				jobs = append(jobs, job{a.label + " " + a.targets[i].name, a.targets[i].target,
					func() time.Duration { return loadgen.ProcessCPU(pid) }})
			}
			if main.targets[i].name == TargetRESTJSON {
				for _, np := range nodePeers {
					pgid := np.cmd.Process.Pid
					jobs = append(jobs, job{np.name, np.target, func() time.Duration { return loadgen.GroupCPU(pgid) }})
				}
			}
		}
		runs := map[string][]loadgen.Result{}
		for round := range o.Rounds {
			for _, j := range jobs {
				opts := loadgen.Options{Concurrency: cc, Duration: o.Duration, Warmup: 50, ServerCPU: j.cpu}
				if round > 0 {
					opts.Warmup = 5
				}
				r := loadgen.Run(ctx, j.name, j.target, opts)
				if r.FirstError != nil {
					fmt.Fprintf(os.Stderr, "%s: first error: %v\n", r.Name, r.FirstError)
				}
				runs[j.name] = append(runs[j.name], r)
			}
		}
		for _, j := range jobs {
			r := medianResult(runs[j.name])
			results[key(j.name, cc)] = r
			pr("| %s | %d | %s | %s | %s | %.0f | %d |\n", r.Name, cc, us(r.CPUPerRequest), us(r.P50), us(r.P99), r.Throughput, r.Errors)
		}
	}
	get := func(name string, c int) (loadgen.Result, bool) {
		r, ok := results[key(name, c)]
		return r, ok && r.Requests > r.Errors
	}
	switch o.Goals {
	case GoalsDigits:
		digitsGoals(pr, get, o.Concurrency)
	case GoalsOCR:
		ocrGoals(pr, get, o.Concurrency)
	}
	if len(agents) > 1 {
		beforeAfter(pr, get, agents, o.Concurrency)
	}
	if o.SwapModel != "" {
		if err := benchSwap(ctx, pr, main.grpc, o.Name, req, o.SwapModel, o.Duration); err != nil {
			return err
		}
	}
	if o.Cycles > 0 {
		m := o.SwapModel
		if m == "" {
			m = o.Model
		}
		if err := benchCycles(ctx, pr, main.proc, main.grpc, m, o.Cycles); err != nil {
			return err
		}
	}
	pr("\n| footprint | value |\n|---|---|\n")
	if st != nil {
		pr("| binary size | %s |\n", humanize.IBytes(uint64(st.Size())))
	}
	pr("| agent idle RSS, no model (goal < 30 MiB) | %s |\n", humanize.IBytes(uint64(idle)))
	pr("| agent idle RSS, model loaded | %s |\n", humanize.IBytes(uint64(idleModel)))
	pr("| agent RSS after the runs | %s |\n", humanize.IBytes(uint64(main.proc.rss())))
	if o.Out != "" {
		if err := os.MkdirAll(filepath.Dir(o.Out), 0o755); err != nil {
			return err
		}
		return os.WriteFile(o.Out, []byte(report.String()), 0o644)
	}
	return nil
}

func newAgentUnderTest(ctx context.Context, label, exe string, o ServingOptions, model []byte, req *models.InferRequest) (*agentUnderTest, error) {
	data, err := os.MkdirTemp("", "edgefleet-bench-")
	if err != nil {
		return nil, err
	}
	c, err := cache.Open(filepath.Join(data, agent.CacheFile), cache.Options{})
	if err != nil {
		return nil, err
	}
	// The same model a second time, served with dynamic batching.
	batched := o.Name + "-batched"
	cfg := fmt.Sprintf("models:\n  %s:\n    dynamic_batching: {max_batch_size: %d, max_queue_delay_us: %d}\n", batched, o.BatchMax, o.BatchDelayMicros)
	if err := os.WriteFile(filepath.Join(data, "bench-agent.yaml"), []byte(cfg), 0o644); err != nil {
		c.Close()
		return nil, err
	}
	for _, n := range []string{o.Name, batched} {
		if _, err := c.ImportModel(ctx, n, "1", model, cache.VersionRecord{Source: "file:" + o.Model}); err != nil {
			c.Close()
			return nil, err
		}
	}
	c.Close()
	p, err := startAgentProc(ctx, exe, data)
	if err != nil {
		return nil, err
	}
	a := &agentUnderTest{label: label, proc: p, rest: v2client.NewREST("http://"+p.http, nil), unix: v2client.NewUnixREST(p.unix)}
	if a.grpc, err = v2client.DialGRPC(p.grpc); err != nil {
		a.close()
		return nil, err
	}
	add := func(name string, batchedOnly bool, mk func() (loadgen.Target, error)) error {
		t, err := mk()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		a.targets = append(a.targets, namedTarget{name: name, target: t, batched: batchedOnly})
		return nil
	}
	steps := []struct {
		name    string
		batched bool
		mk      func() (loadgen.Target, error)
	}{
		{TargetHealth, false, func() (loadgen.Target, error) { return liveTarget(a.rest), nil }},
		{TargetGRPCLive, false, func() (loadgen.Target, error) { return grpcLiveTarget(a.grpc), nil }},
		{TargetGRPC, false, func() (loadgen.Target, error) { return loadgen.GRPCTarget(a.grpc, o.Name, "", req, true) }},
		{TargetGRPCBatched, true, func() (loadgen.Target, error) { return loadgen.GRPCTarget(a.grpc, batched, "", req, true) }},
		{TargetRESTBinary, false, func() (loadgen.Target, error) { return loadgen.RESTTarget(a.rest, o.Name, "", req, true) }},
		{TargetRESTJSON, false, func() (loadgen.Target, error) { return loadgen.RESTTarget(a.rest, o.Name, "", req, false) }},
		{TargetUnixHealth, false, func() (loadgen.Target, error) { return liveTarget(a.unix), nil }},
		{TargetUnixBinary, false, func() (loadgen.Target, error) { return loadgen.RESTTarget(a.unix, o.Name, "", req, true) }},
		{TargetUnixJSON, false, func() (loadgen.Target, error) { return loadgen.RESTTarget(a.unix, o.Name, "", req, false) }},
	}
	for _, s := range steps {
		if err := add(s.name, s.batched, s.mk); err != nil {
			a.close()
			return nil, err
		}
	}
	return a, nil
}

func (a *agentUnderTest) close() {
	if a.grpc != nil {
		a.grpc.Close()
	}
	a.proc.stop()
	os.RemoveAll(a.proc.data)
}

// Target names of the agent rows (prefixed with the agent's label).
const (
	TargetHealth      = "REST GET /v2/health/live"
	TargetGRPCLive    = "gRPC ServerLive"
	TargetGRPC        = "gRPC (raw)"
	TargetGRPCBatched = "gRPC (raw), dynamic batching"
	TargetRESTBinary  = "REST binary"
	TargetRESTJSON    = "REST JSON"
	TargetUnixHealth  = "unix socket GET /v2/health/live"
	TargetUnixBinary  = "unix socket REST binary"
	TargetUnixJSON    = "unix socket REST JSON"
	targetInProcess   = "in-process onnxruntime"
	targetNode1       = "Node.js peer REST JSON (1 proc)"
	targetNode2       = "Node.js peer REST JSON (2 proc)"
)

type getter func(name string, c int) (loadgen.Result, bool)

// goal is one line of the goal table: value compared with target.
type goal struct {
	what   string
	value  float64
	ok     bool // value could be computed
	target float64
	le     bool // met when value <= target (else >=)
	unit   string
}

func printGoals(pr func(string, ...any), gs []goal) {
	pr("\n| goal | measured | target | met |\n|---|---|---|---|\n")
	for _, g := range gs {
		if !g.ok {
			pr("| %s | n/a | | |\n", g.what)
			continue
		}
		met := g.value >= g.target
		op := "≥"
		if g.le {
			met, op = g.value <= g.target, "≤"
		}
		pr("| %s | %.2f%s | %s %.2f%s | %s |\n", g.what, g.value, g.unit, op, g.target, g.unit, yesNo(met))
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "**no**"
}

func ratio(get getter, a, b string, c int, f func(loadgen.Result) float64) (float64, bool) {
	ra, ok1 := get(a, c)
	rb, ok2 := get(b, c)
	if !ok1 || !ok2 || f(rb) == 0 {
		return 0, false
	}
	return f(ra) / f(rb), true
}

func cpuOf(r loadgen.Result) float64  { return float64(r.CPUPerRequest) }
func p50Of(r loadgen.Result) float64  { return float64(r.P50) }
func rateOf(r loadgen.Result) float64 { return r.Throughput }

func hasC(cs []int, c int) bool {
	for _, x := range cs {
		if x == c {
			return true
		}
	}
	return false
}

func digitsGoals(pr func(string, ...any), get getter, cs []int) {
	const a = "agent "
	var gs []goal
	add := func(what string, v float64, ok bool, target float64, le bool) {
		gs = append(gs, goal{what: what, value: v, ok: ok, target: target, le: le, unit: "×"})
	}
	if hasC(cs, 1) {
		v, ok := ratio(get, a+TargetRESTJSON, targetNode1, 1, cpuOf)
		add("CPU per inference, REST JSON / Node.js 1 proc, c=1", v, ok, 0.5, true)
		v, ok = ratio(get, a+TargetRESTJSON, targetNode1, 1, p50Of)
		add("p50, REST JSON / Node.js 1 proc, c=1", v, ok, 0.7, true)
		j, okj := get(a+TargetRESTJSON, 1)
		h, okh := get(a+TargetHealth, 1)
		gs = append(gs, goal{what: "inference path above the health endpoint (CPU, REST JSON − GET /v2/health/live), c=1",
			value: float64(j.CPUPerRequest-h.CPUPerRequest) / 1e3, ok: okj && okh, target: 20, le: true, unit: " µs"})
		v, ok = ratio(get, a+TargetGRPC, a+TargetRESTJSON, 1, cpuOf)
		add("CPU per inference, gRPC / REST JSON, c=1 (cheaper: < 1)", v, ok, 0.999, true)
		v, ok = ratio(get, a+TargetRESTBinary, a+TargetRESTJSON, 1, cpuOf)
		add("CPU per inference, REST binary / REST JSON, c=1 (cheaper: < 1)", v, ok, 0.999, true)
		u, oku := get(a+TargetUnixBinary, 1)
		cheapestTCP := 0.0
		okt := true
		for _, n := range []string{TargetGRPC, TargetRESTBinary, TargetRESTJSON} {
			r, ok := get(a+n, 1)
			okt = okt && ok
			if cheapestTCP == 0 || cpuOf(r) < cheapestTCP {
				cheapestTCP = cpuOf(r)
			}
		}
		var uv float64
		if cheapestTCP > 0 {
			uv = cpuOf(u) / cheapestTCP
		}
		add("CPU per inference, unix socket REST binary / cheapest TCP protocol, c=1 (cheapest: < 1)", uv, oku && okt, 0.999, true)
	}
	if hasC(cs, 32) {
		v, ok := ratio(get, a+TargetRESTJSON, targetNode1, 32, cpuOf)
		add("CPU per inference, REST JSON / Node.js 1 proc, c=32", v, ok, 0.4, true)
		v, ok = ratio(get, a+TargetRESTJSON, targetNode1, 32, rateOf)
		add("throughput, REST JSON / Node.js 1 proc, c=32", v, ok, 2, false)
		v, ok = ratio(get, a+TargetRESTJSON, targetNode2, 32, rateOf)
		add("throughput, REST JSON / Node.js 2-worker cluster, c=32", v, ok, 1.5, false)
	}
	printGoals(pr, gs)
}

func ocrGoals(pr func(string, ...any), get getter, cs []int) {
	const a = "agent "
	var gs []goal
	for _, c := range cs {
		for _, n := range []string{TargetGRPC, TargetRESTBinary} {
			v, ok := ratio(get, a+n, targetInProcess, c, rateOf)
			gs = append(gs, goal{what: fmt.Sprintf("throughput, %s / in-process, c=%d", n, c), value: v, ok: ok, target: 0.9, unit: "×"})
		}
		v, ok := ratio(get, a+TargetRESTJSON, targetNode1, c, rateOf)
		gs = append(gs, goal{what: fmt.Sprintf("throughput, REST JSON / Node.js 1 proc, c=%d", c), value: v, ok: ok, target: 3, unit: "×"})
	}
	printGoals(pr, gs)
}

// beforeAfter compares the agent with the baseline binary row by row.
func beforeAfter(pr func(string, ...any), get getter, agents []*agentUnderTest, cs []int) {
	base := agents[1].label + " "
	pr("\n| before → after (same run) | c | CPU per inference | p50 | req/s |\n|---|---|---|---|---|\n")
	for _, c := range cs {
		for _, t := range agents[0].targets {
			b, ok1 := get(base+t.name, c)
			n, ok2 := get("agent "+t.name, c)
			if !ok1 || !ok2 {
				continue
			}
			pr("| %s | %d | %s → %s | %s → %s | %.0f → %.0f |\n", t.name, c, us(b.CPUPerRequest), us(n.CPUPerRequest),
				us(b.P50), us(n.P50), b.Throughput, n.Throughput)
		}
	}
}

func numCPU() int {
	n := 0
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		n = strings.Count(string(b), "\nprocessor")
		if strings.HasPrefix(string(b), "processor") {
			n++
		}
	}
	return n
}

func us(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/1e3, 'f', 0, 64) + " µs"
}

func shapesOf(ts []tensor.Tensor) string {
	var s []string
	for _, t := range ts {
		s = append(s, fmt.Sprintf("%s %v%v", t.Name, t.DType, t.Shape))
	}
	return strings.Join(s, ", ")
}

func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:0"
	}
	defer l.Close()
	return l.Addr().String()
}

// agentProc is an agent subprocess.
type agentProc struct {
	cmd                    *exec.Cmd
	data, http, grpc, unix string
}

func startAgentProc(ctx context.Context, exe, data string) (*agentProc, error) {
	p := &agentProc{data: data, http: freePort(), grpc: freePort(), unix: filepath.Join(data, "agent.sock")}
	args := []string{"agent", "--data", data, "--http", p.http, "--grpc", p.grpc, "--unix", p.unix, "--log-level", "warn"}
	if cfg := filepath.Join(data, "bench-agent.yaml"); fileExists(cfg) {
		args = append(args, "--config", cfg)
	}
	p.cmd = exec.CommandContext(ctx, exe, args...)
	p.cmd.Stderr = os.Stderr
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + p.http + "/v2/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.stop()
	return nil, fmt.Errorf("agent %s did not become ready", exe)
}

func (p *agentProc) rss() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func (p *agentProc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	_ = p.cmd.Wait()
}

// nodePeer is the Node.js onnxruntime-node server (hil-tests/nodepeer).
type nodePeer struct {
	name   string
	cmd    *exec.Cmd
	target loadgen.Target
}

func (n *nodePeer) stop() {
	// The peer runs in its own process group: signal the cluster's workers too.
	_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGTERM)
	_ = n.cmd.Wait()
}

func startNodePeer(ctx context.Context, script, nodeModules, model, name string, workers int, req *models.InferRequest) (*nodePeer, error) {
	addr := freePort()
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.CommandContext(ctx, "node", script, model, name, port, strconv.Itoa(workers))
	cmd.Env = append(os.Environ(), "NODE_PATH="+nodeModules)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the Node.js peer: %w", err)
	}
	np := &nodePeer{name: fmt.Sprintf("Node.js peer REST JSON (%d proc)", workers), cmd: cmd}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v2/health/ready")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			np.stop()
			return nil, fmt.Errorf("the Node.js peer did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t, err := loadgen.RESTTarget(v2client.NewREST("http://"+addr, nil), name, "", req, false)
	np.target = t
	return np, err
}

// benchSwap measures p99 of the served model with and without another model
// being loaded and unloaded in a loop through the repository API.
func benchSwap(ctx context.Context, pr func(string, ...any), g *v2client.GRPC, name string, req *models.InferRequest, swapModel string, dur time.Duration) error {
	b, err := os.ReadFile(swapModel)
	if err != nil {
		return err
	}
	target, err := loadgen.GRPCTarget(g, name, "", req, true)
	if err != nil {
		return err
	}
	opts := loadgen.Options{Concurrency: 1, Duration: dur, Warmup: 50}
	steady := loadgen.Run(ctx, "steady", target, opts)
	// Import once, then load/unload from the cache in a loop.
	load := &inferencepb.RepositoryModelLoadRequest{ModelName: "swap", Parameters: map[string]*inferencepb.ModelRepositoryParameter{
		"file:1/model.onnx": {ParameterChoice: &inferencepb.ModelRepositoryParameter_BytesParam{BytesParam: b}}}}
	if _, err := g.Client.RepositoryModelLoad(ctx, load); err != nil {
		return fmt.Errorf("loading the swap model: %w", err)
	}
	swapCtx, stop := context.WithCancel(ctx)
	swaps := 0
	done := make(chan error, 1)
	go func() {
		for swapCtx.Err() == nil {
			if _, err := g.Client.RepositoryModelUnload(ctx, &inferencepb.RepositoryModelUnloadRequest{ModelName: "swap"}); err != nil {
				done <- err
				return
			}
			if _, err := g.Client.RepositoryModelLoad(ctx, &inferencepb.RepositoryModelLoadRequest{ModelName: "swap"}); err != nil {
				done <- err
				return
			}
			swaps++
		}
		done <- nil
	}()
	during := loadgen.Run(ctx, "during swaps", target, opts)
	stop()
	if err := <-done; err != nil {
		return fmt.Errorf("swap loop: %w", err)
	}
	pr("\n| p99 of `%s` (gRPC, c=1) | p50 | p99 | errors |\n|---|---|---|---|\n", name)
	pr("| steady | %s | %s | %d |\n", us(steady.P50), us(steady.P99), steady.Errors)
	pr("| while `%s` is loaded and unloaded in a loop (%d cycles) | %s | %s | %d |\n", filepath.Base(swapModel), swaps, us(during.P50), us(during.P99), during.Errors)
	pr("| ratio p99 during / steady (goal ≤ 1.2) | | %.2f | |\n", float64(during.P99)/float64(max(steady.P99, 1)))
	return nil
}

// benchCycles loads and unloads a model n times and reports RSS growth.
func benchCycles(ctx context.Context, pr func(string, ...any), p *agentProc, g *v2client.GRPC, model string, n int) error {
	b, err := os.ReadFile(model)
	if err != nil {
		return err
	}
	var first, last int64
	for i := range n {
		req := &inferencepb.RepositoryModelLoadRequest{ModelName: "cycle"}
		if i == 0 {
			req.Parameters = map[string]*inferencepb.ModelRepositoryParameter{
				"file:1/model.onnx": {ParameterChoice: &inferencepb.ModelRepositoryParameter_BytesParam{BytesParam: b}}}
		}
		if _, err := g.Client.RepositoryModelLoad(ctx, req); err != nil {
			return err
		}
		if _, err := g.Client.RepositoryModelUnload(ctx, &inferencepb.RepositoryModelUnloadRequest{ModelName: "cycle"}); err != nil {
			return err
		}
		if i == 0 {
			first = p.rss()
		}
	}
	last = p.rss()
	pr("\n| load/unload cycles of `%s` | RSS |\n|---|---|\n", filepath.Base(model))
	pr("| after cycle 1 | %s |\n| after cycle %d | %s |\n| growth | %+.1f%% |\n", humanize.IBytes(uint64(first)), n,
		humanize.IBytes(uint64(last)), 100*(float64(last)/float64(first)-1))
	return nil
}

// liveTarget is the cheapest REST request: its cost is the HTTP round trip
// that every inference request pays too.
func liveTarget(c *v2client.REST) loadgen.Target {
	url := c.Base + "/v2/health/live"
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := c.HTTP.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return nil
	}
}

// grpcLiveTarget is the cheapest gRPC call, the transport floor of ModelInfer.
func grpcLiveTarget(g *v2client.GRPC) loadgen.Target {
	return func(ctx context.Context) error {
		_, err := g.Client.ServerLive(ctx, &inferencepb.ServerLiveRequest{})
		return err
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// medianResult combines the rounds of one row: the median of each metric,
// errors summed.
func medianResult(rs []loadgen.Result) loadgen.Result {
	if len(rs) == 0 {
		return loadgen.Result{}
	}
	out := rs[0]
	med := func(f func(loadgen.Result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	out.CPUPerRequest = time.Duration(med(func(r loadgen.Result) float64 { return float64(r.CPUPerRequest) }))
	out.P50 = time.Duration(med(func(r loadgen.Result) float64 { return float64(r.P50) }))
	out.P99 = time.Duration(med(func(r loadgen.Result) float64 { return float64(r.P99) }))
	out.Throughput = med(func(r loadgen.Result) float64 { return r.Throughput })
	out.Requests, out.Errors = 0, 0
	for _, r := range rs {
		out.Requests += r.Requests
		out.Errors += r.Errors
	}
	return out
}
