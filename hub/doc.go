// Package hub is edgefleet's control plane: one process that keeps the
// device registry (bbolt), enrolls devices with bootstrap tokens and its own
// CA, runs (or connects to) the MQTT broker, keeps each device's desired
// and reported state in step, serves the REST API, and serves an embedded
// OCI registry for model artifacts, so a fleet needs nothing else to start.
//
// # Basics
//
//	h, err := hub.New(ctx, hub.Options{DataDir: "/var/lib/edgefleet-hub"})
//	...
//	err = h.Run(ctx) // until ctx ends
//
// # Data folder
//
//	hub.db             bbolt: devices, desired/reported state, tokens, OCI manifests,
//	                   rollouts, telemetry (schema and migrations: package hubdb)
//	ca.crt, ca.key     the hub's CA (agents trust ca.crt)
//	admin.crt/.key     the admin client certificate the CLI uses (mTLS)
//	api.url            the API URL as advertised, for the CLI
//	crl.pem            revoked device certificates, for external brokers
//	blobs/             the embedded OCI registry's blobs
//	quic_reset.key     the telemetry QUIC listener's stateless reset key (0600): a
//	                   restarted hub resets its predecessor's connections at once
//
// # Rollouts
//
// The hub runs a rollout.Manager: canary rollouts of model versions in
// waves, gated on the health devices report, halted and rolled back
// fleet-wide on a breach (see package rollout; REST /v1/rollouts,
// `edgefleet rollout`).
//
// # Listeners
//
// The API (HTTPS, with optional client certificates) on Options.APIAddr, the
// embedded MQTT broker (TLS, client certificates required) on
// Options.MQTTAddr unless Options.Broker names an external one, and the
// embedded OCI registry (plain HTTP; keep it on loopback) on
// Options.RegistryAddr unless it is "off".
package hub
