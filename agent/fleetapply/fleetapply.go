// Package fleetapply connects the agent to its hub: its Applier makes the
// agent's models match the desired state the hub publishes, through the
// over-the-air updater (pull by digest, signature check, golden vector,
// warm-up, atomic activation), and reports each model's state and live
// health, which the hub's rollout gates judge. Run starts an agent and its
// fleet client together and stops them in order.
//
// # Basics
//
//	a, _ := agent.New(cfg, log)
//	app := fleetapply.New(fleetapply.Options{Updater: a.Updater(), Models: a.Models()})
//	c, _ := fleet.New(fleet.Options{Dir: filepath.Join(cfg.Data, "fleet"), HubURL: url, Token: tok, Applier: app})
//	err := fleetapply.Run(ctx, a, c)
//
// # Desired models
//
// A desired model that pins a digest is installed as <repository>@<digest>,
// whatever its tag points to now. Pinning also allows an older version
// than the newest the agent accepted: the hub asked for that exact
// artifact over an authenticated channel (a rollback). A desired model
// without a digest follows its tag and keeps the updater's rollback
// protection. A model the agent already runs at the desired digest is left
// alone, so applying the same state twice does nothing. A desired model
// that names a version to reject (wire.DesiredModel.Reject, set by the
// hub's rollout revert) has that version marked bad once the desired one is
// active (update.Updater.Reject): unloaded and never served again, as after
// a rollback by the agent's own watch.
//
// # Reports
//
// Each model is reported with its active version and manifest digest, the
// previous version, its state (pending steps while an update runs, failed
// when the last desired version could not be activated, rolled_back when
// the agent's own post-activation watch reverted it), and the active
// version's health: requests, server errors, responses with NaN or Inf
// outputs (counted on every response once New has run), p99 latency over
// the recent requests, and whether it fell back from a GPU to the CPU.
package fleetapply

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/edgefleet/edgefleet/agent/cache"
	"github.com/edgefleet/edgefleet/agent/fleet"
	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/update"
	"github.com/edgefleet/edgefleet/ota"
	"github.com/edgefleet/edgefleet/ota/artifact"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// Metadata reads a served model version's runtime facts;
// *models.Manager implements it.
type Metadata interface {
	ModelMetadata(name, version string) (*models.Metadata, error)
}

// Options configure an Applier. Updater is required.
type Options struct {
	Updater *update.Updater
	// Models, optional, tells execution providers and GPU fallbacks.
	Models Metadata
	// Registry are extra registry options for every pull.
	Registry []ota.Option
	// BusyWait is how often a model whose update is already running (a
	// resumed one, or a local rollback) is checked again (default 200 ms).
	BusyWait time.Duration
	// Logger, optional.
	Logger *slog.Logger
}

// Applier applies desired states through the updater; it implements
// fleet.Applier and fleet.Reporter.
type Applier struct {
	opts Options
	u    *update.Updater
	log  *slog.Logger

	mu sync.Mutex // guards errs, desired
	// errs holds each model's last apply error, until an apply succeeds.
	errs map[string]string
	// desired holds the digest each model was last asked for.
	desired map[string]string
}

// New returns an Applier and turns on NaN/Inf counting on every response.
func New(opts Options) *Applier {
	if opts.BusyWait <= 0 {
		opts.BusyWait = 200 * time.Millisecond
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Updater != nil {
		opts.Updater.CountNonFiniteAlways(true)
	}
	return &Applier{opts: opts, u: opts.Updater, log: log, errs: map[string]string{}, desired: map[string]string{}}
}

// Apply installs every desired model that is not active yet, model by
// model in name order, and returns the state of every model the agent
// knows. The error joins the models that failed; the others are applied.
func (a *Applier) Apply(ctx context.Context, ds wire.DesiredState) (map[string]wire.ReportedModel, error) {
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(ds.Models)) {
		m := ds.Models[name]
		a.mu.Lock()
		a.desired[name] = m.Digest
		a.mu.Unlock()
		err := a.applyModel(ctx, name, m)
		if err != nil && ctx.Err() != nil {
			return a.Report(ctx), err
		}
		a.mu.Lock()
		if err != nil {
			a.errs[name] = err.Error()
			errs = append(errs, fmt.Errorf("model %s: %w", name, err))
		} else {
			delete(a.errs, name)
		}
		a.mu.Unlock()
	}
	err := errors.Join(errs...)
	if err != nil && allTransient(errs) {
		err = fmt.Errorf("%w: %w", fleet.ErrTransient, err)
	}
	return a.Report(ctx), err
}

// allTransient reports whether every error can pass on its own (disk full,
// registry out of reach), so the fleet client retries the revision rather
// than recording it as failed. A refusal (golden vector, signature, older
// version, invalid artifact, conflict) is never transient.
func allTransient(errs []error) bool {
	for _, err := range errs {
		if !transient(err) {
			return false
		}
	}
	return len(errs) > 0
}

func transient(err error) bool {
	for _, permanent := range []error{update.ErrRefused, update.ErrOlderVersion, update.ErrInvalid, update.ErrConflict, artifact.ErrInvalid} {
		if errors.Is(err, permanent) {
			return false
		}
	}
	var ne net.Error
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, cache.ErrNoSpace) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &ne)
}

