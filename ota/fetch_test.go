package ota

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

func TestPullBlobFaults(t *testing.T) {
	const size = 1<<20 + 12345
	backend := newRegistry(t)
	blob := randomBytes(t, size)
	desc := pushBlob(t, backend, "models/faults", blob)
	proxy := newFaultProxy(t, backend)
	isBlob := func(r *http.Request) bool { return strings.Contains(r.URL.Path, "/blobs/sha256:") }
	rangeFrom := func(n int64) string { return fmt.Sprintf("bytes=%d-%d", n, size-1) }

	tests := []struct {
		name string
		rule func(r *http.Request, nth int) fault
		// wantErr is nil for success, else the error the pull must match.
		wantErr error
		// wantStatus, if set, is the *transport.Error status code.
		wantStatus int
		// wantRequests lists the blob requests' Range headers ("" for none).
		wantRequests []string
		// partialKept: after a failure the sink still holds the partial.
		partialKept bool
		wantRestart bool
	}{
		{
			name:         "clean",
			wantRequests: []string{""},
		},
		{
			name: "cut once resumes with range",
			rule: func(r *http.Request, nth int) fault {
				if isBlob(r) && nth == 0 {
					return fault{flipAt: -1, cutAfter: 300000}
				}
				return noFault
			},
			wantRequests: []string{"", rangeFrom(300000)},
		},
		{
			name: "cut on every request still completes",
			rule: func(r *http.Request, nth int) fault {
				if isBlob(r) {
					return fault{flipAt: -1, cutAfter: 200000}
				}
				return noFault
			},
			wantRequests: []string{"", rangeFrom(200000), rangeFrom(400000), rangeFrom(600000), rangeFrom(800000), rangeFrom(1000000)},
		},
		{
			name: "503 twice then ok",
			rule: func(r *http.Request, nth int) fault {
				if isBlob(r) && nth < 2 {
					return fault{flipAt: -1, status: http.StatusServiceUnavailable}
				}
				return noFault
			},
			wantRequests: []string{"", "", ""},
		},
		{
			name: "503 forever gives up",
			rule: func(r *http.Request, nth int) fault {
				if isBlob(r) {
					return fault{flipAt: -1, status: http.StatusBadGateway}
				}
				return noFault
			},
			wantStatus:   http.StatusBadGateway,
			wantRequests: []string{"", "", "", ""},
		},
		{
			name: "403 is not retried",
			rule: func(r *http.Request, nth int) fault {
				if isBlob(r) {
					return fault{flipAt: -1, status: http.StatusForbidden}
				}
				return noFault
			},
			wantStatus:   http.StatusForbidden,
			wantRequests: []string{""},
		},
		{
			name: "flipped byte is a digest mismatch, not retried",
			rule: func(r *http.Request, nth int) fault {
				if isBlob(r) {
					return fault{flipAt: 777777}
				}
				return noFault
			},
			wantErr:      ErrDigestMismatch,
			wantRequests: []string{""},
		},
		{
			name: "flipped byte after a resume",
			rule: func(r *http.Request, nth int) fault {
				if isBlob(r) && nth == 0 {
					return fault{flipAt: -1, cutAfter: 500000}
				}
				if isBlob(r) {
					return fault{flipAt: 10}
				}
				return noFault
			},
			wantErr:      ErrDigestMismatch,
			wantRequests: []string{"", rangeFrom(500000)},
		},
		{
			name: "oversized announced",
			rule: func(r *http.Request, nth int) fault {
				if isBlob(r) {
					return fault{flipAt: -1, extra: []byte("more")}
				}
				return noFault
			},
			wantErr:      ErrTooLarge,
			wantRequests: []string{""},
		},
		{
			name: "oversized stream without length",
			rule: func(r *http.Request, nth int) fault {
				if isBlob(r) {
					return fault{flipAt: -1, extra: []byte("more"), hideLength: true}
				}
				return noFault
			},
			wantErr:      ErrTooLarge,
			wantRequests: []string{""},
		},
		{
			name: "registry ignores range: restart from zero",
			rule: func(r *http.Request, nth int) fault {
				if isBlob(r) && nth == 0 {
					return fault{flipAt: -1, cutAfter: 400000}
				}
				if isBlob(r) {
					return fault{flipAt: -1, ignoreRange: true}
				}
				return noFault
			},
			wantRequests: []string{"", rangeFrom(400000)},
			wantRestart:  true,
		},
		{
			name: "mismatched content-range: restart from zero",
			rule: func(r *http.Request, nth int) fault {
				switch {
				case isBlob(r) && nth == 0:
					return fault{flipAt: -1, cutAfter: 400000}
				case isBlob(r) && nth == 1:
					return fault{flipAt: -1, contentRng: fmt.Sprintf("bytes 0-%d/%d", size-1, size)}
				}
				return noFault
			},
			wantRequests: []string{"", rangeFrom(400000), ""},
			wantRestart:  true,
		},
		{
			name: "html instead of a blob",
			rule: func(r *http.Request, nth int) fault {
				if isBlob(r) {
					return fault{flipAt: -1, contentType: "text/html; charset=utf-8"}
				}
				return noFault
			},
			wantErr:      ErrMediaType,
			wantRequests: []string{""},
		},
		{
			name: "stall is detected and resumed",
			rule: func(r *http.Request, nth int) fault {
				if isBlob(r) && nth == 0 {
					return fault{flipAt: -1, stallAfter: 100000}
				}
				return noFault
			},
			wantRequests: []string{"", rangeFrom(100000)},
		},
		{
			name: "cut then 503 forever keeps the partial",
			rule: func(r *http.Request, nth int) fault {
				if isBlob(r) && nth == 0 {
					return fault{flipAt: -1, cutAfter: 600000}
				}
				if isBlob(r) {
					return fault{flipAt: -1, status: http.StatusServiceUnavailable}
				}
				return noFault
			},
			wantStatus:   http.StatusServiceUnavailable,
			wantRequests: []string{"", rangeFrom(600000), rangeFrom(600000), rangeFrom(600000), rangeFrom(600000)},
			partialKept:  true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proxy.setRule(tt.rule)
			ev := &events{}
			repo, err := NewRepository(proxy.host()+"/models/faults", fastRetry, WithChunkSize(64<<10),
				WithStallTimeout(300*time.Millisecond), WithProgress(ev), WithLogger(testLogger(t)))
			if err != nil {
				t.Fatal(err)
			}
			sink := NewMemSink()
			err = repo.PullBlob(context.Background(), desc, sink)

			var got []string
			for _, l := range proxy.requests("/blobs/sha256:") {
				_, rng, _ := strings.Cut(strings.TrimPrefix(l, "GET "), " ")
				got = append(got, rng)
			}
			if strings.Join(got, "|") != strings.Join(tt.wantRequests, "|") {
				t.Errorf("blob requests (Range):\n got %q\nwant %q", got, tt.wantRequests)
			}
			if tt.wantRestart != (ev.count(EventRestart) > 0) {
				t.Errorf("restart events: %d, want restart %v", ev.count(EventRestart), tt.wantRestart)
			}
			if tt.wantErr == nil && tt.wantStatus == 0 {
				if err != nil {
					t.Fatalf("PullBlob: %v", err)
				}
				b, ok := sink.Bytes(desc.Digest)
				if !ok || !bytes.Equal(b, blob) {
					t.Fatalf("committed blob differs (present %v, %d bytes)", ok, len(b))
				}
				if ev.count(EventDone) != 1 {
					t.Errorf("%d done events, want 1", ev.count(EventDone))
				}
				return
			}
			if err == nil {
				t.Fatal("PullBlob succeeded, want an error")
			}
			t.Logf("error: %v", err)
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %v, want %v", err, tt.wantErr)
			}
			if tt.wantStatus != 0 {
				var te *transport.Error
				if !errors.As(err, &te) || te.StatusCode != tt.wantStatus {
					t.Errorf("error %v, want HTTP %d", err, tt.wantStatus)
				}
			}
			if ok, _ := sink.Committed(context.Background(), desc.Digest); ok {
				t.Error("a failed pull committed the blob")
			}
			off, _ := sink.Offset(context.Background(), desc.Digest)
			if tt.partialKept != (off > 0) {
				t.Errorf("partial of %d bytes left, want kept=%v", off, tt.partialKept)
			}
			if ev.count(EventFail) != 1 {
				t.Errorf("%d fail events, want 1", ev.count(EventFail))
			}
		})
	}
}

