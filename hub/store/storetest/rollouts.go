package storetest

import (
	"errors"
	"testing"

	"github.com/edgefleet/edgefleet/hub/registry"
	"github.com/edgefleet/edgefleet/hub/rollout"
	"github.com/edgefleet/edgefleet/hub/store"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// RunRollouts checks a rollout.Store against the registry it changes
// desired states in: one transaction commits the rollout's records and
// the desired states together, or nothing.
func RunRollouts(t *testing.T, open func(t *testing.T) (rollout.Store, store.Registry)) {
	t.Run("CommitTogether", func(t *testing.T) {
		rs, reg := open(t)
		c := ctx(t)
		enroll1(t, reg, "dev-1", "01", nil, false)
		enroll1(t, reg, "dev-2", "02", nil, false)
		want := wire.DesiredModel{Ref: ref(7), Rollout: "r1"}
		var rev int64
		err := rs.Update(c, func(tx rollout.Tx) error {
			if err := tx.PutRollout(rollout.Rollout{ID: "r1", Wave: 1}); err != nil {
				return err
			}
			ds, changed, err := tx.UpdateDesired("dev-1", func(m map[string]wire.DesiredModel) error { m["m"] = want; return nil })
			if err != nil || !changed {
				t.Fatalf("UpdateDesired: changed %v, %v", changed, err)
			}
			rev = ds.Revision
			return tx.PutDevice("r1", &rollout.Device{ID: "dev-1", Wave: 1, Revision: ds.Revision})
		})
		if err != nil {
			t.Fatal(err)
		}
		ds, err := reg.Desired(c, "dev-1")
		if err != nil || ds.Revision != rev || ds.Models["m"] != want {
			t.Errorf("desired after commit: %+v, %v", ds, err)
		}
		if d, _ := reg.Get(c, "dev-1"); d.DesiredRevision != rev {
			t.Errorf("device DesiredRevision %d, want %d", d.DesiredRevision, rev)
		}

		// A failing transaction leaves nothing behind.
		boom := errors.New("boom")
		err = rs.Update(c, func(tx rollout.Tx) error {
			if _, _, err := tx.UpdateDesired("dev-2", func(m map[string]wire.DesiredModel) error { m["m"] = want; return nil }); err != nil {
				return err
			}
			if err := tx.PutDevice("r1", &rollout.Device{ID: "dev-2", Wave: 2}); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("failing Update: %v", err)
		}
		if ds, _ := reg.Desired(c, "dev-2"); ds.Revision != 0 {
			t.Errorf("rolled-back transaction left dev-2 at revision %d", ds.Revision)
		}
		rolls, devs, err := rs.Load(c)
		if err != nil || len(rolls) != 1 || rolls[0].ID != "r1" || rolls[0].Wave != 1 {
			t.Fatalf("Load: %+v, %v", rolls, err)
		}
		if len(devs["r1"]) != 1 || devs["r1"][0].ID != "dev-1" || devs["r1"][0].Revision != rev {
			t.Errorf("Load devices: %+v", devs["r1"])
		}
	})
	t.Run("GoneDevices", func(t *testing.T) {
		rs, reg := open(t)
		c := ctx(t)
		enroll1(t, reg, "dev-r", "01", nil, false)
		if _, err := reg.Revoke(c, "dev-r"); err != nil {
			t.Fatal(err)
		}
		rs.Update(c, func(tx rollout.Tx) error {
			_, _, err := tx.UpdateDesired("dev-r", func(map[string]wire.DesiredModel) error { return nil })
			wantErr(t, "UpdateDesired of a revoked device", err, registry.ErrRevoked)
			_, _, err = tx.UpdateDesired("nope", func(map[string]wire.DesiredModel) error { return nil })
			wantErr(t, "UpdateDesired of an unknown device", err, registry.ErrNotFound)
			return nil
		})
	})
}
