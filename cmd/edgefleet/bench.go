//go:build !agentonly

package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/agent/cache"
	"github.com/edgefleet/edgefleet/agent/grpcapi/inferencepb"
	"github.com/edgefleet/edgefleet/agent/loadgen"
	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/tensor"
	"github.com/edgefleet/edgefleet/agent/v2client"
)

func newBenchCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Benchmarks and a v2 load generator"}
	cmd.AddCommand(newBenchServingCmd(), newBenchLoadCmd())
	return cmd
}

// randomInputs builds deterministic inputs for a model's inputs; dynamic
// dimensions take 1 unless --shape NAME=AxBxC gives the shape.
func randomInputs(model []byte, shapes []string) ([]tensor.Tensor, error) {
	ins, _, err := runtime.Inspect(model)
	if err != nil {
		return nil, err
	}
	given := map[string][]int64{}
	for _, s := range shapes {
		name, dims, ok := strings.Cut(s, "=")
		if !ok {
			return nil, fmt.Errorf("--shape %q: want NAME=AxBxC", s)
		}
		var shape []int64
		for _, d := range strings.Split(dims, "x") {
			n, err := strconv.ParseInt(d, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("--shape %q: %w", s, err)
			}
			shape = append(shape, n)
		}
		given[name] = shape
	}
	seed := uint32(1)
	var out []tensor.Tensor
	for _, in := range ins {
		shape := given[in.Name]
		if shape == nil {
			shape = make([]int64, len(in.Shape))
			for i, d := range in.Shape {
				shape[i] = max(d, 1)
			}
		}
		t := tensor.Tensor{Name: in.Name, DType: in.DType, Shape: shape}
		n := t.NumElements()
		switch in.DType {
		case tensor.FP32:
			t.Data = make([]byte, 4*n)
			for i := range n {
				seed = seed*1664525 + 1013904223
				binary.LittleEndian.PutUint32(t.Data[4*i:], math.Float32bits(float32(seed>>8)/float32(1<<24)))
			}
		case tensor.Int64:
			t.Data = make([]byte, 8*n)
			for i := range n {
				binary.LittleEndian.PutUint64(t.Data[8*i:], 16000)
			}
		default:
			if in.DType.Size() == 0 {
				return nil, fmt.Errorf("input %q: %v inputs are not generated", in.Name, in.DType)
			}
			t.Data = make([]byte, n*int64(in.DType.Size()))
		}
		out = append(out, t)
	}
	return out, nil
}

func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:0"
	}
	defer l.Close()
	return l.Addr().String()
}

// agentProc is an agent subprocess for RSS measurements.
type agentProc struct {
	cmd        *exec.Cmd
	http, grpc string
}

