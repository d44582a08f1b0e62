package models

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgefleet/edgefleet/agent/batching"
	"github.com/edgefleet/edgefleet/agent/metrics"
	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/tensor"
)

// Platform is the platform string the metadata endpoints report.
const Platform = "onnxruntime_onnx"

// Settings are the per-model serving settings. Zero fields take defaults.
type Settings struct {
	// IntraOpThreads per session run; 0 means 1.
	IntraOpThreads int `yaml:"intra_op_threads,omitempty" json:"intra_op_threads,omitempty"`
	// Instances is how many runs of the model may execute at once; 0 means 2.
	Instances int `yaml:"instances,omitempty" json:"instances,omitempty"`
	// MaxQueue bounds the requests waiting for an instance; beyond it requests
	// fail at once with ErrOverloaded. 0 means 256; -1 means no queue.
	MaxQueue int `yaml:"max_queue,omitempty" json:"max_queue,omitempty"`
	// Providers lists execution providers in order, e.g. [cuda, cpu]; empty means [cpu].
	Providers []string `yaml:"providers,omitempty" json:"providers,omitempty"`
	// DeviceID is the GPU ordinal for GPU providers.
	DeviceID int `yaml:"device_id,omitempty" json:"device_id,omitempty"`
	// DefaultVersion pins the version used when a request names none; empty means the latest loaded.
	DefaultVersion string `yaml:"default_version,omitempty" json:"default_version,omitempty"`
	// VersionPolicy chooses which cached versions are loaded; zero means the latest one.
	VersionPolicy VersionPolicy `yaml:"version_policy,omitempty" json:"version_policy,omitempty"`
	// Labels map names such as "stable" and "canary" to versions (TF Serving's version labels).
	Labels map[string]string `yaml:"labels,omitempty" json:"labels,omitempty"`
	// Batching enables dynamic batching for models whose inputs and outputs
	// all have a dynamic first (batch) dimension; nil means off.
	Batching *Batching `yaml:"dynamic_batching,omitempty" json:"dynamic_batching,omitempty"`
}

// Batching configures dynamic batching (as Triton's dynamic_batching).
type Batching struct {
	// MaxBatchSize is the most rows in one merged run; 0 means 8.
	MaxBatchSize int `yaml:"max_batch_size,omitempty" json:"max_batch_size,omitempty"`
	// MaxQueueDelayMicros is how long the oldest request may wait for others
	// to join its batch; 0 dispatches as soon as an instance is free.
	MaxQueueDelayMicros int `yaml:"max_queue_delay_us,omitempty" json:"max_queue_delay_us,omitempty"`
	// PreferredBatchSizes are batch sizes dispatched without waiting further.
	PreferredBatchSizes []int `yaml:"preferred_batch_sizes,omitempty" json:"preferred_batch_sizes,omitempty"`
}

// VersionPolicy selects versions to serve, like TF Serving's
// model_version_policy: at most one field is set.
type VersionPolicy struct {
	// Latest serves the N highest versions.
	Latest int `yaml:"latest,omitempty" json:"latest,omitempty"`
	// Specific serves exactly these versions.
	Specific []string `yaml:"specific,omitempty" json:"specific,omitempty"`
	// All serves every cached version.
	All bool `yaml:"all,omitempty" json:"all,omitempty"`
}

// Validate reports a policy with more than one choice.
func (p VersionPolicy) Validate() error {
	n := 0
	if p.Latest != 0 {
		n++
	}
	if len(p.Specific) > 0 {
		n++
	}
	if p.All {
		n++
	}
	if n > 1 || p.Latest < 0 {
		return errors.New("version_policy: set one of latest (> 0), specific or all")
	}
	return nil
}

// Select returns the versions of available (any order) that the policy
// serves, in CompareVersions order. Specific versions that are missing are
// returned in missing.
func (p VersionPolicy) Select(available []string) (serve, missing []string) {
	vs := slices.Clone(available)
	slices.SortFunc(vs, CompareVersions)
	switch {
	case p.All:
		return vs, nil
	case len(p.Specific) > 0:
		for _, want := range p.Specific {
			if slices.Contains(vs, want) {
				serve = append(serve, want)
			} else {
				missing = append(missing, want)
			}
		}
		slices.SortFunc(serve, CompareVersions)
		return serve, missing
	}
	n := max(p.Latest, 1)
	return vs[max(0, len(vs)-n):], nil
}

