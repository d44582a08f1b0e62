// Package pgstore keeps the hub's state in PostgreSQL (jackc/pgx v5), for
// cluster mode: several hub replicas share one database. It implements
// store.Registry and store.Tokens with the registry's own rules (package
// registry's Enrolled, NextDesired, ...), and Leader, a lease on a
// PostgreSQL advisory lock so decisions such as rollout waves run in
// exactly one replica.
//
// # Schema
//
// Records are the same JSON documents the bbolt store keeps (registry.Device,
// wire.DesiredState, ...), one row each; what queries filter on has its own
// column.
//
//	schema_migrations(version, applied)         one row per applied migration
//	devices(id, doc, revoked)                   registry.Device
//	desired(id → devices, revision, doc)        wire.DesiredState
//	reported(id → devices, doc)                 wire.ReportedState
//	revoked_certs(serial, device, at)           revoked or superseded certificates
//	enroll_tokens(hash, doc, expires)           enroll.Token, keyed by the secret's SHA-256
//	rollouts(id, doc)                           rollout.Rollout
//	rollout_devices(rollout → rollouts, id, doc) rollout.Device
//
// # Migrations
//
// Open applies the migrations the database lacks, in order, each in its own
// transaction, under an advisory lock so replicas starting together do not
// race. A database migrated by a newer hub (a version this one does not
// know) is refused with ErrNewer. Migrations are append-only: a released one
// is never edited.
//
// # Concurrency
//
// A Store is safe for concurrent use, and so are several Stores (replicas)
// on one database: every read-modify-write takes the device's row lock
// (SELECT ... FOR UPDATE). Heartbeat times are kept in memory per replica
// and written by Flush, as in the bbolt store.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrNewer means the database was migrated by a newer hub.
var ErrNewer = errors.New("database schema is newer than this hub")

// migrationLock is the advisory lock key that serialises migrations.
const migrationLock = 0x6564676566_01 // "edgef" 01

// migrations[i] brings the schema from version i to i+1.
var migrations = []string{
	// 1: devices, desired and reported state, revocations, tokens.
	`CREATE TABLE devices (
		id      text PRIMARY KEY,
		doc     jsonb NOT NULL,
		revoked boolean NOT NULL DEFAULT false
	);
	CREATE TABLE desired (
		id       text PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
		revision bigint NOT NULL,
		doc      jsonb NOT NULL
	);
	CREATE TABLE reported (
		id  text PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
		doc jsonb NOT NULL
	);
	CREATE TABLE revoked_certs (
		serial text PRIMARY KEY,
		device text NOT NULL,
		at     timestamptz NOT NULL
	);
	CREATE TABLE enroll_tokens (
		hash text PRIMARY KEY,
		doc  jsonb NOT NULL
	);`,
	// 2: tokens are pruned by expiry; labels are selected on.
	`ALTER TABLE enroll_tokens ADD COLUMN expires timestamptz;
	UPDATE enroll_tokens SET expires = (doc->>'expires')::timestamptz;
	ALTER TABLE enroll_tokens ALTER COLUMN expires SET NOT NULL;
	CREATE INDEX enroll_tokens_expires ON enroll_tokens (expires);
	CREATE INDEX devices_labels ON devices USING gin ((doc->'labels'));`,
	// 3: rollouts and their devices (rollout.Store).
	`CREATE TABLE rollouts (
		id  text PRIMARY KEY,
		doc jsonb NOT NULL
	);
	CREATE TABLE rollout_devices (
		rollout text NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
		id      text NOT NULL,
		doc     jsonb NOT NULL,
		PRIMARY KEY (rollout, id)
	);`,
}

// Version is the schema version this hub migrates to.
var Version = len(migrations)

// Options configure a Store. DSN is required.
type Options struct {
	// DSN is a libpq connection string or URL, e.g.
	// "postgres://hub@db:5432/edgefleet?sslmode=verify-full".
	DSN string
	// MaxConns bounds the connection pool (0: pgx's default, 4 per CPU,
	// at least 4).
	MaxConns int32
	// Now is the clock (time.Now).
	Now func() time.Time
	// Logger, optional.
	Logger *slog.Logger
}

// Store is the hub's state in PostgreSQL.
type Store struct {
	pool *pgxpool.Pool
	now  func() time.Time
	log  *slog.Logger

	mu   sync.Mutex           // guards seen
	seen map[string]time.Time // LastSeen times not yet written by Flush
}

// Open connects, migrates the schema to Version and returns the store.
// The pool reconnects by itself after a database restart.
func Open(ctx context.Context, opts Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(opts.DSN)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	s := &Store{pool: pool, now: opts.Now, log: opts.Logger, seen: map[string]time.Time{}}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if _, err := Migrate(ctx, pool, Version); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// Close flushes heartbeat times and closes the pool.
func (s *Store) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.Flush(ctx)
	s.pool.Close()
	return err
}

// Pool is the store's connection pool.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Migrate applies the migrations up to version target that the database
// lacks and returns the version it had before.
func Migrate(ctx context.Context, pool *pgxpool.Pool, target int) (from int, err error) {
	if target > len(migrations) {
		return 0, fmt.Errorf("pgstore: no migration to version %d", target)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("pgstore: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(migrationLock)); err != nil {
		return 0, fmt.Errorf("pgstore: migration lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", int64(migrationLock))
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version int PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())`); err != nil {
		return 0, fmt.Errorf("pgstore: %w", err)
	}
	if err := conn.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&from); err != nil {
		return 0, fmt.Errorf("pgstore: %w", err)
	}
	if from > len(migrations) {
		return from, fmt.Errorf("pgstore: version %d, this hub knows up to %d: %w", from, len(migrations), ErrNewer)
	}
	for v := from; v < target; v++ {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, migrations[v]); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version) VALUES ($1)", v+1)
			return err
		})
		if err != nil {
			return from, fmt.Errorf("pgstore: migrate %d → %d: %w", v, v+1, err)
		}
	}
	return from, nil
}

// SchemaVersion is the database's applied schema version.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.pool.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&v)
	return v, err
}
