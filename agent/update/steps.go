package update

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/edgefleet/edgefleet/agent/cache"
	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/ota"
	"github.com/edgefleet/edgefleet/ota/artifact"
	"github.com/edgefleet/edgefleet/ota/signature"
)

// update runs the state machine for one job, one method per step:
//
//	resolve → inspect → prepare → download → catalogue → verify → warm → activate → serve
//
// A step that fails returns the error; Update's abandon undoes what the job
// left. inspect may end the job early (the artifact is already active).
func (u *Updater) update(ctx context.Context, j *job, o UpdateOptions, log *slog.Logger) (*Result, error) {
	j.opts, j.log = o, log
	if s := u.settings(j.model); s.DefaultVersion != "" {
		return nil, fmt.Errorf("%w: the agent configuration pins model %q to default_version %q; unset it to update over the air",
			ErrRefused, j.model, s.DefaultVersion)
	}
	var err error
	if j.st, err = u.state(j.model); err != nil {
		return nil, err
	}
	if err := u.resolve(ctx, j); err != nil {
		return nil, err
	}
	if res, err := u.inspect(ctx, j); res != nil || err != nil {
		return res, err
	}
	if err := u.prepare(ctx, j); err != nil {
		return nil, err
	}
	if err := u.download(ctx, j); err != nil {
		return nil, err
	}
	// From here on what is served may change: hold the serving lock.
	u.serving.Lock()
	defer u.serving.Unlock()
	for _, step := range []func(context.Context, *job) error{u.catalogue, u.verify, u.warm, u.activate, u.serve} {
		if err := step(ctx, j); err != nil {
			return nil, err
		}
	}
	out := &Result{Model: j.model, Version: j.version, Digest: j.digest, Ref: j.ref, Previous: j.prev, State: ResultActive,
		Precision: string(j.cfg.Precision)}
	if j.res.Variant != nil {
		out.Variant = j.res.Variant.Ref.DigestStr()
	}
	if !j.until.IsZero() {
		out.State, out.WatchUntil = ResultWatching, j.until
	}
	u.step(j.model, "done")
	return out, nil
}

// registryOptions are the registry options of one job: the agent's, the
// job's logger, the update's own, and the variant choice for this agent's
// execution providers (a reference to a variant index resolves, by the
// digest the verified index names, to the variant for them).
func (u *Updater) registryOptions(j *job) []ota.Option {
	regOpts := append(slices.Clone(u.reg), ota.WithLogger(j.log))
	regOpts = append(regOpts, j.opts.Registry...)
	return append(regOpts, ota.WithVariant(u.preference(j.model)))
}

// resolve (step resolving) turns the reference into a manifest digest,
// verifying the signature first when trust keys are configured; from here
// on only the digest is used. A digest rejected before is refused unless
// forced.
func (u *Updater) resolve(ctx context.Context, j *job) error {
	regOpts := u.registryOptions(j)
	repo, r, err := ota.ParseReference(j.ref, regOpts...)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	var dig name.Digest
	switch d, isDigest := r.(name.Digest); {
	case len(u.keys) > 0:
		v, err := signature.Verify(ctx, j.ref, u.keys, signature.WithRegistry(regOpts...))
		if errors.Is(err, signature.ErrNoSignature) || errors.Is(err, signature.ErrBadSignature) {
			return fmt.Errorf("%w: %w", ErrRefused, err)
		}
		if err != nil {
			return err
		}
		dig = v.Ref
	case isDigest:
		dig = d
	default:
		if dig, err = repo.Resolve(ctx, r.Identifier()); err != nil {
			return err
		}
	}
	j.repo, j.ref, j.digest = repo, dig.String(), dig.DigestStr()
	if why := j.st[rejectedPrefix+j.digest]; why != "" && !j.opts.Force {
		return fmt.Errorf("%w: %s was refused or rolled back before (%s); force to install it anyway", ErrRefused, j.digest, why)
	}
	return nil
}

