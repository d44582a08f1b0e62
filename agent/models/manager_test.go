package models_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/edgefleet/edgefleet/agent/internal/testenv"
	"github.com/edgefleet/edgefleet/agent/metrics"
	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/tensor"
)

func newManager(t *testing.T) (*models.Manager, *metrics.Agent) {
	t.Helper()
	testenv.InitORT(t)
	mt := metrics.New(prometheus.NewRegistry())
	m := models.NewManager(models.Options{Metrics: mt})
	t.Cleanup(m.Close)
	return m, mt
}

func mustLoad(t *testing.T, m *models.Manager, name, ver string, model []byte, s models.Settings) {
	t.Helper()
	if err := m.Load(context.Background(), models.LoadRequest{Name: name, Version: ver, Model: model, Settings: s}); err != nil {
		t.Fatal(err)
	}
}

// doubleReq asks the identity model for double_fp32 only.
func doubleReq(v float32) *models.InferRequest {
	var ins []tensor.Tensor
	for _, dt := range []tensor.DType{tensor.Bool, tensor.Uint8, tensor.Uint16, tensor.Uint32, tensor.Uint64,
		tensor.Int8, tensor.Int16, tensor.Int32, tensor.Int64, tensor.FP16, tensor.FP32, tensor.FP64, tensor.Bytes} {
		t := tensor.Tensor{Name: "in_" + dt.String(), DType: dt, Shape: []int64{1, 3}}
		if dt == tensor.Bytes {
			t.Strings = [][]byte{[]byte("a"), []byte("b"), []byte("c")}
		} else {
			t.Data = make([]byte, 3*dt.Size())
		}
		if dt == tensor.FP32 {
			for i := range 3 {
				putF32(t.Data[4*i:], v)
			}
		}
		ins = append(ins, t)
	}
	return &models.InferRequest{ID: "r1", Inputs: ins, Outputs: []string{"double_fp32"}}
}

func TestLoadInferUnload(t *testing.T) {
	m, mt := newManager(t)
	model := testenv.Fixture(t, "dtypes/identity_all.onnx")
	mustLoad(t, m, "id", "1", model, models.Settings{})
	mustLoad(t, m, "id", "2", model, models.Settings{})
	mustLoad(t, m, "id", "10", model, models.Settings{})

	resp, err := m.Infer(context.Background(), "id", "", doubleReq(1.5))
	if err != nil {
		t.Fatal(err)
	}
	if resp.ModelVersion != "10" || resp.ID != "r1" || len(resp.Outputs) != 1 || getF32(resp.Outputs[0].Data) != 3 {
		t.Fatalf("resp = %+v, want version 10 (numeric latest), id r1, double 3", resp)
	}
	md, err := m.ModelMetadata("id", "")
	if err != nil {
		t.Fatal(err)
	}
	if got := md.Versions; len(got) != 3 || got[0] != "1" || got[2] != "10" {
		t.Errorf("versions = %v", got)
	}
	if md.Parameters["execution_provider"] != "cpu" || len(md.Inputs) != 13 || md.Inputs[0].Name != "in_BOOL" {
		t.Errorf("metadata = %+v", md)
	}
	if err := m.Unload("id", "10"); err != nil {
		t.Fatal(err)
	}
	if resp, err = m.Infer(context.Background(), "id", "", doubleReq(1)); err != nil || resp.ModelVersion != "2" {
		t.Fatalf("after unloading 10: %v %+v", err, resp)
	}
	for _, tc := range []struct{ name, ver string }{{"nope", ""}, {"id", "10"}, {"id", "3"}} {
		if _, err := m.Infer(context.Background(), tc.name, tc.ver, doubleReq(1)); !errors.Is(err, models.ErrNotFound) {
			t.Errorf("Infer(%s,%s) err = %v, want ErrNotFound", tc.name, tc.ver, err)
		}
		if _, err := m.ModelReady(tc.name, tc.ver); !errors.Is(err, models.ErrNotFound) {
			t.Errorf("ModelReady(%s,%s) err = %v, want ErrNotFound", tc.name, tc.ver, err)
		}
	}
	if n := testutil.CollectAndCount(mt.ComputeDuration); n == 0 {
		t.Error("no compute duration recorded")
	}
}

