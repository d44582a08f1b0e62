package pgstore_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgefleet/edgefleet/deploy/testenv"
	"github.com/edgefleet/edgefleet/hub/registry"
	"github.com/edgefleet/edgefleet/hub/rollout"
	"github.com/edgefleet/edgefleet/hub/store"
	"github.com/edgefleet/edgefleet/hub/store/pgstore"
	"github.com/edgefleet/edgefleet/hub/store/storetest"
	"github.com/edgefleet/edgefleet/ota/wire"
)

func TestMain(m *testing.M) { os.Exit(testenv.PostgresMain(m)) }

func open(t *testing.T, dsn string) *pgstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := pgstore.Open(ctx, pgstore.Options{DSN: dsn, MaxConns: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestConformance runs the stores' suite on PostgreSQL.
func TestConformance(t *testing.T) {
	srv := testenv.SharedPostgres(t)
	storetest.Run(t, func(t *testing.T) storetest.Backend {
		dsn := srv.DB(t)
		s := open(t, dsn)
		return storetest.Backend{Registry: s, Tokens: s.Tokens(),
			Replica: func(t *testing.T) store.Registry { return open(t, dsn) }}
	})
}

// TestRollouts runs the rollout store checks on PostgreSQL.
func TestRollouts(t *testing.T) {
	srv := testenv.SharedPostgres(t)
	storetest.RunRollouts(t, func(t *testing.T) (rollout.Store, store.Registry) {
		s := open(t, srv.DB(t))
		return s.Rollouts(), s
	})
}

// TestMigrations applies version 1, stores data in its shape, then
// migrates forward: the data survives and the new columns are filled.
func TestMigrations(t *testing.T) {
	srv := testenv.SharedPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn := srv.DB(t)
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if from, err := pgstore.Migrate(ctx, pool, 1); err != nil || from != 0 {
		t.Fatalf("migrate to 1: from %d, %v", from, err)
	}
	// A version 1 token row has no expires column.
	if _, err := pool.Exec(ctx, `INSERT INTO enroll_tokens (hash, doc) VALUES ('ab',
		'{"id":"ab","created":"2026-01-01T00:00:00Z","expires":"2026-01-02T00:00:00Z"}')`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO devices (id, doc) VALUES ('cam-1', '{"id":"cam-1","labels":{"site":"a"},"cert_serial":"0a"}')`); err != nil {
		t.Fatal(err)
	}

	// Replicas starting together migrate once.
	errs := make(chan error, 3)
	for range 3 {
		go func() { _, err := pgstore.Migrate(ctx, pool, pgstore.Version); errs <- err }()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	s := open(t, dsn)
	if v, err := s.SchemaVersion(ctx); err != nil || v != pgstore.Version {
		t.Fatalf("schema version %d, %v; want %d", v, err, pgstore.Version)
	}
	var expires time.Time
	if err := pool.QueryRow(ctx, "SELECT expires FROM enroll_tokens WHERE hash = 'ab'").Scan(&expires); err != nil ||
		!expires.Equal(time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("migrated token expires %v, %v", expires, err)
	}
	if n, err := s.Tokens().Prune(ctx, time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)); err != nil || n != 1 {
		t.Errorf("Prune of the migrated token: %d, %v", n, err)
	}
	d, err := s.Get(ctx, "cam-1")
	if err != nil || d.Labels["site"] != "a" {
		t.Errorf("device after migration: %+v, %v", d, err)
	}
	if err := s.Check(ctx, "cam-1", "0a"); err != nil {
		t.Error(err)
	}

	// A database from a newer hub is refused.
	if _, err := pool.Exec(ctx, "INSERT INTO schema_migrations (version) VALUES (99)"); err != nil {
		t.Fatal(err)
	}
	if _, err := pgstore.Open(ctx, pgstore.Options{DSN: dsn}); !errors.Is(err, pgstore.ErrNewer) {
		t.Errorf("Open of a version 99 database: %v, want ErrNewer", err)
	}
}

// TestReconnect restarts PostgreSQL under a store: calls fail while it is
// down and work again once it is back, with nothing to reopen.
func TestReconnect(t *testing.T) {
	srv := testenv.SharedPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := open(t, srv.DB(t))
	if _, err := s.Enroll(ctx, registry.Enrollment{ID: "cam-1", CertSerial: "0a"}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	// The pool drops the dead connections on their first failed use.
	testenv.Eventually(t, "a write after the PostgreSQL restart", 30*time.Second, func() bool {
		_, _, err := s.SetDesired(ctx, "cam-1", map[string]wire.DesiredModel{"m": {Ref: "reg/m:1"}})
		return err == nil
	})
	if ds, err := s.Desired(ctx, "cam-1"); err != nil || ds.Revision != 1 {
		t.Errorf("desired after restart: %+v %v", ds, err)
	}
}
