package api

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"

	"github.com/edgefleet/edgefleet/hub/rollout"
)

// Rollouts runs rollouts; *rollout.Manager implements it.
type Rollouts interface {
	Create(ctx context.Context, spec rollout.Spec) (rollout.Status, error)
	Get(ctx context.Context, id string, devices bool) (rollout.Status, error)
	List(ctx context.Context) ([]rollout.Status, error)
	Pause(ctx context.Context, id string) (rollout.Status, error)
	Resume(ctx context.Context, id string) (rollout.Status, error)
	Abort(ctx context.Context, id string) (rollout.Status, error)
	Rollback(ctx context.Context, id string) (rollout.Status, error)
}

// RolloutListResponse is GET /v1/rollouts.
type RolloutListResponse struct {
	Rollouts []rollout.Status `json:"rollouts"`
}

func (s *Server) handleRollouts() {
	s.handle("POST /v1/rollouts", s.admin(s.createRollout))
	s.handle("GET /v1/rollouts", s.admin(s.listRollouts))
	s.handle("GET /v1/rollouts/{id}", s.admin(s.getRollout))
	ops := map[string]func(Rollouts, context.Context, string) (rollout.Status, error){
		"pause":    Rollouts.Pause,
		"resume":   Rollouts.Resume,
		"abort":    Rollouts.Abort,
		"rollback": Rollouts.Rollback,
	}
	for _, name := range []string{"pause", "resume", "abort", "rollback"} {
		op := ops[name]
		s.handle("POST /v1/rollouts/{id}/"+name, s.admin(func(w http.ResponseWriter, r *http.Request) {
			if !s.rolloutsOn(w) {
				return
			}
			st, err := op(s.cfg.Rollouts, r.Context(), r.PathValue("id"))
			if err != nil {
				s.fail(w, r, err)
				return
			}
			s.log.Info("rollout "+name, "rollout", st.ID, "state", st.State)
			writeJSON(w, http.StatusOK, st)
		}))
	}
}

func (s *Server) rolloutsOn(w http.ResponseWriter) bool {
	if s.cfg.Rollouts == nil {
		writeError(w, http.StatusServiceUnavailable, errors.New("rollouts are not available on this hub"))
		return false
	}
	return true
}

func (s *Server) createRollout(w http.ResponseWriter, r *http.Request) {
	if !s.rolloutsOn(w) {
		return
	}
	var spec rollout.Spec
	if !s.decode(w, r, &spec) {
		return
	}
	st, err := s.cfg.Rollouts.Create(r.Context(), spec)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, st)
}

func (s *Server) listRollouts(w http.ResponseWriter, r *http.Request) {
	if !s.rolloutsOn(w) {
		return
	}
	list, err := s.cfg.Rollouts.List(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, RolloutListResponse{Rollouts: list})
}

func (s *Server) getRollout(w http.ResponseWriter, r *http.Request) {
	if !s.rolloutsOn(w) {
		return
	}
	devices, _ := strconv.ParseBool(r.URL.Query().Get("devices"))
	st, err := s.cfg.Rollouts.Get(r.Context(), r.PathValue("id"), devices)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// CreateRollout starts a rollout.
func (c *Client) CreateRollout(ctx context.Context, spec rollout.Spec) (rollout.Status, error) {
	var out rollout.Status
	err := c.do(ctx, http.MethodPost, "/v1/rollouts", spec, &out)
	return out, err
}

// Rollouts lists every rollout, newest first.
func (c *Client) Rollouts(ctx context.Context) ([]rollout.Status, error) {
	var out RolloutListResponse
	err := c.do(ctx, http.MethodGet, "/v1/rollouts", nil, &out)
	return out.Rollouts, err
}

// Rollout returns a rollout's status, with its devices when devices is true.
func (c *Client) Rollout(ctx context.Context, id string, devices bool) (rollout.Status, error) {
	var out rollout.Status
	path := "/v1/rollouts/" + url.PathEscape(id)
	if devices {
		path += "?devices=true"
	}
	err := c.do(ctx, http.MethodGet, path, nil, &out)
	return out, err
}

// RolloutAction runs "pause", "resume", "abort" or "rollback" on a rollout.
func (c *Client) RolloutAction(ctx context.Context, id, action string) (rollout.Status, error) {
	var out rollout.Status
	err := c.do(ctx, http.MethodPost, "/v1/rollouts/"+url.PathEscape(id)+"/"+url.PathEscape(action), nil, &out)
	return out, err
}