func TestPinnedDefaultVersion(t *testing.T) {
	m, _ := newManager(t)
	model := testenv.Fixture(t, "dtypes/identity_all.onnx")
	s := models.Settings{DefaultVersion: "1"}
	mustLoad(t, m, "id", "1", model, s)
	mustLoad(t, m, "id", "2", model, s)
	resp, err := m.Infer(context.Background(), "id", "", doubleReq(1))
	if err != nil || resp.ModelVersion != "1" {
		t.Fatalf("err=%v version=%v, want pinned 1", err, resp)
	}
}

func TestInvalidInputIsClientError(t *testing.T) {
	m, _ := newManager(t)
	mustLoad(t, m, "id", "1", testenv.Fixture(t, "dtypes/identity_all.onnx"), models.Settings{})
	req := doubleReq(1)
	req.Inputs = req.Inputs[1:]
	if _, err := m.Infer(context.Background(), "id", "", req); !errors.Is(err, models.ErrInvalidInput) {
		t.Fatalf("err = %v, want ErrInvalidInput", err)
	}
}

func TestQueueFullRejectsAtOnce(t *testing.T) {
	m, _ := newManager(t)
	// One instance, no queue: while a request holds the instance, others fail fast.
	mustLoad(t, m, "id", "1", testenv.Fixture(t, "dtypes/identity_all.onnx"), models.Settings{Instances: 1, MaxQueue: -1})
	var wg sync.WaitGroup
	var ok, overloaded, other atomic.Int64
	for range 64 {
		wg.Go(func() {
			_, err := m.Infer(context.Background(), "id", "", doubleReq(1))
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, models.ErrOverloaded):
				overloaded.Add(1)
			default:
				other.Add(1)
			}
		})
	}
	wg.Wait()
	if ok.Load() == 0 || other.Load() != 0 || ok.Load()+overloaded.Load() != 64 {
		t.Fatalf("ok=%d overloaded=%d other=%d", ok.Load(), overloaded.Load(), other.Load())
	}
}

func TestDeadlineWhileQueued(t *testing.T) {
	m, _ := newManager(t)
	mustLoad(t, m, "id", "1", testenv.Fixture(t, "dtypes/identity_all.onnx"), models.Settings{Instances: 1})
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	if _, err := m.Infer(ctx, "id", "", doubleReq(1)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
}

func TestRequestsRacingUnload(t *testing.T) {
	m, _ := newManager(t)
	model := testenv.Fixture(t, "dtypes/identity_all.onnx")
	mustLoad(t, m, "id", "1", model, models.Settings{Instances: 4})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var bad atomic.Int64
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				_, err := m.Infer(ctx, "id", "1", doubleReq(2))
				if err != nil && !errors.Is(err, models.ErrNotFound) && !errors.Is(err, context.Canceled) {
					bad.Add(1)
					t.Errorf("unexpected error: %v", err)
				}
			}
		})
	}
	for range 20 {
		if err := m.Unload("id", "1"); err != nil {
			t.Fatal(err)
		}
		mustLoad(t, m, "id", "1", model, models.Settings{Instances: 4})
	}
	cancel()
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d requests failed with something other than not-found", bad.Load())
	}
}

func TestLoadRejectsBadModelAndSettings(t *testing.T) {
	m, _ := newManager(t)
	if err := m.Load(context.Background(), models.LoadRequest{Name: "x", Version: "1", Model: []byte("not onnx")}); err == nil {
		t.Error("loaded garbage")
	}
	err := m.Load(context.Background(), models.LoadRequest{Name: "x", Version: "1",
		Model: testenv.Fixture(t, "dtypes/identity_all.onnx"), Settings: models.Settings{Providers: []string{"npu"}}})
	if !errors.Is(err, models.ErrInvalidInput) {
		t.Errorf("unknown provider: err = %v", err)
	}
	if len(m.Index()) != 0 {
		t.Errorf("index = %v, want empty", m.Index())
	}
}

