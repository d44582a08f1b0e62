// Package agent is the edgefleet agent daemon: it opens the model cache,
// loads the cached models into onnxruntime and serves them over the Open
// Inference Protocol (REST and gRPC) with Prometheus metrics.
package agent

import (
	"context"
	"errors"
	"fmt"
	"github.com/edgefleet/edgefleet/deploy/systemd/sdnotify"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/edgefleet/edgefleet/agent/cache"
	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/agent/fleet"
	"github.com/edgefleet/edgefleet/agent/grpcapi"
	"github.com/edgefleet/edgefleet/agent/httpapi"
	"github.com/edgefleet/edgefleet/agent/metrics"
	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/telemetry"
	"github.com/edgefleet/edgefleet/agent/tfserving"
	"github.com/edgefleet/edgefleet/agent/update"

	"github.com/edgefleet/edgefleet/ota/durable"
)

// Version is the agent version, set at build time with -ldflags.
var Version = "0.1.0-dev"

// CacheFile is the name of the bbolt cache file inside the data folder.
const CacheFile = "cache.db"

// Agent is a configured agent. Create it with New, then call Run.
type Agent struct {
	cfg     config.Config
	log     *slog.Logger
	reg     *prometheus.Registry
	metrics *metrics.Agent
	outputs *metrics.Outputs // NaN/Inf outputs and batch sizes
	cache   *cache.Cache
	models  *models.Manager
	handler http.Handler
	grpc    *grpc.Server
	grpcAPI *grpcapi.Server
	updater *update.Updater      // over-the-air updates; /v1/updates
	tel     *telemetry.Telemetry // nil when telemetry is disabled

	repoMu sync.Mutex // serialises repository changes (load, unload, policy)

	ortOnce sync.Once
	ortErr  error

	mu        sync.Mutex // guards listeners
	listeners map[string]net.Addr
	loadErrs  map[string]string // "name\x00version" → why the version failed to load
	ready     chan struct{}
}

