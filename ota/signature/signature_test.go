package signature

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/edgefleet/edgefleet/deploy/testenv"
	"github.com/edgefleet/edgefleet/ota"
	"github.com/edgefleet/edgefleet/ota/artifact"
)

func newRegistry(t *testing.T) string { return testenv.EmbeddedRegistry(t) }

// pushModel pushes a small model artifact and returns its digest reference.
func pushModel(t *testing.T, ref, version string) name.Digest {
	t.Helper()
	cfg := artifact.Config{
		Name: "digits", Version: version, Precision: artifact.PrecisionFP32,
		Inputs:  []artifact.TensorSpec{{Name: "x", Datatype: "FP32", Shape: []int64{1}}},
		Outputs: []artifact.TensorSpec{{Name: "y", Datatype: "FP32", Shape: []int64{1}}},
	}
	d, err := ota.Push(context.Background(), ref, ota.Artifact{Config: cfg, Model: ota.BytesFile("m.onnx", []byte("onnx "+version))})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func mustKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestPayloadMatchesCosign checks the payload bytes against the published
// simple-signing format as cosign emits it (sigstore's payload package test
// vectors: compact JSON, this field order, "optional":null without claims,
// sorted claim keys).
func TestPayloadMatchesCosign(t *testing.T) {
	const digest = "sha256:d34db33fd34db33fd34db33fd34db33fd34db33fd34db33fd34db33fd34db33f"
	tests := []struct {
		ref    string
		claims map[string]any
		want   string
	}{
		{
			ref:  "example.com/test/image@" + digest,
			want: `{"critical":{"identity":{"docker-reference":"example.com/test/image"},"image":{"docker-manifest-digest":"sha256:d34db33fd34db33fd34db33fd34db33fd34db33fd34db33fd34db33fd34db33f"},"type":"cosign container image signature"},"optional":null}`,
		},
		{
			ref:    "example.com/atomic/test/image@" + digest,
			claims: map[string]any{"timestamp": 1458239713, "creator": "atomic"},
			want:   `{"critical":{"identity":{"docker-reference":"example.com/atomic/test/image"},"image":{"docker-manifest-digest":"sha256:d34db33fd34db33fd34db33fd34db33fd34db33fd34db33fd34db33fd34db33f"},"type":"cosign container image signature"},"optional":{"creator":"atomic","timestamp":1458239713}}`,
		},
		{
			// Docker Hub names get their registry and library/ prefix.
			ref:  "busybox@" + digest,
			want: `{"critical":{"identity":{"docker-reference":"index.docker.io/library/busybox"},"image":{"docker-manifest-digest":"sha256:d34db33fd34db33fd34db33fd34db33fd34db33fd34db33fd34db33fd34db33f"},"type":"cosign container image signature"},"optional":null}`,
		},
		{
			ref:  "localhost:5000/models/digits@" + digest,
			want: `{"critical":{"identity":{"docker-reference":"localhost:5000/models/digits"},"image":{"docker-manifest-digest":"sha256:d34db33fd34db33fd34db33fd34db33fd34db33fd34db33fd34db33fd34db33f"},"type":"cosign container image signature"},"optional":null}`,
		},
	}
	for _, tt := range tests {
		d, err := name.NewDigest(tt.ref)
		if err != nil {
			t.Fatal(err)
		}
		got, err := NewPayload(d, tt.claims)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tt.want {
			t.Errorf("payload for %s:\n got %s\nwant %s", tt.ref, got, tt.want)
		}
	}
	d, _ := name.NewDigest("localhost:5000/models/digits@" + digest)
	if got := Tag(d).String(); got != "localhost:5000/models/digits:sha256-d34db33fd34db33fd34db33fd34db33fd34db33fd34db33fd34db33fd34db33f.sig" {
		t.Errorf("Tag = %s", got)
	}
}

// TestSignatureImageLayout compares the signature image Sign writes with
// one built by hand from cosign's published layout, byte for byte.
func TestSignatureImageLayout(t *testing.T) {
	ctx := context.Background()
	host := newRegistry(t)
	d := pushModel(t, host+"/models/digits:1", "1")
	key := mustKey(t)
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s, err := Sign(ctx, d.String(), key, WithClock(func() time.Time { return created }))
	if err != nil {
		t.Fatal(err)
	}

	// The payload, hand-built.
	payload := fmt.Sprintf(`{"critical":{"identity":{"docker-reference":"%s/models/digits"},"image":{"docker-manifest-digest":"%s"},"type":"cosign container image signature"},"optional":null}`, host, d.DigestStr())
	if string(s.Payload) != payload {
		t.Fatalf("payload\n got %s\nwant %s", s.Payload, payload)
	}
	payloadDigest := fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(payload)))
	// The signature: base64 (standard, padded) ASN.1 DER ECDSA over sha256(payload).
	sig, err := base64.StdEncoding.DecodeString(s.Signature)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(payload))
	if !ecdsa.VerifyASN1(&key.PublicKey, sum[:], sig) {
		t.Fatal("signature does not verify over sha256(payload)")
	}

	// The config, hand-built: an empty OCI image config with one diff ID.
	config := fmt.Sprintf(`{"architecture":"","created":"2026-01-02T03:04:05Z","history":[{"created":"0001-01-01T00:00:00Z"}],"os":"","rootfs":{"type":"layers","diff_ids":["%s"]},"config":{}}`, payloadDigest)
	// cosign's one-signature configs are 233 bytes; so is this one.
	if len(config) != 233 {
		t.Fatalf("hand-built config is %d bytes", len(config))
	}
	configDigest := fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(config)))
	manifest := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":%d,"digest":"%s"},`+
		`"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","size":%d,"digest":"%s",`+
		`"annotations":{"dev.cosignproject.cosign/signature":"%s"}}]}`,
		len(config), configDigest, len(payload), payloadDigest, s.Signature)

	tag := host + "/models/digits:sha256-" + strings.TrimPrefix(d.DigestStr(), "sha256:") + ".sig"
	if s.Tag.String() != tag {
		t.Errorf("tag %s, want %s", s.Tag, tag)
	}
	gotManifest, err := crane.Manifest(tag)
	if err != nil {
		t.Fatal(err)
	}
	if string(gotManifest) != manifest {
		t.Errorf("signature manifest\n got %s\nwant %s", gotManifest, manifest)
	}
	gotConfig, err := crane.Config(tag)
	if err != nil {
		t.Fatal(err)
	}
	if string(gotConfig) != config {
		t.Errorf("signature config\n got %s\nwant %s", gotConfig, config)
	}
	layer, err := crane.PullLayer(host + "/models/digits@" + payloadDigest)
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := layer.Compressed()
	gotPayload, _ := io.ReadAll(rc)
	rc.Close()
	if string(gotPayload) != payload {
		t.Errorf("payload blob %s", gotPayload)
	}
}

