package ota

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/edgefleet/edgefleet/ota/artifact"
)

// Resolved is a model artifact whose manifest and config have been fetched,
// verified against their digests and checked against the format.
type Resolved struct {
	// Ref is the artifact's digest reference ("host/repo@sha256:...").
	Ref name.Digest
	// Descriptor describes the manifest.
	Descriptor  v1.Descriptor
	RawManifest []byte
	Manifest    *v1.Manifest
	RawConfig   []byte
	Config      *artifact.Config
	// Index is the variant index the reference named, and Variant the entry
	// selected from it (WithVariant); both nil when the reference named the
	// artifact itself.
	Index   *Index
	Variant *Variant
}

// Model returns the model layer's descriptor.
func (r *Resolved) Model() v1.Descriptor {
	d, _ := artifact.ModelLayer(r.Manifest)
	return d
}

// Files returns the descriptors of the extra file layers.
func (r *Resolved) Files() []v1.Descriptor {
	var out []v1.Descriptor
	for _, l := range r.Manifest.Layers {
		if l.MediaType != artifact.ModelMediaType {
			out = append(out, l)
		}
	}
	return out
}

// Size returns the total size of the config and all layers.
func (r *Resolved) Size() int64 {
	n := r.Manifest.Config.Size
	for _, l := range r.Manifest.Layers {
		n += l.Size
	}
	return n
}

// Inspect fetches and checks the manifest a tag or digest names and its
// config: the manifest must be an OCI image manifest (Content-Type and
// mediaType) of at most 4 MiB with the edgefleet artifactType, and the config
// at most 1 MiB and valid. Layer sizes above the WithMaxBlobSize limit are
// refused here, before any download.
//
// A reference to a variant index (SPEC.md section 7) is resolved to the
// variant SelectVariant picks for the WithVariant preference, fetched by
// digest; the result records the index and the variant. Without WithVariant
// an index fails with an error wrapping ErrIndex that lists the variants.
func (r *Repository) Inspect(ctx context.Context, tagOrDigest string) (*Resolved, error) {
	raw, desc, err := r.Manifest(ctx, tagOrDigest, artifact.ManifestMediaType, artifact.IndexMediaType)
	if err != nil {
		return nil, err
	}
	if desc.MediaType == artifact.IndexMediaType {
		return r.inspectVariant(ctx, raw, desc)
	}
	return r.inspectManifest(ctx, raw, desc)
}

// inspectManifest checks a fetched artifact manifest and its config.
func (r *Repository) inspectManifest(ctx context.Context, raw []byte, desc v1.Descriptor) (*Resolved, error) {
	ref := r.name.Digest(desc.Digest.String())
	if desc.MediaType != artifact.ManifestMediaType {
		return nil, fmt.Errorf("%w: %s: registry serves the manifest as %q, want %q", ErrMediaType, ref, desc.MediaType, artifact.ManifestMediaType)
	}
	m, err := artifact.ParseManifest(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	for _, l := range m.Layers {
		if l.Size > r.o.maxBlobSize {
			return nil, fmt.Errorf("%w: %s: layer %q is %d bytes, limit %d", ErrTooLarge, ref, artifact.Title(l), l.Size, r.o.maxBlobSize)
		}
	}
	rawCfg, err := r.ReadBlob(ctx, m.Config, artifact.MaxConfigSize)
	if err != nil {
		return nil, fmt.Errorf("%s: config: %w", ref, err)
	}
	cfg, err := artifact.ParseConfig(rawCfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	return &Resolved{Ref: ref, Descriptor: desc, RawManifest: raw, Manifest: m, RawConfig: rawCfg, Config: cfg}, nil
}

// Pull inspects the artifact tagOrDigest names, stores its config and then
// its layers (model first) in sink, each verified by PullBlob, and returns
// what it resolved. Blobs the sink already holds are not fetched. If sink
// implements Reserver, it is asked for the missing bytes before any
// download.
func (r *Repository) Pull(ctx context.Context, tagOrDigest string, sink Sink) (*Resolved, error) {
	res, err := r.Inspect(ctx, tagOrDigest)
	if err != nil {
		return nil, err
	}
	if err := r.reserve(ctx, res, sink); err != nil {
		return nil, err
	}
	if err := putBytes(ctx, sink, res.Manifest.Config.Digest, res.RawConfig); err != nil {
		return nil, fmt.Errorf("%s: store config: %w", res.Ref, err)
	}
	layers := append([]v1.Descriptor{res.Model()}, res.Files()...)
	for _, l := range layers {
		if err := r.PullBlob(ctx, l, sink); err != nil {
			return nil, fmt.Errorf("%s: layer %q: %w", res.Ref, artifact.Title(l), err)
		}
	}
	r.o.log.Info("pulled model artifact", "ref", res.Ref.String(), "model", res.Config.Name, "version", res.Config.Version, "bytes", res.Size())
	return res, nil
}

func (r *Repository) reserve(ctx context.Context, res *Resolved, sink Sink) error {
	rs, ok := sink.(Reserver)
	if !ok {
		return nil
	}
	var need int64
	for _, d := range append([]v1.Descriptor{res.Manifest.Config}, res.Manifest.Layers...) {
		done, err := sink.Committed(ctx, d.Digest)
		if err != nil {
			return fmt.Errorf("sink: %w", err)
		}
		if done {
			continue
		}
		off, err := sink.Offset(ctx, d.Digest)
		if err != nil {
			return fmt.Errorf("sink: %w", err)
		}
		need += max(d.Size-off, 0)
	}
	if err := rs.Reserve(ctx, need); err != nil {
		return fmt.Errorf("%s: reserve %d bytes: %w", res.Ref, need, err)
	}
	return nil
}

// putBytes stores an already verified small blob in sink.
func putBytes(ctx context.Context, sink Sink, d v1.Hash, b []byte) error {
	done, err := sink.Committed(ctx, d)
	if err != nil || done {
		return err
	}
	if err := sink.Discard(ctx, d); err != nil {
		return err
	}
	if err := sink.Append(ctx, d, 0, b); err != nil {
		return errors.Join(err, sink.Discard(ctx, d))
	}
	return sink.Commit(ctx, d)
}

// Inspect fetches and checks the manifest and config of the artifact ref names.
func Inspect(ctx context.Context, ref string, opts ...Option) (*Resolved, error) {
	repo, r, err := ParseReference(ref, opts...)
	if err != nil {
		return nil, err
	}
	return repo.Inspect(ctx, r.Identifier())
}

// Pull downloads the artifact ref names into sink, verified and resumable;
// see Repository.Pull.
func Pull(ctx context.Context, ref string, sink Sink, opts ...Option) (*Resolved, error) {
	repo, r, err := ParseReference(ref, opts...)
	if err != nil {
		return nil, err
	}
	return repo.Pull(ctx, r.Identifier(), sink)
}
