package ota

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// discardSink hashes nothing and keeps nothing: it only tracks offsets, so
// the benchmark measures the transfer and the puller's own hashing.
type discardSink struct {
	off       atomic.Int64
	committed atomic.Bool
}

func (s *discardSink) Committed(context.Context, v1.Hash) (bool, error) {
	return s.committed.Load(), nil
}
func (s *discardSink) Offset(context.Context, v1.Hash) (int64, error) { return s.off.Load(), nil }
func (s *discardSink) Partial(context.Context, v1.Hash) (io.ReadCloser, error) {
	return io.NopCloser(io.LimitReader(zeroReader{}, s.off.Load())), nil
}
func (s *discardSink) Append(_ context.Context, _ v1.Hash, off int64, p []byte) error {
	s.off.Store(off + int64(len(p)))
	return nil
}
func (s *discardSink) Commit(context.Context, v1.Hash) error  { s.committed.Store(true); return nil }
func (s *discardSink) Discard(context.Context, v1.Hash) error { s.off.Store(0); return nil }

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

const benchBlobSize = 50 << 20

// benchRegistry serves a 50 MB random blob from the embedded registry. Blobs
// are kept in memory: the disk handler re-hashes the whole blob on every GET,
// which would dominate both sides of the comparison.
func benchRegistry(b *testing.B) (string, v1.Descriptor) {
	b.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	b.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	return host, pushBlob(b, host, "bench/model", randomBytes(b, benchBlobSize))
}

// BenchmarkPull50MB compares, in the same run and against the same
// registry, the verified resumable puller with go-containerregistry's plain
// layer download (remote.Layer(...).Compressed(), which also verifies the
// digest). It reports both throughputs and their ratio.
func BenchmarkPull50MB(b *testing.B) {
	ctx := context.Background()
	host, desc := benchRegistry(b)
	repo, err := NewRepository(host + "/bench/model")
	if err != nil {
		b.Fatal(err)
	}
	dig, err := name.NewDigest(host + "/bench/model@" + desc.Digest.String())
	if err != nil {
		b.Fatal(err)
	}
	var otaTime, ggcrTime time.Duration
	b.SetBytes(benchBlobSize)
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		if err := repo.PullBlob(ctx, desc, &discardSink{}); err != nil {
			b.Fatal(err)
		}
		otaTime += time.Since(start)

		start = time.Now()
		l, err := remote.Layer(dig)
		if err != nil {
			b.Fatal(err)
		}
		rc, err := l.Compressed()
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, rc)
		if cerr := rc.Close(); err == nil {
			err = cerr
		}
		if err != nil || n != benchBlobSize {
			b.Fatalf("ggcr read %d bytes: %v", n, err)
		}
		ggcrTime += time.Since(start)
	}
	mbps := func(d time.Duration) float64 { return float64(b.N) * benchBlobSize / (1 << 20) / d.Seconds() }
	b.ReportMetric(mbps(otaTime), "ota_MiB/s")
	b.ReportMetric(mbps(ggcrTime), "ggcr_MiB/s")
	b.ReportMetric(ggcrTime.Seconds()/otaTime.Seconds(), "ota/ggcr_speed")
}

// BenchmarkResumeAfterCut50 cuts the connection at 50% of a 50 MB blob and
// reports how long the puller takes from the cut to the verified blob
// (resume_ms), next to a full uncut pull (full_ms). go-containerregistry and
// docker restart the layer instead, which costs about full_ms after the cut.
func BenchmarkResumeAfterCut50(b *testing.B) {
	ctx := context.Background()
	host, desc := benchRegistry(b)
	proxy := newFaultProxy(b, host)
	var cutAt atomic.Int64 // unix nanos of the detected cut
	ev := ProgressFunc(func(e Event) {
		if e.Kind == EventRetry {
			cutAt.Store(time.Now().UnixNano())
		}
	})
	repo, err := NewRepository(proxy.host()+"/bench/model", WithProgress(ev),
		WithRetry(Retry{Initial: time.Millisecond, Max: time.Millisecond}))
	if err != nil {
		b.Fatal(err)
	}
	var resume, full time.Duration
	for b.Loop() {
		proxy.setRule(nil)
		start := time.Now()
		if err := repo.PullBlob(ctx, desc, &discardSink{}); err != nil {
			b.Fatal(err)
		}
		full += time.Since(start)

		proxy.setRule(func(r *http.Request, nth int) fault {
			if strings.Contains(r.URL.Path, "/blobs/") && nth == 0 {
				return fault{flipAt: -1, cutAfter: benchBlobSize / 2}
			}
			return noFault
		})
		if err := repo.PullBlob(ctx, desc, &discardSink{}); err != nil {
			b.Fatal(err)
		}
		resume += time.Since(time.Unix(0, cutAt.Load()))
		if n := len(proxy.requests("/blobs/")); n != 2 {
			b.Fatalf("%d requests, want 2 (cut + resume)", n)
		}
	}
	b.ReportMetric(float64(resume.Milliseconds())/float64(b.N), "resume_ms")
	b.ReportMetric(float64(full.Milliseconds())/float64(b.N), "full_ms")
}
