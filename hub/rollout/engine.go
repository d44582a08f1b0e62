package rollout

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/hub/registry"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// relistGap bounds how often a message from an unlisted device triggers a
// new device listing.
const relistGap = time.Second

// step evaluates every rollout once: devices' phases from their reports,
// gates, assignments, promotions and rollbacks; then saves what changed.
func (m *Manager) step(ctx context.Context) {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	wall := time.Now()
	m.mu.Lock()
	unknown := m.unknown
	m.mu.Unlock()
	if m.listed.IsZero() || wall.Sub(m.listed) >= m.opts.Relist || unknown && wall.Sub(m.listed) >= relistGap {
		if err := m.relist(ctx); err != nil {
			if ctx.Err() == nil {
				m.log.Error("rollout: listing devices", "err", err)
			}
			return
		}
		m.listed = wall
		m.listings++
	}
	now := m.now().UTC()
	newest := m.newestPerModel()
	var pubs []wire.DesiredState
	for _, rn := range m.runs {
		if Final(rn.r.State) && !(rn.r.State == StateCompleted && newest[rn.r.Spec.Model] == rn) {
			continue
		}
		p, err := m.stepRun(ctx, rn, now, wall)
		pubs = append(pubs, p...)
		if err != nil && ctx.Err() == nil {
			m.log.Error("rollout step", "rollout", rn.r.ID, "err", err)
		}
	}
	if err := m.flush(); err != nil {
		m.log.Error("rollout: saving state", "err", err)
	}
	for _, ds := range pubs {
		m.opts.Shadow.PublishDesired(ctx, ds)
	}
}

// newestPerModel returns each model's most recently created rollout.
func (m *Manager) newestPerModel() map[string]*run {
	out := map[string]*run{}
	for _, rn := range m.runs {
		cur := out[rn.r.Spec.Model]
		if cur == nil || rn.r.Seq > cur.r.Seq {
			out[rn.r.Spec.Model] = rn
		}
	}
	return out
}

// stepRun advances one rollout and returns the desired states to publish.
func (m *Manager) stepRun(ctx context.Context, rn *run, now, wall time.Time) ([]wire.DesiredState, error) {
	r := &rn.r
	if r.State == StatePending {
		r.State, r.Started, r.Updated = StateRunning, now, now
		rn.changed = true
		m.log.Info("rollout started", "rollout", r.ID)
	}
	m.refresh(rn, now, wall)
	switch r.State {
	case StateRunning, StatePaused:
		gates := evaluate(r.Spec, rn.devs, m.control(rn))
		breach := rn.sustain(gates, now)
		rn.gates = gates
		if breach != "" {
			m.halt(rn, breach)
			return m.revert(ctx, rn, now)
		}
		if r.State == StatePaused {
			return nil, nil
		}
		matching := m.matching(rn)
		targets := WaveTargets(r.Spec.Waves, len(matching))
		pubs, err := m.assign(ctx, rn, matching, targets[r.Wave], r.Wave, now)
		if err != nil {
			return pubs, err
		}
		if since, ok := m.settled(rn, wall, now); ok && len(rn.devs) >= targets[r.Wave] {
			if !r.Settled.Equal(since) {
				r.Settled, rn.changed = since, true
			}
			if now.Sub(r.Settled) >= time.Duration(r.Spec.Bake) {
				m.promote(rn, now)
			}
		} else if !r.Settled.IsZero() {
			r.Settled, rn.changed = time.Time{}, true
		}
		return pubs, nil
	case StateHalted:
		pubs, err := m.revert(ctx, rn, now)
		if err != nil {
			return pubs, err
		}
		if m.reverted(rn, wall) {
			r.State, r.Finished, r.Updated = StateRolledBack, now, now
			rn.changed = true
			m.log.Warn("rollout rolled back", "rollout", r.ID, "reason", r.Reason)
		}
		return pubs, nil
	case StateCompleted:
		// The model's newest rollout keeps adopting devices that come to
		// match its selector (noticed by a new device listing).
		if rn.adopted == m.listings {
			return nil, nil
		}
		matching := m.matching(rn)
		pubs, err := m.assign(ctx, rn, matching, len(matching), len(r.Spec.Waves)-1, now)
		if err == nil {
			rn.adopted = m.listings
		}
		return pubs, err
	}
	return nil, nil
}

