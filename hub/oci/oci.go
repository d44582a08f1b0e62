// Package oci is the hub's embedded OCI registry: go-containerregistry's
// pkg/registry with blobs on disk and every manifest change journaled in
// bbolt, so pushed models survive a hub restart (the upstream handler keeps
// manifests in memory only).
//
// # Schema
//
//	oci.manifests/<seq>  journalEntry JSON: method, repository, reference,
//	                     content type and body of each successful manifest
//	                     PUT or DELETE, in order
//
// New replays the journal into a fresh handler, so tags, digests and
// referrers come back as they were.
//
// # Caveats
//
// No authentication: serve it on loopback (the hub's default), or put it
// behind an authenticating proxy; use an external registry for fleets.
// Blob uploads in progress are lost on restart (clients retry them).
package oci

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/hub/hubdb"
)

var bucketManifests = hubdb.OCIManifests

// MaxManifestBytes bounds a manifest upload.
const MaxManifestBytes = 4 << 20

type journalEntry struct {
	Method      string    `json:"method"`
	Path        string    `json:"path"`
	ContentType string    `json:"content_type,omitempty"`
	Body        []byte    `json:"body,omitempty"`
	Time        time.Time `json:"time"`
}

// Registry is an http.Handler serving the OCI distribution API.
type Registry struct {
	h   http.Handler
	db  *bolt.DB
	log *slog.Logger
}

// New creates the registry with blobs under blobDir and replays the
// manifest journal kept in db.
func New(db *bolt.DB, blobDir string, logger *slog.Logger) (*Registry, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(blobDir, 0o755); err != nil {
		return nil, fmt.Errorf("oci: %w", err)
	}
	h := registry.New(
		registry.WithBlobHandler(registry.NewDiskBlobHandler(blobDir)),
		registry.Logger(log.New(io.Discard, "", 0)),
		registry.WithReferrersSupport(true),
	)
	r := &Registry{h: h, db: db, log: logger}
	var entries []journalEntry
	err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketManifests)
		if err != nil {
			return err
		}
		return b.ForEach(func(_, v []byte) error {
			var e journalEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			entries = append(entries, e)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("oci: manifest journal: %w", err)
	}
	for _, e := range entries {
		req := httptest.NewRequest(e.Method, e.Path, bytes.NewReader(e.Body))
		if e.ContentType != "" {
			req.Header.Set("Content-Type", e.ContentType)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 300 && e.Method != http.MethodDelete {
			logger.Warn("oci: manifest journal entry not replayed", "path", e.Path, "status", rec.Code)
		}
	}
	logger.Debug("oci: manifest journal replayed", "entries", len(entries))
	return r, nil
}

// isManifest reports whether a path is /v2/<name>/manifests/<reference>.
func isManifest(path string) bool {
	elem := strings.Split(path, "/")
	return len(elem) >= 5 && elem[1] == "v2" && elem[len(elem)-2] == "manifests"
}

// ServeHTTP serves the distribution API, journaling manifest changes
// before acknowledging them.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if (req.Method != http.MethodPut && req.Method != http.MethodDelete) || !isManifest(req.URL.Path) {
		r.h.ServeHTTP(w, req)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, MaxManifestBytes))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "MANIFEST_INVALID", err.Error())
		return
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	rec := httptest.NewRecorder()
	r.h.ServeHTTP(rec, req)
	if rec.Code < 300 {
		e := journalEntry{Method: req.Method, Path: req.URL.Path, ContentType: req.Header.Get("Content-Type"), Time: time.Now().UTC()}
		if req.Method == http.MethodPut {
			e.Body = body
		}
		if err := r.journal(e); err != nil {
			r.log.Error("oci: journal manifest", "path", req.URL.Path, "err", err)
			writeError(w, http.StatusInternalServerError, "UNKNOWN", "manifest not persisted: "+err.Error())
			return
		}
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
}

func (r *Registry) journal(e journalEntry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return r.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketManifests)
		seq, err := bk.NextSequence()
		if err != nil {
			return err
		}
		var key [8]byte
		binary.BigEndian.PutUint64(key[:], seq)
		return bk.Put(key[:], b)
	})
}

func writeError(w http.ResponseWriter, code int, errCode, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": errCode, "message": msg}}})
}
