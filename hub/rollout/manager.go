package rollout

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/hub/registry"
	"github.com/edgefleet/edgefleet/hub/shadow"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// Errors; test with errors.Is.
var (
	// ErrNotFound: no rollout with that id.
	ErrNotFound = errors.New("rollout not found")
	// ErrConflict: the operation does not fit the rollout's state, or
	// another rollout of the model is in progress.
	ErrConflict = errors.New("rollout conflict")
)

// Registry is what the manager needs of the device registry;
// *registry.Registry implements it (and TxRegistry, for the default
// BoltStore).
type Registry interface {
	List(ctx context.Context, sel registry.Selector) ([]registry.Device, error)
}

// Shadow publishes desired states and tells what devices report;
// *shadow.Service implements it.
type Shadow interface {
	PublishDesired(ctx context.Context, ds wire.DesiredState)
	Listen(fn func(shadow.Event))
}

// Artifact is what a reference resolves to.
type Artifact struct {
	// Digest is the manifest digest.
	Digest string
	// Name and Version are the model name and version in its config.
	Name, Version string
}

// Resolver resolves an OCI reference when a rollout is created.
type Resolver func(ctx context.Context, ref string) (Artifact, error)

// Options configure a Manager. Registry, Shadow and either Store or DB
// are required.
type Options struct {
	// Store keeps the rollouts; nil means a BoltStore on DB, with
	// Registry (then also a TxRegistry) changing desired states.
	Store Store
	// DB is the hub's database, for the default BoltStore.
	DB       *bolt.DB
	Registry Registry
	Shadow   Shadow
	// Resolve, optional, resolves references to digests at creation;
	// without it (or when it fails) Spec.Digest must be set.
	Resolve Resolver
	// Now is the clock of bake times and activation timeouts; nil means
	// time.Now. Tests pass a fake one.
	Now func() time.Time
	// Tick is how often rollouts are evaluated besides on device reports
	// (default 1 s).
	Tick time.Duration
	// Relist is how often the device list is read again to catch label
	// changes (default 30 s); new devices are noticed from their first
	// message.
	Relist time.Duration
	// Logger, optional.
	Logger *slog.Logger
}

// Manager runs rollouts. It is safe for concurrent use.
type Manager struct {
	opts Options
	log  *slog.Logger
	now  func() time.Time

	// opMu serialises steps and operations; it guards runs, listed and
	// listings.
	opMu   sync.Mutex
	runs   map[string]*run
	listed time.Time // last full device listing
	// listings counts device listings: a completed rollout looks for new
	// devices only after one.
	listings int

	// mu guards obs and unknown (the event path: short holds only).
	mu  sync.Mutex
	obs map[string]*observation
	// unknown is set when a device not in the last listing sent
	// something: it may be a new device matching a selector.
	unknown bool

	wake chan struct{}
}

// observation is what the hub last heard from a device.
type observation struct {
	labels  map[string]string
	revoked bool
	known   bool // present in the last listing
	models  map[string]wire.ReportedModel
	applied int64
	failed  int64
	lastErr string
	online  bool
	seen    time.Time // wall clock
	hb      int64     // heartbeat interval, seconds
}

func (o *observation) isOnline(now time.Time) bool {
	if !o.online || o.revoked {
		return false
	}
	return o.hb <= 0 || now.Sub(o.seen) <= 3*time.Duration(o.hb)*time.Second
}

// run is a rollout in memory.
type run struct {
	r    Rollout
	sel  registry.Selector
	devs map[string]*Device
	// dirty devices and a changed record are written at the end of a step.
	dirty   map[string]bool
	changed bool
	gates   []GateStatus
	// latencySince is when the latency gate started to breach.
	latencySince time.Time
	// adopted is the device listing a completed rollout last adopted
	// devices from.
	adopted int
}

func newRun(r Rollout) (*run, error) {
	sel, err := registry.ParseSelector(r.Spec.Selector)
	if err != nil {
		return nil, err
	}
	return &run{r: r, sel: sel, devs: map[string]*Device{}, dirty: map[string]bool{}}, nil
}

func (rn *run) touch(d *Device) { rn.dirty[d.ID] = true }

// New loads the rollouts from opts.DB and subscribes to device events. Call
// Run to drive them.
func New(opts Options) (*Manager, error) {
	if (opts.Store == nil && opts.DB == nil) || opts.Registry == nil || opts.Shadow == nil {
		return nil, errors.New("rollout: Store or DB, Registry and Shadow are required")
	}
	if opts.Store == nil {
		txr, ok := opts.Registry.(TxRegistry)
		if !ok {
			return nil, errors.New("rollout: the bbolt store needs a registry with UpdateDesiredTx")
		}
		bs, err := NewBoltStore(opts.DB, txr)
		if err != nil {
			return nil, err
		}
		opts.Store = bs
	}
	if opts.Tick <= 0 {
		opts.Tick = time.Second
	}
	if opts.Relist <= 0 {
		opts.Relist = 30 * time.Second
	}
	m := &Manager{opts: opts, log: opts.Logger, now: opts.Now, obs: map[string]*observation{}, wake: make(chan struct{}, 1)}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.now == nil {
		m.now = time.Now
	}
	runs, err := load(context.Background(), opts.Store)
	if err != nil {
		return nil, fmt.Errorf("rollout: %w", err)
	}
	m.runs = runs
	opts.Shadow.Listen(m.onEvent)
	return m, nil
}

