package hubdb

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"

	bolt "go.etcd.io/bbolt"
)

// Version is the schema version this hub reads and writes.
const Version = 2

// ErrNewer means the file was written by a newer hub, with a schema this
// one cannot read.
var ErrNewer = errors.New("hub database schema is newer than this hub")

// Bucket names (see the package documentation for what each holds).
var (
	Meta = []byte("hub.meta")

	RegistryDevices      = []byte("registry.devices")
	RegistryDesired      = []byte("registry.desired")
	RegistryReported     = []byte("registry.reported")
	RegistryRevokedCerts = []byte("registry.revoked_certs")

	EnrollTokens = []byte("enroll.tokens")

	RolloutRollouts = []byte("rollout.rollouts")
	RolloutDevices  = []byte("rollout.devices")

	TelemetryDevices = []byte("telemetry.devices")
	TelemetryWindow  = []byte("telemetry.window")
	TelemetryTotals  = []byte("telemetry.totals")

	OCIManifests = []byte("oci.manifests")
)

// keySchema is the key of the version in Meta.
var keySchema = []byte("schema")

// Buckets lists every top-level bucket of the current schema.
func Buckets() [][]byte {
	return [][]byte{Meta, RegistryDevices, RegistryDesired, RegistryReported, RegistryRevokedCerts,
		EnrollTokens, RolloutRollouts, RolloutDevices, TelemetryDevices, TelemetryWindow, TelemetryTotals,
		OCIManifests}
}

// migrations[v] brings a file from version v to v+1.
var migrations = map[int]func(*bolt.Tx) error{
	1: migrate1to2,
}

// v1 names (before the naming rule).
var (
	v1Meta    = []byte("meta")
	v1Renames = [][2]string{
		{"devices", "registry.devices"},
		{"desired", "registry.desired"},
		{"reported", "registry.reported"},
		{"revoked_certs", "registry.revoked_certs"},
		{"enroll_tokens", "enroll.tokens"},
		{"rollouts", "rollout.rollouts"},
		{"rollout_devices", "rollout.devices"},
		{"oci_manifests", "oci.manifests"},
	}
)

func migrate1to2(tx *bolt.Tx) error {
	for _, r := range v1Renames {
		if err := moveBucket(tx, []byte(r[0]), []byte(r[1])); err != nil {
			return fmt.Errorf("%s → %s: %w", r[0], r[1], err)
		}
	}
	// The old meta bucket held only the registry's schema key.
	if tx.Bucket(v1Meta) != nil {
		if err := tx.DeleteBucket(v1Meta); err != nil {
			return err
		}
	}
	return nil
}

// Open opens (creating if needed) the hub's bbolt file at path and brings
// it to Version with Migrate. A file locked by another process fails
// after opts.Timeout with bolt.ErrTimeout.
func Open(path string, opts *bolt.Options) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, opts)
	if err != nil {
		return nil, err
	}
	if _, err := Migrate(db); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Migrate brings db to Version and creates every bucket of the schema; it
// returns the version the file had (0 for a new, empty file). It is a
// no-op on a file already at Version.
func Migrate(db *bolt.DB) (from int, err error) {
	err = db.Update(func(tx *bolt.Tx) error {
		var err error
		if from, err = version(tx); err != nil {
			return err
		}
		if from > Version {
			return fmt.Errorf("version %d, this hub reads up to %d: %w", from, Version, ErrNewer)
		}
		for v := max(from, 1); from != 0 && v < Version; v++ {
			if err := migrations[v](tx); err != nil {
				return fmt.Errorf("migrate schema %d → %d: %w", v, v+1, err)
			}
		}
		for _, b := range Buckets() {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return tx.Bucket(Meta).Put(keySchema, []byte(strconv.Itoa(Version)))
	})
	if err != nil {
		return from, fmt.Errorf("hubdb: %w", err)
	}
	return from, nil
}

// SchemaVersion returns the version recorded in db (see Migrate for how a
// file without one is read).
func SchemaVersion(db *bolt.DB) (int, error) {
	var v int
	err := db.View(func(tx *bolt.Tx) error {
		var err error
		v, err = version(tx)
		return err
	})
	return v, err
}

// version reads the schema version: hub.meta/schema from version 2 on, the
// registry's meta/schema in version 1, and for a file with neither, 1 when
// it holds any bucket (a hub older than the version key) and 0 when it is
// empty.
func version(tx *bolt.Tx) (int, error) {
	for _, m := range [][]byte{Meta, v1Meta} {
		b := tx.Bucket(m)
		if b == nil {
			continue
		}
		raw := b.Get(keySchema)
		if raw == nil {
			continue
		}
		v, err := strconv.Atoi(string(raw))
		if err != nil || v < 1 {
			return 0, fmt.Errorf("schema version %q in %s: not a positive number", raw, m)
		}
		return v, nil
	}
	empty := true
	tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
	if empty {
		return 0, nil
	}
	return 1, nil
}

// moveBucket renames a top-level bucket: its keys, nested buckets and
// sequence numbers are copied under the new name and the old one deleted.
// A missing source is not an error; a destination that already holds keys
// is (the file would mix two layouts).
func moveBucket(tx *bolt.Tx, from, to []byte) error {
	src := tx.Bucket(from)
	if src == nil {
		return nil
	}
	dst, err := tx.CreateBucketIfNotExists(to)
	if err != nil {
		return err
	}
	if k, _ := dst.Cursor().First(); k != nil {
		return fmt.Errorf("both %s and %s hold data", from, to)
	}
	if err := copyBucket(src, dst); err != nil {
		return err
	}
	return tx.DeleteBucket(from)
}

func copyBucket(src, dst *bolt.Bucket) error {
	if err := dst.SetSequence(src.Sequence()); err != nil {
		return err
	}
	return src.ForEach(func(k, v []byte) error {
		if v == nil {
			child, err := dst.CreateBucket(bytes.Clone(k))
			if err != nil {
				return err
			}
			return copyBucket(src.Bucket(k), child)
		}
		return dst.Put(bytes.Clone(k), bytes.Clone(v))
	})
}
