package update_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/agent/internal/testenv"
	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/tensor"
	"github.com/edgefleet/edgefleet/agent/update"
	"github.com/edgefleet/edgefleet/hil-tests/v2client"
	"github.com/edgefleet/edgefleet/ota"
	"github.com/edgefleet/edgefleet/ota/artifact"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	os.Exit(m.Run())
}

// fixture returns a model from agent/testdata/update.
func fixture(t testing.TB, name string) []byte {
	t.Helper()
	return testenv.Fixture(t, "update/"+name)
}

// padModel appends an unknown length-delimited field (number 1000) of n
// bytes to a serialized ONNX ModelProto; protobuf readers skip it. It makes
// models big enough for interrupted downloads.
func padModel(model []byte, n int) []byte {
	out := append([]byte{}, model...)
	out = appendVarint(out, 1000<<3|2)
	out = appendVarint(out, uint64(n))
	for i := range n {
		out = append(out, byte(i*31+7))
	}
	return out
}

func appendVarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// registryServer is go-containerregistry's registry with blobs on disk,
// behind a handler that injects faults into blob downloads.
type registryServer struct {
	host string

	mu         sync.Mutex // guards the fields below
	cutAfter   int64      // cut the first blob download longer than this; <0 never
	delay      time.Duration
	ranges     []string
	blobBytes  int64 // blob body bytes sent
	unavailble int   // answer this many blob GETs with 503
}

func startRegistry(t testing.TB) *registryServer {
	t.Helper()
	reg := registry.New(registry.WithBlobHandler(registry.NewDiskBlobHandler(t.TempDir())),
		registry.Logger(log.New(io.Discard, "", 0)))
	rs := &registryServer{cutAfter: -1}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			rs.serveBlob(w, r, reg)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	rs.host = strings.TrimPrefix(srv.URL, "http://")
	return rs
}

func (rs *registryServer) serveBlob(w http.ResponseWriter, r *http.Request, reg http.Handler) {
	rs.mu.Lock()
	if rg := r.Header.Get("Range"); rg != "" {
		rs.ranges = append(rs.ranges, rg)
	}
	if rs.unavailble > 0 {
		rs.unavailble--
		rs.mu.Unlock()
		http.Error(w, "injected outage", http.StatusServiceUnavailable)
		return
	}
	cut, delay := rs.cutAfter, rs.delay
	rs.mu.Unlock()
	fw := &faultWriter{ResponseWriter: w, rs: rs, cut: cut, delay: delay}
	reg.ServeHTTP(fw, r)
}

// faultWriter passes a blob body through in small writes, counting bytes,
// sleeping between writes and cutting the connection after cut bytes.
type faultWriter struct {
	http.ResponseWriter
	rs    *registryServer
	cut   int64
	sent  int64
	delay time.Duration
}

func (f *faultWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), 16<<10)
		if f.cut >= 0 && f.sent+int64(k) > f.cut {
			k = int(f.cut - f.sent)
		}
		m, err := f.ResponseWriter.Write(p[:k])
		n += m
		f.sent += int64(m)
		f.rs.mu.Lock()
		f.rs.blobBytes += int64(m)
		f.rs.mu.Unlock()
		if err != nil {
			return n, err
		}
		p = p[k:]
		if f.cut >= 0 && f.sent >= f.cut {
			f.rs.set(func(rs *registryServer) { rs.cutAfter = -1 }) // once
			if fl, ok := f.ResponseWriter.(http.Flusher); ok {
				fl.Flush()
			}
			panic(http.ErrAbortHandler) // drops the connection mid-body
		}
		if f.delay > 0 {
			time.Sleep(f.delay)
		}
	}
	return n, nil
}

func (rs *registryServer) stats() (ranges []string, blobBytes int64) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return append([]string(nil), rs.ranges...), rs.blobBytes
}

func (rs *registryServer) set(f func(rs *registryServer)) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	f(rs)
}

// push publishes model as name:version with a config (and golden vector)
// computed by update.Describe, which edit may change, and returns the
// digest reference.
func push(t testing.TB, rs *registryServer, name, version string, model []byte, edit func(*artifact.Config)) string {
	t.Helper()
	return pushTag(t, rs, name, version, version, model, edit)
}

