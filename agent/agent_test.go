package agent_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/agent/cache"
	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/agent/internal/testenv"
	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/tensor"
	"github.com/edgefleet/edgefleet/hil-tests/v2client"
)

// running is an agent serving on loopback ports, with clients for it.
type running struct {
	a      *agent.Agent
	rest   *v2client.REST
	grpc   *v2client.GRPC
	unix   string
	cancel context.CancelFunc
	done   chan error
}

// startAgent imports models (name → ONNX bytes) into a fresh data folder and
// runs a real agent on it.
func startAgent(t testing.TB, cfg config.Config, ms map[string][]byte) *running {
	t.Helper()
	testenv.InitORT(t)
	dir := t.TempDir()
	c, err := cache.Open(filepath.Join(dir, agent.CacheFile), cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range ms {
		if _, err := c.ImportModel(context.Background(), name, "", b, cache.VersionRecord{Source: "test"}); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	cfg.Data = dir
	cfg.HTTP, cfg.GRPC = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Unix = filepath.Join(dir, "agent.sock")
	a, err := agent.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{a: a, cancel: cancel, done: make(chan error, 1), unix: cfg.Unix}
	go func() { r.done <- a.Run(ctx) }()
	select {
	case <-a.Ready():
	case err := <-r.done:
		t.Fatalf("agent stopped: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("agent not ready after 60s")
	}
	r.rest = v2client.NewREST("http://"+a.Addr("http").String(), nil)
	if r.grpc, err = v2client.DialGRPC(a.Addr("grpc").String()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.grpc.Close()
		r.stop(t)
	})
	return r
}

func (r *running) stop(t testing.TB) {
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			t.Errorf("agent Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("agent did not stop")
	}
}

// protocols are the three ways a request reaches the agent.
var protocols = []string{"rest-json", "rest-binary", "grpc-raw", "grpc-typed"}

func (r *running) infer(ctx context.Context, proto, model, version string, req *models.InferRequest) (*models.InferResponse, error) {
	switch proto {
	case "rest-json":
		return r.rest.Infer(ctx, model, version, req, false)
	case "rest-binary":
		return r.rest.Infer(ctx, model, version, req, true)
	case "grpc-raw":
		return r.grpc.Infer(ctx, model, version, req, true)
	case "grpc-typed":
		return r.grpc.Infer(ctx, model, version, req, false)
	}
	panic(proto)
}

func f32Tensor(name string, shape []int64, vals []float32) tensor.Tensor {
	b := make([]byte, 4*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return tensor.Tensor{Name: name, DType: tensor.FP32, Shape: shape, Data: b}
}

// lcg fills n deterministic pseudo-random floats in [lo, hi).
func lcg(n int, seed uint32, lo, hi float32) []float32 {
	out := make([]float32, n)
	for i := range out {
		seed = seed*1664525 + 1013904223
		out[i] = lo + (hi-lo)*float32(seed>>8)/float32(1<<24)
	}
	return out
}

// inProcess runs the same request through a session created here, with the
// agent's default settings (CPU, one intra-op thread).
func inProcess(t *testing.T, model []byte, req *models.InferRequest) []tensor.Tensor {
	t.Helper()
	s, err := runtime.NewSession(model, runtime.Config{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	res, err := s.Run(req.Inputs, req.Outputs)
	if err != nil {
		t.Fatal(err)
	}
	return res.Outputs
}

func sameTensors(t *testing.T, what string, got, want []tensor.Tensor) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d outputs, want %d", what, len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Name != w.Name || g.DType != w.DType || !slices.Equal(g.Shape, w.Shape) {
			t.Fatalf("%s: output %d is %s %v %v, want %s %v %v", what, i, g.Name, g.DType, g.Shape, w.Name, w.DType, w.Shape)
		}
		if !bytes.Equal(g.Data, w.Data) {
			t.Fatalf("%s: output %q differs from in-process onnxruntime", what, w.Name)
		}
	}
}

func sileroRequest(seed uint32) *models.InferRequest {
	sr := tensor.Tensor{Name: "sr", DType: tensor.Int64, Shape: []int64{}, Data: binary.LittleEndian.AppendUint64(nil, 16000)}
	return &models.InferRequest{ID: fmt.Sprint("silero-", seed), Inputs: []tensor.Tensor{
		f32Tensor("input", []int64{1, 512}, lcg(512, seed, -0.5, 0.5)),
		sr,
		f32Tensor("state", []int64{2, 1, 128}, lcg(256, seed+1, -0.1, 0.1)),
	}}
}

func TestSampleModelsMatchInProcess(t *testing.T) {
	silero := testenv.Model(t, "silero_vad_op18_ifless.onnx")
	rec := testenv.Model(t, "ch_PP-OCRv4_rec_infer.onnx")
	det := testenv.Model(t, "ch_PP-OCRv4_det_infer.onnx")
	r := startAgent(t, config.Config{}, map[string][]byte{"silero": silero, "ocr-rec": rec, "ocr-det": det})
	ctx := context.Background()
	cases := []struct {
		model string
		bytes []byte
		req   *models.InferRequest
	}{
		{"silero", silero, sileroRequest(1)},
		{"ocr-rec", rec, &models.InferRequest{ID: "rec", Inputs: []tensor.Tensor{
			f32Tensor("x", []int64{1, 3, 48, 320}, lcg(3*48*320, 7, -1, 1))}}},
		{"ocr-det", det, &models.InferRequest{ID: "det", Inputs: []tensor.Tensor{
			f32Tensor("x", []int64{1, 3, 64, 96}, lcg(3*64*96, 9, -1, 1))}}},
	}
	for _, tc := range cases {
		want := inProcess(t, tc.bytes, tc.req)
		for _, proto := range protocols {
			t.Run(tc.model+"/"+proto, func(t *testing.T) {
				got, err := r.infer(ctx, proto, tc.model, "", tc.req)
				if err != nil {
					t.Fatal(err)
				}
				if got.ID != tc.req.ID || got.ModelName != tc.model || got.ModelVersion != "1" {
					t.Errorf("id/model/version = %q/%q/%q", got.ID, got.ModelName, got.ModelVersion)
				}
				sameTensors(t, proto, got.Outputs, want)
			})
		}
	}
	// Output subset: only Silero's state.
	req := sileroRequest(3)
	req.Outputs = []string{"stateN"}
	want := inProcess(t, silero, req)
	for _, proto := range protocols {
		got, err := r.infer(ctx, proto, "silero", "1", req)
		if err != nil {
			t.Fatalf("%s: %v", proto, err)
		}
		sameTensors(t, proto+" subset", got.Outputs, want)
	}
}

func TestBadRequestsGetClientErrorsAndAgentKeepsServing(t *testing.T) {
	silero := testenv.Model(t, "silero_vad_op18_ifless.onnx")
	r := startAgent(t, config.Config{MaxBodyBytes: 1 << 20}, map[string][]byte{"silero": silero})
	ctx := context.Background()
	wrongDType := sileroRequest(1)
	wrongDType.Inputs[1] = tensor.Tensor{Name: "sr", DType: tensor.Int32, Shape: []int64{}, Data: make([]byte, 4)}
	missing := sileroRequest(1)
	missing.Inputs = missing.Inputs[:2]
	extra := sileroRequest(1)
	extra.Inputs = append(extra.Inputs, f32Tensor("bogus", []int64{1}, []float32{1}))
	wrongShape := sileroRequest(1)
	wrongShape.Inputs[2] = f32Tensor("state", []int64{2, 2, 64}, make([]float32, 256))
	tooShort := sileroRequest(1)
	tooShort.Inputs[0] = f32Tensor("input", []int64{1, 4}, []float32{1, 2, 3, 4})
	huge := sileroRequest(1)
	huge.Inputs[0] = f32Tensor("input", []int64{1, 512 * 1024}, make([]float32, 512*1024))
	badOut := sileroRequest(1)
	badOut.Outputs = []string{"nope"}
	cases := []struct {
		name, model, version string
		req                  *models.InferRequest
		http                 int
		grpc                 codes.Code
	}{
		{"wrong dtype", "silero", "", wrongDType, 400, codes.InvalidArgument},
		{"missing input", "silero", "", missing, 400, codes.InvalidArgument},
		{"extra input", "silero", "", extra, 400, codes.InvalidArgument},
		{"wrong shape", "silero", "", wrongShape, 400, codes.InvalidArgument},
		{"shape the graph rejects", "silero", "", tooShort, 400, codes.InvalidArgument},
		{"unknown output", "silero", "", badOut, 400, codes.InvalidArgument},
		{"unknown model", "nope", "", sileroRequest(1), 404, codes.NotFound},
		{"unknown version", "silero", "9", sileroRequest(1), 404, codes.NotFound},
		{"oversized", "silero", "", huge, 413, codes.ResourceExhausted},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, proto := range protocols {
				_, err := r.infer(ctx, proto, tc.model, tc.version, tc.req)
				var se *v2client.StatusError
				switch {
				case strings.HasPrefix(proto, "rest"):
					if !errors.As(err, &se) || se.Code != tc.http || se.Message == "" {
						t.Errorf("%s: err = %v, want HTTP %d with a message", proto, err, tc.http)
					}
				default:
					if st, _ := status.FromError(err); st.Code() != tc.grpc || st.Message() == "" {
						t.Errorf("%s: err = %v, want %v with a message", proto, err, tc.grpc)
					}
				}
			}
		})
	}
	// Malformed JSON straight over HTTP.
	for _, body := range []string{`{`, `{"inputs":[{"name":"input","datatype":"FP32","shape":[1,2],"data":[1]}]}`, `[]`, `{"inputs":5}`} {
		resp, err := http.Post(r.rest.InferURL("silero", ""), "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !bytes.Contains(b, []byte(`"error"`)) {
			t.Errorf("body %q: %d %s", body, resp.StatusCode, b)
		}
	}
	// Still serving, on every protocol.
	for _, proto := range protocols {
		if _, err := r.infer(ctx, proto, "silero", "", sileroRequest(2)); err != nil {
			t.Errorf("%s after bad requests: %v", proto, err)
		}
	}
}

