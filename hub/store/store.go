// Package store names the hub's state as small interfaces, so one hub runs
// on either of two implementations chosen by configuration:
//
//   - bbolt, the default: *registry.Registry and *enroll.Tokens in the
//     hub's own file (package hubdb draws its schema). One hub process,
//     nothing else to run.
//   - PostgreSQL (package store/pgstore): the same interfaces in a shared
//     database, with versioned migrations and a leader lease, so several
//     hub replicas can share one fleet's state (cluster mode).
//
// Both implementations pass one conformance suite (package
// store/storetest), run against both by their tests.
package store

import (
	"context"
	"time"

	"github.com/edgefleet/edgefleet/hub/enroll"
	"github.com/edgefleet/edgefleet/hub/registry"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// Devices is the inventory: enrollment, lookup, labels and certificate
// checks.
type Devices interface {
	Enroll(ctx context.Context, e registry.Enrollment) (registry.Device, error)
	Get(ctx context.Context, id string) (registry.Device, error)
	List(ctx context.Context, sel registry.Selector) ([]registry.Device, error)
	SetLabels(ctx context.Context, id string, labels map[string]string) (registry.Device, error)
	// Check tells whether the certificate serial may act as device id
	// (registry.ErrNotFound, ErrRevoked, ErrSuperseded).
	Check(ctx context.Context, id, serial string) error
}

// Revocations revoke devices and list the certificates that no longer
// hold, for the CRL.
type Revocations interface {
	Revoke(ctx context.Context, id string) (registry.Device, error)
	RevokedCerts(ctx context.Context) ([]registry.RevokedCert, error)
}

// DesiredStates keeps each device's desired models with a revision that
// grows only when they change.
type DesiredStates interface {
	UpdateDesired(ctx context.Context, id string, fn func(models map[string]wire.DesiredModel) error) (wire.DesiredState, bool, error)
	SetDesired(ctx context.Context, id string, models map[string]wire.DesiredModel) (wire.DesiredState, bool, error)
	Desired(ctx context.Context, id string) (wire.DesiredState, error)
	ForEachDesired(ctx context.Context, fn func(wire.DesiredState) error) error
}

// Reports takes what devices tell: reported state, presence, heartbeats.
// Heartbeats may be kept in memory until Flush.
type Reports interface {
	Report(ctx context.Context, rs wire.ReportedState) error
	Reported(ctx context.Context, id string) (wire.ReportedState, bool, error)
	SetPresence(ctx context.Context, id string, p wire.Presence) error
	Heartbeat(ctx context.Context, id string, hb wire.Heartbeat) error
	Flush(ctx context.Context) error
}

// Registry is the whole device registry.
type Registry interface {
	Devices
	Revocations
	DesiredStates
	Reports
}

// Tokens are one-time bootstrap tokens.
type Tokens interface {
	Create(ctx context.Context, opts enroll.TokenOptions) (string, enroll.Token, error)
	Peek(ctx context.Context, secret string) (enroll.Token, error)
	Redeem(ctx context.Context, secret, device string) (enroll.Token, error)
	// Release undoes a redemption whose enrollment failed afterwards.
	Release(ctx context.Context, secret string) error
	List(ctx context.Context) ([]enroll.Token, error)
	Prune(ctx context.Context, cutoff time.Time) (int, error)
}

// The bbolt implementations.
var (
	_ Registry = (*registry.Registry)(nil)
	_ Tokens   = (*enroll.Tokens)(nil)
)
