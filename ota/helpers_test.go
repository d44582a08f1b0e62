package ota

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/edgefleet/edgefleet/deploy/testenv"
	"github.com/edgefleet/edgefleet/ota/artifact"
)

// newRegistry starts the embedded registry (blobs on disk) and returns its host:port.
func newRegistry(t testing.TB) string { return testenv.EmbeddedRegistry(t) }

// testLogger routes slog output to t.Log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// fastRetry keeps failing tests quick.
var fastRetry = WithRetry(Retry{Attempts: 4, Initial: time.Millisecond, Max: 5 * time.Millisecond})

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// testConfig is a valid config for a model with one FP32 input and output.
func testConfig(version string) artifact.Config {
	f := make([]byte, 8)
	return artifact.Config{
		Name: "digits", Version: version,
		Inputs:             []artifact.TensorSpec{{Name: "x", Datatype: "FP32", Shape: []int64{-1, 2}}},
		Outputs:            []artifact.TensorSpec{{Name: "y", Datatype: "FP32", Shape: []int64{-1, 2}}},
		Precision:          artifact.PrecisionFP32,
		ExecutionProviders: []string{"cuda", "cpu"},
		Golden: &artifact.Golden{
			Inputs:    []artifact.GoldenTensor{{Name: "x", Datatype: "FP32", Shape: []int64{1, 2}, Data: f}},
			Outputs:   []artifact.GoldenTensor{{Name: "y", Datatype: "FP32", Shape: []int64{1, 2}, Data: f}},
			Tolerance: artifact.Tolerance{Abs: 1e-6},
		},
		MinAgentVersion: "0.1.0",
	}
}

// fault says how the proxy mangles one request.
type fault struct {
	status      int    // answer with this status instead of forwarding
	cutAfter    int64  // abort the connection after this many body bytes (0: no cut)
	flipAt      int64  // flip the body byte at this offset (-1: none)
	contentType string // replace Content-Type
	extra       []byte // append bytes to the body (Content-Length grows too)
	hideLength  bool   // drop Content-Length (chunked encoding)
	ignoreRange bool   // strip the Range header (the registry answers 200)
	contentRng  string // replace Content-Range
	stallAfter  int64  // stop sending after this many bytes until the client gives up (0: no stall)
	padManifest int    // append this many spaces to the body
}

var noFault = fault{flipAt: -1}

// faultProxy forwards to a registry and mangles responses as its rule says.
type faultProxy struct {
	t       testing.TB
	backend string
	srv     *httptest.Server
	tr      *http.Transport

	mu   sync.Mutex // guards rule and log
	rule func(r *http.Request, nth int) fault
	seen map[string]int
	log  []string
}

func newFaultProxy(t testing.TB, backend string) *faultProxy {
	p := &faultProxy{t: t, backend: backend, seen: map[string]int{}, tr: &http.Transport{}}
	p.srv = httptest.NewServer(p)
	t.Cleanup(func() { p.srv.Close(); p.tr.CloseIdleConnections() })
	return p
}

func (p *faultProxy) host() string { return strings.TrimPrefix(p.srv.URL, "http://") }

// setRule installs rule; nth counts requests to the same method and path from 0.
func (p *faultProxy) setRule(rule func(r *http.Request, nth int) fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rule = rule
	p.seen = map[string]int{}
	p.log = nil
}

// requests returns "METHOD PATH [RANGE]" for every request that reached the proxy.
func (p *faultProxy) requests(substr string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, l := range p.log {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return out
}

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	key := r.Method + " " + r.URL.Path
	nth := p.seen[key]
	p.seen[key]++
	entry := key
	if rg := r.Header.Get("Range"); rg != "" {
		entry += " " + rg
	}
	p.log = append(p.log, entry)
	f := noFault
	if p.rule != nil {
		f = p.rule(r, nth)
	}
	p.mu.Unlock()

	if f.status != 0 {
		w.WriteHeader(f.status)
		io.WriteString(w, `{"errors":[{"code":"UNAVAILABLE","message":"injected"}]}`)
		return
	}
	out := r.Clone(r.Context())
	out.URL.Scheme, out.URL.Host, out.Host, out.RequestURI = "http", p.backend, p.backend, ""
	if f.ignoreRange {
		out.Header.Del("Range")
	}
	resp, err := p.tr.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	body := io.Reader(resp.Body)
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	if f.contentType != "" {
		w.Header().Set("Content-Type", f.contentType)
	}
	if f.contentRng != "" {
		w.Header().Set("Content-Range", f.contentRng)
	}
	add := len(f.extra) + f.padManifest
	if add > 0 {
		body = io.MultiReader(body, bytes.NewReader(f.extra), strings.NewReader(strings.Repeat(" ", f.padManifest)))
		if resp.ContentLength >= 0 {
			w.Header().Set("Content-Length", strconv.FormatInt(resp.ContentLength+int64(add), 10))
		}
	}
	if f.hideLength {
		w.Header().Del("Content-Length")
	}
	w.WriteHeader(resp.StatusCode)
	var off int64
	buf := make([]byte, 32<<10)
	for {
		n, rerr := body.Read(buf)
		chunk := buf[:n]
		if f.flipAt >= off && f.flipAt < off+int64(n) {
			chunk[f.flipAt-off] ^= 0xff
		}
		for _, limit := range []int64{f.cutAfter, f.stallAfter} {
			if limit > 0 && off+int64(len(chunk)) > limit {
				chunk = chunk[:limit-off]
			}
		}
		if _, err := w.Write(chunk); err != nil {
			return
		}
		off += int64(len(chunk))
		if f.cutAfter > 0 && off >= f.cutAfter {
			http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler) // drop the connection mid-body
		}
		if f.stallAfter > 0 && off >= f.stallAfter {
			http.NewResponseController(w).Flush()
			<-r.Context().Done() // send nothing more until the client gives up
			return
		}
		if rerr != nil {
			return
		}
	}
}

// pushBlob uploads b to host/repo directly and returns its descriptor.
func pushBlob(t testing.TB, host, repo string, b []byte) v1.Descriptor {
	t.Helper()
	r, err := NewRepository(host + "/" + repo)
	if err != nil {
		t.Fatal(err)
	}
	f := BytesFile("blob.bin", b)
	if err := r.UploadBlob(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	return v1.Descriptor{MediaType: types.MediaType(artifact.FileMediaType), Size: f.Size, Digest: f.Digest,
		Annotations: map[string]string{artifact.AnnotationTitle: "blob.bin"}}
}

// events records progress events.
type events struct {
	mu sync.Mutex
	ev []Event
}

func (e *events) Update(ev Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ev = append(e.ev, ev)
}

func (e *events) count(k EventKind) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, ev := range e.ev {
		if ev.Kind == k {
			n++
		}
	}
	return n
}
