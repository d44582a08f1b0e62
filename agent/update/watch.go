package update

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/tensor"
	"github.com/edgefleet/edgefleet/ota/artifact"
)

// Observed is the model manager as the protocol front ends see it, with
// every inference observed for the post-activation watch. All other methods
// are the manager's.
type Observed struct {
	*models.Manager
	obs *observer
}

// Observe wraps the manager; the agent hands the result to its REST and gRPC
// servers instead of the manager itself.
func (u *Updater) Observe(m *models.Manager) *Observed { return &Observed{Manager: m, obs: u.obs} }

// Infer runs the request on the manager and records its outcome.
func (o *Observed) Infer(ctx context.Context, name, version string, req *models.InferRequest) (*models.InferResponse, error) {
	start := time.Now()
	resp, err := o.Manager.Infer(ctx, name, version, req)
	o.obs.observe(name, version, resp, err, time.Since(start))
	return resp, err
}

// ringSize is how many recent latencies a version keeps for its p99.
const ringSize = 1024

// minLatencySamples is the fewest latencies on each side for a p99
// comparison: with fewer, a p99 is a single cold-start outlier.
const minLatencySamples = 100

// stats are one model version's live counters. Latencies go to a ring of the
// most recent ringSize requests.
type stats struct {
	requests, errors, nonFinite atomic.Int64
	n                           atomic.Int64 // latencies recorded
	lat                         [ringSize]atomic.Int64
}

// snapshot is a copy of stats at one moment.
type snapshot struct {
	Requests, Errors, NonFinite int64
	// P99 is over Samples recent latencies.
	P99     time.Duration
	Samples int
	n       int64 // latencies recorded when taken
	lat     []int64
}

// since returns the counters accumulated after start was taken, with the
// p99 over the latencies recorded since then.
func (s snapshot) since(start snapshot) snapshot {
	out := snapshot{Requests: s.Requests - start.Requests, Errors: s.Errors - start.Errors,
		NonFinite: s.NonFinite - start.NonFinite, n: s.n}
	fresh := min(int(s.n-start.n), len(s.lat))
	if fresh > 0 {
		out.lat = s.lat[len(s.lat)-fresh:]
		out.Samples = fresh
		out.P99 = p99(out.lat)
	}
	return out
}

func p99(lat []int64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	i := int(math.Ceil(0.99*float64(len(s)))) - 1
	return time.Duration(s[max(i, 0)])
}

// observer holds the stats of every model version served since start.
type observer struct {
	mu       sync.RWMutex               // guards versions, defaults, watched
	versions map[string]*stats          // "model\x00version"
	defaults map[string]string          // model → default version, for errors of requests without a version
	watched  map[string]chan<- struct{} // "model\x00version" under watch → its wake-up channel
	// always checks every response for NaN/Inf, not only watched ones.
	always atomic.Bool
}

func newObserver() *observer {
	return &observer{versions: map[string]*stats{}, defaults: map[string]string{}, watched: map[string]chan<- struct{}{}}
}

func key(model, version string) string { return model + "\x00" + version }

func (o *observer) get(model, version string) *stats {
	k := key(model, version)
	o.mu.RLock()
	s := o.versions[k]
	o.mu.RUnlock()
	if s != nil {
		return s
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if s = o.versions[k]; s == nil {
		s = &stats{}
		o.versions[k] = s
	}
	return s
}

func (o *observer) setDefault(model, version string) {
	o.mu.Lock()
	o.defaults[model] = version
	o.mu.Unlock()
}

func (o *observer) watch(model, version string, wake chan<- struct{}) {
	o.mu.Lock()
	o.watched[key(model, version)] = wake
	o.mu.Unlock()
}

func (o *observer) unwatch(model, version string, wake chan<- struct{}) {
	o.mu.Lock()
	if o.watched[key(model, version)] == wake {
		delete(o.watched, key(model, version))
	}
	o.mu.Unlock()
}

// serverError reports whether err is the model's or the server's fault, not
// the client's (bad input, unknown model, overload, cancellation).
func serverError(err error) bool {
	for _, e := range []error{models.ErrInvalidInput, models.ErrNotFound, models.ErrOverloaded, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, e) {
			return false
		}
	}
	return true
}

