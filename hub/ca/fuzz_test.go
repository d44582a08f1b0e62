package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"
)

// FuzzSignDeviceCSR feeds arbitrary PEM to the CSR signer: it either
// refuses or issues a leaf client certificate for the asked device id,
// never a CA certificate, a server certificate or another name.
func FuzzSignDeviceCSR(f *testing.F) {
	c, err := New("")
	if err != nil {
		f.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"hub.example"}}, key)
	good := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	f.Add(good, "edge-1")
	f.Add(good[:len(good)/2], "edge-1")
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der[:len(der)-3]}), "edge-2")
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), "edge-3")
	f.Add(good, "../hub")
	f.Add([]byte("garbage"), "")
	f.Fuzz(func(t *testing.T, csr []byte, id string) {
		cert, certPEM, err := c.SignDeviceCSR(csr, id, time.Hour)
		if err != nil {
			return
		}
		if cert.Subject.CommonName != id || cert.IsCA || len(cert.DNSNames) != 0 || len(cert.IPAddresses) != 0 {
			t.Fatalf("issued %+v for %q", cert.Subject, id)
		}
		if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
			t.Fatalf("extended key usages %v, want client auth only", cert.ExtKeyUsage)
		}
		if blk, _ := pem.Decode(certPEM); blk == nil || blk.Type != "CERTIFICATE" {
			t.Fatal("certificate PEM unreadable")
		}
	})
}
