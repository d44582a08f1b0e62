package rollout

import (
	"time"

	"github.com/edgefleet/edgefleet/ota/wire"
)

// Rollout states.
const (
	// StatePending: created; the manager starts it at its next step.
	StatePending = "pending"
	// StateRunning: waves are being rolled out.
	StateRunning = "running"
	// StatePaused: no new devices are updated and no wave is promoted;
	// the gates are still watched and can halt the rollout.
	StatePaused = "paused"
	// StateHalted: a gate breached (or an operator asked for a rollback);
	// the updated devices are being set back to their previous version.
	StateHalted = "halted"
	// StateRolledBack: every reachable device is back on its previous
	// version. Final.
	StateRolledBack = "rolled_back"
	// StateCompleted: every wave was promoted. Devices that match the
	// selector later still get the version while this is the model's
	// newest rollout. Final.
	StateCompleted = "completed"
	// StateAborted: stopped by an operator; devices keep what they have.
	// Final.
	StateAborted = "aborted"
)

// Device phases within a rollout.
const (
	// PhaseUpdating: the new version is desired; no report of it yet.
	PhaseUpdating = "updating"
	// PhaseUpdated: the device reported the new version active.
	PhaseUpdated = "updated"
	// PhaseFailed: the device could not activate the new version, or
	// rolled it back on its own.
	PhaseFailed = "failed"
	// PhaseReverting: the previous version is desired again.
	PhaseReverting = "reverting"
	// PhaseReverted: the device applied the previous version.
	PhaseReverted = "reverted"
	// PhaseRevertFailed: the device could not be set back (no previous
	// version known, or the device failed to apply it).
	PhaseRevertFailed = "revert_failed"
)

// Final reports whether a rollout in state s will not change any more
// (except a completed one adopting late devices).
func Final(s string) bool {
	return s == StateRolledBack || s == StateCompleted || s == StateAborted
}

// Rollout is a rollout's record.
type Rollout struct {
	ID string `json:"id"`
	// Seq numbers rollouts in creation order.
	Seq  int64 `json:"seq"`
	Spec Spec  `json:"spec"`
	// State is one of the State constants.
	State string `json:"state"`
	// Reason says why a rollout halted, was rolled back or aborted.
	Reason string `json:"reason,omitempty"`
	// Wave is the index of the wave in progress (len(Spec.Waves) once
	// completed).
	Wave int `json:"wave"`
	// Settled is when every device of the current wave had reported; the
	// bake time counts from here. Zero while devices are outstanding.
	Settled time.Time `json:"settled,omitzero"`
	Created time.Time `json:"created"`
	Started time.Time `json:"started,omitzero"`
	// Finished is when the rollout reached a final state.
	Finished time.Time `json:"finished,omitzero"`
	Updated  time.Time `json:"updated"`
}

// Device is one device's part in a rollout.
type Device struct {
	ID string `json:"id"`
	// Wave is the index of the wave that took the device in.
	Wave  int    `json:"wave"`
	Phase string `json:"phase"`
	// Previous is the device's desired model before the rollout; nil when
	// it had none (then PrevDigest, from its report, is used to go back).
	Previous *wire.DesiredModel `json:"previous,omitempty"`
	// PrevVersion and PrevDigest are the version the device reported
	// active when it was taken in; PrevP99Ms and PrevFallbacks its health
	// then (the baseline of the latency and fallback gates).
	PrevVersion   string  `json:"prev_version,omitempty"`
	PrevDigest    string  `json:"prev_digest,omitempty"`
	PrevP99Ms     float64 `json:"prev_p99_ms,omitempty"`
	PrevSamples   uint64  `json:"prev_samples,omitempty"`
	PrevFallbacks uint64  `json:"prev_fallbacks,omitempty"`
	// Revision is the desired revision that carried the new version;
	// RevertRevision the one that set the previous version back.
	Revision       int64     `json:"revision"`
	RevertRevision int64     `json:"revert_revision,omitempty"`
	Assigned       time.Time `json:"assigned"`
	// Activated is when the device reported the new version active.
	Activated time.Time `json:"activated,omitzero"`
	// Health is the new version's health as last reported.
	Health wire.Health `json:"health"`
	Error  string      `json:"error,omitempty"`
}

// Counts summarise the devices of a rollout.
type Counts struct {
	// Matching is the number of devices the selector matches now.
	Matching     int `json:"matching"`
	Assigned     int `json:"assigned"`
	Updating     int `json:"updating"`
	Updated      int `json:"updated"`
	Failed       int `json:"failed"`
	Reverting    int `json:"reverting"`
	Reverted     int `json:"reverted"`
	RevertFailed int `json:"revert_failed"`
	// Offline counts assigned devices not connected now.
	Offline int `json:"offline"`
}

// WaveStatus is one wave's progress.
type WaveStatus struct {
	Percent float64 `json:"percent"`
	// Target is the cumulative number of devices the wave covers.
	Target   int `json:"target"`
	Assigned int `json:"assigned"`
	Updated  int `json:"updated"`
	Failed   int `json:"failed"`
}

// GateStatus is one gate's last evaluation.
type GateStatus struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Limit float64 `json:"limit"`
	// OK is false when the gate is breached.
	OK bool `json:"ok"`
	// Judged is false when there was not enough data to judge.
	Judged bool   `json:"judged"`
	Detail string `json:"detail,omitempty"`
	// why is the breach's explanation.
	why string
}

// Status is a rollout with its progress.
type Status struct {
	Rollout
	Counts Counts       `json:"counts"`
	Waves  []WaveStatus `json:"waves"`
	Gates  []GateStatus `json:"gates"`
	// Devices is filled only when asked for.
	Devices []Device `json:"devices,omitempty"`
}
