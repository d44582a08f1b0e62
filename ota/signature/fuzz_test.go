package signature

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
)

// FuzzCheckPayload feeds arbitrary signed payloads to the claim check: a
// payload is accepted only when it is a cosign simple-signing payload that
// names exactly the digest (and repository) being verified.
func FuzzCheckPayload(f *testing.F) {
	d, err := name.NewDigest("registry.example/models/m@sha256:" + "ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12")
	if err != nil {
		f.Fatal(err)
	}
	good, err := NewPayload(d, map[string]any{"model": "m"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, false)
	f.Add(good, true)
	for _, s := range []string{`{}`, `null`, `{"critical":{"type":"cosign container image signature","image":{"docker-manifest-digest":"sha256:00"},"identity":{"docker-reference":"x"}}}`,
		`{"critical":{"type":1}}`, `[`} {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, payload []byte, anyRef bool) {
		p, err := checkPayload(payload, d, anyRef)
		if err != nil {
			return
		}
		if p.Critical.Type != PayloadType || p.Critical.Image.DockerManifestDigest != d.DigestStr() {
			t.Fatalf("accepted a payload for %+v", p.Critical)
		}
		if !anyRef && p.Critical.Identity.DockerReference != d.Context().Name() {
			t.Fatalf("accepted a payload naming repository %q", p.Critical.Identity.DockerReference)
		}
	})
}

// FuzzParsePublicKeysPEM: trust-key files parse into P-256 keys or are
// refused; never a panic or a nil key.
func FuzzParsePublicKeysPEM(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, err := MarshalPublicKeyPEM(&key.PublicKey)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(pub)
	f.Add(append(append([]byte{}, pub...), pub...))
	f.Add(pub[:len(pub)/2])
	f.Add([]byte("-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := ParsePublicKeysPEM(b)
		if err != nil {
			return
		}
		for _, k := range keys {
			if k == nil || k.X == nil {
				t.Fatal("nil key accepted")
			}
		}
	})
}
