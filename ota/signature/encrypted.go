package signature

import (
	"encoding/json"
	"fmt"

	"golang.org/x/crypto/nacl/secretbox"
	"golang.org/x/crypto/scrypt"
)

// encryptedKey is the JSON inside cosign's "ENCRYPTED SIGSTORE PRIVATE KEY"
// PEM block (go-securesystemslib's encrypted format): the PKCS #8 DER key
// sealed with NaCl secretbox under a key derived by scrypt.
type encryptedKey struct {
	KDF struct {
		Name   string `json:"name"`
		Params struct {
			N int `json:"N"`
			R int `json:"r"`
			P int `json:"p"`
		} `json:"params"`
		Salt []byte `json:"salt"`
	} `json:"kdf"`
	Cipher struct {
		Name  string `json:"name"`
		Nonce []byte `json:"nonce"`
	} `json:"cipher"`
	Ciphertext []byte `json:"ciphertext"`
}

// decryptKey opens an encrypted private key with password.
func decryptKey(b, password []byte) ([]byte, error) {
	var k encryptedKey
	if err := json.Unmarshal(b, &k); err != nil {
		return nil, fmt.Errorf("%w: encrypted key: %v", ErrKey, err)
	}
	if k.KDF.Name != "scrypt" || k.Cipher.Name != "nacl/secretbox" {
		return nil, fmt.Errorf("%w: encrypted key uses %s/%s, want scrypt/nacl/secretbox", ErrKey, k.KDF.Name, k.Cipher.Name)
	}
	// The parameter sets cosign and securesystemslib write; refusing others
	// keeps a crafted file from demanding gigabytes of scrypt memory.
	switch p := k.KDF.Params; {
	case p.R == 8 && p.P == 1 && (p.N == 1<<15 || p.N == 1<<16 || p.N == 1<<17):
	default:
		return nil, fmt.Errorf("%w: unsupported scrypt parameters N=%d r=%d p=%d", ErrKey, p.N, p.R, p.P)
	}
	if len(k.Cipher.Nonce) != 24 {
		return nil, fmt.Errorf("%w: nonce of %d bytes, want 24", ErrKey, len(k.Cipher.Nonce))
	}
	dk, err := scrypt.Key(password, k.KDF.Salt, k.KDF.Params.N, k.KDF.Params.R, k.KDF.Params.P, 32)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	var key [32]byte
	var nonce [24]byte
	copy(key[:], dk)
	copy(nonce[:], k.Cipher.Nonce)
	out, ok := secretbox.Open(nil, k.Ciphertext, &nonce, &key)
	if !ok {
		return nil, fmt.Errorf("%w: wrong password or corrupted encrypted key", ErrKey)
	}
	return out, nil
}
