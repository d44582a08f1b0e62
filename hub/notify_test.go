package hub_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSystemdNotify runs the hub as its Type=notify unit with WatchdogSec=
// would: READY=1 once it serves (its API answers), WATCHDOG=1 from the
// serving loop, STOPPING=1 at shutdown. The socket is a real unixgram
// socket, as systemd's.
func TestSystemdNotify(t *testing.T) {
	sock, err := os.MkdirTemp("", "sdnotify") // short: sun_path holds 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sock)
	path := filepath.Join(sock, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("WATCHDOG_USEC", "100000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	next := func() string {
		t.Helper()
		buf := make([]byte, 4096)
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no sd_notify message: %v", err)
		}
		return string(buf[:n])
	}

	r := startHub(t, t.TempDir(), nil)
	if m := next(); !strings.HasPrefix(m, "READY=1\n") {
		t.Fatalf("first notification = %q, want READY=1", m)
	}
	if err := r.admin(t).Health(context.Background()); err != nil {
		t.Fatalf("hub API after READY=1: %v", err)
	}
	for range 3 {
		if m := next(); m != "WATCHDOG=1" {
			t.Fatalf("notification while serving = %q, want WATCHDOG=1", m)
		}
	}
	r.Stop() // the datagrams wait in the socket buffer
	for {
		m := next()
		if m == "STOPPING=1" {
			break
		}
		if m != "WATCHDOG=1" {
			t.Fatalf("notification at shutdown = %q, want STOPPING=1", m)
		}
	}
}
