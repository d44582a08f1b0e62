package update

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/edgefleet/edgefleet/agent/cache"
	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/ota"
	"github.com/edgefleet/edgefleet/ota/artifact"
	"github.com/edgefleet/edgefleet/ota/signature"
)

// Errors returned by Update and Rollback, wrapped with details; match them
// with errors.Is.
var (
	// ErrInvalid: a bad argument (model name, reference).
	ErrInvalid = errors.New("invalid update request")
	// ErrBusy: an update or rollback of the model is already running.
	ErrBusy = errors.New("an update of this model is in progress")
	// ErrRefused: the artifact failed a check (signature, config, agent
	// version, model inputs/outputs, golden vector) or was rejected before.
	// The active version is untouched.
	ErrRefused = errors.New("update refused")
	// ErrOlderVersion: rollback protection; the version is older than the
	// newest one the agent has accepted and the update was not an explicit
	// rollback.
	ErrOlderVersion = errors.New("version is older than the newest accepted (rollback protection)")
	// ErrConflict: the version number is already used by different bytes.
	ErrConflict = errors.New("version conflict")
	// ErrNoPrevious: there is no previous version to roll back to.
	ErrNoPrevious = errors.New("no previous version to roll back to")
)

// Steps of the update state machine, persisted as pending_state.
const (
	StepResolving   = "resolving"
	StepDownloading = "downloading"
	StepDownloaded  = "downloaded"
	StepVerified    = "verified"
	StepWarmed      = "warmed"
	StepActivating  = "activating"
	// StepInterrupted marks an update a restart interrupted, to be resumed.
	StepInterrupted = "interrupted"
)

// Outcomes recorded as last_result and returned in Result.State.
const (
	ResultActive        = "active"         // activated; no watch
	ResultWatching      = "watching"       // activated; under post-activation watch
	ResultAlreadyActive = "already-active" // the artifact was already the active version
	ResultHealthy       = "healthy"        // the watch window passed without a breach
	ResultRefused       = "refused"
	ResultFailed        = "failed"
	ResultInterrupted   = "interrupted"
	ResultRolledBack    = "rolled-back"
)

// State keys; see the package documentation.
const (
	keyPendingState    = "pending_state"
	keyPendingRef      = "pending_ref"
	keyPendingDigest   = "pending_digest"
	keyPendingVersion  = "pending_version"
	keyPendingRollback = "pending_allow_rollback"
	keyPendingStarted  = "pending_started"
	keyAcceptedMax     = "accepted_max"
	keyActiveRef       = "active_ref"
	keyWatch           = "watch"
	keyWatchUntil      = "watch_until"
	keyLastResult      = "last_result"
	keyLastReason      = "last_reason"
	keyLastVersion     = "last_version"
	keyLastDigest      = "last_digest"
	keyLastTime        = "last_time"
	rejectedPrefix     = "rejected:"

	metaRef      = "ota_ref"
	metaManifest = "ota_manifest"
	metaPulled   = "ota_pulled"
	metaConfig   = "ota_config"
	// metaVariant is the variant manifest's digest when the version came
	// from a variant index (ota_ref and ota_manifest then name the index).
	metaVariant = "ota_variant"
	// metaPrecision is the config's precision; loaders pass it on as the
	// "precision" model metadata parameter.
	metaPrecision = "precision"
)

var pendingKeys = []string{cache.StatePending, keyPendingState, keyPendingRef, keyPendingDigest,
	keyPendingVersion, keyPendingRollback, keyPendingStarted}

