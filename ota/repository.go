package ota

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/edgefleet/edgefleet/ota/artifact"
)

// Repository is one repository of one registry, e.g. "localhost:5000/models/digits".
// It authenticates lazily on first use and keeps the token for later calls.
// A Repository is safe for concurrent use.
type Repository struct {
	name name.Repository
	o    *options

	mu     sync.Mutex        // guards reader
	reader http.RoundTripper // authenticated pull-scope transport; nil until first use

	pusher *remote.Pusher // authenticates lazily, per repository
}

// NewRepository returns a Repository for repo ("host[:port]/path"). It does
// no I/O.
func NewRepository(repo string, opts ...Option) (*Repository, error) {
	o := makeOptions(opts)
	r, err := name.NewRepository(repo, o.nameOptions()...)
	if err != nil {
		return nil, fmt.Errorf("repository %q: %w", repo, err)
	}
	return newRepository(r, o)
}

func newRepository(r name.Repository, o *options) (*Repository, error) {
	p, err := remote.NewPusher(remoteOptions(o)...)
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", r, err)
	}
	return &Repository{name: r, o: o, pusher: p}, nil
}

// ParseReference parses "host/repo:tag" or "host/repo@sha256:..." honouring
// WithInsecure, and returns the Repository and the tag or digest.
func ParseReference(ref string, opts ...Option) (*Repository, name.Reference, error) {
	o := makeOptions(opts)
	r, err := name.ParseReference(ref, o.nameOptions()...)
	if err != nil {
		return nil, nil, fmt.Errorf("reference %q: %w", ref, err)
	}
	repo, err := newRepository(r.Context(), o)
	if err != nil {
		return nil, nil, err
	}
	return repo, r, nil
}

// Name returns the repository's name.
func (r *Repository) Name() name.Repository { return r.name }

func remoteOptions(o *options) []remote.Option {
	return []remote.Option{
		remote.WithAuthFromKeychain(o.keychain),
		remote.WithTransport(o.transport),
		remote.WithUserAgent(o.userAgent),
	}
}

// RemoteOptions returns go-containerregistry remote options with the same
// credentials, transport and context, for calls this package does not wrap.
func (r *Repository) RemoteOptions(ctx context.Context) []remote.Option {
	return append(remoteOptions(r.o), remote.WithContext(ctx), remote.Reuse(r.pusher))
}

// Reference parses a tag or digest within the repository.
func (r *Repository) Reference(tagOrDigest string) (name.Reference, error) {
	sep := ":"
	if strings.Contains(tagOrDigest, ":") {
		sep = "@"
	}
	ref, err := name.ParseReference(r.name.String()+sep+tagOrDigest, r.o.nameOptions()...)
	if err != nil {
		return nil, fmt.Errorf("reference %q in %s: %w", tagOrDigest, r.name, err)
	}
	return ref, nil
}

// readTransport returns the authenticated transport for pulls, doing the
// ping and token handshake on first use.
func (r *Repository) readTransport(ctx context.Context) (http.RoundTripper, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.reader != nil {
		return r.reader, nil
	}
	auth, err := authn.Resolve(ctx, r.o.keychain, r.name)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", r.name.RegistryStr(), err)
	}
	ua := transport.NewUserAgent(r.o.transport, r.o.userAgent)
	rt, err := transport.NewWithContext(ctx, r.name.Registry, auth, ua, []string{r.name.Scope(transport.PullScope)})
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", r.name.RegistryStr(), err)
	}
	r.reader = rt
	return rt, nil
}

func (r *Repository) url(kind, id string) string {
	u := url.URL{
		Scheme: r.name.Registry.Scheme(),
		Host:   r.name.RegistryStr(),
		Path:   fmt.Sprintf("/v2/%s/%s/%s", r.name.RepositoryStr(), kind, id),
	}
	return u.String()
}

// backoff returns the wait before attempt n+1 after n consecutive failures.
func (o *options) backoff(n int) time.Duration {
	d := o.retry.Initial
	for i := 1; i < n && d < o.retry.Max; i++ {
		d *= 2
	}
	d = min(d, o.retry.Max)
	jitter := 0.8 + 0.4*rand.Float64()
	return time.Duration(float64(d) * jitter)
}

// retry runs attempt until it succeeds, fails permanently, or fails
// o.retry.Attempts times in a row without progress. onRetry, if not nil, is
// told about each retried failure.
func (r *Repository) retry(ctx context.Context, what string, attempt func(context.Context) (progressed bool, err error), onRetry func(error)) error {
	failures := 0
	for {
		progressed, err := attempt(ctx)
		if err == nil {
			return nil
		}
		if !isRetryable(ctx, err) {
			if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
				return fmt.Errorf("%s: %w (%w)", what, ctx.Err(), err)
			}
			return fmt.Errorf("%s: %w", what, err)
		}
		if progressed {
			failures = 0 // a flaky link that makes progress is not a dead one
		} else {
			failures++
		}
		if failures >= r.o.retry.Attempts {
			return fmt.Errorf("%s: giving up after %d attempts without progress: %w", what, failures, err)
		}
		wait := r.o.backoff(max(failures, 1))
		r.o.log.Warn("registry transfer failed, retrying", "what", what, "attempt", failures, "backoff", wait, "err", err)
		if onRetry != nil {
			onRetry(err)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w (last error: %w)", what, ctx.Err(), err)
		}
	}
}

