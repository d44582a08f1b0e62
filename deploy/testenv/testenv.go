// Package testenv is the environment the tests of every tree (agent, hub,
// ota, quantize, cmd) run against: the onnxruntime library and sample
// models that `make deps` fetches, and real servers started on loopback —
// Debian's docker-registry, Mosquitto and PostgreSQL, go-containerregistry's
// embedded registry — plus the one poll helper, Eventually.
//
// It lives under deploy/ because it describes the machine the software is
// deployed and tested on (the Debian packages of the Makefile's APT_PKGS,
// the .deps cache of deploy/deps), and because agent, hub, ota and quantize
// tests all import it: an internal package of one tree could not be shared.
// It imports no agent or hub package except hub/ca (the Mosquitto starter
// issues the broker's certificate), so it adds no cycle.
//
// A dependency that is missing skips the test with the command that fetches
// it; with CI set in the environment it fails the test instead, so a CI run
// can never pass by skipping.
package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// RepoRoot returns the repository root (the folder holding go.mod).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// DepsDir returns $EDGEFLEET_DEPS or <repo>/.deps, where `make deps` puts
// the onnxruntime library and the sample models.
func DepsDir() string {
	if d := os.Getenv("EDGEFLEET_DEPS"); d != "" {
		return d
	}
	return filepath.Join(RepoRoot(), ".deps")
}

// Missing reports a dependency the test needs and does not have: under CI
// (env CI set) the test fails, otherwise it is skipped. fix says how to get
// the dependency.
func Missing(t testing.TB, what, fix string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is missing; CI must provide it (%s)", what, fix)
	}
	t.Skipf("%s is missing: %s (set CI to make this a failure)", what, fix)
}

// ORTLibEnv names the environment variable that points at the onnxruntime
// shared library (the agent's runtime and the quantizer read it too).
const ORTLibEnv = "EDGEFLEET_ORT_LIB"

// ORTLibrary returns the onnxruntime shared library the tests load:
// $EDGEFLEET_ORT_LIB, else .deps/onnxruntime/libonnxruntime.so.1. When it
// is missing the test is skipped (failed under CI). Callers hand the path to
// their runtime's initialiser (agent/runtime.Init, quantize.InitRuntime).
func ORTLibrary(t testing.TB) string {
	t.Helper()
	lib := os.Getenv(ORTLibEnv)
	if lib == "" {
		lib = filepath.Join(DepsDir(), "onnxruntime", "libonnxruntime.so.1")
	}
	if _, err := os.Stat(lib); err != nil {
		Missing(t, "onnxruntime library "+lib, "run `make deps`")
	}
	return lib
}

// Model returns the bytes of a model fetched by `make deps` (name as under
// .deps/models, e.g. "silero_vad_op18_ifless.onnx").
func Model(t testing.TB, name string) []byte {
	t.Helper()
	p := filepath.Join(DepsDir(), "models", name)
	b, err := os.ReadFile(p)
	if err != nil {
		Missing(t, p, "run `make deps`")
	}
	return b
}

// Eventually polls cond until it holds and fails the test when it still
// does not after timeout; what names the awaited condition in the failure.
// Polling starts at 100µs and backs off to every 20ms, so a condition that
// holds soon is seen soon and a long wait costs little CPU. The timeout only
// turns a hang into a failure: it is no timing assertion.
//
// To show that something did not happen, wait on the event that would have
// come first, or drive the code's injected clock, rather than sleeping.
func Eventually(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := 100 * time.Microsecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(wait)
		wait = min(2*wait, 20*time.Millisecond)
	}
}

// FreeAddr returns a loopback TCP address that was free a moment ago, for a
// server that must be told its port before it starts.
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func freeAddr() (string, error) {
	l, err := listenLoopback()
	if err != nil {
		return "", fmt.Errorf("free loopback port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}
