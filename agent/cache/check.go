package cache

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Check verifies the whole cache in one read transaction: bbolt's page-level
// consistency check; every blob's chunks are contiguous, add up to its size
// and hash to its digest; every partial write holds exactly its offset's
// bytes; every version names an existing blob with the recorded size; every
// version-naming state key names an existing version. It returns nil or all
// problems joined, each wrapping ErrCorrupt. It reads every stored byte, so
// it takes about as long as reading the file, and holds off writers meanwhile.
func (c *Cache) Check(ctx context.Context) error {
	var problems []error
	report := func(format string, args ...any) {
		problems = append(problems, fmt.Errorf(format+": %w", append(args, ErrCorrupt)...))
	}
	// A write transaction (rolled back) because bbolt's page check is only
	// safe in a read transaction when no writer runs at the same time.
	err := c.inRolledBackTx(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			report("bbolt: %v", err)
		}
		s, err := buckets(tx)
		if err != nil {
			return err
		}
		sizes := map[string]int64{}
		err = s.blobs.ForEachBucket(func(k []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			digest := string(k)
			if err := ValidateDigest(digest); err != nil {
				report("blob key %q is not a digest", digest)
				return nil
			}
			blob := s.blobs.Bucket(k)
			var meta blobMeta
			if err := getJSON(blob, keyMeta, &meta, "meta"); err != nil {
				report("blob %s: %v", digest, err)
				return nil
			}
			chunks := blob.Bucket(bkChunks)
			if chunks == nil {
				report("blob %s: chunks missing", digest)
				return nil
			}
			h := sha256.New()
			total, err := walkChunks(chunks, func(v []byte) { h.Write(v) })
			switch {
			case err != nil:
				report("blob %s: %v", digest, err)
			case total != meta.Size:
				report("blob %s: stored %d bytes, meta says %d", digest, total, meta.Size)
			case digestFromHash(h) != digest:
				report("blob %s: content hashes to %s", digest, digestFromHash(h))
			default:
				sizes[digest] = meta.Size
			}
			return nil
		})
		if err != nil {
			return err
		}
		err = s.partials.ForEachBucket(func(k []byte) error {
			p, meta, err := partialOf(s, string(k))
			if err != nil {
				report("partial %s: %v", k, err)
				return nil
			}
			total, err := walkChunks(p.Bucket(bkChunks), nil)
			switch {
			case err != nil:
				report("partial %s: %v", k, err)
			case !meta.Staging && total != meta.Offset:
				report("partial %s: stored %d bytes, offset says %d", k, total, meta.Offset)
			case !meta.Staging && meta.Offset > meta.Expected:
				report("partial %s: offset %d past announced size %d", k, meta.Offset, meta.Expected)
			}
			return nil
		})
		if err != nil {
			return err
		}
		return s.models.ForEachBucket(func(k []byte) error {
			name := string(k)
			m, versions, state, err := modelBuckets(s, name)
			if err != nil {
				report("model %q: %v", name, err)
				return nil
			}
			var meta modelMeta
			if err := getJSON(m, keyMeta, &meta, "meta"); err != nil {
				report("model %q: %v", name, err)
			}
			if err := versions.ForEach(func(vk, _ []byte) error {
				rec, err := readVersion(s, versions, name, string(vk))
				if err != nil {
					report("%v", err)
					return nil
				}
				size, ok := sizes[rec.Digest]
				switch {
				case rec.Model != name || rec.Version != string(vk):
					report("model %q version %q: record is keyed as %q %q", name, vk, rec.Model, rec.Version)
				case !ok:
					report("model %q version %q: blob %s missing or bad", name, vk, rec.Digest)
				case size != rec.Size:
					report("model %q version %q: record says %d bytes, blob has %d", name, vk, rec.Size, size)
				}
				return nil
			}); err != nil {
				return err
			}
			return state.ForEach(func(sk, v []byte) error {
				if isVersionKey(string(sk)) && versions.Get(v) == nil {
					report("model %q: state %s names missing version %q", name, sk, v)
				}
				return nil
			})
		})
	})
	if err != nil {
		problems = append(problems, fmt.Errorf("check: %w", err))
	}
	return errors.Join(problems...)
}

func (c *Cache) inRolledBackTx(fn func(tx *bolt.Tx) error) error {
	tx, err := c.db.Begin(true)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	return fn(tx)
}
