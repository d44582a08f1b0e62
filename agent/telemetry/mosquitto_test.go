package telemetry

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/hub/ca"
)

// startMosquitto runs Debian's Mosquitto with the documented configuration
// in hub/broker/mosquitto (only port and file paths changed), trusting CA
// c. (hub/internal/mosquittotest does the same for the hub's tests; it is
// internal to hub/.) It skips without Mosquitto unless CI is set.
func startMosquitto(t testing.TB, c *ca.CA) string {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/mosquitto"); serr == nil {
			bin = "/usr/sbin/mosquitto"
		} else if os.Getenv("CI") != "" {
			t.Fatal("mosquitto not installed (apt-get install mosquitto; make deps-apt)")
		} else {
			t.Skip("mosquitto not installed; set CI to make this a failure")
		}
	}
	dir := t.TempDir()
	srv, err := c.IssueServer([]string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ca.EncodeKey(srv.PrivateKey)
	crl, err := c.CRL(nil, 1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	conf, err := os.ReadFile(filepath.Join("..", "..", "hub", "broker", "mosquitto", "mosquitto.conf"))
	if err != nil {
		t.Fatal(err)
	}
	acl, err := os.ReadFile(filepath.Join("..", "..", "hub", "broker", "mosquitto", "acl"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	files := map[string][]byte{"ca.crt": c.CertPEM(), "broker.crt": ca.EncodeCert(srv.Leaf), "broker.key": key, "crl.pem": crl, "acl": acl}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range map[string]string{
		"listener": port + " 127.0.0.1", "persistence_location": dir + "/",
		"cafile": filepath.Join(dir, "ca.crt"), "certfile": filepath.Join(dir, "broker.crt"),
		"keyfile": filepath.Join(dir, "broker.key"), "crlfile": filepath.Join(dir, "crl.pem"),
		"acl_file": filepath.Join(dir, "acl"),
	} {
		re := regexp.MustCompile(`(?m)^` + k + ` .*$`)
		if !re.Match(conf) {
			t.Fatalf("mosquitto.conf has no %q line", k)
		}
		conf = re.ReplaceAllLiteral(conf, []byte(k+" "+v))
	}
	if u, err := user.Current(); err == nil {
		conf = append(conf, "user "+u.Username+"\n"...)
	}
	path := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(path, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", path)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	hubCert, err := c.IssueClient(ca.HubIdentity, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr, c.ClientTLS(&hubCert))
		if err == nil {
			conn.Close()
			return fmt.Sprintf("mqtts://%s", addr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto did not come up on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
