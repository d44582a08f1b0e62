package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/edgefleet/edgefleet/ota"
	"github.com/edgefleet/edgefleet/ota/artifact"
)

func hashOf(b []byte) v1.Hash {
	h, _ := v1.NewHash(DigestOf(b))
	return h
}

func TestSinkContract(t *testing.T) {
	ctx := context.Background()
	data := make([]byte, 100)
	for i := range data {
		data[i] = byte(i * 7)
	}
	tests := []struct {
		name string
		run  func(t *testing.T, c *Cache)
	}{
		{"append in pieces, read back, commit", func(t *testing.T, c *Cache) {
			d := hashOf(data)
			for off := 0; off < len(data); off += 13 {
				end := min(off+13, len(data))
				if err := c.Append(ctx, d, int64(off), data[off:end]); err != nil {
					t.Fatalf("Append at %d: %v", off, err)
				}
			}
			if off, err := c.Offset(ctx, d); err != nil || off != int64(len(data)) {
				t.Fatalf("Offset = %d, %v; want %d", off, err, len(data))
			}
			rc, err := c.Partial(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("Partial read %d bytes (%v), want the %d appended", len(got), err, len(data))
			}
			if ok, _ := c.Committed(ctx, d); ok {
				t.Fatal("Committed before Commit")
			}
			if err := c.Commit(ctx, d); err != nil {
				t.Fatal(err)
			}
			if ok, err := c.Committed(ctx, d); !ok || err != nil {
				t.Fatalf("Committed = %v, %v after Commit", ok, err)
			}
			if off, _ := c.Offset(ctx, d); off != 0 {
				t.Fatalf("Offset after Commit = %d, want 0", off)
			}
			b, err := c.ReadBlob(ctx, d.String())
			if err != nil || !bytes.Equal(b, data) {
				t.Fatalf("ReadBlob: %v", err)
			}
			if err := c.Append(ctx, d, 0, data); !errors.Is(err, ErrExists) {
				t.Fatalf("Append to a committed blob: %v, want ErrExists", err)
			}
		}},
		{"wrong offset stores nothing", func(t *testing.T, c *Cache) {
			d := hashOf(data)
			if err := c.Append(ctx, d, 5, data[5:10]); !errors.Is(err, ota.ErrOffset) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Append at 5 without a partial: %v", err)
			}
			if err := c.Append(ctx, d, 0, data[:10]); err != nil {
				t.Fatal(err)
			}
			for _, off := range []int64{0, 9, 11} {
				if err := c.Append(ctx, d, off, data[10:20]); !errors.Is(err, ota.ErrOffset) {
					t.Fatalf("Append at %d with 10 stored: %v, want ErrOffset", off, err)
				}
			}
			if off, _ := c.Offset(ctx, d); off != 10 {
				t.Fatalf("Offset = %d after refused appends, want 10", off)
			}
		}},
		{"commit of wrong bytes discards", func(t *testing.T, c *Cache) {
			d := hashOf(data)
			bad := bytes.Clone(data)
			bad[50] ^= 1
			if err := c.Append(ctx, d, 0, bad); err != nil {
				t.Fatal(err)
			}
			if err := c.Commit(ctx, d); !errors.Is(err, ErrDigestMismatch) {
				t.Fatalf("Commit of corrupt bytes: %v, want ErrDigestMismatch", err)
			}
			if ok, _ := c.Committed(ctx, d); ok {
				t.Fatal("corrupt blob committed")
			}
			if off, _ := c.Offset(ctx, d); off != 0 {
				t.Fatalf("partial kept after mismatch: offset %d", off)
			}
		}},
		{"commit without partial is the empty blob", func(t *testing.T, c *Cache) {
			d := hashOf(nil)
			if err := c.Commit(ctx, d); err != nil {
				t.Fatal(err)
			}
			if ok, _ := c.Committed(ctx, d); !ok {
				t.Fatal("empty blob not committed")
			}
			if err := c.Commit(ctx, d); err != nil {
				t.Fatalf("second Commit: %v", err)
			}
			if err := c.Commit(ctx, hashOf(data)); !errors.Is(err, ErrDigestMismatch) {
				t.Fatalf("Commit of nothing under another digest: %v", err)
			}
		}},
		{"discard", func(t *testing.T, c *Cache) {
			d := hashOf(data)
			if err := c.Discard(ctx, d); err != nil {
				t.Fatalf("Discard without partial: %v", err)
			}
			if err := c.Append(ctx, d, 0, data[:30]); err != nil {
				t.Fatal(err)
			}
			if err := c.Discard(ctx, d); err != nil {
				t.Fatal(err)
			}
			if off, _ := c.Offset(ctx, d); off != 0 {
				t.Fatalf("Offset after Discard = %d", off)
			}
			if _, err := c.Partial(ctx, d); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Partial after Discard: %v", err)
			}
		}},
		{"bad digest", func(t *testing.T, c *Cache) {
			d := v1.Hash{Algorithm: "sha512", Hex: strings.Repeat("a", 128)}
			if _, err := c.Committed(ctx, d); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Committed(sha512): %v", err)
			}
			if err := c.Append(ctx, d, 0, data); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Append(sha512): %v", err)
			}
		}},
		{"partial survives reopen", func(t *testing.T, c *Cache) {
			d := hashOf(data)
			if err := c.Append(ctx, d, 0, data[:40]); err != nil {
				t.Fatal(err)
			}
			path := c.Path()
			c.Close()
			c2 := mustOpen(t, path, Options{ChunkSize: 16})
			if off, err := c2.Offset(ctx, d); err != nil || off != 40 {
				t.Fatalf("Offset after reopen = %d, %v", off, err)
			}
			if err := c2.Append(ctx, d, 40, data[40:]); err != nil {
				t.Fatal(err)
			}
			if err := c2.Commit(ctx, d); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := mustOpen(t, filepath.Join(t.TempDir(), "c.db"), Options{ChunkSize: 16})
			tc.run(t, c)
		})
	}
}

