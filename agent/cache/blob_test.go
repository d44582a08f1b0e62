package cache

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	bolt "go.etcd.io/bbolt"
)

func TestPutReadRoundTrip(t *testing.T) {
	const cs = 1024
	ctx := context.Background()
	c := mustOpen(t, tempPath(t), Options{ChunkSize: cs})
	writers := []struct {
		name  string
		write func(b []byte) (string, error)
	}{
		{"PutBytes", func(b []byte) (string, error) { return c.PutBytes(ctx, b) }},
		{"Put", func(b []byte) (string, error) {
			d, n, err := c.Put(ctx, bytes.NewReader(b))
			if err == nil && n != int64(len(b)) {
				t.Errorf("Put size = %d, want %d", n, len(b))
			}
			return d, err
		}},
		{"Put/one-byte-reader", func(b []byte) (string, error) {
			d, _, err := c.Put(ctx, iotest.OneByteReader(bytes.NewReader(b)))
			return d, err
		}},
		{"Put/half-reader", func(b []byte) (string, error) {
			d, _, err := c.Put(ctx, iotest.HalfReader(bytes.NewReader(b)))
			return d, err
		}},
	}
	sizes := []struct {
		name       string
		n          int
		wantChunks int
	}{
		{"empty", 0, 0},
		{"one byte", 1, 1},
		{"chunk-1", cs - 1, 1},
		{"chunk", cs, 1},
		{"chunk+1", cs + 1, 2},
		{"many chunks", 9*cs + 17, 10},
		{"many batches", (2*stagingBatch+1)*cs + 3, 2*stagingBatch + 2},
	}
	for wi, w := range writers {
		for _, sz := range sizes {
			t.Run(w.name+"/"+sz.name, func(t *testing.T) {
				data := randomBytes(uint64(wi*100+sz.n), sz.n)
				digest, err := w.write(data)
				if err != nil {
					t.Fatalf("write: %v", err)
				}
				if want := DigestOf(data); digest != want {
					t.Fatalf("digest = %s, want %s", digest, want)
				}
				got, err := c.ReadBlob(ctx, digest)
				if err != nil {
					t.Fatalf("ReadBlob: %v", err)
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("ReadBlob returned %d bytes differing from the %d written", len(got), len(data))
				}
				if !c.HasBlob(digest) {
					t.Error("HasBlob = false after write")
				}
				info, err := c.Blob(digest)
				if err != nil || info.Size != int64(sz.n) || info.Refs != 0 {
					t.Errorf("Blob = %+v, %v; want size %d, 0 refs", info, err, sz.n)
				}
				if n := rawChunkCount(t, c, digest); n != sz.wantChunks {
					t.Errorf("stored in %d chunks, want %d", n, sz.wantChunks)
				}
				if err := c.DeleteBlob(ctx, digest); err != nil {
					t.Fatalf("DeleteBlob: %v", err)
				}
				if c.HasBlob(digest) {
					t.Error("HasBlob = true after DeleteBlob")
				}
			})
		}
	}
}

func TestLargeBlobMultiChunk(t *testing.T) {
	ctx := context.Background()
	path := tempPath(t)
	c := mustOpen(t, path, Options{})
	data := randomBytes(5, 5<<20+123)
	digest, n, err := c.Put(ctx, bytes.NewReader(data))
	if err != nil || n != int64(len(data)) {
		t.Fatalf("Put = %d, %v", n, err)
	}
	if got, want := rawChunkCount(t, c, digest), 6; got != want {
		t.Errorf("%d chunks, want %d of DefaultChunkSize", got, want)
	}
	got, err := c.ReadBlob(ctx, digest)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadBlob: %d bytes, equal=%v, err=%v", len(got), bytes.Equal(got, data), err)
	}
	u, err := c.Usage()
	if err != nil || u.Bytes != int64(len(data)) || u.Blobs != 1 || u.Reserved != 0 {
		t.Errorf("Usage = %+v, %v", u, err)
	}
}

