package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edgefleet/edgefleet/hub/registry"
	"github.com/edgefleet/edgefleet/hub/store"
	"github.com/edgefleet/edgefleet/ota/wire"
)

var _ store.Registry = (*Store)(nil)

// Enroll registers a device or, with Replace, re-enrolls one (see
// registry.Enrolled for the rules).
func (s *Store) Enroll(ctx context.Context, e registry.Enrollment) (registry.Device, error) {
	if err := e.Validate(); err != nil {
		return registry.Device{}, err
	}
	var out registry.Device
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		now := s.now().UTC()
		cur, err := getDevice(ctx, tx, e.ID, true)
		exists := err == nil
		if err != nil && !errors.Is(err, registry.ErrNotFound) {
			return err
		}
		d, superseded, err := registry.Enrolled(cur, exists, e, now)
		if err != nil {
			return err
		}
		if err := putRevoked(ctx, tx, superseded); err != nil {
			return err
		}
		out = d
		return putDevice(ctx, tx, d)
	})
	if err != nil {
		return registry.Device{}, wrap(err)
	}
	return out, nil
}

// Get returns a device.
func (s *Store) Get(ctx context.Context, id string) (registry.Device, error) {
	d, err := getDevice(ctx, s.pool, id, false)
	if err != nil {
		return registry.Device{}, wrap(err)
	}
	s.overlay(&d)
	return d, nil
}

// List returns the devices whose labels match sel, ordered by id.
func (s *Store) List(ctx context.Context, sel registry.Selector) ([]registry.Device, error) {
	rows, err := s.pool.Query(ctx, "SELECT doc FROM devices ORDER BY id")
	if err != nil {
		return nil, wrap(err)
	}
	var out []registry.Device
	for rows.Next() {
		var d registry.Device
		if err := rows.Scan(&d); err != nil {
			rows.Close()
			return nil, wrap(err)
		}
		if sel.Matches(d.Labels) {
			s.overlay(&d)
			out = append(out, d)
		}
	}
	return out, wrap(rows.Err())
}

// Check tells whether a certificate with this serial may act as device id.
func (s *Store) Check(ctx context.Context, id, serial string) error {
	d, err := s.Get(ctx, id)
	if err != nil {
		return err
	}
	return registry.CheckCert(d, serial)
}

// SetLabels replaces a device's labels.
func (s *Store) SetLabels(ctx context.Context, id string, labels map[string]string) (registry.Device, error) {
	if err := registry.ValidateLabels(labels); err != nil {
		return registry.Device{}, err
	}
	return s.update(ctx, id, func(tx pgx.Tx, d *registry.Device) error {
		d.Labels = maps.Clone(labels)
		if d.Labels == nil {
			d.Labels = map[string]string{}
		}
		return nil
	})
}

// Revoke marks a device revoked and records its certificate as revoked.
func (s *Store) Revoke(ctx context.Context, id string) (registry.Device, error) {
	return s.update(ctx, id, func(tx pgx.Tx, d *registry.Device) error {
		if d.Revoked {
			return nil
		}
		now := s.now().UTC()
		d.Revoked, d.RevokedAt, d.Online = true, now, false
		return putRevoked(ctx, tx, registry.RevokedCert{Serial: d.CertSerial, Device: d.ID, At: now})
	})
}

// RevokedCerts lists every revoked or superseded certificate.
func (s *Store) RevokedCerts(ctx context.Context) ([]registry.RevokedCert, error) {
	rows, err := s.pool.Query(ctx, "SELECT serial, device, at FROM revoked_certs ORDER BY serial")
	if err != nil {
		return nil, wrap(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (registry.RevokedCert, error) {
		var rc registry.RevokedCert
		err := r.Scan(&rc.Serial, &rc.Device, &rc.At)
		rc.At = rc.At.UTC()
		return rc, err
	})
	return out, wrap(err)
}

// UpdateDesired changes a device's desired models with fn (see
// registry.NextDesired). Revoked devices refuse.
func (s *Store) UpdateDesired(ctx context.Context, id string, fn func(models map[string]wire.DesiredModel) error) (ds wire.DesiredState, changed bool, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		ds, changed, err = s.updateDesiredTx(ctx, tx, id, fn)
		return err
	})
	if err != nil {
		return wire.DesiredState{}, false, wrap(err)
	}
	return ds, changed, nil
}

