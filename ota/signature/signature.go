// Package signature signs and verifies OCI artifacts in cosign's key-based
// "simple signing" layout, so that signatures made with `cosign sign --key`
// verify here and signatures made here verify with `cosign verify --key`.
// The layout is written down in ota/SPEC.md.
//
// # Basics
//
// For a manifest with digest sha256:HEX in repository R, the signatures live
// in R under the tag "sha256-HEX.sig": an OCI image manifest with one layer
// per signature. Each layer is a simple-signing payload (media type
// PayloadMediaType) naming R and the digest, and carries the base64 ASN.1
// ECDSA signature over sha256(payload) in the SignatureAnnotation
// annotation. Sign appends a layer; Verify accepts the artifact when any
// layer verifies under any trusted key and names the right digest.
//
// # Caveats
//
// Only ECDSA P-256 keys are supported (cosign's default). No transparency
// log entry is made or checked: with cosign use --tlog-upload=false when
// signing and --insecure-ignore-tlog=true when verifying. Appending to the
// signature tag is a read-modify-write and races with a concurrent signer,
// as cosign's does.
package signature

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/edgefleet/edgefleet/ota"
)

// Names from cosign's signature specification.
const (
	// PayloadMediaType is the media type of a signature layer.
	PayloadMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
	// SignatureAnnotation holds the base64 signature on a signature layer.
	SignatureAnnotation = "dev.cosignproject.cosign/signature"
	// PayloadType is the payload's critical.type.
	PayloadType = "cosign container image signature"
	// TagSuffix ends a signature tag.
	TagSuffix = ".sig"
)

// Limits on what Verify reads.
const (
	maxSignatureLayers = 1000    // cosign's limit
	maxPayloadSize     = 1 << 20 // payloads are a few hundred bytes
)

// Errors returned by Verify; match them with errors.Is.
var (
	// ErrNoSignature: the artifact has no signature tag or no signature layer.
	ErrNoSignature = errors.New("no signature")
	// ErrBadSignature: signatures exist but none verifies under a trusted key
	// for this digest and repository.
	ErrBadSignature = errors.New("no valid signature")
)

// Payload is cosign's simple-signing payload. Marshalled with encoding/json
// it reproduces cosign's bytes exactly (field order, compact form,
// "optional":null when there are no claims).
type Payload struct {
	Critical Critical       `json:"critical"`
	Optional map[string]any `json:"optional"`
}

// Critical is the signed claim.
type Critical struct {
	Identity Identity `json:"identity"`
	Image    Image    `json:"image"`
	Type     string   `json:"type"`
}

// Identity names the repository the signer meant.
type Identity struct {
	DockerReference string `json:"docker-reference"`
}

// Image names the signed manifest.
type Image struct {
	DockerManifestDigest string `json:"docker-manifest-digest"`
}

// NewPayload returns the payload bytes cosign signs for d: the docker
// reference is d's repository with its registry ("localhost:5000/models/x"),
// the digest is d's. claims become the optional section (cosign sign -a).
func NewPayload(d name.Digest, claims map[string]any) ([]byte, error) {
	return json.Marshal(Payload{
		Critical: Critical{
			Identity: Identity{DockerReference: d.Context().Name()},
			Image:    Image{DockerManifestDigest: d.DigestStr()},
			Type:     PayloadType,
		},
		Optional: claims,
	})
}

// Tag returns the tag holding the signatures of d: "sha256-<hex>.sig" in d's repository.
func Tag(d name.Digest) name.Tag {
	return d.Context().Tag(strings.Replace(d.DigestStr(), ":", "-", 1) + TagSuffix)
}

// Option configures Sign and Verify.
type Option func(*options)

type options struct {
	reg          []ota.Option
	claims       map[string]any
	now          func() time.Time
	anyReference bool
}

// WithRegistry passes registry options (credentials, transport, insecure).
func WithRegistry(opts ...ota.Option) Option {
	return func(o *options) { o.reg = append(o.reg, opts...) }
}

// WithClaims sets the payload's optional section (cosign sign -a key=value).
func WithClaims(claims map[string]any) Option { return func(o *options) { o.claims = claims } }

// WithClock sets the clock for the signature image's creation time.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithAnyReference makes Verify accept payloads naming another repository,
// for artifacts copied between registries with their signatures. The digest
// must still match.
func WithAnyReference() Option { return func(o *options) { o.anyReference = true } }

