// Package registry is the hub's device registry in bbolt: each device's
// inventory (labels, hardware, agent version, models and active digests,
// presence), its desired state with a revision, its last reported state,
// and the certificates that no longer hold (revoked or superseded).
//
// # Schema
//
// The registry.* buckets of the hub's file; package hubdb draws the whole
// schema and migrates older files.
//
// Every change is one bbolt transaction. Heartbeats only move LastSeen,
// which is kept in memory and written by Flush, so a large fleet's
// heartbeats cost no disk writes.
//
// # Concurrency
//
// A Registry is safe for concurrent use. It shares the hub's *bbolt.DB with
// other packages, each with its own buckets.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/hub/hubdb"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// Errors; test with errors.Is.
var (
	ErrNotFound   = errors.New("device not found")
	ErrExists     = errors.New("device already exists")
	ErrRevoked    = errors.New("device revoked")
	ErrSuperseded = errors.New("certificate superseded by a newer enrollment")
	ErrInvalid    = wire.ErrInvalid
)

var (
	bucketDevices  = hubdb.RegistryDevices
	bucketDesired  = hubdb.RegistryDesired
	bucketReported = hubdb.RegistryReported
	bucketRevoked  = hubdb.RegistryRevokedCerts
)

// Device is a device's registry record.
type Device struct {
	ID           string            `json:"id"`
	Labels       map[string]string `json:"labels"`
	Hardware     wire.Hardware     `json:"hardware"`
	AgentVersion string            `json:"agent_version,omitempty"`
	// Models is the model state last reported by the device.
	Models          map[string]wire.ReportedModel `json:"models,omitempty"`
	AppliedRevision int64                         `json:"applied_revision"`
	FailedRevision  int64                         `json:"failed_revision,omitempty"`
	LastError       string                        `json:"last_error,omitempty"`
	// DesiredRevision is the revision of the device's desired state (0:
	// none set).
	DesiredRevision int64     `json:"desired_revision"`
	Enrolled        time.Time `json:"enrolled"`
	LastSeen        time.Time `json:"last_seen,omitzero"`
	// Online is the presence the device last announced (its last will
	// sets it false). See Device.IsOnline for heartbeat staleness.
	Online bool `json:"online"`
	// HeartbeatSeconds is the heartbeat interval the device announced.
	HeartbeatSeconds int64     `json:"heartbeat_s,omitempty"`
	Revoked          bool      `json:"revoked,omitempty"`
	RevokedAt        time.Time `json:"revoked_at,omitzero"`
	// CertSerial is the serial (lowercase hex) of the device's current
	// certificate; older ones are superseded.
	CertSerial   string    `json:"cert_serial"`
	CertNotAfter time.Time `json:"cert_not_after,omitzero"`
}

// IsOnline reports whether the device announced itself online and, when it
// told its heartbeat interval, was seen within three intervals of now.
func (d Device) IsOnline(now time.Time) bool {
	if !d.Online || d.Revoked {
		return false
	}
	if d.HeartbeatSeconds > 0 && now.Sub(d.LastSeen) > 3*time.Duration(d.HeartbeatSeconds)*time.Second {
		return false
	}
	return true
}

// RevokedCert is a certificate that no longer holds.
type RevokedCert struct {
	Serial string    `json:"serial"`
	Device string    `json:"device"`
	At     time.Time `json:"at"`
}

// Registry is the device registry.
type Registry struct {
	db  *bolt.DB
	now func() time.Time

	mu sync.Mutex // guards seen
	// seen holds LastSeen times not yet written by Flush.
	seen map[string]time.Time
}

// New creates the registry's buckets in db if needed. db is the hub's
// file as hubdb.Open returns it (migrated to the current schema).
func New(db *bolt.DB) (*Registry, error) {
	err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketDevices, bucketDesired, bucketReported, bucketRevoked} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	return &Registry{db: db, now: time.Now, seen: map[string]time.Time{}}, nil
}

// Enrollment is what the enrollment service registers.
type Enrollment struct {
	ID           string
	Labels       map[string]string
	Hardware     wire.Hardware
	AgentVersion string
	CertSerial   string
	CertNotAfter time.Time
	// Replace allows re-enrolling an existing (not revoked) device: its
	// old certificate is superseded, its labels are merged and its
	// desired state kept.
	Replace bool
}

