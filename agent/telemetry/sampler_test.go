package telemetry

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgefleet/edgefleet/agent/metrics"
	"github.com/edgefleet/edgefleet/agent/tensor"
	"github.com/edgefleet/edgefleet/ota/wire"
)

func findModel(s wire.Snapshot, model, version string) *wire.ModelStats {
	for i := range s.Models {
		if s.Models[i].Model == model && s.Models[i].Version == version {
			return &s.Models[i]
		}
	}
	return nil
}

func fp32(vals ...float32) tensor.Tensor {
	b := make([]byte, 4*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return tensor.Tensor{Name: "y", DType: tensor.FP32, Shape: []int64{int64(len(vals))}, Data: b}
}

func TestSamplerDeltas(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	out := metrics.NewOutputs(reg)
	s := NewSampler(reg, t.TempDir())
	defer s.Close()

	m.Provider.WithLabelValues("digits", "3", "cpu", "cpu").Set(1)
	m.Provider.WithLabelValues("idle", "1", "cpu", "cpu").Set(0) // a provider not in use
	for range 4 {
		m.ObserveRequest("digits", "3", "rest", metrics.OutcomeSuccess, 200*time.Microsecond)
	}
	m.ObserveRequest("digits", "3", "grpc", metrics.OutcomeSuccess, 3*time.Millisecond)
	m.ObserveRequest("digits", "3", "rest", metrics.OutcomeServerError, 40*time.Microsecond)
	m.ObserveRequest("digits", "3", "rest", metrics.OutcomeOverloaded, 20*time.Microsecond)
	m.ObserveRequest("digits", "3", "rest", metrics.OutcomeClientError, 20*time.Microsecond)
	m.ObserveRequest("", "", "rest", metrics.OutcomeNotFound, 20*time.Microsecond) // unknown model
	out.ObserveOutputs("digits", "3", []tensor.Tensor{fp32(1, float32(math.NaN()))})
	out.ObserveOutputs("digits", "3", []tensor.Tensor{fp32(1, 2)})
	out.ObserveBatch("digits", "3", 4)
	m.Fallbacks.WithLabelValues("digits", "3", "cuda", "cpu").Inc()

	t0 := time.Now()
	s1, err := s.Sample(t0)
	if err != nil {
		t.Fatal(err)
	}
	d := findModel(s1, "digits", "3")
	if d == nil || len(s1.Models) != 1 {
		t.Fatalf("models %+v, want digits/3 only", s1.Models)
	}
	if d.Requests != 8 || d.Errors != 1 || d.Rejected != 1 || d.ClientErrors != 1 || d.NonFinite != 1 ||
		d.Fallbacks != 1 || d.Provider != "cpu" {
		t.Fatalf("first sample %+v", *d)
	}
	if d.Latency.Count != 8 || d.BatchSize == nil || d.BatchSize.Count != 1 {
		t.Fatalf("histograms %+v %+v", d.Latency, d.BatchSize)
	}
	if err := d.Latency.Validate(); err != nil {
		t.Fatal(err)
	}
	if p50 := d.Latency.Quantile(0.5); p50 < 60e-6 || p50 > 400e-6 {
		t.Fatalf("p50 %v, want about 200µs", p50)
	}
	if s1.IntervalMs != 0 || s1.Box.Cores != runtime.NumCPU() {
		t.Fatalf("first snapshot interval %d, cores %d", s1.IntervalMs, s1.Box.Cores)
	}

	// The next sample holds only what happened since.
	m.ObserveRequest("digits", "3", "rest", metrics.OutcomeSuccess, 5*time.Millisecond)
	s2, err := s.Sample(t0.Add(10 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	d = findModel(s2, "digits", "3")
	if d.Requests != 1 || d.Errors != 0 || d.NonFinite != 0 || d.Latency.Count != 1 || d.BatchSize != nil {
		t.Fatalf("second sample %+v", *d)
	}
	if len(d.Latency.Buckets) != 2 || d.Latency.Buckets[1].N != 1 || d.Latency.Buckets[0].N != 0 {
		t.Fatalf("sparse latency %+v: want the bucket holding 5 ms and the empty one below", d.Latency.Buckets)
	}
	if d.Latency.Buckets[1].Le < 0.005 || d.Latency.Buckets[0].Le >= 0.005 {
		t.Fatalf("5 ms in bucket %+v", d.Latency.Buckets)
	}
	if s2.IntervalMs != 10000 {
		t.Fatalf("interval %d ms", s2.IntervalMs)
	}
	snap := s2
	snap.Seq = 1
	if err := snap.Validate(); err != nil {
		t.Fatal(err)
	}

	// An idle, loaded model still appears (it shows where it runs); an
	// unloaded one without traffic does not.
	m.Provider.WithLabelValues("digits", "3", "cpu", "cpu").Set(0)
	s3, _ := s.Sample(t0.Add(20 * time.Second))
	if len(s3.Models) != 0 {
		t.Fatalf("unloaded idle model reported: %+v", s3.Models)
	}
}

func TestSamplerBox(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	dir := t.TempDir()
	s := NewSampler(nil, dir)
	defer s.Close()
	t0 := time.Now()
	s.Sample(t0)
	// Burn some CPU so the process figure is not zero.
	deadline := time.Now().Add(100 * time.Millisecond)
	x := 0
	for time.Now().Before(deadline) {
		x++
	}
	b, err := s.Sample(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	box := b.Box
	if box.ProcessCPU <= 0 || box.ProcessCPU > float64(runtime.NumCPU())+0.5 {
		t.Fatalf("process CPU %v cores after a busy loop", box.ProcessCPU)
	}
	if box.SystemCPU < 0 || box.SystemCPU > 1 {
		t.Fatalf("system CPU %v", box.SystemCPU)
	}
	if box.RSSBytes < 1<<20 || box.MemTotalBytes == 0 || box.MemAvailableBytes > box.MemTotalBytes {
		t.Fatalf("memory %+v", box)
	}
	if box.DiskTotalBytes == 0 || box.DiskFreeBytes > box.DiskTotalBytes {
		t.Fatalf("disk %+v", box)
	}
	if got := s.Box(); got.RSSBytes != box.RSSBytes || got.DiskFreeBytes != box.DiskFreeBytes {
		t.Fatalf("Box() = %+v, want the last sample", s.Box())
	}
}

func TestParsers(t *testing.T) {
	t.Run("proc stat", func(t *testing.T) {
		busy, total, ok := parseProcStat("cpu  100 5 50 800 20 3 2 10 7 0")
		if !ok || total != 990 || busy != 170 {
			t.Fatalf("parseProcStat = %d, %d, %v", busy, total, ok)
		}
		for _, bad := range []string{"", "cpu0 1 2 3 4", "cpu x y z w", "cpu 1 2"} {
			if _, _, ok := parseProcStat(bad); ok {
				t.Errorf("parseProcStat(%q) ok", bad)
			}
		}
	})
	t.Run("meminfo", func(t *testing.T) {
		total, avail := parseMemInfo([]byte("MemTotal:       16318412 kB\nMemFree:  1 kB\nMemAvailable:   12011116 kB\n"))
		if total != 16318412*1024 || avail != 12011116*1024 {
			t.Fatalf("parseMemInfo = %d, %d", total, avail)
		}
	})
	t.Run("nvidia-smi", func(t *testing.T) {
		tests := []struct {
			line string
			ok   bool
			want wire.GPUStats
		}{
			{"0, NVIDIA H100 80GB HBM3, 1234, 81559, 7", true,
				wire.GPUStats{Index: 0, Name: "NVIDIA H100 80GB HBM3", MemUsedBytes: 1234 << 20, MemTotalBytes: 81559 << 20, Utilization: 0.07}},
			{"1, Tesla T4, 0, 15360, [N/A]", true,
				wire.GPUStats{Index: 1, Name: "Tesla T4", MemTotalBytes: 15360 << 20}},
			{"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.", false, wire.GPUStats{}},
			{"0, x, a, 1, 2", false, wire.GPUStats{}},
		}
		for _, tt := range tests {
			got, ok := parseGPULine(tt.line)
			if ok != tt.ok || got != tt.want {
				t.Errorf("parseGPULine(%q) = %+v, %v; want %+v, %v", tt.line, got, ok, tt.want, tt.ok)
			}
		}
	})
}

func TestGPUWatcher(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("shell script stand-in")
	}
	// No nvidia-smi: no watcher, no GPUs.
	if w := startGPUWatcher(filepath.Join(t.TempDir(), "nvidia-smi"), 0); w != nil {
		w.close()
		t.Fatal("watcher started without nvidia-smi")
	}
	// A stand-in for nvidia-smi on this GPU-less machine prints what the
	// real one prints in loop mode.
	bin := filepath.Join(t.TempDir(), "nvidia-smi")
	script := "#!/bin/sh\nwhile true; do echo '0, NVIDIA H200, 2048, 143771, 55'; echo '1, NVIDIA H200, 10, 143771, 0'; sleep 0.05; done\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	w := startGPUWatcher(bin, 50*time.Millisecond)
	if w == nil {
		t.Fatal("no watcher")
	}
	defer w.close()
	deadline := time.Now().Add(10 * time.Second)
	for len(w.latest()) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("no GPU lines read")
		}
		time.Sleep(10 * time.Millisecond)
	}
	g := w.latest()
	if g[0].Index != 0 || g[0].MemUsedBytes != 2048<<20 || g[0].Utilization != 0.55 || g[1].Index != 1 {
		t.Fatalf("GPUs %+v", g)
	}
}
