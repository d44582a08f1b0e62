package testenv

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/hub/ca"
	"github.com/edgefleet/edgefleet/ota/durable"
)

// MosquittoBinary returns the mosquitto executable, or "" when there is none.
func MosquittoBinary() string {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/mosquitto"); err == nil {
		return "/usr/sbin/mosquitto"
	}
	return ""
}

// RequireMosquitto returns the mosquitto executable; without one the test
// is skipped (failed under CI).
func RequireMosquitto(t testing.TB) string {
	t.Helper()
	bin := MosquittoBinary()
	if bin == "" {
		Missing(t, "mosquitto", "apt-get install mosquitto; make deps-apt")
	}
	return bin
}

// MosquittoConfigDir is the folder of the documented Mosquitto
// configuration (hub/broker/mosquitto) the tests run with.
func MosquittoConfigDir() string {
	return filepath.Join(RepoRoot(), "hub", "broker", "mosquitto")
}

// Mosquitto is a Debian Mosquitto running for a test.
type Mosquitto struct {
	URL  string // mqtts://127.0.0.1:port
	Addr string // 127.0.0.1:port
	Dir  string // its files: certificates, CRL, ACL, configuration

	t    testing.TB
	bin  string
	conf string
	ca   *ca.CA

	mu   sync.Mutex // guards cmd, out, exit
	cmd  *exec.Cmd
	out  *bytes.Buffer
	exit chan struct{}
}

// StartMosquitto runs Mosquitto with the documented configuration in
// hub/broker/mosquitto (only the port, file paths and the user to run as
// change), a server certificate from c and the CRL (PEM; nil writes an
// empty one), and waits until it accepts TLS connections. A start that
// fails (the port taken between choosing and binding it) is retried on
// another port. It stops when the test ends.
func StartMosquitto(t testing.TB, c *ca.CA, crl []byte) *Mosquitto {
	t.Helper()
	bin := RequireMosquitto(t)
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
	acl, err := os.ReadFile(filepath.Join(MosquittoConfigDir(), "acl"))
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
	m := &Mosquitto{Dir: dir, t: t, bin: bin, conf: filepath.Join(dir, "mosquitto.conf"), ca: c}
	t.Cleanup(m.Stop)
	var lastErr error
	for range 3 {
		addr := FreeAddr(t)
		if err := m.configure(addr); err != nil {
			t.Fatal(err)
		}
		m.URL, m.Addr = "mqtts://"+addr, addr
		if lastErr = m.start(); lastErr == nil {
			return m
		}
		m.Stop()
	}
	t.Fatalf("start mosquitto: %v", lastErr)
	return nil
}

// configure writes the configuration for a listener on addr.
func (m *Mosquitto) configure(addr string) error {
	_, port, _ := net.SplitHostPort(addr)
	conf, err := rewriteConf(filepath.Join(MosquittoConfigDir(), "mosquitto.conf"), map[string]string{
		"listener":             port + " 127.0.0.1",
		"persistence_location": m.Dir + "/",
		"cafile":               filepath.Join(m.Dir, "ca.crt"),
		"certfile":             filepath.Join(m.Dir, "broker.crt"),
		"keyfile":              filepath.Join(m.Dir, "broker.key"),
		"crlfile":              filepath.Join(m.Dir, "crl.pem"),
		"acl_file":             filepath.Join(m.Dir, "acl"),
	})
	if err != nil {
		return err
	}
	if u, err := user.Current(); err == nil {
		conf += "user " + u.Username + "\n" // mosquitto run as root drops to "mosquitto" otherwise
	}
	conf += "log_dest stdout\nlog_type error\nlog_type warning\nlog_type notice\n"
	return os.WriteFile(m.conf, []byte(conf), 0o600)
}

// rewriteConf replaces the values of the given keys in a mosquitto.conf
// and fails when a key is missing (the documented file changed shape).
func rewriteConf(path string, values map[string]string) (string, error) {
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

// start runs mosquitto and waits until it accepts a TLS connection with
// the hub's identity.
func (m *Mosquitto) start() error {
	out := &bytes.Buffer{}
	cmd := exec.Command(m.bin, "-c", m.conf)
	cmd.Stdout, cmd.Stderr = &syncWriter{w: out, mu: &m.mu}, &syncWriter{w: out, mu: &m.mu}
	if err := cmd.Start(); err != nil {
		return err
	}
	exit := make(chan struct{})
	go func() { cmd.Wait(); close(exit) }()
	m.mu.Lock()
	m.cmd, m.out, m.exit = cmd, out, exit
	m.mu.Unlock()
	hub, err := m.ca.IssueClient(ca.HubIdentity, time.Hour)
	if err != nil {
		return err
	}
	cfg := m.ca.ClientTLS(&hub)
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", m.Addr, cfg)
		if err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-exit:
			return fmt.Errorf("mosquitto on %s exited: %s", m.Addr, m.Log())
		default:
		}
		if time.Now().After(deadline) {
			return errors.Join(fmt.Errorf("mosquitto did not come up on %s: %w", m.Addr, err), errors.New(m.Log()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Log is what Mosquitto printed so far.
func (m *Mosquitto) Log() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.out == nil {
		return ""
	}
	return m.out.String()
}

// WriteCRL replaces the CRL file and makes Mosquitto reload it (SIGHUP).
func (m *Mosquitto) WriteCRL(crl []byte) {
	m.t.Helper()
	if err := durable.WriteFile(filepath.Join(m.Dir, "crl.pem"), crl, 0o600); err != nil {
		m.t.Fatal(err)
	}
	m.mu.Lock()
	cmd := m.cmd
	m.mu.Unlock()
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		m.t.Fatal(err)
	}
}

// Restart stops Mosquitto and starts it again on the same port with the
// same files (retained messages persist).
func (m *Mosquitto) Restart() {
	m.t.Helper()
	m.Stop()
	if err := m.start(); err != nil {
		m.t.Fatal(err)
	}
}

// Stop terminates Mosquitto (it saves its persistence file first).
func (m *Mosquitto) Stop() {
	m.mu.Lock()
	cmd, exit := m.cmd, m.exit
	m.cmd = nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exit:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-exit
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
