package fleet

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/ota/durable"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// Files in Options.Dir.
const (
	keyFile      = "device.key"
	certFile     = "device.crt"
	caFile       = "ca.crt"
	identityFile = "identity.json"
	stateFile    = "state.json"
)

// Enrollment errors; test with errors.Is.
var (
	// ErrNotEnrolled means there is no identity and no token to get one.
	ErrNotEnrolled = errors.New("not enrolled: a hub URL and a bootstrap token are needed")
	// ErrHubMismatch means the hub's CA does not match the fingerprint in
	// the token: the agent refuses to talk to it.
	ErrHubMismatch = errors.New("hub CA does not match the bootstrap token's fingerprint")
	// ErrEnrollRefused means the hub refused the enrollment (used, expired
	// or unknown token, revoked or taken device id, bad request); retrying
	// will not help.
	ErrEnrollRefused = errors.New("hub refused the enrollment")
)

// Identity is what enrollment gave the device; it is kept in Options.Dir,
// so a restarted agent does not enroll again.
type Identity struct {
	DeviceID      string    `json:"device_id"`
	HubURL        string    `json:"hub_url"`
	APIURL        string    `json:"api_url"`
	MQTTURL       string    `json:"mqtt_url"`
	Registry      string    `json:"registry,omitempty"`
	CAFingerprint string    `json:"ca_fingerprint"`
	Enrolled      time.Time `json:"enrolled"`
}

// loadIdentity reads the identity; ok is false when the device never
// enrolled.
func loadIdentity(dir string) (Identity, bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, identityFile))
	if errors.Is(err, os.ErrNotExist) {
		return Identity{}, false, nil
	}
	if err != nil {
		return Identity{}, false, err
	}
	var id Identity
	if err := json.Unmarshal(b, &id); err != nil {
		return Identity{}, false, fmt.Errorf("%s: %w", identityFile, err)
	}
	if err := wire.ValidateDeviceID(id.DeviceID); err != nil {
		return Identity{}, false, fmt.Errorf("%s: %w", identityFile, err)
	}
	return id, true, nil
}

// tlsConfig builds the mutual-TLS configuration from the stored
// certificate, key and CA.
func tlsConfig(dir string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, certFile), filepath.Join(dir, keyFile))
	if err != nil {
		return nil, fmt.Errorf("device certificate: %w", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, caFile))
	if err != nil {
		return nil, fmt.Errorf("hub CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("hub CA %s: no certificate", filepath.Join(dir, caFile))
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, Certificates: []tls.Certificate{cert}}, nil
}

// loadOrCreateKey returns the device key, creating it on first use. The
// key is kept across failed enrollment attempts.
func loadOrCreateKey(dir string) (*ecdsa.PrivateKey, error) {
	path := filepath.Join(dir, keyFile)
	if b, err := os.ReadFile(path); err == nil {
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("%s: no PEM block", path)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		key, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%s: not an ECDSA key", path)
		}
		return key, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := durable.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	return key, nil
}

// pinnedTLS trusts a hub only if its certificate chain holds a CA whose
// SHA-256 fingerprint starts with fp, and the server certificate chains to
// it. Host names are not checked: the pin identifies the hub.
func pinnedTLS(fp string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // replaced by VerifyConnection's pin check
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return ErrHubMismatch
			}
			roots, inter := x509.NewCertPool(), x509.NewCertPool()
			found := false
			for _, c := range cs.PeerCertificates[1:] {
				if c.IsCA && strings.HasPrefix(fingerprint(c), fp) {
					roots.AddCert(c)
					found = true
				} else {
					inter.AddCert(c)
				}
			}
			if !found {
				return ErrHubMismatch
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			if err != nil {
				return fmt.Errorf("%w: %v", ErrHubMismatch, err)
			}
			return nil
		},
	}
}

