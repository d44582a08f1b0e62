package oci

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	bolt "go.etcd.io/bbolt"
)

func TestManifestsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "hub.db")
	blobs := filepath.Join(dir, "blobs")
	start := func() (*httptest.Server, func()) {
		db, err := bolt.Open(dbPath, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		r, err := New(db, blobs, nil)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(r)
		return srv, func() { srv.Close(); db.Close() }
	}

	srv, stop := start()
	host := strings.TrimPrefix(srv.URL, "http://")
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	tag, _ := name.ParseReference(host + "/models/digits:1")
	gone, _ := name.ParseReference(host + "/models/digits:old")
	if err := remote.Write(tag, img); err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(gone, img); err != nil {
		t.Fatal(err)
	}
	if err := remote.Delete(gone); err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()
	stop()

	srv, stop = start()
	defer stop()
	host = strings.TrimPrefix(srv.URL, "http://")
	tests := []struct {
		ref   string
		found bool
	}{
		{host + "/models/digits:1", true},
		{host + "/models/digits@" + want.String(), true},
		{host + "/models/digits:old", false},
	}
	for _, tt := range tests {
		ref, _ := name.ParseReference(tt.ref)
		got, err := remote.Image(ref)
		if !tt.found {
			if err == nil {
				t.Errorf("%s: deleted tag came back", tt.ref)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s after restart: %v", tt.ref, err)
		}
		d, _ := got.Digest()
		if d != want {
			t.Fatalf("%s: digest %s, want %s", tt.ref, d, want)
		}
		// Blobs are on disk and complete.
		layers, _ := got.Layers()
		for _, l := range layers {
			rc, err := l.Compressed()
			if err != nil {
				t.Fatal(err)
			}
			rc.Close()
		}
	}
}

func TestOversizedManifestRefused(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "hub.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	r, err := New(db, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r)
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/v2/models/x/manifests/1", strings.NewReader(strings.Repeat("a", MaxManifestBytes+1)))
	req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d", resp.StatusCode)
	}
	db.View(func(tx *bolt.Tx) error {
		if n := tx.Bucket(bucketManifests).Stats().KeyN; n != 0 {
			t.Fatalf("%d journal entries for a refused manifest", n)
		}
		return nil
	})
}