// Merge returns s with zero fields taken from d.
func (s Settings) Merge(d Settings) Settings {
	if s.IntraOpThreads == 0 {
		s.IntraOpThreads = d.IntraOpThreads
	}
	if s.Instances == 0 {
		s.Instances = d.Instances
	}
	if s.MaxQueue == 0 {
		s.MaxQueue = d.MaxQueue
	}
	if len(s.Providers) == 0 {
		s.Providers = d.Providers
	}
	if s.VersionPolicy.Latest == 0 && len(s.VersionPolicy.Specific) == 0 && !s.VersionPolicy.All {
		s.VersionPolicy = d.VersionPolicy
	}
	if s.Labels == nil {
		s.Labels = d.Labels
	}
	if s.Batching == nil {
		s.Batching = d.Batching
	}
	if s.DeviceID == 0 {
		s.DeviceID = d.DeviceID
	}
	return s
}

func (s Settings) withDefaults() Settings {
	s = s.Merge(Settings{IntraOpThreads: 1, Instances: 2, MaxQueue: 256, Providers: []string{runtime.ProviderCPU}})
	if s.MaxQueue < 0 {
		s.MaxQueue = 0
	}
	return s
}

// Validate reports settings that cannot work.
func (s Settings) Validate() error {
	if s.IntraOpThreads < 0 || s.Instances < 0 {
		return errors.New("intra_op_threads and instances must not be negative")
	}
	if err := s.VersionPolicy.Validate(); err != nil {
		return err
	}
	if b := s.Batching; b != nil && (b.MaxBatchSize < 0 || b.MaxQueueDelayMicros < 0) {
		return errors.New("dynamic_batching: sizes and delays must not be negative")
	}
	return runtime.ValidateProviders(s.Providers)
}

// Options configure a Manager.
type Options struct {
	Logger  *slog.Logger
	Metrics *metrics.Agent
	// Outputs, optional, counts responses with NaN or Inf outputs.
	Outputs *metrics.Outputs
	// ServerName and ServerVersion are reported by ServerMetadata.
	ServerName, ServerVersion string
}

// Manager holds the loaded model versions. It is safe for concurrent use.
type Manager struct {
	log     *slog.Logger
	metrics *metrics.Agent
	outputs *metrics.Outputs
	server  ServerMetadata
	ready   atomic.Bool

	mu     sync.RWMutex // guards models and the maps inside them
	models map[string]*model

	// degradedFns are called when a version falls back from its GPU to
	// the CPU (OnDegraded).
	degradedFns atomic.Pointer[[]func(name, version string)]
}

// OnDegraded registers fn to be called once per version when a run fails
// on its GPU session and the version is marked degraded (it serves on the
// CPU from then on). fn runs on the request's goroutine and must not
// block.
func (m *Manager) OnDegraded(fn func(name, version string)) {
	for {
		old := m.degradedFns.Load()
		var fns []func(name, version string)
		if old != nil {
			fns = append(fns, *old...)
		}
		fns = append(fns, fn)
		if m.degradedFns.CompareAndSwap(old, &fns) {
			return
		}
	}
}

type model struct {
	name     string
	settings Settings
	labels   map[string]string // set at run time; override settings.Labels
	versions map[string]*version
}

type version struct {
	name, version string
	sess          *runtime.Session
	slots         chan struct{}     // one token per instance
	batcher       *batching.Batcher // non-nil when dynamic batching is on
	waiting       atomic.Int64
	maxQueue      int64
	refs          sync.WaitGroup // requests holding the version
	meta          Metadata
	params        map[string]string
	loadedAt      time.Time
}

// NewManager returns an empty Manager; it reports ready once SetReady(true) is called.
func NewManager(opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ServerName == "" {
		opts.ServerName = "edgefleet"
	}
	return &Manager{
		log: opts.Logger, metrics: opts.Metrics, outputs: opts.Outputs, models: map[string]*model{},
		server: ServerMetadata{Name: opts.ServerName, Version: opts.ServerVersion,
			Extensions: []string{"binary_tensor_data", "model_repository"}},
	}
}

// SetReady marks the server ready (startup finished) or not (draining).
func (m *Manager) SetReady(r bool) { m.ready.Store(r) }

// Ready reports server readiness: started and every loaded model usable.
func (m *Manager) Ready() bool { return m.ready.Load() }

// ServerMetadata returns the server's name, version and protocol extensions.
func (m *Manager) ServerMetadata() ServerMetadata { return m.server }

