package hubdb_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/hub/enroll"
	"github.com/edgefleet/edgefleet/hub/hubdb"
	"github.com/edgefleet/edgefleet/hub/registry"
)

// v1File writes a file in the version 1 layout, as the hub wrote it before
// package hubdb: every old bucket, nested buckets, a sequence, and the
// registry's meta/schema (unless withMeta is false: hubs before the key).
func v1File(t *testing.T, withMeta bool) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hub.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	dev, _ := json.Marshal(registry.Device{ID: "cam-1", Labels: map[string]string{"site": "a"}, CertSerial: "0a",
		Enrolled: time.Unix(1700000000, 0).UTC()})
	tok, _ := json.Marshal(enroll.Token{ID: "abc", Expires: time.Unix(1900000000, 0).UTC()})
	err = db.Update(func(tx *bolt.Tx) error {
		put := func(bucket, key, val string) {
			b, err := tx.CreateBucketIfNotExists([]byte(bucket))
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Put([]byte(key), []byte(val)); err != nil {
				t.Fatal(err)
			}
		}
		put("devices", "cam-1", string(dev))
		put("desired", "cam-1", `{"device_id":"cam-1","revision":3,"models":{}}`)
		put("reported", "cam-1", `{"device_id":"cam-1"}`)
		put("revoked_certs", "09", `{"serial":"09","device":"cam-1"}`)
		put("enroll_tokens", "ffee", string(tok))
		put("rollouts", "r1", `{"id":"r1"}`)
		put("telemetry.devices", "cam-1", `{"n":1}`)
		rd, _ := tx.CreateBucketIfNotExists([]byte("rollout_devices"))
		nested, _ := rd.CreateBucket([]byte("r1"))
		nested.Put([]byte("cam-1"), []byte(`{"id":"cam-1","wave":2}`))
		oci, _ := tx.CreateBucketIfNotExists([]byte("oci_manifests"))
		for i := 0; i < 3; i++ {
			seq, _ := oci.NextSequence()
			var k [8]byte
			binary.BigEndian.PutUint64(k[:], seq)
			oci.Put(k[:], []byte(`{"method":"PUT"}`))
		}
		if withMeta {
			put("meta", "schema", "1")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return path
}

func get(t *testing.T, db *bolt.DB, path ...string) []byte {
	t.Helper()
	var out []byte
	db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(path[0]))
		for _, p := range path[1 : len(path)-1] {
			if b == nil {
				return nil
			}
			b = b.Bucket([]byte(p))
		}
		if b != nil {
			out = append([]byte(nil), b.Get([]byte(path[len(path)-1]))...)
		}
		return nil
	})
	return out
}

func TestMigrateFromV1(t *testing.T) {
	for _, tc := range []struct {
		name     string
		withMeta bool
	}{{"registry meta schema 1", true}, {"no meta at all", false}} {
		t.Run(tc.name, func(t *testing.T) {
			path := v1File(t, tc.withMeta)
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			from, err := hubdb.Migrate(db)
			if err != nil {
				t.Fatal(err)
			}
			if from != 1 {
				t.Errorf("migrated from %d, want 1", from)
			}
			if v, _ := hubdb.SchemaVersion(db); v != hubdb.Version {
				t.Errorf("schema version %d after migration, want %d", v, hubdb.Version)
			}
			for _, c := range []struct{ path []string }{
				{[]string{"registry.desired", "cam-1"}},
				{[]string{"registry.reported", "cam-1"}},
				{[]string{"registry.revoked_certs", "09"}},
				{[]string{"rollout.rollouts", "r1"}},
				{[]string{"rollout.devices", "r1", "cam-1"}},
				{[]string{"telemetry.devices", "cam-1"}},
			} {
				if get(t, db, c.path...) == nil {
					t.Errorf("%v missing after migration", c.path)
				}
			}
			err = db.View(func(tx *bolt.Tx) error {
				for _, old := range []string{"devices", "desired", "reported", "revoked_certs", "meta",
					"enroll_tokens", "rollouts", "rollout_devices", "oci_manifests"} {
					if tx.Bucket([]byte(old)) != nil {
						t.Errorf("old bucket %s still there", old)
					}
				}
				if s := tx.Bucket(hubdb.OCIManifests).Sequence(); s != 3 {
					t.Errorf("oci.manifests sequence %d, want 3 (journal keys must keep growing)", s)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}

			// The packages read the migrated file.
			ctx := context.Background()
			reg, err := registry.New(db)
			if err != nil {
				t.Fatal(err)
			}
			d, err := reg.Get(ctx, "cam-1")
			if err != nil || d.Labels["site"] != "a" || d.CertSerial != "0a" {
				t.Errorf("registry after migration: %+v, %v", d, err)
			}
			ds, err := reg.Desired(ctx, "cam-1")
			if err != nil || ds.Revision != 3 {
				t.Errorf("desired after migration: %+v, %v", ds, err)
			}
			tokens, err := enroll.NewTokens(db)
			if err != nil {
				t.Fatal(err)
			}
			if l, err := tokens.List(ctx); err != nil || len(l) != 1 || l[0].ID != "abc" {
				t.Errorf("tokens after migration: %+v, %v", l, err)
			}

			// Again: nothing to do.
			if from, err := hubdb.Migrate(db); err != nil || from != hubdb.Version {
				t.Errorf("second Migrate: from %d, %v", from, err)
			}
		})
	}
}

func TestOpenNewFile(t *testing.T) {
	db, err := hubdb.Open(filepath.Join(t.TempDir(), "hub.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if v, err := hubdb.SchemaVersion(db); err != nil || v != hubdb.Version {
		t.Fatalf("new file: version %d, %v", v, err)
	}
	db.View(func(tx *bolt.Tx) error {
		for _, b := range hubdb.Buckets() {
			if tx.Bucket(b) == nil {
				t.Errorf("bucket %s not created", b)
			}
		}
		return nil
	})
}

func TestRefuses(t *testing.T) {
	t.Run("newer schema", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "hub.db")
		db, err := hubdb.Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		db.Update(func(tx *bolt.Tx) error { return tx.Bucket(hubdb.Meta).Put([]byte("schema"), []byte("99")) })
		db.Close()
		if _, err := hubdb.Open(path, nil); !errors.Is(err, hubdb.ErrNewer) {
			t.Fatalf("Open of a schema 99 file: %v, want ErrNewer", err)
		}
	})
	t.Run("both layouts hold data", func(t *testing.T) {
		path := v1File(t, true)
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		db.Update(func(tx *bolt.Tx) error {
			b, _ := tx.CreateBucket(hubdb.RegistryDevices)
			return b.Put([]byte("other"), []byte("{}"))
		})
		if _, err := hubdb.Migrate(db); err == nil {
			t.Fatal("Migrate of a file with devices and registry.devices: no error")
		}
		// The failed migration changed nothing.
		if get(t, db, "devices", "cam-1") == nil || get(t, db, "meta", "schema") == nil {
			t.Error("a failed migration changed the file")
		}
	})
	t.Run("garbage version", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "hub.db")
		db, _ := bolt.Open(path, 0o600, nil)
		db.Update(func(tx *bolt.Tx) error {
			b, _ := tx.CreateBucket(hubdb.Meta)
			return b.Put([]byte("schema"), []byte("two"))
		})
		defer db.Close()
		if _, err := hubdb.Migrate(db); err == nil {
			t.Fatal("Migrate with schema \"two\": no error")
		}
	})
}