// Enroll registers a device or, with Replace, re-enrolls one. A revoked
// device stays revoked (ErrRevoked); an existing one without Replace is
// ErrExists.
func (r *Registry) Enroll(ctx context.Context, e Enrollment) (Device, error) {
	if err := ctx.Err(); err != nil {
		return Device{}, err
	}
	if err := e.Validate(); err != nil {
		return Device{}, err
	}
	var out Device
	err := r.db.Update(func(tx *bolt.Tx) error {
		now := r.now().UTC()
		cur, err := getDevice(tx, e.ID)
		exists := err == nil
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		d, superseded, err := Enrolled(cur, exists, e, now)
		if err != nil {
			return err
		}
		if err := putRevoked(tx, superseded); err != nil {
			return err
		}
		out = d
		return putDevice(tx, d)
	})
	if err != nil {
		return Device{}, wrap(err)
	}
	return out, nil
}

// Get returns a device.
func (r *Registry) Get(ctx context.Context, id string) (Device, error) {
	if err := ctx.Err(); err != nil {
		return Device{}, err
	}
	var d Device
	err := r.db.View(func(tx *bolt.Tx) error {
		var err error
		d, err = getDevice(tx, id)
		return err
	})
	if err != nil {
		return Device{}, wrap(err)
	}
	r.overlay(&d)
	return d, nil
}

// List returns the devices whose labels match sel, ordered by id.
func (r *Registry) List(ctx context.Context, sel Selector) ([]Device, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []Device
	err := r.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDevices).ForEach(func(k, v []byte) error {
			var d Device
			if err := json.Unmarshal(v, &d); err != nil {
				return fmt.Errorf("device %q: %w", k, err)
			}
			if sel.Matches(d.Labels) {
				out = append(out, d)
			}
			return nil
		})
	})
	if err != nil {
		return nil, wrap(err)
	}
	for i := range out {
		r.overlay(&out[i])
	}
	return out, nil // bbolt iterates in key order
}

// Check tells whether a certificate with this serial may act as device id:
// ErrNotFound for unknown devices, ErrRevoked for revoked ones and
// ErrSuperseded for a certificate of an earlier enrollment.
func (r *Registry) Check(ctx context.Context, id, serial string) error {
	d, err := r.Get(ctx, id)
	if err != nil {
		return err
	}
	return CheckCert(d, serial)
}

// SetLabels replaces a device's labels.
func (r *Registry) SetLabels(ctx context.Context, id string, labels map[string]string) (Device, error) {
	if err := ValidateLabels(labels); err != nil {
		return Device{}, err
	}
	return r.update(ctx, id, func(tx *bolt.Tx, d *Device) error {
		d.Labels = maps.Clone(labels)
		if d.Labels == nil {
			d.Labels = map[string]string{}
		}
		return nil
	})
}

// Revoke marks a device revoked and records its certificate as revoked.
// Revoking twice is not an error.
func (r *Registry) Revoke(ctx context.Context, id string) (Device, error) {
	return r.update(ctx, id, func(tx *bolt.Tx, d *Device) error {
		if d.Revoked {
			return nil
		}
		now := r.now().UTC()
		d.Revoked, d.RevokedAt, d.Online = true, now, false
		return putRevoked(tx, RevokedCert{Serial: d.CertSerial, Device: d.ID, At: now})
	})
}

// RevokedCerts lists every revoked or superseded certificate, for a CRL.
func (r *Registry) RevokedCerts(ctx context.Context) ([]RevokedCert, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []RevokedCert
	err := r.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRevoked).ForEach(func(_, v []byte) error {
			var rc RevokedCert
			if err := json.Unmarshal(v, &rc); err != nil {
				return err
			}
			out = append(out, rc)
			return nil
		})
	})
	return out, wrap(err)
}