// LoadRequest describes a model version to load.
type LoadRequest struct {
	Name, Version string
	Model         []byte
	Settings      Settings
	// Parameters are extra metadata facts (digest, source, ...) reported in
	// the model metadata's parameters.
	Parameters map[string]string
}

// Load creates the sessions for a model version and makes it servable. Other
// models keep serving while it loads. Loading a version that is already
// loaded replaces it once the new sessions are ready.
func (m *Manager) Load(ctx context.Context, req LoadRequest) error {
	if req.Name == "" || req.Version == "" {
		return fmt.Errorf("%w: model name and version are required", ErrInvalidInput)
	}
	s := req.Settings.withDefaults()
	if err := s.Validate(); err != nil {
		return fmt.Errorf("%w: model %s: %w", ErrInvalidInput, req.Name, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	start := time.Now()
	var sess *runtime.Session
	var err error
	lowPriority(func() {
		sess, err = runtime.NewSession(req.Model, runtime.Config{
			IntraOpThreads: s.IntraOpThreads, Providers: s.Providers, DeviceID: s.DeviceID,
			Logger: m.log.With("model", req.Name, "version", req.Version),
		})
		if err == nil {
			warmUp(sess, m.log.With("model", req.Name, "version", req.Version))
		}
	})
	if err != nil {
		return fmt.Errorf("loading model %s version %s: %w", req.Name, req.Version, err)
	}
	took := time.Since(start)
	v := &version{name: req.Name, version: req.Version, sess: sess, maxQueue: int64(s.MaxQueue),
		slots: make(chan struct{}, s.Instances), loadedAt: time.Now()}
	for range s.Instances {
		v.slots <- struct{}{}
	}
	if s.Batching != nil {
		if why := batchable(sess); why != "" {
			m.log.Warn("dynamic batching not enabled", "model", req.Name, "version", req.Version, "reason", why)
		} else {
			v.batcher = m.newBatcher(v, s)
		}
	}
	v.params = map[string]string{}
	maps.Copy(v.params, req.Parameters)
	v.params["execution_provider"] = sess.Provider()
	v.params["requested_execution_provider"] = sess.RequestedProvider()
	if r := sess.FallbackReason(); r != "" {
		v.params["fallback_reason"] = r
	}
	v.params["instances"] = strconv.Itoa(s.Instances)
	v.params["dynamic_batching"] = strconv.FormatBool(v.batcher != nil)
	v.params["intra_op_threads"] = strconv.Itoa(s.IntraOpThreads)
	v.params["load_seconds"] = strconv.FormatFloat(took.Seconds(), 'f', 4, 64)
	v.meta = Metadata{Name: req.Name, Platform: Platform,
		Inputs: specsOf(sess.Inputs()), Outputs: specsOf(sess.Outputs())}

	if mt := m.metrics; mt != nil {
		mt.LoadDuration.WithLabelValues(req.Name, req.Version, sess.Provider()).Observe(took.Seconds())
		mt.Provider.WithLabelValues(req.Name, req.Version, sess.Provider(), sess.RequestedProvider()).Set(1)
		if sess.Provider() != sess.RequestedProvider() {
			mt.Fallbacks.WithLabelValues(req.Name, req.Version, sess.RequestedProvider(), sess.Provider()).Inc()
		}
		mt.Degraded.WithLabelValues(req.Name, req.Version).Set(0)
	}

	m.mu.Lock()
	mod := m.models[req.Name]
	if mod == nil {
		mod = &model{name: req.Name, versions: map[string]*version{}}
		m.models[req.Name] = mod
	}
	mod.settings = req.Settings
	old := mod.versions[req.Version]
	mod.versions[req.Version] = v
	m.mu.Unlock()
	if old != nil {
		m.retire(old)
	}
	m.log.Info("model loaded", "model", req.Name, "version", req.Version, "provider", sess.Provider(),
		"fallback_reason", sess.FallbackReason(), "took", took)
	return nil
}

// Unload removes a model version (all versions when version is ""). Requests
// already running on it finish first; its sessions are then released.
func (m *Manager) Unload(name, ver string) error {
	m.mu.Lock()
	mod := m.models[name]
	if mod == nil {
		m.mu.Unlock()
		return fmt.Errorf("model %q: %w", name, ErrNotFound)
	}
	var gone []*version
	if ver == "" {
		for _, v := range mod.versions {
			gone = append(gone, v)
		}
		delete(m.models, name)
	} else {
		v := mod.versions[ver]
		if v == nil {
			m.mu.Unlock()
			return fmt.Errorf("model %q version %q: %w", name, ver, ErrNotFound)
		}
		gone = append(gone, v)
		delete(mod.versions, ver)
		if len(mod.versions) == 0 {
			delete(m.models, name)
		}
	}
	m.mu.Unlock()
	for _, v := range gone {
		m.retire(v)
	}
	return nil
}

// retire waits for the requests holding v and closes its sessions.
func (m *Manager) retire(v *version) {
	v.refs.Wait()
	if v.batcher != nil {
		v.batcher.Close()
	}
	if err := v.sess.Close(); err != nil {
		m.log.Warn("closing session", "model", v.name, "version", v.version, "err", err)
	}
	if mt := m.metrics; mt != nil {
		mt.Provider.DeletePartialMatch(map[string]string{"model": v.name, "version": v.version})
		mt.Degraded.DeleteLabelValues(v.name, v.version)
	}
	m.log.Info("model unloaded", "model", v.name, "version", v.version)
}

// Close unloads every model.
func (m *Manager) Close() {
	m.SetReady(false)
	for _, e := range m.Index() {
		_ = m.Unload(e.Name, "")
	}
}

// IndexEntry is one loaded model version.
type IndexEntry struct {
	Name, Version, State, Reason string
}

// Index lists loaded model versions, sorted by name and version.
func (m *Manager) Index() []IndexEntry {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []IndexEntry
	for _, mod := range m.models {
		for _, v := range mod.versions {
			out = append(out, IndexEntry{Name: mod.name, Version: v.version, State: "READY"})
		}
	}
	slices.SortFunc(out, func(a, b IndexEntry) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), CompareVersions(a.Version, b.Version))
	})
	return out
}

