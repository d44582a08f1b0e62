// Package durable writes files so that, after a crash or power cut, a
// reader finds either the old content or the complete new content, never a
// torn or empty file: data goes to a temporary file in the same folder,
// which is fsynced, renamed over the target, and then the folder is
// fsynced so the rename itself survives.
//
// It is the one implementation of this for the whole module: keys and
// certificates (hub/ca, agent/fleet), configuration and state files (hub,
// agent/fleet), exported and quantized models (ota, cmd). It lives under
// ota/ because agent, hub and cmd all import ota already, so this adds no
// dependency edge between agent and hub, and it imports only the standard
// library.
package durable

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// WriteFile writes data to path with permissions perm, atomically and
// durably (see the package documentation). An existing file is replaced;
// on error the target is unchanged and no temporary file is left.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return WriteFrom(path, bytes.NewReader(data), perm)
}

// WriteFrom is WriteFile with the content read from r.
func WriteFrom(path string, r io.Reader, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := io.Copy(f, r); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return SyncDir(dir)
}

// SyncDir fsyncs a folder, making the creation, rename or removal of the
// entries in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync folder %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync folder %s: %w", dir, err)
	}
	return nil
}

// SyncParent fsyncs the folder holding path, after path was created or
// renamed there (bbolt's Open creates its file without it).
func SyncParent(path string) error { return SyncDir(filepath.Dir(path)) }

// MkdirAll is os.MkdirAll that also makes the folders it created
// durable: each one's entry in its parent is fsynced. Without it a power
// cut can take a freshly created data folder, and everything synced in
// it, away (found by hil-tests' power-cut scenario).
func MkdirAll(dir string, perm os.FileMode) error {
	dir = filepath.Clean(dir)
	var missing []string
	for p := dir; ; {
		if _, err := os.Stat(p); err == nil || !errors.Is(err, fs.ErrNotExist) {
			break // exists, or os.MkdirAll reports the error
		}
		missing = append(missing, p)
		parent := filepath.Dir(p)
		if parent == p {
			break
		}
		p = parent
	}
	if err := os.MkdirAll(dir, perm); err != nil {
		return err
	}
	for i := len(missing) - 1; i >= 0; i-- { // top down
		if err := SyncParent(missing[i]); err != nil {
			return err
		}
	}
	return nil
}