// updateDesiredTx is UpdateDesired inside tx (rollouts change desired
// states in their own transactions).
func (s *Store) updateDesiredTx(ctx context.Context, tx pgx.Tx, id string, fn func(models map[string]wire.DesiredModel) error) (ds wire.DesiredState, changed bool, err error) {
	d, err := getDevice(ctx, tx, id, true)
	if err != nil {
		return wire.DesiredState{}, false, err
	}
	if d.Revoked {
		return wire.DesiredState{}, false, fmt.Errorf("%s: %w", id, registry.ErrRevoked)
	}
	cur, err := getDesired(ctx, tx, id)
	if err != nil {
		return wire.DesiredState{}, false, err
	}
	next, ch, err := registry.NextDesired(cur, id, s.now().UTC(), fn)
	if err != nil {
		return wire.DesiredState{}, false, err
	}
	if !ch {
		return cur, false, nil
	}
	if _, err := tx.Exec(ctx, `INSERT INTO desired (id, revision, doc) VALUES ($1, $2, $3)
		ON CONFLICT (id) DO UPDATE SET revision = excluded.revision, doc = excluded.doc`,
		id, next.Revision, next); err != nil {
		return wire.DesiredState{}, false, err
	}
	d.DesiredRevision = next.Revision
	if err := putDevice(ctx, tx, d); err != nil {
		return wire.DesiredState{}, false, err
	}
	return next, true, nil
}

// SetDesired replaces a device's desired models; see UpdateDesired.
func (s *Store) SetDesired(ctx context.Context, id string, models map[string]wire.DesiredModel) (wire.DesiredState, bool, error) {
	return s.UpdateDesired(ctx, id, func(m map[string]wire.DesiredModel) error {
		clear(m)
		maps.Copy(m, models)
		return nil
	})
}

// Desired returns a device's desired state; revision 0 and no models when
// none was ever set.
func (s *Store) Desired(ctx context.Context, id string) (wire.DesiredState, error) {
	if _, err := getDevice(ctx, s.pool, id, false); err != nil {
		return wire.DesiredState{}, wrap(err)
	}
	ds, err := getDesired(ctx, s.pool, id)
	return ds, wrap(err)
}

// ForEachDesired calls fn with every device's desired state (devices
// without one and revoked devices are skipped), ordered by device id.
func (s *Store) ForEachDesired(ctx context.Context, fn func(wire.DesiredState) error) error {
	rows, err := s.pool.Query(ctx, `SELECT ds.doc FROM desired ds JOIN devices d USING (id)
		WHERE NOT d.revoked ORDER BY ds.id`)
	if err != nil {
		return wrap(err)
	}
	all, err := pgx.CollectRows(rows, pgx.RowTo[wire.DesiredState])
	if err != nil {
		return wrap(err)
	}
	for _, ds := range all {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(ds); err != nil {
			return err
		}
	}
	return nil
}

// Report stores a device's reported state and updates its inventory from
// it. Unknown and revoked devices are refused.
func (s *Store) Report(ctx context.Context, rs wire.ReportedState) error {
	if err := rs.Validate(); err != nil {
		return err
	}
	now := s.now().UTC()
	_, err := s.update(ctx, rs.DeviceID, func(tx pgx.Tx, d *registry.Device) error {
		if d.Revoked {
			return fmt.Errorf("%s: %w", d.ID, registry.ErrRevoked)
		}
		rs.Time = rs.Time.UTC()
		if _, err := tx.Exec(ctx, `INSERT INTO reported (id, doc) VALUES ($1, $2)
			ON CONFLICT (id) DO UPDATE SET doc = excluded.doc`, d.ID, rs); err != nil {
			return err
		}
		registry.ApplyReport(d, rs, now)
		return nil
	})
	if err == nil {
		s.Touch(rs.DeviceID, now)
	}
	return err
}

// Reported returns a device's last reported state; ok is false when it
// never reported.
func (s *Store) Reported(ctx context.Context, id string) (rs wire.ReportedState, ok bool, err error) {
	if _, err := getDevice(ctx, s.pool, id, false); err != nil {
		return rs, false, wrap(err)
	}
	err = s.pool.QueryRow(ctx, "SELECT doc FROM reported WHERE id = $1", id).Scan(&rs)
	if errors.Is(err, pgx.ErrNoRows) {
		return wire.ReportedState{}, false, nil
	}
	if err != nil {
		return wire.ReportedState{}, false, wrap(err)
	}
	return rs, true, nil
}

// SetPresence records a presence announcement (or a last will).
func (s *Store) SetPresence(ctx context.Context, id string, p wire.Presence) error {
	now := s.now().UTC()
	_, err := s.update(ctx, id, func(tx pgx.Tx, d *registry.Device) error {
		d.Online = p.Online && !d.Revoked
		if p.Online {
			d.LastSeen = now
		}
		return nil
	})
	if err == nil && p.Online {
		s.Touch(id, now)
	}
	return err
}