// CompareVersions orders version strings: numeric ones numerically and before
// non-numeric ones, which sort lexically.
func CompareVersions(a, b string) int {
	na, ea := strconv.ParseUint(a, 10, 64)
	nb, eb := strconv.ParseUint(b, 10, 64)
	switch {
	case ea == nil && eb == nil:
		return cmp.Compare(na, nb)
	case ea == nil:
		return -1
	case eb == nil:
		return 1
	}
	return cmp.Compare(a, b)
}

// lookup finds a version under the read lock; version "" is the default.
func (m *Manager) lookup(name, ver string) (*model, *version, error) {
	mod := m.models[name]
	if mod == nil {
		return nil, nil, fmt.Errorf("model %q: %w", name, ErrNotFound)
	}
	if ver == "" {
		ver = mod.defaultVersion()
	}
	v := mod.versions[ver]
	if v == nil {
		return nil, nil, fmt.Errorf("model %q version %q: %w", name, ver, ErrNotFound)
	}
	return mod, v, nil
}

func (mod *model) defaultVersion() string {
	if p := mod.settings.DefaultVersion; p != "" {
		if _, ok := mod.versions[p]; ok {
			return p
		}
	}
	best := ""
	for v := range mod.versions {
		if best == "" || CompareVersions(v, best) > 0 {
			best = v
		}
	}
	return best
}

func (mod *model) versionList() []string {
	vs := slices.Collect(maps.Keys(mod.versions))
	slices.SortFunc(vs, CompareVersions)
	return vs
}

// SetLabel points label at version of a loaded model ("" version removes the label).
func (m *Manager) SetLabel(name, label, ver string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	mod := m.models[name]
	if mod == nil {
		return fmt.Errorf("model %q: %w", name, ErrNotFound)
	}
	if ver == "" {
		delete(mod.labels, label)
		return nil
	}
	if _, ok := mod.versions[ver]; !ok {
		return fmt.Errorf("model %q version %q: %w", name, ver, ErrNotFound)
	}
	if mod.labels == nil {
		mod.labels = map[string]string{}
	}
	mod.labels[label] = ver
	return nil
}

// ResolveLabel returns the loaded version a label points to.
func (m *Manager) ResolveLabel(name, label string) (string, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	mod := m.models[name]
	if mod == nil {
		return "", fmt.Errorf("model %q: %w", name, ErrNotFound)
	}
	ver, ok := mod.labels[label]
	if !ok {
		ver, ok = mod.settings.Labels[label]
	}
	if !ok {
		return "", fmt.Errorf("model %q label %q: %w", name, label, ErrNotFound)
	}
	if _, loaded := mod.versions[ver]; !loaded {
		return "", fmt.Errorf("model %q label %q points to version %q, which is not loaded: %w", name, label, ver, ErrNotFound)
	}
	return ver, nil
}