// UpdateDesired changes a device's desired models with fn, which receives
// a copy it may modify. The revision increases only when the models
// change; changed reports whether they did. Revoked devices refuse.
func (r *Registry) UpdateDesired(ctx context.Context, id string, fn func(models map[string]wire.DesiredModel) error) (ds wire.DesiredState, changed bool, err error) {
	_, err = r.update(ctx, id, func(tx *bolt.Tx, d *Device) error {
		if d.Revoked {
			return fmt.Errorf("%s: %w", id, ErrRevoked)
		}
		cur, err := getDesired(tx, id)
		if err != nil {
			return err
		}
		next, ch, err := NextDesired(cur, id, r.now().UTC(), fn)
		if err != nil {
			return err
		}
		if !ch {
			ds = cur
			return nil
		}
		b, err := json.Marshal(next)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketDesired).Put([]byte(id), b); err != nil {
			return err
		}
		d.DesiredRevision = next.Revision
		ds, changed = next, true
		return nil
	})
	if err != nil {
		return wire.DesiredState{}, false, err
	}
	return ds, changed, nil
}

// SetDesired replaces a device's desired models; see UpdateDesired.
func (r *Registry) SetDesired(ctx context.Context, id string, models map[string]wire.DesiredModel) (wire.DesiredState, bool, error) {
	return r.UpdateDesired(ctx, id, func(m map[string]wire.DesiredModel) error {
		clear(m)
		maps.Copy(m, models)
		return nil
	})
}

// Desired returns a device's desired state; revision 0 and no models when
// none was ever set.
func (r *Registry) Desired(ctx context.Context, id string) (wire.DesiredState, error) {
	if err := ctx.Err(); err != nil {
		return wire.DesiredState{}, err
	}
	var ds wire.DesiredState
	err := r.db.View(func(tx *bolt.Tx) error {
		if _, err := getDevice(tx, id); err != nil {
			return err
		}
		var err error
		ds, err = getDesired(tx, id)
		return err
	})
	return ds, wrap(err)
}

// ForEachDesired calls fn with every device's desired state (devices
// without one and revoked devices are skipped). fn must not call back into
// the registry.
func (r *Registry) ForEachDesired(ctx context.Context, fn func(wire.DesiredState) error) error {
	var all []wire.DesiredState
	err := r.db.View(func(tx *bolt.Tx) error {
		devices := tx.Bucket(bucketDevices)
		return tx.Bucket(bucketDesired).ForEach(func(k, v []byte) error {
			var d Device
			if raw := devices.Get(k); raw == nil || json.Unmarshal(raw, &d) != nil || d.Revoked {
				return nil
			}
			var ds wire.DesiredState
			if err := json.Unmarshal(v, &ds); err != nil {
				return fmt.Errorf("desired %q: %w", k, err)
			}
			all = append(all, ds)
			return nil
		})
	})
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
// it. The device id must be the authenticated sender's (the topic's), not
// the payload's. Unknown and revoked devices are refused.
func (r *Registry) Report(ctx context.Context, rs wire.ReportedState) error {
	if err := rs.Validate(); err != nil {
		return err
	}
	now := r.now().UTC()
	_, err := r.batchUpdate(ctx, rs.DeviceID, func(tx *bolt.Tx, d *Device) error {
		if d.Revoked {
			return fmt.Errorf("%s: %w", d.ID, ErrRevoked)
		}
		rs.Time = rs.Time.UTC()
		b, err := json.Marshal(rs)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketReported).Put([]byte(d.ID), b); err != nil {
			return err
		}
		ApplyReport(d, rs, now)
		return nil
	})
	if err == nil {
		r.Touch(rs.DeviceID, now)
	}
	return err
}

// Reported returns a device's last reported state; ok is false when it
// never reported.
func (r *Registry) Reported(ctx context.Context, id string) (rs wire.ReportedState, ok bool, err error) {
	if err := ctx.Err(); err != nil {
		return rs, false, err
	}
	err = r.db.View(func(tx *bolt.Tx) error {
		if _, err := getDevice(tx, id); err != nil {
			return err
		}
		v := tx.Bucket(bucketReported).Get([]byte(id))
		if v == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(v, &rs)
	})
	return rs, ok, wrap(err)
}

// SetPresence records a presence announcement (or a last will).
func (r *Registry) SetPresence(ctx context.Context, id string, p wire.Presence) error {
	now := r.now().UTC()
	_, err := r.batchUpdate(ctx, id, func(tx *bolt.Tx, d *Device) error {
		d.Online = p.Online && !d.Revoked
		if p.Online {
			d.LastSeen = now
		}
		return nil
	})
	if err == nil && p.Online {
		r.Touch(id, now)
	}
	return err
}

