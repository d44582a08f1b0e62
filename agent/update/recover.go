package update

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/agent/cache"
	"github.com/edgefleet/edgefleet/agent/models"
)

// Recover brings every model's update state to a consistent point after a
// restart, before the agent loads its cached models:
//
//   - An update that had not committed its activation is resumed by Start
//     (the version it catalogued stays pending, so the version policy does
//     not serve it meanwhile), or, with config NoResume, discarded: the
//     version it catalogued is removed and the old version stays active.
//     Downloaded bytes stay in the cache either way, so a later update of
//     the same artifact does not fetch them again.
//   - A version catalogued over the air but never activated (a first install
//     cut short before its state was written) is treated the same way.
//   - An active version whose blob is gone falls back to the previous one.
//   - A post-activation watch still in its window is restarted by Start; one
//     whose window passed is closed as healthy.
func (u *Updater) Recover(ctx context.Context) error {
	recs, err := u.cache.Models()
	if err != nil {
		return fmt.Errorf("update recovery: %w", err)
	}
	var errs []error
	for _, m := range recs {
		if err := u.recoverModel(ctx, m); err != nil {
			errs = append(errs, fmt.Errorf("model %q: %w", m.Name, err))
		}
	}
	return errors.Join(errs...)
}

func (u *Updater) recoverModel(ctx context.Context, m cache.ModelRecord) error {
	st := m.State
	log := u.log.With("model", m.Name)
	now := u.now()
	if st[keyPendingState] != "" || st[keyPendingVersion] != "" {
		step := st[keyPendingState]
		log.Warn("update was interrupted by a restart", "step", step, "version", st[keyPendingVersion], "ref", st[keyPendingRef])
		if err := u.interrupted(ctx, m.Name, st, st[keyPendingRef], st[keyPendingRollback] == "true", "agent restarted during "+step); err != nil {
			return err
		}
	} else {
		acc, _ := parseVersion(st[keyAcceptedMax])
		for _, v := range m.Versions {
			n, numeric := parseVersion(v.Version)
			if v.Meta[metaManifest] == "" || pinned(st, v.Version) || (numeric && n <= acc && st[keyAcceptedMax] != "") {
				continue
			}
			log.Warn("version installed over the air was never activated", "version", v.Version, "ref", v.Meta[metaRef])
			pend := maps.Clone(st)
			pend[keyPendingVersion], pend[keyPendingDigest], pend[keyPendingRef] = v.Version, v.Meta[metaManifest], v.Meta[metaRef]
			if err := u.interrupted(ctx, m.Name, pend, v.Meta[metaRef], false, "agent restarted during a first install"); err != nil {
				return err
			}
		}
	}
	var err error
	if st, err = u.state(m.Name); err != nil {
		return err
	}
	// The active version must be servable: fall back if its blob is gone.
	if act := st[cache.StateActive]; act != "" {
		rec, err := u.cache.Version(m.Name, act)
		if err == nil && !u.cache.HasBlob(rec.Digest) {
			if prev := st[cache.StatePrevious]; prev != "" {
				log.Error("active version's model is missing from the cache; falling back to the previous version", "active", act, "previous", prev)
				if err := u.cache.SetModelStates(ctx, m.Name, map[string]string{cache.StateActive: prev, cache.StatePrevious: "",
					keyWatch: "", keyWatchUntil: "", keyLastResult: ResultRolledBack, keyLastVersion: act,
					keyLastReason: "model bytes missing from the cache at start", keyLastTime: now.UTC().Format(time.RFC3339)}); err != nil {
					return err
				}
				st[cache.StateActive], st[keyWatch] = prev, ""
			}
		}
	}
	if w := st[keyWatch]; w != "" {
		until, perr := time.Parse(time.RFC3339Nano, st[keyWatchUntil])
		switch {
		case w == st[cache.StateActive] && perr == nil && until.After(now) && st[cache.StatePrevious] != "":
			u.mu.Lock()
			u.rewatch = append(u.rewatch, rewatch{model: m.Name, version: w, previous: st[cache.StatePrevious], until: until})
			u.mu.Unlock()
		default:
			kv := map[string]string{keyWatch: "", keyWatchUntil: ""}
			if w == st[cache.StateActive] && st[keyLastResult] == ResultWatching {
				kv[keyLastResult] = ResultHealthy
			}
			if err := u.cache.SetModelStates(ctx, m.Name, kv); err != nil {
				return err
			}
		}
	}
	if act := st[cache.StateActive]; act != "" {
		u.obs.setDefault(m.Name, act)
	}
	return nil
}