func TestHealthMetadataMetricsAndUnixSocket(t *testing.T) {
	r := startAgent(t, config.Config{Defaults: models.Settings{Providers: []string{"cuda", "cpu"}}},
		map[string][]byte{"silero": testenv.Model(t, "silero_vad_op18_ifless.onnx")})
	base := r.rest.Base
	for path, want := range map[string]int{
		"/v2/health/live": 200, "/v2/health/ready": 200, "/v2": 200, "/v2/models/silero": 200,
		"/v2/models/silero/versions/1": 200, "/v2/models/silero/ready": 200, "/v2/models/silero/versions/1/ready": 200,
		"/v2/models/nope": 404, "/v2/models/silero/versions/2/ready": 404,
	} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s = %d, want %d", path, resp.StatusCode, want)
		}
	}
	// The CUDA request fell back to CPU: metadata says so.
	resp, err := http.Get(base + "/v2/models/silero")
	if err != nil {
		t.Fatal(err)
	}
	md, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`"execution_provider":"cpu"`, `"requested_execution_provider":"cuda"`, `"fallback_reason":`} {
		if !bytes.Contains(md, []byte(want)) {
			t.Errorf("metadata lacks %s: %s", want, md)
		}
	}
	if _, err := r.infer(context.Background(), "grpc-raw", "silero", "", sileroRequest(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.infer(context.Background(), "rest-json", "silero", "", sileroRequest(1)); err != nil {
		t.Fatal(err)
	}
	resp, err = http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`edgefleet_agent_requests_total{model="silero",outcome="success",protocol="grpc",version="1"} 1`,
		`edgefleet_agent_requests_total{model="silero",outcome="success",protocol="rest",version="1"} 1`,
		`edgefleet_agent_model_execution_provider{model="silero",provider="cpu",requested="cuda",version="1"} 1`,
		`edgefleet_agent_compute_duration_seconds_count{model="silero",provider="cpu",version="1"} 2`,
		`edgefleet_agent_queue_duration_seconds_count{model="silero",version="1"} 2`,
		`edgefleet_agent_provider_fallbacks_total{from="cuda",model="silero",to="cpu",version="1"} 1`,
		`edgefleet_agent_model_load_duration_seconds_count{model="silero",provider="cpu",version="1"} 1`,
		`edgefleet_agent_cache_bytes 2.845718e+06`,
	} {
		if !bytes.Contains(m, []byte(want)) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// The unix socket serves the same API.
	uc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", r.unix)
	}}}
	resp, err = uc.Get("http://agent/v2/health/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("unix socket ready = %d", resp.StatusCode)
	}
}

func TestShutdownDrainsInFlight(t *testing.T) {
	det := testenv.Model(t, "ch_PP-OCRv4_det_infer.onnx")
	r := startAgent(t, config.Config{}, map[string][]byte{"ocr-det": det})
	// A large detection input keeps the request in flight for a while.
	req := &models.InferRequest{Inputs: []tensor.Tensor{f32Tensor("x", []int64{1, 3, 640, 640}, lcg(3*640*640, 3, -1, 1))}}
	errc := make(chan error, 1)
	go func() {
		_, err := r.infer(context.Background(), "rest-binary", "ocr-det", "", req)
		errc <- err
	}()
	// Wait until the request is running, then stop the agent.
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(r.rest.Base + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if bytes.Contains(b, []byte(`edgefleet_agent_inflight_requests{model="ocr-det",version="1"} 1`)) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("request never went in flight")
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.cancel()
	if err := <-errc; err != nil {
		t.Fatalf("in-flight request failed during drain: %v", err)
	}
	if err := <-r.done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	close(r.done)
	if _, err := http.Get(r.rest.Base + "/v2/health/live"); err == nil {
		t.Error("agent still accepting connections after drain")
	}
	if _, err := os.Stat(r.unix); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("unix socket left behind: %v", err)
	}
}