// promote moves rn to its next wave or completes it.
func (m *Manager) promote(rn *run, now time.Time) {
	r := &rn.r
	r.Wave++
	r.Settled, r.Updated = time.Time{}, now
	rn.changed = true
	if r.Wave >= len(r.Spec.Waves) {
		r.State, r.Finished = StateCompleted, now
		m.log.Info("rollout completed", "rollout", r.ID, "devices", len(rn.devs))
		return
	}
	m.log.Info("rollout wave promoted", "rollout", r.ID, "wave", r.Wave, "percent", r.Spec.Waves[r.Wave])
}

// refresh updates the phases of rn's devices from what they reported.
func (m *Manager) refresh(rn *run, now, wall time.Time) {
	spec := rn.r.Spec
	timeout := time.Duration(spec.Gates.ActivationTimeout)
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, d := range rn.devs {
		o := m.obs[d.ID]
		if o == nil {
			continue
		}
		rm, has := o.models[spec.Model]
		onTarget := false
		if has && rm.State != wire.StateFailed && rm.State != wire.StateRolledBack {
			if rm.ActiveDigest != "" {
				onTarget = rm.ActiveDigest == spec.Digest
			} else {
				onTarget = spec.Version != "" && rm.ActiveVersion == spec.Version
			}
		}
		prevPhase, prevErr := d.Phase, d.Error
		switch d.Phase {
		case PhaseUpdating, PhaseUpdated:
			switch {
			case o.failed >= d.Revision:
				d.Phase, d.Error = PhaseFailed, firstOf(o.lastErr, rm.LastError, "the device failed to apply the new version")
			case o.applied >= d.Revision && onTarget:
				if d.Phase != PhaseUpdated {
					d.Phase, d.Activated = PhaseUpdated, now
				}
				if d.Health != rm.Health {
					d.Health = rm.Health
					rn.touch(d)
				}
			case o.applied >= d.Revision:
				why := fmt.Sprintf("the device reports %s version %s (%s)", spec.Model, firstOf(rm.ActiveVersion, "none"), firstOf(rm.State, "no state"))
				if e := firstOf(rm.LastError, o.lastErr); e != "" {
					why += ": " + e
				}
				d.Phase, d.Error = PhaseFailed, why
			case d.Phase == PhaseUpdating && timeout > 0 && o.isOnline(wall) && now.Sub(d.Assigned) > timeout:
				d.Phase, d.Error = PhaseFailed, fmt.Sprintf("no report of version %s within %v", firstOf(spec.Version, spec.Digest), timeout)
			}
		case PhaseReverting:
			switch {
			case o.failed >= d.RevertRevision:
				d.Phase, d.Error = PhaseRevertFailed, firstOf(o.lastErr, "the device failed to apply the previous version")
			case o.applied >= d.RevertRevision:
				d.Phase = PhaseReverted
			}
		}
		if d.Phase != prevPhase || d.Error != prevErr {
			rn.touch(d)
			if d.Phase == PhaseFailed {
				m.log.Warn("rollout device failed", "rollout", rn.r.ID, "device", d.ID, "err", d.Error)
			}
		}
	}
}

// matching returns the ids of the devices rn's selector matches now, in
// rollout order: online devices first, then a hash of rollout and device id
// (a stable random sample for the canary waves).
func (m *Manager) matching(rn *run) []string {
	type cand struct {
		id     string
		online bool
		h      uint64
	}
	wall := time.Now()
	m.mu.Lock()
	cands := make([]cand, 0, len(m.obs))
	for id, o := range m.obs {
		if !o.known || o.revoked || !rn.sel.Matches(o.labels) {
			continue
		}
		h := fnv.New64a()
		h.Write([]byte(rn.r.ID))
		h.Write([]byte{0})
		h.Write([]byte(id))
		cands = append(cands, cand{id: id, online: o.isOnline(wall), h: h.Sum64()})
	}
	m.mu.Unlock()
	slices.SortFunc(cands, func(a, b cand) int {
		if a.online != b.online {
			if a.online {
				return -1
			}
			return 1
		}
		if a.h != b.h {
			if a.h < b.h {
				return -1
			}
			return 1
		}
		return strings.Compare(a.id, b.id)
	})
	out := make([]string, len(cands))
	for i, c := range cands {
		out[i] = c.id
	}
	return out
}

