package telemetry

import (
	"bufio"
	"context"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/ota/wire"
)

// gpuQuery is what nvidia-smi reports, one CSV line per GPU.
const gpuQuery = "index,name,memory.used,memory.total,utilization.gpu"

// gpuWatcher keeps one long-running `nvidia-smi --query-gpu … -lms N`
// process (NVML polling inside nvidia-smi costs far less than starting it
// every interval) and remembers the latest line of every GPU. When the
// process fails (no driver, GPU gone) it is restarted with backoff.
type gpuWatcher struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex // guards gpus
	gpus map[int]wire.GPUStats
}

// startGPUWatcher runs bin (nvidia-smi from PATH when "") every interval
// (5 s when 0). It returns nil when there is no such program: a machine
// without an NVIDIA driver reports no GPUs.
func startGPUWatcher(bin string, interval time.Duration) *gpuWatcher {
	if bin == "" {
		bin = "nvidia-smi"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil
	}
	if interval <= 0 {
		interval = 5 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &gpuWatcher{cancel: cancel, done: make(chan struct{}), gpus: map[int]wire.GPUStats{}}
	go w.run(ctx, path, interval)
	return w
}

func (w *gpuWatcher) run(ctx context.Context, path string, interval time.Duration) {
	defer close(w.done)
	wait := interval
	for ctx.Err() == nil {
		started := time.Now()
		cmd := exec.CommandContext(ctx, path, "--query-gpu="+gpuQuery, "--format=csv,noheader,nounits",
			"-lms", strconv.FormatInt(interval.Milliseconds(), 10))
		out, err := cmd.StdoutPipe()
		if err == nil {
			err = cmd.Start()
		}
		if err == nil {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if g, ok := parseGPULine(sc.Text()); ok {
					w.mu.Lock()
					w.gpus[g.Index] = g
					w.mu.Unlock()
				}
			}
			cmd.Wait()
		}
		// It ran a while: restart soon; it failed at once: back off.
		if time.Since(started) > time.Minute {
			wait = interval
		} else {
			wait = min(wait*2, 10*time.Minute)
		}
		w.mu.Lock()
		clear(w.gpus) // stale numbers are worse than none
		w.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}

// parseGPULine parses "0, NVIDIA H100 80GB HBM3, 1234, 81559, 7": memory in
// MiB, utilization in percent.
func parseGPULine(line string) (wire.GPUStats, bool) {
	f := strings.Split(line, ",")
	if len(f) != 5 {
		return wire.GPUStats{}, false
	}
	for i := range f {
		f[i] = strings.TrimSpace(f[i])
	}
	idx, err1 := strconv.Atoi(f[0])
	used, err2 := strconv.ParseUint(f[2], 10, 64)
	total, err3 := strconv.ParseUint(f[3], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return wire.GPUStats{}, false
	}
	g := wire.GPUStats{Index: idx, Name: f[1], MemUsedBytes: used << 20, MemTotalBytes: total << 20}
	if u, err := strconv.ParseFloat(f[4], 64); err == nil && u >= 0 && u <= 100 {
		g.Utilization = u / 100 // "[N/A]" on some boards: left at 0
	}
	return g, true
}

func (w *gpuWatcher) latest() []wire.GPUStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.gpus) == 0 {
		return nil
	}
	out := make([]wire.GPUStats, 0, len(w.gpus))
	for _, g := range w.gpus {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	return out
}

func (w *gpuWatcher) close() {
	w.cancel()
	<-w.done
}
