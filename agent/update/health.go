package update

import "time"

// VersionHealth is a model version's live counters: the requests the
// protocol front ends served through Observe since the agent started.
type VersionHealth struct {
	Requests, Errors int64
	// NonFinite counts responses with NaN or Inf outputs; outside a
	// post-activation watch only when CountNonFiniteAlways is on.
	NonFinite int64
	// P99 is over the Samples most recent successful requests (at most
	// 1024).
	P99     time.Duration
	Samples int
}

// Health returns a model version's live counters.
func (u *Updater) Health(model, version string) VersionHealth {
	s := u.obs.snapshot(model, version)
	return VersionHealth{Requests: s.Requests, Errors: s.Errors, NonFinite: s.NonFinite, P99: s.P99, Samples: s.Samples}
}

// CountNonFiniteAlways makes Observe check every response for NaN or Inf
// outputs, not only those of a version under post-activation watch, so the
// counts can be reported to the hub's rollout gates. The check reads every
// float output once.
func (u *Updater) CountNonFiniteAlways(on bool) { u.obs.always.Store(on) }