func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// enroll trades the token for a certificate and stores the identity.
func (c *Client) enroll(ctx context.Context) (Identity, error) {
	o := c.opts
	if o.HubURL == "" || o.Token == "" {
		return Identity{}, ErrNotEnrolled
	}
	secret, fp, err := wire.ParseToken(o.Token)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrEnrollRefused, err)
	}
	if err := durable.MkdirAll(o.Dir, 0o700); err != nil {
		return Identity{}, err
	}
	key, err := loadOrCreateKey(o.Dir)
	if err != nil {
		return Identity{}, err
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return Identity{}, err
	}
	body, err := json.Marshal(wire.EnrollRequest{
		Token:        wire.FormatToken(secret, fp),
		DeviceID:     o.DeviceID,
		CSR:          string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})),
		Labels:       o.Labels,
		Hardware:     c.hardware,
		AgentVersion: o.AgentVersion,
	})
	if err != nil {
		return Identity{}, err
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: pinnedTLS(fp)}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(o.HubURL, "/")+wire.EnrollPath, bytes.NewReader(body))
	if err != nil {
		return Identity{}, fmt.Errorf("%w: hub URL %q: %v", ErrEnrollRefused, o.HubURL, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		if errors.Is(err, ErrHubMismatch) {
			return Identity{}, ErrHubMismatch
		}
		return Identity{}, fmt.Errorf("enroll: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Identity{}, fmt.Errorf("enroll: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e wire.Error
		if json.Unmarshal(raw, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(raw))
		}
		if resp.StatusCode >= 400 && resp.StatusCode < 500 {
			return Identity{}, fmt.Errorf("%w: %s (HTTP %d)", ErrEnrollRefused, e.Error, resp.StatusCode)
		}
		return Identity{}, fmt.Errorf("enroll: hub answered HTTP %d: %s", resp.StatusCode, e.Error)
	}
	var er wire.EnrollResponse
	if err := json.Unmarshal(raw, &er); err != nil {
		return Identity{}, fmt.Errorf("enroll: answer: %w", err)
	}
	if err := checkEnrollment(er, fp, key); err != nil {
		return Identity{}, err
	}
	// Certificate and CA first, identity.json last: it marks the
	// enrollment complete.
	if err := durable.WriteFile(filepath.Join(o.Dir, certFile), []byte(er.Certificate), 0o644); err != nil {
		return Identity{}, err
	}
	if err := durable.WriteFile(filepath.Join(o.Dir, caFile), []byte(er.CA), 0o644); err != nil {
		return Identity{}, err
	}
	id := Identity{DeviceID: er.DeviceID, HubURL: o.HubURL, APIURL: er.APIURL, MQTTURL: er.MQTTURL,
		Registry: er.Registry, CAFingerprint: er.CAFingerprint, Enrolled: time.Now().UTC()}
	b, _ := json.MarshalIndent(id, "", "  ")
	// A new identity starts from a clean state (a new hub counts
	// revisions from 1 again).
	os.Remove(filepath.Join(o.Dir, stateFile))
	if err := durable.WriteFile(filepath.Join(o.Dir, identityFile), b, 0o644); err != nil {
		return Identity{}, err
	}
	return id, nil
}

// checkEnrollment verifies the answer: the CA matches the pin, the
// certificate chains to it, carries our key and names the device.
func checkEnrollment(er wire.EnrollResponse, fp string, key *ecdsa.PrivateKey) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("enroll: invalid answer from the hub: "+format, a...)
	}
	if err := wire.ValidateDeviceID(er.DeviceID); err != nil {
		return bad("%v", err)
	}
	caCert, err := parseCert([]byte(er.CA))
	if err != nil {
		return bad("CA: %v", err)
	}
	if !strings.HasPrefix(fingerprint(caCert), fp) {
		return ErrHubMismatch
	}
	cert, err := parseCert([]byte(er.Certificate))
	if err != nil {
		return bad("certificate: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return bad("certificate: %v", err)
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return bad("certificate is not for this device's key")
	}
	if cert.Subject.CommonName != er.DeviceID {
		return bad("certificate names %q, not %q", cert.Subject.CommonName, er.DeviceID)
	}
	if er.MQTTURL == "" {
		return bad("no MQTT URL")
	}
	return nil
}

func parseCert(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("no CERTIFICATE PEM block")
	}
	return x509.ParseCertificate(blk.Bytes)
}
