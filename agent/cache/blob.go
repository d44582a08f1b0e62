package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// stagingBatch is how many chunks Put writes per transaction.
const stagingBatch = 8

// blobMeta is the JSON value at blobs/<digest>/meta.
type blobMeta struct {
	Size      int64     `json:"size"`
	ChunkSize int       `json:"chunk_size"`
	Created   time.Time `json:"created"`
	LastUsed  time.Time `json:"last_used"`
}

// BlobInfo describes one complete blob.
type BlobInfo struct {
	Digest   string
	Size     int64
	Created  time.Time
	LastUsed time.Time
	// Refs is the number of versions whose record names this blob.
	Refs int
}

// DigestOf returns the cache digest of b: "sha256:" and 64 lowercase hex
// digits.
func DigestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ValidateDigest reports whether d is a digest the cache accepts:
// "sha256:" followed by 64 lowercase hex digits. The error wraps ErrInvalid.
func ValidateDigest(d string) error {
	const prefix = "sha256:"
	if len(d) != len(prefix)+64 || d[:len(prefix)] != prefix {
		return fmt.Errorf("digest %q: want sha256:<64 hex digits>: %w", d, ErrInvalid)
	}
	for _, r := range d[len(prefix):] {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') {
			return fmt.Errorf("digest %q: want lowercase hex: %w", d, ErrInvalid)
		}
	}
	return nil
}

