package ota

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/edgefleet/edgefleet/ota/artifact"
	"github.com/edgefleet/edgefleet/ota/durable"
)

// Sink stores downloaded blobs by digest, the way a content store does:
// bytes arrive in order into a partial blob, which becomes a committed blob
// only after the puller has verified its digest. The agent's bbolt cache
// implements it; MemSink and DirSink are implementations for tests and the
// CLI.
//
// A puller calls, per blob: Committed (skip if true), Offset and Partial (to
// re-hash what an earlier attempt left), then Append for each chunk in
// order, and finally Commit (digest matched) or Discard (digest mismatch,
// oversized blob, or a registry that ignores ranges). Implementations must be
// safe for concurrent use on different digests.
type Sink interface {
	// Committed reports whether the complete, verified blob is stored.
	Committed(ctx context.Context, d v1.Hash) (bool, error)
	// Offset returns the length of the partial blob (0 when there is none).
	Offset(ctx context.Context, d v1.Hash) (int64, error)
	// Partial returns a reader over the partial blob's bytes.
	Partial(ctx context.Context, d v1.Hash) (io.ReadCloser, error)
	// Append adds p at offset off, which must equal the current Offset;
	// otherwise it fails and stores nothing. p is valid only during the call.
	Append(ctx context.Context, d v1.Hash, off int64, p []byte) error
	// Commit turns the partial blob (an empty one if there is none) into
	// the committed blob d. The puller calls it only after the digest matched.
	Commit(ctx context.Context, d v1.Hash) error
	// Discard drops the partial blob; committed blobs are not affected.
	// Discarding a missing partial is not an error.
	Discard(ctx context.Context, d v1.Hash) error
}

// Reserver is implemented by sinks with a disk budget. Before a pull
// downloads anything, it calls Reserve with the bytes still missing (blob
// sizes less what is already committed or partially present); an error
// aborts the pull before any download.
type Reserver interface {
	Reserve(ctx context.Context, need int64) error
}

// ErrOffset is returned by the sinks in this package when Append's offset
// does not match the partial blob's length.
var ErrOffset = errors.New("append offset does not match the partial blob")

// MemSink is an in-memory Sink.
type MemSink struct {
	mu      sync.Mutex // guards the maps
	partial map[v1.Hash][]byte
	blobs   map[v1.Hash][]byte
}

// NewMemSink returns an empty MemSink.
func NewMemSink() *MemSink {
	return &MemSink{partial: map[v1.Hash][]byte{}, blobs: map[v1.Hash][]byte{}}
}

// Committed implements Sink.
func (s *MemSink) Committed(_ context.Context, d v1.Hash) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.blobs[d]
	return ok, nil
}

// Offset implements Sink.
func (s *MemSink) Offset(_ context.Context, d v1.Hash) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(len(s.partial[d])), nil
}

// Partial implements Sink.
func (s *MemSink) Partial(_ context.Context, d v1.Hash) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return io.NopCloser(bytes.NewReader(bytes.Clone(s.partial[d]))), nil
}

// Append implements Sink.
func (s *MemSink) Append(_ context.Context, d v1.Hash, off int64, p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := int64(len(s.partial[d])); off != n {
		return fmt.Errorf("%w: offset %d, partial %s has %d bytes", ErrOffset, off, d, n)
	}
	s.partial[d] = append(s.partial[d], p...)
	return nil
}

// Commit implements Sink.
func (s *MemSink) Commit(_ context.Context, d v1.Hash) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.partial[d]
	if b == nil {
		b = []byte{}
	}
	s.blobs[d] = b
	delete(s.partial, d)
	return nil
}

// Discard implements Sink.
func (s *MemSink) Discard(_ context.Context, d v1.Hash) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.partial, d)
	return nil
}

// Bytes returns a committed blob.
func (s *MemSink) Bytes(d v1.Hash) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.blobs[d]
	return b, ok
}

// Len returns the number of committed blobs.
func (s *MemSink) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.blobs)
}

// DirSink is a Sink on a folder, laid out as
//
//	DIR/blobs/sha256/<hex>    committed blobs
//	DIR/partial/sha256/<hex>  partial downloads
//
// A partial file survives process restarts, so a later pull resumes it.
// Commit syncs the file and renames it into blobs/.
type DirSink struct {
	dir string
}

// NewDirSink creates the folder layout under dir if needed.
func NewDirSink(dir string) (*DirSink, error) {
	for _, sub := range []string{"blobs", "partial"} {
		if err := os.MkdirAll(filepath.Join(dir, sub, "sha256"), 0o755); err != nil {
			return nil, fmt.Errorf("sink: %w", err)
		}
	}
	return &DirSink{dir: dir}, nil
}