// Manifest fetches the manifest a tag or digest names, accepting the given
// media types (all OCI and Docker manifest types when none are given). The
// bytes are limited to artifact.MaxManifestSize and verified against the
// requested digest and the registry's Docker-Content-Digest header. The
// descriptor's MediaType is the Content-Type the registry answered with.
func (r *Repository) Manifest(ctx context.Context, tagOrDigest string, accept ...string) ([]byte, v1.Descriptor, error) {
	ref, err := r.Reference(tagOrDigest)
	if err != nil {
		return nil, v1.Descriptor{}, err
	}
	if len(accept) == 0 {
		accept = []string{
			artifact.ManifestMediaType,
			"application/vnd.oci.image.index.v1+json",
			"application/vnd.docker.distribution.manifest.v2+json",
			"application/vnd.docker.distribution.manifest.list.v2+json",
		}
	}
	var (
		raw  []byte
		desc v1.Descriptor
	)
	err = r.retry(ctx, "fetch manifest "+ref.String(), func(ctx context.Context) (bool, error) {
		var err error
		raw, desc, err = r.fetchManifest(ctx, ref, accept)
		return false, err
	}, nil)
	return raw, desc, err
}

func (r *Repository) fetchManifest(ctx context.Context, ref name.Reference, accept []string) ([]byte, v1.Descriptor, error) {
	rt, err := r.readTransport(ctx)
	if err != nil {
		return nil, v1.Descriptor{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url("manifests", ref.Identifier()), nil)
	if err != nil {
		return nil, v1.Descriptor{}, err
	}
	req.Header.Set("Accept", strings.Join(accept, ", "))
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return nil, v1.Descriptor{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, v1.Descriptor{}, fmt.Errorf("%w: manifest %s: %w", ErrNotFound, ref, transport.CheckError(resp, http.StatusOK))
	}
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		return nil, v1.Descriptor{}, err
	}
	const limit = artifact.MaxManifestSize
	if resp.ContentLength > limit {
		return nil, v1.Descriptor{}, fmt.Errorf("%w: manifest %s is %d bytes, limit %d", ErrTooLarge, ref, resp.ContentLength, limit)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, v1.Descriptor{}, fmt.Errorf("read manifest %s: %w", ref, err)
	}
	if len(raw) > limit {
		return nil, v1.Descriptor{}, fmt.Errorf("%w: manifest %s exceeds %d bytes", ErrTooLarge, ref, limit)
	}
	if resp.ContentLength >= 0 && int64(len(raw)) != resp.ContentLength {
		return nil, v1.Descriptor{}, retryable{fmt.Errorf("manifest %s: got %d of %d bytes: %w", ref, len(raw), resp.ContentLength, io.ErrUnexpectedEOF)}
	}
	h, size, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return nil, v1.Descriptor{}, err
	}
	if dig, ok := ref.(name.Digest); ok && dig.DigestStr() != h.String() {
		return nil, v1.Descriptor{}, fmt.Errorf("%w: manifest %s hashes to %s", ErrDigestMismatch, ref, h)
	}
	if hdr := resp.Header.Get("Docker-Content-Digest"); hdr != "" {
		if want, err := v1.NewHash(hdr); err == nil && want.Algorithm == h.Algorithm && want != h {
			return nil, v1.Descriptor{}, fmt.Errorf("%w: manifest %s hashes to %s, registry says %s", ErrDigestMismatch, ref, h, want)
		}
	}
	mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil {
		mt = ""
	}
	return raw, v1.Descriptor{MediaType: types.MediaType(mt), Size: size, Digest: h}, nil
}

// Resolve returns the digest a tag (or digest) names in this repository.
func (r *Repository) Resolve(ctx context.Context, tagOrDigest string) (name.Digest, error) {
	_, desc, err := r.Manifest(ctx, tagOrDigest)
	if err != nil {
		return name.Digest{}, err
	}
	return r.name.Digest(desc.Digest.String()), nil
}

// Resolve returns the digest reference ("repo@sha256:...") that ref names.
func Resolve(ctx context.Context, ref string, opts ...Option) (name.Digest, error) {
	repo, r, err := ParseReference(ref, opts...)
	if err != nil {
		return name.Digest{}, err
	}
	return repo.Resolve(ctx, r.Identifier())
}
