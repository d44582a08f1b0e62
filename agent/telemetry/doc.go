// Package telemetry is the agent's store-and-forward telemetry: every
// interval a Sampler turns the agent's Prometheus collectors (the same
// ones /metrics serves) and the machine's state into a wire.Snapshot of
// per-model-version deltas (requests, errors, latency and batch-size
// histograms, NaN/Inf outputs, execution provider) and machine gauges
// (CPU, RSS, memory, disk, GPU memory through nvidia-smi when present).
// Snapshots go into a durable Queue with a byte budget, and a shipper
// sends the oldest as wire.TelemetryReport over MQTT or QUIC, deleting
// them only when the hub acknowledges them.
//
// # Basics
//
//	t, err := telemetry.New(telemetry.Options{Dir: dataDir, Gatherer: registry})
//	go t.Run(ctx)                                  // samples from now on
//	up, err := telemetry.FleetUplink(fleetClient, "")
//	err = t.Attach(up)                             // ships once enrolled
//	...
//	t.Close()                                      // after Run returned
//
// # Queue (Dir/telemetry.db, bbolt)
//
// Snapshots are numbered 1, 2, 3, … within the queue's stream (a random id
// made with the file). Appending beyond the byte budget drops the oldest
// snapshots and counts them; the count travels with every report. Every
// change is one transaction, so kill -9 at any point loses nothing that
// was appended, and acknowledged snapshots are never sent again except
// for the last report in flight (which the hub recognises as a duplicate).
// Counters since the last snapshot live only in memory: a crash loses at
// most one interval of deltas.
//
// # Transports
//
// MQTT (the default) publishes on the device's telemetry topic with QoS 1
// through the fleet client's connection and waits for the answer on the
// telemetry/ack topic. QUIC opens one stream per report on a long-lived
// connection, with the device's enrollment certificate and TLS session
// resumption; when the QUIC handshake times out (UDP blocked) reports go
// over MQTT for Options.FallbackHold before QUIC is tried again. One
// report is in flight at a time, so snapshots arrive in order.
package telemetry
