package durable_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/ota/durable"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key.pem")
	for _, tt := range []struct {
		data string
		perm os.FileMode
	}{{"first", 0o600}, {"second, replacing", 0o644}} {
		if err := durable.WriteFile(p, []byte(tt.data), tt.perm); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil || string(b) != tt.data {
			t.Fatalf("read %q, %v; want %q", b, err, tt.data)
		}
		st, _ := os.Stat(p)
		if st.Mode().Perm() != tt.perm {
			t.Errorf("mode %v, want %v", st.Mode().Perm(), tt.perm)
		}
	}
	assertOnly(t, dir, "key.pem")
}

type failingReader struct{ n int }

var errRead = errors.New("source failed")

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, errRead
	}
	r.n--
	p[0] = 'x'
	return 1, nil
}

// A write that fails half way leaves the old content and no temporary file.
func TestWriteFromFailureKeepsOld(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "model.onnx")
	if err := durable.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := durable.WriteFrom(p, &failingReader{n: 3}, 0o644)
	if !errors.Is(err, errRead) || !strings.Contains(err.Error(), p) {
		t.Fatalf("err %v, want the reader's error naming the file", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "old" {
		t.Fatalf("content %q after a failed write, want the old one", b)
	}
	assertOnly(t, dir, "model.onnx")
}

func TestWriteFileMissingFolder(t *testing.T) {
	err := durable.WriteFile(filepath.Join(t.TempDir(), "no", "such", "f"), []byte("x"), 0o644)
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err %v, want not-exist", err)
	}
}

func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("folder holds %v, want %v", got, names)
	}
}