func TestPullBlobDescriptorMismatch(t *testing.T) {
	host := newRegistry(t)
	blob := randomBytes(t, 5000)
	desc := pushBlob(t, host, "models/sizes", blob)
	repo, err := NewRepository(host+"/models/sizes", fastRetry)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		size  int64
		limit int64
		want  error
	}{
		{"descriptor smaller than blob", 4000, 0, ErrTooLarge},
		{"descriptor larger than blob", 6000, 0, ErrProtocol},
		{"above max blob size", 5000, 4096, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := desc
			d.Size = tt.size
			r := repo
			if tt.limit > 0 {
				r, _ = NewRepository(host+"/models/sizes", WithMaxBlobSize(tt.limit))
			}
			sink := NewMemSink()
			if err := r.PullBlob(context.Background(), d, sink); !errors.Is(err, tt.want) {
				t.Fatalf("PullBlob = %v, want %v", err, tt.want)
			}
			if sink.Len() != 0 {
				t.Error("failed pull committed a blob")
			}
		})
	}
}

// TestPullBlobResumesAcrossRestarts interrupts a pull into a DirSink, then
// pulls again with a fresh Repository (as a restarted agent would) and
// checks that only the missing bytes are requested.
func TestPullBlobResumesAcrossRestarts(t *testing.T) {
	const size = 2 << 20
	backend := newRegistry(t)
	blob := randomBytes(t, size)
	desc := pushBlob(t, backend, "models/restart", blob)
	proxy := newFaultProxy(t, backend)
	proxy.setRule(func(r *http.Request, nth int) fault {
		if strings.Contains(r.URL.Path, "/blobs/") && nth == 0 {
			return fault{flipAt: -1, cutAfter: size * 2 / 5}
		}
		return noFault
	})
	dir := t.TempDir()
	sink, err := NewDirSink(dir)
	if err != nil {
		t.Fatal(err)
	}
	// The first "process" dies right after the cut (its context ends on the
	// first retry), leaving the partial behind.
	ctx, kill := context.WithCancel(context.Background())
	defer kill()
	first, _ := NewRepository(proxy.host()+"/models/restart", WithChunkSize(32<<10),
		WithProgress(ProgressFunc(func(e Event) {
			if e.Kind == EventRetry {
				kill()
			}
		})))
	if err := first.PullBlob(ctx, desc, sink); !errors.Is(err, context.Canceled) {
		t.Fatalf("first pull = %v, want context.Canceled", err)
	}
	off, err := sink.Offset(context.Background(), desc.Digest)
	if err != nil || off != size*2/5 {
		t.Fatalf("partial after the cut: %d bytes (%v), want %d", off, err, size*2/5)
	}

	sink2, _ := NewDirSink(dir) // a new process opening the same folder
	second, _ := NewRepository(proxy.host() + "/models/restart")
	if err := second.PullBlob(context.Background(), desc, sink2); err != nil {
		t.Fatalf("resumed pull: %v", err)
	}
	reqs := proxy.requests("/blobs/")
	if len(reqs) != 2 || !strings.HasSuffix(reqs[1], fmt.Sprintf("bytes=%d-%d", off, size-1)) {
		t.Fatalf("requests %q, want a second one resuming at %d", reqs, off)
	}
	f, err := sink2.Open(desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var got bytes.Buffer
	got.ReadFrom(f)
	if !bytes.Equal(got.Bytes(), blob) {
		t.Fatal("resumed blob differs")
	}

	// Already committed: nothing is fetched.
	if err := second.PullBlob(context.Background(), desc, sink2); err != nil {
		t.Fatal(err)
	}
	if n := len(proxy.requests("/blobs/")); n != 2 {
		t.Errorf("a committed blob was fetched again (%d requests)", n)
	}
}

// TestPullBlobCorruptPartial: a partial that does not match the blob is
// caught by the final digest check and discarded; the next pull starts over.
func TestPullBlobCorruptPartial(t *testing.T) {
	host := newRegistry(t)
	blob := randomBytes(t, 100000)
	desc := pushBlob(t, host, "models/corrupt", blob)
	sink := NewMemSink()
	ctx := context.Background()
	if err := sink.Append(ctx, desc.Digest, 0, bytes.Repeat([]byte{0}, 1000)); err != nil {
		t.Fatal(err)
	}
	repo, _ := NewRepository(host+"/models/corrupt", fastRetry)
	if err := repo.PullBlob(ctx, desc, sink); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("PullBlob = %v, want ErrDigestMismatch", err)
	}
	if off, _ := sink.Offset(ctx, desc.Digest); off != 0 {
		t.Fatalf("corrupt partial kept (%d bytes)", off)
	}
	if err := repo.PullBlob(ctx, desc, sink); err != nil {
		t.Fatalf("second pull: %v", err)
	}
	if b, _ := sink.Bytes(desc.Digest); !bytes.Equal(b, blob) {
		t.Fatal("blob differs")
	}
}

