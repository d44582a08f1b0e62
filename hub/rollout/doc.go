// Package rollout rolls model versions out to a hub's devices in canary
// waves, gated on the health the devices report, and rolls them back
// fleet-wide when a gate breaches.
//
// # Basics
//
//	m, err := rollout.New(rollout.Options{DB: db, Registry: reg, Shadow: sh, Resolve: resolve})
//	go m.Run(ctx)
//	st, err := m.Create(ctx, rollout.Spec{
//		Model: "digits-cnn", Ref: "hub:5000/models/digits-cnn:3",
//		Selector: "site=berlin", Waves: []float64{1, 10, 50, 100},
//		Bake: rollout.Duration(10 * time.Minute), MaxFailures: 2,
//	})
//
// The hub wires a Manager to its registry, shadow service and database;
// the REST API (/v1/rollouts) and `edgefleet rollout` drive it.
//
// # How a rollout runs
//
// Create resolves the reference to a manifest digest, so every device gets
// the same bytes whatever the tag does later. Each wave takes devices in
// until it covers its share of the devices the selector matches (at least
// one more per wave): online devices first, then in a stable random order
// (a hash of rollout and device id). Taking a device in is one store
// transaction (Store.Update: bbolt by default, PostgreSQL in cluster mode)
// that records the device's previous desired model and sets the new one
// (Tx.UpdateDesired); the new desired state is published after the commit.
//
// Devices report through the shadow service; Run evaluates the rollouts on
// each report (at most every 20 ms; agents report every local state change
// at once, see agent/fleet) and on a ticker. A device is updated once it
// applied the desired revision with the new digest active, failed when it
// reports a failed revision, another version after applying ours (its own
// watch rolled back), or nothing within the activation timeout while
// online. Gates are evaluated before promotion in the same step, so a
// report of a local rollback halts the rollout before any further device is
// taken in. A wave before the last settles once every device it took in
// has reported the new version and is online (an unreported or offline
// canary may hold a state the hub has not heard); the last wave once every
// online device has reported, with at least one updated. The bake time
// counts from the latest confirmed activation of the wave's devices, and
// the next wave starts once the gates have held that long. Devices that come to match the
// selector later are taken in by the current wave, and by the model's
// newest completed rollout.
//
// # Gates
//
// Over the devices updated so far: the share of devices whose activation
// failed (Spec.MaxFailures), the error rate and the NaN/Inf output rate of
// the requests they served, the p99 latency of the new version against the
// previous one, and the share that fell back from a GPU to the CPU
// (Gates). The latency gate compares the updated devices' median p99 with
// that of matching devices still on the previous version, measured at the
// same time, and once none is left each device's p99 with its own before
// the update; it halts only after its breach lasted Gates.LatencySustain.
// The other gates halt at once. Halting sets every device the rollout
// touched back to its previous desired model (a new revision; by digest,
// so agents accept the older version) and records the reason.
//
// # States
//
//	pending → running ⇄ paused → completed
//	             ↓          ↓
//	           halted → rolled_back        (a gate, or Rollback)
//	running, paused → aborted              (Abort: devices keep what they have)
//
// # Persistence
//
//	rollouts/<id>                  Rollout JSON
//	rollout_devices/<id>/<device>  Device JSON
//
// in the hub's database. A restarted hub continues where it stopped: the
// bake time counts from the persisted settle time, and the devices' last
// reports come from the registry. The manager's clock (Options.Now) drives
// bake times and activation timeouts, so tests use a fake one.
//
// # Caveats
//
// Health figures are cumulative per version since the agent started
// serving it, and the p99 is over its latest requests, so a device's
// figures mix traffic from before and during a wave. A rollout whose
// devices serve no traffic passes the rate and latency gates for want of
// evidence (they show judged=false). One rollout per model may be in
// progress at a time.
package rollout
