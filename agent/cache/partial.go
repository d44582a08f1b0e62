package cache

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// partialMeta is the JSON value at partials/<key>/meta.
type partialMeta struct {
	// Expected is the announced size; -1 for a Put's staging area.
	Expected  int64     `json:"expected_size"`
	Offset    int64     `json:"offset"`
	ChunkSize int       `json:"chunk_size"`
	Started   time.Time `json:"started"`
	Updated   time.Time `json:"updated"`
	Staging   bool      `json:"staging,omitempty"`
}

// PartialInfo describes a resumable write in progress.
type PartialInfo struct {
	Digest       string
	ExpectedSize int64
	// Offset is how many bytes are stored: the next AppendPartial's offset.
	Offset  int64
	Started time.Time
	Updated time.Time
}

// BeginPartial starts a resumable write of the blob digest, announced as
// expectedSize bytes, and reserves that much of the budget (evicting unpinned
// versions if needed, as PutBytes does). If a partial write of digest with the
// same size exists, BeginPartial leaves it alone so the caller can resume at
// PartialOffset. It fails with ErrExists when the blob is already complete or
// a partial write of digest announced a different size.
func (c *Cache) BeginPartial(ctx context.Context, digest string, expectedSize int64) error {
	if err := ValidateDigest(digest); err != nil {
		return err
	}
	if expectedSize < 0 {
		return fmt.Errorf("begin partial %s: negative size %d: %w", digest, expectedSize, ErrInvalid)
	}
	var evicted []VersionRecord
	err := c.update(ctx, func(_ *bolt.Tx, s schema) error {
		evicted = nil
		if s.blobs.Bucket([]byte(digest)) != nil {
			return fmt.Errorf("blob is already cached: %w", ErrExists)
		}
		if p := s.partials.Bucket([]byte(digest)); p != nil {
			var meta partialMeta
			if err := getJSON(p, keyMeta, &meta, "partial meta"); err != nil {
				return err
			}
			if meta.Expected != expectedSize {
				return fmt.Errorf("a partial write announced %d bytes, not %d (abort it first): %w", meta.Expected, expectedSize, ErrExists)
			}
			return nil
		}
		var err error
		if evicted, err = c.makeRoom(s, expectedSize, nil); err != nil {
			return err
		}
		p, err := s.partials.CreateBucket([]byte(digest))
		if err != nil {
			return err
		}
		if _, err := p.CreateBucket(bkChunks); err != nil {
			return err
		}
		now := c.now()
		return putJSON(p, keyMeta, partialMeta{Expected: expectedSize, ChunkSize: c.chunk, Started: now, Updated: now})
	})
	if err != nil {
		return fmt.Errorf("begin partial %s: %w", digest, err)
	}
	c.notifyEvicted(evicted)
	return nil
}

func partialOf(s schema, digest string) (*bolt.Bucket, partialMeta, error) {
	var meta partialMeta
	p := s.partials.Bucket([]byte(digest))
	if p == nil {
		return nil, meta, fmt.Errorf("no partial write: %w", ErrNotFound)
	}
	if err := getJSON(p, keyMeta, &meta, "partial meta"); err != nil {
		return nil, meta, err
	}
	if meta.ChunkSize <= 0 || meta.ChunkSize > MaxChunkSize {
		return nil, meta, fmt.Errorf("partial chunk size %d: %w", meta.ChunkSize, ErrCorrupt)
	}
	if p.Bucket(bkChunks) == nil {
		return nil, meta, fmt.Errorf("partial chunks missing: %w", ErrCorrupt)
	}
	return p, meta, nil
}

