package sidecar

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"sync"
	"time"
)

// DNSNames are the names the API server may use for the injector's Service:
// it connects to <service>.<namespace>.svc.
func DNSNames(service, namespace string) []string {
	return []string{
		service + "." + namespace + ".svc",
		service + "." + namespace + ".svc.cluster.local",
		service + "." + namespace,
		service,
	}
}

// NewCA returns a self-signed ECDSA P-256 CA certificate and key, PEM
// encoded, valid for validity.
func NewCA(commonName string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: commonName},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	return encode(der, key)
}

// IssueServing issues a serving certificate for dnsNames from the CA
// (PEM certificate and key), valid for validity.
func IssueServing(caCertPEM, caKeyPEM []byte, dnsNames []string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	ca, err := tls.X509KeyPair(caCertPEM, caKeyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("CA: %w", err)
	}
	caCert, err := x509.ParseCertificate(ca.Certificate[0])
	if err != nil {
		return nil, nil, fmt.Errorf("CA: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	notAfter := now.Add(validity)
	if notAfter.After(caCert.NotAfter) {
		notAfter = caCert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: dnsNames[0]}, DNSNames: dnsNames,
		NotBefore: now.Add(-time.Hour), NotAfter: notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, ca.PrivateKey)
	if err != nil {
		return nil, nil, err
	}
	return encode(der, key)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func encode(der []byte, key *ecdsa.PrivateKey) ([]byte, []byte, error) {
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), nil
}

// CertSource supplies the injector's serving certificate per TLS handshake
// (its GetCertificate goes into tls.Config): from files it reloads when
// they change (cert-manager renews them in the mounted Secret), or issued
// by itself from a CA and renewed when a third of its validity is left.
type CertSource struct {
	log *slog.Logger
	now func() time.Time

	certFile, keyFile string   // the files (file mode) or the CA's files (CA mode)
	dnsNames          []string // CA mode: the names to issue for
	validity          time.Duration

	mu      sync.Mutex
	cert    *tls.Certificate
	leaf    *x509.Certificate
	stamp   string    // file mode: size and mtime of both files when loaded
	checked time.Time // file mode: last stat
}

// FileCerts serves certFile/keyFile and reloads them when they change.
func FileCerts(certFile, keyFile string, log *slog.Logger) (*CertSource, error) {
	s := &CertSource{certFile: certFile, keyFile: keyFile, log: orDefault(log), now: time.Now}
	if err := s.reloadFiles(); err != nil {
		return nil, err
	}
	return s, nil
}

// IssuedCerts serves certificates it issues itself for dnsNames from the CA
// in caCertFile/caKeyFile, each valid for validity, renewed when a third
// of that is left (the CA files are read again at each renewal).
func IssuedCerts(caCertFile, caKeyFile string, dnsNames []string, validity time.Duration, log *slog.Logger) (*CertSource, error) {
	if len(dnsNames) == 0 {
		return nil, errors.New("no DNS names for the serving certificate")
	}
	s := &CertSource{certFile: caCertFile, keyFile: caKeyFile, dnsNames: dnsNames, validity: validity,
		log: orDefault(log), now: time.Now}
	if err := s.issue(); err != nil {
		return nil, err
	}
	return s, nil
}

func orDefault(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.Default()
	}
	return l
}

// GetCertificate implements tls.Config.GetCertificate.
func (s *CertSource) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	switch {
	case s.dnsNames != nil:
		left := s.leaf.NotAfter.Sub(now)
		if left < s.validity/3 {
			if err := s.issueLocked(); err != nil {
				s.log.Error("renewing the serving certificate", "err", err, "expires", s.leaf.NotAfter)
			}
		}
	case now.Sub(s.checked) >= time.Second:
		s.checked = now
		if st, err := s.fileStamp(); err == nil && st != s.stamp {
			if err := s.reloadFilesLocked(); err != nil {
				s.log.Error("reloading the serving certificate; keeping the old one", "err", err)
			}
		}
	}
	return s.cert, nil
}

// NotAfter returns when the certificate served now expires.
func (s *CertSource) NotAfter() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leaf.NotAfter
}

func (s *CertSource) fileStamp() (string, error) {
	var b bytes.Buffer
	for _, f := range []string{s.certFile, s.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%d/%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String(), nil
}

func (s *CertSource) reloadFiles() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reloadFilesLocked()
}

func (s *CertSource) reloadFilesLocked() error {
	stamp, err := s.fileStamp()
	if err != nil {
		return fmt.Errorf("TLS certificate: %w", err)
	}
	c, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
	if err != nil {
		return fmt.Errorf("TLS certificate: %w", err)
	}
	return s.set(&c, stamp)
}

func (s *CertSource) issue() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issueLocked()
}

func (s *CertSource) issueLocked() error {
	caCert, err := os.ReadFile(s.certFile)
	if err != nil {
		return fmt.Errorf("CA certificate: %w", err)
	}
	caKey, err := os.ReadFile(s.keyFile)
	if err != nil {
		return fmt.Errorf("CA key: %w", err)
	}
	certPEM, keyPEM, err := IssueServing(caCert, caKey, s.dnsNames, s.validity)
	if err != nil {
		return err
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return err
	}
	return s.set(&c, "")
}

func (s *CertSource) set(c *tls.Certificate, stamp string) error {
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return fmt.Errorf("TLS certificate: %w", err)
	}
	c.Leaf = leaf
	s.cert, s.leaf, s.stamp = c, leaf, stamp
	s.log.Info("serving certificate loaded", "dns", leaf.DNSNames, "expires", leaf.NotAfter)
	return nil
}
