package update

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/edgefleet/edgefleet/agent/cache"
	"github.com/edgefleet/edgefleet/agent/models"
)

// Reject marks the artifact with manifest digest bad on this agent, as the
// post-activation watch does with a version it rolls back: its digest is
// recorded as rejected (a later Update refuses it unless forced), the
// version is unloaded and stops being the previous one, and it leaves the
// cache unless a label names it (the version policy keeps it then, but it
// is never served: LoadCached and the policy skip rejected versions). The
// hub calls for this after it reverted a rollout, so a device set back by
// the hub ends the same as one whose own watch rolled back.
//
// Rejecting the active version fails with ErrConflict: activate another one
// first. A digest no cached version carries is only recorded. Reject is
// idempotent; it fails with ErrBusy while an update of the model runs.
func (u *Updater) Reject(ctx context.Context, model, digest, reason string) error {
	if err := cache.ValidateName("model", model); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if !strings.HasPrefix(digest, "sha256:") {
		return fmt.Errorf("%w: digest %q", ErrInvalid, digest)
	}
	unlock, ok := u.lockModel(model)
	if !ok {
		return fmt.Errorf("model %q: %w", model, ErrBusy)
	}
	changed, ver, err := u.reject(ctx, model, digest, reason)
	unlock()
	if changed {
		u.notify(Change{Model: model, Kind: ChangeRejected, Version: ver})
	}
	return err
}

func (u *Updater) reject(ctx context.Context, model, digest, reason string) (changed bool, version string, err error) {
	u.serving.Lock()
	defer u.serving.Unlock()
	rec, err := u.cache.Model(model)
	if errors.Is(err, cache.ErrNotFound) {
		return false, "", nil // nothing to mark
	}
	if err != nil {
		return false, "", err
	}
	st := rec.State
	for _, v := range rec.Versions {
		if manifestOf(v) == digest {
			version = v.Version
			break
		}
	}
	if version != "" && version == st[cache.StateActive] {
		return false, version, fmt.Errorf("%w: model %q version %s (%s) is active; activate another version before rejecting it",
			ErrConflict, model, version, digest)
	}
	kv := map[string]string{}
	if st[rejectedPrefix+digest] == "" {
		kv[rejectedPrefix+digest] = reason
	}
	if version != "" && st[cache.StatePrevious] == version {
		kv[cache.StatePrevious] = ""
	}
	if st[keyWatch] != "" && st[keyWatch] == version {
		u.stopWatch(model)
		kv[keyWatch], kv[keyWatchUntil] = "", ""
	}
	if len(kv) > 0 {
		if err := u.cache.SetModelStates(ctx, model, kv); err != nil {
			return false, version, err
		}
		changed = true
	}
	if version == "" {
		return changed, "", nil
	}
	log := u.log.With("model", model, "version", version, "digest", digest)
	if u.loaded(model, version) {
		if err := u.models.Unload(model, version); err != nil && !errors.Is(err, models.ErrNotFound) {
			return changed, version, fmt.Errorf("unloading rejected version %s: %w", version, err)
		}
		changed = true
	}
	if !labelled(st, version) {
		switch err := u.cache.RemoveVersion(ctx, model, version); {
		case err == nil:
			changed = true
		case !errors.Is(err, cache.ErrNotFound):
			log.Warn("removing the rejected version", "err", err)
		}
	}
	if changed {
		log.Warn("version rejected", "reason", reason)
	}
	if u.reconcile != nil {
		if err := u.reconcile(ctx, model); err != nil {
			log.Warn("version policy not fully applied after rejecting a version", "err", err)
		}
	}
	return changed, version, nil
}

// RejectedVersions returns the versions of a cached model whose manifest was
// rejected (refused, rolled back by the watch, or rejected by the hub):
// they must not be served, whatever the version policy selects.
func RejectedVersions(m cache.ModelRecord) map[string]bool {
	out := map[string]bool{}
	for _, v := range m.Versions {
		if d := manifestOf(v); d != "" && m.State[rejectedPrefix+d] != "" {
			out[v.Version] = true
		}
	}
	return out
}
