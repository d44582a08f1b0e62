package cache

import (
	"context"
	"errors"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/ota"
)

// The Cache is an ota.Sink and an ota.Reserver, so registry pulls stream
// straight into it:
//
//	res, err := ota.Pull(ctx, "localhost:5000/models/digits@sha256:...", c)
//
// Downloads use the resumable partial writes: every Append is one
// transaction, so a pull cut off by a dropped connection or a kill -9
// resumes from Offset in the next process, and nothing becomes a blob until
// Commit has re-hashed every stored byte. Partials created through Append
// grow with the data (their announced size is what is stored so far); ota
// checks the descriptor's size before it commits. A partial started with
// BeginPartial keeps its announced size and cannot be appended past it.

// sinkKey turns an OCI digest into the cache's digest key.
func sinkKey(d v1.Hash) (string, error) {
	k := d.String()
	if err := ValidateDigest(k); err != nil {
		return "", err
	}
	return k, nil
}

// Committed implements ota.Sink: whether the complete blob d is cached.
func (c *Cache) Committed(_ context.Context, d v1.Hash) (bool, error) {
	k, err := sinkKey(d)
	if err != nil {
		return false, err
	}
	var ok bool
	err = c.view(func(_ *bolt.Tx, s schema) error {
		ok = s.blobs.Bucket([]byte(k)) != nil
		return nil
	})
	return ok, err
}

// Offset implements ota.Sink: the length of the partial write of d, 0 when
// there is none.
func (c *Cache) Offset(_ context.Context, d v1.Hash) (int64, error) {
	k, err := sinkKey(d)
	if err != nil {
		return 0, err
	}
	off, err := c.PartialOffset(k)
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	return off, err
}

// Partial implements ota.Sink: a reader over the stored bytes of the partial
// write of d, one chunk (and one read transaction) at a time.
func (c *Cache) Partial(_ context.Context, d v1.Hash) (io.ReadCloser, error) {
	k, err := sinkKey(d)
	if err != nil {
		return nil, err
	}
	if _, err := c.PartialOffset(k); err != nil {
		return nil, err
	}
	return &partialReader{c: c, key: k}, nil
}

// partialReader reads a partial write's chunks in order.
type partialReader struct {
	c    *Cache
	key  string
	next uint64 // index of the next chunk to fetch
	buf  []byte // unread bytes of the current chunk
	eof  bool
}

