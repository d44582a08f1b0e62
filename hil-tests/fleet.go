package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/edgefleet/edgefleet/agent/update"
	"github.com/edgefleet/edgefleet/hil-tests/netns"
	"github.com/edgefleet/edgefleet/hil-tests/powerfs"
	"github.com/edgefleet/edgefleet/hub/api"
	"github.com/edgefleet/edgefleet/hub/rollout"
	"github.com/edgefleet/edgefleet/ota"
)

// Ports of the hub's services inside its namespace.
const (
	apiPort      = 7443
	mqttPort     = 8883
	registryPort = 5000
	agentHTTP    = "127.0.0.1:8080"
	modelName    = "digits-cnn"
)

// Fleet is a hub and N devices, each in its own network namespace.
type Fleet struct {
	cfg    Config
	log    *slog.Logger
	net    *netns.Net
	hub    *netns.Host
	hubCmd *exec.Cmd
	hubDir string
	api    *api.Client
	fwd    io.Closer
	devs   []*Device
	reg    string // registry host:port
	mech   netns.Mechanisms
	seq    int // artifact versions pushed
	limits string
}

// Device is one agent process in its namespace, its data folder on a
// power-cut file system.
type Device struct {
	f     *Fleet
	ID    string
	Host  *netns.Host
	FS    *powerfs.FS
	mnt   *powerfs.Mount
	Dir   string // mount point (the agent's data folder)
	conf  string // agent YAML
	cmd   *exec.Cmd
	done  chan error
	logf  *os.File
	http  *http.Client
	Link  netns.Link
	Relay *netns.Relay
	tel   string      // telemetry line of the config, when changed
	up    atomic.Bool // started and answering; traffic counts failures only then
}

// hubIP is the hub's address.
func (f *Fleet) hubIP() string { return f.hub.IP }