// PartialOffset returns how many bytes of the partial write of digest are
// stored: where to resume. ErrNotFound if there is none.
func (c *Cache) PartialOffset(digest string) (int64, error) {
	var off int64
	err := c.view(func(_ *bolt.Tx, s schema) error {
		_, meta, err := partialOf(s, digest)
		off = meta.Offset
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("partial %s: %w", digest, err)
	}
	return off, nil
}

// Partials lists the resumable writes in progress, sorted by digest. Put's
// staging areas are not listed.
func (c *Cache) Partials() ([]PartialInfo, error) {
	var out []PartialInfo
	err := c.view(func(_ *bolt.Tx, s schema) error {
		return s.partials.ForEachBucket(func(k []byte) error {
			if strings.HasPrefix(string(k), stagingPrefix) {
				return nil
			}
			_, meta, err := partialOf(s, string(k))
			if err != nil {
				return fmt.Errorf("partial %s: %w", k, err)
			}
			out = append(out, PartialInfo{Digest: string(k), ExpectedSize: meta.Expected, Offset: meta.Offset, Started: meta.Started, Updated: meta.Updated})
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list partials: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Digest < out[j].Digest })
	return out, nil
}

// AppendPartial stores data at offset of the partial write of digest, in one
// transaction. offset must equal PartialOffset (ErrInvalid otherwise, so a
// confused resume cannot leave a hole or an overlap), and the write must not
// go beyond the announced size (ErrInvalid). Data is not checked until
// CommitPartial.
func (c *Cache) AppendPartial(ctx context.Context, digest string, offset int64, data []byte) error {
	err := c.update(ctx, func(_ *bolt.Tx, s schema) error {
		p, meta, err := partialOf(s, digest)
		if err != nil {
			return err
		}
		if offset != meta.Offset {
			return fmt.Errorf("append at offset %d, but %d bytes are stored: %w", offset, meta.Offset, ErrInvalid)
		}
		if end := offset + int64(len(data)); end > meta.Expected {
			return fmt.Errorf("append of %d bytes at %d goes past the announced size %d: %w", len(data), offset, meta.Expected, ErrInvalid)
		}
		if len(data) == 0 {
			return nil
		}
		chunks := p.Bucket(bkChunks)
		end := offset + int64(len(data))
		if err := appendChunks(chunks, meta.ChunkSize, offset, data); err != nil {
			return err
		}
		meta.Offset = end
		meta.Updated = c.now()
		return putJSON(p, keyMeta, meta)
	})
	if err != nil {
		return fmt.Errorf("append partial %s: %w", digest, err)
	}
	return nil
}

// CommitPartial hashes every stored byte of the partial write of digest and,
// when they hash to digest, makes them the complete blob in one transaction.
// Otherwise the partial write is discarded and the error wraps
// ErrDigestMismatch. A write shorter than announced fails with ErrInvalid and
// is kept for resuming. If the blob became complete meanwhile (another Put),
// the partial write is dropped and CommitPartial succeeds.
func (c *Cache) CommitPartial(ctx context.Context, digest string) error {
	var mismatch error
	err := c.update(ctx, func(_ *bolt.Tx, s schema) error {
		mismatch = nil
		p, meta, err := partialOf(s, digest)
		if err != nil {
			return err
		}
		if meta.Offset != meta.Expected {
			return fmt.Errorf("incomplete: %d of %d bytes stored: %w", meta.Offset, meta.Expected, ErrInvalid)
		}
		if s.blobs.Bucket([]byte(digest)) != nil {
			return s.partials.DeleteBucket([]byte(digest))
		}
		h := sha256.New()
		total, err := walkChunks(p.Bucket(bkChunks), func(v []byte) { h.Write(v) })
		if err == nil && total != meta.Offset {
			err = fmt.Errorf("chunks hold %d bytes, meta says %d: %w", total, meta.Offset, ErrCorrupt)
		}
		if err == nil {
			if got := digestFromHash(h); got != digest {
				err = fmt.Errorf("%d bytes hash to %s: %w", total, got, ErrDigestMismatch)
			}
		}
		if err != nil {
			// Commit the discard; report err after the transaction.
			mismatch = err
			return s.partials.DeleteBucket([]byte(digest))
		}
		now := c.now()
		return c.promote(s, []byte(digest), digest, blobMeta{Size: total, ChunkSize: meta.ChunkSize, Created: now, LastUsed: now})
	})
	if err == nil {
		err = mismatch
	}
	if err != nil {
		return fmt.Errorf("commit partial %s: %w", digest, err)
	}
	return nil
}

// AbortPartial discards the partial write of digest. ErrNotFound if there is
// none.
func (c *Cache) AbortPartial(ctx context.Context, digest string) error {
	err := c.update(ctx, func(_ *bolt.Tx, s schema) error {
		if s.partials.Bucket([]byte(digest)) == nil {
			return ErrNotFound
		}
		return s.partials.DeleteBucket([]byte(digest))
	})
	if err != nil {
		return fmt.Errorf("abort partial %s: %w", digest, err)
	}
	return nil
}

// WritePartialFrom appends what r yields to the partial write of digest,
// starting at its current offset (r must start there, e.g. the body of an
// HTTP Range response), until r ends or the announced size is reached. Each
// chunk is appended in its own transaction, so progress survives a crash. It
// returns the bytes appended; a read error is returned after everything read
// before it was stored. More bytes than announced fail with ErrInvalid. It
// does not commit.
func (c *Cache) WritePartialFrom(ctx context.Context, digest string, r io.Reader) (int64, error) {
	var off, expected int64
	var cs int
	err := c.view(func(_ *bolt.Tx, s schema) error {
		_, meta, err := partialOf(s, digest)
		off, expected, cs = meta.Offset, meta.Expected, meta.ChunkSize
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("write partial %s: %w", digest, err)
	}
	buf := make([]byte, cs)
	var written int64
	for off < expected {
		if err := ctx.Err(); err != nil {
			return written, fmt.Errorf("write partial %s: %w", digest, err)
		}
		// Fill up to the next chunk boundary so every append writes whole chunks.
		want := min(int64(cs)-off%int64(cs), expected-off)
		n, rerr := io.ReadFull(r, buf[:want])
		if n > 0 {
			if err := c.AppendPartial(ctx, digest, off, buf[:n]); err != nil {
				return written, err
			}
			off += int64(n)
			written += int64(n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			return written, nil
		}
		if rerr != nil {
			return written, fmt.Errorf("write partial %s: read: %w", digest, rerr)
		}
	}
	// The announced size is reached: the source must be exhausted too.
	var one [1]byte
	switch n, err := r.Read(one[:]); {
	case n > 0:
		return written, fmt.Errorf("write partial %s: source has more than the announced %d bytes: %w", digest, expected, ErrInvalid)
	case err != nil && !errors.Is(err, io.EOF):
		return written, fmt.Errorf("write partial %s: read: %w", digest, err)
	}
	return written, nil
}
