// Package testenv gives the agent's tests onnxruntime and the agent's
// committed fixtures. Finding the library and the `make deps` models, and
// the skip-or-fail-under-CI rule, belong to deploy/testenv, which every
// tree's tests share; this package only adds what is the agent's own.
package testenv

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	ortrt "github.com/edgefleet/edgefleet/agent/runtime"
	shared "github.com/edgefleet/edgefleet/deploy/testenv"
)

// RepoRoot returns the repository root (the folder holding go.mod).
func RepoRoot() string { return shared.RepoRoot() }

// Eventually is deploy/testenv.Eventually, for tests that import this package.
func Eventually(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	shared.Eventually(t, what, timeout, cond)
}

// DepsDir returns $EDGEFLEET_DEPS or <repo>/.deps.
func DepsDir() string { return shared.DepsDir() }

// InitORT initialises onnxruntime through the agent's runtime for the test
// process, skipping the test when the library is missing (failing it under
// CI).
func InitORT(t testing.TB) {
	t.Helper()
	if _, err := ortrt.Init(shared.ORTLibrary(t)); err != nil {
		t.Fatalf("init onnxruntime: %v", err)
	}
}

// Model returns the bytes of a model fetched by `make deps` (name as under
// .deps/models, e.g. "silero_vad_op18_ifless.onnx").
func Model(t testing.TB, name string) []byte {
	t.Helper()
	return shared.Model(t, name)
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
