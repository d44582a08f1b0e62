package fleetapply_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/csv"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/agent/fleetapply"
	"github.com/edgefleet/edgefleet/agent/internal/testenv"
	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/tensor"
	"github.com/edgefleet/edgefleet/agent/update"
	"github.com/edgefleet/edgefleet/hil-tests/v2client"
	"github.com/edgefleet/edgefleet/hub"
	"github.com/edgefleet/edgefleet/hub/enroll"
	"github.com/edgefleet/edgefleet/hub/registry"
	"github.com/edgefleet/edgefleet/hub/rollout"
	"github.com/edgefleet/edgefleet/ota"
)

// These tests run a real hub (embedded broker and OCI registry) and real
// agents (onnxruntime, bbolt cache, REST front end, fleet client) in this
// process, each agent with its own data folder, all over loopback.

// logBuffer collects logs, printed when a test fails.
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

func logger(w *logBuffer, component string) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo})).With("c", component)
}

// testHub is an in-process hub; restart keeps its data and addresses.
type testHub struct {
	*hub.Hub
	t    *testing.T
	opts hub.Options
	logs *logBuffer
	stop func()
}

func startHub(t *testing.T, logs *logBuffer) *testHub {
	t.Helper()
	th := &testHub{t: t, logs: logs, opts: hub.Options{DataDir: t.TempDir(), APIAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0",
		RegistryAddr: "127.0.0.1:0", RolloutTick: 50 * time.Millisecond, Logger: logger(logs, "hub")}}
	th.start()
	th.opts.APIAddr = strings.TrimPrefix(th.APIURL(), "https://")
	th.opts.MQTTAddr = strings.TrimPrefix(th.MQTTURL(), "mqtts://")
	th.opts.RegistryAddr = th.RegistryAddr()
	t.Cleanup(func() { th.stop() })
	return th
}

func (th *testHub) start() {
	t := th.t
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var (
		h   *hub.Hub
		err error
	)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		h, err = hub.New(ctx, th.opts)
		var opErr *net.OpError
		if err == nil || !errors.As(err, &opErr) || time.Now().After(deadline) {
			break // a restarted hub may find its ports briefly taken
		}
	}
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	var once sync.Once
	th.Hub = h
	th.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("hub Run: %v", err)
			}
		})
	}
}

func (th *testHub) restart() {
	th.stop()
	th.start()
}

// push publishes model bytes as digits-cnn version v with a golden vector
// computed from golden (nil: from model itself) on goldenInputs (nil:
// generated), and returns the tag reference.
func (th *testHub) push(t *testing.T, v string, model, golden []byte, goldenInputs []tensor.Tensor) string {
	t.Helper()
	testenv.InitORT(t)
	if golden == nil {
		golden = model
	}
	cfg, err := update.Describe(golden, update.DescribeOptions{Name: modelName, Version: v, Seed: 7, Inputs: goldenInputs})
	if err != nil {
		t.Fatalf("describe version %s: %v", v, err)
	}
	ref := th.RegistryAddr() + "/models/" + modelName + ":" + v
	if _, err := ota.Push(context.Background(), ref, ota.Artifact{Config: *cfg, Model: ota.BytesFile(modelName+".onnx", model)}); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref
}

