package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/hub/registry"
	"github.com/edgefleet/edgefleet/hub/rollout"
	"github.com/edgefleet/edgefleet/hub/shadow"
	"github.com/edgefleet/edgefleet/hub/telemetry"
	"github.com/edgefleet/edgefleet/ota/wire"
)

//go:embed assets
var assets embed.FS

// Registry is the read side of the device registry; *registry.Registry
// implements it.
type Registry interface {
	List(ctx context.Context, sel registry.Selector) ([]registry.Device, error)
	Get(ctx context.Context, id string) (registry.Device, error)
	Desired(ctx context.Context, id string) (wire.DesiredState, error)
}

// Rollouts is the read side of the rollout manager; *rollout.Manager
// implements it.
type Rollouts interface {
	List(ctx context.Context) ([]rollout.Status, error)
	Get(ctx context.Context, id string, devices bool) (rollout.Status, error)
}

// Telemetry is the read side of the telemetry store; *telemetry.Store
// implements it.
type Telemetry interface {
	Overview(recent time.Duration) telemetry.Overview
	Devices() []telemetry.DeviceSummary
	Device(id string) (telemetry.DeviceSummary, bool)
	Window(id string, since time.Time, limit int) ([]telemetry.Entry, error)
	Series(model, version string, from, to time.Time) []telemetry.Point
	ModelVersions() []telemetry.ModelVersion
	Watch(ctx context.Context) <-chan telemetry.Update
}

// Events tells of device messages; *shadow.Service implements it.
type Events interface {
	Listen(fn func(shadow.Event))
}

// Defaults for the zero values of Config.
const (
	DefaultCoalesce    = time.Second
	DefaultRolloutPoll = time.Second
	DefaultKeepAlive   = 15 * time.Second
	// maxDeviceRows bounds /api/devices answers.
	maxDeviceRows = 1000
)

// Config wires a Server. Registry is required; without Rollouts or
// Telemetry their parts of the page stay empty.
type Config struct {
	Registry  Registry
	Rollouts  Rollouts
	Telemetry Telemetry
	// Events, optional, makes device messages refresh open pages.
	Events Events
	// Hosts are extra host names (besides IP addresses and localhost) a
	// request's Host header may carry, e.g. the name of a reverse proxy.
	Hosts []string
	// Coalesce is the shortest time between two change events
	// (DefaultCoalesce); RolloutPoll how often rollouts are compared while
	// a page is connected (DefaultRolloutPoll); KeepAlive how often an
	// idle event stream gets a comment (DefaultKeepAlive).
	Coalesce, RolloutPoll, KeepAlive time.Duration
	// Now is the clock for presence (time.Now).
	Now func() time.Time
	// Logger, optional.
	Logger *slog.Logger
}

// Server is the dashboard's http.Handler. Run drives its live updates.
type Server struct {
	cfg    Config
	log    *slog.Logger
	mux    *http.ServeMux
	static http.Handler
	hosts  map[string]bool
	events *broker
}

// New builds the dashboard. It registers a listener on cfg.Events at once;
// call Run to deliver live updates.
func New(cfg Config) (*Server, error) {
	if cfg.Registry == nil {
		return nil, errors.New("dashboard: Registry required")
	}
	if cfg.Coalesce <= 0 {
		cfg.Coalesce = DefaultCoalesce
	}
	if cfg.RolloutPoll <= 0 {
		cfg.RolloutPoll = DefaultRolloutPoll
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = DefaultKeepAlive
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, mux: http.NewServeMux(), static: http.FileServerFS(sub),
		hosts: map[string]bool{"localhost": true}, events: newBroker()}
	for _, h := range cfg.Hosts {
		s.hosts[strings.ToLower(h)] = true
	}
	if cfg.Events != nil {
		cfg.Events.Listen(s.onDeviceEvent)
	}
	s.mux.HandleFunc("GET /{$}", s.page)
	s.mux.Handle("GET /assets/", http.StripPrefix("/assets", s.static))
	s.mux.HandleFunc("GET /api/overview", s.overview)
	s.mux.HandleFunc("GET /api/devices", s.devices)
	s.mux.HandleFunc("GET /api/devices/{id}", s.device)
	s.mux.HandleFunc("GET /api/rollouts", s.rollouts)
	s.mux.HandleFunc("GET /api/rollouts/{id}", s.rollout)
	s.mux.HandleFunc("GET /api/models", s.models)
	s.mux.HandleFunc("GET /api/events", s.stream)
	return s, nil
}

