// Package telemetry is the hub's side of device telemetry: a Receiver
// takes wire.TelemetryReport messages over MQTT (each device's telemetry
// topic, acknowledged on its telemetry/ack topic) and QUIC (one stream per
// report, mutual TLS with device certificates), and a Store deduplicates
// and keeps them for the API, the dashboard, the rollout gates and
// Prometheus.
//
// # Exactly once
//
// Devices number their snapshots per stream (their queue's identity) and
// delete them only once acknowledged. The Store keeps a high-water mark
// per (device, stream) in bbolt and stores a report's new snapshots, its
// totals and the new mark in one transaction (bbolt's Batch, so many
// devices' reports share a commit) before it acknowledges. A replay after
// a device crash, a lost acknowledgement or a hub crash is therefore
// counted once; snapshots a device dropped for lack of room show as gaps
// and in its reported drop count.
//
// # Storage (in the hub's bbolt file)
//
//	telemetry.devices   device → streams (id, high-water mark, dropped), counters
//	telemetry.window    device → n → Entry (JSON), the newest Options.Window
//	telemetry.totals    device\x00model\x00version → Totals (JSON), cumulative
//
// The newest Options.Ring entries per device and the fleet roll-ups per
// model version (Options.Step resolution over Options.Span, rebuilt from
// the windows at start) are kept in memory.
//
// # Reading
//
// Overview, Devices, Device, Window, Series, ModelVersions, Totals,
// VersionTotals, ModelHealth, VersionHealth, ModelHealthSince and Watch
// serve the API and the dashboard; Store is also a prometheus.Collector
// exporting per-device series (bounded by Options.MaxSeries, the rest
// summed under device="_overflow") and per-model-version roll-ups.
//
// # Caveats
//
// Snapshot times are the devices' clocks; roll-up steps use them (clamped
// to the hub's now), so a backlog that arrives after days lands in steps
// outside the roll-up span and shows only in the totals and windows.
// Counters on /metrics are cumulative from the stored totals, so a backlog
// raises them at once when it arrives.
//
// The hub remembers the high-water marks of a device's four most recent
// streams; a replay from an older stream (a queue recreated four times
// since) would be stored again.
package telemetry
