// Package mosquittotest starts a real Mosquitto for tests, configured with
// the documented files in hub/broker/mosquitto (only the port, file paths
// and the user to run as are changed).
package mosquittotest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/hub/ca"
)

// Binary returns the mosquitto executable, or "" when there is none.
func Binary() string {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/mosquitto"); err == nil {
		return "/usr/sbin/mosquitto"
	}
	return ""
}

// Require skips the test when Mosquitto is missing and CI is unset, and
// fails it when Mosquitto is missing under CI.
func Require(t testing.TB) string {
	t.Helper()
	bin := Binary()
	if bin == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("mosquitto not installed (apt-get install mosquitto; make deps-apt)")
		}
		t.Skip("mosquitto not installed; set CI to make this a failure")
	}
	return bin
}

// Broker is a running Mosquitto.
type Broker struct {
	// URL is "mqtts://127.0.0.1:<port>".
	URL  string
	Addr string
	Dir  string

	t    testing.TB
	bin  string
	conf string
	ca   *ca.CA

	mu  sync.Mutex // guards cmd, out
	cmd *exec.Cmd
	out *bytes.Buffer
}

// ConfigDir is the folder of the documented configuration.
func ConfigDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "broker", "mosquitto")
}

// Start runs Mosquitto with a server certificate from c and the CRL (PEM;
// nil writes an empty one), and waits until it accepts TLS connections.
func Start(t testing.TB, c *ca.CA, crl []byte) *Broker {
	t.Helper()
	bin := Require(t)
	dir := t.TempDir()
	srv, err := c.IssueServer([]string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ca.EncodeKey(srv.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if crl == nil {
		if crl, err = c.CRL(nil, 1, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	acl, err := os.ReadFile(filepath.Join(ConfigDir(), "acl"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"ca.crt":     c.CertPEM(),
		"broker.crt": ca.EncodeCert(srv.Leaf),
		"broker.key": key,
		"crl.pem":    crl,
		"acl":        acl,
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)

	conf, err := rewrite(filepath.Join(ConfigDir(), "mosquitto.conf"), map[string]string{
		"listener":             port + " 127.0.0.1",
		"persistence_location": dir + "/",
		"cafile":               filepath.Join(dir, "ca.crt"),
		"certfile":             filepath.Join(dir, "broker.crt"),
		"keyfile":              filepath.Join(dir, "broker.key"),
		"crlfile":              filepath.Join(dir, "crl.pem"),
		"acl_file":             filepath.Join(dir, "acl"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if u, err := user.Current(); err == nil {
		conf += "user " + u.Username + "\n" // mosquitto run as root drops to "mosquitto" otherwise
	}
	conf += "log_dest stdout\nlog_type error\nlog_type warning\nlog_type notice\n"
	confPath := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	b := &Broker{URL: "mqtts://" + addr, Addr: addr, Dir: dir, t: t, bin: bin, conf: confPath, ca: c}
	b.start()
	t.Cleanup(b.Stop)
	return b
}

// rewrite replaces the values of the given keys in a mosquitto.conf and
// fails when a key is missing (the documented file changed shape).
func rewrite(path string, values map[string]string) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	seen := map[string]bool{}
	var out strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		line := sc.Text()
		key, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if v, ok := values[key]; ok && !strings.HasPrefix(strings.TrimSpace(line), "#") {
			line = key + " " + v
			seen[key] = true
		}
		out.WriteString(line + "\n")
	}
	for k := range values {
		if !seen[k] {
			return "", fmt.Errorf("%s: no %q line", path, k)
		}
	}
	return out.String(), nil
}

func (b *Broker) start() {
	b.t.Helper()
	out := &bytes.Buffer{}
	cmd := exec.Command(b.bin, "-c", b.conf)
	cmd.Stdout, cmd.Stderr = &syncWriter{w: out, mu: &b.mu}, &syncWriter{w: out, mu: &b.mu}
	if err := cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	b.mu.Lock()
	b.cmd, b.out = cmd, out
	b.mu.Unlock()
	hub, err := b.ca.IssueClient(ca.HubIdentity, time.Hour)
	if err != nil {
		b.t.Fatal(err)
	}
	cfg := b.ca.ClientTLS(&hub)
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", b.Addr, cfg)
		if err == nil {
			conn.Close()
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("mosquitto did not come up on %s: %v\n%s", b.Addr, err, b.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Log is what Mosquitto printed so far.
func (b *Broker) Log() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.out == nil {
		return ""
	}
	return b.out.String()
}

// WriteCRL replaces the CRL file and makes Mosquitto reload it (SIGHUP).
func (b *Broker) WriteCRL(crl []byte) {
	b.t.Helper()
	if err := ca.WriteFileAtomic(filepath.Join(b.Dir, "crl.pem"), crl, 0o600); err != nil {
		b.t.Fatal(err)
	}
	b.mu.Lock()
	cmd := b.cmd
	b.mu.Unlock()
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		b.t.Fatal(err)
	}
}

// Restart stops Mosquitto and starts it again on the same port with the
// same files (retained messages persist).
func (b *Broker) Restart() {
	b.t.Helper()
	b.Stop()
	b.start()
}

// Stop terminates Mosquitto (it saves its persistence file first).
func (b *Broker) Stop() {
	b.mu.Lock()
	cmd := b.cmd
	b.cmd = nil
	b.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

type syncWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
