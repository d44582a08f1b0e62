package ota

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/edgefleet/edgefleet/ota/artifact"
)

// errStalled cancels an attempt that received nothing for the stall timeout.
var errStalled = errors.New("transfer stalled: no data within the stall timeout")

// permanent marks an error that must not be retried whatever it wraps
// (e.g. a sink failure that happens to wrap a network error).
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// PullBlob downloads the blob desc describes into sink. It streams the blob
// in chunks while hashing it, resumes from the partial download the sink
// holds (HTTP Range; only a 206 whose Content-Range matches is accepted, a
// 200 restarts from zero), retries connection failures and 5xx answers with
// backoff, refuses more bytes than desc.Size, and commits the blob only when
// its sha256 matches desc.Digest; on a mismatch the partial is discarded. A
// blob the sink already holds is not fetched again.
func (r *Repository) PullBlob(ctx context.Context, desc v1.Descriptor, sink Sink) error {
	return r.pullBlob(ctx, desc, sink, artifact.Title(desc), false)
}

// transfer is the state of one blob download.
type transfer struct {
	r     *Repository
	desc  v1.Descriptor
	sink  Sink
	title string
	quiet bool

	h   hash.Hash // sha256 of the first off bytes
	off int64     // bytes persisted in the sink and hashed
	buf []byte
}

func (r *Repository) pullBlob(ctx context.Context, desc v1.Descriptor, sink Sink, title string, quiet bool) error {
	d := desc.Digest
	if d.Algorithm != "sha256" || len(d.Hex) != sha256.Size*2 {
		return fmt.Errorf("blob %q: only sha256 digests are supported", d)
	}
	if desc.Size < 0 {
		return fmt.Errorf("blob %s: negative size %d", d, desc.Size)
	}
	if desc.Size > r.o.maxBlobSize {
		return fmt.Errorf("%w: blob %s is %d bytes, limit %d", ErrTooLarge, d, desc.Size, r.o.maxBlobSize)
	}
	t := &transfer{r: r, desc: desc, sink: sink, title: title, quiet: quiet, h: sha256.New()}
	done, err := sink.Committed(ctx, d)
	if err != nil {
		return fmt.Errorf("blob %s: sink: %w", d, err)
	}
	if done {
		t.event(EventSkip, nil)
		return nil
	}
	if err := t.restore(ctx); err != nil {
		return err
	}
	t.event(EventStart, nil)
	t.buf = make([]byte, min(int64(r.o.chunkSize), max(desc.Size, 1)))
	err = r.retry(ctx, "pull blob "+d.String(), t.attempt, func(err error) { t.event(EventRetry, err) })
	if err != nil {
		t.event(EventFail, err)
		return err
	}
	if got := hex.EncodeToString(t.h.Sum(nil)); got != d.Hex {
		err := fmt.Errorf("%w: blob %s hashes to sha256:%s", ErrDigestMismatch, d, got)
		if derr := sink.Discard(ctx, d); derr != nil {
			err = errors.Join(err, fmt.Errorf("discard partial: %w", derr))
		}
		t.event(EventFail, err)
		return err
	}
	if err := sink.Commit(ctx, d); err != nil {
		err = fmt.Errorf("blob %s: commit: %w", d, err)
		t.event(EventFail, err)
		return err
	}
	t.event(EventDone, nil)
	return nil
}

func (t *transfer) event(k EventKind, err error) {
	if t.quiet {
		return
	}
	t.r.o.progress.Update(Event{Kind: k, Title: t.title, Digest: t.desc.Digest, Done: t.off, Total: t.desc.Size, Err: err})
}

