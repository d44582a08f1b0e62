// Package enroll lets agents join the fleet: one-time bootstrap tokens
// (random, stored hashed in bbolt, with an expiry, used once) and the
// enrollment endpoint, POST /v1/enroll, which trades a token and a
// certificate request for a device certificate signed by the hub's CA.
//
// # Trust on both sides
//
// A token reads "<secret>.<ca-fingerprint-prefix>": the secret proves to
// the hub that an operator admitted the device, and the fingerprint prefix
// (128 bits of the CA certificate's SHA-256) lets the agent check, during
// the TLS handshake of the enrollment request, that it talks to the hub
// that made the token, so enrollment is not trust-on-first-use. From then
// on the agent uses the returned CA and device certificate (mutual TLS) for
// MQTT, HTTPS and QUIC.
//
// # Caveats
//
// A refused enrollment does not use up the token; a successful one does,
// even if the agent never receives the answer (make a new token then).
package enroll

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/hub/ca"
	"github.com/edgefleet/edgefleet/hub/registry"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// ErrWrongHub means the token was made by a hub with another CA.
var ErrWrongHub = errors.New("bootstrap token was made by another hub (CA fingerprint differs)")

// ErrIDMismatch means the agent asked for an id other than the one its
// token is bound to.
var ErrIDMismatch = errors.New("device id differs from the id the token is bound to")

// maxRequestBytes bounds an enrollment request body.
const maxRequestBytes = 64 << 10

// Signer issues device certificates; *ca.CA implements it.
type Signer interface {
	SignDeviceCSR(csrPEM []byte, id string, validity time.Duration) (*x509.Certificate, []byte, error)
	CertPEM() []byte
	Fingerprint() string
}

// Registrar registers enrolled devices; *registry.Registry implements it.
type Registrar interface {
	Enroll(ctx context.Context, e registry.Enrollment) (registry.Device, error)
}

// Endpoints tells agents where to connect after enrollment.
type Endpoints struct {
	MQTTURL  string
	APIURL   string
	Registry string
}

// TokenStore redeems bootstrap tokens; *Tokens implements it (and so does
// the PostgreSQL store of cluster mode).
type TokenStore interface {
	Peek(ctx context.Context, secret string) (Token, error)
	Redeem(ctx context.Context, secret, device string) (Token, error)
	Release(ctx context.Context, secret string) error
}

// Service enrolls devices. Set every field except the optional ones before
// use; it is safe for concurrent use after that.
type Service struct {
	CA        Signer
	Registry  Registrar
	Tokens    TokenStore
	Endpoints func() Endpoints
	// Validity of device certificates; 0 means ca.DefaultDeviceValidity.
	Validity time.Duration
	// OnEnrolled, optional, runs after each successful enrollment.
	OnEnrolled func(ctx context.Context, d registry.Device)
	// Logger, optional.
	Logger *slog.Logger
}

