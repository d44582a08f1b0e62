// Package update installs model versions over the air on an agent: it
// resolves an OCI reference, verifies the artifact's signature, pulls the
// model into the bbolt cache (verified, resumable), checks it, warms it up
// and tests it against the artifact's golden vector, switches the served
// version atomically, and then watches the new version on live traffic,
// rolling back to the previous one when it misbehaves.
//
// # Basics
//
// The agent builds one Updater and mounts Handler on its REST listener
// (POST /v1/updates). Update runs the state machine
//
//	resolving → downloading → downloaded → verified → warmed → activating → active
//
// for one model. Each step is persisted in the model's state map in the
// cache (cache.SetModelStates) before the step's work begins, so a restart
// at any moment finds what was going on; Recover, called before the agent
// loads its models, resumes or discards what it finds. The step to active is
// one cache transaction that names the new version active, the former active
// version previous (kept cached and pinned, for an instant rollback), and
// clears the pending keys: a crash leaves either the old or the new version
// active, never none.
//
// A refused update (bad signature, version older than the newest accepted,
// invalid config, model not matching its config, golden vector mismatch)
// leaves the active version untouched and serving; the refused version is
// removed from the cache again and its manifest digest recorded as rejected,
// so a controller that keeps asking for it does not reinstall a broken
// update in a loop (UpdateOptions.Force overrides).
//
// After activation the new version is watched for config.Watch.Window: the
// Observed backend, which the agent's protocol front ends call instead of
// the model manager, counts requests, server errors and responses with NaN
// or Inf outputs per version and keeps recent latencies. A breach of the
// model's thresholds (error rate, NaN/Inf rate, p99 latency against the
// previous version's, a GPU→CPU fallback) rolls back at once and records
// why.
//
// # Persisted state
//
// Keys in the model's state map (cache.ModelState), besides the cache's own
// active, previous and pending:
//
//	pending_state           step of the unfinished update (resolving … activating, interrupted)
//	pending_ref             digest reference being installed
//	pending_digest          its manifest digest
//	pending_version         its version
//	pending_allow_rollback  "true" when the update was an explicit rollback
//	pending_started         RFC 3339 time the update began
//	accepted_max            highest version ever activated (rollback protection)
//	active_ref              digest reference of the active version when installed over the air
//	watch, watch_until      version under post-activation watch, and until when
//	last_result, last_reason, last_version, last_digest, last_time
//	                        outcome of the latest update or rollback
//	rejected:<digest>       why that manifest was refused or rolled back
//
// Versions installed over the air carry their digest reference, manifest
// digest, config blob and precision in their cache record's Meta (ota_ref,
// ota_manifest, ota_config, precision); versions pulled by Fetch carry
// ota_pulled instead of ota_manifest. The precision becomes the "precision"
// model metadata parameter when the version is loaded.
//
// # Precision variants
//
// A reference may name a variant index (ota/SPEC.md section 7): several
// precisions of one model version. The updater verifies the signature of
// the index, picks the variant for the model's configured execution
// providers (ota.SelectVariant: INT8 when the CPU provider is all there is,
// FP16/FP32 when a GPU provider comes first) and pulls it by the digest the
// index names. ota_ref, ota_manifest, pending_digest and rejected:<digest>
// then name the index, ota_variant the chosen variant's manifest; Status
// reports the active version's precision and variant.
//
// # Concurrency
//
// An Updater is safe for concurrent use. Updates and rollbacks of one model
// are serialised (a second one fails with ErrBusy); different models update
// concurrently. Changes to what is served take Options.Lock, which the agent
// shares with its repository API.
//
// # Caveats
//
// Only the model layer is stored in the cache; extra files of an artifact
// (labels, vocabularies) are not pulled by the agent. A model whose config
// pins default_version cannot be updated over the air: the pin would
// override the activation. A variant index is one version: once a variant
// is cached, changing the model's providers does not swap it for another
// variant of the same version (ErrConflict); publish a new version. The watch compares the new version with the
// previous version's recent traffic before the switch, not with shadow
// traffic sent to both.
package update