// Labels returns a model's effective labels.
func (m *Manager) Labels(name string) map[string]string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	mod := m.models[name]
	if mod == nil {
		return nil
	}
	out := maps.Clone(mod.settings.Labels)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, mod.labels)
	return out
}

// ModelMetadata returns metadata of a model version ("" = default version).
func (m *Manager) ModelMetadata(name, ver string) (*Metadata, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	mod, v, err := m.lookup(name, ver)
	if err != nil {
		return nil, err
	}
	md := v.meta
	if ver == "" {
		md.Versions = mod.versionList()
	} else {
		md.Versions = []string{v.version}
	}
	md.Parameters = maps.Clone(v.params)
	md.Parameters["version"] = v.version
	if d, why := v.sess.Degraded(); d {
		md.Parameters["degraded"] = "true"
		md.Parameters["degraded_reason"] = why
		md.Parameters["execution_provider"] = runtime.ProviderCPU
	}
	return &md, nil
}

// ModelReady reports whether a model version is loaded and usable.
func (m *Manager) ModelReady(name, ver string) (bool, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	_, _, err := m.lookup(name, ver)
	if err != nil {
		return false, err
	}
	return true, nil
}

// Infer runs a request on a model version ("" = default version).
func (m *Manager) Infer(ctx context.Context, name, ver string, req *InferRequest) (*InferResponse, error) {
	m.mu.RLock()
	_, v, err := m.lookup(name, ver)
	if err == nil {
		v.refs.Add(1)
	}
	m.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	defer v.refs.Done()

	mt := m.metrics
	if mt != nil {
		g := mt.InFlight.WithLabelValues(v.name, v.version)
		g.Inc()
		defer g.Dec()
	}
	if v.batcher != nil {
		outs, err := v.batcher.Submit(ctx, &batching.Request{Inputs: req.Inputs, Outputs: req.Outputs})
		if err != nil {
			return nil, m.runError(name, v, err)
		}
		m.outputs.ObserveOutputs(v.name, v.version, outs)
		return &InferResponse{ModelName: v.name, ModelVersion: v.version, ID: req.ID, Outputs: outs}, nil
	}
	// Wait for an instance, within the queue bound.
	queued := time.Now()
	select {
	case <-v.slots:
	default:
		if v.waiting.Add(1) > v.maxQueue {
			v.waiting.Add(-1)
			return nil, fmt.Errorf("model %q version %q: %w: %d requests queued", name, v.version, ErrOverloaded, v.maxQueue)
		}
		select {
		case <-v.slots:
			v.waiting.Add(-1)
		case <-ctx.Done():
			v.waiting.Add(-1)
			return nil, fmt.Errorf("model %q version %q: waiting for an instance: %w", name, v.version, ctx.Err())
		}
	}
	defer func() { v.slots <- struct{}{} }()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if mt != nil {
		mt.QueueDuration.WithLabelValues(v.name, v.version).Observe(time.Since(queued).Seconds())
	}
	res, err := m.run(v, req.Inputs, req.Outputs)
	if err != nil {
		return nil, m.runError(name, v, err)
	}
	m.outputs.ObserveOutputs(v.name, v.version, res.Outputs)
	return &InferResponse{ModelName: v.name, ModelVersion: v.version, ID: req.ID, Outputs: res.Outputs}, nil
}

// run executes one session run and records compute time and fallbacks.
func (m *Manager) run(v *version, inputs []tensor.Tensor, outputs []string) (runtime.RunResult, error) {
	start := time.Now()
	res, err := v.sess.Run(inputs, outputs)
	if mt := m.metrics; mt != nil {
		mt.ComputeDuration.WithLabelValues(v.name, v.version, res.Provider).Observe(time.Since(start).Seconds())
		if res.FellBack {
			mt.Fallbacks.WithLabelValues(v.name, v.version, v.sess.RequestedProvider(), runtime.ProviderCPU).Inc()
			mt.Degraded.WithLabelValues(v.name, v.version).Set(1)
		}
	}
	if res.FellBack {
		if fns := m.degradedFns.Load(); fns != nil {
			for _, fn := range *fns {
				fn(v.name, v.version)
			}
		}
	}
	return res, err
}

