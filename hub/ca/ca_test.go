package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestLoadOrCreatePersists(t *testing.T) {
	dir := t.TempDir()
	c1, err := LoadOrCreate(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v, want 0600", fi.Mode().Perm())
	}
	c2, err := LoadOrCreate(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if c1.Fingerprint() != c2.Fingerprint() || len(c1.Fingerprint()) != 64 {
		t.Fatalf("reloaded CA differs: %s vs %s", c1.Fingerprint(), c2.Fingerprint())
	}
}

func TestLoadOrCreateRefusesHalfCA(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadOrCreate(dir, ""); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, CertFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(dir, ""); err == nil {
		t.Fatal("a key without certificate was silently replaced")
	}
	if _, err := os.Stat(filepath.Join(dir, CertFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("certificate was recreated: %v", err)
	}
}

func TestParseRejectsMismatchedKey(t *testing.T) {
	a, _ := New("a")
	b, _ := New("b")
	keyB, _ := EncodeKey(b.key)
	if _, err := Parse(a.CertPEM(), keyB); err == nil {
		t.Fatal("CA with someone else's key accepted")
	}
}

func csrPEM(t *testing.T, key any, cn string) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestSignDeviceCSR(t *testing.T) {
	c, err := New("")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	// The CSR asks for the admin identity; the hub decides the name.
	cert, certPEM, err := c.SignDeviceCSR(csrPEM(t, key, AdminIdentity), "edge-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "edge-1" {
		t.Fatalf("CN %q, want edge-1", cert.Subject.CommonName)
	}
	parsed, err := ParseCertPEM(certPEM)
	if err != nil || !parsed.Equal(cert) {
		t.Fatalf("PEM does not hold the certificate: %v", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: c.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("device cert does not verify as a client cert: %v", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: c.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Fatal("device cert verifies as a server cert")
	}
	if id := IdentityOf(cert); id.Kind != KindDevice || id.ID != "edge-1" || id.Serial.Cmp(cert.SerialNumber) != 0 {
		t.Fatalf("IdentityOf = %+v", id)
	}
}

func TestSignDeviceCSRRejects(t *testing.T) {
	c, _ := New("")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good := csrPEM(t, key, "")
	blk, _ := pem.Decode(good)
	tampered := append([]byte(nil), blk.Bytes...)
	tampered[len(tampered)-5] ^= 0xff // inside the signature
	weakRSA, _ := rsa.GenerateKey(rand.Reader, 1024)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	tests := []struct {
		name string
		csr  []byte
		id   string
	}{
		{"not PEM", []byte("hello"), "d1"},
		{"certificate instead of CSR", c.CertPEM(), "d1"},
		{"bad signature", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered}), "d1"},
		{"weak RSA key", csrPEM(t, weakRSA, ""), "d1"},
		{"P-224 key", csrPEM(t, p224, ""), "d1"},
		{"reserved identity", good, HubIdentity},
		{"wildcard id", good, "d+"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := c.SignDeviceCSR(tt.csr, tt.id, 0); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestIssueServer(t *testing.T) {
	c, _ := New("")
	tc, err := c.IssueServer([]string{"127.0.0.1", "localhost", "hub.example", "localhost", " "}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(tc.Certificate) != 2 {
		t.Fatalf("chain of %d, want leaf + CA (clients pin the CA during the handshake)", len(tc.Certificate))
	}
	for _, host := range []string{"127.0.0.1", "localhost", "hub.example"} {
		if _, err := tc.Leaf.Verify(x509.VerifyOptions{Roots: c.Pool(), DNSName: host}); err != nil {
			t.Errorf("server cert not valid for %s: %v", host, err)
		}
	}
	if _, err := tc.Leaf.Verify(x509.VerifyOptions{Roots: c.Pool(), DNSName: "other.example"}); err == nil {
		t.Error("server cert valid for a host it was not issued for")
	}
	if len(tc.Leaf.DNSNames) != 2 {
		t.Errorf("duplicate SANs: %v", tc.Leaf.DNSNames)
	}
}

func TestIdentityOf(t *testing.T) {
	c, _ := New("")
	tests := []struct {
		cn   string
		kind Kind
	}{
		{HubIdentity, KindHub},
		{AdminIdentity, KindAdmin},
		{"edge-7", KindDevice},
		{"_other", KindUnknown},
		{"a/b", KindUnknown},
	}
	for _, tt := range tests {
		tc, err := c.IssueClient(tt.cn, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if got := IdentityOf(tc.Leaf); got.Kind != tt.kind || got.ID != tt.cn {
			t.Errorf("IdentityOf(%q) = %+v, want kind %v", tt.cn, got, tt.kind)
		}
	}
}

func TestCRL(t *testing.T) {
	c, _ := New("")
	at := time.Now().Add(-time.Minute).Truncate(time.Second)
	b, err := c.CRL([]Revoked{{Serial: big.NewInt(42), At: at}, {Serial: big.NewInt(7), At: at}}, 3, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "X509 CRL" {
		t.Fatalf("not a PEM CRL: %q", b)
	}
	crl, err := x509.ParseRevocationList(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(c.Cert()); err != nil {
		t.Fatal(err)
	}
	if crl.Number.Int64() != 3 || len(crl.RevokedCertificateEntries) != 2 ||
		crl.RevokedCertificateEntries[0].SerialNumber.Int64() != 42 {
		t.Fatalf("CRL content: number %v, entries %+v", crl.Number, crl.RevokedCertificateEntries)
	}
}