// Run evaluates the rollouts on every tick and after device reports until
// ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	t := time.NewTicker(m.opts.Tick)
	defer t.Stop()
	// Reports come in bursts: evaluating at most every minGap keeps a
	// large fleet's reports from turning into one step each.
	const minGap = 20 * time.Millisecond
	for {
		m.step(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-m.wake:
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(minGap):
			}
		}
	}
}

// poke asks Run for a step.
func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

func (m *Manager) onEvent(e shadow.Event) {
	now := time.Now()
	m.mu.Lock()
	o := m.obs[e.DeviceID]
	if o == nil {
		o = &observation{}
		m.obs[e.DeviceID] = o
	}
	if !o.known {
		m.unknown = true
	}
	wake := true
	switch e.Kind {
	case shadow.EventReported:
		rs := e.Reported
		o.models, o.applied, o.failed, o.lastErr = rs.Models, rs.AppliedRevision, rs.FailedRevision, rs.LastError
		o.online = true
	case shadow.EventHeartbeat:
		wake = !o.online
		o.online = true
		o.hb = e.Heartbeat.IntervalSeconds
	case shadow.EventPresence:
		o.online = e.Presence.Online
	}
	o.seen = now
	m.mu.Unlock()
	if wake {
		m.poke()
	}
}

// relist reads every device from the registry: labels and revocation
// always, the rest only for devices the manager has not heard from.
func (m *Manager) relist(ctx context.Context) error {
	devs, err := m.opts.Registry.List(ctx, registry.Selector{})
	if err != nil {
		return err
	}
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.unknown = false
	for _, d := range devs {
		o := m.obs[d.ID]
		if o == nil {
			o = &observation{models: d.Models, applied: d.AppliedRevision, failed: d.FailedRevision,
				lastErr: d.LastError, online: d.IsOnline(now), seen: d.LastSeen, hb: d.HeartbeatSeconds}
			m.obs[d.ID] = o
		}
		o.labels, o.revoked, o.known = d.Labels, d.Revoked, true
	}
	for _, o := range m.obs {
		if !o.known {
			// Heard of but not listed: an enrollment racing the listing.
			m.unknown = true
		}
	}
	return nil
}

// Create validates spec, resolves its reference and starts a rollout.
func (m *Manager) Create(ctx context.Context, spec Spec) (Status, error) {
	spec = spec.WithDefaults()
	if err := spec.Validate(); err != nil {
		return Status{}, err
	}
	if m.opts.Resolve != nil {
		ref := spec.Ref
		if spec.Digest != "" {
			ref = repoOf(spec.Ref) + "@" + spec.Digest
		}
		a, err := m.opts.Resolve(ctx, ref)
		switch {
		case err != nil && spec.Digest == "":
			return Status{}, fmt.Errorf("rollout: resolving %s (pass a digest to skip): %w", spec.Ref, err)
		case err != nil:
			m.log.Warn("rollout artifact not resolved; using the given digest", "ref", spec.Ref, "err", err)
		case a.Name != "" && a.Name != spec.Model:
			return Status{}, fmt.Errorf("rollout: %s is model %q, not %q: %w", spec.Ref, a.Name, spec.Model, ErrInvalid)
		case spec.Digest != "" && a.Digest != spec.Digest:
			return Status{}, fmt.Errorf("rollout: %s resolves to %s, not %s: %w", spec.Ref, a.Digest, spec.Digest, ErrInvalid)
		default:
			spec.Digest = a.Digest
			if spec.Version == "" {
				spec.Version = a.Version
			}
		}
	}
	if spec.Digest == "" {
		return Status{}, fmt.Errorf("rollout: %s: no digest and no resolver: %w", spec.Ref, ErrInvalid)
	}
	m.opMu.Lock()
	defer m.opMu.Unlock()
	for _, rn := range m.runs {
		if rn.r.Spec.Model == spec.Model && !Final(rn.r.State) {
			return Status{}, fmt.Errorf("rollout %s of model %q is %s; pause does not free the model, abort it first: %w",
				rn.r.ID, spec.Model, rn.r.State, ErrConflict)
		}
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return Status{}, err
	}
	var seq int64
	for _, rn := range m.runs {
		seq = max(seq, rn.r.Seq)
	}
	now := m.now().UTC()
	r := Rollout{ID: "ro-" + hex.EncodeToString(b[:]), Seq: seq + 1, Spec: spec, State: StatePending, Created: now, Updated: now}
	rn, err := newRun(r)
	if err != nil {
		return Status{}, err
	}
	if err := m.opts.Store.Update(ctx, func(tx Tx) error { return tx.PutRollout(r) }); err != nil {
		return Status{}, fmt.Errorf("rollout: %w", err)
	}
	m.runs[r.ID] = rn
	m.log.Info("rollout created", "rollout", r.ID, "model", spec.Model, "ref", spec.Ref, "digest", spec.Digest,
		"selector", spec.Selector, "waves", spec.Waves, "bake", spec.Bake)
	m.poke()
	return m.status(rn, false), nil
}

