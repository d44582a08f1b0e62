package ca

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
)

// ErrNotAllowed is returned by TLS verification for identities a listener
// does not accept.
var ErrNotAllowed = errors.New("certificate identity not allowed here")

// ServerTLS returns a server TLS configuration presenting cert and checking
// client certificates against the CA with policy clientAuth. verify, when
// set, runs at every handshake on the identity of a verified client
// certificate, so a revoked device is refused on its next connection.
func (c *CA) ServerTLS(cert tls.Certificate, clientAuth tls.ClientAuthType, verify func(Identity) error) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    c.Pool(),
		ClientAuth:   clientAuth,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if verify == nil || len(cs.PeerCertificates) == 0 {
				return nil
			}
			return verify(IdentityOf(cs.PeerCertificates[0]))
		},
	}
}

// ClientTLS returns a client TLS configuration that trusts only the CA and
// presents cert (when it has one).
func (c *CA) ClientTLS(cert *tls.Certificate) *tls.Config {
	return ClientTLS(c.Pool(), cert)
}

// ClientTLS returns a client TLS configuration trusting roots and
// presenting cert (when not nil).
func ClientTLS(roots *x509.CertPool, cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

// PeerIdentity returns the identity of a connection's verified client
// certificate; ok is false without one.
func PeerIdentity(cs *tls.ConnectionState) (Identity, bool) {
	if cs == nil || len(cs.PeerCertificates) == 0 || len(cs.VerifiedChains) == 0 {
		return Identity{}, false
	}
	return IdentityOf(cs.PeerCertificates[0]), true
}