// inspect reads the manifest and config and checks them against the
// agent: config, version number reuse, rollback protection. It returns a
// Result when the artifact is already the active version.
func (u *Updater) inspect(ctx context.Context, j *job) (*Result, error) {
	res, err := j.repo.Inspect(ctx, j.digest)
	if err != nil {
		if errors.Is(err, artifact.ErrInvalid) || errors.Is(err, ota.ErrMediaType) || errors.Is(err, ota.ErrTooLarge) {
			return nil, refused(j, "%v", err)
		}
		return nil, err
	}
	j.res, j.cfg, j.version = res, res.Config, res.Config.Version
	if res.Variant != nil {
		j.log.Info("selected the variant for this agent", "variant", res.Variant.String(), "index", res.Index.Ref.String())
	}
	if err := u.checkConfig(j.model, j.cfg); err != nil {
		return nil, refused(j, "%v", err)
	}
	j.vnum, _ = j.cfg.VersionNumber() // validated by ParseConfig
	existing, err := u.cache.Version(j.model, j.version)
	modelDigest := res.Model().Digest.String()
	switch {
	case errors.Is(err, cache.ErrNotFound):
	case err != nil:
		return nil, err
	case existing.Digest != modelDigest:
		return nil, fmt.Errorf("%w: model %q version %s is cached with other bytes (%s, the artifact has %s); a version number must not be reused",
			ErrConflict, j.model, j.version, existing.Digest, modelDigest)
	case j.st[cache.StateActive] == j.version:
		j.log.Info("artifact is already the active version", "version", j.version)
		return &Result{Model: j.model, Version: j.version, Digest: j.digest, Ref: j.ref,
			Previous: j.st[cache.StatePrevious], State: ResultAlreadyActive, Precision: existing.Meta[metaPrecision],
			Variant: existing.Meta[metaVariant]}, nil
	}
	j.existing = existing
	// A version an interrupted update catalogued is this job's to remove if
	// it fails again.
	j.added = existing.Version != "" && j.st[cache.StatePending] == j.version && existing.Meta[metaManifest] == j.digest
	if acc, ok := parseVersion(j.st[keyAcceptedMax]); ok && j.vnum < acc && !j.opts.AllowRollback {
		return nil, fmt.Errorf("%w: version %s < %d; request an explicit rollback to install it", ErrOlderVersion, j.version, acc)
	}
	return nil, nil
}

// prepare drops a different update an earlier run left unfinished and
// persists this one's intent (pending keys) before anything is stored.
func (u *Updater) prepare(ctx context.Context, j *job) error {
	st := j.st
	if pv := st[keyPendingVersion]; pv != "" && (pv != j.version || st[keyPendingDigest] != j.digest) {
		u.discardPending(j.model, st, "superseded by "+j.ref)
		var err error
		if j.st, err = u.state(j.model); err != nil {
			return err
		}
	}
	j.pending = map[string]string{
		keyPendingState: StepDownloading, keyPendingRef: j.ref, keyPendingDigest: j.digest,
		keyPendingVersion: j.version, keyPendingStarted: j.started.UTC().Format(time.RFC3339),
	}
	if j.opts.AllowRollback {
		j.pending[keyPendingRollback] = "true"
	}
	if _, err := u.cache.Model(j.model); err == nil {
		if err := u.persist(ctx, j, StepDownloading); err != nil {
			return err
		}
	}
	u.step(j.model, "resolved")
	return nil
}

// download (step downloading) pulls the model layer into the cache:
// resumable, verified against its digest.
func (u *Updater) download(ctx context.Context, j *job) error {
	u.step(j.model, "downloading")
	if err := fetchModel(ctx, u.cache, j.repo, j.res, hookSink{Cache: u.cache, step: func() { u.step(j.model, "chunk") }}); err != nil {
		if errors.Is(err, ota.ErrDigestMismatch) || errors.Is(err, ota.ErrTooLarge) || errors.Is(err, ota.ErrMediaType) {
			return refused(j, "%v", err)
		}
		return err
	}
	u.step(j.model, "downloaded")
	return nil
}

// catalogue (step downloaded) records the version in the cache and names
// it pending.
func (u *Updater) catalogue(ctx context.Context, j *job) error {
	if j.existing.Version == "" {
		if _, err := u.cache.AddVersion(ctx, j.model, j.version, versionRecord(j.res, true)); err != nil {
			return err
		}
		j.added = true
	}
	j.pending[cache.StatePending] = j.version
	if err := u.persist(ctx, j, StepDownloaded); err != nil {
		return err
	}
	u.step(j.model, "catalogued")
	return nil
}

// verify (step verified) checks that the stored bytes (re-hashed on read)
// are a model onnxruntime can load, with the inputs and outputs the config
// declares.
func (u *Updater) verify(ctx context.Context, j *job) error {
	if err := u.initRT(); err != nil {
		return err
	}
	blob, err := u.cache.ReadBlob(ctx, j.res.Model().Digest.String())
	if err != nil {
		return err
	}
	ins, outs, err := runtime.Inspect(blob)
	if err != nil {
		return refused(j, "not a model onnxruntime can load: %v", err)
	}
	if err := matchSpecs(j.cfg, ins, outs); err != nil {
		return refused(j, "%v", err)
	}
	j.blob = blob
	if err := u.persist(ctx, j, StepVerified); err != nil {
		return err
	}
	u.step(j.model, "verified")
	return nil
}