// restore re-hashes the partial download the sink holds, so the transfer
// continues where an earlier one (maybe an earlier process) stopped.
func (t *transfer) restore(ctx context.Context) error {
	d := t.desc.Digest
	off, err := t.sink.Offset(ctx, d)
	if err != nil {
		return fmt.Errorf("blob %s: sink: %w", d, err)
	}
	if off == 0 {
		return nil
	}
	if off > t.desc.Size {
		return t.restart(ctx, fmt.Sprintf("partial of %d bytes is longer than the blob", off))
	}
	rc, err := t.sink.Partial(ctx, d)
	if err != nil {
		return t.restart(ctx, fmt.Sprintf("partial unreadable: %v", err))
	}
	n, err := io.Copy(t.h, io.LimitReader(rc, off))
	rc.Close()
	if err != nil || n != off {
		return t.restart(ctx, fmt.Sprintf("partial unreadable after %d of %d bytes: %v", n, off, err))
	}
	t.off = off
	t.r.o.log.Info("resuming blob download", "digest", d, "offset", off, "size", t.desc.Size)
	return nil
}

// restart discards the partial download and starts the blob from zero.
func (t *transfer) restart(ctx context.Context, reason string) error {
	t.r.o.log.Warn("restarting blob download from zero", "digest", t.desc.Digest, "reason", reason)
	if err := t.sink.Discard(ctx, t.desc.Digest); err != nil {
		return permanent{fmt.Errorf("blob %s: discard partial: %w", t.desc.Digest, err)}
	}
	t.h.Reset()
	t.off = 0
	t.event(EventRestart, errors.New(reason))
	return nil
}

// stallReader re-arms the stall timer whenever bytes arrive.
type stallReader struct {
	r io.Reader
	t *time.Timer
	d time.Duration
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.t.Reset(s.d)
	}
	return n, err
}

// attempt makes one GET of the rest of the blob. It reports whether bytes
// were persisted, so that retry can tell a flaky link from a dead one.
func (t *transfer) attempt(parent context.Context) (progressed bool, err error) {
	size, d := t.desc.Size, t.desc.Digest
	if t.off == size {
		return false, nil
	}
	rt, err := t.r.readTransport(parent)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	var timer *time.Timer
	if st := t.r.o.stallTimeout; st > 0 {
		timer = time.AfterFunc(st, func() { cancel(errStalled) })
		defer timer.Stop()
	}
	cause := func(err error) error {
		if errors.Is(context.Cause(ctx), errStalled) {
			return retryable{fmt.Errorf("%w (%v)", errStalled, err)}
		}
		return err
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.r.url("blobs", d.String()), nil)
	if err != nil {
		return false, err
	}
	// Ask for the bytes as stored: transparent decompression would break
	// offsets and lengths.
	req.Header.Set("Accept-Encoding", "identity")
	start := t.off
	if start > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", start, size-1))
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return false, cause(err)
	}
	defer resp.Body.Close()

	switch resp.StatusCode {
	case http.StatusPartialContent:
		if err := checkContentRange(resp.Header.Get("Content-Range"), start, size); err != nil {
			if rerr := t.restart(parent, err.Error()); rerr != nil {
				return false, rerr
			}
			return false, retryable{fmt.Errorf("%w: blob %s: %v", ErrProtocol, d, err)}
		}
		if resp.ContentLength > size-start {
			return false, fmt.Errorf("%w: blob %s: registry announces %d bytes from offset %d, descriptor says %d in all", ErrTooLarge, d, resp.ContentLength, start, size)
		}
	case http.StatusOK:
		if start > 0 {
			if err := t.restart(parent, "registry ignored the Range request"); err != nil {
				return false, err
			}
		}
		if resp.ContentLength > size {
			return false, fmt.Errorf("%w: blob %s: registry announces %d bytes, descriptor says %d", ErrTooLarge, d, resp.ContentLength, size)
		}
		if resp.ContentLength >= 0 && resp.ContentLength < size {
			return false, fmt.Errorf("%w: blob %s: registry announces %d bytes, descriptor says %d", ErrProtocol, d, resp.ContentLength, size)
		}
	case http.StatusRequestedRangeNotSatisfiable:
		if err := t.restart(parent, "registry refused the range"); err != nil {
			return false, err
		}
		return false, retryable{fmt.Errorf("%w: blob %s: range %d-%d not satisfiable", ErrProtocol, d, start, size-1)}
	case http.StatusNotFound:
		return false, fmt.Errorf("%w: blob %s: %w", ErrNotFound, d, transport.CheckError(resp, http.StatusOK))
	default:
		return false, transport.CheckError(resp, http.StatusOK, http.StatusPartialContent)
	}
	if ct := resp.Header.Get("Content-Type"); strings.HasPrefix(ct, "text/html") {
		return false, fmt.Errorf("%w: blob %s came as %q (a proxy or login page?)", ErrMediaType, d, ct)
	}

	body := io.Reader(resp.Body)
	if timer != nil {
		body = &stallReader{r: body, t: timer, d: t.r.o.stallTimeout}
	}
	for t.off < size {
		n := min(int64(len(t.buf)), size-t.off)
		k, rerr := io.ReadFull(body, t.buf[:n])
		if k > 0 {
			if err := t.sink.Append(parent, d, t.off, t.buf[:k]); err != nil {
				return progressed, permanent{fmt.Errorf("blob %s: sink append at %d: %w", d, t.off, err)}
			}
			t.h.Write(t.buf[:k])
			t.off += int64(k)
			progressed = true
			t.event(EventAdvance, nil)
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				rerr = io.ErrUnexpectedEOF
			}
			return progressed, retryable{fmt.Errorf("blob %s: stream ended at byte %d of %d: %w", d, t.off, size, cause(rerr))}
		}
	}
	// Every declared byte arrived; one more means the blob is oversized.
	var extra [1]byte
	if k, _ := io.ReadFull(body, extra[:]); k > 0 {
		err := fmt.Errorf("%w: blob %s: registry sent more than the %d bytes the descriptor declares", ErrTooLarge, d, size)
		if derr := t.sink.Discard(parent, d); derr != nil {
			err = errors.Join(err, fmt.Errorf("discard partial: %w", derr))
		}
		t.off = 0
		t.h.Reset()
		return progressed, err
	}
	return progressed, nil
}

