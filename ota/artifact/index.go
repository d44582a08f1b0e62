package artifact

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Variant index: several precision variants of one model version behind one
// reference (ota/SPEC.md section 7).
const (
	// IndexMediaType is the OCI image index media type of a variant index.
	IndexMediaType = "application/vnd.oci.image.index.v1+json"
	// AnnotationPrecision, on an index entry, is the variant's precision
	// (a Precision value; it equals the variant config's precision).
	AnnotationPrecision = "org.edgefleet.model.precision"
	// AnnotationProviders, on an index entry, lists the execution providers
	// the variant is meant for, comma-separated in order of preference
	// ("cpu", "cuda,tensorrt,cpu").
	AnnotationProviders = "org.edgefleet.model.providers"
	// AnnotationModelName and AnnotationModelVersion, on the index, name the
	// model version every variant is.
	AnnotationModelName    = "org.edgefleet.model.name"
	AnnotationModelVersion = "org.edgefleet.model.version"
	// MaxVariants bounds the entries of a variant index.
	MaxVariants = 16
)

// DefaultProviders returns the providers a variant of precision p is meant
// for when its config does not list any: quantized models (int8, uint8,
// mixed) target the CPU provider, whose integer kernels they are made for;
// float models run anywhere, GPUs first.
func DefaultProviders(p Precision) []string {
	switch p {
	case PrecisionINT8, PrecisionUINT8, PrecisionMixed:
		return []string{"cpu"}
	}
	return []string{"cuda", "tensorrt", "cpu"}
}

// ParseProviders splits a providers annotation and checks every name
// (lower case [a-z0-9_-], no duplicates, at least one).
func ParseProviders(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("no execution providers")
	}
	var out []string
	seen := map[string]bool{}
	for _, ep := range strings.Split(s, ",") {
		ep = strings.TrimSpace(ep)
		if !reEP.MatchString(ep) {
			return nil, fmt.Errorf("execution provider %q must be lower case [a-z0-9_-]", ep)
		}
		if seen[ep] {
			return nil, fmt.Errorf("execution provider %q listed twice", ep)
		}
		seen[ep] = true
		out = append(out, ep)
	}
	return out, nil
}

// CheckPrecision reports whether p is one of the precisions a config may
// declare.
func CheckPrecision(p Precision) error {
	switch p {
	case PrecisionFP32, PrecisionFP16, PrecisionBF16, PrecisionINT8, PrecisionUINT8, PrecisionMixed:
		return nil
	}
	return fmt.Errorf("precision %q must be one of fp32, fp16, bf16, int8, uint8, mixed", p)
}

// NewIndex assembles a variant index from the variants' manifest
// descriptors (each annotated with AnnotationPrecision and
// AnnotationProviders) and index annotations (may be nil). The result is
// checked with CheckIndex.
func NewIndex(manifests []v1.Descriptor, annotations map[string]string) (*v1.IndexManifest, error) {
	ix := &v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.MediaType(IndexMediaType),
		ArtifactType:  ArtifactType,
		Manifests:     manifests,
		Annotations:   annotations,
	}
	if err := CheckIndex(ix); err != nil {
		return nil, err
	}
	return ix, nil
}

// ParseIndex decodes raw index bytes and checks them with CheckIndex.
func ParseIndex(raw []byte) (*v1.IndexManifest, error) {
	if len(raw) > MaxManifestSize {
		return nil, fmt.Errorf("%w: index is %d bytes, limit %d", ErrInvalid, len(raw), MaxManifestSize)
	}
	var ix v1.IndexManifest
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&ix); err != nil {
		return nil, fmt.Errorf("%w: index: %v", ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: index: trailing data after the JSON object", ErrInvalid)
	}
	if err := CheckIndex(&ix); err != nil {
		return nil, err
	}
	return &ix, nil
}

// CheckIndex reports every way ix departs from the variant index format:
// schema version, media type, artifactType, 1…MaxVariants entries that are
// OCI image manifests of at most MaxManifestSize with sha256 digests, each
// with a valid precision and providers annotation, no digest twice and no
// two entries with the same precision and providers.
func CheckIndex(ix *v1.IndexManifest) error {
	var p problems
	if ix.SchemaVersion != 2 {
		p.addf("schemaVersion is %d, want 2", ix.SchemaVersion)
	}
	if ix.MediaType != IndexMediaType {
		p.addf("mediaType is %q, want %q", ix.MediaType, IndexMediaType)
	}
	if ix.ArtifactType != ArtifactType {
		p.addf("artifactType is %q, want %q", ix.ArtifactType, ArtifactType)
	}
	if len(ix.Manifests) == 0 || len(ix.Manifests) > MaxVariants {
		p.addf("%d manifests, want 1..%d", len(ix.Manifests), MaxVariants)
	}
	digests := map[v1.Hash]bool{}
	kinds := map[string]bool{}
	for i, d := range ix.Manifests {
		what := fmt.Sprintf("manifest %d", i)
		checkDigest(&p, what, d)
		if d.MediaType != ManifestMediaType {
			p.addf("%s: mediaType is %q, want %q", what, d.MediaType, ManifestMediaType)
		}
		if d.ArtifactType != "" && d.ArtifactType != ArtifactType {
			p.addf("%s: artifactType is %q, want %q", what, d.ArtifactType, ArtifactType)
		}
		if d.Size <= 0 || d.Size > MaxManifestSize {
			p.addf("%s: size %d outside 1..%d", what, d.Size, MaxManifestSize)
		}
		if digests[d.Digest] {
			p.addf("%s: digest %s listed twice", what, d.Digest)
		}
		digests[d.Digest] = true
		prec := Precision(d.Annotations[AnnotationPrecision])
		if err := CheckPrecision(prec); err != nil {
			p.addf("%s: %s: %v", what, AnnotationPrecision, err)
		}
		eps, err := ParseProviders(d.Annotations[AnnotationProviders])
		if err != nil {
			p.addf("%s: %s: %v", what, AnnotationProviders, err)
		}
		kind := string(prec) + "/" + strings.Join(eps, ",")
		if err == nil && kinds[kind] {
			p.addf("%s: a second %s variant for providers %s", what, prec, strings.Join(eps, ","))
		}
		kinds[kind] = true
	}
	return p.err("index")
}
