package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/deploy/testenv"
)

// initORT loads onnxruntime, skipping the test when the library is missing
// (failing it under CI).
func initORT(t *testing.T) {
	t.Helper()
	if _, err := runtime.Init(testenv.ORTLibrary(t)); err != nil {
		t.Fatal(err)
	}
}

// run executes the edgefleet command line in-process.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestModelImportLsRm(t *testing.T) {
	initORT(t)
	data := t.TempDir()
	cnn := testenv.RepoRoot() + "/agent/testdata/digits/cnn.onnx"
	for i, want := range []string{"version 1", "version 2"} {
		out, err := run(t, "model", "import", "--data", data, "--name", "digits-cnn", cnn)
		if err != nil || !strings.Contains(out, want) {
			t.Fatalf("import %d: %q, %v", i, out, err)
		}
	}
	if out, err := run(t, "model", "import", "--data", data, "--name", "digits-cnn", "--version", "9", cnn); err != nil || !strings.Contains(out, "version 9") {
		t.Fatalf("import --version: %q %v", out, err)
	}
	out, err := run(t, "model", "ls", "--data", data)
	if err != nil || strings.Count(out, "digits-cnn") != 3 || !strings.Contains(out, "85 KiB") {
		t.Fatalf("ls: %q %v", out, err)
	}
	if _, err := run(t, "model", "rm", "--data", data, "digits-cnn", "2"); err != nil {
		t.Fatal(err)
	}
	if out, _ := run(t, "model", "ls", "--data", data); strings.Count(out, "digits-cnn") != 2 {
		t.Fatalf("ls after rm: %q", out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"model", "import", "--data", data, "--name", "x", "/nonexistent.onnx"}, "no such file"},
		{[]string{"model", "import", "--data", data, "--name", "x", testenv.RepoRoot() + "/README.md"}, "not a model"},
		{[]string{"model", "import", "--data", data, cnn}, "--name is required"},
		{[]string{"model", "import", "--data", data, "--name", "digits-cnn", "--version", "9", cnn}, "exists"},
		{[]string{"model", "import", "--name", "x", cnn}, "exactly one of --data"},
		{[]string{"model", "rm", "--data", data, "nope"}, "not found"},
	} {
		if _, err := run(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestAgentCheckConfig(t *testing.T) {
	if out, err := run(t, "agent", "--data", t.TempDir(), "--check-config"); err != nil || !strings.Contains(out, "configuration OK") {
		t.Fatalf("%q %v", out, err)
	}
	if _, err := run(t, "agent", "--check-config", "--providers", "npu"); err == nil ||
		!strings.Contains(err.Error(), "data:") || !strings.Contains(err.Error(), "npu") {
		t.Fatalf("bad config: %v", err)
	}
}
