package store_test

import (
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/hub/enroll"
	"github.com/edgefleet/edgefleet/hub/hubdb"
	"github.com/edgefleet/edgefleet/hub/registry"
	"github.com/edgefleet/edgefleet/hub/rollout"
	"github.com/edgefleet/edgefleet/hub/store"
	"github.com/edgefleet/edgefleet/hub/store/storetest"
)

// TestBolt runs the conformance suite on the default stores: the
// registry and tokens in the hub's bbolt file.
func TestBolt(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Backend {
		db, err := hubdb.Open(filepath.Join(t.TempDir(), "hub.db"), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		reg := newRegistry(t, db)
		tokens, err := enroll.NewTokens(db)
		if err != nil {
			t.Fatal(err)
		}
		return storetest.Backend{Registry: reg, Tokens: tokens,
			Replica: func(t *testing.T) store.Registry { return newRegistry(t, db) }}
	})
}

func newRegistry(t *testing.T, db *bolt.DB) *registry.Registry {
	r, err := registry.New(db)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestBoltRollouts runs the rollout store checks on the bbolt store.
func TestBoltRollouts(t *testing.T) {
	storetest.RunRollouts(t, func(t *testing.T) (rollout.Store, store.Registry) {
		db, err := hubdb.Open(filepath.Join(t.TempDir(), "hub.db"), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		reg := newRegistry(t, db)
		rs, err := rollout.NewBoltStore(db, reg)
		if err != nil {
			t.Fatal(err)
		}
		return rs, reg
	})
}
