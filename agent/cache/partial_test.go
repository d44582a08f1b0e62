package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
)

func TestPartialResumeAcrossReopen(t *testing.T) {
	ctx := context.Background()
	const cs = 1000
	path := tempPath(t)
	data := randomBytes(11, 7*cs+333)
	digest := DigestOf(data)
	cuts := []struct {
		name string
		at   int
	}{
		{"mid chunk", 2*cs + 500},
		{"on a chunk boundary", 3 * cs},
		{"after one byte", 1},
		{"before the last byte", len(data) - 1},
	}
	for _, cut := range cuts {
		t.Run(cut.name, func(t *testing.T) {
			c, err := Open(path, Options{ChunkSize: cs})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.BeginPartial(ctx, digest, int64(len(data))); err != nil {
				t.Fatal(err)
			}
			// The connection drops after cut.at bytes.
			n, err := c.WritePartialFrom(ctx, digest, io.LimitReader(bytes.NewReader(data), int64(cut.at)))
			if err != nil || n != int64(cut.at) {
				t.Fatalf("WritePartialFrom = %d, %v; want %d", n, err, cut.at)
			}
			if err := c.CommitPartial(ctx, digest); !errors.Is(err, ErrInvalid) {
				t.Fatalf("CommitPartial of an incomplete write = %v, want ErrInvalid", err)
			}
			if err := c.Close(); err != nil { // the agent restarts
				t.Fatal(err)
			}

			c = mustOpen(t, path, Options{ChunkSize: 4 * cs}) // a new chunk size must not disturb the partial
			if c.HasBlob(digest) {
				t.Fatal("incomplete blob visible as complete")
			}
			off, err := c.PartialOffset(digest)
			if err != nil || off != int64(cut.at) {
				t.Fatalf("PartialOffset = %d, %v; want %d", off, err, cut.at)
			}
			ps, err := c.Partials()
			if err != nil || len(ps) != 1 || ps[0].Digest != digest || ps[0].Offset != off || ps[0].ExpectedSize != int64(len(data)) {
				t.Fatalf("Partials = %+v, %v", ps, err)
			}
			u, _ := c.Usage()
			if u.Reserved != int64(len(data)) || u.Partials != 1 || u.Blobs != 0 {
				t.Errorf("Usage during partial = %+v", u)
			}
			// BeginPartial again (as a restarted puller does) keeps the progress.
			if err := c.BeginPartial(ctx, digest, int64(len(data))); err != nil {
				t.Fatal(err)
			}
			if off2, _ := c.PartialOffset(digest); off2 != off {
				t.Fatalf("BeginPartial reset the offset to %d", off2)
			}
			n, err = c.WritePartialFrom(ctx, digest, bytes.NewReader(data[off:]))
			if err != nil || n != int64(len(data))-off {
				t.Fatalf("resume WritePartialFrom = %d, %v", n, err)
			}
			if err := c.CommitPartial(ctx, digest); err != nil {
				t.Fatalf("CommitPartial: %v", err)
			}
			got, err := c.ReadBlob(ctx, digest)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("ReadBlob after resume: equal=%v, %v", bytes.Equal(got, data), err)
			}
			if _, err := c.PartialOffset(digest); !errors.Is(err, ErrNotFound) {
				t.Errorf("partial still there after commit: %v", err)
			}
			u, _ = c.Usage()
			if u.Reserved != 0 || u.Bytes != int64(len(data)) {
				t.Errorf("Usage after commit = %+v", u)
			}
			if err := c.DeleteBlob(ctx, digest); err != nil {
				t.Fatal(err)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestCommitPartialWrongDigest(t *testing.T) {
	ctx := context.Background()
	c := mustOpen(t, tempPath(t), Options{ChunkSize: 512, Budget: 1 << 20})
	want := randomBytes(1, 2000)
	served := randomBytes(2, 2000) // same length, other bytes
	digest := DigestOf(want)
	if err := c.BeginPartial(ctx, digest, int64(len(want))); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WritePartialFrom(ctx, digest, bytes.NewReader(served)); err != nil {
		t.Fatal(err)
	}
	err := c.CommitPartial(ctx, digest)
	if !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("CommitPartial = %v, want ErrDigestMismatch", err)
	}
	if c.HasBlob(digest) || c.HasBlob(DigestOf(served)) {
		t.Error("mismatched bytes stored as a blob")
	}
	if _, err := c.PartialOffset(digest); !errors.Is(err, ErrNotFound) {
		t.Errorf("mismatched partial kept: %v", err)
	}
	if u, _ := c.Usage(); u.Reserved != 0 || u.Bytes != 0 {
		t.Errorf("Usage after discard = %+v", u)
	}
	// A clean retry works.
	if err := c.BeginPartial(ctx, digest, int64(len(want))); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WritePartialFrom(ctx, digest, bytes.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	if err := c.CommitPartial(ctx, digest); err != nil {
		t.Fatal(err)
	}
}

func TestPartialErrors(t *testing.T) {
	ctx := context.Background()
	data := randomBytes(3, 1500)
	digest := DigestOf(data)
	present := randomBytes(4, 10)
	tests := []struct {
		name string
		// run gets a cache with a partial of digest (len(data) bytes) holding
		// its first 100 bytes, and the blob of present stored.
		run        func(c *Cache) error
		want       error
		wantOffset int64 // the partial's offset afterwards; -1: gone
	}{
		{"append at a stale offset", func(c *Cache) error {
			return c.AppendPartial(ctx, digest, 0, data[:10])
		}, ErrInvalid, 100},
		{"append leaving a hole", func(c *Cache) error {
			return c.AppendPartial(ctx, digest, 200, data[200:210])
		}, ErrInvalid, 100},
		{"append past the announced size", func(c *Cache) error {
			return c.AppendPartial(ctx, digest, 100, make([]byte, len(data)))
		}, ErrInvalid, 100},
		{"source longer than announced", func(c *Cache) error {
			_, err := c.WritePartialFrom(ctx, digest, io.MultiReader(bytes.NewReader(data[100:]), bytes.NewReader([]byte("x"))))
			return err
		}, ErrInvalid, int64(len(data))},
		{"source read error keeps what arrived", func(c *Cache) error {
			_, err := c.WritePartialFrom(ctx, digest, &errAfter{bytes.NewReader(data[100:700]), io.ErrClosedPipe})
			return err
		}, io.ErrClosedPipe, 700},
		{"commit incomplete", func(c *Cache) error {
			return c.CommitPartial(ctx, digest)
		}, ErrInvalid, 100},
		{"begin with another size", func(c *Cache) error {
			return c.BeginPartial(ctx, digest, 99)
		}, ErrExists, 100},
		{"begin a complete blob", func(c *Cache) error {
			return c.BeginPartial(ctx, DigestOf(present), 10)
		}, ErrExists, 100},
		{"begin with a bad digest", func(c *Cache) error {
			return c.BeginPartial(ctx, "md5:abc", 10)
		}, ErrInvalid, 100},
		{"begin with a negative size", func(c *Cache) error {
			return c.BeginPartial(ctx, DigestOf([]byte("y")), -1)
		}, ErrInvalid, 100},
		{"append to an unknown partial", func(c *Cache) error {
			return c.AppendPartial(ctx, DigestOf([]byte("z")), 0, []byte("z"))
		}, ErrNotFound, 100},
		{"abort", func(c *Cache) error {
			return c.AbortPartial(ctx, digest)
		}, nil, -1},
		{"abort unknown", func(c *Cache) error {
			return c.AbortPartial(ctx, DigestOf([]byte("z")))
		}, ErrNotFound, 100},
		{"commit when another writer completed the blob", func(c *Cache) error {
			if _, err := c.PutBytes(ctx, data); err != nil {
				return err
			}
			if _, err := c.WritePartialFrom(ctx, digest, bytes.NewReader(data[100:])); err != nil {
				return err
			}
			return c.CommitPartial(ctx, digest)
		}, nil, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustOpen(t, tempPath(t), Options{ChunkSize: 64})
			if _, err := c.PutBytes(ctx, present); err != nil {
				t.Fatal(err)
			}
			if err := c.BeginPartial(ctx, digest, int64(len(data))); err != nil {
				t.Fatal(err)
			}
			if err := c.AppendPartial(ctx, digest, 0, data[:100]); err != nil {
				t.Fatal(err)
			}
			if err := tt.run(c); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			off, err := c.PartialOffset(digest)
			switch {
			case tt.wantOffset < 0 && !errors.Is(err, ErrNotFound):
				t.Errorf("partial still present at %d (%v)", off, err)
			case tt.wantOffset >= 0 && (err != nil || off != tt.wantOffset):
				t.Errorf("PartialOffset = %d, %v; want %d", off, err, tt.wantOffset)
			}
		})
	}
}

func TestAppendPartialSmallPieces(t *testing.T) {
	// Appends that do not line up with chunks fill the last chunk first.
	ctx := context.Background()
	c := mustOpen(t, tempPath(t), Options{ChunkSize: 100})
	data := randomBytes(9, 1234)
	digest := DigestOf(data)
	if err := c.BeginPartial(ctx, digest, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	for off, step := 0, 1; off < len(data); step = step*3 + 1 {
		end := min(off+step, len(data))
		if err := c.AppendPartial(ctx, digest, int64(off), data[off:end]); err != nil {
			t.Fatalf("AppendPartial(%d..%d): %v", off, end, err)
		}
		off = end
	}
	if err := c.CommitPartial(ctx, digest); err != nil {
		t.Fatal(err)
	}
	if n := rawChunkCount(t, c, digest); n != 13 {
		t.Errorf("%d chunks, want 13", n)
	}
	got, err := c.ReadBlob(ctx, digest)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadBlob: equal=%v, %v", bytes.Equal(got, data), err)
	}
}