// Options configure an Updater. Cache and Models are required.
type Options struct {
	Cache  *cache.Cache
	Models *models.Manager
	// Load creates the sessions of a cached model version with the given
	// settings (the agent's loader, which records digest and source in the
	// model metadata). Nil reads the blob and calls Models.Load.
	Load func(ctx context.Context, name, version string, s models.Settings) error
	// InitRuntime initialises onnxruntime; nil calls runtime.Init("").
	InitRuntime func() error
	// Settings returns a model's serving settings; nil means the defaults.
	Settings func(name string) models.Settings
	// Lock serialises changes to what is served with the rest of the agent
	// (its repository API); nil uses a private mutex.
	Lock sync.Locker
	// Reconcile, if set, runs with Lock held after every activation and
	// rollback, to load and unload versions by the model's version policy.
	Reconcile func(ctx context.Context, name string) error
	// Config holds trust keys, the golden requirement and watch thresholds.
	Config config.Update
	// AgentVersion is checked against artifacts' minAgentVersion; "" skips
	// the check.
	AgentVersion string
	// Registry are options for every registry access (transport,
	// credentials, retries). Config.Insecure adds ota.WithInsecure.
	Registry []ota.Option
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Updater drives over-the-air updates of an agent's models. Create it with
// New, call Recover before the agent loads its cached models and Start once
// it serves; Close stops the watches and resumed updates.
type Updater struct {
	cache     *cache.Cache
	models    *models.Manager
	load      func(ctx context.Context, name, version string, s models.Settings) error
	initRT    func() error
	settings  func(name string) models.Settings
	serving   sync.Locker
	reconcile func(ctx context.Context, name string) error
	cfg       config.Update
	keys      []*ecdsa.PublicKey
	agentVer  string
	reg       []ota.Option
	log       *slog.Logger
	now       func() time.Time
	obs       *observer
	hook      atomic.Pointer[func(model, step string)]

	ctx    context.Context // lives until Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // resumed updates and watches

	mu      sync.Mutex           // guards busy, watches, resumes, rewatch
	busy    map[string]bool      // models with an update or rollback running
	watches map[string]*watchRun // model → running watch
	resumes []resume             // found by Recover, started by Start
	rewatch []rewatch            // watches found by Recover, started by Start
	started bool
	// listeners are called after local state changes (OnChange).
	listeners []func(Change)
}

type resume struct {
	model, ref    string
	allowRollback bool
}

type rewatch struct {
	model, version, previous string
	until                    time.Time
}

// New checks opts and loads the trust keys.
func New(opts Options) (*Updater, error) {
	if opts.Cache == nil || opts.Models == nil {
		return nil, errors.New("update: Cache and Models are required")
	}
	if err := opts.Config.Validate(); err != nil {
		return nil, err
	}
	u := &Updater{
		cache: opts.Cache, models: opts.Models, load: opts.Load, initRT: opts.InitRuntime,
		settings: opts.Settings, serving: opts.Lock, reconcile: opts.Reconcile, cfg: opts.Config,
		agentVer: opts.AgentVersion, reg: slices.Clone(opts.Registry), log: opts.Logger, now: opts.Now,
		busy: map[string]bool{}, watches: map[string]*watchRun{},
	}
	if u.log == nil {
		u.log = slog.Default()
	}
	if u.now == nil {
		u.now = time.Now
	}
	if u.serving == nil {
		u.serving = &sync.Mutex{}
	}
	if u.settings == nil {
		u.settings = func(string) models.Settings { return models.Settings{} }
	}
	if u.initRT == nil {
		u.initRT = func() error { _, err := runtime.Init(""); return err }
	}
	if u.load == nil {
		u.load = u.defaultLoad
	}
	if opts.Config.Insecure {
		u.reg = append(u.reg, ota.WithInsecure())
	}
	if len(opts.Config.TrustKeys) > 0 {
		keys, err := signature.LoadPublicKeys(opts.Config.TrustKeys...)
		if err != nil {
			return nil, fmt.Errorf("update: trust keys: %w", err)
		}
		u.keys = keys
	}
	u.obs = newObserver()
	u.ctx, u.cancel = context.WithCancel(context.Background())
	// A GPU→CPU fallback of a served version is a change the hub's
	// fallback gate judges: report it at once.
	opts.Models.OnDegraded(func(name, version string) {
		u.notify(Change{Model: name, Kind: ChangeDegraded, Version: version})
	})
	return u, nil
}

func (u *Updater) defaultLoad(ctx context.Context, name, version string, s models.Settings) error {
	if err := u.initRT(); err != nil {
		return err
	}
	rec, err := u.cache.Version(name, version)
	if err != nil {
		return err
	}
	blob, err := u.cache.ReadBlob(ctx, rec.Digest)
	if err != nil {
		return err
	}
	return u.models.Load(ctx, models.LoadRequest{Name: name, Version: version, Model: blob, Settings: s,
		Parameters: versionParameters(rec)})
}

// versionParameters are the model metadata parameters of a cached version:
// digest, source and, for versions installed over the air, precision.
func versionParameters(rec cache.VersionRecord) map[string]string {
	p := map[string]string{"digest": rec.Digest, "source": rec.Source}
	if v := rec.Meta[metaPrecision]; v != "" {
		p["precision"] = v
	}
	return p
}

// preference is the device a variant is chosen for: the model's configured
// execution providers in order (the runtime falls back to CPU at load time
// when a GPU provider cannot be created).
func (u *Updater) preference(model string) ota.Preference {
	return ota.Preference{Providers: u.settings(model).Providers}
}

// TestOnlySetHook makes the Updater call h at every step of an update
// ("resolved", "downloading", "chunk" after each stored chunk, "downloaded",
// "catalogued", "verified", "warmed", "activating", "activated", "switched",
// "done"), so tests can stop or kill the process there. Nil removes it.
func (u *Updater) TestOnlySetHook(h func(model, step string)) {
	if h == nil {
		u.hook.Store(nil)
		return
	}
	u.hook.Store(&h)
}

func (u *Updater) step(model, s string) {
	if h := u.hook.Load(); h != nil {
		(*h)(model, s)
	}
}

// UpdateOptions modify one Update.
type UpdateOptions struct {
	// AllowRollback permits a version older than the newest accepted one.
	AllowRollback bool `json:"allow_rollback,omitempty"`
	// Force installs an artifact that was refused or rolled back before.
	Force bool `json:"force,omitempty"`
	// Registry are extra registry options for this update (progress, chunk
	// size, transport).
	Registry []ota.Option `json:"-"`
}

// Result describes a finished update or rollback.
type Result struct {
	Model string `json:"model"`
	// Version is the version now active (for a rollback: rolled back to).
	Version string `json:"version"`
	// Digest and Ref name the installed artifact (manifest digest, digest reference).
	Digest string `json:"digest,omitempty"`
	Ref    string `json:"ref,omitempty"`
	// Previous is the version kept for rollback ("" when none).
	Previous string `json:"previous,omitempty"`
	// State is one of the Result* constants.
	State string `json:"state"`
	// WatchUntil is when the post-activation watch ends (State "watching").
	WatchUntil time.Time `json:"watch_until,omitzero"`
	// Reason explains a rollback.
	Reason string `json:"reason,omitempty"`
	// Precision is the installed model's precision (fp32, int8, …).
	Precision string `json:"precision,omitempty"`
	// Variant is the manifest digest of the variant installed when Ref names
	// a variant index; "" otherwise.
	Variant string `json:"variant,omitempty"`
}

func (u *Updater) lockModel(model string) (func(), bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.busy[model] {
		return nil, false
	}
	u.busy[model] = true
	return func() {
		u.mu.Lock()
		delete(u.busy, model)
		u.mu.Unlock()
	}, true
}

// job is one update in progress and what to undo if it fails.
type job struct {
	model, ref, digest, version string
	started                     time.Time
	pending                     map[string]string // pending_* keys while the update runs
	persisted                   bool              // pending keys are in the cache
	added                       bool              // the version record was created by this job
	loaded                      bool              // the version was loaded into the manager by this job
	reject                      bool              // record the manifest as rejected on failure

	// Filled in by the steps (steps.go).
	opts     UpdateOptions
	log      *slog.Logger
	st       map[string]string // the model's state map when the update began
	repo     *ota.Repository
	res      *ota.Resolved
	cfg      *artifact.Config
	vnum     uint64
	existing cache.VersionRecord // the version's cache record, if cached before
	blob     []byte              // the model bytes, read back from the cache
	cur      string              // the version serving requests without a version
	prev     string              // the version that becomes previous
	until    time.Time           // end of the post-activation watch, zero when none
}

// refused wraps err as a refusal that is recorded against the manifest.
func refused(j *job, format string, args ...any) error {
	j.reject = true
	return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, args...))
}

