package signature

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/nacl/secretbox"
	"golang.org/x/crypto/scrypt"
)

// TestDecryptKnownAnswer opens a vector published with go-securesystemslib's
// encrypted package (the format of cosign.key): passphrase "supersecret",
// plaintext "reallyimportant".
func TestDecryptKnownAnswer(t *testing.T) {
	t.Parallel()
	enc := `{"kdf":{"name":"scrypt","params":{"N":32768,"r":8,"p":1},"salt":"N9a7x5JFGbrtB2uBR81jPwp0eiLR4A7FV3mjVAQrg1g="},"cipher":{"name":"nacl/secretbox","nonce":"2h8HxMmgRfuYdpswZBQaU3xJ1nkA/5Ik"},"ciphertext":"SEW6sUh0jf2wfdjJGPNS9+bkk2uB+Cxamf32zR8XkQ=="}`
	got, err := decryptKey([]byte(enc), []byte("supersecret"))
	if err != nil || string(got) != "reallyimportant" {
		t.Fatalf("decryptKey = %q, %v", got, err)
	}
	if _, err := decryptKey([]byte(enc), []byte("supersecreT")); !errors.Is(err, ErrKey) {
		t.Fatalf("wrong password: %v", err)
	}
	bad := strings.Replace(enc, `"N":32768`, `"N":1073741824`, 1)
	if _, err := decryptKey([]byte(bad), []byte("supersecret")); err == nil || !strings.Contains(err.Error(), "unsupported scrypt parameters") {
		t.Fatalf("huge N: %v", err)
	}
}

// encryptKey seals a key the way cosign generate-key-pair does.
func encryptKey(t *testing.T, der, password []byte) []byte {
	t.Helper()
	var k encryptedKey
	k.KDF.Name, k.Cipher.Name = "scrypt", "nacl/secretbox"
	k.KDF.Params.N, k.KDF.Params.R, k.KDF.Params.P = 1<<15, 8, 1
	k.KDF.Salt = make([]byte, 32)
	k.Cipher.Nonce = make([]byte, 24)
	rand.Read(k.KDF.Salt)
	rand.Read(k.Cipher.Nonce)
	dk, err := scrypt.Key(password, k.KDF.Salt, 1<<15, 8, 1, 32)
	if err != nil {
		t.Fatal(err)
	}
	var key [32]byte
	var nonce [24]byte
	copy(key[:], dk)
	copy(nonce[:], k.Cipher.Nonce)
	k.Ciphertext = secretbox.Seal(nil, der, &nonce, &key)
	b, err := json.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED SIGSTORE PRIVATE KEY", Bytes: b})
}

func TestEncryptedPrivateKey(t *testing.T) {
	t.Parallel()
	k := mustKey(t)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	file := encryptKey(t, der, []byte("hunter2"))
	asked := 0
	pw := func(p string) Password {
		return func() ([]byte, error) { asked++; return []byte(p), nil }
	}
	got, err := ParsePrivateKeyPEM(file, pw("hunter2"))
	if err != nil || !got.Equal(k) {
		t.Fatalf("ParsePrivateKeyPEM: %v", err)
	}
	if _, err := ParsePrivateKeyPEM(file, pw("hunter3")); !errors.Is(err, ErrKey) || !strings.Contains(err.Error(), "wrong password") {
		t.Fatalf("wrong password: %v", err)
	}
	plain, _ := MarshalPrivateKeyPEM(k)
	asked = 0
	if _, err := ParsePrivateKeyPEM(plain, pw("unused")); err != nil || asked != 0 {
		t.Fatalf("unencrypted key asked for a password %d times (%v)", asked, err)
	}
	if _, err := ParsePrivateKeyPEM(file, func() ([]byte, error) { return nil, errors.New("no tty") }); err == nil || !strings.Contains(err.Error(), "no tty") {
		t.Fatalf("password error not reported: %v", err)
	}
}
