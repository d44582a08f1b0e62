package cache

import (
	"context"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// fakeClock is an injectable clock for eviction order; tests advance it
// instead of sleeping.
type fakeClock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// mustOpen opens a cache at path and registers a cleanup that checks the
// whole file for consistency (unless the test failed or broke it on purpose
// and called skipCheck) and closes it.
func mustOpen(t testing.TB, path string, opts Options) *Cache {
	t.Helper()
	c, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if !t.Failed() && !skipChecks[c] {
			if err := c.Check(context.Background()); err != nil && !errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
				t.Errorf("Check at end of test: %v", err)
			}
		}
		_ = c.Close()
	})
	return c
}

var (
	skipMu     sync.Mutex
	skipChecks = map[*Cache]bool{}
)

// skipCheck stops mustOpen's cleanup from checking a cache the test corrupted.
func skipCheck(t testing.TB, c *Cache) {
	skipMu.Lock()
	defer skipMu.Unlock()
	skipChecks[c] = true
	t.Cleanup(func() {
		skipMu.Lock()
		defer skipMu.Unlock()
		delete(skipChecks, c)
	})
}

func tempPath(t testing.TB) string {
	return filepath.Join(t.TempDir(), "cache.db")
}

// randomBytes returns n pseudo-random bytes from seed.
func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// rawUpdate changes the file behind the cache's back: fault injection for
// damage the cache cannot produce itself.
func rawUpdate(t testing.TB, c *Cache, fn func(s schema) error) {
	t.Helper()
	if err := c.db.Update(func(tx *bolt.Tx) error {
		s, err := buckets(tx)
		if err != nil {
			return err
		}
		return fn(s)
	}); err != nil {
		t.Fatalf("raw update: %v", err)
	}
}

// rawChunkCount counts the stored chunks of a complete blob.
func rawChunkCount(t testing.TB, c *Cache, digest string) int {
	t.Helper()
	n := 0
	if err := c.view(func(_ *bolt.Tx, s schema) error {
		return s.blobs.Bucket([]byte(digest)).Bucket(bkChunks).ForEach(func(_, _ []byte) error {
			n++
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func versionNames(vs []VersionRecord) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.Model + "/" + v.Version
	}
	return out
}
