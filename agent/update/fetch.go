package update

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/edgefleet/edgefleet/agent/cache"
	"github.com/edgefleet/edgefleet/ota"
)

// Fetch pulls the model of the artifact ref names into c (by digest,
// verified, resumable, within the cache budget) and catalogues it as the
// model and version its config names, without activating it. A version
// already cached with the same model bytes is returned as it is; one with
// other bytes fails with ErrConflict. No signature is checked; use
// signature.Verify first and pass the verified digest reference. A
// reference to a variant index needs ota.WithVariant among opts.
func Fetch(ctx context.Context, c *cache.Cache, ref string, opts ...ota.Option) (cache.VersionRecord, *ota.Resolved, error) {
	repo, r, err := ota.ParseReference(ref, opts...)
	if err != nil {
		return cache.VersionRecord{}, nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	d, ok := r.(name.Digest)
	if !ok {
		if d, err = repo.Resolve(ctx, r.Identifier()); err != nil {
			return cache.VersionRecord{}, nil, err
		}
	}
	res, err := repo.Inspect(ctx, d.DigestStr())
	if err != nil {
		return cache.VersionRecord{}, nil, err
	}
	cfg := res.Config
	existing, err := c.Version(cfg.Name, cfg.Version)
	switch {
	case err == nil && existing.Digest == res.Model().Digest.String():
		return existing, res, nil
	case err == nil:
		return existing, res, fmt.Errorf("%w: model %q version %s is cached with other bytes (%s)", ErrConflict, cfg.Name, cfg.Version, existing.Digest)
	case !errors.Is(err, cache.ErrNotFound):
		return cache.VersionRecord{}, res, err
	}
	if err := fetchModel(ctx, c, repo, res, c); err != nil {
		return cache.VersionRecord{}, res, err
	}
	rec, err := c.AddVersion(ctx, cfg.Name, cfg.Version, versionRecord(res, false))
	return rec, res, err
}

// fetchModel stores the artifact's model layer in c through sink, after
// making room for what is missing. Nothing happens when it is cached.
func fetchModel(ctx context.Context, c *cache.Cache, repo *ota.Repository, res *ota.Resolved, sink ota.Sink) error {
	md := res.Model()
	done, err := c.Committed(ctx, md.Digest)
	if err != nil || done {
		return err
	}
	off, err := c.Offset(ctx, md.Digest)
	if err != nil {
		return err
	}
	if err := c.Reserve(ctx, max(md.Size-off, 0)); err != nil {
		return fmt.Errorf("disk budget for %d bytes: %w", md.Size-off, err)
	}
	return repo.PullBlob(ctx, md, sink)
}

// versionRecord is the cache record of an artifact's model. Versions an
// update installs carry metaManifest, which Recover looks for; versions
// Fetch pulls carry metaPulled instead.
//
// For a variant of a variant index, ota_ref and the manifest digest name
// the index (what was asked for and signed, so a resumed update selects
// again), ota_variant the variant's manifest and Source the variant.
func versionRecord(res *ota.Resolved, installing bool) cache.VersionRecord {
	cfg := res.Config
	ref := res.Ref
	if res.Index != nil {
		ref = res.Index.Ref
	}
	rec := cache.VersionRecord{Digest: res.Model().Digest.String(), Source: res.Ref.String(),
		Inputs: cacheSpecs(cfg.Inputs), Outputs: cacheSpecs(cfg.Outputs),
		Meta: map[string]string{metaRef: ref.String(), metaConfig: string(res.RawConfig), metaPrecision: string(cfg.Precision)}}
	if res.Index != nil {
		rec.Meta[metaVariant] = res.Ref.DigestStr()
	}
	if installing {
		rec.Meta[metaManifest] = ref.DigestStr()
	} else {
		rec.Meta[metaPulled] = ref.DigestStr()
	}
	return rec
}

// manifestOf returns the manifest digest a cached version came from.
func manifestOf(rec cache.VersionRecord) string {
	if d := rec.Meta[metaManifest]; d != "" {
		return d
	}
	return rec.Meta[metaPulled]
}