// status returns a rollout's status with its devices.
func (th *testHub) status(t *testing.T, id string) rollout.Status {
	t.Helper()
	st, err := th.Rollouts().Get(context.Background(), id, true)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// rollout creates a rollout and waits until it reaches a final state.
func (th *testHub) rollout(t *testing.T, spec rollout.Spec, want string) rollout.Status {
	t.Helper()
	spec.Model = modelName
	st, err := th.Rollouts().Create(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	return th.waitFinal(t, st.ID, want)
}

func (th *testHub) waitFinal(t *testing.T, id, want string) rollout.Status {
	t.Helper()
	var st rollout.Status
	testenv.Eventually(t, "rollout "+id+" "+want, 60*time.Second, func() bool {
		st = th.status(t, id)
		return rollout.Final(st.State)
	})
	if st.State != want {
		t.Fatalf("rollout %s ended %s (%s), want %s\ngates %+v\ndevices %+v", id, st.State, st.Reason, want, st.Gates, st.Devices)
	}
	return st
}

const modelName = "digits-cnn"

// edge is a real agent with its fleet client.
type edge struct {
	id   string
	dir  string
	a    *agent.Agent
	rest *v2client.REST
	stop func()
}

// startEdge runs an agent on dir enrolled to th (token only the first
// time) until owner's cleanup. The agent's own post-activation watch is
// off: the hub's gates are under test.
func startEdge(t *testing.T, owner testing.TB, th *testHub, id, dir string, logs *logBuffer) *edge {
	t.Helper()
	testenv.InitORT(t)
	// A restarted agent has its identity and ignores the token.
	tok, _, err := th.CreateToken(context.Background(), enroll.TokenOptions{DeviceID: id})
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Config{Data: dir, HTTP: "127.0.0.1:0", GRPC: "off", Hub: config.Hub{URL: th.APIURL(), Token: tok, DeviceID: id,
		Labels: map[string]string{"site": "berlin"}, HeartbeatInterval: time.Second, ReportInterval: 100 * time.Millisecond}}
	cfg.Update.Watch.Window = -1
	a, err := agent.New(cfg, logger(logs, id))
	if err != nil {
		t.Fatal(err)
	}
	c, err := fleetapply.Client(cfg, a, logger(logs, id+"/fleet"))
	if err != nil || c == nil {
		t.Fatalf("fleet client: %v, %v", c, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fleetapply.Run(ctx, a, c) }()
	select {
	case <-a.Ready():
	case err := <-done:
		t.Fatalf("agent %s stopped: %v", id, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("agent %s not ready", id)
	}
	e := &edge{id: id, dir: dir, a: a, rest: v2client.NewREST("http://"+a.Addr("http").String(), nil)}
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent %s: %v", id, err)
			}
		})
	}
	owner.Cleanup(e.stop)
	return e
}

// active returns the version the agent activated and its manifest digest.
func (e *edge) active(t *testing.T) (string, string) {
	t.Helper()
	st, err := e.a.Updater().Status(modelName)
	if err != nil {
		return "", ""
	}
	_, d, _ := strings.Cut(st.ActiveRef, "@")
	return st.Active, d
}

// digits is the held-out test set, scaled as the model wants.
type digits struct {
	labels []int
	pixels [][]float32
}