// assign takes devices in, in order, until rn has target of them: one
// transaction records each device (with its previous desired model) and
// sets its desired state. It returns the states to publish.
func (m *Manager) assign(ctx context.Context, rn *run, order []string, target, wave int, now time.Time) ([]wire.DesiredState, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	need := target - len(rn.devs)
	if need <= 0 {
		return nil, nil
	}
	var pick []string
	for _, id := range order {
		if len(pick) == need {
			break
		}
		if rn.devs[id] == nil {
			pick = append(pick, id)
		}
	}
	if len(pick) == 0 {
		return nil, nil
	}
	spec := rn.r.Spec
	want := wire.DesiredModel{Ref: spec.Ref, Digest: spec.Digest, Version: spec.Version, Rollout: rn.r.ID}
	type baseline struct {
		version, digest    string
		p99                float64
		samples, fallbacks uint64
	}
	base := map[string]baseline{}
	m.mu.Lock()
	for _, id := range pick {
		if o := m.obs[id]; o != nil {
			if rm, ok := o.models[spec.Model]; ok {
				base[id] = baseline{rm.ActiveVersion, rm.ActiveDigest, rm.Health.P99Ms, rm.Health.Requests, rm.Health.Fallbacks}
			}
		}
	}
	m.mu.Unlock()
	var (
		added []*Device
		pubs  []wire.DesiredState
	)
	err := m.opts.Store.Update(ctx, func(tx Tx) error {
		added, pubs = added[:0], pubs[:0]
		for _, id := range pick {
			var prev *wire.DesiredModel
			ds, changed, err := tx.UpdateDesired(id, func(models map[string]wire.DesiredModel) error {
				if cur, ok := models[spec.Model]; ok {
					prev = &cur
				}
				models[spec.Model] = want
				return nil
			})
			if errors.Is(err, registry.ErrNotFound) || errors.Is(err, registry.ErrRevoked) {
				continue // gone since the listing
			}
			if err != nil {
				return fmt.Errorf("device %s: %w", id, err)
			}
			b := base[id]
			d := &Device{ID: id, Wave: wave, Phase: PhaseUpdating, Previous: prev, PrevVersion: b.version, PrevDigest: b.digest,
				PrevP99Ms: b.p99, PrevSamples: b.samples, PrevFallbacks: b.fallbacks, Revision: ds.Revision, Assigned: now}
			if err := tx.PutDevice(rn.r.ID, d); err != nil {
				return err
			}
			added = append(added, d)
			if changed {
				pubs = append(pubs, ds)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("assigning devices: %w", err)
	}
	for _, d := range added {
		rn.devs[d.ID] = d
	}
	if len(added) > 0 {
		m.log.Info("rollout devices assigned", "rollout", rn.r.ID, "wave", wave, "devices", len(added), "total", len(rn.devs))
	}
	return pubs, nil
}

// settled reports whether rn's current wave has settled, and since when:
// the bake time counts from there.
//
// Before the last wave, every device the current wave took in must have
// reported the new version and be online: a device that has not reported
// yet, or went offline, may hold a state the hub has not heard (a local
// rollback), and promoting would spread the version further on a guess.
// Failed devices are judged by the failure gate in the same step, before
// this: a failure beyond Spec.MaxFailures has halted the rollout already. The wave settles at the latest
// confirmed activation among its devices (when the hub received the
// report), so a device that activates late gets the whole bake time.
//
// The last wave takes in no further devices: it settles once every online
// device has reported, with at least one updated; offline devices catch up
// when they return. A wave that took no device in settles when an earlier
// wave's device is updated.
func (m *Manager) settled(rn *run, wall, now time.Time) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	last := rn.r.Wave >= len(rn.r.Spec.Waves)-1
	var since time.Time
	inWave, updatedInWave, updated := false, false, false
	for _, d := range rn.devs {
		cur := d.Wave == rn.r.Wave
		if cur {
			inWave = true
		}
		online := false
		if o := m.obs[d.ID]; o != nil && o.isOnline(wall) {
			online = true
		}
		switch d.Phase {
		case PhaseUpdated:
			updated = true
			if cur {
				updatedInWave = true
				if !last && !online {
					return time.Time{}, false
				}
				if d.Activated.After(since) {
					since = d.Activated
				}
			}
		case PhaseUpdating:
			if online || cur && !last {
				return time.Time{}, false
			}
		}
		// A failed device was judged by the failure gate in this same
		// step, before settled: over the tolerance the rollout halted;
		// within it (Spec.MaxFailures > 0) it does not hold the wave.
	}
	if inWave && !updatedInWave || !inWave && !updated {
		return time.Time{}, false
	}
	if since.IsZero() || since.After(now) {
		since = now
	}
	return since, true
}

// revert sets the desired state of rn's updating, updated and failed
// devices back to their previous model.
func (m *Manager) revert(ctx context.Context, rn *run, now time.Time) ([]wire.DesiredState, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var todo []*Device
	for _, d := range rn.devs {
		if d.Phase == PhaseUpdating || d.Phase == PhaseUpdated || d.Phase == PhaseFailed {
			todo = append(todo, d)
		}
	}
	if len(todo) == 0 {
		return nil, nil
	}
	spec := rn.r.Spec
	repo := repoOf(spec.Ref)
	type result struct {
		phase, err string
		rev        int64
	}
	results := map[string]result{}
	var pubs []wire.DesiredState
	err := m.opts.Store.Update(ctx, func(tx Tx) error {
		clear(results)
		pubs = pubs[:0]
		for _, d := range todo {
			prev := d.Previous
			if prev == nil && d.PrevDigest != "" {
				prev = &wire.DesiredModel{Ref: repo + "@" + d.PrevDigest, Digest: d.PrevDigest, Version: d.PrevVersion}
			}
			res := result{phase: PhaseReverting}
			ds, changed, err := tx.UpdateDesired(d.ID, func(models map[string]wire.DesiredModel) error {
				if cur, ok := models[spec.Model]; !ok || cur.Rollout != rn.r.ID {
					res = result{phase: PhaseReverted, err: "desired state changed by someone else since; left alone"}
					return nil
				}
				if prev == nil {
					delete(models, spec.Model)
					if d.Phase == PhaseUpdated {
						res = result{phase: PhaseRevertFailed, err: "no previous version known to go back to; the hub no longer asks for the new one"}
					} else {
						res = result{phase: PhaseReverted}
					}
					return nil
				}
				back := *prev
				back.Reject = spec.Digest // the device marks it bad, as its own watch would
				if back.Digest == spec.Digest {
					back.Reject = ""
				}
				models[spec.Model] = back
				return nil
			})
			switch {
			case errors.Is(err, registry.ErrNotFound) || errors.Is(err, registry.ErrRevoked):
				res = result{phase: PhaseRevertFailed, err: err.Error()}
			case err != nil:
				return fmt.Errorf("device %s: %w", d.ID, err)
			default:
				res.rev = ds.Revision
				if changed {
					pubs = append(pubs, ds)
				}
			}
			results[d.ID] = res
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("rolling back devices: %w", err)
	}
	for _, d := range todo {
		res := results[d.ID]
		d.Phase, d.RevertRevision = res.phase, res.rev
		if res.err != "" {
			d.Error = res.err
		}
		rn.touch(d)
	}
	m.log.Info("rollout devices set back", "rollout", rn.r.ID, "devices", len(todo))
	return pubs, nil
}

// reverted reports whether no online device of rn is still reverting.
func (m *Manager) reverted(rn *run, wall time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, d := range rn.devs {
		if d.Phase != PhaseReverting {
			continue
		}
		if o := m.obs[d.ID]; o != nil && o.isOnline(wall) {
			return false
		}
	}
	return true
}

// control returns the p99 latencies (ms) of the devices that match rn's
// selector, were not taken in, run another version of the model and have
// served enough requests: the control group of the latency gate.
func (m *Manager) control(rn *run) []float64 {
	spec := rn.r.Spec
	if spec.Gates.MaxP99Ratio <= 0 {
		return nil
	}
	wall := time.Now()
	var out []float64
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, o := range m.obs {
		if !o.known || o.revoked || rn.devs[id] != nil || !o.isOnline(wall) || !rn.sel.Matches(o.labels) {
			continue
		}
		rm, ok := o.models[spec.Model]
		if !ok || rm.ActiveDigest == spec.Digest || rm.Health.P99Ms <= 0 || rm.Health.Requests < uint64(spec.Gates.MinLatencySamples) {
			continue
		}
		out = append(out, rm.Health.P99Ms)
	}
	return out
}

// sustain holds back a latency breach until it has lasted the gate's
// LatencySustain, and returns the breach that halts the rollout now, ""
// when none; the other gates halt at once.
func (rn *run) sustain(gates []GateStatus, now time.Time) string {
	held := false
	for i := range gates {
		g := &gates[i]
		if g.Name != gateP99 {
			continue
		}
		if g.OK {
			rn.latencySince = time.Time{}
			break
		}
		if rn.latencySince.IsZero() {
			rn.latencySince = now
		}
		hold, lasted := time.Duration(rn.r.Spec.Gates.LatencySustain), now.Sub(rn.latencySince)
		if lasted < hold {
			held = true
			g.Detail += fmt.Sprintf(" (breached for %v; halts once it lasts %v)", lasted.Round(time.Millisecond), hold)
		}
	}
	for _, g := range gates {
		if !g.OK && !(held && g.Name == gateP99) {
			return fmt.Sprintf("gate %s breached: %s", g.Name, g.why)
		}
	}
	return ""
}

// Gate names.
const (
	gateFailures = "activation_failures"
	gateErrors   = "error_rate"
	gateNaN      = "nan_rate"
	gateP99      = "p99_ratio"
	gateFallback = "fallback_rate"
)

// evaluate computes the gates over a rollout's devices; control holds the
// p99 latencies of matching devices still on the previous version.
func evaluate(spec Spec, devs map[string]*Device, control []float64) []GateStatus {
	g := spec.Gates
	var assigned, failed, updated int
	var req, errs, nans uint64
	var fallbacks int
	var ratios, newP99 []float64
	firstErr := ""
	for _, d := range devs {
		switch d.Phase {
		case PhaseFailed:
			assigned++
			failed++
			if firstErr == "" || d.Error < firstErr {
				firstErr = d.Error
			}
		case PhaseUpdating:
			assigned++
		case PhaseUpdated:
			assigned++
			updated++
			h := d.Health
			req += h.Requests
			errs += h.Errors
			nans += h.NaNs
			if h.Fallbacks > 0 && d.PrevFallbacks == 0 {
				fallbacks++
			}
			if h.Requests >= uint64(g.MinLatencySamples) && h.P99Ms > 0 {
				newP99 = append(newP99, h.P99Ms)
				if d.PrevSamples >= uint64(g.MinLatencySamples) && d.PrevP99Ms > 0 {
					ratios = append(ratios, h.P99Ms/d.PrevP99Ms)
				}
			}
		}
	}
	var out []GateStatus
	{
		gs := GateStatus{Name: gateFailures, Limit: spec.MaxFailures, Judged: assigned > 0, OK: true}
		if assigned > 0 {
			gs.Value = 100 * float64(failed) / float64(assigned)
			gs.OK = gs.Value <= spec.MaxFailures
			gs.Detail = fmt.Sprintf("%d of %d devices failed", failed, assigned)
			if failed > 0 {
				gs.Detail += " (" + firstErr + ")"
			}
		}
		gs.why = fmt.Sprintf("%s, %.1f%% > %g%%", gs.Detail, gs.Value, spec.MaxFailures)
		out = append(out, gs)
	}
	rate := func(name string, n uint64, limit float64, what string) {
		if limit < 0 {
			return
		}
		gs := GateStatus{Name: name, Limit: limit, Judged: req >= uint64(g.MinRequests) && req > 0, OK: true}
		if req > 0 {
			gs.Value = float64(n) / float64(req)
			gs.Detail = fmt.Sprintf("%d of %d requests %s on %d updated devices", n, req, what, updated)
		}
		if gs.Judged {
			gs.OK = gs.Value <= limit
		}
		gs.why = fmt.Sprintf("%s (%.2f%%, limit %.2f%%)", gs.Detail, 100*gs.Value, 100*limit)
		out = append(out, gs)
	}
	rate(gateErrors, errs, g.MaxErrorRate, "failed")
	rate(gateNaN, nans, g.MaxNaNRate, "had NaN/Inf outputs")
	if g.MaxP99Ratio > 0 {
		gs := GateStatus{Name: gateP99, Limit: g.MaxP99Ratio, OK: true}
		switch {
		case len(newP99) > 0 && len(control) > 0:
			n, c := median(newP99), median(control)
			gs.Judged, gs.Value = true, n/c
			gs.Detail = fmt.Sprintf("median p99 %.3g ms of %d updated devices is %.2f× the %.3g ms of %d devices still on the previous version",
				n, len(newP99), gs.Value, c, len(control))
		case len(ratios) > 0:
			gs.Judged, gs.Value = true, median(ratios)
			gs.Detail = fmt.Sprintf("median over %d devices of their new p99 over their previous version's is %.2f×", len(ratios), gs.Value)
		}
		if gs.Judged {
			gs.OK = gs.Value <= g.MaxP99Ratio
		}
		gs.why = fmt.Sprintf("%s (limit %.2f×)", gs.Detail, g.MaxP99Ratio)
		out = append(out, gs)
	}
	if g.MaxFallbackRate >= 0 {
		gs := GateStatus{Name: gateFallback, Limit: g.MaxFallbackRate, Judged: updated > 0, OK: true}
		if updated > 0 {
			gs.Value = float64(fallbacks) / float64(updated)
			gs.OK = gs.Value <= g.MaxFallbackRate
			gs.Detail = fmt.Sprintf("%d of %d updated devices fell back from GPU to CPU", fallbacks, updated)
		}
		gs.why = fmt.Sprintf("%s (%.1f%%, limit %.1f%%)", gs.Detail, 100*gs.Value, 100*g.MaxFallbackRate)
		out = append(out, gs)
	}
	return out
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// status builds a rollout's status.
func (m *Manager) status(rn *run, devices bool) Status {
	st := Status{Rollout: rn.r, Gates: rn.gates}
	if st.Gates == nil {
		st.Gates = evaluate(rn.r.Spec, rn.devs, nil)
	}
	wall := time.Now()
	m.mu.Lock()
	matching := 0
	for _, o := range m.obs {
		if o.known && !o.revoked && rn.sel.Matches(o.labels) {
			matching++
		}
	}
	c := Counts{Matching: matching, Assigned: len(rn.devs)}
	waves := make([]WaveStatus, len(rn.r.Spec.Waves))
	for i, t := range WaveTargets(rn.r.Spec.Waves, matching) {
		waves[i] = WaveStatus{Percent: rn.r.Spec.Waves[i], Target: t}
	}
	for _, d := range rn.devs {
		if o := m.obs[d.ID]; o == nil || !o.isOnline(wall) {
			c.Offline++
		}
		w := &waves[min(max(d.Wave, 0), len(waves)-1)]
		w.Assigned++
		switch d.Phase {
		case PhaseUpdating:
			c.Updating++
		case PhaseUpdated:
			c.Updated++
			w.Updated++
		case PhaseFailed:
			c.Failed++
			w.Failed++
		case PhaseReverting:
			c.Reverting++
		case PhaseReverted:
			c.Reverted++
		case PhaseRevertFailed:
			c.RevertFailed++
		}
	}
	m.mu.Unlock()
	st.Counts, st.Waves = c, waves
	if devices {
		st.Devices = make([]Device, 0, len(rn.devs))
		for _, d := range rn.devs {
			st.Devices = append(st.Devices, *d)
		}
		slices.SortFunc(st.Devices, func(a, b Device) int { return strings.Compare(a.ID, b.ID) })
	}
	return st
}

// firstOf returns the first non-empty string.
func firstOf(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
