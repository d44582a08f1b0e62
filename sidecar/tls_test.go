package sidecar_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/sidecar"
)

func writeCA(t *testing.T, dir string) (string, string, *x509.CertPool) {
	t.Helper()
	crt, key, err := sidecar.NewCA("test-ca", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, k := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if err := os.WriteFile(c, crt, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(k, key, 0o600); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(crt)
	return c, k, pool
}

// serve runs the injector's HTTPS server on loopback and returns a client
// that trusts pool and dials the server whatever the name.
func serve(t *testing.T, certs *sidecar.CertSource, pool *x509.CertPool, serverName string) *http.Client {
	t.Helper()
	srv := sidecar.NewServer(sidecar.NewInjector(defaults(), nil, nil), certs)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	addr := ln.Addr().String()
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: serverName},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		DisableKeepAlives: true,
	}}
}

// TestIssuedCertificate: the injector's own certificate names
// <svc>.<ns>.svc, verifies against the CA, and an admission review goes
// through over TLS.
func TestIssuedCertificate(t *testing.T) {
	dir := t.TempDir()
	c, k, pool := writeCA(t, dir)
	certs, err := sidecar.IssuedCerts(c, k, sidecar.DNSNames("edgefleet-injector", "edgefleet"), time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	cl := serve(t, certs, pool, "edgefleet-injector.edgefleet.svc")
	pod, _ := os.ReadFile("testdata/pods/deployment.json")
	resp, err := cl.Post("https://injector"+sidecar.MutatePath, "application/json", strings.NewReader(string(review(t, pod, "tls"))))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"uid":"tls"`) || !strings.Contains(string(b), `"patchType":"JSONPatch"`) {
		t.Fatalf("HTTP %d %s", resp.StatusCode, b)
	}
	leaf := resp.TLS.PeerCertificates[0]
	if !slices.Contains(leaf.DNSNames, "edgefleet-injector.edgefleet.svc") {
		t.Errorf("SANs %v", leaf.DNSNames)
	}
}

// TestFileCertificateReload: a certificate file replaced on disk (as
// cert-manager renews a mounted Secret) is served from the next handshake
// on, without a restart; a broken replacement keeps the old one serving.
func TestFileCertificateReload(t *testing.T) {
	dir := t.TempDir()
	c, k, pool := writeCA(t, dir)
	caCrt, _ := os.ReadFile(c)
	caKey, _ := os.ReadFile(k)
	crtFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	issue := func() *x509.Certificate {
		crt, key, err := sidecar.IssueServing(caCrt, caKey, sidecar.DNSNames("inj", "ns"), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		// Write the key first: a handshake between the two writes sees a
		// mismatched pair and keeps the old certificate.
		if err := os.WriteFile(keyFile, key, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(crtFile, crt, 0o600); err != nil {
			t.Fatal(err)
		}
		p, _ := tls.X509KeyPair(crt, key)
		leaf, _ := x509.ParseCertificate(p.Certificate[0])
		return leaf
	}
	first := issue()
	certs, err := sidecar.FileCerts(crtFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	cl := serve(t, certs, pool, "inj.ns.svc")
	served := func() *x509.Certificate {
		resp, err := cl.Get("https://inj/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.TLS.PeerCertificates[0]
	}
	if got := served(); !got.Equal(first) {
		t.Fatal("not serving the first certificate")
	}
	second := issue()
	deadline := time.Now().Add(10 * time.Second)
	for !served().Equal(second) {
		if time.Now().After(deadline) {
			t.Fatal("the renewed certificate was not picked up")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := os.WriteFile(crtFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	if got := served(); !got.Equal(second) {
		t.Fatal("a broken certificate file replaced the working one")
	}
}