func makeOptions(opts []Option) *options {
	o := &options{now: time.Now}
	for _, opt := range opts {
		opt(o)
	}
	return o
}

// Signed describes a signature Sign stored.
type Signed struct {
	// Ref is the signed manifest.
	Ref name.Digest
	// Tag is where the signature lives.
	Tag name.Tag
	// Payload is the signed payload; Signature its base64 signature.
	Payload   []byte
	Signature string
	// Existing is true when an equivalent signature by the same key was
	// already there and nothing was written.
	Existing bool
}

// Sign resolves ref to a digest, signs the simple-signing payload for it
// with priv (ECDSA P-256, SHA-256, ASN.1 DER) and appends the signature as
// a layer to the signature image at Tag. If the same key already signed the
// same payload, nothing is written.
func Sign(ctx context.Context, ref string, priv *ecdsa.PrivateKey, opts ...Option) (*Signed, error) {
	o := makeOptions(opts)
	if err := checkCurve(&priv.PublicKey); err != nil {
		return nil, err
	}
	repo, r, err := ota.ParseReference(ref, o.reg...)
	if err != nil {
		return nil, err
	}
	d, err := repo.Resolve(ctx, r.Identifier())
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", ref, err)
	}
	payload, err := NewPayload(d, o.claims)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(payload)
	sig, err := ecdsa.SignASN1(rand.Reader, priv, sum[:])
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", d, err)
	}
	out := &Signed{Ref: d, Tag: Tag(d), Payload: payload, Signature: base64.StdEncoding.EncodeToString(sig)}

	ropts := repo.RemoteOptions(ctx)
	base, err := remote.Image(out.Tag, ropts...)
	var te *transport.Error
	switch {
	case errors.As(err, &te) && te.StatusCode == http.StatusNotFound:
		base = emptySignatures()
	case err != nil:
		return nil, fmt.Errorf("sign %s: read %s: %w", d, out.Tag, err)
	default:
		if dup, err := alreadySigned(base, sum, &priv.PublicKey); err != nil {
			return nil, fmt.Errorf("sign %s: read %s: %w", d, out.Tag, err)
		} else if dup != "" {
			out.Signature, out.Existing = dup, true
			return out, nil
		}
	}
	img, err := appendSignature(base, payload, out.Signature, o.now())
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", d, err)
	}
	if err := remote.Write(out.Tag, img, ropts...); err != nil {
		return nil, fmt.Errorf("sign %s: write %s: %w", d, out.Tag, err)
	}
	return out, nil
}

// emptySignatures is the base of a new signature image, as cosign makes it:
// an empty OCI image with an OCI config.
func emptySignatures() v1.Image {
	return mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
}

// appendSignature adds one signature layer to base. Like cosign, it stamps
// the config's creation time when the base has none.
func appendSignature(base v1.Image, payload []byte, b64sig string, now time.Time) (v1.Image, error) {
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:       static.NewLayer(payload, PayloadMediaType),
		Annotations: map[string]string{SignatureAnnotation: b64sig},
	})
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	if cfg.Created.IsZero() {
		img, err = mutate.CreatedAt(img, v1.Time{Time: now.UTC()})
	}
	return img, err
}

// alreadySigned returns the signature of a layer of img carrying the same
// payload and verifying under pub, or "".
func alreadySigned(img v1.Image, payloadSum [32]byte, pub *ecdsa.PublicKey) (string, error) {
	m, err := img.Manifest()
	if err != nil {
		return "", err
	}
	want := v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", payloadSum)}
	for _, l := range m.Layers {
		if l.Digest != want {
			continue
		}
		b64 := l.Annotations[SignatureAnnotation]
		sig, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && ecdsa.VerifyASN1(pub, payloadSum[:], sig) {
			return b64, nil
		}
	}
	return "", nil
}

// Verified describes the signature that satisfied Verify.
type Verified struct {
	// Ref is the verified manifest; pull by this digest, not by tag.
	Ref name.Digest
	// Key is the trusted key that verified the signature.
	Key *ecdsa.PublicKey
	// Payload is the verified payload; Signature its base64 signature.
	Payload   Payload
	Signature string
}