// putSignatureImage writes a signature image built by hand (raw JSON, no
// code from this package), as cosign sign --key would.
func putSignatureImage(t *testing.T, repo string, subject name.Digest, layers ...[2]string) {
	t.Helper()
	ctx := context.Background()
	r, err := ota.NewRepository(repo)
	if err != nil {
		t.Fatal(err)
	}
	var diffIDs, descs []string
	for _, l := range layers {
		payload, b64 := l[0], l[1]
		f := ota.BytesFile("", []byte(payload))
		if err := r.UploadBlob(ctx, f); err != nil {
			t.Fatal(err)
		}
		diffIDs = append(diffIDs, `"`+f.Digest.String()+`"`)
		descs = append(descs, fmt.Sprintf(`{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","size":%d,"digest":"%s","annotations":{"dev.cosignproject.cosign/signature":"%s"}}`, f.Size, f.Digest, b64))
	}
	config := fmt.Sprintf(`{"architecture":"","created":"2026-01-02T03:04:05Z","history":[{"created":"0001-01-01T00:00:00Z"}],"os":"","rootfs":{"type":"layers","diff_ids":[%s]},"config":{}}`, strings.Join(diffIDs, ","))
	cf := ota.BytesFile("", []byte(config))
	if err := r.UploadBlob(ctx, cf); err != nil {
		t.Fatal(err)
	}
	manifest := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":%d,"digest":"%s"},"layers":[%s]}`,
		cf.Size, cf.Digest, strings.Join(descs, ","))
	tag := "sha256-" + strings.TrimPrefix(subject.DigestStr(), "sha256:") + ".sig"
	if _, err := r.PutManifest(ctx, tag, []byte(manifest), "application/vnd.oci.image.manifest.v1+json"); err != nil {
		t.Fatal(err)
	}
}

