package signature

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// PEM block types.
const (
	pemPrivateKey   = "PRIVATE KEY"    // PKCS #8
	pemECPrivateKey = "EC PRIVATE KEY" // SEC 1
	pemPublicKey    = "PUBLIC KEY"     // PKIX
)

// ErrKey is wrapped by errors about unusable key material.
var ErrKey = errors.New("unusable key")

// GenerateKey returns a new ECDSA P-256 key, the kind cosign generate-key-pair makes.
func GenerateKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func checkCurve(pub *ecdsa.PublicKey) error {
	if pub.Curve != elliptic.P256() {
		return fmt.Errorf("%w: curve %s, want P-256", ErrKey, pub.Curve.Params().Name)
	}
	return nil
}

// MarshalPrivateKeyPEM encodes priv as an unencrypted PKCS #8 "PRIVATE KEY"
// PEM block. Keep the result secret.
func MarshalPrivateKeyPEM(priv *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

// MarshalPublicKeyPEM encodes pub as a PKIX "PUBLIC KEY" PEM block, the
// format of cosign.pub.
func MarshalPublicKeyPEM(pub *ecdsa.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPublicKey, Bytes: der}), nil
}

// Password returns the password of an encrypted key; it is called only
// when the key is encrypted (cosign reads env COSIGN_PASSWORD or prompts).
type Password func() ([]byte, error)

// ParsePrivateKeyPEM decodes an ECDSA P-256 private key from the first PEM
// block of b: PKCS #8 "PRIVATE KEY", SEC 1 "EC PRIVATE KEY", or cosign's
// password-encrypted "ENCRYPTED SIGSTORE PRIVATE KEY" (also the older
// "ENCRYPTED COSIGN PRIVATE KEY"), for which password is asked; password may
// be nil for unencrypted keys.
func ParsePrivateKeyPEM(b []byte, password Password) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block found", ErrKey)
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case pemPrivateKey:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case pemECPrivateKey:
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY":
		if password == nil {
			return nil, fmt.Errorf("%w: %s needs a password", ErrKey, block.Type)
		}
		pw, perr := password()
		if perr != nil {
			return nil, fmt.Errorf("%w: password: %v", ErrKey, perr)
		}
		der, derr := decryptKey(block.Bytes, pw)
		if derr != nil {
			return nil, derr
		}
		key, err = x509.ParsePKCS8PrivateKey(der)
	default:
		return nil, fmt.Errorf("%w: PEM block %q, want %q or %q", ErrKey, block.Type, pemPrivateKey, pemECPrivateKey)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	priv, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: %T is not an ECDSA key", ErrKey, key)
	}
	if err := checkCurve(&priv.PublicKey); err != nil {
		return nil, err
	}
	return priv, nil
}

// ParsePublicKeysPEM decodes every "PUBLIC KEY" PEM block in b (a trust
// file may hold several keys). Each must be an ECDSA P-256 key.
func ParsePublicKeysPEM(b []byte) ([]*ecdsa.PublicKey, error) {
	var keys []*ecdsa.PublicKey
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != pemPublicKey {
			return nil, fmt.Errorf("%w: PEM block %q, want %q", ErrKey, block.Type, pemPublicKey)
		}
		key, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrKey, err)
		}
		pub, ok := key.(*ecdsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("%w: %T is not an ECDSA key", ErrKey, key)
		}
		if err := checkCurve(pub); err != nil {
			return nil, err
		}
		keys = append(keys, pub)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no PUBLIC KEY PEM block found", ErrKey)
	}
	return keys, nil
}

// LoadPrivateKey reads a private key file (see ParsePrivateKeyPEM).
func LoadPrivateKey(path string, password Password) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := ParsePrivateKeyPEM(b, password)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// LoadPublicKeys reads the public keys of every file in paths.
func LoadPublicKeys(paths ...string) ([]*ecdsa.PublicKey, error) {
	var keys []*ecdsa.PublicKey
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		ks, err := ParsePublicKeysPEM(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		keys = append(keys, ks...)
	}
	return keys, nil
}