// StartFleet builds the network, starts the hub and n devices, and
// enrolls them.
func StartFleet(ctx context.Context, cfg Config, log *slog.Logger) (*Fleet, error) {
	n, err := netns.New(ctx, cfg.Prefix, cfg.Subnet)
	if err != nil {
		return nil, err
	}
	f := &Fleet{cfg: cfg, log: log, net: n, mech: netns.CurrentMechanisms(ctx)}
	if f.hub, err = n.AddHost(ctx, "hub", 1); err != nil {
		f.Close()
		return nil, err
	}
	f.reg = fmt.Sprintf("%s:%d", f.hub.IP, registryPort)
	if err := f.startHub(ctx); err != nil {
		f.Close()
		return nil, err
	}
	for i := range cfg.Devices {
		if _, err := f.AddDevice(ctx, fmt.Sprintf("d%d", i+1), 10+i); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

func (f *Fleet) startHub(ctx context.Context) error {
	f.hubDir = filepath.Join(f.cfg.Work, "hub")
	if err := os.MkdirAll(f.hubDir, 0o700); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(f.cfg.Work, "hub.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	ip := f.hub.IP
	cmd := f.hub.Command(context.WithoutCancel(ctx), f.cfg.Bin, "hub", "--data", f.hubDir, "--log-level", "info",
		"--api", fmt.Sprintf("%s:%d", ip, apiPort), "--mqtt", fmt.Sprintf("%s:%d", ip, mqttPort),
		"--registry", f.reg, "--metrics", "off", "--dashboard", "off", "--telemetry-window", "1000000")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start hub: %w", err)
	}
	f.hubCmd = cmd
	// The runner reaches the API through a loopback forwarder into the
	// hub's namespace.
	if f.fwd == nil {
		addr, c, err := netns.Forward(f.hub.NS, fmt.Sprintf("%s:%d", ip, apiPort))
		if err != nil {
			return err
		}
		f.fwd = c
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, tlsCfg, err := api.AdminCredentials(f.hubDir, "")
			if err == nil {
				tlsCfg.ServerName = ip
				f.api = api.NewClient("https://"+addr, tlsCfg)
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("hub did not write its credentials: %w", err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return waitFor(ctx, 30*time.Second, "hub API", func() error { return f.api.Health(ctx) })
}

// StopHub kills the hub process (SIGKILL when hard).
func (f *Fleet) StopHub(hard bool) {
	if f.hubCmd == nil {
		return
	}
	sig := syscall.SIGTERM
	if hard {
		sig = syscall.SIGKILL
	}
	// ip netns exec forks: signal the process group, which holds the hub.
	_ = syscall.Kill(-f.hubCmd.Process.Pid, sig)
	_ = f.hubCmd.Wait()
	f.hubCmd = nil
}

// RestartHub restarts the hub on the same data.
func (f *Fleet) RestartHub(ctx context.Context) error {
	f.StopHub(false)
	return f.startHub(ctx)
}

// AddDevice creates a device namespace, its power-cut file system and
// agent, and enrolls it.
func (f *Fleet) AddDevice(ctx context.Context, id string, octet int) (*Device, error) {
	h, err := f.net.AddHost(ctx, id, octet)
	if err != nil {
		return nil, err
	}
	d := &Device{f: f, ID: id, Host: h, FS: powerfs.New(powerfs.Options{Capacity: f.cfg.DiskBytes, Name: "powerfs-" + id}),
		Dir: filepath.Join(f.cfg.Work, id, "data")}
	d.http = &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := h.Do(func() (err error) { c, err = (&net.Dialer{}).DialContext(ctx, network, addr); return })
			return c, err
		}}}
	if d.Relay, err = h.StartRelay(ctx, f.hub.IP, []int{apiPort, mqttPort, registryPort}, []int{apiPort}); err != nil {
		return nil, err
	}
	tok, err := f.api.CreateToken(ctx, api.TokenRequest{DeviceID: id, Labels: map[string]string{"hil": "yes", "half": strconv.Itoa(octet % 2)}})
	if err != nil {
		return nil, fmt.Errorf("token for %s: %w", id, err)
	}
	d.conf = filepath.Join(f.cfg.Work, id, "agent.yaml")
	conf := fmt.Sprintf(`data: %s
http: %s
grpc: "off"
defaults: {instances: 1, intra_op_threads: 1}
# The devices share two loaded cores: the post-activation watch's latency
# comparison would roll back on scheduling noise. NaN/Inf and errors stay judged.
update: {watch: {max_p99_ratio: 20}}
telemetry: {interval: %s, budget: %d}
hub:
  url: https://%s:%d
  token: %q
  device_id: %s
  heartbeat_interval: 2s
  report_interval: 1s
`, d.Dir, agentHTTP, f.cfg.TelemetryInterval, f.cfg.TelemetryBudget, f.hub.IP, apiPort, tok.Token, id)
	if err := os.MkdirAll(filepath.Dir(d.conf), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(d.conf, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	if d.mnt, err = d.FS.Mount(d.Dir); err != nil {
		return nil, err
	}
	f.devs = append(f.devs, d)
	if err := d.Start(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

// Start starts the agent process and waits until it answers.
func (d *Device) Start(ctx context.Context) error {
	var err error
	if d.logf == nil {
		if d.logf, err = os.OpenFile(filepath.Join(d.f.cfg.Work, d.ID, "agent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(d.logf, "=== start %s\n", time.Now().Format(time.RFC3339Nano))
	cmd := d.Host.Command(context.WithoutCancel(ctx), d.f.cfg.Bin, "agent", "-c", d.conf, "--log-level", "info")
	cmd.Stdout, cmd.Stderr = d.logf, d.logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start agent %s: %w", d.ID, err)
	}
	d.f.limit(d.ID, cmd.Process.Pid)
	d.cmd = cmd
	d.done = make(chan error, 1)
	go func() { d.done <- cmd.Wait() }()
	err = waitFor(ctx, 60*time.Second, d.ID+" live", func() error {
		select {
		case err := <-d.done:
			d.done <- err
			return fmt.Errorf("%w: agent exited: %v", errStop, err)
		default:
		}
		_, err := d.get(ctx, "/v2/health/live")
		return err
	})
	d.up.Store(err == nil)
	if err != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-d.done
		d.cmd = nil
	}
	return err
}

// Kill kills the agent with SIGKILL and waits for it.
func (d *Device) Kill() {
	d.up.Store(false)
	if d.cmd == nil {
		return
	}
	// ip netns exec forks: kill the process group, which holds the agent.
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
	<-d.done
	d.cmd = nil
}

// Stop stops the agent with SIGTERM.
func (d *Device) Stop() {
	d.up.Store(false)
	if d.cmd == nil {
		return
	}
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		<-d.done
	}
	d.cmd = nil
}

// PowerCut kills the agent, throws away every write it did not fsync,
// and mounts what a disk would have kept. The agent is not restarted.
func (d *Device) PowerCut() error {
	d.Kill()
	if err := d.mnt.Unmount(); err != nil {
		return err
	}
	d.FS.PowerCut()
	var err error
	d.mnt, err = d.FS.Mount(d.Dir)
	return err
}

// Shape sets the device's link.
func (d *Device) Shape(ctx context.Context, l netns.Link) error {
	d.Link = l
	return d.Host.Shape(ctx, l)
}

func (d *Device) get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+agentHTTP+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("GET %s on %s: %s: %s", path, d.ID, resp.Status, bytes.TrimSpace(b))
	}
	return b, err
}

// Status is the agent's update status of the model.
func (d *Device) Status(ctx context.Context) (update.Status, error) {
	var st update.Status
	b, err := d.get(ctx, "/v1/updates/"+modelName)
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(b, &st)
}

// Infer sends one inference request (the digits sample) and returns the
// version that answered.
func (d *Device) Infer(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+agentHTTP+"/v2/models/"+modelName+"/infer",
		bytes.NewReader(sampleRequest))
	if err != nil {
		return "", err
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("infer on %s: %s: %s", d.ID, resp.Status, bytes.TrimSpace(b))
	}
	var out struct {
		ModelVersion string `json:"model_version"`
		Outputs      []struct {
			Data []float64 `json:"data"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return "", err
	}
	for _, o := range out.Outputs {
		for _, v := range o.Data {
			if v != v {
				return out.ModelVersion, fmt.Errorf("infer on %s: NaN output from version %s", d.ID, out.ModelVersion)
			}
		}
	}
	return out.ModelVersion, nil
}

// Metric returns the sum of a metric's samples on the agent's /metrics
// (with the given label substring, if any).
func (d *Device) Metric(ctx context.Context, name, label string) (float64, error) {
	b, err := d.get(ctx, "/metrics")
	if err != nil {
		return 0, err
	}
	var sum float64
	found := false
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, name) || (len(line) > len(name) && line[len(name)] != ' ' && line[len(name)] != '{') {
			continue
		}
		if label != "" && !strings.Contains(line, label) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
			found = true
		}
	}
	if !found {
		return 0, fmt.Errorf("%s: no %s", d.ID, name)
	}
	return sum, nil
}

// RxBytes returns the bytes the device accepted from its link (after the
// fault rules: packets a partition or loss dropped do not count).
func (d *Device) RxBytes(ctx context.Context) uint64 {
	n, err := d.Host.Accepted(ctx)
	if err != nil {
		rx, _, _ := d.Host.Counters(ctx)
		return rx
	}
	return n
}

// Artifact is a pushed model version.
type Artifact struct {
	Version string
	Ref     string
	Size    int64 // bytes of the model layer
}

// Push publishes a model version to the hub's registry: model bytes
// padded to pad bytes (0: as is), golden vector computed from golden
// (nil: model) on goldenIn (nil: generated).
func (f *Fleet) Push(ctx context.Context, model []byte, pad int, golden []byte, goldenIn bool) (Artifact, error) {
	f.seq++
	v := strconv.Itoa(f.seq)
	model = padModel(model, byte(f.seq), pad)
	if golden == nil {
		golden = model
	}
	opts := update.DescribeOptions{Name: modelName, Version: v, Seed: 7}
	if goldenIn {
		opts.Inputs = goldenInput()
	}
	cfg, err := update.Describe(golden, opts)
	if err != nil {
		return Artifact{}, fmt.Errorf("describe version %s: %w", v, err)
	}
	ref := f.reg + "/models/" + modelName + ":" + v
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := f.hub.Do(func() (err error) { c, err = (&net.Dialer{}).DialContext(ctx, network, addr); return })
		return c, err
	}}
	if _, err := ota.Push(ctx, ref, ota.Artifact{Config: *cfg, Model: ota.BytesFile(modelName+".onnx", model)}, ota.WithTransport(tr)); err != nil {
		return Artifact{}, fmt.Errorf("push %s: %w", ref, err)
	}
	return Artifact{Version: v, Ref: ref, Size: int64(len(model))}, nil
}

// Rollout starts a rollout and returns its id.
func (f *Fleet) Rollout(ctx context.Context, spec rollout.Spec) (string, error) {
	spec.Model = modelName
	st, err := f.api.CreateRollout(ctx, spec)
	if err != nil {
		return "", err
	}
	return st.ID, nil
}

// WaitRollout waits until the rollout reaches a final state.
func (f *Fleet) WaitRollout(ctx context.Context, id string, timeout time.Duration) (rollout.Status, error) {
	var st rollout.Status
	err := waitFor(ctx, timeout, "rollout "+id, func() error {
		var err error
		if st, err = f.api.Rollout(ctx, id, true); err != nil {
			return err
		}
		if !rollout.Final(st.State) {
			return fmt.Errorf("state %s", st.State)
		}
		return nil
	})
	return st, err
}

// WaitActive waits until every given device has version v active and
// serves it.
func (f *Fleet) WaitActive(ctx context.Context, devs []*Device, v string, timeout time.Duration) error {
	for _, d := range devs {
		err := waitFor(ctx, timeout, d.ID+" on version "+v, func() error {
			st, err := d.Status(ctx)
			if err != nil {
				return err
			}
			if st.Active != v || st.Updating {
				return fmt.Errorf("active %q updating %v", st.Active, st.Updating)
			}
			got, err := d.Infer(ctx)
			if err != nil {
				return err
			}
			if got != v {
				return fmt.Errorf("served by version %s", got)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Close stops everything and removes the namespaces.
func (f *Fleet) Close() {
	ctx := context.Background()
	for _, d := range f.devs {
		d.Stop()
		if d.Relay != nil {
			d.Relay.Close()
		}
		if d.mnt != nil {
			_ = d.mnt.Unmount()
		}
		if d.logf != nil {
			d.logf.Close()
		}
	}
	f.StopHub(false)
	if f.fwd != nil {
		f.fwd.Close()
	}
	f.net.Cleanup(ctx)
	f.unlimitAll()
}

var errStop = errors.New("stop waiting")

// waitFor polls fn until it returns nil, an error wrapping errStop, or
// the timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if errors.Is(err, errStop) {
			return fmt.Errorf("%s: %w", what, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not after %v: %w", what, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
