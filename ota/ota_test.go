package ota

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/edgefleet/edgefleet/ota/artifact"
)

type testArtifact struct {
	art   Artifact
	files map[string][]byte // title → content
}

func newTestArtifact(t testing.TB, version string, modelSize int) testArtifact {
	model := randomBytes(t, modelSize)
	labels := []byte("zero\none\ntwo\n")
	vocab := randomBytes(t, 3000)
	return testArtifact{
		art: Artifact{
			Config: testConfig(version),
			Model:  BytesFile("digits.onnx", model),
			Files:  []File{BytesFile("labels.txt", labels), BytesFile("vocab.bin", vocab)},
		},
		files: map[string][]byte{"digits.onnx": model, "labels.txt": labels, "vocab.bin": vocab},
	}
}

// TestPushPullRoundTrip pushes an artifact, inspects and pulls it with ota,
// and reads it back with crane library calls, ORAS-style by title.
func TestPushPullRoundTrip(t *testing.T) {
	ctx := context.Background()
	host := newRegistry(t)
	ref := host + "/models/digits:3"
	ta := newTestArtifact(t, "3", 200000)
	ev := &events{}
	dig, err := Push(ctx, ref, ta.art, WithProgress(ev), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatalf("Push: %v", err)
	}
	if ev.count(EventDone) != 4 || ev.count(EventStart) != 4 {
		t.Errorf("push events: %d start, %d done; want 4 each (config + 3 files)", ev.count(EventStart), ev.count(EventDone))
	}

	t.Run("inspect", func(t *testing.T) {
		res, err := Inspect(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		if res.Ref != dig {
			t.Errorf("Inspect ref %s, Push returned %s", res.Ref, dig)
		}
		if res.Manifest.ArtifactType != artifact.ArtifactType || res.Descriptor.MediaType != artifact.ManifestMediaType {
			t.Errorf("artifactType %q, media type %q", res.Manifest.ArtifactType, res.Descriptor.MediaType)
		}
		if res.Config.Name != "digits" || res.Config.Version != "3" || res.Config.Golden == nil {
			t.Errorf("config %+v", res.Config)
		}
		if got := artifact.Title(res.Model()); got != "digits.onnx" {
			t.Errorf("model title %q", got)
		}
		if len(res.Files()) != 2 {
			t.Errorf("%d extra files, want 2", len(res.Files()))
		}
		// By digest as well.
		if res2, err := Inspect(ctx, dig.String()); err != nil || res2.Ref != dig {
			t.Errorf("Inspect by digest: %v, %v", res2, err)
		}
	})

	t.Run("pull", func(t *testing.T) {
		sink, err := NewDirSink(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		res, err := Pull(ctx, ref, sink)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range res.Manifest.Layers {
			b, err := os.ReadFile(sink.Path(l.Digest))
			if err != nil || !bytes.Equal(b, ta.files[artifact.Title(l)]) {
				t.Errorf("layer %q differs (%v)", artifact.Title(l), err)
			}
		}
		cfg, err := os.ReadFile(sink.Path(res.Manifest.Config.Digest))
		if err != nil || !bytes.Equal(cfg, res.RawConfig) {
			t.Errorf("config blob not stored: %v", err)
		}
		out := filepath.Join(t.TempDir(), "files")
		if err := sink.Export(res, out); err != nil {
			t.Fatal(err)
		}
		for title, want := range ta.files {
			if got, err := os.ReadFile(filepath.Join(out, title)); err != nil || !bytes.Equal(got, want) {
				t.Errorf("exported %s differs (%v)", title, err)
			}
		}
		if got, err := os.ReadFile(filepath.Join(out, "config.json")); err != nil || !bytes.Equal(got, res.RawConfig) {
			t.Errorf("exported config.json differs (%v)", err)
		}
		if entries, _ := os.ReadDir(out); len(entries) != 4 {
			t.Errorf("export wrote %d entries, want 4", len(entries))
		}
	})

	t.Run("crane", func(t *testing.T) {
		raw, err := crane.Manifest(ref)
		if err != nil {
			t.Fatal(err)
		}
		if d, _, _ := v1.SHA256(bytes.NewReader(raw)); d.String() != dig.DigestStr() {
			t.Errorf("crane manifest digest %s, want %s", d, dig.DigestStr())
		}
		if d, err := crane.Digest(ref); err != nil || d != dig.DigestStr() {
			t.Errorf("crane.Digest = %s, %v", d, err)
		}
		tags, err := crane.ListTags(host + "/models/digits")
		if err != nil || len(tags) != 1 || tags[0] != "3" {
			t.Errorf("crane.ListTags = %v, %v", tags, err)
		}
		cfg, err := crane.Config(ref)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := artifact.ParseConfig(cfg); err != nil {
			t.Errorf("crane.Config: %v", err)
		}
		img, err := crane.Pull(ref)
		if err != nil {
			t.Fatal(err)
		}
		m, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		if m.ArtifactType != artifact.ArtifactType {
			t.Errorf("crane sees artifactType %q", m.ArtifactType)
		}
		// ORAS-style: each layer by digest, named by its title.
		for _, l := range m.Layers {
			title := l.Annotations["org.opencontainers.image.title"]
			layer, err := crane.PullLayer(host + "/models/digits@" + l.Digest.String())
			if err != nil {
				t.Fatal(err)
			}
			rc, err := layer.Compressed()
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(b, ta.files[title]) {
				t.Errorf("file %q pulled by crane differs (%v)", title, err)
			}
		}
	})

	t.Run("push again uploads nothing", func(t *testing.T) {
		ev := &events{}
		dig2, err := Push(ctx, host+"/models/digits:3-copy", ta.art, WithProgress(ev))
		if err != nil {
			t.Fatal(err)
		}
		if dig2.DigestStr() != dig.DigestStr() {
			t.Errorf("same artifact, different digest: %s vs %s", dig2, dig)
		}
		if ev.count(EventSkip) != 4 {
			t.Errorf("%d skipped blobs, want 4", ev.count(EventSkip))
		}
	})
}

func TestPushRejectsInvalid(t *testing.T) {
	host := newRegistry(t)
	tests := map[string]func(a *Artifact){
		"invalid config":   func(a *Artifact) { a.Config.Version = "v1" },
		"bad title":        func(a *Artifact) { a.Files[0].Title = "../x" },
		"duplicate title":  func(a *Artifact) { a.Files[0].Title = "digits.onnx" },
		"model media type": func(a *Artifact) { a.Model.MediaType = "application/octet-stream" },
		"file no content":  func(a *Artifact) { a.Files[1].Open = nil },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			ta := newTestArtifact(t, "1", 100)
			mutate(&ta.art)
			if _, err := Push(context.Background(), host+"/models/bad:1", ta.art); !errors.Is(err, artifact.ErrInvalid) {
				t.Fatalf("Push = %v, want ErrInvalid", err)
			}
		})
	}
	if tags, err := crane.ListTags(host + "/models/bad"); err == nil && len(tags) > 0 {
		t.Errorf("invalid pushes left tags %v", tags)
	}
}

