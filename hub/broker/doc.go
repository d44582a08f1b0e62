// Package broker connects the hub to MQTT: Embedded runs a mochi-mqtt broker
// inside the hub with a mutual-TLS listener and per-device authorization,
// and External connects the hub to another broker (Mosquitto, EMQX, HiveMQ)
// with the hub's client certificate. Both offer the same Publish and
// Subscribe, so the rest of the hub does not care which one runs.
//
// # Authorization (embedded broker)
//
// Clients must present a certificate signed by the hub's CA
// (tls.RequireAndVerifyClientCert). The certificate's common name is the
// identity:
//
//   - a device id: the device must be enrolled, not revoked, and the
//     certificate must be its current one (checked at the TLS handshake and
//     again at CONNECT); the MQTT client id must equal the device id (so a
//     device cannot take over another's session); its last will must be on
//     its own presence topic; it may subscribe only inside its own subtree
//     (edgefleet/v1/devices/{id}/...) and publish only on its device → hub
//     topics (wire.DeviceMayPublish);
//   - ca.HubIdentity: full access (another hub process);
//   - anything else, including the admin identity: refused.
//
// The hub itself uses the broker's inline client, which bypasses the checks.
// Kick disconnects a device at once (used on revocation).
//
// # External brokers
//
// The mosquitto/ folder holds a Mosquitto configuration and ACL file that
// enforce the same rules (use_identity_as_username, use_username_as_clientid
// and pattern ACLs), with a README; the tests run them against a real
// Mosquitto. Revocation there works through the CRL the hub writes
// (crl.pem in its data folder), which Mosquitto reads when it starts or
// reloads; existing connections of a revoked device are not cut.
package broker

// Handler receives a message. Handlers may run concurrently for different
// topics; they must not block for long.
type Handler = func(topic string, payload []byte)