// New validates cfg, loads onnxruntime and opens the cache. Nothing is served
// until Run.
func New(cfg config.Config, log *slog.Logger) (*Agent, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	// onnxruntime is loaded with the first model (an agent with an empty
	// cache stays small); a missing library is still reported at once.
	if _, err := runtime.FindLibrary(cfg.ORTLib); err != nil {
		return nil, err
	}
	if err := durable.MkdirAll(cfg.Data, 0o750); err != nil {
		return nil, fmt.Errorf("creating data folder: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.New(reg)
	a := &Agent{cfg: cfg, log: log, reg: reg, metrics: m, listeners: map[string]net.Addr{}, loadErrs: map[string]string{}, ready: make(chan struct{})}
	var err error
	a.cache, err = cache.Open(filepath.Join(cfg.Data, CacheFile), cache.Options{
		Budget: int64(cfg.CacheBudget), Logger: log.With("component", "cache"),
	})
	if err != nil {
		return nil, err
	}
	a.outputs = metrics.NewOutputs(reg)
	a.models = models.NewManager(models.Options{Logger: log.With("component", "models"), Metrics: m,
		Outputs: a.outputs, ServerName: "edgefleet", ServerVersion: Version})
	a.updater, err = update.New(update.Options{Cache: a.cache, Models: a.models, Load: a.loadVersionWith,
		InitRuntime: a.initRuntime, Settings: a.cfg.ModelSettings, Lock: &a.repoMu, Reconcile: a.applyPolicy,
		Config: cfg.Update, AgentVersion: Version, Logger: log.With("component", "update")})
	if err != nil {
		a.cache.Close()
		return nil, err
	}
	if !cfg.Telemetry.Disabled {
		a.tel, err = telemetry.New(telemetry.Options{Dir: cfg.Data, Gatherer: reg, Interval: cfg.Telemetry.Interval,
			Budget: int64(cfg.Telemetry.Budget), Transport: cfg.Telemetry.Transport, NoFallback: cfg.Telemetry.NoFallback,
			Logger: log.With("component", "telemetry")})
		if err != nil {
			a.updater.Close()
			a.cache.Close()
			return nil, err
		}
		reg.MustRegister(a.tel)
	}
	served := a.updater.Observe(a.models) // the front ends' backend: the manager, observed for update watches
	api := httpapi.New(served, httpapi.Options{Metrics: m, Logger: log.With("component", "rest"),
		MaxBodyBytes: int64(cfg.MaxBodyBytes), Repository: apiRepository{a},
		NonFiniteAsStrings: cfg.JSONNonFinite == config.JSONNonFiniteStrings})
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.Handle("/v1/updates", a.updater.Handler())
	mux.Handle("/v1/updates/", a.updater.Handler())
	mux.Handle("/v1/models/", tfserving.New(served, tfserving.Options{Metrics: m,
		Logger: log.With("component", "tfserving"), MaxBodyBytes: int64(cfg.MaxBodyBytes)}))
	mux.Handle("/", api)
	a.handler = mux
	a.grpc, a.grpcAPI = grpcapi.NewGRPCServer(served, grpcapi.Options{Metrics: m,
		Logger: log.With("component", "grpc"), MaxRecvMsgSize: int(cfg.MaxBodyBytes), Repository: apiRepository{a}})
	return a, nil
}

// Updater returns the agent's over-the-air updater.
func (a *Agent) Updater() *update.Updater { return a.updater }

// Telemetry returns the agent's telemetry, nil when it is disabled.
func (a *Agent) Telemetry() *telemetry.Telemetry { return a.tel }

// AttachFleet ships the agent's telemetry to the hub of an enrolled fleet
// client: over its MQTT connection, or over QUIC when so configured. It
// does nothing when telemetry is disabled.
func (a *Agent) AttachFleet(c *fleet.Client) error {
	if a.tel == nil {
		return nil
	}
	up, err := telemetry.FleetUplink(c, a.cfg.Telemetry.QUIC)
	if err != nil {
		return err
	}
	return a.tel.Attach(up)
}

// Models returns the agent's model manager.
func (a *Agent) Models() *models.Manager { return a.models }

// Handler returns the agent's HTTP handler (REST API and /metrics).
func (a *Agent) Handler() http.Handler { return a.handler }

// Ready is closed once Run has loaded the cached models and is listening
// (start models may still be installing: /v2/health/ready says when they
// are warm).
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// Addr returns the bound address of a listener ("http", "grpc", "unix") once Ready.
func (a *Agent) Addr(name string) net.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.listeners[name]
}

// LoadCached serves, for every cached model, the versions its version policy
// selects (by default the latest) plus its active version. A model that fails
// to load is logged and skipped; the others are served.
func (a *Agent) LoadCached(ctx context.Context) error {
	recs, err := a.cache.Models()
	if err != nil {
		return fmt.Errorf("listing cached models: %w", err)
	}
	var errs []error
	a.repoMu.Lock()
	defer a.repoMu.Unlock()
	for _, r := range recs {
		if err := a.applyPolicy(ctx, r.Name); err != nil {
			a.log.Error("model not loaded", "model", r.Name, "err", err)
			errs = append(errs, err)
		}
	}
	a.updateCacheMetrics()
	return errors.Join(errs...)
}

func (a *Agent) loadVersionWith(ctx context.Context, name, ver string, settings models.Settings) error {
	if err := a.initRuntime(); err != nil {
		return err
	}
	rec, err := a.cache.Version(name, ver)
	if err != nil {
		return err
	}
	blob, err := a.cache.ReadBlob(ctx, rec.Digest)
	if err != nil {
		return fmt.Errorf("reading model %s version %s: %w", name, ver, err)
	}
	params := map[string]string{"digest": rec.Digest, "size": fmt.Sprint(rec.Size)}
	if rec.Source != "" {
		params["source"] = rec.Source
	}
	if p := rec.Meta["precision"]; p != "" { // recorded by agent/update for versions installed over the air
		params["precision"] = p
	}
	return a.models.Load(ctx, models.LoadRequest{Name: name, Version: ver, Model: blob,
		Settings: settings, Parameters: params})
}

// initRuntime loads onnxruntime once.
func (a *Agent) initRuntime() error {
	a.ortOnce.Do(func() {
		var lib string
		lib, a.ortErr = runtime.Init(a.cfg.ORTLib)
		if a.ortErr == nil {
			a.log.Info("onnxruntime loaded", "library", lib, "version", runtime.Version())
		}
	})
	return a.ortErr
}

func (a *Agent) updateCacheMetrics() {
	blobs, err := a.cache.Blobs()
	if err != nil {
		return
	}
	var total int64
	for _, b := range blobs {
		total += b.Size
	}
	a.metrics.CacheBytes.Set(float64(total))
	a.metrics.CacheBlobs.Set(float64(len(blobs)))
}

// Run loads the cached models, serves until ctx is done, then drains:
// readiness turns false, listeners stop accepting, in-flight requests finish
// (up to DrainTimeout) and the cache is closed.
func (a *Agent) Run(ctx context.Context) error {
	defer a.cache.Close()
	if a.tel != nil {
		defer a.tel.Close()
	}
	if err := a.updater.Recover(ctx); err != nil {
		a.log.Error("recovering interrupted updates", "err", err)
	}
	if err := a.LoadCached(ctx); err != nil {
		a.log.Warn("some cached models failed to load; serving the others", "err", err)
	}
	var servers []*httpapi.Listener
	errc := make(chan error, 4)
	serveHTTP := func(name, network, addr string, h http.Handler) error {
		if network == "unix" {
			_ = os.Remove(addr)
		}
		ln, err := net.Listen(network, addr)
		if err != nil {
			return fmt.Errorf("listening for %s on %s: %w", name, addr, err)
		}
		if network == "unix" && a.cfg.UnixMode != 0 {
			if err := os.Chmod(addr, a.cfg.UnixMode.Perm()); err != nil {
				_ = ln.Close()
				return fmt.Errorf("socket %s: %w", addr, err)
			}
		}
		srv := httpapi.NewListener(h, httpapi.ListenerOptions{Logger: a.log})
		servers = append(servers, srv)
		a.setAddr(name, ln.Addr())
		a.log.Info("serving REST", "listener", name, "addr", ln.Addr().String())
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
		return nil
	}
	stopAll := func() {
		for _, s := range servers {
			_ = s.Close()
		}
	}
	if a.cfg.HTTP != "off" {
		if err := serveHTTP("http", "tcp", a.cfg.HTTP, a.handler); err != nil {
			return err
		}
	}
	if a.cfg.Unix != "" {
		if err := serveHTTP("unix", "unix", a.cfg.Unix, a.handler); err != nil {
			stopAll()
			return err
		}
	}
	if a.cfg.Health != "" {
		if err := serveHTTP("health", "tcp", a.cfg.Health, healthOnly(a.handler)); err != nil {
			stopAll()
			return err
		}
	}
	if a.cfg.GRPC != "off" {
		ln, err := net.Listen("tcp", a.cfg.GRPC)
		if err != nil {
			stopAll()
			return fmt.Errorf("listening for gRPC on %s: %w", a.cfg.GRPC, err)
		}
		a.setAddr("grpc", ln.Addr())
		a.log.Info("serving gRPC", "addr", ln.Addr().String())
		go func() {
			if err := a.grpc.Serve(ln); err != nil {
				errc <- fmt.Errorf("grpc: %w", err)
			}
		}()
	}
	// With start models the agent reports ready only once every one is warm
	// (a pod's startup probe holds its application back until then).
	var startDone chan error
	if len(a.cfg.StartModels) == 0 {
		a.models.SetReady(true)
		a.grpcAPI.SyncHealth()
	}
	close(a.ready)
	sdnotify.Notify(a.log, readyStatus(len(a.models.Index())))
	a.updater.Start(ctx)
	if len(a.cfg.StartModels) > 0 {
		startDone = make(chan error, 1)
		go func() { startDone <- a.installStartModels(ctx) }()
	}
	// Telemetry outlives the drain below, so its last snapshot counts
	// the last requests.
	telCtx, stopTel := context.WithCancel(context.WithoutCancel(ctx))
	defer stopTel()
	telDone := make(chan struct{})
	go func() {
		defer close(telDone)
		if a.tel != nil {
			a.tel.Run(telCtx)
		}
	}()
	healthCtx, stopHealth := context.WithCancel(context.Background())
	defer stopHealth()
	go a.grpcAPI.WatchHealth(healthCtx, time.Second)

	wdog, stopWdog := sdnotify.WatchdogTicker(a.log)
	defer stopWdog()
	var runErr error
serve:
	for {
		select {
		case <-ctx.Done():
			break serve
		case runErr = <-errc:
			break serve
		case <-wdog:
			a.models.Index() // takes the manager's lock: a wedged manager starves the watchdog
			sdnotify.Notify(a.log, sdnotify.Watchdog)
		case err := <-startDone:
			startDone = nil
			if err != nil {
				if ctx.Err() == nil {
					runErr = err
				}
				break serve
			}
			a.models.SetReady(true)
			a.grpcAPI.SyncHealth()
		}
	}
	sdnotify.Notify(a.log, sdnotify.Stopping)
	a.log.Info("draining", "timeout", a.cfg.DrainTimeout)
	a.models.SetReady(false)
	a.grpcAPI.Shutdown()
	drainCtx, cancel := context.WithTimeout(context.Background(), a.cfg.DrainTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Go(func() {
			if err := s.Shutdown(drainCtx); err != nil {
				a.log.Warn("REST drain incomplete", "err", err)
				_ = s.Close()
			}
		})
	}
	wg.Go(func() {
		done := make(chan struct{})
		go func() { a.grpc.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-drainCtx.Done():
			a.log.Warn("gRPC drain incomplete")
			a.grpc.Stop()
		}
	})
	wg.Wait()
	stopTel()
	<-telDone
	a.updater.Close()
	a.models.Close()
	if a.cfg.Unix != "" {
		_ = os.Remove(a.cfg.Unix)
	}
	a.log.Info("stopped")
	return runErr
}

func (a *Agent) setAddr(name string, addr net.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.listeners[name] = addr
}