// TestInspectRejects covers manifests that must be refused before any layer
// is downloaded.
func TestInspectRejects(t *testing.T) {
	ctx := context.Background()
	backend := newRegistry(t)
	ta := newTestArtifact(t, "1", 1000)
	if _, err := Push(ctx, backend+"/models/m:1", ta.art); err != nil {
		t.Fatal(err)
	}
	// A plain container image is not a model.
	img, err := random.Image(100, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := crane.Push(img, backend+"/models/m:image"); err != nil {
		t.Fatal(err)
	}
	// An artifact whose config is not valid JSON config.
	repo, _ := NewRepository(backend + "/models/m")
	badCfg := BytesFile("", []byte(`{"schemaVersion":1,"name":"x"}`))
	badCfg.MediaType = artifact.ConfigMediaType
	if err := repo.UploadBlob(ctx, badCfg); err != nil {
		t.Fatal(err)
	}
	model := BytesFile("m.onnx", []byte("onnx"))
	model.MediaType = artifact.ModelMediaType
	if err := repo.UploadBlob(ctx, model); err != nil {
		t.Fatal(err)
	}
	m, err := artifact.NewManifest(
		v1.Descriptor{MediaType: artifact.ConfigMediaType, Size: badCfg.Size, Digest: badCfg.Digest},
		[]v1.Descriptor{{MediaType: artifact.ModelMediaType, Size: model.Size, Digest: model.Digest, Annotations: map[string]string{artifact.AnnotationTitle: "m.onnx"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(m)
	if _, err := repo.PutManifest(ctx, "badconfig", raw, artifact.ManifestMediaType); err != nil {
		t.Fatal(err)
	}
	// A manifest whose model layer is huge.
	m.Layers[0].Size = 1 << 40
	raw, _ = json.Marshal(m)
	if _, err := repo.PutManifest(ctx, "huge", raw, artifact.ManifestMediaType); err != nil {
		t.Fatal(err)
	}

	proxy := newFaultProxy(t, backend)
	isManifest := func(r *http.Request) bool { return strings.Contains(r.URL.Path, "/manifests/") }
	tests := []struct {
		name string
		tag  string
		rule func(r *http.Request, nth int) fault
		want error
	}{
		{"plain image", "image", nil, ErrMediaType},
		{"invalid config", "badconfig", nil, artifact.ErrInvalid},
		{"layer above limit", "huge", nil, ErrTooLarge},
		{"unknown tag", "nope", nil, ErrNotFound},
		{"wrong content type", "1", func(r *http.Request, _ int) fault {
			if isManifest(r) {
				return fault{flipAt: -1, contentType: "application/vnd.docker.distribution.manifest.v2+json"}
			}
			return noFault
		}, ErrMediaType},
		{"oversized manifest", "1", func(r *http.Request, _ int) fault {
			if isManifest(r) {
				return fault{flipAt: -1, padManifest: artifact.MaxManifestSize}
			}
			return noFault
		}, ErrTooLarge},
		{"oversized manifest without length", "1", func(r *http.Request, _ int) fault {
			if isManifest(r) {
				return fault{flipAt: -1, padManifest: artifact.MaxManifestSize, hideLength: true}
			}
			return noFault
		}, ErrTooLarge},
		{"manifest bytes altered", "1", func(r *http.Request, _ int) fault {
			if isManifest(r) {
				return fault{flipAt: 30}
			}
			return noFault
		}, ErrDigestMismatch},
		{"config corrupted", "1", func(r *http.Request, _ int) fault {
			if strings.Contains(r.URL.Path, "/blobs/") {
				return fault{flipAt: 5}
			}
			return noFault
		}, ErrDigestMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proxy.setRule(tt.rule)
			sink := NewMemSink()
			_, err := Pull(ctx, proxy.host()+"/models/m:"+tt.tag, sink, fastRetry)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Pull = %v, want %v", err, tt.want)
			}
			t.Logf("error: %v", err)
			if sink.Len() != 0 {
				t.Errorf("sink holds %d blobs after a refused pull", sink.Len())
			}
			// Only a refused config is ever downloaded, and only once.
			wantBlobs := 0
			if strings.Contains(tt.name, "config") {
				wantBlobs = 1
			}
			if n := len(proxy.requests("/blobs/")); n != wantBlobs {
				t.Errorf("%d blob requests, want %d", n, wantBlobs)
			}
		})
	}
}

// budgetSink is a MemSink with a disk budget.
type budgetSink struct {
	*MemSink
	budget int64
	asked  int64
}

func (b *budgetSink) Reserve(_ context.Context, need int64) error {
	b.asked = need
	if need > b.budget {
		return fmt.Errorf("need %d bytes, budget %d", need, b.budget)
	}
	return nil
}

func TestPullReserveAndSkip(t *testing.T) {
	ctx := context.Background()
	backend := newRegistry(t)
	ta := newTestArtifact(t, "1", 50000)
	if _, err := Push(ctx, backend+"/models/r:1", ta.art); err != nil {
		t.Fatal(err)
	}
	proxy := newFaultProxy(t, backend)
	ref := proxy.host() + "/models/r:1"
	res, err := Inspect(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	total := res.Size()

	small := &budgetSink{MemSink: NewMemSink(), budget: total - 1}
	proxy.setRule(nil)
	if _, err := Pull(ctx, ref, small); err == nil || !strings.Contains(err.Error(), "budget") {
		t.Fatalf("Pull over budget = %v", err)
	}
	if small.asked != total {
		t.Errorf("Reserve asked for %d bytes, want %d", small.asked, total)
	}
	if n := len(proxy.requests("/blobs/")); n != 1 { // only the config, fetched by Inspect
		t.Errorf("%d blob requests before the budget check, want 1", n)
	}

	sink := &budgetSink{MemSink: NewMemSink(), budget: total}
	if _, err := Pull(ctx, ref, sink); err != nil {
		t.Fatal(err)
	}
	proxy.setRule(nil)
	if _, err := Pull(ctx, ref, sink); err != nil {
		t.Fatal(err)
	}
	if sink.asked != 0 {
		t.Errorf("second pull reserved %d bytes, want 0", sink.asked)
	}
	if reqs := proxy.requests("/blobs/"); len(reqs) != 1 {
		t.Errorf("second pull fetched %q; want only the config", reqs)
	}
}

func TestTLSRegistry(t *testing.T) {
	ctx := context.Background()
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "https://")
	ta := newTestArtifact(t, "2", 10000)
	trust := WithTransport(srv.Client().Transport)

	if _, err := Push(ctx, host+"/models/tls:2", ta.art, trust); err != nil {
		t.Fatalf("Push over TLS: %v", err)
	}
	sink := NewMemSink()
	res, err := Pull(ctx, host+"/models/tls:2", sink, trust)
	if err != nil {
		t.Fatalf("Pull over TLS: %v", err)
	}
	if b, _ := sink.Bytes(res.Model().Digest); !bytes.Equal(b, ta.files["digits.onnx"]) {
		t.Error("model differs")
	}
	if _, err := Inspect(ctx, host+"/models/tls:2", fastRetry); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Inspect without trusting the CA = %v, want a certificate error", err)
	}
}

func withBasicAuth(h http.Handler, user, pass string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="edgefleet-test"`)
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func TestCredentials(t *testing.T) {
	ctx := context.Background()
	srv := httptest.NewServer(withBasicAuth(registry.New(registry.Logger(log.New(io.Discard, "", 0))), "fleet", "s3cret"))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("DOCKER_CONFIG", filepath.Join(home, "docker"))
	t.Setenv("REGISTRY_AUTH_FILE", "")
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv(EnvUsername, "")
	t.Setenv(EnvPassword, "")
	t.Setenv(EnvHosts, "")
	ta := newTestArtifact(t, "1", 1000)

	t.Run("anonymous is refused without retries", func(t *testing.T) {
		_, err := Push(ctx, host+"/models/auth:1", ta.art, fastRetry)
		var te *transport.Error
		if !errors.As(err, &te) || te.StatusCode != http.StatusUnauthorized {
			t.Fatalf("Push = %v, want 401", err)
		}
	})
	t.Run("env", func(t *testing.T) {
		t.Setenv(EnvUsername, "fleet")
		t.Setenv(EnvPassword, "s3cret")
		if _, err := Push(ctx, host+"/models/auth:1", ta.art); err != nil {
			t.Fatalf("Push with env credentials: %v", err)
		}
		if _, err := Pull(ctx, host+"/models/auth:1", NewMemSink()); err != nil {
			t.Fatalf("Pull with env credentials: %v", err)
		}
		t.Setenv(EnvHosts, "other.example:5000")
		if _, err := Inspect(ctx, host+"/models/auth:1", fastRetry); err == nil {
			t.Fatal("credentials scoped to another host were sent")
		}
	})
	t.Run("docker config", func(t *testing.T) {
		dir := filepath.Join(home, "docker")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, base64.StdEncoding.EncodeToString([]byte("fleet:s3cret")))
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Inspect(ctx, host+"/models/auth:1"); err != nil {
			t.Fatalf("Inspect with docker config credentials: %v", err)
		}
	})
}

// TestRemoteOptionsInterop checks that RemoteOptions carries credentials and
// transport to plain go-containerregistry calls.
func TestRemoteOptionsInterop(t *testing.T) {
	ctx := context.Background()
	host := newRegistry(t)
	ta := newTestArtifact(t, "1", 1000)
	dig, err := Push(ctx, host+"/models/interop:1", ta.art)
	if err != nil {
		t.Fatal(err)
	}
	repo, ref, err := ParseReference(host + "/models/interop:1")
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(ref, repo.RemoteOptions(ctx)...)
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest.String() != dig.DigestStr() || string(desc.MediaType) != artifact.ManifestMediaType {
		t.Errorf("remote.Get: %s %s", desc.Digest, desc.MediaType)
	}
}
