// Package ca is the hub's certificate authority: an ECDSA P-256 CA kept in
// the hub's data folder that signs device certificates from CSRs (common
// name = device id), the hub's TLS server certificate and the client
// certificates of the hub's own identities (the admin CLI, the hub's
// connection to an external broker).
//
// # Identities
//
// Every client certificate's common name says who holds it: a device id
// (see wire.ValidateDeviceID, which never starts with '_'), HubIdentity or
// AdminIdentity. IdentityOf classifies a verified certificate.
//
// # Files
//
//	ca.crt  the CA certificate (PEM), handed to agents at enrollment
//	ca.key  its private key (PEM, PKCS#8, mode 0600)
//
// # Caveats
//
// The CA key sits on the hub's disk; protect the data folder. Revocation is
// the hub's registry (checked on every connection) plus a CRL (CRL) for
// external brokers that read one.
package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/ota/durable"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// Reserved common names of the hub's own identities. Device ids cannot start
// with '_', so no device can hold them.
const (
	HubIdentity   = "_hub"
	AdminIdentity = "_admin"
)

// File names inside the CA folder.
const (
	CertFile = "ca.crt"
	KeyFile  = "ca.key"
)

// Default lifetimes.
const (
	DefaultCAValidity     = 20 * 365 * 24 * time.Hour
	DefaultDeviceValidity = 2 * 365 * 24 * time.Hour
	DefaultServerValidity = 365 * 24 * time.Hour
)

// ErrInvalidCSR is wrapped by errors about a refused certificate request.
var ErrInvalidCSR = errors.New("invalid certificate request")

// CA signs certificates. It is safe for concurrent use.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     *ecdsa.PrivateKey
}

// LoadOrCreate loads the CA from dir, creating a new one (and dir) when
// neither file exists. One file without the other is an error, never
// silently replaced: agents trust the existing CA.
func LoadOrCreate(dir, name string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		return Parse(certPEM, keyPEM)
	case errors.Is(certErr, os.ErrNotExist) && errors.Is(keyErr, os.ErrNotExist):
	case certErr != nil && !errors.Is(certErr, os.ErrNotExist):
		return nil, fmt.Errorf("ca: %w", certErr)
	case keyErr != nil && !errors.Is(keyErr, os.ErrNotExist):
		return nil, fmt.Errorf("ca: %w", keyErr)
	default:
		return nil, fmt.Errorf("ca: only one of %s and %s exists in %s; restore the other or remove both to create a new CA (enrolled devices will stop trusting the hub)", CertFile, KeyFile, dir)
	}
	c, err := New(name)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	keyPEM, err = encodeKey(c.key)
	if err != nil {
		return nil, err
	}
	// The key goes first: a crash between the two writes leaves a key
	// without certificate, which LoadOrCreate reports instead of
	// replacing.
	if err := durable.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := durable.WriteFile(certPath, c.certPEM, 0o644); err != nil {
		return nil, err
	}
	return c, nil
}

// New creates a CA in memory.
func New(name string) (*CA, error) {
	if name == "" {
		name = "edgefleet hub CA"
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"edgefleet"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(DefaultCAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	return &CA{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// Parse builds a CA from its PEM certificate and key.
func Parse(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, errors.New("ca: certificate is not a CA")
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, errors.New("ca: key: no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ca: key: %w", err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("ca: key does not match the certificate")
	}
	return &CA{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})}, nil
}

// Cert is the CA certificate.
func (c *CA) Cert() *x509.Certificate { return c.cert }

// CertPEM is the CA certificate in PEM.
func (c *CA) CertPEM() []byte { return c.certPEM }

// Pool is a pool holding only the CA certificate.
func (c *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.cert)
	return p
}

// Fingerprint is the lowercase hex SHA-256 of the CA certificate's DER.
func (c *CA) Fingerprint() string { return Fingerprint(c.cert) }

// Fingerprint is the lowercase hex SHA-256 of a certificate's DER.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// SignDeviceCSR checks a PEM certificate request's signature and issues a
// client certificate for device id with the CSR's public key. The CSR's
// own subject is ignored: the hub decides the identity.
func (c *CA) SignDeviceCSR(csrPEM []byte, id string, validity time.Duration) (*x509.Certificate, []byte, error) {
	if err := wire.ValidateDeviceID(id); err != nil {
		return nil, nil, err
	}
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, nil, fmt.Errorf("ca: no CERTIFICATE REQUEST PEM block: %w", ErrInvalidCSR)
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: %v: %w", err, ErrInvalidCSR)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, nil, fmt.Errorf("ca: CSR signature: %v: %w", err, ErrInvalidCSR)
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, nil, err
	}
	if validity <= 0 {
		validity = DefaultDeviceValidity
	}
	return c.issue(csr.PublicKey, pkix.Name{CommonName: id, OrganizationalUnit: []string{"device"}}, validity,
		[]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil)
}

