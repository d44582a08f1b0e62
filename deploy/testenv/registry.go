package testenv

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
)

// DistributionBinary is where Debian's docker-registry package installs the
// registry (CNCF Distribution); env EDGEFLEET_DOCKER_REGISTRY overrides it.
const DistributionBinary = "/usr/bin/docker-registry"

// EmbeddedRegistry starts go-containerregistry's registry with blobs
// persisted under a temporary folder and returns its host:port. It stops
// when the test ends.
func EmbeddedRegistry(t testing.TB) string {
	t.Helper()
	srv := httptest.NewServer(registry.New(
		registry.WithBlobHandler(registry.NewDiskBlobHandler(t.TempDir())),
		registry.Logger(log.New(io.Discard, "", 0)),
	))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// Distribution starts Debian's docker-registry on a loopback port with
// filesystem storage in a temporary folder and returns its host:port; it
// stops when the test ends. A start that fails (the port taken between
// choosing and binding it) is retried on another port. When the binary is
// missing the test is skipped, or fails under CI.
func Distribution(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("EDGEFLEET_DOCKER_REGISTRY")
	if bin == "" {
		bin = DistributionBinary
	}
	if _, err := os.Stat(bin); err != nil {
		Missing(t, "docker-registry at "+bin, "apt-get install docker-registry; make deps-apt")
	}
	var lastErr error
	for range 3 {
		host, err := startDistribution(t, bin)
		if err == nil {
			return host
		}
		lastErr = err
	}
	t.Fatalf("start docker-registry: %v", lastErr)
	return ""
}

func startDistribution(t testing.TB, bin string) (string, error) {
	dir := t.TempDir()
	addr, err := freeAddr()
	if err != nil {
		return "", err
	}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, filepath.Join(dir, "data"), addr)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return "", err
	}
	logf, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		return "", err
	}
	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return "", err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		cmd.Process.Kill()
		<-exited
		logf.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v2/", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Cleanup(stop)
				return addr, nil
			}
		}
		select {
		case err := <-exited:
			logf.Close()
			out, _ := os.ReadFile(logf.Name())
			return "", fmt.Errorf("docker-registry exited (%v): %s", err, out)
		case <-ctx.Done():
			stop()
			return "", fmt.Errorf("docker-registry on %s not ready: %w", addr, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func listenLoopback() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