func loadDigits(t *testing.T) digits {
	t.Helper()
	rows, err := csv.NewReader(bytes.NewReader(testenv.Fixture(t, "digits/test.csv"))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var d digits
	for _, r := range rows[1:] {
		lbl, _ := strconv.Atoi(r[0])
		px := make([]float32, 64)
		for i := range px {
			v, _ := strconv.ParseFloat(r[i+1], 32)
			px[i] = float32(v) / 16
		}
		d.labels = append(d.labels, lbl)
		d.pixels = append(d.pixels, px)
	}
	return d
}

// request builds a batch of n rows starting at row i.
func (d digits) request(i, n int) *models.InferRequest {
	data := make([]byte, 0, n*64*4)
	for r := range n {
		for _, v := range d.pixels[(i+r)%len(d.pixels)] {
			data = binary.LittleEndian.AppendUint32(data, math.Float32bits(v))
		}
	}
	return &models.InferRequest{Inputs: []tensor.Tensor{{Name: "input", DType: tensor.FP32, Shape: []int64{int64(n), 1, 8, 8}, Data: data}}}
}

// predict returns the digit the agent's default version predicts for row i
// and the version that answered.
func (e *edge) predict(ctx context.Context, d digits, i int) (int, string, error) {
	resp, err := e.rest.Infer(ctx, modelName, "", d.request(i, 1), true)
	if err != nil {
		return 0, "", err
	}
	if len(resp.Outputs) != 1 || len(resp.Outputs[0].Data) != 40 {
		return 0, resp.ModelVersion, fmt.Errorf("unexpected outputs %+v", resp.Outputs)
	}
	best, arg := float32(math.Inf(-1)), -1
	for k := range 10 {
		v := math.Float32frombits(binary.LittleEndian.Uint32(resp.Outputs[0].Data[4*k:]))
		if v > best || arg < 0 {
			best, arg = v, k
		}
	}
	return arg, resp.ModelVersion, nil
}

// servesNot fails the test if the edge serves version v of the model
// in any way: ready over HTTP, inference by version, or loaded at all; and
// unless its updater recorded digest as rejected.
func (e *edge) servesNot(t *testing.T, d digits, v, digest string) {
	t.Helper()
	resp, err := e.rest.HTTP.Get(strings.TrimSuffix(e.rest.InferURL(modelName, v), "/infer") + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("%s: GET versions/%s/ready answered %d, want 404", e.id, v, resp.StatusCode)
	}
	if _, err := e.rest.Infer(context.Background(), modelName, v, d.request(0, 1), true); err == nil {
		t.Errorf("%s served an inference by version %s", e.id, v)
	}
	if ok, _ := e.a.Models().ModelReady(modelName, v); ok {
		t.Errorf("%s has version %s loaded", e.id, v)
	}
	st, err := e.a.Updater().Status(modelName)
	if err != nil || st.Rejected[digest] == "" {
		t.Errorf("%s: digest %s of version %s not recorded as rejected (%v): %+v", e.id, digest, v, err, st)
	}
	if st != nil && st.Previous == v {
		t.Errorf("%s keeps version %s as its rollback target", e.id, v)
	}
}

// traffic sends the test set to every edge in a loop, in batches of
// trafficBatch rows every trafficEvery, until stop is called; served counts
// answered requests. Batches make the model's compute, not the machine's
// scheduling noise, dominate the latency the p99 gate compares.
type traffic struct {
	served atomic.Int64
	stop   func()
}

const (
	trafficBatch = 64
	trafficEvery = 10 * time.Millisecond
)

func startTraffic(edges []*edge, d digits) *traffic {
	tr := &traffic{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, e := range edges {
		wg.Go(func() {
			tick := time.NewTicker(trafficEvery)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				if _, err := e.rest.Infer(ctx, modelName, "", d.request(i*trafficBatch, trafficBatch), true); err == nil {
					tr.served.Add(1)
				}
			}
		})
	}
	tr.stop = func() { cancel(); wg.Wait() }
	return tr
}

// padModel appends an unknown field to a serialized ONNX model (readers
// skip it), making different bytes of the same network: a new version.
func padModel(model []byte, tag byte) []byte {
	out := append([]byte{}, model...)
	// field 1000, wire type 2 (length-delimited), 8 bytes
	out = append(out, 0xc2, 0x3e, 8)
	return append(out, bytes.Repeat([]byte{tag}, 8)...)
}

// goldenInput is a generated golden input with its top-left pixel set to
// 0.5 (the NaN fixture is finite there).
func goldenInput() []tensor.Tensor {
	in := []tensor.Tensor{{Name: "input", DType: tensor.FP32, Shape: []int64{1, 1, 8, 8}, Data: make([]byte, 64*4)}}
	for k := range 64 {
		v := float32((k*5)%8) / 8
		if k == 0 {
			v = 0.5
		}
		binary.LittleEndian.PutUint32(in[0].Data[4*k:], math.Float32bits(v))
	}
	return in
}

func mustSelector(t *testing.T, s string) registry.Selector {
	t.Helper()
	sel, err := registry.ParseSelector(s)
	if err != nil {
		t.Fatal(err)
	}
	return sel
}