func signPayload(t *testing.T, key *ecdsa.PrivateKey, payload string) string {
	sum := sha256.Sum256([]byte(payload))
	sig, err := ecdsa.SignASN1(rand.Reader, key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// TestVerifyHandBuiltSignatures verifies signature images written by hand
// in cosign's layout, including forged and misdirected ones.
func TestVerifyHandBuiltSignatures(t *testing.T) {
	ctx := context.Background()
	host := newRegistry(t)
	repo := host + "/models/digits"
	signer, other := mustKey(t), mustKey(t)
	payloadFor := func(ref, digest string) string {
		return `{"critical":{"identity":{"docker-reference":"` + ref + `"},"image":{"docker-manifest-digest":"` + digest + `"},"type":"cosign container image signature"},"optional":null}`
	}
	n := 0
	subject := func() name.Digest {
		n++
		return pushModel(t, fmt.Sprintf("%s:%d", repo, n), fmt.Sprint(n))
	}
	tests := []struct {
		name   string
		layers func(d name.Digest) [][2]string
		opts   []Option
		want   error
		reason string
	}{
		{"cosign layout verifies", func(d name.Digest) [][2]string {
			p := payloadFor(repo, d.DigestStr())
			return [][2]string{{p, signPayload(t, signer, p)}}
		}, nil, nil, ""},
		{"with claims", func(d name.Digest) [][2]string {
			p := strings.Replace(payloadFor(repo, d.DigestStr()), `"optional":null`, `"optional":{"git":"abc123"}`, 1)
			return [][2]string{{p, signPayload(t, signer, p)}}
		}, nil, nil, ""},
		{"second layer verifies", func(d name.Digest) [][2]string {
			p := payloadFor(repo, d.DigestStr())
			return [][2]string{{p, signPayload(t, other, p)}, {p, signPayload(t, signer, p)}}
		}, nil, nil, ""},
		{"untrusted key", func(d name.Digest) [][2]string {
			p := payloadFor(repo, d.DigestStr())
			return [][2]string{{p, signPayload(t, other, p)}}
		}, nil, ErrBadSignature, "does not verify under any trusted key"},
		{"payload for another digest", func(d name.Digest) [][2]string {
			p := payloadFor(repo, "sha256:"+strings.Repeat("ab", 32))
			return [][2]string{{p, signPayload(t, signer, p)}}
		}, nil, ErrBadSignature, "payload signs sha256:abab"},
		{"payload for another repository", func(d name.Digest) [][2]string {
			p := payloadFor(host+"/models/other", d.DigestStr())
			return [][2]string{{p, signPayload(t, signer, p)}}
		}, nil, ErrBadSignature, "names repository"},
		{"another repository allowed", func(d name.Digest) [][2]string {
			p := payloadFor("mirror.example/models/digits", d.DigestStr())
			return [][2]string{{p, signPayload(t, signer, p)}}
		}, []Option{WithAnyReference()}, nil, ""},
		{"signature over other bytes", func(d name.Digest) [][2]string {
			p := payloadFor(repo, d.DigestStr())
			return [][2]string{{p, signPayload(t, signer, p+" ")}}
		}, nil, ErrBadSignature, "does not verify"},
		{"not base64", func(d name.Digest) [][2]string {
			p := payloadFor(repo, d.DigestStr())
			return [][2]string{{p, "!!"}}
		}, nil, ErrBadSignature, "not base64"},
		{"wrong type", func(d name.Digest) [][2]string {
			p := strings.Replace(payloadFor(repo, d.DigestStr()), "cosign container image signature", "atomic container signature", 1)
			return [][2]string{{p, signPayload(t, signer, p)}}
		}, nil, ErrBadSignature, "payload type"},
		{"no layers", func(d name.Digest) [][2]string { return nil }, nil, ErrNoSignature, "no layers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := subject()
			putSignatureImage(t, repo, d, tt.layers(d)...)
			v, err := Verify(ctx, d.String(), []*ecdsa.PublicKey{&signer.PublicKey}, tt.opts...)
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if v.Ref != d || !v.Key.Equal(&signer.PublicKey) {
					t.Errorf("Verified %+v", v)
				}
				return
			}
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("Verify = %v, want %v mentioning %q", err, tt.want, tt.reason)
			}
		})
	}
}