// interrupted keeps an unfinished update for Start to resume, or discards it.
func (u *Updater) interrupted(ctx context.Context, model string, st map[string]string, ref string, allowRollback bool, why string) error {
	if u.cfg.NoResume || ref == "" {
		u.discardPending(model, st, why)
		return nil
	}
	kv := map[string]string{keyPendingState: StepInterrupted, keyLastResult: ResultInterrupted, keyLastReason: why,
		keyLastVersion: st[keyPendingVersion], keyLastDigest: st[keyPendingDigest], keyLastTime: u.now().UTC().Format(time.RFC3339)}
	for _, k := range []string{keyPendingVersion, keyPendingDigest, keyPendingRef} {
		kv[k] = st[k]
	}
	if v := st[keyPendingVersion]; v != "" && v != st[cache.StateActive] {
		if _, err := u.cache.Version(model, v); err == nil {
			kv[cache.StatePending] = v // keeps the version policy from serving it
		}
	}
	if err := u.cache.SetModelStates(ctx, model, kv); err != nil {
		return err
	}
	u.mu.Lock()
	u.resumes = append(u.resumes, resume{model: model, ref: ref, allowRollback: allowRollback})
	u.mu.Unlock()
	return nil
}

// discardPending drops an unfinished update: its pending keys, and the
// version it catalogued unless that version is otherwise in use.
func (u *Updater) discardPending(model string, st map[string]string, why string) {
	ctx := context.Background()
	log := u.log.With("model", model)
	ver := st[keyPendingVersion]
	if ver == "" {
		ver = st[cache.StatePending]
	}
	kv := map[string]string{keyLastResult: ResultInterrupted, keyLastReason: why, keyLastVersion: ver,
		keyLastDigest: st[keyPendingDigest], keyLastTime: u.now().UTC().Format(time.RFC3339)}
	for _, k := range pendingKeys {
		kv[k] = ""
	}
	if err := u.cache.SetModelStates(ctx, model, kv); err != nil && !errors.Is(err, cache.ErrNotFound) {
		log.Error("clearing an interrupted update", "err", err)
		return
	}
	if ver == "" || ver == st[cache.StateActive] || ver == st[cache.StatePrevious] || labelled(st, ver) {
		return
	}
	rec, err := u.cache.Version(model, ver)
	if err != nil || rec.Meta[metaManifest] == "" || (st[keyPendingDigest] != "" && rec.Meta[metaManifest] != st[keyPendingDigest]) {
		return // not catalogued by that update
	}
	if u.loaded(model, ver) && u.currentDefault(model) != ver {
		_ = u.models.Unload(model, ver)
	}
	if err := u.cache.RemoveVersion(ctx, model, ver); err != nil && !errors.Is(err, cache.ErrNotFound) {
		log.Warn("removing the version of an interrupted update", "version", ver, "err", err)
		return
	}
	log.Info("discarded an interrupted update", "version", ver, "reason", why)
}

// pinned reports whether a state key names the version.
func pinned(st map[string]string, ver string) bool {
	return st[cache.StateActive] == ver || st[cache.StatePrevious] == ver || st[cache.StatePending] == ver || labelled(st, ver)
}

func labelled(st map[string]string, ver string) bool {
	for k, v := range st {
		if strings.HasPrefix(k, cache.StateLabelPrefix) && v == ver {
			return true
		}
	}
	return false
}

// Start resumes the updates and watches Recover found and returns; they run
// until ctx is done or Close is called.
func (u *Updater) Start(ctx context.Context) {
	u.mu.Lock()
	if u.started {
		u.mu.Unlock()
		return
	}
	u.started = true
	resumes, rewatches := u.resumes, u.rewatch
	u.resumes, u.rewatch = nil, nil
	u.mu.Unlock()
	stop := context.AfterFunc(ctx, u.cancel)
	u.wg.Go(func() {
		<-u.ctx.Done()
		stop()
	})
	for _, w := range rewatches {
		u.log.Info("resuming post-activation watch", "model", w.model, "version", w.version, "until", w.until)
		u.startWatch(w.model, w.version, w.previous, w.until, snapshot{}, "")
	}
	for _, r := range resumes {
		u.wg.Go(func() {
			u.log.Info("resuming interrupted update", "model", r.model, "ref", r.ref)
			if _, err := u.Update(u.ctx, r.model, r.ref, UpdateOptions{AllowRollback: r.allowRollback}); err != nil {
				u.log.Warn("resumed update failed", "model", r.model, "err", err)
			}
		})
	}
}

// Close stops the watches and resumed updates and waits for them. Updates in
// flight are cancelled; Recover handles what they leave at the next start.
func (u *Updater) Close() {
	u.cancel()
	u.mu.Lock()
	for _, w := range u.watches {
		w.cancel()
	}
	u.mu.Unlock()
	u.wg.Wait()
}

