package update

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/edgefleet/edgefleet/agent/cache"
	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/ota"
	"github.com/edgefleet/edgefleet/ota/artifact"
)

// Request is the body of POST /v1/updates.
type Request struct {
	Model string `json:"model"`
	Ref   string `json:"ref"`
	UpdateOptions
}

// Handler serves the local update API (mounted at /v1/updates on the agent):
//
//	POST /v1/updates                   {"model", "ref", "allow_rollback", "force"} → Result
//	GET  /v1/updates                   → [Status]
//	GET  /v1/updates/{model}           → Status
//	POST /v1/updates/{model}/rollback  → Result
//
// Updates run to completion even if the client disconnects. Errors are
// {"error": "...", "code": "..."} (code names the sentinel error, see
// APIError) with 400 (bad request), 404 (unknown model), 409 (busy,
// rollback protection, version conflict, nothing to roll back to), 422
// (refused artifact), 502 (registry), 507 (cache budget) or 500.
func (u *Updater) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/updates", func(w http.ResponseWriter, r *http.Request) {
		var req Request
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
			writeError(w, fmt.Errorf("%w: %w", ErrInvalid, err))
			return
		}
		res, err := u.Update(u.ctx, req.Model, req.Ref, req.UpdateOptions)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
	})
	mux.HandleFunc("GET /v1/updates", func(w http.ResponseWriter, r *http.Request) {
		s, err := u.Statuses()
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, s)
	})
	mux.HandleFunc("GET /v1/updates/{model}", func(w http.ResponseWriter, r *http.Request) {
		s, err := u.Status(r.PathValue("model"))
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, s)
	})
	mux.HandleFunc("POST /v1/updates/{model}/rollback", func(w http.ResponseWriter, r *http.Request) {
		res, err := u.Rollback(u.ctx, r.PathValue("model"))
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	body := map[string]string{"error": err.Error()}
	if code := codeOf(err); code != "" {
		body["code"] = code
	}
	writeJSON(w, statusOf(err), body)
}

// sentinels are the errors that keep their identity across HTTP: the
// handler sends the code of the first one err wraps, and the Client's
// APIError unwraps to it, so errors.Is works on both sides.
var sentinels = []struct {
	code string
	err  error
}{
	{"invalid", ErrInvalid},
	{"busy", ErrBusy},
	{"older_version", ErrOlderVersion},
	{"conflict", ErrConflict},
	{"no_previous", ErrNoPrevious},
	{"refused", ErrRefused},
	{"not_found", models.ErrNotFound},
	{"no_space", cache.ErrNoSpace},
}

func codeOf(err error) string {
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			return s.code
		}
	}
	return ""
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, models.ErrNotFound), errors.Is(err, ota.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrBusy), errors.Is(err, ErrOlderVersion), errors.Is(err, ErrConflict), errors.Is(err, ErrNoPrevious):
		return http.StatusConflict
	case errors.Is(err, ErrRefused), errors.Is(err, artifact.ErrInvalid):
		return http.StatusUnprocessableEntity
	case errors.Is(err, cache.ErrNoSpace):
		return http.StatusInsufficientStorage
	case errors.Is(err, ota.ErrDigestMismatch), errors.Is(err, ota.ErrProtocol), errors.Is(err, ota.ErrMediaType), errors.Is(err, ota.ErrTooLarge):
		return http.StatusBadGateway
	}
	return http.StatusInternalServerError
}

// Client calls a running agent's update API.
type Client struct {
	base string
	hc   *http.Client
}

// NewClient returns a client for the agent at base ("http://127.0.0.1:8080");
// hc nil means http.DefaultClient.
func NewClient(base string, hc *http.Client) *Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: strings.TrimRight(base, "/"), hc: hc}
}

// APIError is an error answer of the agent. It unwraps to the package's
// sentinel error the agent named (ErrBusy, ErrRefused, ErrOlderVersion, …,
// models.ErrNotFound, cache.ErrNoSpace), so callers test it with
// errors.Is as they would a local Updater's error.
type APIError struct {
	// Code is the HTTP status.
	Code    int
	Message string
	// Kind is the sentinel's code ("busy", "refused", …), "" when none.
	Kind string
}

func (e *APIError) Error() string { return fmt.Sprintf("agent: %s (HTTP %d)", e.Message, e.Code) }

// Unwrap returns the sentinel error Kind names, nil when none.
func (e *APIError) Unwrap() error {
	for _, s := range sentinels {
		if s.code == e.Kind {
			return s.err
		}
	}
	return nil
}

// Update asks the agent to install ref as model's active version and waits
// for the result.
func (c *Client) Update(ctx context.Context, model, ref string, o UpdateOptions) (*Result, error) {
	var res Result
	err := c.do(ctx, http.MethodPost, "/v1/updates", Request{Model: model, Ref: ref, UpdateOptions: o}, &res)
	return &res, err
}

// Rollback asks the agent to make model's previous version active again.
func (c *Client) Rollback(ctx context.Context, model string) (*Result, error) {
	var res Result
	err := c.do(ctx, http.MethodPost, "/v1/updates/"+url.PathEscape(model)+"/rollback", nil, &res)
	return &res, err
}

// Status returns model's update state.
func (c *Client) Status(ctx context.Context, model string) (*Status, error) {
	var s Status
	err := c.do(ctx, http.MethodGet, "/v1/updates/"+url.PathEscape(model), nil, &s)
	return &s, err
}

// Statuses returns the update state of every cached model.
func (c *Client) Statuses(ctx context.Context) ([]*Status, error) {
	var s []*Status
	err := c.do(ctx, http.MethodGet, "/v1/updates", nil, &s)
	return s, err
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
			Code  string `json:"code"`
		}
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return &APIError{Code: resp.StatusCode, Message: e.Error, Kind: e.Code}
	}
	return json.Unmarshal(b, out)
}
