package enroll

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/hub/ca"
	"github.com/edgefleet/edgefleet/hub/registry"
	"github.com/edgefleet/edgefleet/ota/wire"
)

type fixture struct {
	svc  *Service
	ca   *ca.CA
	reg  *registry.Registry
	toks *Tokens
	db   *bolt.DB
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "hub.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	c, err := ca.New("")
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.New(db)
	if err != nil {
		t.Fatal(err)
	}
	toks, err := NewTokens(db)
	if err != nil {
		t.Fatal(err)
	}
	svc := &Service{CA: c, Registry: reg, Tokens: toks,
		Endpoints: func() Endpoints {
			return Endpoints{MQTTURL: "mqtts://127.0.0.1:8883", APIURL: "https://127.0.0.1:7443"}
		}}
	return &fixture{svc: svc, ca: c, reg: reg, toks: toks, db: db}
}

func (f *fixture) token(t testing.TB, opts TokenOptions) string {
	t.Helper()
	secret, _, err := f.toks.Create(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return wire.FormatToken(secret, f.ca.Fingerprint())
}

func newCSR(t testing.TB) string {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func TestEnrollHappyPath(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	var enrolled atomic.Int32
	f.svc.OnEnrolled = func(context.Context, registry.Device) { enrolled.Add(1) }
	tok := f.token(t, TokenOptions{Labels: map[string]string{"site": "berlin"}})
	resp, err := f.svc.Enroll(ctx, wire.EnrollRequest{Token: tok, DeviceID: "edge-1", CSR: newCSR(t),
		Labels: map[string]string{"site": "spoofed", "rack": "3"}, Hardware: wire.Hardware{Cores: 4}, AgentVersion: "0.1.0"})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.ParseCertPEM([]byte(resp.Certificate))
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "edge-1" || resp.DeviceID != "edge-1" || resp.CAFingerprint != f.ca.Fingerprint() ||
		resp.MQTTURL != "mqtts://127.0.0.1:8883" || !bytes.Equal([]byte(resp.CA), f.ca.CertPEM()) {
		t.Fatalf("response %+v", resp)
	}
	d, err := f.reg.Get(ctx, "edge-1")
	if err != nil {
		t.Fatal(err)
	}
	if d.Labels["site"] != "berlin" || d.Labels["rack"] != "3" || d.Hardware.Cores != 4 || d.AgentVersion != "0.1.0" {
		t.Fatalf("registry record %+v (token labels must win)", d)
	}
	if err := f.reg.Check(ctx, "edge-1", ca.SerialString(cert.SerialNumber)); err != nil {
		t.Fatalf("issued certificate not registered: %v", err)
	}
	if enrolled.Load() != 1 {
		t.Fatalf("OnEnrolled ran %d times", enrolled.Load())
	}
	// The token is single-use.
	if _, err := f.svc.Enroll(ctx, wire.EnrollRequest{Token: tok, DeviceID: "edge-2", CSR: newCSR(t)}); !errors.Is(err, ErrTokenUsed) {
		t.Fatalf("reused token: %v, want ErrTokenUsed", err)
	}
}

func TestEnrollGeneratesID(t *testing.T) {
	f := newFixture(t)
	resp, err := f.svc.Enroll(context.Background(), wire.EnrollRequest{Token: f.token(t, TokenOptions{}), CSR: newCSR(t)})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(resp.DeviceID, "dev-") || wire.ValidateDeviceID(resp.DeviceID) != nil {
		t.Fatalf("generated id %q", resp.DeviceID)
	}
}

func TestEnrollRefusals(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	// An existing device, enrolled with its own token.
	if _, err := f.svc.Enroll(ctx, wire.EnrollRequest{Token: f.token(t, TokenOptions{}), DeviceID: "taken", CSR: newCSR(t)}); err != nil {
		t.Fatal(err)
	}
	other, _ := ca.New("")
	f.toks.now = func() time.Time { return time.Now().Add(-48 * time.Hour) }
	expiredSecret, _, _ := f.toks.Create(ctx, TokenOptions{TTL: time.Hour})
	f.toks.now = time.Now
	tests := []struct {
		name   string
		req    func(tok string) wire.EnrollRequest
		opts   TokenOptions
		want   error
		status int
	}{
		{"unknown token", func(string) wire.EnrollRequest {
			return wire.EnrollRequest{Token: wire.FormatToken("AAAAAAAAAAAAAAAAAAAAAAAA", f.ca.Fingerprint()), CSR: newCSR(t)}
		}, TokenOptions{}, ErrTokenUnknown, 401},
		{"expired token", func(string) wire.EnrollRequest {
			return wire.EnrollRequest{Token: wire.FormatToken(expiredSecret, f.ca.Fingerprint()), CSR: newCSR(t)}
		}, TokenOptions{}, ErrTokenExpired, 401},
		{"token of another hub", func(tok string) wire.EnrollRequest {
			secret, _, _ := wire.ParseToken(tok)
			return wire.EnrollRequest{Token: wire.FormatToken(secret, other.Fingerprint()), CSR: newCSR(t)}
		}, TokenOptions{}, ErrWrongHub, 401},
		{"existing id with an unbound token", func(tok string) wire.EnrollRequest {
			return wire.EnrollRequest{Token: tok, DeviceID: "taken", CSR: newCSR(t)}
		}, TokenOptions{}, registry.ErrExists, 409},
		{"id differs from binding", func(tok string) wire.EnrollRequest {
			return wire.EnrollRequest{Token: tok, DeviceID: "mine", CSR: newCSR(t)}
		}, TokenOptions{DeviceID: "theirs"}, ErrIDMismatch, 403},
		{"bad CSR", func(tok string) wire.EnrollRequest {
			return wire.EnrollRequest{Token: tok, CSR: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}
		}, TokenOptions{}, ca.ErrInvalidCSR, 400},
		{"missing CSR", func(tok string) wire.EnrollRequest { return wire.EnrollRequest{Token: tok} }, TokenOptions{}, wire.ErrInvalid, 400},
		{"bad id", func(tok string) wire.EnrollRequest {
			return wire.EnrollRequest{Token: tok, DeviceID: "a/b", CSR: newCSR(t)}
		}, TokenOptions{}, wire.ErrInvalid, 400},
		{"bad label", func(tok string) wire.EnrollRequest {
			return wire.EnrollRequest{Token: tok, CSR: newCSR(t), Labels: map[string]string{"a b": "c"}}
		}, TokenOptions{}, wire.ErrInvalid, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := f.token(t, tt.opts)
			_, err := f.svc.Enroll(ctx, tt.req(tok))
			if !errors.Is(err, tt.want) {
				t.Fatalf("Enroll = %v, want %v", err, tt.want)
			}
			if got := Status(err); got != tt.status {
				t.Fatalf("Status = %d, want %d", got, tt.status)
			}
			// A refused request does not use up the token.
			secret, _, _ := wire.ParseToken(tok)
			if _, err := f.toks.Peek(ctx, secret); err != nil {
				t.Fatalf("token unusable after a refused enrollment: %v", err)
			}
		})
	}
}

func TestBoundTokenReenrolls(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	first, err := f.svc.Enroll(ctx, wire.EnrollRequest{Token: f.token(t, TokenOptions{}), DeviceID: "box", CSR: newCSR(t)})
	if err != nil {
		t.Fatal(err)
	}
	second, err := f.svc.Enroll(ctx, wire.EnrollRequest{Token: f.token(t, TokenOptions{DeviceID: "box"}), CSR: newCSR(t)})
	if err != nil {
		t.Fatalf("re-enrollment with a bound token: %v", err)
	}
	c1, _ := ca.ParseCertPEM([]byte(first.Certificate))
	c2, _ := ca.ParseCertPEM([]byte(second.Certificate))
	if err := f.reg.Check(ctx, "box", ca.SerialString(c1.SerialNumber)); !errors.Is(err, registry.ErrSuperseded) {
		t.Fatalf("first certificate after re-enrollment: %v", err)
	}
	if err := f.reg.Check(ctx, "box", ca.SerialString(c2.SerialNumber)); err != nil {
		t.Fatal(err)
	}
	// A revoked device cannot come back, even with a bound token.
	if _, err := f.reg.Revoke(ctx, "box"); err != nil {
		t.Fatal(err)
	}
	_, err = f.svc.Enroll(ctx, wire.EnrollRequest{Token: f.token(t, TokenOptions{DeviceID: "box"}), CSR: newCSR(t)})
	if !errors.Is(err, registry.ErrRevoked) || Status(err) != http.StatusForbidden {
		t.Fatalf("revoked device re-enrolled: %v", err)
	}
}

func TestConcurrentRedeem(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	secret, _, _ := f.toks.Create(ctx, TokenOptions{})
	var ok atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := f.toks.Redeem(ctx, secret, "d"); err == nil {
				ok.Add(1)
			} else if !errors.Is(err, ErrTokenUsed) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 1 {
		t.Fatalf("%d redemptions succeeded, want 1", ok.Load())
	}
}

func TestTokensStoredHashed(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	secret, tok, err := f.toks.Create(ctx, TokenOptions{TTL: time.Hour, DeviceID: "d1"})
	if err != nil {
		t.Fatal(err)
	}
	if tok.Expires.Sub(tok.Created) != time.Hour || tok.DeviceID != "d1" {
		t.Fatalf("token record %+v", tok)
	}
	f.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTokens).ForEach(func(k, v []byte) error {
			if bytes.Contains(k, []byte(secret)) || bytes.Contains(v, []byte(secret)) {
				t.Fatal("secret stored in clear")
			}
			return nil
		})
	})
	if _, _, err := f.toks.Create(ctx, TokenOptions{TTL: -time.Second}); !errors.Is(err, wire.ErrInvalid) {
		t.Fatalf("negative TTL: %v", err)
	}
	if _, _, err := f.toks.Create(ctx, TokenOptions{DeviceID: "a+b"}); !errors.Is(err, wire.ErrInvalid) {
		t.Fatalf("bad device id: %v", err)
	}
	list, _ := f.toks.List(ctx)
	if len(list) != 1 {
		t.Fatalf("List = %d tokens", len(list))
	}
	if n, err := f.toks.Prune(ctx, time.Now().Add(2*time.Hour)); err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v", n, err)
	}
}