// Update installs the artifact ref names ("host/repo:tag" or "@sha256:…") as
// the active version of model, running the whole state machine; it returns
// once the new version serves (and its watch has started) or the update
// failed, leaving the previous version active. See the package
// documentation.
func (u *Updater) Update(ctx context.Context, model, ref string, o UpdateOptions) (*Result, error) {
	if err := cache.ValidateName("model", model); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if strings.TrimSpace(ref) == "" {
		return nil, fmt.Errorf("%w: empty reference", ErrInvalid)
	}
	unlock, ok := u.lockModel(model)
	if !ok {
		return nil, fmt.Errorf("model %q: %w", model, ErrBusy)
	}
	j := &job{model: model, ref: ref, started: u.now()}
	log := u.log.With("model", model, "ref", ref)
	log.Info("update started", "allow_rollback", o.AllowRollback)
	res, err := u.update(ctx, j, o, log)
	if err != nil {
		u.abandon(j, err, log)
		unlock()
		u.notify(Change{Model: model, Kind: ChangeFailed, Version: j.version})
		return nil, fmt.Errorf("update %s to %s: %w", model, ref, err)
	}
	unlock()
	log.Info("update finished", "version", res.Version, "digest", res.Digest, "state", res.State,
		"previous", res.Previous, "took", u.now().Sub(j.started).Round(time.Millisecond))
	if res.State != ResultAlreadyActive {
		u.notify(Change{Model: model, Kind: ChangeActivated, Version: res.Version})
	}
	return res, nil
}

