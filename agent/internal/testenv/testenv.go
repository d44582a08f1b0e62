// Package testenv finds the files that `make deps` fetches (the onnxruntime
// library, sample models) and the committed fixtures, for tests.
//
// Outside CI a missing dependency skips the test with the command that
// fetches it; with CI set in the environment it fails the test, so a CI run
// can never pass by skipping.
package testenv

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	ortrt "github.com/edgefleet/edgefleet/agent/runtime"
)

// RepoRoot returns the repository root (the folder holding go.mod).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// DepsDir returns $EDGEFLEET_DEPS or <repo>/.deps.
func DepsDir() string {
	if d := os.Getenv("EDGEFLEET_DEPS"); d != "" {
		return d
	}
	return filepath.Join(RepoRoot(), ".deps")
}

func missing(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is missing; CI must run `make deps` first", what)
	}
	t.Skipf("%s is missing: run `make deps`", what)
}

// InitORT initialises onnxruntime for the test process, skipping or failing
// the test when the library is missing.
func InitORT(t testing.TB) {
	t.Helper()
	lib := os.Getenv(ortrt.LibraryEnv)
	if lib == "" {
		lib = filepath.Join(DepsDir(), "onnxruntime", ortrt.LibraryName)
	}
	if _, err := os.Stat(lib); err != nil {
		missing(t, lib)
	}
	if _, err := ortrt.Init(lib); err != nil {
		t.Fatalf("init onnxruntime: %v", err)
	}
}

// Model returns the bytes of a model fetched by `make deps` (name as under
// .deps/models, e.g. "silero_vad_op18_ifless.onnx").
func Model(t testing.TB, name string) []byte {
	t.Helper()
	p := filepath.Join(DepsDir(), "models", name)
	b, err := os.ReadFile(p)
	if err != nil {
		missing(t, p)
	}
	return b
}

// Fixture returns the bytes of a committed fixture below agent/testdata.
func Fixture(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(RepoRoot(), "agent", "testdata", rel))
	if err != nil {
		t.Fatalf("fixture: %v", err)
	}
	return b
}
