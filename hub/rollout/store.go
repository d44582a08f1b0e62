package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/hub/hubdb"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// Store keeps rollouts and their devices: the manager's storage boundary.
// BoltStore (the hub's bbolt file) is the default; cluster mode keeps them
// in PostgreSQL (package store/pgstore).
type Store interface {
	// Load reads every rollout and, per rollout id, its devices.
	Load(ctx context.Context) ([]Rollout, map[string][]Device, error)
	// Update runs fn in one transaction: everything fn writes, desired
	// states included, is committed together or not at all.
	Update(ctx context.Context, fn func(Tx) error) error
}

// Tx is one transaction of a Store.
type Tx interface {
	PutRollout(r Rollout) error
	PutDevice(rolloutID string, d *Device) error
	// UpdateDesired changes a device's desired models in the same
	// transaction (the registry's rules: registry.NextDesired); the
	// caller publishes changed states after the commit.
	UpdateDesired(id string, fn func(models map[string]wire.DesiredModel) error) (wire.DesiredState, bool, error)
}

// TxRegistry changes desired states inside a bbolt transaction;
// *registry.Registry implements it.
type TxRegistry interface {
	UpdateDesiredTx(tx *bolt.Tx, id string, fn func(models map[string]wire.DesiredModel) error) (wire.DesiredState, bool, error)
}

// The rollout.* buckets of the hub's file (package hubdb draws the schema).
var (
	bucketRollouts = hubdb.RolloutRollouts
	bucketDevices  = hubdb.RolloutDevices
)

// BoltStore keeps rollouts in the hub's bbolt file, next to the registry
// whose desired states it changes in the same transactions.
type BoltStore struct {
	DB       *bolt.DB
	Registry TxRegistry
}

var _ Store = (*BoltStore)(nil)

// NewBoltStore creates the rollout buckets if needed.
func NewBoltStore(db *bolt.DB, reg TxRegistry) (*BoltStore, error) {
	if db == nil || reg == nil {
		return nil, errors.New("rollout: bbolt store needs the database and the registry")
	}
	err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketRollouts, bucketDevices} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("rollout: %w", err)
	}
	return &BoltStore{DB: db, Registry: reg}, nil
}

// Load reads every rollout and its devices.
func (s *BoltStore) Load(ctx context.Context) ([]Rollout, map[string][]Device, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	var rs []Rollout
	devs := map[string][]Device{}
	err := s.DB.View(func(tx *bolt.Tx) error {
		db := tx.Bucket(bucketDevices)
		return tx.Bucket(bucketRollouts).ForEach(func(k, v []byte) error {
			var r Rollout
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("rollout %q: %w", k, err)
			}
			rs = append(rs, r)
			if b := db.Bucket(k); b != nil {
				return b.ForEach(func(id, v []byte) error {
					var d Device
					if err := json.Unmarshal(v, &d); err != nil {
						return fmt.Errorf("rollout %q device %q: %w", k, id, err)
					}
					devs[r.ID] = append(devs[r.ID], d)
					return nil
				})
			}
			return nil
		})
	})
	return rs, devs, err
}

// Update runs fn in one bbolt write transaction.
func (s *BoltStore) Update(ctx context.Context, fn func(Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.DB.Update(func(tx *bolt.Tx) error { return fn(boltTx{tx, s.Registry}) })
}

type boltTx struct {
	tx  *bolt.Tx
	reg TxRegistry
}

func (t boltTx) PutRollout(r Rollout) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return t.tx.Bucket(bucketRollouts).Put([]byte(r.ID), b)
}

func (t boltTx) PutDevice(rolloutID string, d *Device) error {
	b, err := t.tx.Bucket(bucketDevices).CreateBucketIfNotExists([]byte(rolloutID))
	if err != nil {
		return err
	}
	raw, err := json.Marshal(d)
	if err != nil {
		return err
	}
	return b.Put([]byte(d.ID), raw)
}

func (t boltTx) UpdateDesired(id string, fn func(models map[string]wire.DesiredModel) error) (wire.DesiredState, bool, error) {
	return t.reg.UpdateDesiredTx(t.tx, id, fn)
}

// load builds the manager's runs from the store.
func load(ctx context.Context, s Store) (map[string]*run, error) {
	rs, devs, err := s.Load(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]*run{}
	for _, r := range rs {
		rn, err := newRun(r)
		if err != nil {
			return nil, fmt.Errorf("rollout %q: %w", r.ID, err)
		}
		for _, d := range devs[r.ID] {
			rn.devs[d.ID] = &d
		}
		out[r.ID] = rn
	}
	return out, nil
}

// flushRun writes the rollout record when it changed and its dirty devices.
func flushRun(tx Tx, rn *run) error {
	if rn.changed {
		if err := tx.PutRollout(rn.r); err != nil {
			return err
		}
	}
	for id := range rn.dirty {
		if d := rn.devs[id]; d != nil {
			if err := tx.PutDevice(rn.r.ID, d); err != nil {
				return err
			}
		}
	}
	return nil
}