// Heartbeat records a heartbeat: LastSeen moves in memory (see Flush); the
// announced interval and presence are written only when they change.
func (s *Store) Heartbeat(ctx context.Context, id string, hb wire.Heartbeat) error {
	d, err := s.Get(ctx, id)
	if err != nil {
		return err
	}
	if d.Revoked {
		return fmt.Errorf("pgstore: %s: %w", id, registry.ErrRevoked)
	}
	s.Touch(id, s.now().UTC())
	secs := max(hb.IntervalSeconds, 0)
	if secs != d.HeartbeatSeconds || !d.Online {
		_, err = s.update(ctx, id, func(tx pgx.Tx, d *registry.Device) error {
			d.HeartbeatSeconds = secs
			d.Online = true
			return nil
		})
	}
	return err
}

// Touch moves a device's LastSeen forward in memory.
func (s *Store) Touch(id string, at time.Time) {
	s.mu.Lock()
	if at.After(s.seen[id]) {
		s.seen[id] = at
	}
	s.mu.Unlock()
}

// Flush writes the LastSeen times kept in memory, in one transaction; a
// time older than the stored one (another replica's) is left alone.
func (s *Store) Flush(ctx context.Context) error {
	s.mu.Lock()
	seen := s.seen
	s.seen = map[string]time.Time{}
	s.mu.Unlock()
	if len(seen) == 0 {
		return nil
	}
	ids := make([]string, 0, len(seen))
	for id := range seen {
		ids = append(ids, id)
	}
	sort.Strings(ids) // one lock order for every replica
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for _, id := range ids {
			d, err := getDevice(ctx, tx, id, true)
			if errors.Is(err, registry.ErrNotFound) {
				continue
			} else if err != nil {
				return err
			}
			if seen[id].After(d.LastSeen) {
				d.LastSeen = seen[id]
				if err := putDevice(ctx, tx, d); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		for id, at := range seen {
			s.Touch(id, at)
		}
		return wrap(err)
	}
	return nil
}

func (s *Store) overlay(d *registry.Device) {
	s.mu.Lock()
	at, ok := s.seen[d.ID]
	s.mu.Unlock()
	if ok && at.After(d.LastSeen) {
		d.LastSeen = at
	}
}

// update runs fn on a device's record under its row lock and writes it.
func (s *Store) update(ctx context.Context, id string, fn func(pgx.Tx, *registry.Device) error) (registry.Device, error) {
	var out registry.Device
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		d, err := getDevice(ctx, tx, id, true)
		if err != nil {
			return err
		}
		if err := fn(tx, &d); err != nil {
			return err
		}
		out = d
		return putDevice(ctx, tx, d)
	})
	if err != nil {
		return registry.Device{}, wrap(err)
	}
	s.overlay(&out)
	return out, nil
}

// querier is a pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func getDevice(ctx context.Context, q querier, id string, lock bool) (registry.Device, error) {
	sql := "SELECT doc FROM devices WHERE id = $1"
	if lock {
		sql += " FOR UPDATE"
	}
	var d registry.Device
	err := q.QueryRow(ctx, sql, id).Scan(&d)
	if errors.Is(err, pgx.ErrNoRows) {
		return registry.Device{}, fmt.Errorf("%s: %w", id, registry.ErrNotFound)
	}
	if err != nil {
		return registry.Device{}, fmt.Errorf("device %q: %w", id, err)
	}
	return d, nil
}

func putDevice(ctx context.Context, tx pgx.Tx, d registry.Device) error {
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO devices (id, doc, revoked) VALUES ($1, $2, $3)
		ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, revoked = excluded.revoked`, d.ID, b, d.Revoked)
	return err
}

func getDesired(ctx context.Context, q querier, id string) (wire.DesiredState, error) {
	ds := wire.DesiredState{DeviceID: id, Models: map[string]wire.DesiredModel{}}
	err := q.QueryRow(ctx, "SELECT doc FROM desired WHERE id = $1", id).Scan(&ds)
	if errors.Is(err, pgx.ErrNoRows) {
		return wire.DesiredState{DeviceID: id, Models: map[string]wire.DesiredModel{}}, nil
	}
	if err != nil {
		return ds, fmt.Errorf("desired %q: %w", id, err)
	}
	return ds, nil
}

func putRevoked(ctx context.Context, tx pgx.Tx, rc registry.RevokedCert) error {
	if rc.Serial == "" {
		return nil
	}
	_, err := tx.Exec(ctx, `INSERT INTO revoked_certs (serial, device, at) VALUES ($1, $2, $3)
		ON CONFLICT (serial) DO UPDATE SET device = excluded.device, at = excluded.at`, rc.Serial, rc.Device, rc.At)
	return err
}

func wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("pgstore: %w", err)
}