// pushTag is push under a tag other than the version.
func pushTag(t testing.TB, rs *registryServer, name, tag, version string, model []byte, edit func(*artifact.Config)) string {
	t.Helper()
	testenv.InitORT(t)
	cfg, err := update.Describe(model, update.DescribeOptions{Name: name, Version: version, Seed: 7})
	if err != nil {
		t.Fatalf("describe %s:%s: %v", name, version, err)
	}
	if edit != nil {
		edit(cfg)
	}
	d, err := ota.Push(context.Background(), rs.host+"/models/"+name+":"+tag,
		ota.Artifact{Config: *cfg, Model: ota.BytesFile(name+".onnx", model)})
	if err != nil {
		t.Fatalf("push %s:%s: %v", name, version, err)
	}
	return d.String()
}

// logBuffer collects an agent's log and prints it when the test fails.
type logBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// running is an agent serving REST on loopback.
type running struct {
	a    *agent.Agent
	u    *update.Updater
	rest *v2client.REST
	api  *update.Client
	stop func()
}

// startAgent runs a real agent on dir. The post-activation watch is off
// unless edit turns it on.
func startAgent(t testing.TB, dir string, edit func(*config.Config)) *running {
	t.Helper()
	testenv.InitORT(t)
	cfg := config.Config{Data: dir, HTTP: "127.0.0.1:0", GRPC: "off"}
	cfg.Update.Watch.Window = -1
	if edit != nil {
		edit(&cfg)
	}
	logs := &logBuffer{}
	a, err := agent.New(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select {
	case <-a.Ready():
	case err := <-done:
		t.Fatalf("agent stopped: %v\n%s", err, logs)
	case <-time.After(30 * time.Second):
		t.Fatal("agent not ready after 30s")
	}
	base := "http://" + a.Addr("http").String()
	r := &running{a: a, u: a.Updater(), rest: v2client.NewREST(base, nil), api: update.NewClient(base, nil)}
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent: %v", err)
			}
		})
	}
	t.Cleanup(func() {
		r.stop()
		if t.Failed() {
			t.Logf("agent log:\n%s", logs)
		}
	})
	return r
}

// infer sends x (one row of 4 floats) to the model's default version and
// returns y and the version that answered.
func (r *running) infer(ctx context.Context, model string, x [4]float32) ([]float32, string, error) {
	data := make([]byte, 16)
	for i, v := range x {
		binary.LittleEndian.PutUint32(data[i*4:], math.Float32bits(v))
	}
	resp, err := r.rest.Infer(ctx, model, "", &models.InferRequest{
		Inputs: []tensor.Tensor{{Name: "x", DType: tensor.FP32, Shape: []int64{1, 4}, Data: data}}}, true)
	if err != nil {
		return nil, "", err
	}
	if len(resp.Outputs) != 1 || len(resp.Outputs[0].Data) != 16 {
		return nil, resp.ModelVersion, fmt.Errorf("unexpected outputs %+v", resp.Outputs)
	}
	y := make([]float32, 4)
	for i := range y {
		y[i] = math.Float32frombits(binary.LittleEndian.Uint32(resp.Outputs[0].Data[i*4:]))
	}
	return y, resp.ModelVersion, nil
}

// scaleOf returns the factor the served model multiplies by and its version.
func (r *running) scaleOf(t testing.TB, model string) (float32, string) {
	t.Helper()
	y, ver, err := r.infer(context.Background(), model, [4]float32{1, 2, 3, 4})
	if err != nil {
		t.Fatalf("infer %s: %v", model, err)
	}
	for i, v := range y {
		if v != y[0]*float32(i+1) {
			t.Fatalf("infer %s: y = %v is not a multiple of x", model, y)
		}
	}
	return y[0], ver
}

// status returns a model's update status.
func (r *running) status(t testing.TB, model string) *update.Status {
	t.Helper()
	s, err := r.u.Status(model)
	if err != nil {
		t.Fatalf("status %s: %v", model, err)
	}
	return s
}

// fastRetry makes retried downloads quick in tests.
var fastRetry = ota.WithRetry(ota.Retry{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond})

func mustUpdate(t testing.TB, r *running, model, ref string, o update.UpdateOptions) *update.Result {
	t.Helper()
	o.Registry = append(o.Registry, fastRetry)
	res, err := r.u.Update(context.Background(), model, ref, o)
	if err != nil {
		t.Fatalf("update %s to %s: %v", model, ref, err)
	}
	return res
}