// Verify resolves ref to a digest and checks the signatures at its
// signature tag. It succeeds if any signature layer verifies under any of
// pubs and its payload is a cosign payload naming exactly that digest and
// this repository (see WithAnyReference). It fails with ErrNoSignature when
// there is nothing to check and ErrBadSignature, listing why each layer was
// rejected, otherwise.
func Verify(ctx context.Context, ref string, pubs []*ecdsa.PublicKey, opts ...Option) (*Verified, error) {
	o := makeOptions(opts)
	if len(pubs) == 0 {
		return nil, fmt.Errorf("verify %s: %w: no trusted keys", ref, ErrKey)
	}
	repo, r, err := ota.ParseReference(ref, o.reg...)
	if err != nil {
		return nil, err
	}
	d, ok := r.(name.Digest)
	if !ok {
		if d, err = repo.Resolve(ctx, r.Identifier()); err != nil {
			return nil, fmt.Errorf("verify %s: %w", ref, err)
		}
	}
	tag := Tag(d)
	raw, _, err := repo.Manifest(ctx, tag.TagStr(), string(types.OCIManifestSchema1), string(types.DockerManifestSchema2))
	if errors.Is(err, ota.ErrNotFound) {
		return nil, fmt.Errorf("verify %s: %w: %s does not exist", d, ErrNoSignature, tag)
	}
	if err != nil {
		return nil, fmt.Errorf("verify %s: %w", d, err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("verify %s: signature manifest %s: %w", d, tag, err)
	}
	if len(m.Layers) > maxSignatureLayers {
		return nil, fmt.Errorf("verify %s: %s has %d layers, limit %d", d, tag, len(m.Layers), maxSignatureLayers)
	}
	var reasons []string
	for i, l := range m.Layers {
		v, err := verifyLayer(ctx, repo, l, d, pubs, o)
		if err == nil {
			return v, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("verify %s: %w", d, ctx.Err())
		}
		reasons = append(reasons, fmt.Sprintf("layer %d: %v", i, err))
	}
	if len(reasons) == 0 {
		return nil, fmt.Errorf("verify %s: %w: %s has no layers", d, ErrNoSignature, tag)
	}
	return nil, fmt.Errorf("verify %s: %w: %s", d, ErrBadSignature, strings.Join(reasons, "; "))
}

func verifyLayer(ctx context.Context, repo *ota.Repository, l v1.Descriptor, d name.Digest, pubs []*ecdsa.PublicKey, o *options) (*Verified, error) {
	if l.MediaType != PayloadMediaType {
		return nil, fmt.Errorf("media type %q is not a simple-signing payload", l.MediaType)
	}
	b64 := l.Annotations[SignatureAnnotation]
	if b64 == "" {
		return nil, fmt.Errorf("no %s annotation", SignatureAnnotation)
	}
	sig, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("signature is not base64: %v", err)
	}
	payload, err := repo.ReadBlob(ctx, l, maxPayloadSize)
	if err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	sum := sha256.Sum256(payload)
	var key *ecdsa.PublicKey
	for _, pub := range pubs {
		if ecdsa.VerifyASN1(pub, sum[:], sig) {
			key = pub
			break
		}
	}
	if key == nil {
		return nil, errors.New("signature does not verify under any trusted key")
	}
	// The claim is checked only after the signature: unsigned bytes are not
	// worth parsing.
	p, err := checkPayload(payload, d, o.anyReference)
	if err != nil {
		return nil, err
	}
	return &Verified{Ref: d, Key: key, Payload: p, Signature: b64}, nil
}

// checkPayload parses a signed payload and checks that it claims digest d
// (and d's repository, unless anyRef).
func checkPayload(payload []byte, d name.Digest, anyRef bool) (Payload, error) {
	var p Payload
	if err := json.Unmarshal(payload, &p); err != nil {
		return Payload{}, fmt.Errorf("payload is not JSON: %v", err)
	}
	if p.Critical.Type != PayloadType {
		return Payload{}, fmt.Errorf("payload type %q, want %q", p.Critical.Type, PayloadType)
	}
	if got := p.Critical.Image.DockerManifestDigest; got != d.DigestStr() {
		return Payload{}, fmt.Errorf("payload signs %s, not %s", got, d.DigestStr())
	}
	if got, want := p.Critical.Identity.DockerReference, d.Context().Name(); got != want && !anyRef {
		return Payload{}, fmt.Errorf("payload names repository %q, not %q", got, want)
	}
	return p, nil
}
