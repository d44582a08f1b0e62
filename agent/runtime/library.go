// Package runtime runs ONNX models with onnxruntime (through
// github.com/yalue/onnxruntime_go): it finds and loads the shared library,
// creates sessions from in-memory model bytes with an ordered list of
// execution providers, falls back to CPU when a GPU provider is unavailable,
// and converts between tensor.Tensor and onnxruntime values.
//
// # Caveats
//
// onnxruntime keeps one process-wide environment: Init loads the library once
// and later calls with another path fail. Sessions are safe for concurrent
// Run calls.
package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// LibraryEnv is the environment variable that names the onnxruntime shared library.
const LibraryEnv = "EDGEFLEET_ORT_LIB"

// LibraryName is the file name of the onnxruntime shared library that `make deps` installs.
const LibraryName = "libonnxruntime.so.1"

// ErrLibraryNotFound is returned when no onnxruntime shared library can be found.
var ErrLibraryNotFound = errors.New("onnxruntime shared library not found")

// LibraryCandidates lists, in order, where FindLibrary looks when neither a
// flag nor EDGEFLEET_ORT_LIB names the library: the .deps cache of the
// repository (relative to the working directory and its parents, and to the
// executable and its parents) and the user cache directory.
func LibraryCandidates() []string {
	var out []string
	add := func(dir string) {
		for d := dir; ; d = filepath.Dir(d) {
			out = append(out, filepath.Join(d, ".deps", "onnxruntime", LibraryName))
			if filepath.Dir(d) == d {
				return
			}
		}
	}
	if wd, err := os.Getwd(); err == nil {
		add(wd)
	}
	if exe, err := os.Executable(); err == nil {
		add(filepath.Dir(exe))
	}
	if c, err := os.UserCacheDir(); err == nil {
		out = append(out, filepath.Join(c, "edgefleet", "onnxruntime", LibraryName))
	}
	out = append(out, "/usr/lib/edgefleet/"+LibraryName, "/usr/local/lib/"+LibraryName)
	return out
}

// FindLibrary returns the onnxruntime library path: flagPath if set, else
// $EDGEFLEET_ORT_LIB, else the first existing LibraryCandidates entry.
func FindLibrary(flagPath string) (string, error) {
	for _, p := range []string{flagPath, os.Getenv(LibraryEnv)} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%w: %s: %w (run `make deps`, or point --ort-lib / %s at libonnxruntime.so.1)", ErrLibraryNotFound, p, err, LibraryEnv)
		}
		return p, nil
	}
	for _, p := range LibraryCandidates() {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: run `make deps` to fetch onnxruntime 1.24.3 into .deps/, or set --ort-lib / %s", ErrLibraryNotFound, LibraryEnv)
}

var (
	initMu   sync.Mutex // guards initPath
	initPath string
)

// Init finds (see FindLibrary) and loads the onnxruntime library and creates
// the process-wide environment. It is idempotent for the same library; it
// also accepts an environment that another package of this process already
// initialised.
func Init(flagPath string) (string, error) {
	initMu.Lock()
	defer initMu.Unlock()
	if initPath != "" {
		return initPath, nil
	}
	if ort.IsInitialized() {
		initPath = "(initialised elsewhere)"
		return initPath, nil
	}
	p, err := FindLibrary(flagPath)
	if err != nil {
		return "", err
	}
	ort.SetSharedLibraryPath(p)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		return "", fmt.Errorf("initialising onnxruntime from %s: %w", p, err)
	}
	initPath = p
	return p, nil
}

// Version returns the loaded onnxruntime version ("" before Init).
func Version() string {
	if !ort.IsInitialized() {
		return ""
	}
	return ort.GetVersion()
}
