package rollout

import (
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/hub/hubdb"
)

// The rollout.* buckets of the hub's file (package hubdb draws the schema).
var (
	bucketRollouts = hubdb.RolloutRollouts
	bucketDevices  = hubdb.RolloutDevices
)

// createBuckets makes the manager's buckets if needed.
func createBuckets(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketRollouts, bucketDevices} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
}

// load reads every rollout and its devices.
func load(db *bolt.DB) (map[string]*run, error) {
	out := map[string]*run{}
	err := db.View(func(tx *bolt.Tx) error {
		devs := tx.Bucket(bucketDevices)
		return tx.Bucket(bucketRollouts).ForEach(func(k, v []byte) error {
			var r Rollout
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("rollout %q: %w", k, err)
			}
			rn, err := newRun(r)
			if err != nil {
				return fmt.Errorf("rollout %q: %w", k, err)
			}
			if b := devs.Bucket(k); b != nil {
				err := b.ForEach(func(id, v []byte) error {
					var d Device
					if err := json.Unmarshal(v, &d); err != nil {
						return fmt.Errorf("rollout %q device %q: %w", k, id, err)
					}
					rn.devs[d.ID] = &d
					return nil
				})
				if err != nil {
					return err
				}
			}
			out[r.ID] = rn
			return nil
		})
	})
	return out, err
}

// putRollout writes a rollout record.
func putRollout(tx *bolt.Tx, r Rollout) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketRollouts).Put([]byte(r.ID), b)
}

// putDevice writes one device of a rollout.
func putDevice(tx *bolt.Tx, rolloutID string, d *Device) error {
	b, err := tx.Bucket(bucketDevices).CreateBucketIfNotExists([]byte(rolloutID))
	if err != nil {
		return err
	}
	raw, err := json.Marshal(d)
	if err != nil {
		return err
	}
	return b.Put([]byte(d.ID), raw)
}

// flushRun writes the rollout record when it changed and its dirty devices.
func flushRun(tx *bolt.Tx, rn *run) error {
	if rn.changed {
		if err := putRollout(tx, rn.r); err != nil {
			return err
		}
	}
	for id := range rn.dirty {
		if d := rn.devs[id]; d != nil {
			if err := putDevice(tx, rn.r.ID, d); err != nil {
				return err
			}
		}
	}
	return nil
}