func startAgentProc(ctx context.Context, data string) (*agentProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	p := &agentProc{http: freePort(), grpc: freePort()}
	args := []string{"agent", "--data", data, "--http", p.http, "--grpc", p.grpc, "--log-level", "warn"}
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
	return nil, fmt.Errorf("agent did not become ready")
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

func newBenchServingCmd() *cobra.Command {
	var (
		modelPath, name, out         string
		nodeModules, swapModel       string
		cycles, batchMax, batchDelay int
		shapes                       []string
		conc                         []int
		dur                          time.Duration
	)
	cmd := &cobra.Command{
		Use:   "serving",
		Short: "Compare in-process onnxruntime with the agent over REST JSON, REST binary and gRPC; report RSS and binary size",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			w := io.MultiWriter(cmd.OutOrStdout())
			var report strings.Builder
			pr := func(format string, a ...any) {
				fmt.Fprintf(w, format, a...)
				fmt.Fprintf(&report, format, a...)
			}
			model, err := os.ReadFile(modelPath)
			if err != nil {
				return err
			}
			if _, err := runtime.Init(""); err != nil {
				return err
			}
			inputs, err := randomInputs(model, shapes)
			if err != nil {
				return err
			}
			exe, _ := os.Executable()
			st, _ := os.Stat(exe)
			data, err := os.MkdirTemp("", "edgefleet-bench-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(data)

			// Idle RSS with no model.
			p, err := startAgentProc(ctx, data)
			if err != nil {
				return err
			}
			time.Sleep(time.Second)
			idle := p.rss()
			p.stop()
			c, err := cache.Open(filepath.Join(data, agent.CacheFile), cache.Options{})
			if err != nil {
				return err
			}
			// The same model a second time, served with dynamic batching.
			batchedName := name + "-batched"
			cfgYAML := fmt.Sprintf("models:\n  %s:\n    dynamic_batching: {max_batch_size: %d, max_queue_delay_us: %d}\n", batchedName, batchMax, batchDelay)
			if err := os.WriteFile(filepath.Join(data, "bench-agent.yaml"), []byte(cfgYAML), 0o644); err != nil {
				return err
			}
			if _, err := c.ImportModel(ctx, batchedName, "1", model, cache.VersionRecord{Source: "file:" + modelPath}); err != nil {
				c.Close()
				return err
			}
			if _, err := c.ImportModel(ctx, name, "1", model, cache.VersionRecord{Source: "file:" + modelPath}); err != nil {
				c.Close()
				return err
			}
			c.Close()
			if p, err = startAgentProc(ctx, data); err != nil {
				return err
			}
			defer p.stop()
			time.Sleep(500 * time.Millisecond)
			idleModel := p.rss()

			rest := v2client.NewREST("http://"+p.http, nil)
			g, err := v2client.DialGRPC(p.grpc)
			if err != nil {
				return err
			}
			defer g.Close()
			req := &models.InferRequest{Inputs: inputs}
			sess, err := runtime.NewSession(model, runtime.Config{IntraOpThreads: 1})
			if err != nil {
				return err
			}
			defer sess.Close()
			inproc := func(context.Context) error { _, err := sess.Run(inputs, nil); return err }
			restJSON, err := loadgen.RESTTarget(rest, name, "", req, false)
			if err != nil {
				return err
			}
			restBin, err := loadgen.RESTTarget(rest, name, "", req, true)
			if err != nil {
				return err
			}
			grpcRaw, err := loadgen.GRPCTarget(g, name, "", req, true)
			if err != nil {
				return err
			}
			grpcBatched, err := loadgen.GRPCTarget(g, name+"-batched", "", req, true)
			if err != nil {
				return err
			}
			var nodePeers []nodePeer
			if nodeModules != "" {
				for _, workers := range []int{1, 2} {
					np, err := startNodePeer(ctx, nodeModules, modelPath, name, workers, req)
					if err != nil {
						return err
					}
					defer np.stop()
					nodePeers = append(nodePeers, np)
				}
			}
			pr("# edgefleet serving benchmark\n\n")
			pr("model `%s` (%s), inputs %s; onnxruntime %s, 1 intra-op thread; agent instances 2; %s per row; %s\n\n",
				name, humanize.IBytes(uint64(len(model))), shapesOf(inputs), runtime.Version(), dur, time.Now().UTC().Format(time.RFC3339))
			pr("| target | concurrency | p50 | p95 | p99 | req/s | overhead p50 vs in-process | errors | bench client CPU |\n|---|---|---|---|---|---|---|---|---|\n")
			for _, cc := range conc {
				opts := loadgen.Options{Concurrency: cc, Duration: dur, Warmup: 50}
				base := loadgen.Run(ctx, "in-process onnxruntime", inproc, opts)
				row := func(r loadgen.Result) {
					ov := "—"
					if r.Name != base.Name {
						ov = fmt.Sprintf("+%v", (r.P50 - base.P50).Round(time.Microsecond))
					}
					pr("| %s | %d | %v | %v | %v | %.0f | %s | %d | %.2f |\n", r.Name, cc, us(r.P50), us(r.P95), us(r.P99), r.Throughput, ov, r.Errors, r.CPU)
					if r.FirstError != nil {
						fmt.Fprintf(os.Stderr, "%s: first error: %v\n", r.Name, r.FirstError)
					}
				}
				row(base)
				row(loadgen.Run(ctx, "transport floor: REST GET /v2/health/live", liveTarget(rest), opts))
				row(loadgen.Run(ctx, "transport floor: gRPC ServerLive", grpcLiveTarget(g), opts))
				row(loadgen.Run(ctx, "agent gRPC (raw)", grpcRaw, opts))
				if cc > 1 {
					row(loadgen.Run(ctx, "agent gRPC (raw), dynamic batching", grpcBatched, opts))
				}
				row(loadgen.Run(ctx, "agent REST binary", restBin, opts))
				row(loadgen.Run(ctx, "agent REST JSON", restJSON, opts))
				for _, np := range nodePeers {
					row(loadgen.Run(ctx, np.name, np.target, opts))
				}
			}
			if swapModel != "" {
				if err := benchSwap(ctx, pr, p, g, name, req, swapModel, dur); err != nil {
					return err
				}
			}
			if cycles > 0 {
				if err := benchCycles(ctx, pr, p, g, swapModelOr(swapModel, modelPath), cycles); err != nil {
					return err
				}
			}
			pr("\n| footprint | value |\n|---|---|\n")
			pr("| binary size | %s |\n", humanize.IBytes(uint64(st.Size())))
			pr("| agent idle RSS, no model | %s |\n", humanize.IBytes(uint64(idle)))
			pr("| agent idle RSS, model loaded | %s |\n", humanize.IBytes(uint64(idleModel)))
			pr("| agent RSS after the runs | %s |\n", humanize.IBytes(uint64(p.rss())))
			if out != "" {
				if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
					return err
				}
				return os.WriteFile(out, []byte(report.String()), 0o644)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&modelPath, "model", "agent/testdata/digits/cnn.onnx", "ONNX model to serve")
	f.StringVar(&name, "name", "digits-cnn", "model name")
	f.StringSliceVar(&shapes, "shape", nil, "input shape for dynamic dimensions, NAME=AxBxC (repeatable)")
	f.IntSliceVar(&conc, "concurrency", []int{1}, "concurrency levels")
	f.DurationVar(&dur, "duration", 3*time.Second, "measured time per row")
	f.StringVar(&out, "out", "", "also write the table to this file")
	f.StringVar(&nodeModules, "node-peer", "", "node_modules folder with onnxruntime-node: also measure the Node.js peer server (1 process and a 2-worker cluster)")
	f.StringVar(&swapModel, "swap-model", "", "measure p99 while this model is loaded and unloaded in a loop")
	f.IntVar(&batchMax, "batch-max", 16, "max_batch_size of the dynamic-batching rows")
	f.IntVar(&batchDelay, "batch-delay-us", 100, "max_queue_delay_us of the dynamic-batching rows")
	f.IntVar(&cycles, "cycles", 0, "load/unload cycles of --swap-model (or --model) for the RSS growth row")
	return cmd
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

func newBenchLoadCmd() *cobra.Command {
	var (
		url, grpcAddr, model, version, proto string
		modelFile                            string
		shapes                               []string
		conc                                 int
		dur                                  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "load",
		Short: "Load-generate against any Open Inference Protocol server (REST JSON, REST binary or gRPC)",
		Example: `  edgefleet bench load --url http://127.0.0.1:8080 --model digits-cnn --model-file cnn.onnx --protocol rest-json -c 8
  edgefleet bench load --grpc 127.0.0.1:8081 --model ocr-rec --model-file rec.onnx --shape x=1x3x48x320 --protocol grpc`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := os.ReadFile(modelFile)
			if err != nil {
				return fmt.Errorf("--model-file (used to build inputs): %w", err)
			}
			if _, err := runtime.Init(""); err != nil {
				return err
			}
			ins, err := randomInputs(b, shapes)
			if err != nil {
				return err
			}
			req := &models.InferRequest{Inputs: ins}
			var target loadgen.Target
			switch proto {
			case "rest-json", "rest-binary":
				target, err = loadgen.RESTTarget(v2client.NewREST(url, nil), model, version, req, proto == "rest-binary")
			case "grpc":
				var g *v2client.GRPC
				if g, err = v2client.DialGRPC(grpcAddr); err == nil {
					defer g.Close()
					target, err = loadgen.GRPCTarget(g, model, version, req, true)
				}
			default:
				err = fmt.Errorf("--protocol %q: want rest-json, rest-binary or grpc", proto)
			}
			if err != nil {
				return err
			}
			r := loadgen.Run(cmd.Context(), proto, target, loadgen.Options{Concurrency: conc, Duration: dur, Warmup: 20})
			fmt.Fprintln(cmd.OutOrStdout(), r)
			if r.FirstError != nil {
				return fmt.Errorf("%d errors, first: %w", r.Errors, r.FirstError)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&url, "url", "http://127.0.0.1:8080", "REST base URL")
	f.StringVar(&grpcAddr, "grpc", "127.0.0.1:8081", "gRPC address")
	f.StringVar(&model, "model", "", "model name on the server")
	f.StringVar(&version, "version", "", "model version (default: the server's default)")
	f.StringVar(&modelFile, "model-file", "", "the ONNX file, to generate matching inputs")
	f.StringVar(&proto, "protocol", "grpc", "rest-json, rest-binary or grpc")
	f.StringSliceVar(&shapes, "shape", nil, "input shape for dynamic dimensions, NAME=AxBxC")
	f.IntVarP(&conc, "concurrency", "c", 1, "concurrent requests")
	f.DurationVarP(&dur, "duration", "d", 5*time.Second, "measured duration")
	return cmd
}

func swapModelOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// nodePeer is the Node.js onnxruntime-node server (agent/loadgen/nodepeer).
type nodePeer struct {
	name   string
	cmd    *exec.Cmd
	target loadgen.Target
}

func (n nodePeer) stop() {
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	_ = n.cmd.Wait()
}

func startNodePeer(ctx context.Context, nodeModules, model, name string, workers int, req *models.InferRequest) (nodePeer, error) {
	script := filepath.Join("agent", "loadgen", "nodepeer", "server.js")
	addr := freePort()
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.CommandContext(ctx, "node", script, model, name, port, strconv.Itoa(workers))
	cmd.Env = append(os.Environ(), "NODE_PATH="+nodeModules)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nodePeer{}, fmt.Errorf("starting the Node.js peer: %w", err)
	}
	np := nodePeer{name: fmt.Sprintf("Node.js peer REST JSON (%d proc)", workers), cmd: cmd}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v2/health/ready")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			np.stop()
			return nodePeer{}, fmt.Errorf("the Node.js peer did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t, err := loadgen.RESTTarget(v2client.NewREST("http://"+addr, nil), name, "", req, false)
	np.target = t
	return np, err
}

// benchSwap measures p99 of the served model with and without another model
// being loaded and unloaded in a loop through the repository API.
func benchSwap(ctx context.Context, pr func(string, ...any), p *agentProc, g *v2client.GRPC, name string, req *models.InferRequest, swapModel string, dur time.Duration) error {
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
	pr("| ratio p99 during / steady | | %.2f | |\n", float64(during.P99)/float64(max(steady.P99, 1)))
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

// liveTarget is the cheapest REST request: its latency is the loopback HTTP
// round trip that every inference request pays too.
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
