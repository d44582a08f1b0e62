package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/agent/update"
)

// installStartModels installs every start model (config.StartModels) through
// the over-the-air updater: resolved (and, with trust keys, signature
// checked), pulled resumably into the cache, verified, warmed and golden
// tested. A model already active at that artifact is left as it is. Network
// and registry failures are retried with backoff until ctx ends; an artifact
// the updater refuses (bad signature, invalid reference or config) is a
// permanent error, returned so that the agent exits and says why.
func (a *Agent) installStartModels(ctx context.Context) error {
	for _, m := range a.cfg.StartModels {
		backoff := time.Second
		for {
			// The user named this artifact: an older version than one
			// accepted before (a cache on a persistent volume) is intended.
			res, err := a.updater.Update(ctx, m.Name, m.Ref, update.UpdateOptions{AllowRollback: true})
			if err == nil {
				a.log.Info("start model ready", "model", m.Name, "ref", m.Ref, "version", res.Version, "state", res.State)
				break
			}
			if errors.Is(err, update.ErrRefused) || errors.Is(err, update.ErrInvalid) ||
				errors.Is(err, update.ErrConflict) || errors.Is(err, update.ErrOlderVersion) {
				return fmt.Errorf("start model %s: %w", m, err)
			}
			a.log.Warn("start model not installed yet; retrying", "model", m.Name, "ref", m.Ref, "err", err, "in", backoff)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 30*time.Second)
		}
	}
	return nil
}

// healthOnly passes the health and metrics endpoints to h and answers 404
// to everything else: the handler of the Health listener, which may face the
// pod network while the API stays on loopback.
func healthOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method != http.MethodGet && r.Method != http.MethodHead:
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		case r.URL.Path == "/metrics" || strings.HasPrefix(r.URL.Path, "/v2/health/"):
			h.ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	})
}
