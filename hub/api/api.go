// Package api is the hub's REST API (JSON over HTTPS), documented in
// openapi.yaml, and a Go client for it.
//
// # Authentication
//
// Mutual TLS with certificates from the hub's CA decides who calls:
//
//   - admin endpoints (devices, tokens) need the admin certificate
//     (common name ca.AdminIdentity) that the hub writes into its data
//     folder at first start (admin.crt, admin.key); the CLI uses it;
//   - device endpoints (/v1/self/...) need a current, not revoked device
//     certificate;
//   - /v1/health and /v1/enroll need none (enrollment is authorized by its
//     bootstrap token).
//
// Errors are {"error": "..."} with a 4xx status for the caller's mistakes.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/edgefleet/edgefleet/hub/ca"
	"github.com/edgefleet/edgefleet/hub/enroll"
	"github.com/edgefleet/edgefleet/hub/registry"
	"github.com/edgefleet/edgefleet/hub/rollout"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// maxBody bounds request bodies.
const maxBody = 1 << 20

// Registry is the read side of the device registry and certificate checks;
// *registry.Registry implements it.
type Registry interface {
	List(ctx context.Context, sel registry.Selector) ([]registry.Device, error)
	Get(ctx context.Context, id string) (registry.Device, error)
	SetLabels(ctx context.Context, id string, labels map[string]string) (registry.Device, error)
	Desired(ctx context.Context, id string) (wire.DesiredState, error)
	Reported(ctx context.Context, id string) (wire.ReportedState, bool, error)
	Check(ctx context.Context, id, serial string) error
}

// Fleet changes devices with side effects beyond the registry (publishing,
// disconnecting); the hub implements it.
type Fleet interface {
	SetDesired(ctx context.Context, id string, models map[string]wire.DesiredModel) (wire.DesiredState, error)
	Revoke(ctx context.Context, id string) (registry.Device, error)
}

// Tokens creates bootstrap tokens; *enroll.Tokens implements it.
type Tokens interface {
	Create(ctx context.Context, opts enroll.TokenOptions) (string, enroll.Token, error)
}

// Config wires a Server.
type Config struct {
	Registry Registry
	Fleet    Fleet
	Tokens   Tokens
	// Rollouts serves /v1/rollouts; nil answers 503 there.
	Rollouts Rollouts
	// Telemetry serves /v1/telemetry; nil answers 503 there.
	Telemetry Telemetry
	// Enroll serves POST /v1/enroll.
	Enroll http.Handler
	// CAFingerprint goes into every token.
	CAFingerprint string
	// Now, optional, is the clock for online status.
	Now func() time.Time
	// Logger, optional.
	Logger *slog.Logger
}

// Server is the API's http.Handler.
type Server struct {
	cfg Config
	mux *http.ServeMux
	log *slog.Logger
	// patterns lists the routes ("METHOD /path"), for the OpenAPI check.
	patterns []string
}

// New builds the API handler.
func New(cfg Config) *Server {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux(), log: cfg.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.handle("GET /v1/health", http.HandlerFunc(s.health))
	if cfg.Enroll != nil {
		s.handle("POST "+wire.EnrollPath, cfg.Enroll)
	}
	s.handle("GET /v1/devices", s.admin(s.listDevices))
	s.handle("GET /v1/devices/{id}", s.admin(s.getDevice))
	s.handle("PUT /v1/devices/{id}/labels", s.admin(s.putLabels))
	s.handle("POST /v1/devices/{id}/revoke", s.admin(s.revoke))
	s.handle("GET /v1/devices/{id}/desired", s.admin(s.getDesired))
	s.handle("PUT /v1/devices/{id}/desired", s.admin(s.putDesired))
	s.handle("POST /v1/tokens", s.admin(s.createToken))
	s.handleRollouts()
	s.handleTelemetry()
	s.handle("GET /v1/self", s.device(s.self))
	s.handle("GET /v1/self/desired", s.device(s.selfDesired))
	return s
}

