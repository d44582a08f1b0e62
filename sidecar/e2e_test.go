package sidecar_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/update"
	"github.com/edgefleet/edgefleet/deploy/testenv"
	"github.com/edgefleet/edgefleet/ota"
	"github.com/edgefleet/edgefleet/ota/signature"
	"github.com/edgefleet/edgefleet/sidecar"
)

// buildEdgefleet builds the edgefleet binary once per test binary.
var buildEdgefleet = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "edgefleet-e2e-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "edgefleet")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/edgefleet")
	cmd.Dir = testenv.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

func freePort(t *testing.T) int32 {
	_, p, _ := net.SplitHostPort(testenv.FreeAddr(t))
	n, _ := strconv.Atoi(p)
	return int32(n)
}

// TestInjectedAgentEndToEnd runs the agent container the injector puts into
// a pod as a process — its args, env and probes as patched — against a
// Distribution registry holding a signed model: the startup probe answers
// "not ready" while the model is not there, turns ready only once the model
// serves, and an application's request over the shared unix socket gets the
// right answer. Paths of the pod's volumes map to temporary folders (no
// mount namespace here); nothing else of the container spec is changed.
func TestInjectedAgentEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the edgefleet binary")
	}
	lib := testenv.ORTLibrary(t)
	if _, err := runtime.Init(lib); err != nil {
		t.Fatal(err)
	}
	bin, err := buildEdgefleet()
	if err != nil {
		t.Fatal(err)
	}
	host := testenv.Distribution(t)
	ref := host + "/models/digits:1"

	// The signer's public key, mounted like a Secret volume (with the
	// kubelet's dot-entries, which the agent skips).
	key, err := signature.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := signature.MarshalPublicKeyPEM(&key.PublicKey)
	root := t.TempDir()
	keys := filepath.Join(root, "trust-keys")
	if err := os.MkdirAll(filepath.Join(keys, "..2026_01_01"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(keys, "cosign.pub"), pub, 0o444); err != nil {
		t.Fatal(err)
	}

	// The pod, through the injector.
	d := defaults()
	d.HealthPort = freePort(t)
	httpPort, grpcPort := freePort(t), freePort(t)
	pod := corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "ns", Labels: map[string]string{sidecar.InjectLabel: "true"},
			Annotations: map[string]string{
				sidecar.AnnotationModels: "digits=" + ref, sidecar.AnnotationSocket: "true",
				sidecar.AnnotationTrustKeysSecret: "signers",
				sidecar.AnnotationHTTPPort:        strconv.Itoa(int(httpPort)), sidecar.AnnotationGRPCPort: strconv.Itoa(int(grpcPort)),
			}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
	}
	raw, _ := json.Marshal(pod)
	out := post(t, sidecar.NewInjector(d, nil, nil), review(t, raw, "e2e"))
	patched, _ := apply(t, raw, out.Response)
	agent := agentOf(t, patched)
	app := patched.Spec.Containers[0]

	paths := strings.NewReplacer(sidecar.DataDir, filepath.Join(root, "data"),
		sidecar.SocketDir, filepath.Join(root, "sock"), sidecar.TrustKeysDir, keys)
	socketPath := paths.Replace(sidecar.SocketPath)
	if err := os.MkdirAll(filepath.Dir(socketPath), 0o755); err != nil {
		t.Fatal(err)
	}
	var args []string
	for _, a := range agent.Args {
		args = append(args, paths.Replace(a))
	}
	env := append(os.Environ(), "EDGEFLEET_ORT_LIB="+lib)
	for _, e := range agent.Env {
		if e.ValueFrom != nil {
			t.Fatalf("env %s from %v: not expected without a hub or memory limit", e.Name, e.ValueFrom)
		}
		env = append(env, e.Name+"="+e.Value)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	var logs testenv.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cancel()
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	})

	// The kubelet's startup probe, as the container spec says.
	sp := agent.StartupProbe
	probeURL := fmt.Sprintf("http://127.0.0.1:%d%s", sp.HTTPGet.Port.IntVal, sp.HTTPGet.Path)
	hc := &http.Client{Timeout: time.Duration(sp.TimeoutSeconds) * time.Second}
	probe := func() int {
		resp, err := hc.Get(probeURL)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// Up but not ready: the model is not in the registry yet.
	testenv.Eventually(t, "the health listener", 60*time.Second, func() bool {
		select {
		case err := <-exited:
			t.Fatalf("agent exited: %v", err)
		default:
		}
		return probe() != 0
	})
	if c := probe(); c != http.StatusServiceUnavailable {
		t.Fatalf("startup probe %d before the model exists, want 503", c)
	}
	// Publish: push under a staging tag, sign, then tag the reference the
	// pod names, so the agent never sees it unsigned.
	cfg, err := update.Describe(mustRead(t, filepath.Join(testenv.RepoRoot(), "agent/testdata/digits/cnn.onnx")),
		update.DescribeOptions{Name: "digits", Version: "1", Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	dig, err := ota.Push(ctx, host+"/models/digits:staging", ota.Artifact{Config: *cfg,
		Model: ota.BytesFile("digits.onnx", mustRead(t, filepath.Join(testenv.RepoRoot(), "agent/testdata/digits/cnn.onnx")))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := signature.Sign(ctx, dig.String(), key); err != nil {
		t.Fatal(err)
	}
	tagRef, _ := name.NewTag(ref, name.Insecure)
	desc, err := remote.Get(dig)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Tag(tagRef, desc); err != nil {
		t.Fatal(err)
	}

	// Ready only once the model serves: at the first 200 of the probe, the
	// model answers ready over the app's socket.
	sock := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "unix", socketPath)
	}}}
	testenv.Eventually(t, "the startup probe", 120*time.Second, func() bool {
		select {
		case err := <-exited:
			t.Fatalf("agent exited: %v", err)
		default:
		}
		return probe() == http.StatusOK
	})
	resp, err := sock.Get("http://agent/v2/models/digits/ready")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("model ready over the socket: %v %v", err, resp)
	}
	resp.Body.Close()

	// The application's request: the env tells it where the socket is.
	var sockEnv string
	for _, e := range app.Env {
		if e.Name == sidecar.EnvSocket {
			sockEnv = paths.Replace(e.Value)
		}
	}
	if sockEnv != socketPath {
		t.Fatalf("%s=%q, agent listens on %s", sidecar.EnvSocket, sockEnv, socketPath)
	}
	body := mustRead(t, filepath.Join(testenv.RepoRoot(), "agent/testdata/digits/sample-request.json"))
	resp, err = sock.Post("http://agent/v2/models/digits/infer", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var inf struct {
		Outputs []struct {
			Data []float64 `json:"data"`
		} `json:"outputs"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &inf) != nil || len(inf.Outputs) == 0 || len(inf.Outputs[0].Data) != 10 {
		t.Fatalf("infer: HTTP %d %s", resp.StatusCode, b)
	}
	best := 0
	for i, v := range inf.Outputs[0].Data {
		if v > inf.Outputs[0].Data[best] {
			best = i
		}
	}
	if best != 5 {
		t.Errorf("the sample digit is a 5, the model says %d", best)
	}
	// The API stays on loopback; the health port answers only health and
	// metrics.
	for path, want := range map[string]int{"/metrics": 200, "/v2/models/digits": 404} {
		r, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d%s", d.HealthPort, path))
		if err != nil || r.StatusCode != want {
			t.Errorf("health port %s: %v %v, want %d", path, err, r, want)
		}
		if r != nil {
			r.Body.Close()
		}
	}
	// The socket is usable by another user of the pod.
	if fi, err := os.Stat(socketPath); err != nil || fi.Mode().Perm() != 0o666 {
		t.Errorf("socket mode %v %v", fi, err)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