func TestSinkBudget(t *testing.T) {
	ctx := context.Background()
	c := mustOpen(t, filepath.Join(t.TempDir(), "c.db"), Options{Budget: 1000, ChunkSize: 64})
	old := bytes.Repeat([]byte{1}, 600)
	if _, err := c.ImportModel(ctx, "m", "1", old, VersionRecord{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Reserve(ctx, 2000); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Reserve over the whole budget: %v, want ErrNoSpace", err)
	}
	if err := c.SetActive(ctx, "m", "1"); err != nil {
		t.Fatal(err)
	}
	// The active version is pinned: 600 + 500 cannot fit.
	if err := c.Reserve(ctx, 500); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Reserve with the active version pinned: %v, want ErrNoSpace", err)
	}
	blob := bytes.Repeat([]byte{2}, 500)
	d := hashOf(blob)
	if err := c.Append(ctx, d, 0, blob[:300]); err != nil {
		t.Fatal(err)
	}
	if err := c.Append(ctx, d, 300, blob[300:]); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Append past the budget: %v, want ErrNoSpace", err)
	}
	if off, _ := c.Offset(ctx, d); off != 300 {
		t.Fatalf("Offset = %d after refused append, want 300", off)
	}
	// Unpinned, the old version is evicted to make room.
	if err := c.SetModelState(ctx, "m", StateActive, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.Append(ctx, d, 300, blob[300:]); err != nil {
		t.Fatalf("Append after unpinning: %v", err)
	}
	if err := c.Commit(ctx, d); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Version("m", "1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("old version not evicted: %v", err)
	}
}

// recorder wraps a registry and records blob requests.
type recorder struct {
	h http.Handler

	mu     sync.Mutex // guards ranges, gets
	ranges []string
	gets   []string // digests of blob GETs
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/") {
		r.mu.Lock()
		r.gets = append(r.gets, req.URL.Path[strings.LastIndex(req.URL.Path, "/")+1:])
		if rg := req.Header.Get("Range"); rg != "" {
			r.ranges = append(r.ranges, rg)
		}
		r.mu.Unlock()
	}
	r.h.ServeHTTP(w, req)
}

func (r *recorder) snapshot() (gets, ranges []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.gets...), append([]string(nil), r.ranges...)
}

func startRegistry(t *testing.T) (string, *recorder) {
	t.Helper()
	rec := &recorder{h: registry.New(
		registry.WithBlobHandler(registry.NewDiskBlobHandler(t.TempDir())),
		registry.Logger(log.New(io.Discard, "", 0)),
	)}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), rec
}