func TestDedup(t *testing.T) {
	ctx := context.Background()
	c := mustOpen(t, tempPath(t), Options{ChunkSize: 512})
	data := randomBytes(1, 3000)
	d1, err := c.PutBytes(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := c.PutBytes(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	d3, _, err := c.Put(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"a", "b"} {
		if _, err := c.ImportModel(ctx, m, "", data, VersionRecord{}); err != nil {
			t.Fatal(err)
		}
	}
	if d1 != d2 || d1 != d3 {
		t.Fatalf("digests differ: %s %s %s", d1, d2, d3)
	}
	u, err := c.Usage()
	if err != nil || u.Blobs != 1 || u.Bytes != int64(len(data)) {
		t.Errorf("Usage = %+v, %v; want one blob of %d bytes", u, err, len(data))
	}
	info, err := c.Blob(d1)
	if err != nil || info.Refs != 2 {
		t.Errorf("Blob = %+v, %v; want 2 refs", info, err)
	}
	if err := c.DeleteBlob(ctx, d1); !errors.Is(err, ErrInUse) {
		t.Errorf("DeleteBlob of a referenced blob = %v, want ErrInUse", err)
	}
	var partials int
	_ = c.view(func(_ *bolt.Tx, s schema) error {
		partials = s.partials.Stats().BucketN - 1
		return nil
	})
	if partials != 0 {
		t.Errorf("%d partial buckets left after deduplicated Put", partials)
	}
}

func TestCorruptBlobDetected(t *testing.T) {
	ctx := context.Background()
	const cs = 1000
	data := randomBytes(7, 3*cs+10) // chunks 0..3, the last 10 bytes long
	chunk := func(s schema, d string) *bolt.Bucket { return s.blobs.Bucket([]byte(d)).Bucket(bkChunks) }
	tests := []struct {
		name    string
		corrupt func(s schema, d string) error
		wantMsg string
	}{
		{"flipped byte in first chunk", func(s schema, d string) error {
			v := bytes.Clone(chunk(s, d).Get(chunkKey(0)))
			v[17] ^= 0x01
			return chunk(s, d).Put(chunkKey(0), v)
		}, "content hashes to"},
		{"flipped byte in last chunk", func(s schema, d string) error {
			v := bytes.Clone(chunk(s, d).Get(chunkKey(3)))
			v[9] ^= 0x80
			return chunk(s, d).Put(chunkKey(3), v)
		}, "content hashes to"},
		{"missing middle chunk", func(s schema, d string) error {
			return chunk(s, d).Delete(chunkKey(1))
		}, "chunk 1 missing"},
		{"truncated chunk", func(s schema, d string) error {
			return chunk(s, d).Put(chunkKey(2), bytes.Clone(chunk(s, d).Get(chunkKey(2))[:5]))
		}, "stored"},
		{"extra chunk", func(s schema, d string) error {
			return chunk(s, d).Put(chunkKey(4), []byte("tail"))
		}, "stored"},
		{"bad chunk key", func(s schema, d string) error {
			return chunk(s, d).Put([]byte("x"), []byte("tail"))
		}, "chunk key"},
		{"unparsable meta", func(s schema, d string) error {
			return s.blobs.Bucket([]byte(d)).Put(keyMeta, []byte("{not json"))
		}, "meta"},
		{"meta missing", func(s schema, d string) error {
			return s.blobs.Bucket([]byte(d)).Delete(keyMeta)
		}, "record missing"},
		{"meta claims a huge size", func(s schema, d string) error {
			return putJSON(s.blobs.Bucket([]byte(d)), keyMeta, blobMeta{Size: 1 << 62, ChunkSize: cs})
		}, "stored"},
		{"chunks bucket gone", func(s schema, d string) error {
			return s.blobs.Bucket([]byte(d)).DeleteBucket(bkChunks)
		}, "chunks missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustOpen(t, tempPath(t), Options{ChunkSize: cs})
			rec, err := c.ImportModel(ctx, "m", "", data, VersionRecord{})
			if err != nil {
				t.Fatal(err)
			}
			skipCheck(t, c)
			rawUpdate(t, c, func(s schema) error { return tt.corrupt(s, rec.Digest) })
			got, err := c.ReadBlob(ctx, rec.Digest)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("ReadBlob = %d bytes, %v; want ErrCorrupt", len(got), err)
			}
			if got != nil {
				t.Error("ReadBlob returned bytes with the error")
			}
			if !strings.Contains(err.Error(), rec.Digest) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not name the digest and %q", err, tt.wantMsg)
			}
			if err := c.Check(ctx); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), rec.Digest) {
				t.Errorf("Check = %v, want ErrCorrupt naming %s", err, rec.Digest)
			}
			// The damaged version can be removed, freeing the blob, and the
			// cache is whole again.
			if err := c.RemoveVersion(ctx, "m", "1"); err != nil {
				t.Fatalf("RemoveVersion: %v", err)
			}
			if err := c.Check(ctx); err != nil {
				t.Errorf("Check after removal: %v", err)
			}
		})
	}
}