func TestFallbackShownInMetadataAndMetrics(t *testing.T) {
	m, mt := newManager(t)
	mustLoad(t, m, "id", "1", testenv.Fixture(t, "dtypes/identity_all.onnx"), models.Settings{Providers: []string{"cuda", "cpu"}})
	md, err := m.ModelMetadata("id", "1")
	if err != nil {
		t.Fatal(err)
	}
	if md.Parameters["execution_provider"] != "cpu" || md.Parameters["requested_execution_provider"] != "cuda" || md.Parameters["fallback_reason"] == "" {
		t.Fatalf("parameters = %v", md.Parameters)
	}
	if v := testutil.ToFloat64(mt.Fallbacks.WithLabelValues("id", "1", "cuda", "cpu")); v != 1 {
		t.Errorf("fallbacks metric = %v, want 1", v)
	}
	if v := testutil.ToFloat64(mt.Provider.WithLabelValues("id", "1", "cpu", "cuda")); v != 1 {
		t.Errorf("provider metric = %v, want 1", v)
	}
	if ready, err := m.ModelReady("id", "1"); !ready || err != nil {
		t.Errorf("model not ready after fallback: %v %v", ready, err)
	}
}

func TestRuntimeGPUFailureRetriedOnCPUAndDegraded(t *testing.T) {
	m, mt := newManager(t)
	mustLoad(t, m, "id", "1", testenv.Fixture(t, "dtypes/identity_all.onnx"), models.Settings{})
	if err := m.TestOnlyInjectGPUFault("id", "1", "cuda", func() error { return errors.New("CUDA error: out of memory") }); err != nil {
		t.Fatal(err)
	}
	resp, err := m.Infer(context.Background(), "id", "", doubleReq(4))
	if err != nil || getF32(resp.Outputs[0].Data) != 8 {
		t.Fatalf("request not served by the CPU fallback: %v %+v", err, resp)
	}
	md, _ := m.ModelMetadata("id", "1")
	if md.Parameters["degraded"] != "true" || md.Parameters["degraded_reason"] == "" || md.Parameters["execution_provider"] != "cpu" {
		t.Errorf("parameters = %v", md.Parameters)
	}
	if v := testutil.ToFloat64(mt.Degraded.WithLabelValues("id", "1")); v != 1 {
		t.Errorf("degraded metric = %v", v)
	}
}