func digestFromHash(h hash.Hash) string {
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// Put stores the bytes read from r until EOF as a blob and returns its digest
// and size. It streams: at most a few chunks are in memory, written in their
// own transactions to a staging area, and the blob becomes visible only in the
// final transaction, after r is exhausted. A blob already present is kept and
// the new copy discarded. The budget is enforced as in PutBytes; a stream
// longer than the whole budget stops early with ErrNoSpace.
func (c *Cache) Put(ctx context.Context, r io.Reader) (digest string, size int64, err error) {
	key := []byte(stagingPrefix + randomHex())
	cs := c.chunk
	now := c.now()
	if err := c.update(ctx, func(_ *bolt.Tx, s schema) error {
		b, err := s.partials.CreateBucket(key)
		if err != nil {
			return err
		}
		if _, err := b.CreateBucket(bkChunks); err != nil {
			return err
		}
		return putJSON(b, keyMeta, partialMeta{Expected: -1, ChunkSize: cs, Started: now, Updated: now, Staging: true})
	}); err != nil {
		return "", 0, fmt.Errorf("put blob: %w", err)
	}
	done := false
	defer func() {
		if done {
			return
		}
		if err := c.update(context.Background(), func(_ *bolt.Tx, s schema) error {
			return s.partials.DeleteBucket(key)
		}); err != nil {
			c.log.Warn("cache: dropping staged put", "key", string(key), "err", err)
		}
	}()

	h := sha256.New()
	bufs := make([][]byte, stagingBatch)
	var batch [][]byte
	var next uint64
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := c.update(ctx, func(_ *bolt.Tx, s schema) error {
			chunks := s.partials.Bucket(key).Bucket(bkChunks)
			for i, v := range batch {
				if err := chunks.Put(chunkKey(next+uint64(i)), v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		next += uint64(len(batch))
		batch = batch[:0]
		return nil
	}
	for eof := false; !eof; {
		if err := ctx.Err(); err != nil {
			return "", 0, fmt.Errorf("put blob: %w", err)
		}
		i := len(batch)
		if bufs[i] == nil {
			bufs[i] = make([]byte, cs)
		}
		n, rerr := io.ReadFull(r, bufs[i])
		switch {
		case rerr == io.EOF || rerr == io.ErrUnexpectedEOF:
			eof = true
		case rerr != nil:
			return "", 0, fmt.Errorf("put blob: read: %w", rerr)
		}
		if n == 0 {
			continue
		}
		h.Write(bufs[i][:n])
		size += int64(n)
		if c.budget > 0 && size > c.budget {
			return "", 0, fmt.Errorf("put blob: more than the whole budget of %d bytes: %w", c.budget, ErrNoSpace)
		}
		batch = append(batch, bufs[i][:n])
		if len(batch) == stagingBatch {
			if err := flush(); err != nil {
				return "", 0, fmt.Errorf("put blob: %w", err)
			}
		}
	}
	if err := flush(); err != nil {
		return "", 0, fmt.Errorf("put blob: %w", err)
	}
	digest = digestFromHash(h)
	var evicted []VersionRecord
	err = c.update(ctx, func(_ *bolt.Tx, s schema) error {
		evicted = nil
		if s.blobs.Bucket([]byte(digest)) != nil {
			return s.partials.DeleteBucket(key)
		}
		var err error
		if evicted, err = c.makeRoom(s, size, nil); err != nil {
			return err
		}
		return c.promote(s, key, digest, blobMeta{Size: size, ChunkSize: cs, Created: now, LastUsed: now})
	})
	if err != nil {
		return "", 0, fmt.Errorf("put blob %s: %w", digest, err)
	}
	done = true
	c.notifyEvicted(evicted)
	return digest, size, nil
}

// promote turns the partial at key into the complete blob digest by moving its
// chunks bucket, writes the blob's meta and deletes the partial.
func (c *Cache) promote(s schema, key []byte, digest string, meta blobMeta) error {
	blob, err := s.blobs.CreateBucket([]byte(digest))
	if err != nil {
		return err
	}
	p := s.partials.Bucket(key)
	if err := p.MoveBucket(bkChunks, blob); err != nil {
		return err
	}
	if err := putJSON(blob, keyMeta, meta); err != nil {
		return err
	}
	return s.partials.DeleteBucket(key)
}

// PutBytes stores b as a blob in one transaction and returns its digest. A
// blob already present is left as it is. When the budget is set and b does
// not fit, unpinned versions are evicted (see EnsureSpace); if that is not
// enough, ErrNoSpace.
func (c *Cache) PutBytes(ctx context.Context, b []byte) (string, error) {
	digest := DigestOf(b)
	var evicted []VersionRecord
	err := c.update(ctx, func(_ *bolt.Tx, s schema) error {
		var err error
		evicted, err = c.storeBlob(s, digest, b)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("put blob %s: %w", digest, err)
	}
	c.notifyEvicted(evicted)
	return digest, nil
}

// storeBlob writes b under digest unless present, making room in the budget
// first. It runs inside a write transaction.
func (c *Cache) storeBlob(s schema, digest string, b []byte) ([]VersionRecord, error) {
	if s.blobs.Bucket([]byte(digest)) != nil {
		return nil, nil
	}
	evicted, err := c.makeRoom(s, int64(len(b)), nil)
	if err != nil {
		return nil, err
	}
	blob, err := s.blobs.CreateBucket([]byte(digest))
	if err != nil {
		return nil, err
	}
	chunks, err := blob.CreateBucket(bkChunks)
	if err != nil {
		return nil, err
	}
	cs := c.chunk
	for i, off := uint64(0), 0; off < len(b); i, off = i+1, off+cs {
		if err := chunks.Put(chunkKey(i), b[off:min(off+cs, len(b))]); err != nil {
			return nil, err
		}
	}
	now := c.now()
	return evicted, putJSON(blob, keyMeta, blobMeta{Size: int64(len(b)), ChunkSize: cs, Created: now, LastUsed: now})
}

// walkChunks calls fn with each chunk of a chunks bucket in order, checking
// that indexes are contiguous from 0 and returns the total length. The slices
// are valid only during the transaction.
func walkChunks(chunks *bolt.Bucket, fn func([]byte)) (int64, error) {
	var total int64
	var want uint64
	cur := chunks.Cursor()
	for k, v := cur.First(); k != nil; k, v = cur.Next() {
		if len(k) != 8 || v == nil {
			return total, fmt.Errorf("chunk key %x: %w", k, ErrCorrupt)
		}
		if got := chunkIndex(k); got != want {
			return total, fmt.Errorf("chunk %d missing (next is %d): %w", want, got, ErrCorrupt)
		}
		want++
		total += int64(len(v))
		if fn != nil {
			fn(v)
		}
	}
	return total, nil
}

func chunkIndex(k []byte) uint64 {
	return uint64(k[0])<<56 | uint64(k[1])<<48 | uint64(k[2])<<40 | uint64(k[3])<<32 |
		uint64(k[4])<<24 | uint64(k[5])<<16 | uint64(k[6])<<8 | uint64(k[7])
}

// ReadBlob returns the bytes of a complete blob after checking that they hash
// to digest. Stored bytes that do not (bit rot, a torn disk, tampering) give an
// error wrapping ErrCorrupt that names the digest; they are never returned. A
// successful read marks the blob used for eviction order.
func (c *Cache) ReadBlob(ctx context.Context, digest string) (data []byte, err error) {
	if err := ValidateDigest(digest); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var meta blobMeta
	err = c.view(func(_ *bolt.Tx, s schema) (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("reading the file panicked: %v: %w", r, ErrCorrupt)
			}
		}()
		blob := s.blobs.Bucket([]byte(digest))
		if blob == nil {
			return ErrNotFound
		}
		if err := getJSON(blob, keyMeta, &meta, "meta"); err != nil {
			return err
		}
		chunks := blob.Bucket(bkChunks)
		if chunks == nil {
			return fmt.Errorf("chunks missing: %w", ErrCorrupt)
		}
		total, err := walkChunks(chunks, nil)
		if err != nil {
			return err
		}
		if total != meta.Size {
			return fmt.Errorf("stored %d bytes, want %d: %w", total, meta.Size, ErrCorrupt)
		}
		data = make([]byte, 0, total)
		_, err = walkChunks(chunks, func(v []byte) { data = append(data, v...) })
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", digest, err)
	}
	if got := DigestOf(data); got != digest {
		return nil, fmt.Errorf("read blob %s: content hashes to %s: %w", digest, got, ErrCorrupt)
	}
	if now := c.now(); now.Sub(meta.LastUsed) >= touchInterval {
		c.touch(ctx, digest, now)
	}
	return data, nil
}

// touch records now as the blob's last use; failures are only logged since
// the read they follow succeeded.
func (c *Cache) touch(ctx context.Context, digest string, now time.Time) {
	err := c.update(ctx, func(_ *bolt.Tx, s schema) error {
		blob := s.blobs.Bucket([]byte(digest))
		if blob == nil {
			return nil // removed meanwhile
		}
		var meta blobMeta
		if err := getJSON(blob, keyMeta, &meta, "meta"); err != nil {
			return err
		}
		if !now.After(meta.LastUsed) {
			return nil
		}
		meta.LastUsed = now
		return putJSON(blob, keyMeta, meta)
	})
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		c.log.Warn("cache: recording blob use", "digest", digest, "err", err)
	}
}

// HasBlob reports whether a complete blob with this digest is stored. It does
// not verify the bytes; ReadBlob does.
func (c *Cache) HasBlob(digest string) bool {
	found := false
	_ = c.view(func(_ *bolt.Tx, s schema) error {
		found = s.blobs.Bucket([]byte(digest)) != nil
		return nil
	})
	return found
}

// Blob describes one complete blob; ErrNotFound if absent.
func (c *Cache) Blob(digest string) (BlobInfo, error) {
	var info BlobInfo
	err := c.view(func(_ *bolt.Tx, s schema) error {
		blob := s.blobs.Bucket([]byte(digest))
		if blob == nil {
			return ErrNotFound
		}
		var err error
		info, err = blobInfo(s, blob, digest)
		if err != nil {
			return err
		}
		info.Refs = len(blobRefs(s, digest))
		return nil
	})
	if err != nil {
		return BlobInfo{}, fmt.Errorf("blob %s: %w", digest, err)
	}
	return info, nil
}

// Blobs lists the complete blobs, sorted by digest.
func (c *Cache) Blobs() ([]BlobInfo, error) {
	var out []BlobInfo
	err := c.view(func(_ *bolt.Tx, s schema) error {
		refs := allRefs(s)
		return s.blobs.ForEachBucket(func(k []byte) error {
			info, err := blobInfo(s, s.blobs.Bucket(k), string(k))
			if err != nil {
				return err
			}
			info.Refs = len(refs[string(k)])
			out = append(out, info)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list blobs: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Digest < out[j].Digest })
	return out, nil
}

func blobInfo(_ schema, blob *bolt.Bucket, digest string) (BlobInfo, error) {
	var meta blobMeta
	if err := getJSON(blob, keyMeta, &meta, "blob "+digest+" meta"); err != nil {
		return BlobInfo{}, err
	}
	return BlobInfo{Digest: digest, Size: meta.Size, Created: meta.Created, LastUsed: meta.LastUsed}, nil
}

// DeleteBlob removes a complete blob that no version refers to. A blob that
// versions refer to is left in place with ErrInUse; remove those versions
// instead.
func (c *Cache) DeleteBlob(ctx context.Context, digest string) error {
	if err := ValidateDigest(digest); err != nil {
		return err
	}
	err := c.update(ctx, func(_ *bolt.Tx, s schema) error {
		if s.blobs.Bucket([]byte(digest)) == nil {
			return ErrNotFound
		}
		if refs := blobRefs(s, digest); len(refs) > 0 {
			return fmt.Errorf("%d versions refer to it, first %s:%s: %w", len(refs), refs[0].model, refs[0].version, ErrInUse)
		}
		return s.blobs.DeleteBucket([]byte(digest))
	})
	if err != nil {
		return fmt.Errorf("delete blob %s: %w", digest, err)
	}
	return nil
}
