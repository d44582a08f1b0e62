package images_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/deploy/images"
	"github.com/edgefleet/edgefleet/deploy/internal/buildenv"
	"github.com/edgefleet/edgefleet/hub/oci"
)

// built is the agent-only image index, built once for the package's tests
// by `go run ./deploy/release images --flavor agentonly` — a separate
// process, so `make test`'s -race does not instrument the layer
// compression — and a second time from the same binaries (--reuse-bin) for
// the reproducibility check.
var built struct {
	once       sync.Once
	err        error
	env        *buildenv.Env
	plats      []images.Platform
	idx, again v1.ImageIndex
	dir        string
}

// release runs the release command with args.
func release(root string, args ...string) error {
	cmd := exec.Command("go", append([]string{"run", "./deploy/release", "images", "--flavor", "agentonly"}, args...)...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go run ./deploy/release images %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// readIndex returns the one index in an OCI layout.
func readIndex(dir string) (v1.ImageIndex, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, err
	}
	top, err := p.ImageIndex()
	if err != nil {
		return nil, err
	}
	im, err := top.IndexManifest()
	if err != nil {
		return nil, err
	}
	if len(im.Manifests) != 1 {
		return nil, fmt.Errorf("%s holds %d manifests, want 1 index", dir, len(im.Manifests))
	}
	return top.ImageIndex(im.Manifests[0].Digest)
}

func agentIndex(t *testing.T) (v1.ImageIndex, []images.Platform, *buildenv.Env) {
	t.Helper()
	built.once.Do(func() {
		ctx := context.Background()
		root, err := buildenv.Root()
		if err != nil {
			built.err = err
			return
		}
		if built.env, built.err = buildenv.Prepare(ctx, root, buildenv.Arches); built.err != nil {
			return
		}
		if built.dir, built.err = os.MkdirTemp("", "images-test-"); built.err != nil {
			return
		}
		a, b := filepath.Join(built.dir, "a"), filepath.Join(built.dir, "b")
		if built.err = release(root, "--out", a); built.err != nil {
			return
		}
		if built.err = release(root, "--out", b, "--bin-dir", filepath.Join(a, "bin"), "--reuse-bin"); built.err != nil {
			return
		}
		for _, arch := range buildenv.Arches {
			built.plats = append(built.plats, images.Platform{Arch: arch,
				Binary: filepath.Join(a, "bin", string(buildenv.AgentOnly)+"-"+arch.GOARCH, "edgefleet"),
				ORTLib: built.env.ORTLibs[arch.GOARCH], Debs: built.env.Debs[arch.GOARCH]})
		}
		if built.idx, built.err = readIndex(filepath.Join(a, images.AgentName)); built.err != nil {
			return
		}
		built.again, built.err = readIndex(filepath.Join(b, images.AgentName))
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.idx, built.plats, built.env
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// TestAgentImage checks the agent-only index: two platforms, reproducible
// (a second build, another process, from the same binaries and .debs, has
// the same digest), the size
// goals, the user, the annotations and the entrypoint.
func TestAgentImage(t *testing.T) {
	idx, _, env := agentIndex(t)
	again := built.again
	d1, _ := idx.Digest()
	d2, _ := again.Digest()
	t.Logf("agent-only index %s, rebuilt %s", d1, d2)
	if d1 != d2 {
		t.Errorf("two builds of the same inputs differ: %s vs %s", d1, d2)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if got := im.Annotations["org.opencontainers.image.revision"]; got != env.Info.Revision {
		t.Errorf("index revision annotation %q, want %q", got, env.Info.Revision)
	}
	var platforms []string
	for _, m := range im.Manifests {
		platforms = append(platforms, m.Platform.String())
		img, err := idx.Image(m.Digest)
		if err != nil {
			t.Fatal(err)
		}
		s, err := images.SizeOf(img)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %.1f MB compressed, %.1f MB unpacked", m.Platform, float64(s.Compressed)/1e6, float64(s.Unpacked)/1e6)
		if s.Compressed >= 60e6 || s.Unpacked >= 120e6 {
			t.Errorf("%s: %d bytes compressed, %d unpacked; goals < 60 MB and < 120 MB", m.Platform, s.Compressed, s.Unpacked)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Config.User != "65532:65532" || cf.Config.Entrypoint[0] != images.BinPath || cf.Architecture != m.Platform.Architecture {
			t.Errorf("%s: user %q, entrypoint %q, architecture %q", m.Platform, cf.Config.User, cf.Config.Entrypoint, cf.Architecture)
		}
		mf, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"source", "revision", "version", "licenses"} {
			if mf.Annotations["org.opencontainers.image."+k] == "" {
				t.Errorf("%s: no org.opencontainers.image.%s annotation", m.Platform, k)
			}
		}
	}
	if strings.Join(platforms, ",") != "linux/amd64,linux/arm64/v8" {
		t.Errorf("platforms %v, want linux/amd64 and linux/arm64/v8", platforms)
	}
}

// startRegistry serves the hub's embedded OCI registry (hub/oci) on
// loopback and returns its host:port.
func startRegistry(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	db, err := bolt.Open(filepath.Join(dir, "hub.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	reg, err := oci.New(db, filepath.Join(dir, "blobs"), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// unpack writes img's filesystem into dir with the layers' owners and
// modes, as a container runtime would.
func unpack(t *testing.T, img v1.Image, dir string) {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, os.FileMode(h.Mode).Perm())
		case tar.TypeReg:
			var b []byte
			if b, err = io.ReadAll(tr); err == nil {
				err = os.WriteFile(p, b, os.FileMode(h.Mode).Perm())
			}
		case tar.TypeSymlink:
			err = os.Symlink(h.Linkname, p)
		case tar.TypeLink:
			err = os.Link(filepath.Join(dir, filepath.Clean("/"+h.Linkname)), p)
		default:
			t.Fatalf("%s: unexpected type %c", h.Name, h.Typeflag)
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeSymlink {
			if err := os.Chown(p, h.Uid, h.Gid); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, os.FileMode(h.Mode)&(os.ModePerm|os.ModeSticky)|stickyOf(h.Mode)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func stickyOf(mode int64) os.FileMode {
	if mode&0o1000 != 0 {
		return os.ModeSticky
	}
	return 0
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// fixture returns a file of agent/testdata.
func fixture(t *testing.T, name string) string {
	t.Helper()
	root, err := buildenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "agent", "testdata", name)
}

// inferDigit posts the sample digit (a 5) to an agent and returns the index
// of the largest logit.
func inferDigit(t *testing.T, base string) int {
	t.Helper()
	body, err := os.ReadFile(fixture(t, "digits/sample-request.json"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(base+"/v2/models/digits-cnn/infer", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("infer: %s: %s", resp.Status, raw)
	}
	var out struct {
		Outputs []struct {
			Data []float64 `json:"data"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(raw, &out); err != nil || len(out.Outputs) == 0 || len(out.Outputs[0].Data) != 10 {
		t.Fatalf("infer answer %s (%v)", raw, err)
	}
	best := 0
	for i, v := range out.Outputs[0].Data {
		if v > out.Outputs[0].Data[best] {
			best = i
		}
	}
	return best
}

// waitReady polls an agent's readiness until it answers 200 or done closes.
func waitReady(t *testing.T, base string, done <-chan struct{}, logs func() string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/v2/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-done:
			t.Fatalf("the agent exited before it was ready:\n%s", logs())
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("agent at %s not ready after 90s:\n%s", base, logs())
}

func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s (Debian package %s) is needed: %v", name, pkg, err)
	}
	return p
}

// hostBinary returns the agent-only amd64 binary the index was built from.
func hostBinary(plats []images.Platform) string {
	for _, p := range plats {
		if p.Arch.GOARCH == "amd64" {
			return p.Binary
		}
	}
	return ""
}

func runCmd(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
