package update

// Change kinds passed to the functions registered with OnChange.
const (
	// ChangeActivated: a new version became active (Update finished).
	ChangeActivated = "activated"
	// ChangeFailed: an update was refused or failed; the previous
	// version still serves.
	ChangeFailed = "failed"
	// ChangeRolledBack: the active version was rolled back, by the
	// post-activation watch, by Rollback or by Reject.
	ChangeRolledBack = "rolled_back"
	// ChangeWatchPassed: the post-activation watch ended without a breach.
	ChangeWatchPassed = "watch_passed"
	// ChangeDegraded: a served version fell back from its GPU to the CPU.
	ChangeDegraded = "degraded"
	// ChangeRejected: a version was marked bad (Reject) and unloaded.
	ChangeRejected = "rejected"
)

// Change is a local change of a model's state that the hub should learn
// about at once (agent/fleet reports on it instead of waiting for its
// next periodic report).
type Change struct {
	Model string
	// Kind is one of the Change constants.
	Kind string
	// Version is the version the change concerns.
	Version string
}

// OnChange registers fn to be called after every local change of a
// model's state: activation, a failed or refused update, a rollback (the
// post-activation watch's included), the end of a watch, a GPU→CPU
// fallback, a rejection. fn runs on the goroutine that made the change,
// after the change is persisted and served; it must not block. Functions
// cannot be unregistered.
func (u *Updater) OnChange(fn func(Change)) {
	if fn == nil {
		return
	}
	u.mu.Lock()
	u.listeners = append(u.listeners, fn)
	u.mu.Unlock()
}

// notify calls the registered functions.
func (u *Updater) notify(c Change) {
	u.mu.Lock()
	ls := u.listeners
	u.mu.Unlock()
	for _, fn := range ls {
		fn(c)
	}
}