func TestSignVerify(t *testing.T) {
	ctx := context.Background()
	host := newRegistry(t)
	ref := host + "/models/digits:7"
	d := pushModel(t, ref, "7")
	a, b, c := mustKey(t), mustKey(t), mustKey(t)

	if _, err := Verify(ctx, ref, []*ecdsa.PublicKey{&a.PublicKey}); !errors.Is(err, ErrNoSignature) {
		t.Fatalf("Verify unsigned = %v, want ErrNoSignature", err)
	}
	s, err := Sign(ctx, ref, a, WithClaims(map[string]any{"version": "7"}))
	if err != nil {
		t.Fatal(err)
	}
	if s.Ref != d || s.Existing {
		t.Errorf("Signed %+v", s)
	}
	if _, err := Sign(ctx, ref, b); err != nil {
		t.Fatal(err)
	}
	layers := func() int {
		raw, err := crane.Manifest(s.Tag.String())
		if err != nil {
			t.Fatal(err)
		}
		m, err := v1.ParseManifest(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		return len(m.Layers)
	}
	if n := layers(); n != 2 {
		t.Fatalf("%d signature layers after two signers, want 2", n)
	}
	again, err := Sign(ctx, ref, a, WithClaims(map[string]any{"version": "7"}))
	if err != nil || !again.Existing {
		t.Fatalf("re-signing: %+v, %v; want the existing signature reused", again, err)
	}
	if n := layers(); n != 2 {
		t.Fatalf("%d signature layers after re-signing, want 2", n)
	}

	for name, tt := range map[string]struct {
		keys []*ecdsa.PublicKey
		ok   bool
	}{
		"first signer":  {[]*ecdsa.PublicKey{&a.PublicKey}, true},
		"second signer": {[]*ecdsa.PublicKey{&b.PublicKey}, true},
		"any of keys":   {[]*ecdsa.PublicKey{&c.PublicKey, &b.PublicKey}, true},
		"stranger":      {[]*ecdsa.PublicKey{&c.PublicKey}, false},
	} {
		v, err := Verify(ctx, ref, tt.keys)
		if tt.ok != (err == nil) {
			t.Errorf("%s: Verify = %v", name, err)
		}
		if err == nil && v.Ref != d {
			t.Errorf("%s: verified %s, want %s", name, v.Ref, d)
		}
	}

	// Moving the tag to another (unsigned) artifact must not carry trust over.
	pushModel(t, ref, "8")
	if _, err := Verify(ctx, ref, []*ecdsa.PublicKey{&a.PublicKey}); !errors.Is(err, ErrNoSignature) {
		t.Errorf("Verify after the tag moved = %v, want ErrNoSignature", err)
	}
	// A copy of a valid signature image placed at the new digest's tag fails
	// on the digest claim.
	d8, err := ota.Resolve(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := crane.Copy(s.Tag.String(), Tag(d8).String()); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(ctx, ref, []*ecdsa.PublicKey{&a.PublicKey}); !errors.Is(err, ErrBadSignature) || !strings.Contains(err.Error(), "payload signs") {
		t.Errorf("Verify with a transplanted signature = %v", err)
	}
	if _, err := Verify(ctx, ref, nil); !errors.Is(err, ErrKey) {
		t.Errorf("Verify without keys = %v", err)
	}
}

func TestKeys(t *testing.T) {
	k := mustKey(t)
	privPEM, err := MarshalPrivateKeyPEM(k)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, err := MarshalPublicKeyPEM(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(pubPEM), "-----BEGIN PUBLIC KEY-----") || !strings.HasPrefix(string(privPEM), "-----BEGIN PRIVATE KEY-----") {
		t.Fatalf("PEM types: %s / %s", pubPEM, privPEM)
	}
	got, err := ParsePrivateKeyPEM(privPEM, nil)
	if err != nil || !got.Equal(k) {
		t.Fatalf("private round trip: %v", err)
	}
	sec1, _ := x509.MarshalECPrivateKey(k)
	if got, err := ParsePrivateKeyPEM(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), nil); err != nil || !got.Equal(k) {
		t.Fatalf("EC PRIVATE KEY: %v", err)
	}
	k2 := mustKey(t)
	pub2, _ := MarshalPublicKeyPEM(&k2.PublicKey)
	pubs, err := ParsePublicKeysPEM(append(pubPEM, pub2...))
	if err != nil || len(pubs) != 2 || !pubs[0].Equal(&k.PublicKey) || !pubs[1].Equal(&k2.PublicKey) {
		t.Fatalf("two public keys: %v, %d", err, len(pubs))
	}

	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384DER, _ := x509.MarshalPKCS8PrivateKey(p384)
	p384Pub, _ := x509.MarshalPKIXPublicKey(&p384.PublicKey)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 1024)
	rsaDER, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	bad := map[string]struct {
		b    []byte
		priv bool
		want string
	}{
		"not pem":               {[]byte("cosign"), true, "no PEM block"},
		"p384 private":          {pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p384DER}), true, "P-384"},
		"rsa private":           {pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: rsaDER}), true, "not an ECDSA key"},
		"encrypted no password": {pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED SIGSTORE PRIVATE KEY", Bytes: []byte("{}")}), true, "needs a password"},
		"public as priv":        {pubPEM, true, `PEM block "PUBLIC KEY"`},
		"p384 public":           {pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: p384Pub}), false, "P-384"},
		"private as pub":        {privPEM, false, `PEM block "PRIVATE KEY"`},
		"empty pub":             {nil, false, "no PUBLIC KEY"},
		"garbage pub":           {pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("x")}), false, "unusable key"},
	}
	for name, tt := range bad {
		var err error
		if tt.priv {
			_, err = ParsePrivateKeyPEM(tt.b, nil)
		} else {
			_, err = ParsePublicKeysPEM(tt.b)
		}
		if !errors.Is(err, ErrKey) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want ErrKey mentioning %q", name, err, tt.want)
		}
	}
	if _, err := Sign(context.Background(), "localhost:1/x:1", p384); !errors.Is(err, ErrKey) {
		t.Errorf("Sign with P-384 = %v", err)
	}
}

