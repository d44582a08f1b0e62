package cache

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/edgefleet/edgefleet/ota/durable"
)

// Defaults for zero Options fields.
const (
	DefaultChunkSize   = 1 << 20
	DefaultLockTimeout = 2 * time.Second
	DefaultOrphanGrace = time.Hour

	// MaxChunkSize bounds Options.ChunkSize.
	MaxChunkSize = 64 << 20
)

// touchInterval is how stale a blob's last-used time must be before ReadBlob
// spends a write transaction on updating it.
const touchInterval = time.Minute

// schemaVersion is the newest storage schema this package reads and writes.
const schemaVersion = 1

// Options configure Open. The zero value is usable: unlimited budget, no
// logging, DefaultChunkSize, DefaultLockTimeout, DefaultOrphanGrace.
type Options struct {
	// Budget is the most bytes the cache holds: the sizes of complete blobs
	// plus the expected sizes of partial writes. Zero means unlimited.
	Budget int64
	// Logger receives evictions and recoveries. Nil discards.
	Logger *slog.Logger
	// LockTimeout is how long Open waits for another process to release the
	// file before failing with ErrLocked. Zero means DefaultLockTimeout;
	// negative means do not wait.
	LockTimeout time.Duration
	// ChunkSize is the size of the chunks new blobs are stored in. Zero means
	// DefaultChunkSize. Existing blobs keep the size they were written with.
	ChunkSize int
	// OrphanGrace is how old a blob that no version refers to must be before
	// eviction may remove it (a download between CommitPartial and
	// AddVersion is such a blob). Zero means DefaultOrphanGrace.
	OrphanGrace time.Duration
	// OnEvict, when set, is called with each version that the budget evicted,
	// after the evicting transaction committed, so a server can unload it.
	// It must not block for long.
	OnEvict func(VersionRecord)
	// Clock returns the current time. Nil means time.Now.
	Clock func() time.Time
}

// Cache is an open model cache. It is safe for concurrent use; see the
// package documentation for the storage schema and guarantees. Close it when
// done to release the file lock.
type Cache struct {
	db      *bolt.DB
	path    string
	budget  int64
	chunk   int
	grace   time.Duration
	log     *slog.Logger
	now     func() time.Time
	onEvict func(VersionRecord)
}

// Bucket and key names of the schema drawn in doc.go.
var (
	bkRoot     = []byte("v1")
	bkMeta     = []byte("meta")
	bkBlobs    = []byte("blobs")
	bkPartials = []byte("partials")
	bkModels   = []byte("models")
	bkChunks   = []byte("chunks")
	bkVersions = []byte("versions")
	bkState    = []byte("state")
	keySchema  = []byte("schema")
	keyMeta    = []byte("meta")
)

// stagingPrefix starts the partials keys of Puts in progress.
const stagingPrefix = "staging:"

// Open opens or creates the cache file at path, creating its directory if
// needed. A file held by another process fails with ErrLocked after
// opts.LockTimeout.
func Open(path string, opts Options) (*Cache, error) {
	if opts.Budget < 0 {
		return nil, fmt.Errorf("open cache: negative budget %d: %w", opts.Budget, ErrInvalid)
	}
	if opts.ChunkSize < 0 || opts.ChunkSize > MaxChunkSize {
		return nil, fmt.Errorf("open cache: chunk size %d outside 1..%d: %w", opts.ChunkSize, MaxChunkSize, ErrInvalid)
	}
	c := &Cache{
		path:    path,
		budget:  opts.Budget,
		chunk:   opts.ChunkSize,
		grace:   opts.OrphanGrace,
		log:     opts.Logger,
		now:     opts.Clock,
		onEvict: opts.OnEvict,
	}
	if c.chunk == 0 {
		c.chunk = DefaultChunkSize
	}
	if c.grace == 0 {
		c.grace = DefaultOrphanGrace
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	timeout := opts.LockTimeout
	switch {
	case timeout == 0:
		timeout = DefaultLockTimeout
	case timeout < 0:
		timeout = time.Nanosecond // bbolt treats 0 as "wait forever"
	}
	if err := durable.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open cache: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open cache %s: %w by another process (is an agent running on this data dir?)", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open cache %s: %w", path, err)
	}
	// bbolt syncs the file but not its name in the folder.
	if err := durable.SyncParent(path); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open cache %s: %w", path, err)
	}
	c.db = db
	if err := c.init(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open cache %s: %w", path, err)
	}
	return c, nil
}

