package sidecar

import (
	"crypto/tls"
	"net/http"
	"time"
)

// MutatePath is the path the webhook configuration calls.
const MutatePath = "/mutate"

// NewServer returns the injector's HTTPS server: inj on MutatePath and a
// liveness answer on /healthz, with the certificate certs supplies per
// handshake. Serve it with ServeTLS(ln, "", "").
func NewServer(inj *Injector, certs *CertSource) *http.Server {
	mux := http.NewServeMux()
	mux.Handle(MutatePath, inj)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.GetCertificate},
	}
}