// abandon undoes what a failed job left: the pending keys, the version it
// catalogued and the session it loaded. Downloaded blobs and partial
// downloads stay, so retrying resumes. The outcome is recorded.
func (u *Updater) abandon(j *job, cause error, log *slog.Logger) {
	ctx := context.Background()
	result := ResultFailed
	if errors.Is(cause, ErrRefused) || errors.Is(cause, ErrOlderVersion) || errors.Is(cause, ErrConflict) {
		result = ResultRefused
	}
	log.Warn("update "+result, "version", j.version, "digest", j.digest, "err", cause)
	if j.loaded {
		u.serving.Lock()
		if cur := u.currentDefault(j.model); cur != j.version {
			if err := u.models.Unload(j.model, j.version); err != nil && !errors.Is(err, models.ErrNotFound) {
				log.Warn("unloading the refused version", "err", err)
			}
		}
		u.serving.Unlock()
	}
	st, err := u.state(j.model)
	if err != nil || len(st) == 0 && !j.added {
		return // the model does not exist (or cannot be read): nothing to record
	}
	kv := map[string]string{keyLastResult: result, keyLastReason: cause.Error(), keyLastVersion: j.version,
		keyLastDigest: j.digest, keyLastTime: u.now().UTC().Format(time.RFC3339)}
	if j.persisted || st[keyPendingDigest] == j.digest {
		for _, k := range pendingKeys {
			kv[k] = ""
		}
	}
	if j.reject && j.digest != "" {
		kv[rejectedPrefix+j.digest] = cause.Error()
	}
	if err := u.cache.SetModelStates(ctx, j.model, kv); err != nil && !errors.Is(err, cache.ErrNotFound) {
		log.Error("recording the failed update", "err", err)
	}
	if j.added && j.version != st[cache.StateActive] && j.version != st[cache.StatePrevious] {
		if err := u.cache.RemoveVersion(ctx, j.model, j.version); err != nil && !errors.Is(err, cache.ErrNotFound) {
			log.Warn("removing the refused version from the cache", "err", err)
		}
	}
}

// persist records the job's pending keys with step as pending_state.
func (u *Updater) persist(ctx context.Context, j *job, step string) error {
	j.pending[keyPendingState] = step
	if err := u.cache.SetModelStates(ctx, j.model, j.pending); err != nil {
		return fmt.Errorf("persisting step %s: %w", step, err)
	}
	j.persisted = true
	return nil
}

// state returns the model's state map; empty (not an error) for a model the
// cache does not know.
func (u *Updater) state(model string) (map[string]string, error) {
	st, err := u.cache.ModelState(model)
	if errors.Is(err, cache.ErrNotFound) {
		return map[string]string{}, nil
	}
	return st, err
}

