package artifact

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"strings"
	"unicode"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// NewManifest assembles an artifact manifest from the config descriptor and
// the layer descriptors (the model layer and extra files, each titled).
// annotations may be nil. The result is checked with CheckManifest.
func NewManifest(config v1.Descriptor, layers []v1.Descriptor, annotations map[string]string) (*v1.Manifest, error) {
	m := &v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.MediaType(ManifestMediaType),
		ArtifactType:  ArtifactType,
		Config:        config,
		Layers:        layers,
		Annotations:   annotations,
	}
	if err := CheckManifest(m); err != nil {
		return nil, err
	}
	return m, nil
}

// ParseManifest decodes raw manifest bytes and checks them with CheckManifest.
func ParseManifest(raw []byte) (*v1.Manifest, error) {
	if len(raw) > MaxManifestSize {
		return nil, fmt.Errorf("%w: manifest is %d bytes, limit %d", ErrInvalid, len(raw), MaxManifestSize)
	}
	var m v1.Manifest
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: manifest: %v", ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: manifest: trailing data after the JSON object", ErrInvalid)
	}
	if err := CheckManifest(&m); err != nil {
		return nil, err
	}
	return &m, nil
}

// CheckManifest reports every way m departs from the artifact format: schema
// version, media types, artifactType, sha256 digests, size limits, exactly
// one model layer, and a unique, safe file name on every layer.
func CheckManifest(m *v1.Manifest) error {
	var p problems
	if m.SchemaVersion != 2 {
		p.addf("schemaVersion is %d, want 2", m.SchemaVersion)
	}
	if m.MediaType != ManifestMediaType {
		p.addf("mediaType is %q, want %q", m.MediaType, ManifestMediaType)
	}
	if m.ArtifactType != ArtifactType {
		p.addf("artifactType is %q, want %q", m.ArtifactType, ArtifactType)
	}
	if m.Config.MediaType != ConfigMediaType {
		p.addf("config mediaType is %q, want %q", m.Config.MediaType, ConfigMediaType)
	}
	checkDigest(&p, "config", m.Config)
	if m.Config.Size <= 0 || m.Config.Size > MaxConfigSize {
		p.addf("config size %d outside 1..%d", m.Config.Size, MaxConfigSize)
	}
	if len(m.Layers) == 0 || len(m.Layers) > MaxLayers {
		p.addf("%d layers, want 1..%d", len(m.Layers), MaxLayers)
	}
	models := 0
	titles := map[string]bool{}
	for i, l := range m.Layers {
		what := fmt.Sprintf("layer %d", i)
		checkDigest(&p, what, l)
		if l.Size < 0 {
			p.addf("%s: negative size %d", what, l.Size)
		}
		if l.MediaType == ModelMediaType {
			models++
		} else if err := CheckMediaType(string(l.MediaType)); err != nil {
			p.addf("%s: %v", what, err)
		}
		title := l.Annotations[AnnotationTitle]
		if err := CheckTitle(title); err != nil {
			p.addf("%s: %v", what, err)
		} else if titles[title] {
			p.addf("%s: title %q used twice", what, title)
		}
		titles[title] = true
	}
	if models != 1 {
		p.addf("%d layers of media type %s, want exactly 1", models, ModelMediaType)
	}
	return p.err("manifest")
}

func checkDigest(p *problems, what string, d v1.Descriptor) {
	if d.Digest.Algorithm != "sha256" || len(d.Digest.Hex) != 64 {
		p.addf("%s: digest %q is not sha256", what, d.Digest)
	}
}

// CheckMediaType checks that s is a syntactically valid media type
// ("type/subtype", optional parameters).
func CheckMediaType(s string) error {
	mt, _, err := mime.ParseMediaType(s)
	if err != nil || !strings.Contains(mt, "/") {
		return fmt.Errorf("media type %q is not type/subtype", s)
	}
	return nil
}

// CheckTitle checks that a layer title is a plain file name that can be
// written inside a folder without escaping it: non-empty, at most
// MaxTitleLength bytes, no path separators, not "." or "..", no control
// characters.
func CheckTitle(t string) error {
	switch {
	case t == "":
		return fmt.Errorf("missing %s annotation", AnnotationTitle)
	case len(t) > MaxTitleLength:
		return fmt.Errorf("title of %d bytes exceeds %d", len(t), MaxTitleLength)
	case t == "." || t == "..":
		return fmt.Errorf("title %q is not a file name", t)
	case strings.ContainsAny(t, `/\`):
		return fmt.Errorf("title %q contains a path separator", t)
	case strings.IndexFunc(t, unicode.IsControl) >= 0:
		return fmt.Errorf("title %q contains a control character", t)
	}
	return nil
}

// ModelLayer returns the model layer's descriptor of a checked manifest.
func ModelLayer(m *v1.Manifest) (v1.Descriptor, bool) {
	for _, l := range m.Layers {
		if l.MediaType == ModelMediaType {
			return l, true
		}
	}
	return v1.Descriptor{}, false
}

// Title returns a layer's file name.
func Title(d v1.Descriptor) string { return d.Annotations[AnnotationTitle] }
