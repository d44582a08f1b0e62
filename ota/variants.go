package ota

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/edgefleet/edgefleet/ota/artifact"
)

// Variant is one entry of a variant index: a complete model artifact of the
// same model version in one precision, for some execution providers.
type Variant struct {
	// Ref is the variant manifest's digest reference.
	Ref name.Digest
	// Descriptor is the index entry (digest, size, annotations).
	Descriptor v1.Descriptor
	// Precision and Providers come from the entry's annotations.
	Precision artifact.Precision
	Providers []string
}

// String describes v as "int8 for cpu (sha256:…)".
func (v Variant) String() string {
	return fmt.Sprintf("%s for %s (%s)", v.Precision, strings.Join(v.Providers, ","), v.Descriptor.Digest)
}

// Index is a fetched and checked variant index (SPEC.md section 7).
type Index struct {
	// Ref is the index's digest reference: what a tag resolves to and what
	// signatures cover.
	Ref        name.Digest
	Descriptor v1.Descriptor
	Raw        []byte
	Manifest   *v1.IndexManifest
	// Variants are the entries in index order.
	Variants []Variant
}

// Model returns the model name and version the index declares ("" when the
// annotations are absent).
func (ix *Index) Model() (name, version string) {
	return ix.Manifest.Annotations[artifact.AnnotationModelName], ix.Manifest.Annotations[artifact.AnnotationModelVersion]
}

// Preference describes the device a variant is chosen for.
type Preference struct {
	// Providers are the execution providers the device can use, best first
	// (e.g. [cuda, cpu]). The CPU provider is always available and is
	// added last when missing; empty means [cpu].
	Providers []string
}

// cpuProviders are execution providers that run on the CPU, where
// quantized integer kernels are the fast path.
var cpuProviders = map[string]bool{"cpu": true, "dnnl": true, "openvino": true, "xnnpack": true, "acl": true, "armnn": true}

// Precision orders: on CPU providers integer models are fastest; on GPU
// providers half and single precision are (onnxruntime's CUDA provider has
// few integer kernels).
var (
	cpuOrder = []artifact.Precision{artifact.PrecisionINT8, artifact.PrecisionUINT8, artifact.PrecisionMixed,
		artifact.PrecisionFP32, artifact.PrecisionBF16, artifact.PrecisionFP16}
	gpuOrder = []artifact.Precision{artifact.PrecisionFP16, artifact.PrecisionFP32, artifact.PrecisionBF16,
		artifact.PrecisionMixed, artifact.PrecisionINT8, artifact.PrecisionUINT8}
)

// providers returns the preference's providers normalised: lower case,
// without blanks and duplicates, the CPU provider last when missing.
func (p Preference) providers() []string {
	var out []string
	for _, ep := range p.Providers {
		ep = strings.ToLower(strings.TrimSpace(ep))
		if ep != "" && !slices.Contains(out, ep) {
			out = append(out, ep)
		}
	}
	if !slices.Contains(out, "cpu") {
		out = append(out, "cpu")
	}
	return out
}

// SelectVariant picks the variant of ix for a device. For each of the
// device's providers in order, the variants meant for that provider are
// candidates; the first provider with candidates decides, and among them
// the precision order of that kind of provider wins (int8, uint8, mixed,
// fp32, bf16, fp16 on CPU providers; fp16, fp32, bf16, mixed, int8, uint8
// on GPU providers), ties going to the earlier entry. When no variant is
// meant for any of the device's providers, the fp32 variant is chosen; without
// one, the error wraps ErrNoVariant.
func SelectVariant(ix *Index, want Preference) (Variant, error) {
	for _, ep := range want.providers() {
		order := gpuOrder
		if cpuProviders[ep] {
			order = cpuOrder
		}
		best, rank := -1, len(order)
		for i, v := range ix.Variants {
			if !slices.Contains(v.Providers, ep) {
				continue
			}
			r := slices.Index(order, v.Precision)
			if r < 0 {
				r = len(order) - 1
			}
			if best < 0 || r < rank {
				best, rank = i, r
			}
		}
		if best >= 0 {
			return ix.Variants[best], nil
		}
	}
	for _, v := range ix.Variants {
		if v.Precision == artifact.PrecisionFP32 {
			return v, nil
		}
	}
	return Variant{}, fmt.Errorf("%w in %s for providers %s: %s", ErrNoVariant, ix.Ref,
		strings.Join(want.providers(), ","), describeVariants(ix.Variants))
}

