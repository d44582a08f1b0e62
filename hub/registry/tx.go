package registry

import (
	"encoding/json"
	"fmt"
	"maps"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/ota/wire"
)

// UpdateDesiredTx is UpdateDesired inside the caller's bbolt write
// transaction, for packages that keep their own buckets in the hub's
// database and must change desired states atomically with them (rollouts
// record a device's previous model in the same transaction that sets the
// new one). tx must belong to the registry's database. The caller
// publishes the changed states after the transaction commits.
func (r *Registry) UpdateDesiredTx(tx *bolt.Tx, id string, fn func(models map[string]wire.DesiredModel) error) (ds wire.DesiredState, changed bool, err error) {
	d, err := getDevice(tx, id)
	if err != nil {
		return wire.DesiredState{}, false, wrap(err)
	}
	if d.Revoked {
		return wire.DesiredState{}, false, wrap(fmt.Errorf("%s: %w", id, ErrRevoked))
	}
	cur, err := getDesired(tx, id)
	if err != nil {
		return wire.DesiredState{}, false, wrap(err)
	}
	models := maps.Clone(cur.Models)
	if models == nil {
		models = map[string]wire.DesiredModel{}
	}
	if err := fn(models); err != nil {
		return wire.DesiredState{}, false, err
	}
	if cur.Revision > 0 && wire.EqualModels(cur.Models, models) {
		return cur, false, nil
	}
	next := wire.DesiredState{DeviceID: id, Revision: cur.Revision + 1, Models: models, Updated: r.now().UTC()}
	if err := next.Validate(); err != nil {
		return wire.DesiredState{}, false, err
	}
	b, err := json.Marshal(next)
	if err != nil {
		return wire.DesiredState{}, false, err
	}
	if err := tx.Bucket(bucketDesired).Put([]byte(id), b); err != nil {
		return wire.DesiredState{}, false, wrap(err)
	}
	d.DesiredRevision = next.Revision
	if err := putDevice(tx, d); err != nil {
		return wire.DesiredState{}, false, wrap(err)
	}
	return next, true, nil
}