// checkPublicKey accepts ECDSA P-256/P-384 and RSA ≥ 2048-bit keys.
func checkPublicKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
	case interface{ Size() int }: // *rsa.PublicKey
		if k.Size()*8 >= 2048 {
			return nil
		}
	}
	return fmt.Errorf("ca: public key %T: want ECDSA P-256/P-384 or RSA ≥ 2048 bits: %w", pub, ErrInvalidCSR)
}

// IssueClient creates a key and a client certificate with common name cn
// (one of the reserved identities, or a device id in tests).
func (c *CA) IssueClient(cn string, validity time.Duration) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("ca: %w", err)
	}
	if validity <= 0 {
		validity = DefaultDeviceValidity
	}
	cert, _, err := c.issue(&key.PublicKey, pkix.Name{CommonName: cn}, validity,
		[]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw, c.cert.Raw}, PrivateKey: key, Leaf: cert}, nil
}

// IssueServer creates a key and a server certificate valid for hosts (DNS
// names or IP addresses). The chain includes the CA certificate, so clients
// can pin the CA during the handshake.
func (c *CA) IssueServer(hosts []string, validity time.Duration) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("ca: %w", err)
	}
	if validity <= 0 {
		validity = DefaultServerValidity
	}
	var san sans
	for _, h := range hosts {
		san.add(h)
	}
	cn := "edgefleet hub"
	if len(san.dns) > 0 {
		cn = san.dns[0]
	}
	cert, _, err := c.issue(&key.PublicKey, pkix.Name{CommonName: cn}, validity,
		[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, &san)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw, c.cert.Raw}, PrivateKey: key, Leaf: cert}, nil
}

type sans struct {
	dns []string
	ips []net.IP
}

func (s *sans) add(h string) {
	h = strings.TrimSpace(h)
	if h == "" {
		return
	}
	if ip := net.ParseIP(h); ip != nil {
		for _, have := range s.ips {
			if have.Equal(ip) {
				return
			}
		}
		s.ips = append(s.ips, ip)
		return
	}
	for _, have := range s.dns {
		if have == h {
			return
		}
	}
	s.dns = append(s.dns, h)
}

func (c *CA) issue(pub crypto.PublicKey, subject pkix.Name, validity time.Duration, eku []x509.ExtKeyUsage, san *sans) (*x509.Certificate, []byte, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      subject,
		NotBefore:    now.Add(-5 * time.Minute), // tolerate small clock skew
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  eku,
	}
	if san != nil {
		tmpl.DNSNames, tmpl.IPAddresses = san.dns, san.ips
	}
	if tmpl.NotAfter.After(c.cert.NotAfter) {
		tmpl.NotAfter = c.cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.key)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: %w", err)
	}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// Revoked is one CRL entry.
type Revoked struct {
	Serial *big.Int
	At     time.Time
}

// CRL signs a PEM certificate revocation list with the given entries, valid
// for validity (external brokers refuse every client once it expires, so
// the hub rewrites it well before).
func (c *CA) CRL(entries []Revoked, number int64, validity time.Duration) ([]byte, error) {
	now := time.Now()
	list := &x509.RevocationList{
		Number:     big.NewInt(number),
		ThisUpdate: now.Add(-5 * time.Minute),
		NextUpdate: now.Add(validity),
	}
	for _, e := range entries {
		list.RevokedCertificateEntries = append(list.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: e.Serial, RevocationTime: e.At})
	}
	der, err := x509.CreateRevocationList(rand.Reader, list, c.cert, c.key)
	if err != nil {
		return nil, fmt.Errorf("ca: CRL: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), nil
}

// Kind classifies a certificate holder.
type Kind int

// Identity kinds.
const (
	KindUnknown Kind = iota
	KindDevice
	KindHub
	KindAdmin
)

// Identity is who a verified client certificate belongs to.
type Identity struct {
	Kind   Kind
	ID     string // the device id, or the reserved identity name
	Serial *big.Int
}

// IdentityOf classifies a client certificate already verified against the
// CA by its common name.
func IdentityOf(cert *x509.Certificate) Identity {
	cn := cert.Subject.CommonName
	id := Identity{ID: cn, Serial: cert.SerialNumber}
	switch {
	case cn == HubIdentity:
		id.Kind = KindHub
	case cn == AdminIdentity:
		id.Kind = KindAdmin
	case wire.ValidateDeviceID(cn) == nil:
		id.Kind = KindDevice
	}
	return id
}

// SerialString formats a serial number the way the registry stores it
// (lowercase hex).
func SerialString(n *big.Int) string { return n.Text(16) }

func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("ca: serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

func encodeKey(k crypto.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// EncodeKey encodes a private key as PKCS#8 PEM.
func EncodeKey(k crypto.PrivateKey) ([]byte, error) { return encodeKey(k) }

// EncodeCert encodes a certificate as PEM.
func EncodeCert(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
}

// ParseCertPEM parses the first certificate of a PEM bundle.
func ParseCertPEM(b []byte) (*x509.Certificate, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("ca: no CERTIFICATE PEM block")
		}
		if blk.Type == "CERTIFICATE" {
			cert, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("ca: %w", err)
			}
			return cert, nil
		}
	}
}