// csp allows only the page's own script, style, data and images.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// ServeHTTP serves the dashboard: GET and HEAD only, from allowed hosts.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, errors.New("the dashboard is read-only"))
		return
	}
	if !s.hostAllowed(r.Host) {
		writeError(w, http.StatusMisdirectedRequest, errors.New("host not allowed; open the dashboard by IP address or localhost, or add the name to the hub's dashboard hosts"))
		return
	}
	s.mux.ServeHTTP(w, r)
}

// hostAllowed accepts IP literals, localhost and the configured names.
func (s *Server) hostAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if host == "" {
		return false
	}
	if net.ParseIP(host) != nil {
		return true
	}
	return s.hosts[strings.ToLower(host)]
}

func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-cache")
	b, err := assets.ReadFile("assets/index.html")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(b)
}

// Run delivers live updates to connected pages until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	var updates <-chan telemetry.Update
	if s.cfg.Telemetry != nil {
		updates = s.cfg.Telemetry.Watch(ctx)
	}
	coalesce := time.NewTicker(s.cfg.Coalesce)
	defer coalesce.Stop()
	poll := time.NewTicker(s.cfg.RolloutPoll)
	defer poll.Stop()
	var lastRollouts string
	for {
		select {
		case <-ctx.Done():
			s.events.close()
			return nil
		case u, ok := <-updates:
			if !ok {
				updates = nil
				continue
			}
			s.events.mark(func(c *change) { c.addTelemetry(u.Device) })
		case <-poll.C:
			if s.cfg.Rollouts == nil || s.events.clients() == 0 {
				lastRollouts = ""
				continue
			}
			fp := s.rolloutFingerprint(ctx)
			if lastRollouts != "" && fp != lastRollouts {
				s.events.mark(func(c *change) { c.Rollouts = true })
			}
			lastRollouts = fp
		case <-coalesce.C:
			s.events.flush()
		}
	}
}

// rolloutFingerprint summarises what the rollouts page shows, so a change
// can be told.
func (s *Server) rolloutFingerprint(ctx context.Context) string {
	list, err := s.cfg.Rollouts.List(ctx)
	if err != nil {
		return ""
	}
	type fp struct {
		ID, State, Reason string
		Wave              int
		Settled           time.Time
		Counts            rollout.Counts
		Waves             []rollout.WaveStatus
		Gates             []rollout.GateStatus
	}
	out := make([]fp, 0, len(list))
	for _, r := range list {
		out = append(out, fp{r.ID, r.State, r.Reason, r.Wave, r.Settled, r.Counts, r.Waves, r.Gates})
	}
	b, _ := json.Marshal(out)
	return string(b)
}

func (s *Server) onDeviceEvent(e shadow.Event) {
	// Heartbeats move only last-seen times (a large fleet sends thousands
	// a second); presence changes and reports are what pages show.
	if e.Kind == shadow.EventHeartbeat {
		return
	}
	s.events.mark(func(c *change) { c.addDevice(e.DeviceID) })
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, registry.ErrNotFound), errors.Is(err, rollout.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, wire.ErrInvalid), errors.Is(err, errBadParam):
		code = http.StatusBadRequest
	case errors.Is(err, context.Canceled):
		return
	}
	if code >= 500 {
		s.log.Error("dashboard request failed", "path", r.URL.Path, "err", err)
	}
	writeError(w, code, err)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(wire.Error{Error: err.Error()})
}

var _ http.Handler = (*Server)(nil)