func pushTestArtifact(t *testing.T, host string, model []byte) *ota.Resolved {
	t.Helper()
	ctx := context.Background()
	spec := []artifact.TensorSpec{{Name: "x", Datatype: "FP32", Shape: []int64{-1, 4}}}
	art := ota.Artifact{
		Config: artifact.Config{Name: "m", Version: "1", Inputs: spec, Outputs: spec, Precision: artifact.PrecisionFP32},
		Model:  ota.BytesFile("m.onnx", model),
		Files:  []ota.File{ota.BytesFile("labels.txt", []byte("a\nb\n"))},
	}
	d, err := ota.Push(ctx, host+"/models/m:1", art)
	if err != nil {
		t.Fatal(err)
	}
	res, err := ota.Inspect(ctx, d.String())
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestSinkPullFromRegistry(t *testing.T) {
	ctx := context.Background()
	host, rec := startRegistry(t)
	model := make([]byte, 300<<10)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range model {
		model[i] = byte(r.Uint32())
	}
	res := pushTestArtifact(t, host, model)
	md := res.Model()
	path := filepath.Join(t.TempDir(), "c.db")

	// An earlier process stored the first 100 KiB and was killed.
	c := mustOpen(t, path, Options{ChunkSize: 32 << 10})
	if err := c.Append(ctx, md.Digest, 0, model[:100<<10]); err != nil {
		t.Fatal(err)
	}
	c.Close()

	c = mustOpen(t, path, Options{ChunkSize: 32 << 10})
	gets0, _ := rec.snapshot()
	if _, err := ota.Pull(ctx, res.Ref.String(), c); err != nil {
		t.Fatalf("Pull: %v", err)
	}
	gets1, ranges := rec.snapshot()
	wantRange := "bytes=102400-307199"
	if len(ranges) != 1 || ranges[0] != wantRange {
		t.Fatalf("range requests %q, want one %q (resume from the stored offset)", ranges, wantRange)
	}
	b, err := c.ReadBlob(ctx, md.Digest.String())
	if err != nil || !bytes.Equal(b, model) {
		t.Fatalf("ReadBlob after pull: %v", err)
	}
	for _, l := range res.Manifest.Layers {
		if ok, _ := c.Committed(ctx, l.Digest); !ok {
			t.Errorf("layer %s not committed", artifact.Title(l))
		}
	}
	// Everything is cached: a second pull fetches only the config, which
	// Inspect reads to validate the artifact.
	if _, err := ota.Pull(ctx, res.Ref.String(), c); err != nil {
		t.Fatal(err)
	}
	gets2, _ := rec.snapshot()
	if again := gets2[len(gets1):]; len(again) != 1 || again[0] != res.Manifest.Config.Digest.String() {
		t.Fatalf("second pull fetched blobs %q, want only the config %s", again, res.Manifest.Config.Digest)
	}
	if n := len(gets1) - len(gets0); n != 3 {
		t.Fatalf("first pull made %d blob requests, want 3 (config, model rest, file)", n)
	}
}

func TestSinkPullCorruptPartial(t *testing.T) {
	ctx := context.Background()
	host, _ := startRegistry(t)
	model := bytes.Repeat([]byte("edgefleet"), 10000)
	res := pushTestArtifact(t, host, model)
	md := res.Model()
	c := mustOpen(t, filepath.Join(t.TempDir(), "c.db"), Options{ChunkSize: 4096})
	bad := bytes.Clone(model[:5000])
	bad[10] ^= 0xff
	if err := c.Append(ctx, md.Digest, 0, bad); err != nil {
		t.Fatal(err)
	}
	_, err := ota.Pull(ctx, res.Ref.String(), c)
	if !errors.Is(err, ota.ErrDigestMismatch) {
		t.Fatalf("Pull over a corrupt partial: %v, want ErrDigestMismatch", err)
	}
	if ok, _ := c.Committed(ctx, md.Digest); ok {
		t.Fatal("corrupt model committed")
	}
	if off, _ := c.Offset(ctx, md.Digest); off != 0 {
		t.Fatalf("corrupt partial kept (%d bytes)", off)
	}
	// The next pull starts over and succeeds.
	if _, err := ota.Pull(ctx, res.Ref.String(), c); err != nil {
		t.Fatal(err)
	}
	if b, err := c.ReadBlob(ctx, md.Digest.String()); err != nil || !bytes.Equal(b, model) {
		t.Fatalf("ReadBlob: %v", err)
	}
}