func TestPayloadJSONRoundTrip(t *testing.T) {
	d, _ := name.NewDigest("localhost:5000/m@sha256:" + strings.Repeat("0", 64))
	b, _ := NewPayload(d, map[string]any{"a": 1.5})
	var p Payload
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	again, _ := json.Marshal(p)
	if !bytes.Equal(b, again) {
		t.Errorf("round trip changed the payload: %s vs %s", b, again)
	}
}

// TestSignVerifyDistribution signs and verifies on Debian's docker-registry.
func TestSignVerifyDistribution(t *testing.T) {
	ctx := context.Background()
	host := testenv.Distribution(t)
	ref := host + "/models/digits:1"
	d := pushModel(t, ref, "1")
	key := mustKey(t)
	if _, err := Sign(ctx, ref, key); err != nil {
		t.Fatalf("Sign: %v", err)
	}
	v, err := Verify(ctx, ref, []*ecdsa.PublicKey{&key.PublicKey})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if v.Ref != d {
		t.Errorf("verified %s, want %s", v.Ref, d)
	}
	if _, err := Verify(ctx, ref, []*ecdsa.PublicKey{&mustKey(t).PublicKey}); !errors.Is(err, ErrBadSignature) {
		t.Errorf("Verify with a stranger's key = %v", err)
	}
}
