package registry

import (
	"fmt"
	"maps"
	"time"

	"github.com/edgefleet/edgefleet/ota/wire"
)

// The rules below are the registry's, shared by every store that keeps
// devices (bbolt here, PostgreSQL in cluster mode), so the stores differ
// only in where the records live.

// Validate checks an enrollment before any store is touched.
func (e Enrollment) Validate() error {
	if err := wire.ValidateDeviceID(e.ID); err != nil {
		return err
	}
	if err := ValidateLabels(e.Labels); err != nil {
		return err
	}
	if e.CertSerial == "" {
		return fmt.Errorf("registry: enrollment without certificate serial: %w", ErrInvalid)
	}
	return nil
}

// Enrolled applies enrollment e at now to a device's current record (exists
// false: the device is new). It returns the new record and, on a
// re-enrollment, the certificate it supersedes (zero RevokedCert
// otherwise). A revoked device stays revoked (ErrRevoked); an existing one
// without e.Replace is ErrExists.
func Enrolled(cur Device, exists bool, e Enrollment, now time.Time) (Device, RevokedCert, error) {
	var superseded RevokedCert
	d := cur
	switch {
	case !exists:
		d = Device{ID: e.ID, Labels: map[string]string{}}
	case d.Revoked:
		return Device{}, superseded, fmt.Errorf("%s: %w", e.ID, ErrRevoked)
	case !e.Replace:
		return Device{}, superseded, fmt.Errorf("%s: %w", e.ID, ErrExists)
	default:
		superseded = RevokedCert{Serial: d.CertSerial, Device: d.ID, At: now}
	}
	d.Labels = maps.Clone(d.Labels)
	if d.Labels == nil {
		d.Labels = map[string]string{}
	}
	maps.Copy(d.Labels, e.Labels)
	d.Hardware = e.Hardware
	d.AgentVersion = e.AgentVersion
	d.CertSerial = e.CertSerial
	d.CertNotAfter = e.CertNotAfter.UTC()
	d.Enrolled = now
	d.Online = false
	return d, superseded, nil
}

// CheckCert is Check's rule on a device record.
func CheckCert(d Device, serial string) error {
	if d.Revoked {
		return fmt.Errorf("registry: %s: %w", d.ID, ErrRevoked)
	}
	if d.CertSerial != serial {
		return fmt.Errorf("registry: %s: serial %s: %w", d.ID, serial, ErrSuperseded)
	}
	return nil
}

// NextDesired applies fn to a copy of cur's models. The revision grows
// only when the models change (changed); next is cur otherwise.
func NextDesired(cur wire.DesiredState, id string, now time.Time, fn func(models map[string]wire.DesiredModel) error) (next wire.DesiredState, changed bool, err error) {
	models := maps.Clone(cur.Models)
	if models == nil {
		models = map[string]wire.DesiredModel{}
	}
	if err := fn(models); err != nil {
		return wire.DesiredState{}, false, err
	}
	next = wire.DesiredState{DeviceID: id, Revision: cur.Revision + 1, Models: models, Updated: now}
	if err := next.Validate(); err != nil {
		return wire.DesiredState{}, false, err
	}
	if cur.Revision > 0 && wire.EqualModels(cur.Models, models) {
		return cur, false, nil
	}
	return next, true, nil
}

// ApplyReport updates a device's inventory from its reported state.
func ApplyReport(d *Device, rs wire.ReportedState, now time.Time) {
	d.AgentVersion = rs.AgentVersion
	d.Hardware = rs.Hardware
	d.Models = rs.Models
	d.AppliedRevision = rs.AppliedRevision
	d.FailedRevision = rs.FailedRevision
	d.LastError = rs.LastError
	d.LastSeen = now
}