func TestServeHTTP(t *testing.T) {
	f := newFixture(t)
	srv := httptest.NewServer(f.svc)
	defer srv.Close()
	tests := []struct {
		name   string
		method string
		body   string
		status int
	}{
		{"GET", http.MethodGet, "", http.StatusMethodNotAllowed},
		{"malformed JSON", http.MethodPost, "{", http.StatusBadRequest},
		{"trailing data", http.MethodPost, `{"token":"x"} {}`, http.StatusBadRequest},
		{"oversized", http.MethodPost, `{"csr":"` + strings.Repeat("a", maxRequestBytes) + `"}`, http.StatusBadRequest},
		{"unknown token", http.MethodPost, `{"token":"AAAAAAAAAAAAAAAAAAAAAAAAAA","csr":"x"}`, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, srv.URL+wire.EnrollPath, strings.NewReader(tt.body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var e wire.Error
			if resp.StatusCode != tt.status || json.NewDecoder(resp.Body).Decode(&e) != nil || e.Error == "" {
				t.Fatalf("status %d (want %d), error %q", resp.StatusCode, tt.status, e.Error)
			}
		})
	}
	body, _ := json.Marshal(wire.EnrollRequest{Token: f.token(t, TokenOptions{}), DeviceID: "web", CSR: newCSR(t)})
	resp, err := http.Post(srv.URL+wire.EnrollPath, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out wire.EnrollResponse
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&out) != nil || out.DeviceID != "web" {
		t.Fatalf("status %d, %+v", resp.StatusCode, out)
	}
}
