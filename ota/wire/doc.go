// Package wire defines what edgefleet agents and the hub exchange: the
// desired and reported state of a device (the device-shadow pattern), its
// inventory, heartbeats, presence and the telemetry batch envelope, all as
// JSON, and the MQTT topics they travel on. It has no dependencies beyond
// the standard library, so agent and hub share it without importing each
// other.
//
// # Topics
//
// Every device owns one subtree, DeviceRoot(id) = "edgefleet/v1/devices/{id}":
//
//	.../desired        hub → device, retained, QoS 1: DesiredState
//	.../reported       device → hub, QoS 1: ReportedState
//	.../heartbeat      device → hub, QoS 0: Heartbeat
//	.../presence       device → hub, retained, QoS 1: Presence (also the last will)
//	.../telemetry      device → hub, QoS 1: TelemetryReport
//	.../telemetry/ack  hub → device, QoS 1: TelemetryReportAck
//
// A device may read its whole subtree and publish only on the device → hub
// topics (DeviceMayPublish); brokers enforce this per certificate identity.
//
// # Revisions
//
// The hub increments DesiredState.Revision whenever a device's desired
// models change. An agent applies a desired state only when its revision is
// newer than the last one it applied (or failed), so receiving the same
// retained message again, on every reconnect, is a no-op.
//
// # Compatibility
//
// Decoders ignore unknown fields so that newer hubs and agents can add
// fields; removing or renaming a field needs a new topic version (v2).
package wire
