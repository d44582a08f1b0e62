// Package durable makes the agent's file system changes survive a power
// cut. fsync of a file makes its data durable but not its name: a file
// created or renamed in a directory is only durable once the directory
// itself is synced, which neither os.MkdirAll, os.Rename nor bbolt's Open
// do. Without it a power cut can take the agent's identity, model cache
// and telemetry queue away although every write to them was synced (the
// HIL suite's power-cut scenario found this: hil-tests/powerfs).
package durable

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// SyncDir fsyncs directory dir, making the names created, renamed or
// removed in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// SyncParent fsyncs the directory holding path, after path was created
// or renamed there.
func SyncParent(path string) error { return SyncDir(filepath.Dir(path)) }

// MkdirAll is os.MkdirAll that also makes the directories it created
// durable: each one's entry in its parent is synced.
func MkdirAll(dir string, perm os.FileMode) error {
	dir = filepath.Clean(dir)
	var missing []string
	for p := dir; ; {
		if _, err := os.Stat(p); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			break // os.MkdirAll reports it
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
	// Top down: each created directory's name lives in its parent.
	for i := len(missing) - 1; i >= 0; i-- {
		if err := SyncParent(missing[i]); err != nil {
			return err
		}
	}
	return nil
}

// WriteFileAtomic replaces path with data through a synced temporary
// file, a rename and a sync of the directory: after a crash or power cut
// path holds either the old or the new contents.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return SyncParent(path)
}
