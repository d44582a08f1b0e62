package ota

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/edgefleet/edgefleet/ota/artifact"
)

// File is a file to push as a layer.
type File struct {
	// Title is the file name stored in the org.opencontainers.image.title
	// annotation (artifact.CheckTitle rules).
	Title string
	// MediaType is the layer media type; empty means artifact.ModelMediaType
	// for the model and artifact.FileMediaType for extra files.
	MediaType string
	// Size and Digest describe the content; BytesFile and OpenFile fill them.
	Size   int64
	Digest v1.Hash
	// Open returns the content; it may be called more than once (retries).
	Open func() (io.ReadCloser, error)
}

// BytesFile returns a File holding b.
func BytesFile(title string, b []byte) File {
	h, n, _ := v1.SHA256(bytes.NewReader(b)) // reading from memory cannot fail
	return File{Title: title, Size: n, Digest: h, Open: func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}}
}

// OpenFile returns a File for the file at path, titled with its base name.
// It hashes the file now; the file must not change until the push is done.
func OpenFile(path string) (File, error) {
	f, err := os.Open(path)
	if err != nil {
		return File{}, err
	}
	defer f.Close()
	h, n, err := v1.SHA256(f)
	if err != nil {
		return File{}, fmt.Errorf("hash %s: %w", path, err)
	}
	return File{Title: filepath.Base(path), Size: n, Digest: h, Open: func() (io.ReadCloser, error) {
		return os.Open(path)
	}}, nil
}

// Artifact is a model artifact to push.
type Artifact struct {
	// Config is validated and stored as the config blob.
	Config artifact.Config
	// Model is the ONNX file; an empty Title means "model.onnx".
	Model File
	// Files are extra files (labels, vocabularies).
	Files []File
	// Annotations are manifest annotations; optional.
	Annotations map[string]string
}

// fileLayer adapts a File to go-containerregistry's v1.Layer and reports
// upload progress.
type fileLayer struct {
	f    File
	mt   types.MediaType
	sent atomic.Int64
	prog func(done int64)
}

func (l *fileLayer) Digest() (v1.Hash, error)            { return l.f.Digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)            { return l.f.Digest, nil }
func (l *fileLayer) Size() (int64, error)                { return l.f.Size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) { return l.mt, nil }
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) {
	return l.Compressed()
}

func (l *fileLayer) Compressed() (io.ReadCloser, error) {
	rc, err := l.f.Open()
	if err != nil {
		return nil, err
	}
	l.sent.Store(0)
	return &countingReader{rc: rc, l: l}, nil
}

type countingReader struct {
	rc io.ReadCloser
	l  *fileLayer
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.rc.Read(p)
	if n > 0 && c.l.prog != nil {
		c.l.prog(c.l.sent.Add(int64(n)))
	}
	return n, err
}

func (c *countingReader) Close() error { return c.rc.Close() }

var _ v1.Layer = (*fileLayer)(nil)

// rawManifest is a manifest to PUT as is.
type rawManifest struct {
	raw []byte
	mt  types.MediaType
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.raw, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.mt, nil }

// UploadBlob uploads a blob unless the registry already has it, reporting
// progress under title.
func (r *Repository) UploadBlob(ctx context.Context, f File) error {
	return r.upload(ctx, &fileLayer{f: f, mt: types.MediaType(f.MediaType)}, f.Title)
}

func (r *Repository) upload(ctx context.Context, l *fileLayer, title string) error {
	ev := func(k EventKind, done int64, err error) {
		r.o.progress.Update(Event{Kind: k, Push: true, Title: title, Digest: l.f.Digest, Done: done, Total: l.f.Size, Err: err})
	}
	ev(EventStart, 0, nil)
	l.prog = func(done int64) { ev(EventAdvance, done, nil) }
	if err := r.pusher.Upload(ctx, r.name, l); err != nil {
		err = fmt.Errorf("upload %s (%s): %w", title, l.f.Digest, err)
		ev(EventFail, l.sent.Load(), err)
		return err
	}
	if l.sent.Load() == 0 && l.f.Size > 0 {
		ev(EventSkip, l.f.Size, nil) // the registry had it
	} else {
		ev(EventDone, l.f.Size, nil)
	}
	return nil
}