// Heartbeat records a heartbeat from device id: LastSeen moves in memory
// (see Flush); the announced interval and presence are written only when
// they change.
func (r *Registry) Heartbeat(ctx context.Context, id string, hb wire.Heartbeat) error {
	d, err := r.Get(ctx, id)
	if err != nil {
		return err
	}
	if d.Revoked {
		return fmt.Errorf("registry: %s: %w", id, ErrRevoked)
	}
	r.Touch(id, r.now().UTC())
	secs := max(hb.IntervalSeconds, 0)
	if secs != d.HeartbeatSeconds || !d.Online {
		_, err = r.batchUpdate(ctx, id, func(tx *bolt.Tx, d *Device) error {
			d.HeartbeatSeconds = secs
			d.Online = true
			return nil
		})
	}
	return err
}

// Touch moves a device's LastSeen forward in memory.
func (r *Registry) Touch(id string, at time.Time) {
	r.mu.Lock()
	if at.After(r.seen[id]) {
		r.seen[id] = at
	}
	r.mu.Unlock()
}

// Flush writes the LastSeen times kept in memory.
func (r *Registry) Flush(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	seen := r.seen
	r.seen = map[string]time.Time{}
	r.mu.Unlock()
	if len(seen) == 0 {
		return nil
	}
	ids := make([]string, 0, len(seen))
	for id := range seen {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	err := r.db.Update(func(tx *bolt.Tx) error {
		for _, id := range ids {
			d, err := getDevice(tx, id)
			if errors.Is(err, ErrNotFound) {
				continue
			} else if err != nil {
				return err
			}
			if seen[id].After(d.LastSeen) {
				d.LastSeen = seen[id]
				if err := putDevice(tx, d); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		// Keep the times for the next Flush.
		for id, at := range seen {
			r.Touch(id, at)
		}
		return wrap(err)
	}
	return nil
}

func (r *Registry) overlay(d *Device) {
	r.mu.Lock()
	at, ok := r.seen[d.ID]
	r.mu.Unlock()
	if ok && at.After(d.LastSeen) {
		d.LastSeen = at
	}
}

func (r *Registry) update(ctx context.Context, id string, fn func(*bolt.Tx, *Device) error) (Device, error) {
	return r.write(ctx, r.db.Update, id, fn)
}

// batchUpdate coalesces concurrent writers into fewer transactions (bbolt
// Batch); fn may run more than once.
func (r *Registry) batchUpdate(ctx context.Context, id string, fn func(*bolt.Tx, *Device) error) (Device, error) {
	return r.write(ctx, r.db.Batch, id, fn)
}

func (r *Registry) write(ctx context.Context, run func(func(*bolt.Tx) error) error, id string, fn func(*bolt.Tx, *Device) error) (Device, error) {
	if err := ctx.Err(); err != nil {
		return Device{}, err
	}
	var out Device
	err := run(func(tx *bolt.Tx) error {
		d, err := getDevice(tx, id)
		if err != nil {
			return err
		}
		if err := fn(tx, &d); err != nil {
			return err
		}
		out = d
		return putDevice(tx, d)
	})
	if err != nil {
		return Device{}, wrap(err)
	}
	r.overlay(&out)
	return out, nil
}

func getDevice(tx *bolt.Tx, id string) (Device, error) {
	v := tx.Bucket(bucketDevices).Get([]byte(id))
	if v == nil {
		return Device{}, fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	var d Device
	if err := json.Unmarshal(v, &d); err != nil {
		return Device{}, fmt.Errorf("device %q: %w", id, err)
	}
	return d, nil
}

func putDevice(tx *bolt.Tx, d Device) error {
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketDevices).Put([]byte(d.ID), b)
}

func getDesired(tx *bolt.Tx, id string) (wire.DesiredState, error) {
	ds := wire.DesiredState{DeviceID: id, Models: map[string]wire.DesiredModel{}}
	if v := tx.Bucket(bucketDesired).Get([]byte(id)); v != nil {
		if err := json.Unmarshal(v, &ds); err != nil {
			return ds, fmt.Errorf("desired %q: %w", id, err)
		}
	}
	return ds, nil
}

func putRevoked(tx *bolt.Tx, rc RevokedCert) error {
	if rc.Serial == "" {
		return nil
	}
	b, err := json.Marshal(rc)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketRevoked).Put([]byte(rc.Serial), b)
}

func wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("registry: %w", err)
}
