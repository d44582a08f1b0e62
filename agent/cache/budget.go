package cache

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Usage is what the cache holds against its budget.
type Usage struct {
	// Bytes and Blobs count complete blobs.
	Bytes int64
	Blobs int
	// Reserved is the announced size of the partial writes in progress
	// (Partials of them), which the budget counts as used.
	Reserved int64
	Partials int
	// Budget is Options.Budget; zero means unlimited.
	Budget int64
}

// Used is the total the budget is checked against: Bytes plus Reserved.
func (u Usage) Used() int64 { return u.Bytes + u.Reserved }

// Usage reports the bytes held, for the budget and for metrics.
func (c *Cache) Usage() (Usage, error) {
	var u Usage
	err := c.view(func(_ *bolt.Tx, s schema) error {
		var err error
		u, err = usage(s)
		return err
	})
	u.Budget = c.budget
	if err != nil {
		return u, fmt.Errorf("cache usage: %w", err)
	}
	return u, nil
}

func usage(s schema) (Usage, error) {
	var u Usage
	err := s.blobs.ForEachBucket(func(k []byte) error {
		var meta blobMeta
		if err := getJSON(s.blobs.Bucket(k), keyMeta, &meta, "blob "+string(k)+" meta"); err != nil {
			return err
		}
		u.Bytes += meta.Size
		u.Blobs++
		return nil
	})
	if err != nil {
		return u, err
	}
	err = s.partials.ForEachBucket(func(k []byte) error {
		if strings.HasPrefix(string(k), stagingPrefix) {
			return nil
		}
		var meta partialMeta
		if err := getJSON(s.partials.Bucket(k), keyMeta, &meta, "partial "+string(k)+" meta"); err != nil {
			return err
		}
		u.Reserved += meta.Expected
		u.Partials++
		return nil
	})
	return u, err
}

// EnsureSpace makes room for need more bytes within the budget, in one
// transaction, and returns the versions it evicted. Candidates are versions
// that no version-naming state key pins (StateActive, StatePrevious,
// StatePending, labels) and for which protect (if not nil) returns false,
// evicted least recently used first, together with every other version that
// names the same blob (a blob is freed only when all of them may go); blobs
// that no version names count once older than Options.OrphanGrace. If
// evicting every candidate would not make room, nothing is evicted and the
// error wraps ErrNoSpace. With no budget it does nothing.
//
// protect runs inside the cache's write transaction and must not call the
// Cache.
func (c *Cache) EnsureSpace(ctx context.Context, need int64, protect func(name, version string) bool) ([]VersionRecord, error) {
	if need < 0 {
		return nil, fmt.Errorf("ensure space: negative need %d: %w", need, ErrInvalid)
	}
	var evicted []VersionRecord
	err := c.update(ctx, func(_ *bolt.Tx, s schema) error {
		var err error
		evicted, err = c.makeRoom(s, need, protect)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ensure space: %w", err)
	}
	c.notifyEvicted(evicted)
	return evicted, nil
}

// evictUnit is one blob with every version naming it: evicted together.
type evictUnit struct {
	digest    string
	size      int64
	lastUsed  time.Time
	versions  []versionRef
	protected bool
}

// makeRoom evicts, inside a write transaction, what is needed for need more
// bytes to fit the budget; see EnsureSpace.
func (c *Cache) makeRoom(s schema, need int64, protect func(name, version string) bool) ([]VersionRecord, error) {
	if c.budget == 0 {
		return nil, nil
	}
	if need > c.budget {
		return nil, fmt.Errorf("%d bytes exceed the whole budget of %d: %w", need, c.budget, ErrNoSpace)
	}
	u, err := usage(s)
	if err != nil {
		return nil, err
	}
	used := u.Used()
	if used+need <= c.budget {
		return nil, nil
	}

	units := map[string]*evictUnit{}
	err = s.blobs.ForEachBucket(func(k []byte) error {
		var meta blobMeta
		if err := getJSON(s.blobs.Bucket(k), keyMeta, &meta, "blob "+string(k)+" meta"); err != nil {
			return err
		}
		units[string(k)] = &evictUnit{digest: string(k), size: meta.Size, lastUsed: meta.LastUsed}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = s.models.ForEachBucket(func(nk []byte) error {
		name := string(nk)
		_, versions, state, err := modelBuckets(s, name)
		if err != nil {
			return err
		}
		pinned := map[string]bool{}
		if err := state.ForEach(func(k, v []byte) error {
			if isVersionKey(string(k)) {
				pinned[string(v)] = true
			}
			return nil
		}); err != nil {
			return err
		}
		return versions.ForEach(func(k, _ []byte) error {
			rec, err := readVersion(s, versions, name, string(k))
			if err != nil {
				return err
			}
			u := units[rec.Digest]
			if u == nil {
				return nil // a dangling record frees nothing
			}
			u.versions = append(u.versions, versionRef{name, rec.Version})
			if pinned[rec.Version] || (protect != nil && protect(name, rec.Version)) {
				u.protected = true
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}

	now := c.now()
	var cands []*evictUnit
	var evictable int64
	for _, u := range units {
		if u.protected || (len(u.versions) == 0 && now.Sub(u.lastUsed) < c.grace) {
			continue
		}
		cands = append(cands, u)
		evictable += u.size
	}
	if used-evictable+need > c.budget {
		return nil, fmt.Errorf("need %d bytes: %d of %d used, only %d evictable: %w", need, used, c.budget, evictable, ErrNoSpace)
	}
	slices.SortFunc(cands, func(a, b *evictUnit) int {
		if c := a.lastUsed.Compare(b.lastUsed); c != 0 {
			return c
		}
		return strings.Compare(a.digest, b.digest)
	})
	var evicted []VersionRecord
	for _, u := range cands {
		if used+need <= c.budget {
			break
		}
		for _, ref := range u.versions {
			rec, err := removeVersion(s, ref.model, ref.version, true)
			if err != nil {
				return nil, err
			}
			evicted = append(evicted, rec)
			c.log.Info("cache: evicting version", "model", ref.model, "version", ref.version, "digest", u.digest, "bytes", u.size, "last_used", u.lastUsed)
		}
		if s.blobs.Bucket([]byte(u.digest)) != nil {
			c.log.Info("cache: evicting unreferenced blob", "digest", u.digest, "bytes", u.size)
			if err := s.blobs.DeleteBucket([]byte(u.digest)); err != nil {
				return nil, err
			}
		}
		used -= u.size
	}
	return evicted, nil
}

// notifyEvicted calls Options.OnEvict after the evicting transaction
// committed.
func (c *Cache) notifyEvicted(evicted []VersionRecord) {
	if c.onEvict == nil {
		return
	}
	for _, rec := range evicted {
		c.onEvict(rec)
	}
}