func describeVariants(vs []Variant) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = v.String()
	}
	return strings.Join(s, "; ")
}

// InspectIndex fetches and checks the variant index a tag or digest names
// (at most 4 MiB, verified against its digest, SPEC.md section 7). A
// reference to a single artifact manifest fails with ErrMediaType.
func (r *Repository) InspectIndex(ctx context.Context, tagOrDigest string) (*Index, error) {
	raw, desc, err := r.Manifest(ctx, tagOrDigest, artifact.IndexMediaType, artifact.ManifestMediaType)
	if err != nil {
		return nil, err
	}
	return r.parseIndex(raw, desc)
}

func (r *Repository) parseIndex(raw []byte, desc v1.Descriptor) (*Index, error) {
	ref := r.name.Digest(desc.Digest.String())
	if desc.MediaType != artifact.IndexMediaType {
		return nil, fmt.Errorf("%w: %s is served as %q, not a variant index (%s)", ErrMediaType, ref, desc.MediaType, artifact.IndexMediaType)
	}
	m, err := artifact.ParseIndex(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	ix := &Index{Ref: ref, Descriptor: desc, Raw: raw, Manifest: m}
	for _, d := range m.Manifests {
		eps, _ := artifact.ParseProviders(d.Annotations[artifact.AnnotationProviders]) // checked by ParseIndex
		ix.Variants = append(ix.Variants, Variant{Ref: r.name.Digest(d.Digest.String()), Descriptor: d,
			Precision: artifact.Precision(d.Annotations[artifact.AnnotationPrecision]), Providers: eps})
	}
	return ix, nil
}

// inspectVariant resolves a fetched index to the preferred variant.
func (r *Repository) inspectVariant(ctx context.Context, raw []byte, desc v1.Descriptor) (*Resolved, error) {
	ix, err := r.parseIndex(raw, desc)
	if err != nil {
		return nil, err
	}
	if r.o.variant == nil {
		return nil, fmt.Errorf("%w: %s has %d variants (%s); choose one by digest or give a preference (WithVariant)",
			ErrIndex, ix.Ref, len(ix.Variants), describeVariants(ix.Variants))
	}
	v, err := SelectVariant(ix, *r.o.variant)
	if err != nil {
		return nil, err
	}
	// The child is fetched by the digest the (verified) index names, so a
	// signature over the index covers it.
	craw, cdesc, err := r.Manifest(ctx, v.Descriptor.Digest.String(), artifact.ManifestMediaType)
	if err != nil {
		return nil, fmt.Errorf("%s: variant %s: %w", ix.Ref, v, err)
	}
	if cdesc.Size != v.Descriptor.Size {
		return nil, fmt.Errorf("%w: %s: variant %s is %d bytes, the index says %d", artifact.ErrInvalid, ix.Ref, v, cdesc.Size, v.Descriptor.Size)
	}
	res, err := r.inspectManifest(ctx, craw, cdesc)
	if err != nil {
		return nil, fmt.Errorf("%s: variant %s: %w", ix.Ref, v, err)
	}
	var problems []string
	if res.Config.Precision != v.Precision {
		problems = append(problems, fmt.Sprintf("config precision %s, index says %s", res.Config.Precision, v.Precision))
	}
	if n, ver := ix.Model(); (n != "" && n != res.Config.Name) || (ver != "" && ver != res.Config.Version) {
		problems = append(problems, fmt.Sprintf("config is %s version %s, index says %s version %s", res.Config.Name, res.Config.Version, n, ver))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: %s: variant %s: %s", artifact.ErrInvalid, ix.Ref, v, strings.Join(problems, "; "))
	}
	res.Index, res.Variant = ix, &v
	r.o.log.Info("selected model variant", "index", ix.Ref.String(), "variant", v.String(),
		"providers", strings.Join(r.o.variant.providers(), ","))
	return res, nil
}

// PushVariants uploads each variant as its own artifact (by digest, untagged)
// and then a variant index listing them under tagOrDigest, and returns the
// index's digest reference. All variants must be the same model name and
// version. Each entry is annotated with the variant config's precision and
// its execution providers: the config's ExecutionProviders, or
// artifact.DefaultProviders of its precision. Sign the index digest: the
// signature covers every variant through it.
func (r *Repository) PushVariants(ctx context.Context, tagOrDigest string, variants []Artifact) (name.Digest, error) {
	if len(variants) == 0 || len(variants) > artifact.MaxVariants {
		return name.Digest{}, fmt.Errorf("%w: %d variants, want 1..%d", artifact.ErrInvalid, len(variants), artifact.MaxVariants)
	}
	first := variants[0].Config
	for i, v := range variants {
		if v.Config.Name != first.Name || v.Config.Version != first.Version {
			return name.Digest{}, fmt.Errorf("%w: variant %d is %s version %s, variant 0 is %s version %s; variants must be one model version",
				artifact.ErrInvalid, i, v.Config.Name, v.Config.Version, first.Name, first.Version)
		}
	}
	// Check the entries before uploading anything.
	entries := make([]v1.Descriptor, len(variants))
	kinds := map[string]int{}
	for i, v := range variants {
		c := v.Config
		if c.SchemaVersion == 0 {
			c.SchemaVersion = artifact.ConfigSchemaVersion // as Marshal does
		}
		if err := c.Validate(); err != nil {
			return name.Digest{}, fmt.Errorf("variant %d: %w", i, err)
		}
		eps := v.Config.ExecutionProviders
		if len(eps) == 0 {
			eps = artifact.DefaultProviders(v.Config.Precision)
		}
		kind := string(v.Config.Precision) + " for " + strings.Join(eps, ",")
		if j, dup := kinds[kind]; dup {
			return name.Digest{}, fmt.Errorf("%w: variants %d and %d are both %s", artifact.ErrInvalid, j, i, kind)
		}
		kinds[kind] = i
		entries[i] = v1.Descriptor{MediaType: artifact.ManifestMediaType, ArtifactType: artifact.ArtifactType,
			Annotations: map[string]string{
				artifact.AnnotationPrecision: string(v.Config.Precision),
				artifact.AnnotationProviders: strings.Join(eps, ","),
			}}
	}
	annotations := map[string]string{artifact.AnnotationModelName: first.Name, artifact.AnnotationModelVersion: first.Version}
	for i, v := range variants {
		d, err := r.pushArtifact(ctx, "", v)
		if err != nil {
			return name.Digest{}, fmt.Errorf("variant %d (%s): %w", i, v.Config.Precision, err)
		}
		entries[i].Size, entries[i].Digest = d.Size, d.Digest
	}
	ix, err := artifact.NewIndex(entries, annotations)
	if err != nil {
		return name.Digest{}, err
	}
	raw, err := json.Marshal(ix)
	if err != nil {
		return name.Digest{}, err
	}
	desc, err := r.PutManifest(ctx, tagOrDigest, raw, artifact.IndexMediaType)
	if err != nil {
		return name.Digest{}, err
	}
	r.o.log.Info("pushed model variant index", "repository", r.name.String(), "ref", tagOrDigest, "digest", desc.Digest,
		"model", first.Name, "version", first.Version, "variants", len(variants))
	return r.name.Digest(desc.Digest.String()), nil
}

// InspectIndex fetches and checks the variant index ref names.
func InspectIndex(ctx context.Context, ref string, opts ...Option) (*Index, error) {
	repo, r, err := ParseReference(ref, opts...)
	if err != nil {
		return nil, err
	}
	return repo.InspectIndex(ctx, r.Identifier())
}

// PushVariants uploads the variants and a variant index at ref
// ("host/repo:tag") and returns the index's digest reference; see
// Repository.PushVariants.
func PushVariants(ctx context.Context, ref string, variants []Artifact, opts ...Option) (name.Digest, error) {
	repo, r, err := ParseReference(ref, opts...)
	if err != nil {
		return name.Digest{}, err
	}
	return repo.PushVariants(ctx, r.Identifier(), variants)
}
