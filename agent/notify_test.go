package agent_test

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/agent/internal/testenv"
)

// notifySocket listens on a unixgram socket and points $NOTIFY_SOCKET (and
// a 100 ms watchdog) at it, as systemd does for a Type=notify unit with
// WatchdogSec=.
func notifySocket(t *testing.T) *net.UnixConn {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdnotify") // short: sun_path holds 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("WATCHDOG_USEC", "100000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	return conn
}

// nextNotify returns the next datagram, failing after 30 s.
func nextNotify(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no sd_notify message: %v", err)
	}
	return string(buf[:n])
}

// TestSystemdNotify runs the agent as systemd would run its Type=notify unit:
// READY=1 comes once the cached model serves, WATCHDOG=1 keeps coming from
// the serving loop, STOPPING=1 starts the drain.
func TestSystemdNotify(t *testing.T) {
	conn := notifySocket(t)
	r := startAgent(t, config.Config{}, map[string][]byte{"digits-cnn": testenv.Fixture(t, "digits/cnn.onnx")})

	ready := nextNotify(t, conn)
	if !strings.HasPrefix(ready, "READY=1\n") || !strings.Contains(ready, "STATUS=serving 1 model versions") {
		t.Fatalf("first notification = %q, want READY=1 with STATUS=serving 1 model versions", ready)
	}
	if ok, err := r.a.Models().ModelReady("digits-cnn", ""); err != nil || !ok {
		t.Fatalf("READY=1 sent before digits-cnn was ready (ready=%v, err=%v)", ok, err)
	}
	for range 3 {
		if m := nextNotify(t, conn); m != "WATCHDOG=1" {
			t.Fatalf("notification while serving = %q, want WATCHDOG=1", m)
		}
	}
	r.cancel()
	for {
		m := nextNotify(t, conn)
		if m == "STOPPING=1" {
			break
		}
		if m != "WATCHDOG=1" { // one may be in flight when the drain starts
			t.Fatalf("notification at shutdown = %q, want STOPPING=1", m)
		}
	}
	if err := <-r.done; err != nil {
		t.Fatalf("agent Run: %v", err)
	}
	r.done <- nil // for startAgent's cleanup
}
