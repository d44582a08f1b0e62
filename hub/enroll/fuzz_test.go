package enroll

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/edgefleet/edgefleet/ota/wire"
)

// FuzzEnrollRequest posts arbitrary bodies to the enrollment endpoint: it
// must answer every one with a client error or a success, never a server
// error or a panic, and a success must carry a device certificate from the
// hub's CA for the device id it names.
func FuzzEnrollRequest(f *testing.F) {
	fx := newFixture(f)
	fx.db.NoSync = true // durability is not what is fuzzed
	for i, labels := range []map[string]string{nil, {"site": "berlin"}} {
		req := wire.EnrollRequest{Token: fx.token(f, TokenOptions{}), CSR: newCSR(f), Labels: labels}
		if i == 1 {
			req.DeviceID = "edge-1"
		}
		b, _ := json.Marshal(req)
		f.Add(b)
	}
	for _, s := range []string{``, `{}`, `{"token":"x.y"}`, `{"token":"` + fx.token(f, TokenOptions{}) + `","csr":"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}`,
		`{"token":"abc","csr":"x","labels":{"":"v"}}`, `{"device_id":"../etc","token":"abcdefghijklmnopq.0011223344556677","csr":"x"} {}`, `[`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		w := httptest.NewRecorder()
		fx.svc.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/enroll", bytes.NewReader(body)))
		if w.Code >= 500 {
			t.Fatalf("status %d for %q: %s", w.Code, body, w.Body)
		}
		if w.Code != http.StatusOK {
			var e wire.Error
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" {
				t.Fatalf("status %d without an error body: %q", w.Code, w.Body)
			}
			return
		}
		var resp wire.EnrollResponse
		if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode([]byte(resp.Certificate))
		if blk == nil {
			t.Fatalf("no certificate in %q", resp.Certificate)
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if cert.Subject.CommonName != resp.DeviceID || wire.ValidateDeviceID(resp.DeviceID) != nil {
			t.Fatalf("certificate for %q issued as device %q", cert.Subject.CommonName, resp.DeviceID)
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(fx.ca.CertPEM())
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatalf("issued certificate does not verify as a client of the hub's CA: %v", err)
		}
	})
}
