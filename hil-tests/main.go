// Command hil-tests is edgefleet's hardware-in-the-loop suite: a hub and
// a fleet of agent processes, each device in its own network namespace
// with its data folder on a file system that can lose power, put through
// lossy links, partitions, power cuts, a full disk, restarts and clock
// skew. Every scenario is an assertion; each run writes a Markdown and a
// JSON report.
//
//	make hil       # the full suite (needs root: namespaces, nftables, FUSE)
//	make hil-ci    # the short subset CI runs
//
// Run it as root from the repository root after `make build`:
//
//	go run ./hil-tests -devices 4 -scenarios 2,3,4,7 -cuts 10 -compress -out hil-results
//	go run ./hil-tests check-cache DIR/cache.db   # (used by the suite) bbolt cache consistency
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgefleet/edgefleet/agent/cache"
	"github.com/edgefleet/edgefleet/agent/runtime"
)

// Config is the run's configuration (flags).
type Config struct {
	Bin               string
	Work              string
	Out               string
	Prefix, Subnet    string
	Devices           int
	Scenarios         []int
	Cuts              int
	Compress          bool
	DiskBytes         int64
	MemLimit          int64
	CPUQuotaPct       int
	TelemetryInterval time.Duration
	TelemetryBudget   int64
	Outage            time.Duration
	Seed              int64
}