// Context returns a context that lives until Close; the HTTP handler runs
// updates under it, so a client hanging up does not cut an update short.
func (u *Updater) Context() context.Context { return u.ctx }

// Status is a model's update state.
type Status struct {
	Model       string `json:"model"`
	Active      string `json:"active,omitempty"`
	ActiveRef   string `json:"active_ref,omitempty"`
	Previous    string `json:"previous,omitempty"`
	AcceptedMax string `json:"accepted_max,omitempty"`
	// ActivePrecision is the active version's precision and ActiveVariant
	// its variant manifest digest when it came from a variant index (both
	// from the version's cache record; "" when unknown).
	ActivePrecision string `json:"active_precision,omitempty"`
	ActiveVariant   string `json:"active_variant,omitempty"`
	// Updating is true while an update or rollback of the model runs.
	Updating bool           `json:"updating"`
	Pending  *PendingStatus `json:"pending,omitempty"`
	Watch    *WatchStatus   `json:"watch,omitempty"`
	Last     *Outcome       `json:"last,omitempty"`
	// Rejected maps manifest digests to why they were refused or rolled back.
	Rejected map[string]string `json:"rejected,omitempty"`
}

// PendingStatus describes an unfinished update.
type PendingStatus struct {
	Version       string    `json:"version,omitempty"`
	Ref           string    `json:"ref,omitempty"`
	Digest        string    `json:"digest,omitempty"`
	Step          string    `json:"step"`
	Started       time.Time `json:"started,omitzero"`
	AllowRollback bool      `json:"allow_rollback,omitempty"`
}

// WatchStatus is the live comparison of a watched version with the previous one.
type WatchStatus struct {
	Version  string    `json:"version"`
	Previous string    `json:"previous,omitempty"`
	Until    time.Time `json:"until"`
	// Requests, Errors and NonFinite count the new version's requests since
	// activation; P99 is over its recent ones.
	Requests   int64   `json:"requests"`
	Errors     int64   `json:"errors"`
	NonFinite  int64   `json:"nonfinite"`
	P99Seconds float64 `json:"p99_seconds"`
	// PreviousP99Seconds is the previous version's p99 before the switch.
	PreviousP99Seconds float64 `json:"previous_p99_seconds"`
}