func (a *Applier) applyModel(ctx context.Context, name string, m wire.DesiredModel) error {
	if err := a.installModel(ctx, name, m); err != nil || m.Reject == "" {
		return err
	}
	// The hub rolled a version back: mark it bad as the local watch would.
	why := "rolled back by the hub"
	for {
		err := a.u.Reject(ctx, name, m.Reject, why)
		if !errors.Is(err, update.ErrBusy) {
			if err != nil {
				a.log.Warn("rolled-back version not rejected", "model", name, "digest", m.Reject, "err", err)
			}
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(a.opts.BusyWait):
		}
	}
}

func (a *Applier) installModel(ctx context.Context, name string, m wire.DesiredModel) error {
	ref := m.Ref
	if m.Digest != "" {
		ref = repoOf(m.Ref) + "@" + m.Digest
		if st, err := a.u.Status(name); err == nil && st.Active != "" && digestOf(st.ActiveRef) == m.Digest && st.Pending == nil {
			return nil // already running it
		}
	}
	opts := update.UpdateOptions{AllowRollback: m.Digest != "", Registry: a.opts.Registry}
	for {
		res, err := a.u.Update(ctx, name, ref, opts)
		if errors.Is(err, update.ErrBusy) {
			// A resumed update or a local rollback holds the model: wait.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(a.opts.BusyWait):
			}
			continue
		}
		if err != nil {
			a.log.Warn("desired model not applied", "model", name, "ref", ref, "err", err)
			return err
		}
		a.log.Info("desired model applied", "model", name, "version", res.Version, "digest", res.Digest,
			"state", res.State, "previous", res.Previous, "rollout", m.Rollout)
		return nil
	}
}

// Notify makes changed run after every local change of a model's state
// the updater makes on its own (a rollback by the post-activation watch,
// the end of a watch, a failed activation, a GPU→CPU fallback), so the
// fleet client reports it at once; it implements fleet.Notifier.
func (a *Applier) Notify(changed func()) {
	a.u.OnChange(func(c update.Change) {
		a.log.Debug("local model state changed; reporting", "model", c.Model, "change", c.Kind, "version", c.Version)
		changed()
	})
}

// Report returns the state and health of every model the agent knows.
func (a *Applier) Report(ctx context.Context) map[string]wire.ReportedModel {
	sts, err := a.u.Statuses()
	if err != nil {
		a.log.Warn("reading model states", "err", err)
		return nil
	}
	a.mu.Lock()
	errs, desired := maps.Clone(a.errs), maps.Clone(a.desired)
	a.mu.Unlock()
	out := make(map[string]wire.ReportedModel, len(sts))
	for _, st := range sts {
		rm := wire.ReportedModel{ActiveVersion: st.Active, ActiveDigest: digestOf(st.ActiveRef), PreviousVersion: st.Previous}
		switch {
		case st.Pending != nil || st.Updating:
			rm.State = wire.StateDownloading
			if st.Pending != nil {
				rm.State = pendingState(st.Pending.Step)
				rm.DesiredDigest = st.Pending.Digest
			}
		case errs[st.Model] != "":
			rm.State, rm.LastError = wire.StateFailed, errs[st.Model]
			rm.DesiredDigest = desired[st.Model]
		case desired[st.Model] != "" && desired[st.Model] == rm.ActiveDigest:
			rm.State = wire.StateActive
		case st.Last != nil && st.Last.Result == update.ResultRolledBack:
			rm.State, rm.LastError = wire.StateRolledBack, st.Last.Reason
		case st.Active != "":
			rm.State = wire.StateActive
		default:
			rm.State = wire.StatePending
		}
		if st.Active != "" {
			h := a.u.Health(st.Model, st.Active)
			rm.Health = wire.Health{Requests: uint64(h.Requests), Errors: uint64(h.Errors), NaNs: uint64(h.NonFinite),
				P99Ms: float64(h.P99) / float64(time.Millisecond)}
			rm.Provider, rm.Health.Fallbacks = a.provider(st.Model, st.Active)
		}
		out[st.Model] = rm
	}
	return out
}

// provider returns the execution provider a version runs on and 1 when it
// fell back from a GPU to the CPU (at load or at run time).
func (a *Applier) provider(model, version string) (string, uint64) {
	if a.opts.Models == nil {
		return "", 0
	}
	md, err := a.opts.Models.ModelMetadata(model, version)
	if err != nil || md == nil {
		return "", 0
	}
	p := md.Parameters
	ep, req := p["execution_provider"], p["requested_execution_provider"]
	if p["degraded"] == "true" || ep == "cpu" && req != "" && req != "cpu" {
		return ep, 1
	}
	return ep, 0
}

// pendingState maps an updater step to a reported state.
func pendingState(step string) string {
	switch step {
	case update.StepDownloaded:
		return wire.StateDownloaded
	case update.StepVerified:
		return wire.StateVerified
	case update.StepWarmed, update.StepActivating:
		return wire.StateWarmed
	}
	return wire.StateDownloading
}

// digestOf returns the digest of a digest reference ("host/repo@sha256:…"),
// "" for other references.
func digestOf(ref string) string {
	_, d, ok := strings.Cut(ref, "@")
	if !ok {
		return ""
	}
	return d
}

// repoOf strips the tag or digest from an OCI reference.
func repoOf(ref string) string {
	if i := strings.IndexByte(ref, '@'); i >= 0 {
		return ref[:i]
	}
	if i := strings.LastIndexByte(ref, ':'); i > strings.LastIndexByte(ref, '/') {
		return ref[:i]
	}
	return ref
}

var (
	_ fleet.Applier  = (*Applier)(nil)
	_ fleet.Reporter = (*Applier)(nil)
	_ fleet.Notifier = (*Applier)(nil)
)