func TestPullBlobCancel(t *testing.T) {
	backend := newRegistry(t)
	desc := pushBlob(t, backend, "models/cancel", randomBytes(t, 1<<20))
	proxy := newFaultProxy(t, backend)
	proxy.setRule(func(r *http.Request, nth int) fault {
		if strings.Contains(r.URL.Path, "/blobs/") {
			return fault{flipAt: -1, stallAfter: 300000}
		}
		return noFault
	})
	ctx, cancel := context.WithCancel(context.Background())
	sink := NewMemSink()
	ev := ProgressFunc(func(e Event) {
		if e.Kind == EventAdvance && e.Done >= 300000 {
			cancel()
		}
	})
	repo, _ := NewRepository(proxy.host()+"/models/cancel", WithProgress(ev), WithChunkSize(300000))
	err := repo.PullBlob(ctx, desc, sink)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("PullBlob = %v, want context.Canceled", err)
	}
	if off, _ := sink.Offset(context.Background(), desc.Digest); off != 300000 {
		t.Errorf("partial %d bytes, want 300000 kept for a later resume", off)
	}
}

func TestCheckContentRange(t *testing.T) {
	tests := []struct {
		hdr         string
		start, size int64
		ok          bool
	}{
		{"bytes 10-99/100", 10, 100, true},
		{"bytes 10-99/*", 10, 100, true},
		{"bytes 0-99/100", 10, 100, false},
		{"bytes 10-98/100", 10, 100, false},
		{"bytes 10-99/101", 10, 100, false},
		{"10-99/100", 10, 100, false},
		{"bytes 10-/100", 10, 100, false},
		{"", 10, 100, false},
	}
	for _, tt := range tests {
		if err := checkContentRange(tt.hdr, tt.start, tt.size); (err == nil) != tt.ok {
			t.Errorf("checkContentRange(%q, %d, %d) = %v, want ok=%v", tt.hdr, tt.start, tt.size, err, tt.ok)
		}
	}
}