func (u *Updater) checkConfig(model string, cfg *artifact.Config) error {
	if cfg.Name != model {
		return fmt.Errorf("the artifact is model %q, not %q", cfg.Name, model)
	}
	if u.agentVer != "" {
		ok, err := cfg.SupportsAgent(u.agentVer)
		if err != nil {
			return fmt.Errorf("minAgentVersion: %w", err)
		}
		if !ok {
			return fmt.Errorf("the artifact needs agent %s or newer; this agent is %s", cfg.MinAgentVersion, u.agentVer)
		}
	}
	if u.cfg.RequireGolden && cfg.Golden == nil {
		return errors.New("the artifact has no golden test vector and this agent requires one")
	}
	return nil
}

// hookSink is the cache as an ota.Sink, reporting each stored chunk.
type hookSink struct {
	*cache.Cache
	step func()
}

func (s hookSink) Append(ctx context.Context, d v1.Hash, off int64, p []byte) error {
	if err := s.Cache.Append(ctx, d, off, p); err != nil {
		return err
	}
	s.step()
	return nil
}

// currentDefault returns the version the manager serves for requests without
// a version, "" when the model is not loaded.
func (u *Updater) currentDefault(model string) string {
	md, err := u.models.ModelMetadata(model, "")
	if err != nil {
		return ""
	}
	return md.Parameters["version"]
}

// provider returns the execution provider a loaded version runs on ("" when
// not loaded).
func (u *Updater) provider(model, version string) string {
	md, err := u.models.ModelMetadata(model, version)
	if err != nil {
		return ""
	}
	return md.Parameters["execution_provider"]
}

func (u *Updater) loaded(model, version string) bool {
	ok, err := u.models.ModelReady(model, version)
	return ok && err == nil
}

// defaultSetter is implemented by managers that can switch the default
// version without creating sessions.
type defaultSetter interface {
	SetDefaultVersion(name, version string) error
}

// makeDefault makes a loaded version the default. Without a manager method
// for it, the version is loaded again with settings pinning it, which swaps
// sessions and the default in one step.
func (u *Updater) makeDefault(ctx context.Context, model, version string, s models.Settings) error {
	if ds, ok := any(u.models).(defaultSetter); ok {
		return ds.SetDefaultVersion(model, version)
	}
	return u.load(ctx, model, version, s)
}

func parseVersion(s string) (uint64, bool) {
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

func cacheSpecs(in []artifact.TensorSpec) []cache.TensorSpec {
	out := make([]cache.TensorSpec, len(in))
	for i, s := range in {
		out[i] = cache.TensorSpec{Name: s.Name, DType: s.Datatype, Shape: s.Shape}
	}
	return out
}

// matchSpecs checks that the model's inputs and outputs are those the config
// declares: same names, data types and compatible shapes.
func matchSpecs(cfg *artifact.Config, ins, outs []runtime.IOSpec) error {
	var problems []string
	check := func(what string, declared []artifact.TensorSpec, actual []runtime.IOSpec) {
		got := map[string]runtime.IOSpec{}
		for _, a := range actual {
			got[a.Name] = a
		}
		for _, d := range declared {
			a, ok := got[d.Name]
			if !ok {
				problems = append(problems, fmt.Sprintf("%s %q is declared but the model has no such %s", what, d.Name, what))
				continue
			}
			delete(got, d.Name)
			if a.DType.String() != d.Datatype {
				problems = append(problems, fmt.Sprintf("%s %q is %s in the model, %s in the config", what, d.Name, a.DType, d.Datatype))
			}
			if !shapesCompatible(d.Shape, a.Shape) {
				problems = append(problems, fmt.Sprintf("%s %q has shape %v in the model, %v in the config", what, d.Name, a.Shape, d.Shape))
			}
		}
		for n := range got {
			problems = append(problems, fmt.Sprintf("the model's %s %q is not declared in the config", what, n))
		}
	}
	check("input", cfg.Inputs, ins)
	check("output", cfg.Outputs, outs)
	if len(problems) > 0 {
		slices.Sort(problems)
		return fmt.Errorf("model does not match its config: %s", strings.Join(problems, "; "))
	}
	return nil
}

// shapesCompatible reports whether two shapes can describe the same tensor:
// same rank and equal dimensions wherever neither is dynamic (-1).
func shapesCompatible(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] >= 0 && b[i] >= 0 && a[i] != b[i] {
			return false
		}
	}
	return true
}