// checkContentRange accepts only "bytes start-(size-1)/size" (or "/*").
func checkContentRange(cr string, start, size int64) error {
	spec, ok := strings.CutPrefix(cr, "bytes ")
	if !ok {
		return fmt.Errorf("206 with Content-Range %q, want bytes %d-%d/%d", cr, start, size-1, size)
	}
	rng, total, ok := strings.Cut(spec, "/")
	first, last, ok2 := strings.Cut(rng, "-")
	if !ok || !ok2 {
		return fmt.Errorf("206 with malformed Content-Range %q", cr)
	}
	f, err1 := strconv.ParseInt(first, 10, 64)
	l, err2 := strconv.ParseInt(last, 10, 64)
	if err1 != nil || err2 != nil || f != start || l != size-1 {
		return fmt.Errorf("206 with Content-Range %q, want bytes %d-%d/%d", cr, start, size-1, size)
	}
	if total != "*" {
		n, err := strconv.ParseInt(total, 10, 64)
		if err != nil || n != size {
			return fmt.Errorf("206 with Content-Range %q: total differs from the descriptor's %d", cr, size)
		}
	}
	return nil
}

// ReadBlob downloads a small blob into memory, verified like PullBlob but
// without progress events; a descriptor larger than limit is refused.
func (r *Repository) ReadBlob(ctx context.Context, desc v1.Descriptor, limit int64) ([]byte, error) {
	if desc.Size > limit {
		return nil, fmt.Errorf("%w: blob %s is %d bytes, limit %d", ErrTooLarge, desc.Digest, desc.Size, limit)
	}
	mem := NewMemSink()
	if err := r.pullBlob(ctx, desc, mem, "", true); err != nil {
		return nil, err
	}
	b, _ := mem.Bytes(desc.Digest)
	return b, nil
}
