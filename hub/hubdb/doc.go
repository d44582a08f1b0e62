// Package hubdb owns the hub's bbolt file (DATA/hub.db): every bucket's
// name, the schema version and the forward migrations between versions.
// The packages that keep state in the file (registry, enroll, rollout,
// telemetry, oci) take their bucket names from here and nothing else opens
// the file: the hub calls Open, which migrates an older file in place
// before any package reads it.
//
// # Naming rule
//
// A top-level bucket is named "<owner>.<things>": the Go package that
// reads and writes it, a dot, and a lowercase plural noun (words joined by
// '_'). Nested buckets and keys are named by the value they hold (a device
// id, a rollout id, a sequence number). One package never writes another
// package's buckets; the one exception is registry.UpdateDesiredTx, which
// the rollout manager calls inside its own transaction.
//
// # Schema (version 2)
//
// Values marked JSON are JSON documents of the named Go type; <seq> keys are
// big-endian uint64, so cursors walk them in order.
//
//	hub.meta
//	└── schema          : "2"          schema version (decimal), for ordered migrations
//	registry.devices
//	└── <device id>     : JSON         registry.Device (labels, inventory, presence, cert serial)
//	registry.desired
//	└── <device id>     : JSON         wire.DesiredState (revision, models)
//	registry.reported
//	└── <device id>     : JSON         wire.ReportedState, as last reported
//	registry.revoked_certs
//	└── <serial hex>    : JSON         registry.RevokedCert (revoked or superseded)
//	enroll.tokens
//	└── <sha256 hex>    : JSON         enroll.Token (the secret's hash is the key)
//	rollout.rollouts
//	└── <rollout id>    : JSON         rollout.Rollout (spec, waves, phase)
//	rollout.devices
//	└── <rollout id>                   one bucket per rollout
//	    └── <device id> : JSON         rollout.Device (wave, previous model, outcome)
//	telemetry.devices
//	└── <device id>     : JSON         per-device record: stream high-water marks, count
//	telemetry.window
//	└── <device id>                    one bucket per device
//	    └── <seq>       : JSON         telemetry.Entry (the last Window snapshots)
//	telemetry.totals
//	└── <device>\x00<model>\x00<version> : JSON  telemetry.Totals
//	oci.manifests                      sequence = last journal entry
//	└── <seq>           : JSON         manifest PUT/DELETE journal entry, replayed on start
//
// # Versions and migrations
//
//	1  the layout before this package: devices, desired, reported,
//	   revoked_certs, meta (schema "1", written by the registry only),
//	   enroll_tokens, rollouts, rollout_devices, oci_manifests and the
//	   telemetry.* buckets; a file with no meta at all is version 1 too.
//	2  the naming rule above; meta moves to hub.meta.
//
// Migrate brings a file from any older version to Version, one step at a
// time, all steps in one bbolt transaction: a crash during a migration
// leaves the old file as it was. A file written by a newer hub (a higher
// version) is refused rather than misread. Each step is tested on a file
// built in the older layout (migrate_test.go).
package hubdb