// Outcome is the result of the latest update or rollback.
type Outcome struct {
	Result  string    `json:"result"`
	Version string    `json:"version,omitempty"`
	Digest  string    `json:"digest,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	Time    time.Time `json:"time,omitzero"`
}

// Status returns a model's update state. A model the cache does not know
// fails with an error wrapping models.ErrNotFound.
func (u *Updater) Status(model string) (*Status, error) {
	st, err := u.cache.ModelState(model)
	if errors.Is(err, cache.ErrNotFound) {
		return nil, fmt.Errorf("model %q: %w", model, models.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	s := &Status{Model: model, Active: st[cache.StateActive], ActiveRef: st[keyActiveRef],
		Previous: st[cache.StatePrevious], AcceptedMax: st[keyAcceptedMax]}
	if s.Active != "" {
		if rec, err := u.cache.Version(model, s.Active); err == nil {
			s.ActivePrecision, s.ActiveVariant = rec.Meta[metaPrecision], rec.Meta[metaVariant]
		}
	}
	u.mu.Lock()
	s.Updating = u.busy[model]
	w := u.watches[model]
	u.mu.Unlock()
	if step := st[keyPendingState]; step != "" {
		p := &PendingStatus{Version: st[keyPendingVersion], Ref: st[keyPendingRef], Digest: st[keyPendingDigest],
			Step: step, AllowRollback: st[keyPendingRollback] == "true"}
		p.Started, _ = time.Parse(time.RFC3339, st[keyPendingStarted])
		s.Pending = p
	}
	if v := st[keyWatch]; v != "" {
		ws := &WatchStatus{Version: v, Previous: st[cache.StatePrevious]}
		ws.Until, _ = time.Parse(time.RFC3339Nano, st[keyWatchUntil])
		cur := u.obs.snapshot(model, v)
		if w != nil && w.version == v {
			cur = cur.since(w.start)
			ws.PreviousP99Seconds = w.baseline.P99.Seconds()
		}
		ws.Requests, ws.Errors, ws.NonFinite, ws.P99Seconds = cur.Requests, cur.Errors, cur.NonFinite, cur.P99.Seconds()
		s.Watch = ws
	}
	if r := st[keyLastResult]; r != "" {
		o := &Outcome{Result: r, Version: st[keyLastVersion], Digest: st[keyLastDigest], Reason: st[keyLastReason]}
		o.Time, _ = time.Parse(time.RFC3339, st[keyLastTime])
		s.Last = o
	}
	for k, v := range st {
		if d, ok := strings.CutPrefix(k, rejectedPrefix); ok {
			if s.Rejected == nil {
				s.Rejected = map[string]string{}
			}
			s.Rejected[d] = v
		}
	}
	return s, nil
}

// Statuses returns the update state of every cached model.
func (u *Updater) Statuses() ([]*Status, error) {
	recs, err := u.cache.Models()
	if err != nil {
		return nil, err
	}
	out := make([]*Status, 0, len(recs))
	for _, m := range recs {
		s, err := u.Status(m.Name)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// Rollback makes the model's previous version active again at once: it is
// loaded from the cache if needed, becomes the default, and the version it
// replaces becomes the previous one (so a second Rollback rolls forward).
// Any post-activation watch stops.
func (u *Updater) Rollback(ctx context.Context, model string) (*Result, error) {
	if err := cache.ValidateName("model", model); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	unlock, ok := u.lockModel(model)
	if !ok {
		return nil, fmt.Errorf("model %q: %w", model, ErrBusy)
	}
	u.stopWatch(model)
	res, err := u.rollback(ctx, model, "", "manual rollback", false)
	unlock()
	if res != nil {
		u.notify(Change{Model: model, Kind: ChangeRolledBack, Version: res.Previous})
	}
	return res, err
}

// rollback switches model back to its previous version. With expect set it
// does nothing unless expect is still the active version. A breach
// (bad=true) also unloads and removes the rolled-back version and records
// its manifest as rejected; a manual rollback keeps it as the previous one.
func (u *Updater) rollback(ctx context.Context, model, expect, reason string, bad bool) (*Result, error) {
	u.serving.Lock()
	defer u.serving.Unlock()
	st, err := u.cache.ModelState(model)
	if errors.Is(err, cache.ErrNotFound) {
		return nil, fmt.Errorf("model %q: %w", model, models.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	cur, prev := st[cache.StateActive], st[cache.StatePrevious]
	if expect != "" && cur != expect {
		return nil, nil // superseded by another update or rollback
	}
	if prev == "" || prev == cur {
		return nil, fmt.Errorf("model %q (active %q): %w", model, cur, ErrNoPrevious)
	}
	prevRec, err := u.cache.Version(model, prev)
	if err != nil {
		return nil, fmt.Errorf("previous version %s: %w", prev, err)
	}
	var curDigest string
	if rec, err := u.cache.Version(model, cur); err == nil {
		curDigest = manifestOf(rec)
	}
	log := u.log.With("model", model, "from", cur, "to", prev)
	kv := map[string]string{cache.StateActive: prev, cache.StatePrevious: cur, keyActiveRef: prevRec.Meta[metaRef],
		keyWatch: "", keyWatchUntil: "", keyLastResult: ResultRolledBack, keyLastReason: reason,
		keyLastVersion: cur, keyLastDigest: curDigest, keyLastTime: u.now().UTC().Format(time.RFC3339)}
	if bad {
		kv[cache.StatePrevious] = ""
		if curDigest != "" {
			kv[rejectedPrefix+curDigest] = reason
		}
	}
	if err := u.cache.SetModelStates(ctx, model, kv); err != nil {
		return nil, err
	}
	s := u.settings(model)
	s.DefaultVersion = prev
	if u.loaded(model, prev) {
		err = u.makeDefault(ctx, model, prev, s)
	} else {
		err = u.load(ctx, model, prev, s)
	}
	if err != nil {
		// The cache names prev active, so a restart serves it; say so loudly.
		log.Error("rollback recorded but the previous version could not be served", "err", err)
		return nil, fmt.Errorf("serving previous version %s: %w", prev, err)
	}
	u.obs.setDefault(model, prev)
	if bad && cur != "" {
		if err := u.models.Unload(model, cur); err != nil && !errors.Is(err, models.ErrNotFound) {
			log.Warn("unloading the rolled-back version", "err", err)
		}
		if !labelled(st, cur) {
			if err := u.cache.RemoveVersion(ctx, model, cur); err != nil && !errors.Is(err, cache.ErrNotFound) {
				log.Warn("removing the rolled-back version", "err", err)
			}
		}
	}
	if u.reconcile != nil {
		if err := u.reconcile(ctx, model); err != nil {
			log.Warn("version policy not fully applied after rollback", "err", err)
		}
	}
	log.Warn("rolled back", "reason", reason)
	res := &Result{Model: model, Version: prev, Ref: prevRec.Meta[metaRef], Digest: manifestOf(prevRec),
		State: ResultRolledBack, Reason: reason}
	if !bad {
		res.Previous = cur
	}
	return res, nil
}
