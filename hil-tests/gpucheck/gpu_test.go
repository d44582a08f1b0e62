//go:build gpu

package gpucheck

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/agent/cache"
	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/agent/models"
	ortrt "github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/tensor"
	"github.com/edgefleet/edgefleet/hil-tests/v2client"
)

// cpuDryRun runs the check on a machine without a GPU, accepting the CPU
// fallback at load time: it only tests this harness, not the CUDA path.
var cpuDryRun = flag.Bool("cpu-dry-run", false, "accept a CPU fallback at load (harness self-test without a GPU)")

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func TestCUDAServingAndFallback(t *testing.T) {
	lib := os.Getenv("EDGEFLEET_ORT_LIB")
	if lib == "" {
		t.Fatal("EDGEFLEET_ORT_LIB must name the CUDA build's libonnxruntime.so.1 (run `make gpu-check`)")
	}
	model, err := os.ReadFile(filepath.Join(repoRoot(), "agent", "testdata", "digits", "cnn.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ortrt.Init(lib); err != nil {
		t.Fatalf("loading onnxruntime %s: %v", lib, err)
	}
	t.Logf("onnxruntime %s from %s", ortrt.Version(), lib)

	// The reference answer from a CPU session.
	in := tensor.Tensor{Name: "input", DType: tensor.FP32, Shape: []int64{4, 1, 8, 8}, Data: make([]byte, 4*4*64)}
	for i := range 4 * 64 {
		binary.LittleEndian.PutUint32(in.Data[4*i:], math.Float32bits(float32(i%17)/16))
	}
	cpu, err := ortrt.NewSession(model, ortrt.Config{})
	if err != nil {
		t.Fatal(err)
	}
	want, err := cpu.Run([]tensor.Tensor{in}, nil)
	cpu.Close()
	if err != nil {
		t.Fatal(err)
	}

	// The agent with [cuda, cpu].
	dir := t.TempDir()
	c, err := cache.Open(filepath.Join(dir, agent.CacheFile), cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ImportModel(context.Background(), "digits-cnn", "1", model, cache.VersionRecord{Source: "gpu-check"}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	cfg := config.Config{Data: dir, HTTP: "127.0.0.1:0", GRPC: "off", ORTLib: lib,
		Defaults: models.Settings{Providers: []string{ortrt.ProviderCUDA, ortrt.ProviderCPU}}}
	a, err := agent.New(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent Run: %v", err)
		}
	}()
	select {
	case <-a.Ready():
	case err := <-done:
		t.Fatalf("agent stopped: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("agent not ready after 2 minutes")
	}
	rest := v2client.NewREST("http://"+a.Addr("http").String(), nil)

	md, err := a.Models().ModelMetadata("digits-cnn", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("loaded: execution_provider=%s fallback_reason=%q", md.Parameters["execution_provider"], md.Parameters["fallback_reason"])
	if md.Parameters["execution_provider"] != ortrt.ProviderCUDA {
		if !*cpuDryRun {
			t.Fatalf("the model is not served on the GPU: execution_provider=%s, reason: %s",
				md.Parameters["execution_provider"], md.Parameters["fallback_reason"])
		}
		t.Log("cpu-dry-run: continuing on the CPU fallback")
	}

	check := func(stage string) {
		t.Helper()
		for _, binaryData := range []bool{false, true} {
			resp, err := rest.Infer(context.Background(), "digits-cnn", "", &models.InferRequest{Inputs: []tensor.Tensor{in}}, binaryData)
			if err != nil {
				t.Fatalf("%s: inference (binary %v): %v", stage, binaryData, err)
			}
			if err := close32(resp.Outputs[0].Data, want.Outputs[0].Data, 1e-3); err != nil {
				t.Fatalf("%s: output differs from the CPU session's: %v", stage, err)
			}
		}
	}
	check("on the GPU")

	// A GPU fault: the next primary runs fail; requests must be retried on
	// the CPU and the version marked degraded.
	if err := a.Models().TestOnlyInjectGPUFault("digits-cnn", "", ortrt.ProviderCUDA, func() error {
		return errors.New("injected: CUDA error 700 an illegal memory access was encountered")
	}); err != nil {
		t.Fatal(err)
	}
	check("after the GPU fault")
	md, err = a.Models().ModelMetadata("digits-cnn", "")
	if err != nil {
		t.Fatal(err)
	}
	if md.Parameters["degraded"] != "true" || md.Parameters["execution_provider"] != ortrt.ProviderCPU {
		t.Fatalf("after the fault: parameters %v, want degraded=true execution_provider=cpu", md.Parameters)
	}
	resp, err := http.Get(rest.Base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `edgefleet_agent_model_degraded{model="digits-cnn",version="1"} 1`) {
		t.Fatal("/metrics does not report the version degraded")
	}
	t.Logf("GPU fault → CPU fallback: degraded_reason=%q", md.Parameters["degraded_reason"])
}

// close32 compares two FP32 byte slices elementwise within tol.
func close32(got, want []byte, tol float64) error {
	if len(got) != len(want) {
		return errors.New("lengths differ")
	}
	for i := 0; i+4 <= len(got); i += 4 {
		g := float64(math.Float32frombits(binary.LittleEndian.Uint32(got[i:])))
		w := float64(math.Float32frombits(binary.LittleEndian.Uint32(want[i:])))
		if math.Abs(g-w) > tol*math.Max(1, math.Abs(w)) {
			return fmt.Errorf("element %d: %g, want %g", i/4, g, w)
		}
	}
	return nil
}