func main() {
	if len(os.Args) > 2 && os.Args[1] == "check-cache" {
		if err := checkCache(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	os.Exit(run())
}

// checkCache opens the agent's cache file and runs its consistency check.
// It runs in a child process: bbolt mmaps the file, and page faults
// served by the runner's own FUSE server could stall its garbage
// collector.
func checkCache(path string) error {
	c, err := cache.Open(path, cache.Options{LockTimeout: 5 * time.Second})
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer c.Close()
	return c.Check(context.Background())
}

func run() int {
	var (
		cfg       Config
		scenarios string
	)
	flag.StringVar(&cfg.Bin, "bin", "bin/edgefleet", "the edgefleet binary the devices and the hub run")
	flag.StringVar(&cfg.Out, "out", "hil-results", "folder for report.md, report.json and the processes' logs")
	flag.StringVar(&cfg.Prefix, "prefix", "efh", "prefix of the namespaces, links and cgroups")
	flag.StringVar(&cfg.Subnet, "subnet", "10.231.7", "private /24 used only inside the namespaces (first three octets)")
	flag.IntVar(&cfg.Devices, "devices", 4, "devices in the fleet")
	flag.StringVar(&scenarios, "scenarios", "1,2,3,4,5,6,7,8", "scenarios to run, comma-separated")
	flag.IntVar(&cfg.Cuts, "cuts", 50, "power cuts in scenario 3 (for OTA, and as many during telemetry)")
	flag.BoolVar(&cfg.Compress, "compress", false, "shorter outages and waits (CI)")
	flag.Int64Var(&cfg.DiskBytes, "disk", 256<<20, "size of each device's data file system")
	flag.Int64Var(&cfg.MemLimit, "mem", 512<<20, "memory limit of each agent (cgroup)")
	flag.IntVar(&cfg.CPUQuotaPct, "cpu", 50, "CPU limit of each agent, percent of a core (cgroup)")
	flag.Int64Var(&cfg.Seed, "seed", time.Now().UnixNano(), "random seed (power-cut moments)")
	inventory := flag.String("inventory", "", "run against real boards listed in this inventory file instead of namespaces")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	for _, s := range strings.Split(scenarios, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 8 {
			log.Error("bad -scenarios", "value", s)
			return 2
		}
		cfg.Scenarios = append(cfg.Scenarios, n)
	}
	cfg.TelemetryInterval = time.Second
	cfg.TelemetryBudget = 16 << 20
	cfg.Outage = 60 * time.Second
	if cfg.Compress {
		cfg.Outage = 20 * time.Second
	}
	if *inventory != "" {
		return runBoards(*inventory, cfg, log)
	}
	if err := preflight(&cfg); err != nil {
		log.Error("preflight", "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	rep := &Report{Started: time.Now().UTC(), Devices: cfg.Devices, Seed: cfg.Seed, Compressed: cfg.Compress}
	f, err := StartFleet(ctx, cfg, log)
	if err != nil {
		log.Error("fleet", "err", err)
		rep.Setup = err.Error()
		rep.write(cfg.Out)
		return 1
	}
	defer f.Close()
	rep.Mechanisms = f.mech
	rep.Limits = f.limits
	rep.Kernel = kernel()
	s := &suite{f: f, cfg: cfg, log: log}
	if err := s.baseline(ctx); err != nil {
		log.Error("baseline rollout", "err", err)
		rep.Setup = err.Error()
		rep.write(cfg.Out)
		return 1
	}
	for _, n := range cfg.Scenarios {
		sc := scenarioByID(n)
		log.Info("scenario", "n", n, "name", sc.name)
		res := &Result{ID: n, Name: sc.name, Faults: map[string]string{}}
		start := time.Now()
		err := sc.run(s, ctx, res)
		res.Seconds = time.Since(start).Seconds()
		res.Pass = err == nil
		if err != nil {
			res.Reason = err.Error()
		} else if res.Reason == "" {
			res.Reason = "all assertions held"
		}
		log.Info("scenario done", "n", n, "pass", res.Pass, "reason", res.Reason, "seconds", int(res.Seconds))
		rep.Results = append(rep.Results, res)
		if err := s.recover(ctx); err != nil {
			log.Error("fleet did not recover after the scenario", "n", n, "err", err)
			res.Pass = false
			res.Reason += "; fleet did not recover afterwards: " + err.Error()
			break
		}
		if ctx.Err() != nil {
			break
		}
	}
	rep.Finished = time.Now().UTC()
	if err := rep.write(cfg.Out); err != nil {
		log.Error("report", "err", err)
	}
	if !rep.Pass() {
		return 1
	}
	return 0
}

// preflight checks the tools and privileges, builds the paths, and loads
// onnxruntime for the golden vectors.
func preflight(cfg *Config) error {
	var errs []error
	if os.Geteuid() != 0 {
		errs = append(errs, errors.New("needs root (network namespaces, nftables, FUSE, cgroups)"))
	}
	for tool, pkg := range map[string]string{"ip": "iproute2", "tc": "iproute2", "nft": "nftables", "fusermount3": "fuse3", "nsenter": "util-linux"} {
		if _, err := exec.LookPath(tool); err != nil {
			errs = append(errs, fmt.Errorf("%s not found (Debian package %s)", tool, pkg))
		}
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		errs = append(errs, fmt.Errorf("no /dev/fuse: %w", err))
	}
	var err error
	if cfg.Bin, err = filepath.Abs(cfg.Bin); err == nil {
		if _, err = os.Stat(cfg.Bin); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w (make build)", cfg.Bin, err))
		}
	}
	if cfg.Out, err = filepath.Abs(cfg.Out); err != nil {
		errs = append(errs, err)
	}
	cfg.Work = filepath.Join(cfg.Out, "work")
	_ = os.RemoveAll(cfg.Work)
	if err := os.MkdirAll(cfg.Work, 0o755); err != nil {
		errs = append(errs, err)
	}
	if sampleRequest, err = os.ReadFile("agent/testdata/digits/sample-request.json"); err != nil {
		errs = append(errs, fmt.Errorf("run from the repository root: %w", err))
	}
	if _, err := runtime.Init(""); err != nil {
		errs = append(errs, fmt.Errorf("onnxruntime (make deps): %w", err))
	}
	return errors.Join(errs...)
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

// Report is one run's report.
type Report struct {
	Started, Finished time.Time
	Kernel            string
	Devices           int
	Seed              int64
	Compressed        bool
	Mechanisms        any
	Limits            string
	Setup             string `json:",omitempty"`
	Results           []*Result
}

// Pass reports whether every scenario passed.
func (r *Report) Pass() bool {
	if r.Setup != "" || len(r.Results) == 0 {
		return false
	}
	return !slices.ContainsFunc(r.Results, func(x *Result) bool { return !x.Pass })
}

// Result is one scenario's outcome and figures.
type Result struct {
	ID      int
	Name    string
	Pass    bool
	Reason  string
	Seconds float64
	// Faults maps each fault injected to the mechanism used.
	Faults    map[string]string
	Requests  Requests
	OTA       *OTA       `json:",omitempty"`
	Telemetry *Telemetry `json:",omitempty"`
	Rollout   *Rollout   `json:",omitempty"`
	Notes     []string   `json:",omitempty"`
}

// Requests counts inference requests sent to the devices during the scenario.
type Requests struct{ Served, Failed int64 }

// OTA is the bytes a device received against the artifact's size.
type OTA struct {
	ArtifactBytes int64
	BytesMoved    []uint64 // per device
	MaxRatio      float64
}

// Telemetry is the hub's view of the devices' snapshots.
type Telemetry struct {
	Produced, Received, Duplicated, Lost, Dropped uint64
	Streams                                       int
}

// Rollout is a rollout's timing and end state.
type Rollout struct {
	State   string
	Reason  string `json:",omitempty"`
	Seconds float64
}

func (r *Result) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

func (r *Report) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "report.md"), []byte(r.markdown()), 0o644)
}

func (r *Report) markdown() string {
	var b strings.Builder
	verdict := "FAIL"
	if r.Pass() {
		verdict = "PASS"
	}
	fmt.Fprintf(&b, "# HIL run: %s\n\n", verdict)
	fmt.Fprintf(&b, "Started %s, finished %s; kernel %s; %d devices; seed %d; compressed %v.\n\n",
		r.Started.Format(time.RFC3339), r.Finished.Format(time.RFC3339), r.Kernel, r.Devices, r.Seed, r.Compressed)
	if r.Limits != "" {
		fmt.Fprintf(&b, "Device limits: %s.\n\n", r.Limits)
	}
	if m, ok := r.Mechanisms.(interface{ String() string }); ok {
		fmt.Fprintf(&b, "Link shaping: %s.\n\n", m)
	} else if r.Mechanisms != nil {
		j, _ := json.Marshal(r.Mechanisms)
		fmt.Fprintf(&b, "Link shaping mechanisms: `%s`.\n\n", j)
	}
	if r.Setup != "" {
		fmt.Fprintf(&b, "**Setup failed:** %s\n\n", r.Setup)
	}
	b.WriteString("| # | scenario | result | s | requests served / failed | OTA moved / artifact | telemetry produced / received / dup / lost / dropped | rollout |\n")
	b.WriteString("| - | - | - | - | - | - | - | - |\n")
	for _, x := range r.Results {
		res := "pass"
		if !x.Pass {
			res = "**FAIL**"
		}
		ota, tel, ro := "–", "–", "–"
		if x.OTA != nil {
			ota = fmt.Sprintf("max %.2f× of %d B", x.OTA.MaxRatio, x.OTA.ArtifactBytes)
		}
		if t := x.Telemetry; t != nil {
			tel = fmt.Sprintf("%d / %d / %d / %d / %d", t.Produced, t.Received, t.Duplicated, t.Lost, t.Dropped)
		}
		if x.Rollout != nil {
			ro = fmt.Sprintf("%s in %.0f s", x.Rollout.State, x.Rollout.Seconds)
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %.0f | %d / %d | %s | %s | %s |\n", x.ID, x.Name, res, x.Seconds,
			x.Requests.Served, x.Requests.Failed, ota, tel, ro)
	}
	b.WriteString("\n")
	for _, x := range r.Results {
		fmt.Fprintf(&b, "## %d. %s: %s\n\n", x.ID, x.Name, map[bool]string{true: "pass", false: "FAIL"}[x.Pass])
		fmt.Fprintf(&b, "%s\n\n", x.Reason)
		if len(x.Faults) > 0 {
			b.WriteString("Faults and mechanisms:\n\n")
			for _, k := range slices.Sorted(mapsKeys(x.Faults)) {
				fmt.Fprintf(&b, "- %s: %s\n", k, x.Faults[k])
			}
			b.WriteString("\n")
		}
		if x.OTA != nil {
			fmt.Fprintf(&b, "OTA: artifact %d bytes, bytes received per device %v (max %.2f×).\n\n", x.OTA.ArtifactBytes, x.OTA.BytesMoved, x.OTA.MaxRatio)
		}
		for _, n := range x.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
		if len(x.Notes) > 0 {
			b.WriteString("\n")
		}
	}
	return b.String()
}

func mapsKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