// init creates the schema's buckets, checks the schema version and removes
// staging areas left by Puts that a crash interrupted.
func (c *Cache) init() error {
	return c.db.Update(func(tx *bolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists(bkRoot)
		if err != nil {
			return err
		}
		meta, err := root.CreateBucketIfNotExists(bkMeta)
		if err != nil {
			return err
		}
		switch v := meta.Get(keySchema); {
		case v == nil:
			if err := meta.Put(keySchema, []byte(strconv.Itoa(schemaVersion))); err != nil {
				return err
			}
		default:
			n, err := strconv.Atoi(string(v))
			if err != nil {
				return fmt.Errorf("schema version %q: %w", v, ErrCorrupt)
			}
			if n > schemaVersion {
				return fmt.Errorf("cache schema version %d is newer than this agent supports (%d); upgrade the agent", n, schemaVersion)
			}
			// Migrations from older schema versions would run here, in order.
		}
		for _, name := range [][]byte{bkBlobs, bkPartials, bkModels} {
			if _, err := root.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		partials := root.Bucket(bkPartials)
		var stale [][]byte
		if err := partials.ForEachBucket(func(k []byte) error {
			if strings.HasPrefix(string(k), stagingPrefix) {
				stale = append(stale, k)
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range stale {
			c.log.Info("cache: removing interrupted put", "key", string(k))
			if err := partials.DeleteBucket(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// Close releases the file. Calls after Close fail.
func (c *Cache) Close() error {
	return c.db.Close()
}

// Path is the cache file's path.
func (c *Cache) Path() string { return c.path }

// Budget is the configured budget in bytes; zero means unlimited.
func (c *Cache) Budget() int64 { return c.budget }

// schema holds the top-level buckets of one transaction.
type schema struct {
	blobs, partials, models *bolt.Bucket
}

func buckets(tx *bolt.Tx) (schema, error) {
	root := tx.Bucket(bkRoot)
	if root == nil {
		return schema{}, fmt.Errorf("root bucket missing: %w", ErrCorrupt)
	}
	s := schema{root.Bucket(bkBlobs), root.Bucket(bkPartials), root.Bucket(bkModels)}
	if s.blobs == nil || s.partials == nil || s.models == nil {
		return schema{}, fmt.Errorf("top-level bucket missing: %w", ErrCorrupt)
	}
	return s, nil
}

// update runs fn in a write transaction after checking ctx.
func (c *Cache) update(ctx context.Context, fn func(tx *bolt.Tx, s schema) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return c.db.Update(func(tx *bolt.Tx) error {
		s, err := buckets(tx)
		if err != nil {
			return err
		}
		return fn(tx, s)
	})
}

// view runs fn in a read transaction.
func (c *Cache) view(fn func(tx *bolt.Tx, s schema) error) error {
	return c.db.View(func(tx *bolt.Tx) error {
		s, err := buckets(tx)
		if err != nil {
			return err
		}
		return fn(tx, s)
	})
}

func chunkKey(i uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], i)
	return k[:]
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}

func getJSON(b *bolt.Bucket, key []byte, v any, what string) error {
	data := b.Get(key)
	if data == nil {
		return fmt.Errorf("%s: record missing: %w", what, ErrCorrupt)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %v: %w", what, err, ErrCorrupt)
	}
	return nil
}

func randomHex() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails on Linux; see crypto/rand.Read
	return hex.EncodeToString(b[:])
}
