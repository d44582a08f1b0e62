package rollout_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/edgefleet/edgefleet/deploy/testenv"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/hil-tests/fleetsim"
	"github.com/edgefleet/edgefleet/hub"
	"github.com/edgefleet/edgefleet/hub/enroll"
	"github.com/edgefleet/edgefleet/hub/rollout"
	"github.com/edgefleet/edgefleet/ota"
	"github.com/edgefleet/edgefleet/ota/artifact"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// These tests run the real hub in-process with simulated devices that
// speak the real protocol over loopback MQTT (hil-tests/fleetsim); the hub
// itself never imports the agent. Bake times run on a fake clock.

// clock is a fake clock the tests move by hand.
type clock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// testHub is a hub running in the background; restart keeps its data and
// addresses.
type testHub struct {
	*hub.Hub
	t     *testing.T
	dir   string
	clock *clock
	opts  hub.Options
	stop  func()
}

func startHub(t *testing.T) *testHub {
	t.Helper()
	th := &testHub{t: t, dir: t.TempDir(), clock: newClock()}
	th.opts = hub.Options{DataDir: th.dir, APIAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0", RegistryAddr: "127.0.0.1:0",
		RolloutClock: th.clock.Now, RolloutTick: 20 * time.Millisecond}
	th.start()
	// Restarts reuse the addresses: agents and refs name them.
	th.opts.APIAddr = hostPort(th.APIURL())
	th.opts.MQTTAddr = hostPort(th.MQTTURL())
	th.opts.RegistryAddr = th.RegistryAddr()
	t.Cleanup(func() { th.stop() })
	return th
}

func hostPort(u string) string {
	_, rest, _ := strings.Cut(u, "://")
	return rest
}

func (th *testHub) start() {
	t := th.t
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var (
		h   *hub.Hub
		err error
	)
	// A restarted hub may find its old port briefly taken.
	deadline := time.Now().Add(10 * time.Second)
	for {
		h, err = hub.New(ctx, th.opts)
		if err == nil || time.Now().After(deadline) {
			break
		}
		var opErr *net.OpError
		if !errors.As(err, &opErr) {
			break
		}
		time.Sleep(50 * time.Millisecond)
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

// restart stops the hub and starts it again on the same data folder.
func (th *testHub) restart() {
	th.stop()
	th.start()
}

// push publishes a tiny artifact of model version v to the hub's registry
// and returns its tag reference and manifest digest. The simulated devices
// never download it; the hub resolves it when a rollout is created.
func (th *testHub) push(t *testing.T, model, v string) (ref, digest string) {
	t.Helper()
	spec := []artifact.TensorSpec{{Name: "x", Datatype: "FP32", Shape: []int64{-1, 4}}}
	cfg := artifact.Config{SchemaVersion: artifact.ConfigSchemaVersion, Name: model, Version: v,
		Inputs: spec, Outputs: spec, Precision: artifact.PrecisionFP32}
	ref = th.RegistryAddr() + "/models/" + model + ":" + v
	d, err := ota.Push(context.Background(), ref, ota.Artifact{Config: cfg, Model: ota.BytesFile(model+".onnx", []byte("model "+model+" v"+v))})
	if err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref, d.DigestStr()
}

// fleet starts n simulated devices; labels gives device i its labels.
func (th *testHub) fleet(t *testing.T, n int, opts fleetsim.Options) *fleetsim.Fleet {
	t.Helper()
	opts.HubURL = th.APIURL()
	opts.Count = n
	opts.Token = func(ctx context.Context, id string) (string, error) {
		tok, _, err := th.CreateToken(ctx, enroll.TokenOptions{DeviceID: id})
		return tok, err
	}
	if opts.HeartbeatInterval == 0 {
		opts.HeartbeatInterval = time.Second
	}
	if opts.ReportInterval == 0 {
		opts.ReportInterval = 50 * time.Millisecond
	}
	opts.MinBackoff, opts.MaxBackoff = 20*time.Millisecond, 200*time.Millisecond
	f, err := fleetsim.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.Enroll(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
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

// waitState waits for a rollout to reach state and returns its status.
func (th *testHub) waitState(t *testing.T, id, state string) rollout.Status {
	t.Helper()
	var st rollout.Status
	testenv.Eventually(t, "rollout "+id+" "+state, 20*time.Second, func() bool {
		st = th.status(t, id)
		if rollout.Final(st.State) && st.State != state {
			t.Fatalf("rollout %s ended %s (%s), want %s", id, st.State, st.Reason, state)
		}
		return st.State == state
	})
	return st
}

// bakeWave waits until wave w has settled, checks that it is not promoted
// before its bake time, and moves the clock past it.
func (th *testHub) bakeWave(t *testing.T, id string, w int, bake time.Duration) {
	t.Helper()
	testenv.Eventually(t, fmt.Sprintf("wave %d of %s settled", w, id), 20*time.Second, func() bool {
		st := th.status(t, id)
		if st.State != rollout.StateRunning {
			t.Fatalf("rollout %s is %s (%s) in wave %d", id, st.State, st.Reason, w)
		}
		return st.Wave == w && !st.Settled.IsZero()
	})
	th.clock.Advance(bake / 2)
	time.Sleep(50 * time.Millisecond) // a few manager ticks (20 ms): nothing may move
	if st := th.status(t, id); st.Wave != w {
		t.Fatalf("wave %d promoted after half its bake time", w)
	}
	th.clock.Advance(bake/2 + time.Second)
}

// active returns the version of model each device reports active.
func active(f *fleetsim.Fleet, model string) map[string]string {
	out := map[string]string{}
	for _, d := range f.Devices() {
		_, _, ms := d.State()
		out[d.ID] = ms[model].ActiveVersion
	}
	return out
}

// create starts a rollout and returns its id.
func (th *testHub) create(t *testing.T, spec rollout.Spec) string {
	t.Helper()
	st, err := th.Rollouts().Create(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	return st.ID
}

// baseline rolls version v out to every device in one wave without bake
// and waits for it to complete.
func (th *testHub) baseline(t *testing.T, model, v string) (ref, digest string) {
	t.Helper()
	ref, digest = th.push(t, model, v)
	id := th.create(t, rollout.Spec{Model: model, Ref: ref, Waves: []float64{100}, Bake: -1})
	th.waitState(t, id, rollout.StateCompleted)
	return ref, digest
}

// desired returns a device's desired model.
func (th *testHub) desired(t *testing.T, id, model string) (wire.DesiredModel, int64) {
	t.Helper()
	ds, err := th.Registry().Desired(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return ds.Models[model], ds.Revision
}