// Get returns a rollout's status, with its devices when devices is true.
func (m *Manager) Get(ctx context.Context, id string, devices bool) (Status, error) {
	if err := ctx.Err(); err != nil {
		return Status{}, err
	}
	m.opMu.Lock()
	defer m.opMu.Unlock()
	rn := m.runs[id]
	if rn == nil {
		return Status{}, fmt.Errorf("rollout %q: %w", id, ErrNotFound)
	}
	return m.status(rn, devices), nil
}

// List returns every rollout's status (without devices), newest first.
func (m *Manager) List(ctx context.Context) ([]Status, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.opMu.Lock()
	defer m.opMu.Unlock()
	out := make([]Status, 0, len(m.runs))
	for _, rn := range m.runs {
		out = append(out, m.status(rn, false))
	}
	slices.SortFunc(out, func(a, b Status) int { return cmp.Compare(b.Seq, a.Seq) })
	return out, nil
}

// Pause stops a running rollout from updating more devices.
func (m *Manager) Pause(ctx context.Context, id string) (Status, error) {
	return m.transition(ctx, id, "pause", func(rn *run) error {
		switch rn.r.State {
		case StatePaused:
			return nil
		case StatePending, StateRunning:
			rn.r.State = StatePaused
			return nil
		}
		return fmt.Errorf("cannot pause a %s rollout: %w", rn.r.State, ErrConflict)
	})
}

// Resume continues a paused rollout.
func (m *Manager) Resume(ctx context.Context, id string) (Status, error) {
	return m.transition(ctx, id, "resume", func(rn *run) error {
		switch rn.r.State {
		case StateRunning:
			return nil
		case StatePaused:
			rn.r.State = StateRunning
			if rn.r.Started.IsZero() {
				rn.r.State = StatePending
			}
			return nil
		}
		return fmt.Errorf("cannot resume a %s rollout: %w", rn.r.State, ErrConflict)
	})
}

// Abort stops a rollout; devices keep the version they have.
func (m *Manager) Abort(ctx context.Context, id string) (Status, error) {
	return m.transition(ctx, id, "abort", func(rn *run) error {
		switch rn.r.State {
		case StateAborted:
			return nil
		case StatePending, StateRunning, StatePaused:
			rn.r.State, rn.r.Reason, rn.r.Finished = StateAborted, "aborted by an operator", m.now().UTC()
			return nil
		}
		return fmt.Errorf("cannot abort a %s rollout: %w", rn.r.State, ErrConflict)
	})
}

// Rollback sets every device the rollout updated back to its previous
// version.
func (m *Manager) Rollback(ctx context.Context, id string) (Status, error) {
	return m.transition(ctx, id, "rollback", func(rn *run) error {
		switch rn.r.State {
		case StateHalted, StateRolledBack:
			return nil
		}
		m.halt(rn, "rollback requested by an operator")
		return nil
	})
}

func (m *Manager) transition(ctx context.Context, id, what string, fn func(*run) error) (Status, error) {
	if err := ctx.Err(); err != nil {
		return Status{}, err
	}
	m.opMu.Lock()
	defer m.opMu.Unlock()
	rn := m.runs[id]
	if rn == nil {
		return Status{}, fmt.Errorf("rollout %q: %w", id, ErrNotFound)
	}
	before := rn.r.State
	if err := fn(rn); err != nil {
		return Status{}, fmt.Errorf("rollout %s: %w", id, err)
	}
	if rn.r.State != before {
		rn.r.Updated = m.now().UTC()
		rn.changed = true
		if err := m.flush(); err != nil {
			return Status{}, err
		}
		m.log.Info("rollout "+what, "rollout", id, "from", before, "to", rn.r.State)
	}
	m.poke()
	return m.status(rn, false), nil
}

// halt stops rn and marks its devices for reverting (the next step sets
// their desired state back).
func (m *Manager) halt(rn *run, reason string) {
	rn.r.State, rn.r.Reason = StateHalted, reason
	rn.r.Updated = m.now().UTC()
	rn.changed = true
	m.log.Warn("rollout halted; rolling back", "rollout", rn.r.ID, "model", rn.r.Spec.Model, "reason", reason)
}

func (m *Manager) flush() error {
	dirty := false
	for _, rn := range m.runs {
		dirty = dirty || rn.changed || len(rn.dirty) > 0
	}
	if !dirty {
		return nil
	}
	err := m.opts.Store.Update(context.Background(), func(tx Tx) error {
		for _, rn := range m.runs {
			if err := flushRun(tx, rn); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("rollout: saving state: %w", err)
	}
	for _, rn := range m.runs {
		rn.changed = false
		clear(rn.dirty)
	}
	return nil
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