// warm (step warmed) creates the serving session next to the current
// default (which keeps serving) and runs the golden vector through it. A
// model that is not served yet is checked on a private session instead, so
// nothing unverified is ever reachable.
func (u *Updater) warm(ctx context.Context, j *job) error {
	settings := u.settings(j.model)
	j.cur = u.currentDefault(j.model)
	if j.cur != "" && j.cur != j.version {
		ws := settings
		ws.DefaultVersion = j.cur
		if err := u.load(ctx, j.model, j.version, ws); err != nil {
			return refused(j, "creating the session: %v", err)
		}
		j.loaded = true
		if err := checkGolden(j.cfg.Golden, func(req *models.InferRequest) (*models.InferResponse, error) {
			return u.models.Infer(ctx, j.model, j.version, req)
		}); err != nil {
			return refused(j, "%v", err)
		}
	} else if err := goldenOnSession(j.blob, settings, j.cfg.Golden); err != nil {
		return refused(j, "%v", err)
	}
	if err := u.persist(ctx, j, StepWarmed); err != nil {
		return err
	}
	u.step(j.model, "warmed")
	return nil
}

// activate (step activating) is one cache transaction: the new version
// active, the former active one previous, the pending keys cleared, the
// watch (if any) recorded. A crash leaves either version active, never
// none.
func (u *Updater) activate(ctx context.Context, j *job) error {
	if err := u.persist(ctx, j, StepActivating); err != nil {
		return err
	}
	u.step(j.model, "activating")
	st, active := j.st, j.st[cache.StateActive]
	prev := active
	if prev == "" && j.cur != "" && j.cur != j.version {
		if _, err := u.cache.Version(j.model, j.cur); err == nil {
			prev = j.cur
		}
	}
	if prev == j.version {
		prev = st[cache.StatePrevious]
	}
	j.prev = prev
	th := u.cfg.WatchFor(j.model)
	now := u.now()
	if th.Window > 0 && prev != "" {
		j.until = now.Add(th.Window)
	}
	acc, _ := parseVersion(st[keyAcceptedMax])
	commit := map[string]string{
		cache.StateActive: j.version, cache.StatePrevious: prev,
		keyAcceptedMax: strconv.FormatUint(max(acc, j.vnum), 10), keyActiveRef: j.ref,
		keyWatch: "", keyWatchUntil: "",
		keyLastResult: ResultActive, keyLastReason: "", keyLastVersion: j.version, keyLastDigest: j.digest,
		keyLastTime: now.UTC().Format(time.RFC3339),
	}
	for _, k := range pendingKeys {
		commit[k] = ""
	}
	if !j.until.IsZero() {
		commit[keyWatch], commit[keyWatchUntil] = j.version, j.until.UTC().Format(time.RFC3339Nano)
		commit[keyLastResult] = ResultWatching
	}
	if err := u.cache.SetModelStates(ctx, j.model, commit); err != nil {
		return err
	}
	j.persisted = false // the pending keys are gone with the commit
	u.step(j.model, "activated")
	return nil
}

// serve switches what requests without a version get (the manager swaps
// the default under its lock: in-flight requests finish on the version they
// started on), applies the version policy and starts the watch. A failed
// switch restores the former active version in the cache.
func (u *Updater) serve(ctx context.Context, j *job) error {
	var prevProvider string
	if j.prev != "" {
		prevProvider = u.provider(j.model, j.prev)
	}
	baseline := u.obs.snapshot(j.model, j.prev)
	ss := u.settings(j.model)
	ss.DefaultVersion = j.version
	var switchErr error
	if j.loaded {
		switchErr = u.makeDefault(ctx, j.model, j.version, ss)
	} else {
		switchErr = u.load(ctx, j.model, j.version, ss)
		j.loaded = switchErr == nil
	}
	if switchErr != nil {
		st := j.st
		revert := map[string]string{cache.StateActive: st[cache.StateActive], cache.StatePrevious: st[cache.StatePrevious],
			keyAcceptedMax: st[keyAcceptedMax], keyActiveRef: st[keyActiveRef], keyWatch: "", keyWatchUntil: ""}
		if err := u.cache.SetModelStates(context.WithoutCancel(ctx), j.model, revert); err != nil {
			j.log.Error("could not restore the active version after a failed switch", "err", err)
		}
		return fmt.Errorf("switching to version %s: %w", j.version, switchErr)
	}
	u.obs.setDefault(j.model, j.version)
	u.step(j.model, "switched")
	if u.reconcile != nil {
		if err := u.reconcile(ctx, j.model); err != nil {
			j.log.Warn("version policy not fully applied after activation", "err", err)
		}
	}
	if !j.until.IsZero() {
		u.startWatch(j.model, j.version, j.prev, j.until, baseline, prevProvider)
	}
	return nil
}