func (o *observer) observe(model, version string, resp *models.InferResponse, err error, d time.Duration) {
	if err != nil && !serverError(err) {
		return
	}
	if resp != nil {
		version = resp.ModelVersion
	}
	o.mu.RLock()
	if version == "" {
		version = o.defaults[model]
	}
	wake, watched := o.watched[key(model, version)]
	o.mu.RUnlock()
	if version == "" {
		return
	}
	s := o.get(model, version)
	s.requests.Add(1)
	bad := false
	if err != nil {
		s.errors.Add(1)
		bad = true
	} else {
		i := s.n.Add(1) - 1
		s.lat[i%ringSize].Store(int64(d))
		if (watched || o.always.Load()) && tensor.HasNonFinite(resp.Outputs) {
			s.nonFinite.Add(1)
			bad = true
		}
	}
	if bad && watched {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
}

func (o *observer) snapshot(model, version string) snapshot {
	if version == "" {
		return snapshot{}
	}
	s := o.get(model, version)
	out := snapshot{Requests: s.requests.Load(), Errors: s.errors.Load(), NonFinite: s.nonFinite.Load()}
	n := s.n.Load()
	k := min(n, ringSize)
	out.lat = make([]int64, 0, k)
	for i := n - k; i < n; i++ { // oldest first
		out.lat = append(out.lat, s.lat[i%ringSize].Load())
	}
	out.n, out.Samples, out.P99 = n, len(out.lat), p99(out.lat)
	return out
}

// health is what the watch judges a version by.
type health struct {
	cur, base snapshot
	// degraded is set when the version fell back from a GPU at run time.
	degraded string
	// loadFallback is set when the version loaded on the CPU although it
	// asked for a GPU on which the previous version ran.
	loadFallback string
}

// evaluate returns why the watched version breaches th, or "".
func evaluate(th config.Watch, h health) string {
	c := h.cur
	if !th.AllowFallback {
		if h.degraded != "" {
			return "execution provider fell back from GPU to CPU at run time: " + h.degraded
		}
		if h.loadFallback != "" {
			return "execution provider fell back from GPU to CPU: " + h.loadFallback
		}
	}
	enough := c.Requests >= int64(th.MinRequests)
	if c.NonFinite > 0 && th.MaxNonFiniteRate < 1 {
		rate := float64(c.NonFinite) / float64(max(c.Requests, 1))
		if th.MaxNonFiniteRate == 0 || enough && rate > th.MaxNonFiniteRate {
			return fmt.Sprintf("NaN/Inf outputs in %d of %d responses (%.2f%%, limit %.2f%%)",
				c.NonFinite, c.Requests, 100*rate, 100*th.MaxNonFiniteRate)
		}
	}
	if enough && c.Errors > 0 && th.MaxErrorRate < 1 {
		if rate := float64(c.Errors) / float64(c.Requests); rate > th.MaxErrorRate {
			return fmt.Sprintf("error rate %.2f%% (%d of %d requests), limit %.2f%%", 100*rate, c.Errors, c.Requests, 100*th.MaxErrorRate)
		}
	}
	need := max(th.MinRequests, minLatencySamples)
	if th.MaxP99Ratio > 0 && c.Samples >= need && h.base.Samples >= need && h.base.P99 > 0 {
		if ratio := float64(c.P99) / float64(h.base.P99); ratio > th.MaxP99Ratio {
			return fmt.Sprintf("p99 latency %v is %.1f× the previous version's %v (limit %.1f×)", c.P99, ratio, h.base.P99, th.MaxP99Ratio)
		}
	}
	return ""
}

// watchRun is one running post-activation watch.
type watchRun struct {
	version  string
	start    snapshot // the version's counters at activation
	baseline snapshot // the previous version's, before the switch
	cancel   context.CancelFunc
}

// startWatch watches version of model until until, rolling back to previous
// on a breach. It replaces a watch already running for the model.
func (u *Updater) startWatch(model, version, previous string, until time.Time, baseline snapshot, prevProvider string) {
	th := u.cfg.WatchFor(model)
	ctx, cancel := context.WithCancel(u.ctx)
	w := &watchRun{version: version, start: u.obs.snapshot(model, version), baseline: baseline, cancel: cancel}
	wake := make(chan struct{}, 1)
	u.mu.Lock()
	if old := u.watches[model]; old != nil {
		old.cancel()
	}
	u.watches[model] = w
	u.mu.Unlock()
	u.obs.watch(model, version, wake)
	log := u.log.With("model", model, "version", version, "previous", previous)
	log.Info("post-activation watch started", "until", until, "thresholds", fmt.Sprintf("%+v", th))
	u.wg.Go(func() {
		defer func() {
			u.obs.unwatch(model, version, wake)
			u.mu.Lock()
			if u.watches[model] == w {
				delete(u.watches, model)
			}
			u.mu.Unlock()
		}()
		tick := time.NewTicker(th.Interval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			case <-wake:
			}
			h := health{cur: u.obs.snapshot(model, version).since(w.start), base: w.baseline}
			if md, err := u.models.ModelMetadata(model, version); err == nil {
				p := md.Parameters
				if p["degraded"] == "true" {
					h.degraded = p["degraded_reason"]
				}
				if p["execution_provider"] == runtime.ProviderCPU && p["requested_execution_provider"] != runtime.ProviderCPU &&
					prevProvider != "" && prevProvider != runtime.ProviderCPU {
					h.loadFallback = fmt.Sprintf("requested %s, runs on cpu (previous version ran on %s): %s",
						p["requested_execution_provider"], prevProvider, p["fallback_reason"])
				}
			}
			if why := evaluate(th, h); why != "" {
				log.Error("post-activation watch breached; rolling back", "reason", why)
				u.breach(ctx, model, version, why)
				return
			}
			if !u.now().Before(until) {
				log.Info("post-activation watch passed", "requests", h.cur.Requests, "errors", h.cur.Errors, "p99", h.cur.P99)
				if err := u.cache.SetModelStates(context.Background(), model, map[string]string{keyWatch: "", keyWatchUntil: "",
					keyLastResult: ResultHealthy, keyLastTime: u.now().UTC().Format(time.RFC3339)}); err != nil {
					log.Warn("recording the passed watch", "err", err)
				}
				u.notify(Change{Model: model, Kind: ChangeWatchPassed, Version: version})
				return
			}
		}
	})
}