func TestLabels(t *testing.T) {
	m, _ := newManager(t)
	model := testenv.Fixture(t, "dtypes/identity_all.onnx")
	s := models.Settings{Labels: map[string]string{"stable": "1"}}
	mustLoad(t, m, "id", "1", model, s)
	mustLoad(t, m, "id", "2", model, s)
	if v, err := m.ResolveLabel("id", "stable"); err != nil || v != "1" {
		t.Fatalf("stable = %q, %v", v, err)
	}
	if _, err := m.ResolveLabel("id", "canary"); !errors.Is(err, models.ErrNotFound) {
		t.Fatalf("canary before set: %v", err)
	}
	if err := m.SetLabel("id", "canary", "2"); err != nil {
		t.Fatal(err)
	}
	if err := m.SetLabel("id", "canary", "7"); !errors.Is(err, models.ErrNotFound) {
		t.Fatalf("label to unloaded version: %v", err)
	}
	if v, _ := m.ResolveLabel("id", "canary"); v != "2" {
		t.Fatalf("canary = %q", v)
	}
	if err := m.Unload("id", "1"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ResolveLabel("id", "stable"); !errors.Is(err, models.ErrNotFound) {
		t.Fatalf("label of an unloaded version resolved: %v", err)
	}
}

func TestVersionPolicySelect(t *testing.T) {
	avail := []string{"10", "2", "1", "3"}
	for _, tc := range []struct {
		name          string
		p             models.VersionPolicy
		serve, missed []string
	}{
		{"default latest 1", models.VersionPolicy{}, []string{"10"}, nil},
		{"latest 2", models.VersionPolicy{Latest: 2}, []string{"3", "10"}, nil},
		{"latest more than there are", models.VersionPolicy{Latest: 9}, []string{"1", "2", "3", "10"}, nil},
		{"all", models.VersionPolicy{All: true}, []string{"1", "2", "3", "10"}, nil},
		{"specific", models.VersionPolicy{Specific: []string{"2", "7", "1"}}, []string{"1", "2"}, []string{"7"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serve, missed := tc.p.Select(avail)
			if fmt.Sprint(serve) != fmt.Sprint(tc.serve) || fmt.Sprint(missed) != fmt.Sprint(tc.missed) {
				t.Errorf("Select = %v, %v; want %v, %v", serve, missed, tc.serve, tc.missed)
			}
		})
	}
	if err := (models.VersionPolicy{Latest: 1, All: true}).Validate(); err == nil {
		t.Error("two choices accepted")
	}
}

func TestSetDefaultVersion(t *testing.T) {
	m, _ := newManager(t)
	model := testenv.Fixture(t, "dtypes/identity_all.onnx")
	mustLoad(t, m, "id", "1", model, models.Settings{})
	mustLoad(t, m, "id", "2", model, models.Settings{})
	if err := m.SetDefaultVersion("id", "1"); err != nil {
		t.Fatal(err)
	}
	if resp, err := m.Infer(context.Background(), "id", "", doubleReq(1)); err != nil || resp.ModelVersion != "1" {
		t.Fatalf("default after pin: %v %v", resp, err)
	}
	if err := m.SetDefaultVersion("id", "3"); !errors.Is(err, models.ErrNotFound) {
		t.Fatalf("pin to unloaded version: %v", err)
	}
	if err := m.SetDefaultVersion("id", ""); err != nil {
		t.Fatal(err)
	}
	if resp, _ := m.Infer(context.Background(), "id", "", doubleReq(1)); resp.ModelVersion != "2" {
		t.Fatalf("default after unpin = %s, want latest 2", resp.ModelVersion)
	}
}

func TestDynamicBatchingExact(t *testing.T) {
	testenv.InitORT(t)
	reg := prometheus.NewRegistry()
	outs := metrics.NewOutputs(reg)
	m := models.NewManager(models.Options{Metrics: metrics.New(reg), Outputs: outs})
	t.Cleanup(m.Close)
	cnn := testenv.Fixture(t, "digits/cnn.onnx")
	mustLoad(t, m, "plain", "1", cnn, models.Settings{})
	mustLoad(t, m, "batched", "1", cnn, models.Settings{Instances: 1,
		Batching: &models.Batching{MaxBatchSize: 16, MaxQueueDelayMicros: 2000}})
	if md, _ := m.ModelMetadata("batched", ""); md.Parameters["dynamic_batching"] != "true" {
		t.Fatalf("batching not on: %v", md.Parameters)
	}
	// 48 concurrent requests of 1 to 3 rows each.
	var wg sync.WaitGroup
	for i := range 48 {
		wg.Go(func() {
			n := int64(1 + i%3)
			px := make([]float32, n*64)
			for j := range px {
				px[j] = float32((i*31+j*7)%17) / 16
			}
			in := tensor.Tensor{Name: "input", DType: tensor.FP32, Shape: []int64{n, 1, 8, 8}, Data: make([]byte, 4*len(px))}
			for j, v := range px {
				putF32(in.Data[4*j:], v)
			}
			req := func() *models.InferRequest { return &models.InferRequest{Inputs: []tensor.Tensor{in}} }
			got, err := m.Infer(context.Background(), "batched", "", req())
			if err != nil {
				t.Error(err)
				return
			}
			want, err := m.Infer(context.Background(), "plain", "", req())
			if err != nil {
				t.Error(err)
				return
			}
			if !slices.Equal(got.Outputs[0].Shape, []int64{n, 10}) || !bytes.Equal(got.Outputs[0].Data, want.Outputs[0].Data) {
				t.Errorf("request %d: batched logits differ from unbatched", i)
			}
		})
	}
	wg.Wait()
	h := &dto.Metric{}
	if err := outs.BatchSize.WithLabelValues("batched", "1").(prometheus.Histogram).Write(h); err != nil {
		t.Fatal(err)
	}
	runs, rows := h.GetHistogram().GetSampleCount(), h.GetHistogram().GetSampleSum()
	if runs == 0 || rows <= float64(runs) {
		t.Errorf("%d batched runs carried %v rows: nothing was merged", runs, rows)
	}
	t.Logf("%v rows in %d runs", rows, runs)
}

func TestBatchingNeedsDynamicBatchDim(t *testing.T) {
	m, _ := newManager(t)
	// Silero's sr input is a scalar: it cannot be batched, so it is served unbatched.
	mustLoad(t, m, "silero", "1", testenv.Model(t, "silero_vad_op18_ifless.onnx"), models.Settings{Batching: &models.Batching{}})
	if md, _ := m.ModelMetadata("silero", ""); md.Parameters["dynamic_batching"] != "false" {
		t.Fatalf("batching enabled on an unbatchable model: %v", md.Parameters)
	}
}