func (s *Server) handle(pattern string, h http.Handler) {
	s.mux.Handle(pattern, h)
	s.patterns = append(s.patterns, pattern)
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// DeviceView is a device as the API shows it: the registry record with
// Online computed from presence and heartbeats.
type DeviceView struct {
	registry.Device
	Online bool `json:"online"`
}

// DeviceDetail is GET /v1/devices/{id}.
type DeviceDetail struct {
	Device   DeviceView          `json:"device"`
	Desired  wire.DesiredState   `json:"desired"`
	Reported *wire.ReportedState `json:"reported,omitempty"`
}

// LabelsRequest is the body of PUT /v1/devices/{id}/labels.
type LabelsRequest struct {
	Labels map[string]string `json:"labels"`
}

// DesiredRequest is the body of PUT /v1/devices/{id}/desired.
type DesiredRequest struct {
	Models map[string]wire.DesiredModel `json:"models"`
}

// TokenRequest is the body of POST /v1/tokens.
type TokenRequest struct {
	// TTL is a Go duration ("24h"); "" means the default.
	TTL      string            `json:"ttl,omitempty"`
	DeviceID string            `json:"device_id,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
}

// TokenResponse carries a new token; the secret is not stored and cannot
// be shown again.
type TokenResponse struct {
	Token         string            `json:"token"`
	ID            string            `json:"id"`
	Expires       time.Time         `json:"expires"`
	DeviceID      string            `json:"device_id,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	CAFingerprint string            `json:"ca_fingerprint"`
}

// DeviceListResponse is GET /v1/devices.
type DeviceListResponse struct {
	Devices []DeviceView `json:"devices"`
}

func (s *Server) view(d registry.Device) DeviceView {
	return DeviceView{Device: d, Online: d.IsOnline(s.cfg.Now())}
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) listDevices(w http.ResponseWriter, r *http.Request) {
	sel, err := registry.ParseSelector(r.URL.Query().Get("selector"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	devs, err := s.cfg.Registry.List(r.Context(), sel)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := DeviceListResponse{Devices: make([]DeviceView, 0, len(devs))}
	for _, d := range devs {
		out.Devices = append(out.Devices, s.view(d))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) detail(ctx context.Context, id string) (DeviceDetail, error) {
	d, err := s.cfg.Registry.Get(ctx, id)
	if err != nil {
		return DeviceDetail{}, err
	}
	ds, err := s.cfg.Registry.Desired(ctx, id)
	if err != nil {
		return DeviceDetail{}, err
	}
	out := DeviceDetail{Device: s.view(d), Desired: ds}
	rs, ok, err := s.cfg.Registry.Reported(ctx, id)
	if err != nil {
		return DeviceDetail{}, err
	}
	if ok {
		out.Reported = &rs
	}
	return out, nil
}

func (s *Server) getDevice(w http.ResponseWriter, r *http.Request) {
	out, err := s.detail(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) putLabels(w http.ResponseWriter, r *http.Request) {
	var req LabelsRequest
	if !s.decode(w, r, &req) {
		return
	}
	d, err := s.cfg.Registry.SetLabels(r.Context(), r.PathValue("id"), req.Labels)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.view(d))
}

func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	d, err := s.cfg.Fleet.Revoke(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.view(d))
}

func (s *Server) getDesired(w http.ResponseWriter, r *http.Request) {
	ds, err := s.cfg.Registry.Desired(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ds)
}

func (s *Server) putDesired(w http.ResponseWriter, r *http.Request) {
	var req DesiredRequest
	if !s.decode(w, r, &req) {
		return
	}
	ds, err := s.cfg.Fleet.SetDesired(r.Context(), r.PathValue("id"), req.Models)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ds)
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	var req TokenRequest
	if !s.decode(w, r, &req) {
		return
	}
	var ttl time.Duration
	if req.TTL != "" {
		var err error
		if ttl, err = time.ParseDuration(req.TTL); err != nil || ttl <= 0 {
			s.fail(w, r, fmt.Errorf("ttl %q: want a positive duration such as 24h: %w", req.TTL, wire.ErrInvalid))
			return
		}
	}
	if err := registry.ValidateLabels(req.Labels); err != nil {
		s.fail(w, r, err)
		return
	}
	secret, tok, err := s.cfg.Tokens.Create(r.Context(), enroll.TokenOptions{TTL: ttl, DeviceID: req.DeviceID, Labels: req.Labels})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("bootstrap token created", "token", tok.ID, "expires", tok.Expires, "device_id", tok.DeviceID)
	writeJSON(w, http.StatusCreated, TokenResponse{
		Token:         wire.FormatToken(secret, s.cfg.CAFingerprint),
		ID:            tok.ID,
		Expires:       tok.Expires,
		DeviceID:      tok.DeviceID,
		Labels:        tok.Labels,
		CAFingerprint: s.cfg.CAFingerprint,
	})
}

func (s *Server) self(w http.ResponseWriter, r *http.Request) {
	id, _ := ca.PeerIdentity(r.TLS)
	out, err := s.detail(r.Context(), id.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) selfDesired(w http.ResponseWriter, r *http.Request) {
	id, _ := ca.PeerIdentity(r.TLS)
	ds, err := s.cfg.Registry.Desired(r.Context(), id.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ds)
}

// admin admits only the admin certificate.
func (s *Server) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, ok := ca.PeerIdentity(r.TLS)
		switch {
		case !ok:
			writeError(w, http.StatusUnauthorized, errors.New("admin client certificate required (admin.crt/admin.key in the hub's data folder)"))
		case id.Kind != ca.KindAdmin:
			writeError(w, http.StatusForbidden, fmt.Errorf("identity %q may not use admin endpoints", id.ID))
		default:
			h(w, r)
		}
	}
}

// device admits a current, not revoked device certificate.
func (s *Server) device(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, ok := ca.PeerIdentity(r.TLS)
		switch {
		case !ok:
			writeError(w, http.StatusUnauthorized, errors.New("device client certificate required"))
			return
		case id.Kind != ca.KindDevice:
			writeError(w, http.StatusForbidden, fmt.Errorf("identity %q is not a device", id.ID))
			return
		}
		if err := s.cfg.Registry.Check(r.Context(), id.ID, ca.SerialString(id.Serial)); err != nil {
			writeError(w, http.StatusForbidden, err)
			return
		}
		h(w, r)
	}
}

func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("request body: %w", err))
		return false
	}
	if _, err := dec.Token(); err != io.EOF {
		writeError(w, http.StatusBadRequest, errors.New("request body: trailing data after the JSON object"))
		return false
	}
	return true
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := Status(err)
	if code >= 500 {
		s.log.Error("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeError(w, code, err)
}

// Status maps hub errors to HTTP status codes.
func Status(err error) int {
	switch {
	case errors.Is(err, registry.ErrNotFound), errors.Is(err, rollout.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, registry.ErrRevoked), errors.Is(err, registry.ErrExists), errors.Is(err, rollout.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, wire.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, wire.Error{Error: err.Error()})
}