func TestReadBlobErrors(t *testing.T) {
	ctx := context.Background()
	c := mustOpen(t, tempPath(t), Options{})
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	tests := []struct {
		name   string
		ctx    context.Context
		digest string
		want   error
	}{
		{"absent", ctx, DigestOf([]byte("nope")), ErrNotFound},
		{"no prefix", ctx, strings.Repeat("a", 64), ErrInvalid},
		{"short", ctx, "sha256:abc", ErrInvalid},
		{"upper case", ctx, "sha256:" + strings.Repeat("A", 64), ErrInvalid},
		{"canceled", canceled, DigestOf(nil), context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := c.ReadBlob(tt.ctx, tt.digest); !errors.Is(err, tt.want) {
				t.Errorf("ReadBlob = %v, want %v", err, tt.want)
			}
		})
	}
}

// errAfter yields n bytes of data, then fails.
type errAfter struct {
	r   io.Reader
	err error
}

func (e *errAfter) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		return n, e.err
	}
	return n, err
}

func TestPutFailureLeavesNothing(t *testing.T) {
	ctx := context.Background()
	const cs = 256
	boom := errors.New("connection reset")
	canceledCtx, cancel := context.WithCancel(ctx)
	tests := []struct {
		name   string
		ctx    context.Context
		opts   Options
		reader func() io.Reader
		want   error
	}{
		{"read error after many chunks", ctx, Options{ChunkSize: cs},
			func() io.Reader { return &errAfter{bytes.NewReader(randomBytes(1, 20*cs)), boom} }, boom},
		{"canceled mid-stream", canceledCtx, Options{ChunkSize: cs},
			func() io.Reader {
				return io.MultiReader(bytes.NewReader(randomBytes(2, 3*cs)), readerFunc(func(p []byte) (int, error) {
					cancel()
					return copy(p, make([]byte, cs)), nil
				}), bytes.NewReader(randomBytes(3, 20*cs)))
			}, context.Canceled},
		{"longer than the budget", ctx, Options{ChunkSize: cs, Budget: 10 * cs},
			func() io.Reader { return bytes.NewReader(randomBytes(4, 11*cs)) }, ErrNoSpace},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustOpen(t, tempPath(t), tt.opts)
			if _, _, err := c.Put(tt.ctx, tt.reader()); !errors.Is(err, tt.want) {
				t.Fatalf("Put = %v, want %v", err, tt.want)
			}
			var buckets int
			_ = c.view(func(_ *bolt.Tx, s schema) error {
				buckets = s.partials.Stats().BucketN - 1 + s.blobs.Stats().BucketN - 1
				return nil
			})
			if buckets != 0 {
				t.Errorf("%d blob or staging buckets left after a failed Put", buckets)
			}
		})
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func TestOpenRemovesInterruptedPut(t *testing.T) {
	path := tempPath(t)
	c, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// What a Put killed mid-stream leaves: a staging area with chunks.
	rawUpdate(t, c, func(s schema) error {
		p, err := s.partials.CreateBucket([]byte(stagingPrefix + "dead"))
		if err != nil {
			return err
		}
		ch, err := p.CreateBucket(bkChunks)
		if err != nil {
			return err
		}
		if err := ch.Put(chunkKey(0), []byte("partial data")); err != nil {
			return err
		}
		return putJSON(p, keyMeta, partialMeta{Expected: -1, ChunkSize: 1024, Staging: true})
	})
	// A resumable partial must survive the same reopen.
	d := DigestOf([]byte("x"))
	if err := c.BeginPartial(context.Background(), d, 1); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c = mustOpen(t, path, Options{})
	var keys []string
	_ = c.view(func(_ *bolt.Tx, s schema) error {
		return s.partials.ForEachBucket(func(k []byte) error {
			keys = append(keys, string(k))
			return nil
		})
	})
	if len(keys) != 1 || keys[0] != d {
		t.Errorf("partials after reopen = %q, want only %s", keys, d)
	}
}

func TestChunkKeyOrder(t *testing.T) {
	// Big-endian keys make byte order equal numeric order, which walkChunks
	// relies on.
	for _, i := range []uint64{0, 1, 255, 256, 1 << 32, 1<<64 - 2} {
		a, b := chunkKey(i), chunkKey(i+1)
		if bytes.Compare(a, b) >= 0 {
			t.Errorf("chunkKey(%d) >= chunkKey(%d)", i, i+1)
		}
		if chunkIndex(a) != i || binary.BigEndian.Uint64(a) != i {
			t.Errorf("chunkIndex(chunkKey(%d)) = %d", i, chunkIndex(a))
		}
	}
}