// breach rolls a watched version back, waiting for an update of the model in
// progress to finish first (which may supersede the watch).
func (u *Updater) breach(ctx context.Context, model, version, why string) {
	var unlock func()
	for {
		var ok bool
		if unlock, ok = u.lockModel(model); ok {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
	res, err := u.rollback(context.Background(), model, version, "post-activation watch: "+why, true)
	unlock()
	if err != nil {
		u.log.Error("automatic rollback failed", "model", model, "version", version, "err", err)
	}
	if res != nil || err != nil {
		// Also a failed rollback changed what the device runs or
		// reports: the hub hears of it now, not at the next report.
		u.notify(Change{Model: model, Kind: ChangeRolledBack, Version: version})
	}
}

// stopWatch ends a model's watch without a verdict.
func (u *Updater) stopWatch(model string) {
	u.mu.Lock()
	w := u.watches[model]
	delete(u.watches, model)
	u.mu.Unlock()
	if w != nil {
		w.cancel()
	}
}

// Golden checks.

// checkGolden runs g's inputs through run and compares the outputs.
func checkGolden(g *artifact.Golden, run func(*models.InferRequest) (*models.InferResponse, error)) error {
	if g == nil {
		return nil
	}
	req := &models.InferRequest{ID: "golden"}
	for _, in := range g.Inputs {
		t, err := goldenTensor(in)
		if err != nil {
			return err
		}
		req.Inputs = append(req.Inputs, t)
	}
	for _, out := range g.Outputs {
		req.Outputs = append(req.Outputs, out.Name)
	}
	resp, err := run(req)
	if err != nil {
		return fmt.Errorf("golden vector: the model failed on its inputs: %w", err)
	}
	got := map[string]tensor.Tensor{}
	for _, t := range resp.Outputs {
		got[t.Name] = t
	}
	for i := range g.Outputs {
		want := &g.Outputs[i]
		t, ok := got[want.Name]
		if !ok {
			return fmt.Errorf("golden vector: output %q missing", want.Name)
		}
		if !slices.Equal(t.Shape, want.Shape) {
			return fmt.Errorf("golden vector: output %q has shape %v, want %v", want.Name, t.Shape, want.Shape)
		}
		data := t.Data
		if t.DType == tensor.Bytes {
			data = artifact.JoinBytes(t.Strings)
		}
		if err := g.Tolerance.Compare(want, data); err != nil {
			return fmt.Errorf("golden vector mismatch: %w", err)
		}
	}
	return nil
}

func goldenTensor(g artifact.GoldenTensor) (tensor.Tensor, error) {
	dt, err := tensor.ParseDType(g.Datatype)
	if err != nil {
		return tensor.Tensor{}, err
	}
	t := tensor.Tensor{Name: g.Name, DType: dt, Shape: g.Shape}
	if dt == tensor.Bytes {
		if t.Strings, err = artifact.SplitBytes(g.Data); err != nil {
			return t, fmt.Errorf("golden input %q: %w", g.Name, err)
		}
	} else {
		t.Data = g.Data
	}
	return t, nil
}

// goldenOnSession checks g on a private session of the model (for a model
// that is not served yet).
func goldenOnSession(model []byte, s models.Settings, g *artifact.Golden) error {
	if g == nil {
		return nil
	}
	sess, err := newSession(model, s)
	if err != nil {
		return fmt.Errorf("creating the session: %w", err)
	}
	defer sess.Close()
	return checkGolden(g, func(req *models.InferRequest) (*models.InferResponse, error) {
		res, err := sess.Run(req.Inputs, req.Outputs)
		if err != nil {
			return nil, err
		}
		return &models.InferResponse{Outputs: res.Outputs}, nil
	})
}

func newSession(model []byte, s models.Settings) (*runtime.Session, error) {
	return runtime.NewSession(model, runtime.Config{IntraOpThreads: max(s.IntraOpThreads, 1), Providers: s.Providers, DeviceID: s.DeviceID})
}
