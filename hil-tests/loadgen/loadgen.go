// Package loadgen drives an inference target at a fixed concurrency and
// reports latency percentiles, throughput and the generator's own CPU time.
// Targets are built from v2client (REST JSON, REST binary, gRPC), so any Open
// Inference Protocol server can be measured, or from an in-process function
// for a baseline.
package loadgen

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Target performs one request and reports its error.
type Target func(ctx context.Context) error

// Options set the shape of a run. Zero Duration and Requests mean 3 s.
type Options struct {
	Concurrency int
	// Warmup requests per worker, not measured.
	Warmup int
	// Duration of the measured phase; ignored when Requests is set.
	Duration time.Duration
	// Requests is the number of measured requests across workers.
	Requests int
	// ServerCPU, when set, returns the cumulative CPU time of the server
	// process(es); it is sampled around the measured phase to report the
	// server's CPU time per request.
	ServerCPU func() time.Duration
}

// Result summarises a run.
type Result struct {
	Name        string
	Concurrency int
	Requests    int
	Errors      int
	FirstError  error
	Elapsed     time.Duration
	P50         time.Duration
	P95         time.Duration
	P99         time.Duration
	Mean        time.Duration
	Throughput  float64 // successful requests per second
	// CPU is the process CPU time (user+system) consumed during the measured
	// phase, as a fraction of one core; for an in-process baseline it is the
	// whole work, for a remote target it is the generator's cost.
	CPU float64
	// CPUPerRequest is the CPU time per successful request: the server's
	// when Options.ServerCPU is set, else this process's own.
	CPUPerRequest time.Duration
}

func (r Result) String() string {
	return fmt.Sprintf("%-28s c=%-3d n=%-7d err=%-3d p50=%-9v p95=%-9v p99=%-9v %9.0f/s cpu=%.2f cpu/req=%v",
		r.Name, r.Concurrency, r.Requests, r.Errors, r.P50, r.P95, r.P99, r.Throughput, r.CPU, r.CPUPerRequest)
}

// Run drives target with opts.Concurrency workers.
func Run(ctx context.Context, name string, target Target, opts Options) Result {
	if opts.Concurrency <= 0 {
		opts.Concurrency = 1
	}
	if opts.Duration <= 0 && opts.Requests <= 0 {
		opts.Duration = 3 * time.Second
	}
	var wg sync.WaitGroup
	for range opts.Concurrency {
		wg.Go(func() {
			for range opts.Warmup {
				_ = target(ctx)
			}
		})
	}
	wg.Wait()

	var (
		mu       sync.Mutex
		lat      []time.Duration
		errs     int
		firstErr error
		issued   atomic.Int64
	)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if opts.Requests <= 0 {
		var c2 context.CancelFunc
		runCtx, c2 = context.WithTimeout(runCtx, opts.Duration)
		defer c2()
	}
	srvCPU := opts.ServerCPU
	if srvCPU == nil {
		srvCPU = cpuTime
	}
	cpu0, srv0 := cpuTime(), srvCPU()
	start := time.Now()
	for range opts.Concurrency {
		wg.Go(func() {
			local := make([]time.Duration, 0, 4096)
			var lerrs int
			var lfirst error
			for runCtx.Err() == nil {
				if opts.Requests > 0 && issued.Add(1) > int64(opts.Requests) {
					break
				}
				t0 := time.Now()
				err := target(ctx)
				d := time.Since(t0)
				if err != nil {
					lerrs++
					if lfirst == nil {
						lfirst = err
					}
					continue
				}
				local = append(local, d)
			}
			mu.Lock()
			lat = append(lat, local...)
			errs += lerrs
			if firstErr == nil {
				firstErr = lfirst
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	srv := srvCPU() - srv0
	res := Result{Name: name, Concurrency: opts.Concurrency, Requests: len(lat) + errs, Errors: errs,
		FirstError: firstErr, Elapsed: elapsed, CPU: cpu.Seconds() / elapsed.Seconds()}
	if len(lat) == 0 {
		return res
	}
	slices.Sort(lat)
	res.P50, res.P95, res.P99 = pct(lat, 0.50), pct(lat, 0.95), pct(lat, 0.99)
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	res.Mean = sum / time.Duration(len(lat))
	res.Throughput = float64(len(lat)) / elapsed.Seconds()
	res.CPUPerRequest = srv / time.Duration(len(lat))
	return res
}

func pct(sorted []time.Duration, p float64) time.Duration {
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
