package httpapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/edgefleet/edgefleet/agent/models"
)

// Repository is the model repository extension's backend. Errors wrap the
// models sentinels.
type Repository interface {
	Index(ctx context.Context, readyOnly bool) ([]models.RepositoryEntry, error)
	// Load (re)loads a model; model, when non-nil, is imported first as
	// version ("" = the next one).
	Load(ctx context.Context, name, version string, model []byte) error
	Unload(ctx context.Context, name, version string) error
}

type repoEntryJSON struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
	State   string `json:"state,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// repositoryIndex serves POST /v2/repository/index {"ready": bool}.
func (s *Server) repositoryIndex(w http.ResponseWriter, r *http.Request) {
	if s.repo == nil {
		s.writeError(w, http.StatusNotFound, "the model repository extension is not enabled")
		return
	}
	var body struct {
		Ready bool `json:"ready"`
	}
	if err := s.readRepoJSON(w, r, &body); err != nil {
		s.writeError(w, statusOf(err), err.Error())
		return
	}
	es, err := s.repo.Index(r.Context(), body.Ready)
	if err != nil {
		s.writeError(w, statusOf(err), err.Error())
		return
	}
	out := make([]repoEntryJSON, len(es))
	for i, e := range es {
		out[i] = repoEntryJSON(e)
	}
	b, _ := json.Marshal(out)
	s.writeJSON(w, http.StatusOK, b)
}

// repositoryLoad serves POST /v2/repository/models/{model}/load. The body is
// empty (load from the cache), Triton's {"parameters": {"file:<version>/model.onnx":
// "<base64>"}}, or (Content-Type application/octet-stream) the ONNX file
// itself, with the version in the "version" query parameter.
func (s *Server) repositoryLoad(w http.ResponseWriter, r *http.Request) {
	if s.repo == nil {
		s.writeError(w, http.StatusNotFound, "the model repository extension is not enabled")
		return
	}
	name := r.PathValue("model")
	var model []byte
	version := r.URL.Query().Get("version")
	if ct := r.Header.Get("Content-Type"); strings.HasPrefix(ct, "application/octet-stream") {
		b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
		if err != nil {
			err = bodyError(err, s.tooLarge(), "")
			s.writeError(w, statusOf(err), fmt.Sprintf("reading model: %v", err))
			return
		}
		if len(b) == 0 {
			s.writeError(w, http.StatusBadRequest, "empty model body")
			return
		}
		model = b
	} else {
		var body struct {
			Parameters map[string]any `json:"parameters"`
		}
		if err := s.readRepoJSON(w, r, &body); err != nil {
			s.writeError(w, statusOf(err), err.Error())
			return
		}
		for k, v := range body.Parameters {
			path, ok := strings.CutPrefix(k, "file:")
			if !ok {
				continue
			}
			str, ok := v.(string)
			if !ok {
				s.writeError(w, http.StatusBadRequest, fmt.Sprintf("parameter %q must be a base64 string", k))
				return
			}
			if model != nil {
				s.writeError(w, http.StatusBadRequest, "more than one file parameter")
				return
			}
			b, err := base64.StdEncoding.DecodeString(str)
			if err != nil || len(b) == 0 {
				s.writeError(w, http.StatusBadRequest, fmt.Sprintf("parameter %q is not base64 file content", k))
				return
			}
			model = b
			if dir, file, ok := strings.Cut(path, "/"); ok && file != "" {
				version = dir
			}
		}
	}
	if err := s.repo.Load(r.Context(), name, version, model); err != nil {
		s.writeError(w, statusOf(err), err.Error())
		return
	}
	w.WriteHeader(http.StatusOK)
}

// repositoryUnload serves POST /v2/repository/models/{model}/unload; the
// optional "version" query parameter unloads one version.
func (s *Server) repositoryUnload(w http.ResponseWriter, r *http.Request) {
	if s.repo == nil {
		s.writeError(w, http.StatusNotFound, "the model repository extension is not enabled")
		return
	}
	var body struct {
		Parameters map[string]any `json:"parameters"`
	}
	if err := s.readRepoJSON(w, r, &body); err != nil {
		s.writeError(w, statusOf(err), err.Error())
		return
	}
	if err := s.repo.Unload(r.Context(), r.PathValue("model"), r.URL.Query().Get("version")); err != nil {
		s.writeError(w, statusOf(err), err.Error())
		return
	}
	w.WriteHeader(http.StatusOK)
}

// readRepoJSON decodes an optional JSON body (empty is fine).
func (s *Server) readRepoJSON(w http.ResponseWriter, r *http.Request, v any) error {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	if err != nil {
		return bodyError(err, s.tooLarge(), "")
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return badRequest("malformed JSON: %v", err)
	}
	return nil
}

func (s *Server) tooLarge() error {
	return &requestError{status: http.StatusRequestEntityTooLarge,
		msg: fmt.Sprintf("request body exceeds the limit of %d bytes", s.maxBody)}
}