// runError wraps a run failure for the front ends.
func (m *Manager) runError(name string, v *version, err error) error {
	switch {
	case errors.Is(err, runtime.ErrInvalidInput):
		return fmt.Errorf("model %q: %w: %w", name, ErrInvalidInput, err)
	case errors.Is(err, batching.ErrQueueFull):
		return fmt.Errorf("model %q version %q: %w: %w", name, v.version, ErrOverloaded, err)
	case errors.Is(err, batching.ErrClosed):
		return fmt.Errorf("model %q version %q: %w: %w", name, v.version, ErrUnavailable, err)
	}
	return fmt.Errorf("model %q version %q: %w", name, v.version, err)
}

// batchable explains why a session cannot be batched ("" when it can): every
// input and output needs a dynamic first dimension.
func batchable(s *runtime.Session) string {
	for _, io := range append(slices.Clone(s.Inputs()), s.Outputs()...) {
		if len(io.Shape) == 0 || io.Shape[0] != -1 {
			return fmt.Sprintf("%q has no dynamic batch dimension (shape %v)", io.Name, io.Shape)
		}
	}
	return ""
}

// newBatcher builds the dynamic batcher of a version: merged runs use the
// version's instances as workers.
func (m *Manager) newBatcher(v *version, s Settings) *batching.Batcher {
	b := s.Batching
	return batching.New(func(ctx context.Context, in []tensor.Tensor, outs []string) ([]tensor.Tensor, error) {
		res, err := m.run(v, in, outs)
		return res.Outputs, err
	}, batching.Options{
		MaxBatchSize:        b.MaxBatchSize,
		MaxQueueDelay:       time.Duration(b.MaxQueueDelayMicros) * time.Microsecond,
		PreferredBatchSizes: b.PreferredBatchSizes,
		MaxQueue:            max(s.MaxQueue, s.Instances),
		Workers:             s.Instances,
		Logger:              m.log.With("model", v.name, "version", v.version),
		ObserveBatch:        func(n int) { m.outputs.ObserveBatch(v.name, v.version, n) },
	})
}

// warmUp runs the model once on zero inputs (dynamic dimensions set to 1) so
// the first real request does not pay for lazy initialisation. Models that
// reject such inputs are simply not warmed.
func warmUp(s *runtime.Session, log *slog.Logger) {
	var ins []tensor.Tensor
	for _, in := range s.Inputs() {
		t := tensor.Tensor{Name: in.Name, DType: in.DType, Shape: make([]int64, len(in.Shape))}
		for i, d := range in.Shape {
			t.Shape[i] = max(d, 1)
		}
		n := t.NumElements()
		if in.DType == tensor.Bytes {
			t.Strings = make([][]byte, n)
		} else {
			t.Data = make([]byte, n*int64(in.DType.Size()))
		}
		ins = append(ins, t)
	}
	if _, err := s.Run(ins, nil); err != nil {
		log.Debug("warm-up run skipped", "err", err)
	}
}

func specsOf(in []runtime.IOSpec) []TensorSpec {
	out := make([]TensorSpec, len(in))
	for i, s := range in {
		out[i] = TensorSpec{Name: s.Name, DType: s.DType, Shape: s.Shape}
	}
	return out
}

// TestOnlyInjectGPUFault labels a loaded version's session as running on
// provider and fails its primary runs with fault (see
// runtime.TestOnlyInjectGPUFault), to test the runtime CPU fallback without a GPU.
func (m *Manager) TestOnlyInjectGPUFault(name, ver, provider string, fault func() error) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	_, v, err := m.lookup(name, ver)
	if err != nil {
		return err
	}
	runtime.TestOnlyInjectGPUFault(v.sess, provider, fault)
	return nil
}

// SetDefaultVersion pins the version that requests without one go to; the
// version must be loaded. An empty version removes the pin (latest wins).
// The switch is atomic: a request sees either the old or the new default.
func (m *Manager) SetDefaultVersion(name, ver string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	mod := m.models[name]
	if mod == nil {
		return fmt.Errorf("model %q: %w", name, ErrNotFound)
	}
	if ver != "" {
		if _, ok := mod.versions[ver]; !ok {
			return fmt.Errorf("model %q version %q: %w", name, ver, ErrNotFound)
		}
	}
	mod.settings.DefaultVersion = ver
	return nil
}