func (s *DirSink) path(kind string, d v1.Hash) (string, error) {
	if d.Algorithm != "sha256" || len(d.Hex) != 64 {
		return "", fmt.Errorf("sink: unsupported digest %q", d)
	}
	return filepath.Join(s.dir, kind, d.Algorithm, d.Hex), nil
}

// Path returns where the committed blob d lives (or would live).
func (s *DirSink) Path(d v1.Hash) string {
	p, _ := s.path("blobs", d)
	return p
}

// Open opens the committed blob d.
func (s *DirSink) Open(d v1.Hash) (*os.File, error) {
	p, err := s.path("blobs", d)
	if err != nil {
		return nil, err
	}
	return os.Open(p)
}

// Committed implements Sink.
func (s *DirSink) Committed(_ context.Context, d v1.Hash) (bool, error) {
	p, err := s.path("blobs", d)
	if err != nil {
		return false, err
	}
	_, err = os.Stat(p)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	}
	return false, err
}

// Offset implements Sink.
func (s *DirSink) Offset(_ context.Context, d v1.Hash) (int64, error) {
	p, err := s.path("partial", d)
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(p)
	switch {
	case err == nil:
		return fi.Size(), nil
	case errors.Is(err, os.ErrNotExist):
		return 0, nil
	}
	return 0, err
}

// Partial implements Sink.
func (s *DirSink) Partial(_ context.Context, d v1.Hash) (io.ReadCloser, error) {
	p, err := s.path("partial", d)
	if err != nil {
		return nil, err
	}
	return os.Open(p)
}

// Append implements Sink.
func (s *DirSink) Append(_ context.Context, d v1.Hash, off int64, b []byte) (err error) {
	p, err := s.path("partial", d)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("sink: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("sink: %w", cerr)
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("sink: %w", err)
	}
	if fi.Size() != off {
		return fmt.Errorf("%w: offset %d, partial %s has %d bytes", ErrOffset, off, d, fi.Size())
	}
	if _, err := f.Write(b); err != nil {
		return fmt.Errorf("sink: %w", err)
	}
	return nil
}

// Commit implements Sink.
func (s *DirSink) Commit(_ context.Context, d v1.Hash) error {
	src, err := s.path("partial", d)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(src, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("sink: %w", err)
	}
	serr := f.Sync()
	if cerr := f.Close(); serr == nil {
		serr = cerr
	}
	if serr != nil {
		return fmt.Errorf("sink: %w", serr)
	}
	dst := s.Path(d)
	if err := os.Rename(src, dst); err != nil {
		return fmt.Errorf("sink: %w", err)
	}
	if err := durable.SyncDir(filepath.Dir(dst)); err != nil {
		return fmt.Errorf("sink: %w", err)
	}
	return nil
}

// Discard implements Sink.
func (s *DirSink) Discard(_ context.Context, d v1.Hash) error {
	p, err := s.path("partial", d)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("sink: %w", err)
	}
	return nil
}

// Compile-time interface checks.
var (
	_ Sink = (*MemSink)(nil)
	_ Sink = (*DirSink)(nil)
)

// Export writes the artifact's files from the sink into dir, each under its
// title (ORAS-style), plus the config as "config.json" unless a layer
// already uses that name. Every blob must be committed. Files are written
// to a temporary name and renamed, so dir never holds a partial file.
func (s *DirSink) Export(res *Resolved, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	type file struct {
		name string
		d    v1.Hash
	}
	var files []file
	titles := map[string]bool{}
	for _, l := range res.Manifest.Layers {
		title := l.Annotations[artifact.AnnotationTitle]
		if err := artifact.CheckTitle(title); err != nil { // ParseManifest checked; be safe anyway
			return fmt.Errorf("export: %w", err)
		}
		titles[title] = true
		files = append(files, file{title, l.Digest})
	}
	if !titles["config.json"] {
		files = append(files, file{"config.json", res.Manifest.Config.Digest})
	}
	for _, f := range files {
		if err := s.exportOne(f.d, filepath.Join(dir, f.name)); err != nil {
			return fmt.Errorf("export %s: %w", f.name, err)
		}
	}
	return nil
}

func (s *DirSink) exportOne(d v1.Hash, dst string) (err error) {
	src, err := s.Open(d)
	if err != nil {
		return err
	}
	defer src.Close()
	return durable.WriteFrom(dst, src, 0o644)
}