// PutManifest stores a manifest under a tag or its digest and returns its
// descriptor. The blobs it references must already be in the repository.
func (r *Repository) PutManifest(ctx context.Context, tagOrDigest string, raw []byte, mediaType string) (v1.Descriptor, error) {
	ref, err := r.Reference(tagOrDigest)
	if err != nil {
		return v1.Descriptor{}, err
	}
	h, n, _ := v1.SHA256(bytes.NewReader(raw))
	if d, ok := ref.(name.Digest); ok && d.DigestStr() != h.String() {
		return v1.Descriptor{}, fmt.Errorf("%w: manifest hashes to %s, reference says %s", ErrDigestMismatch, h, d.DigestStr())
	}
	if err := r.pusher.Put(ctx, ref, rawManifest{raw: raw, mt: types.MediaType(mediaType)}); err != nil {
		return v1.Descriptor{}, fmt.Errorf("put manifest %s: %w", ref, err)
	}
	return v1.Descriptor{MediaType: types.MediaType(mediaType), Size: n, Digest: h}, nil
}

// Push uploads art as tag (or digest) tagOrDigest and returns the manifest's
// digest reference. Blobs the registry already has are not uploaded again.
// An empty tagOrDigest stores the manifest by its digest only (untagged).
func (r *Repository) Push(ctx context.Context, tagOrDigest string, art Artifact) (name.Digest, error) {
	desc, err := r.pushArtifact(ctx, tagOrDigest, art)
	if err != nil {
		return name.Digest{}, err
	}
	return r.name.Digest(desc.Digest.String()), nil
}

// pushArtifact is Push returning the manifest's descriptor.
func (r *Repository) pushArtifact(ctx context.Context, tagOrDigest string, art Artifact) (v1.Descriptor, error) {
	cfg, err := art.Config.Marshal()
	if err != nil {
		return v1.Descriptor{}, err
	}
	model := art.Model
	if model.Title == "" {
		model.Title = "model.onnx"
	}
	if model.MediaType == "" {
		model.MediaType = artifact.ModelMediaType
	}
	if model.MediaType != artifact.ModelMediaType {
		return v1.Descriptor{}, fmt.Errorf("%w: model media type %q, want %q", artifact.ErrInvalid, model.MediaType, artifact.ModelMediaType)
	}
	files := append([]File{model}, art.Files...)
	layers := make([]v1.Descriptor, len(files))
	for i := range files {
		f := &files[i]
		if f.MediaType == "" {
			f.MediaType = artifact.FileMediaType
		}
		if f.Open == nil {
			return v1.Descriptor{}, fmt.Errorf("%w: file %q has no content", artifact.ErrInvalid, f.Title)
		}
		layers[i] = v1.Descriptor{
			MediaType:   types.MediaType(f.MediaType),
			Size:        f.Size,
			Digest:      f.Digest,
			Annotations: map[string]string{artifact.AnnotationTitle: f.Title},
		}
	}
	cfgFile := BytesFile("", cfg)
	cfgFile.MediaType = artifact.ConfigMediaType
	m, err := artifact.NewManifest(v1.Descriptor{MediaType: artifact.ConfigMediaType, Size: cfgFile.Size, Digest: cfgFile.Digest}, layers, art.Annotations)
	if err != nil {
		return v1.Descriptor{}, err
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return v1.Descriptor{}, err
	}
	if err := r.upload(ctx, &fileLayer{f: cfgFile, mt: artifact.ConfigMediaType}, ""); err != nil {
		return v1.Descriptor{}, err
	}
	for _, f := range files {
		if err := r.upload(ctx, &fileLayer{f: f, mt: types.MediaType(f.MediaType)}, f.Title); err != nil {
			return v1.Descriptor{}, err
		}
	}
	if tagOrDigest == "" {
		h, _, _ := v1.SHA256(bytes.NewReader(raw))
		tagOrDigest = h.String()
	}
	desc, err := r.PutManifest(ctx, tagOrDigest, raw, artifact.ManifestMediaType)
	if err != nil {
		return v1.Descriptor{}, err
	}
	r.o.log.Info("pushed model artifact", "repository", r.name.String(), "ref", tagOrDigest, "digest", desc.Digest,
		"model", art.Config.Name, "version", art.Config.Version)
	return desc, nil
}

// Push uploads art to ref ("host/repo:tag") and returns the digest reference
// of the manifest.
func Push(ctx context.Context, ref string, art Artifact, opts ...Option) (name.Digest, error) {
	repo, r, err := ParseReference(ref, opts...)
	if err != nil {
		return name.Digest{}, err
	}
	return repo.Push(ctx, r.Identifier(), art)
}
