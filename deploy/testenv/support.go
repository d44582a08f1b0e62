package testenv

import (
	"bytes"
	"os"
	"sync"
	"testing"
)

// RequireFUSE fails or skips (see Missing) unless the test runs as root
// with /dev/fuse, which mounting a FUSE file system needs.
func RequireFUSE(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "root (to mount FUSE)", "run the tests as root, as CI does")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		Missing(t, "/dev/fuse", "apt-get install fuse3")
	}
}

// Buffer is a bytes.Buffer that a process's output and the test may use at
// once (for exec.Cmd's Stdout/Stderr while the test reads the log).
type Buffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

// Write appends p.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