func (r *partialReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.eof {
			return 0, io.EOF
		}
		err := r.c.view(func(_ *bolt.Tx, s schema) error {
			part, _, err := partialOf(s, r.key)
			if err != nil {
				return err
			}
			v := part.Bucket(bkChunks).Get(chunkKey(r.next))
			if v == nil {
				r.eof = true
				return nil
			}
			r.buf = append(r.buf[:0], v...) // v is valid only inside the transaction
			r.next++
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("read partial %s: %w", r.key, err)
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *partialReader) Close() error { return nil }

// Append implements ota.Sink: it stores p at off of the partial write of d in
// one transaction, creating the partial write when off is 0 and there is
// none. off must equal Offset (the error wraps ota.ErrOffset and ErrInvalid
// otherwise). The budget is enforced for the added bytes as in PutBytes,
// evicting unpinned versions if needed; ErrNoSpace when room cannot be made.
func (c *Cache) Append(ctx context.Context, d v1.Hash, off int64, p []byte) error {
	k, err := sinkKey(d)
	if err != nil {
		return err
	}
	var evicted []VersionRecord
	err = c.update(ctx, func(_ *bolt.Tx, s schema) error {
		evicted = nil
		if s.blobs.Bucket([]byte(k)) != nil {
			return fmt.Errorf("blob is already cached: %w", ErrExists)
		}
		part := s.partials.Bucket([]byte(k))
		var meta partialMeta
		now := c.now()
		if part == nil {
			if off != 0 {
				return fmt.Errorf("%w: offset %d, but there is no partial write: %w", ota.ErrOffset, off, ErrInvalid)
			}
			meta = partialMeta{ChunkSize: c.chunk, Started: now}
		} else {
			if _, meta, err = partialOf(s, k); err != nil {
				return err
			}
			if off != meta.Offset {
				return fmt.Errorf("%w: offset %d, but %d bytes are stored: %w", ota.ErrOffset, off, meta.Offset, ErrInvalid)
			}
		}
		end := off + int64(len(p))
		if grow := end - meta.Expected; grow > 0 {
			// A growing partial announces what it holds; ensure room for the rest.
			if evicted, err = c.makeRoom(s, grow, nil); err != nil {
				return err
			}
			meta.Expected = end
		}
		if part == nil {
			if part, err = s.partials.CreateBucket([]byte(k)); err != nil {
				return err
			}
			if _, err = part.CreateBucket(bkChunks); err != nil {
				return err
			}
		}
		if err := appendChunks(part.Bucket(bkChunks), meta.ChunkSize, off, p); err != nil {
			return err
		}
		meta.Offset, meta.Updated = end, now
		return putJSON(part, keyMeta, meta)
	})
	if err != nil {
		return fmt.Errorf("append %s: %w", k, err)
	}
	c.notifyEvicted(evicted)
	return nil
}

// appendChunks writes data at offset into a chunks bucket of chunk size cs,
// completing a short last chunk first.
func appendChunks(chunks *bolt.Bucket, cs int, offset int64, data []byte) error {
	size := int64(cs)
	idx, within := uint64(offset/size), offset%size
	if within > 0 && len(data) > 0 {
		old := chunks.Get(chunkKey(idx))
		if int64(len(old)) != within {
			return fmt.Errorf("last chunk holds %d bytes, want %d: %w", len(old), within, ErrCorrupt)
		}
		n := min(size-within, int64(len(data)))
		v := make([]byte, 0, within+n)
		v = append(append(v, old...), data[:n]...)
		if err := chunks.Put(chunkKey(idx), v); err != nil {
			return err
		}
		data = data[n:]
		idx++
	}
	for len(data) > 0 {
		n := min(size, int64(len(data)))
		if err := chunks.Put(chunkKey(idx), data[:n]); err != nil {
			return err
		}
		data = data[n:]
		idx++
	}
	return nil
}

// Commit implements ota.Sink: it turns the partial write of d (an empty one
// if there is none) into the blob d after re-hashing every stored byte (see
// CommitPartial). A blob that is already cached is left as it is.
func (c *Cache) Commit(ctx context.Context, d v1.Hash) error {
	k, err := sinkKey(d)
	if err != nil {
		return err
	}
	done := false
	err = c.update(ctx, func(_ *bolt.Tx, s schema) error {
		done = false
		if s.partials.Bucket([]byte(k)) != nil {
			return nil
		}
		if s.blobs.Bucket([]byte(k)) != nil {
			done = true
			return nil
		}
		part, err := s.partials.CreateBucket([]byte(k))
		if err != nil {
			return err
		}
		if _, err := part.CreateBucket(bkChunks); err != nil {
			return err
		}
		now := c.now()
		return putJSON(part, keyMeta, partialMeta{ChunkSize: c.chunk, Started: now, Updated: now})
	})
	if err != nil || done {
		return err
	}
	return c.CommitPartial(ctx, k)
}

// Discard implements ota.Sink: it drops the partial write of d, if any.
func (c *Cache) Discard(ctx context.Context, d v1.Hash) error {
	k, err := sinkKey(d)
	if err != nil {
		return err
	}
	if err := c.AbortPartial(ctx, k); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	return nil
}

// Reserve implements ota.Reserver: it makes room for need more bytes within
// the budget before a pull downloads anything (see EnsureSpace); the error
// wraps ErrNoSpace when that is impossible. Nothing is held back: the bytes
// count against the budget as they are appended.
func (c *Cache) Reserve(ctx context.Context, need int64) error {
	_, err := c.EnsureSpace(ctx, need, nil)
	return err
}

// Compile-time interface checks.
var (
	_ ota.Sink     = (*Cache)(nil)
	_ ota.Reserver = (*Cache)(nil)
)
