package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/edgefleet/edgefleet/hub/registry"
	"github.com/edgefleet/edgefleet/hub/telemetry"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// Telemetry is the read side of the fleet's telemetry; *telemetry.Store
// implements it.
type Telemetry interface {
	Overview(recent time.Duration) telemetry.Overview
	Devices() []telemetry.DeviceSummary
	Device(id string) (telemetry.DeviceSummary, bool)
	Window(id string, since time.Time, limit int) ([]telemetry.Entry, error)
	Series(model, version string, from, to time.Time) []telemetry.Point
	ModelVersions() []telemetry.ModelVersion
	VersionHealth(model, version string) (wire.Health, int)
}

// TelemetryDevicesResponse is GET /v1/telemetry/devices.
type TelemetryDevicesResponse struct {
	Devices []telemetry.DeviceSummary `json:"devices"`
}

// TelemetryWindowResponse is GET /v1/telemetry/devices/{id}/window.
type TelemetryWindowResponse struct {
	Device  string            `json:"device"`
	Entries []telemetry.Entry `json:"entries"`
}

// TelemetryModelsResponse is GET /v1/telemetry/models.
type TelemetryModelsResponse struct {
	Versions []telemetry.ModelVersion `json:"versions"`
}

// TelemetrySeriesResponse is GET
// /v1/telemetry/models/{model}/versions/{version}/series.
type TelemetrySeriesResponse struct {
	Model   string            `json:"model"`
	Version string            `json:"version"`
	Health  wire.Health       `json:"health"`
	Devices int               `json:"devices"`
	Points  []telemetry.Point `json:"points"`
}

func (s *Server) handleTelemetry() {
	s.handle("GET /v1/telemetry", s.admin(s.telemetryOverview))
	s.handle("GET /v1/telemetry/devices", s.admin(s.telemetryDevices))
	s.handle("GET /v1/telemetry/devices/{id}", s.admin(s.telemetryDevice))
	s.handle("GET /v1/telemetry/devices/{id}/window", s.admin(s.telemetryWindow))
	s.handle("GET /v1/telemetry/models", s.admin(s.telemetryModels))
	s.handle("GET /v1/telemetry/models/{model}/versions/{version}/series", s.admin(s.telemetrySeries))
}

// telemetryOff answers 503 when the hub runs without telemetry.
func (s *Server) telemetryOff(w http.ResponseWriter) bool {
	if s.cfg.Telemetry == nil {
		writeError(w, http.StatusServiceUnavailable, errors.New("telemetry is not enabled on this hub"))
		return true
	}
	return false
}

func (s *Server) telemetryOverview(w http.ResponseWriter, r *http.Request) {
	if s.telemetryOff(w) {
		return
	}
	recent, err := durationParam(r, "recent")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.cfg.Telemetry.Overview(recent))
}

func (s *Server) telemetryDevices(w http.ResponseWriter, r *http.Request) {
	if s.telemetryOff(w) {
		return
	}
	writeJSON(w, http.StatusOK, TelemetryDevicesResponse{Devices: s.cfg.Telemetry.Devices()})
}

func (s *Server) telemetryDevice(w http.ResponseWriter, r *http.Request) {
	if s.telemetryOff(w) {
		return
	}
	id := r.PathValue("id")
	d, ok := s.cfg.Telemetry.Device(id)
	if !ok {
		s.fail(w, r, fmt.Errorf("no telemetry from device %q: %w", id, registry.ErrNotFound))
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (s *Server) telemetryWindow(w http.ResponseWriter, r *http.Request) {
	if s.telemetryOff(w) {
		return
	}
	id := r.PathValue("id")
	if _, ok := s.cfg.Telemetry.Device(id); !ok {
		s.fail(w, r, fmt.Errorf("no telemetry from device %q: %w", id, registry.ErrNotFound))
		return
	}
	since, err := timeParam(r, "since")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	limit := 0
	if v := r.URL.Query().Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 0 {
			s.fail(w, r, fmt.Errorf("limit %q: want a non-negative integer: %w", v, wire.ErrInvalid))
			return
		}
	}
	entries, err := s.cfg.Telemetry.Window(id, since, limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if entries == nil {
		entries = []telemetry.Entry{}
	}
	writeJSON(w, http.StatusOK, TelemetryWindowResponse{Device: id, Entries: entries})
}

func (s *Server) telemetryModels(w http.ResponseWriter, r *http.Request) {
	if s.telemetryOff(w) {
		return
	}
	writeJSON(w, http.StatusOK, TelemetryModelsResponse{Versions: s.cfg.Telemetry.ModelVersions()})
}

func (s *Server) telemetrySeries(w http.ResponseWriter, r *http.Request) {
	if s.telemetryOff(w) {
		return
	}
	from, err := timeParam(r, "from")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	to, err := timeParam(r, "to")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	model, version := r.PathValue("model"), r.PathValue("version")
	h, n := s.cfg.Telemetry.VersionHealth(model, version)
	writeJSON(w, http.StatusOK, TelemetrySeriesResponse{Model: model, Version: version, Health: h, Devices: n,
		Points: s.cfg.Telemetry.Series(model, version, from, to)})
}

// timeParam parses an RFC 3339 time or a duration before now ("15m");
// absent is the zero time.
func timeParam(r *http.Request, name string) (time.Time, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return time.Now().Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%s %q: want an RFC 3339 time or a duration such as 15m: %w", name, v, wire.ErrInvalid)
}

// durationParam parses a positive duration; absent is 0.
func durationParam(r *http.Request, name string) (time.Duration, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s %q: want a positive duration such as 5m: %w", name, v, wire.ErrInvalid)
	}
	return d, nil
}