// Enroll checks a request, redeems its token and returns the device's
// certificate and connection details.
func (s *Service) Enroll(ctx context.Context, req wire.EnrollRequest) (wire.EnrollResponse, error) {
	secret := strings.TrimSpace(req.Token)
	if strings.Contains(secret, ".") {
		sec, fp, err := wire.ParseToken(secret)
		if err != nil {
			return wire.EnrollResponse{}, err
		}
		if !strings.HasPrefix(s.CA.Fingerprint(), fp) {
			return wire.EnrollResponse{}, ErrWrongHub
		}
		secret = sec
	}
	if secret == "" {
		return wire.EnrollResponse{}, fmt.Errorf("enroll: token missing: %w", wire.ErrInvalid)
	}
	if strings.TrimSpace(req.CSR) == "" {
		return wire.EnrollResponse{}, fmt.Errorf("enroll: csr missing: %w", wire.ErrInvalid)
	}
	tok, err := s.Tokens.Peek(ctx, secret)
	if err != nil {
		return wire.EnrollResponse{}, err
	}
	id := req.DeviceID
	switch {
	case tok.DeviceID != "" && id != "" && id != tok.DeviceID:
		return wire.EnrollResponse{}, fmt.Errorf("enroll: asked for %q, token is for %q: %w", id, tok.DeviceID, ErrIDMismatch)
	case tok.DeviceID != "":
		id = tok.DeviceID
	case id == "":
		id, err = newDeviceID()
		if err != nil {
			return wire.EnrollResponse{}, err
		}
	}
	if err := wire.ValidateDeviceID(id); err != nil {
		return wire.EnrollResponse{}, err
	}
	labels := maps.Clone(req.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	maps.Copy(labels, tok.Labels)
	if err := registry.ValidateLabels(labels); err != nil {
		return wire.EnrollResponse{}, err
	}
	cert, certPEM, err := s.CA.SignDeviceCSR([]byte(req.CSR), id, s.Validity)
	if err != nil {
		return wire.EnrollResponse{}, err
	}
	if _, err := s.Tokens.Redeem(ctx, secret, id); err != nil {
		return wire.EnrollResponse{}, err
	}
	dev, err := s.Registry.Enroll(ctx, registry.Enrollment{
		ID:           id,
		Labels:       labels,
		Hardware:     req.Hardware,
		AgentVersion: req.AgentVersion,
		CertSerial:   ca.SerialString(cert.SerialNumber),
		CertNotAfter: cert.NotAfter,
		Replace:      tok.DeviceID == id,
	})
	if err != nil {
		if rerr := s.Tokens.Release(context.WithoutCancel(ctx), secret); rerr != nil {
			s.log().Error("enroll: release token after a refused enrollment", "token", tok.ID, "err", rerr)
		}
		return wire.EnrollResponse{}, err
	}
	s.log().Info("device enrolled", "device", id, "token", tok.ID, "serial", dev.CertSerial)
	if s.OnEnrolled != nil {
		s.OnEnrolled(ctx, dev)
	}
	ep := s.Endpoints()
	return wire.EnrollResponse{
		DeviceID:      id,
		Certificate:   string(certPEM),
		CA:            string(s.CA.CertPEM()),
		CAFingerprint: s.CA.Fingerprint(),
		MQTTURL:       ep.MQTTURL,
		APIURL:        ep.APIURL,
		Registry:      ep.Registry,
	}, nil
}

// ServeHTTP answers POST /v1/enroll.
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		WriteError(w, http.StatusMethodNotAllowed, errors.New("use POST"))
		return
	}
	var req wire.EnrollRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	if err := dec.Decode(&req); err != nil {
		WriteError(w, http.StatusBadRequest, fmt.Errorf("enrollment request: %w", err))
		return
	}
	if _, err := dec.Token(); err != io.EOF {
		WriteError(w, http.StatusBadRequest, errors.New("enrollment request: trailing data after the JSON object"))
		return
	}
	resp, err := s.Enroll(r.Context(), req)
	if err != nil {
		code := Status(err)
		if code >= 500 {
			s.log().Error("enrollment failed", "err", err, "remote", r.RemoteAddr)
		} else {
			s.log().Warn("enrollment refused", "err", err, "remote", r.RemoteAddr, "device_id", req.DeviceID)
		}
		WriteError(w, code, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(resp)
}

// Status maps enrollment and registry errors to HTTP status codes.
func Status(err error) int {
	switch {
	case errors.Is(err, ErrTokenUnknown), errors.Is(err, ErrTokenUsed), errors.Is(err, ErrTokenExpired), errors.Is(err, ErrWrongHub):
		return http.StatusUnauthorized
	case errors.Is(err, registry.ErrRevoked), errors.Is(err, ErrIDMismatch):
		return http.StatusForbidden
	case errors.Is(err, registry.ErrExists):
		return http.StatusConflict
	case errors.Is(err, registry.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, wire.ErrInvalid), errors.Is(err, ca.ErrInvalidCSR):
		return http.StatusBadRequest
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// WriteError writes {"error": "..."} with status code.
func WriteError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(wire.Error{Error: err.Error()})
}

func (s *Service) log() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func newDeviceID() (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("enroll: %w", err)
	}
	return "dev-" + hex.EncodeToString(b[:]), nil
}
