package durable_test

import (
	"github.com/edgefleet/edgefleet/deploy/testenv"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgefleet/edgefleet/hil-tests/powerfs"
	"github.com/edgefleet/edgefleet/ota/durable"
)

// TestSurvivesPowerCut (root, FUSE) is the regression test for the HIL power-cut
// finding: files the agent synced vanished with their directory entries.
// On powerfs only synced data and synced directory entries survive a cut.
func TestSurvivesPowerCut(t *testing.T) {
	testenv.RequireFUSE(t)
	fsys := powerfs.New(powerfs.Options{})
	mnt := filepath.Join(t.TempDir(), "mnt")
	m, err := fsys.Mount(mnt)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(mnt, "data", "fleet")
	if err := durable.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	id := filepath.Join(dir, "device.crt")
	if err := durable.WriteFile(id, []byte("v1"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A file synced by its writer (as bbolt does), then its name synced.
	db := filepath.Join(mnt, "data", "cache.db")
	f, err := os.Create(db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("pages"); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := durable.SyncParent(db); err != nil {
		t.Fatal(err)
	}
	// Without SyncParent the same file is lost: the cut is real.
	lost := filepath.Join(mnt, "data", "unsynced-name")
	if err := os.WriteFile(lost, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if f, err := os.Open(lost); err == nil {
		f.Sync()
		f.Close()
	}
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	fsys.PowerCut()
	if m, err = fsys.Mount(mnt); err != nil {
		t.Fatal(err)
	}
	defer m.Unmount()
	for path, want := range map[string]string{id: "v1", db: "pages"} {
		b, err := os.ReadFile(path)
		if err != nil || string(b) != want {
			t.Errorf("%s after the power cut: %q, %v; want %q", path, b, err, want)
		}
	}
	if _, err := os.Stat(lost); err == nil {
		t.Error("a file whose directory was never synced survived the cut: powerfs does not cut")
	}
}
