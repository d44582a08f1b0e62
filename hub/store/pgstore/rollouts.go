package pgstore

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/edgefleet/edgefleet/hub/rollout"
	"github.com/edgefleet/edgefleet/ota/wire"
)

var _ rollout.Store = (*Rollouts)(nil)

// Rollouts keeps rollouts and their devices in the store's database; it
// changes desired states in the same transactions.
type Rollouts struct{ s *Store }

// Rollouts returns the store's rollout tables.
func (s *Store) Rollouts() *Rollouts { return &Rollouts{s} }

// Load reads every rollout and its devices.
func (r *Rollouts) Load(ctx context.Context) ([]rollout.Rollout, map[string][]rollout.Device, error) {
	rows, err := r.s.pool.Query(ctx, "SELECT doc FROM rollouts ORDER BY id")
	if err != nil {
		return nil, nil, wrap(err)
	}
	rs, err := pgx.CollectRows(rows, pgx.RowTo[rollout.Rollout])
	if err != nil {
		return nil, nil, wrap(err)
	}
	rows, err = r.s.pool.Query(ctx, "SELECT rollout, doc FROM rollout_devices ORDER BY rollout, id")
	if err != nil {
		return nil, nil, wrap(err)
	}
	devs := map[string][]rollout.Device{}
	for rows.Next() {
		var id string
		var d rollout.Device
		if err := rows.Scan(&id, &d); err != nil {
			rows.Close()
			return nil, nil, wrap(err)
		}
		devs[id] = append(devs[id], d)
	}
	return rs, devs, wrap(rows.Err())
}

// Update runs fn in one PostgreSQL transaction.
func (r *Rollouts) Update(ctx context.Context, fn func(rollout.Tx) error) error {
	err := pgx.BeginFunc(ctx, r.s.pool, func(tx pgx.Tx) error { return fn(&rolloutTx{ctx, tx, r.s}) })
	if err != nil {
		return fmt.Errorf("pgstore: rollouts: %w", err)
	}
	return nil
}

type rolloutTx struct {
	ctx context.Context
	tx  pgx.Tx
	s   *Store
}

func (t *rolloutTx) PutRollout(r rollout.Rollout) error {
	_, err := t.tx.Exec(t.ctx, `INSERT INTO rollouts (id, doc) VALUES ($1, $2)
		ON CONFLICT (id) DO UPDATE SET doc = excluded.doc`, r.ID, r)
	return err
}

func (t *rolloutTx) PutDevice(rolloutID string, d *rollout.Device) error {
	_, err := t.tx.Exec(t.ctx, `INSERT INTO rollout_devices (rollout, id, doc) VALUES ($1, $2, $3)
		ON CONFLICT (rollout, id) DO UPDATE SET doc = excluded.doc`, rolloutID, d.ID, d)
	return err
}

func (t *rolloutTx) UpdateDesired(id string, fn func(models map[string]wire.DesiredModel) error) (wire.DesiredState, bool, error) {
	return t.s.updateDesiredTx(t.ctx, t.tx, id, fn)
}
