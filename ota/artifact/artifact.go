// Package artifact defines the edgefleet model artifact: the media types, the
// config blob (Config) and the rules an OCI image manifest must follow to be
// an edgefleet model. It does no I/O; package ota moves artifacts to and from
// registries. The normative description is ota/SPEC.md.
//
// # Basics
//
// A model artifact is an OCI 1.1 image manifest whose artifactType is
// ArtifactType and whose config blob (ConfigMediaType) is a JSON Config. Its
// first layer is the ONNX model (ModelMediaType); further layers are extra
// files such as labels or vocabularies. Every layer carries the file name in
// the AnnotationTitle annotation, so ORAS-style tools pull the files by name.
//
// # Caveats
//
// ParseConfig and CheckManifest reject anything the spec does not allow;
// unknown JSON fields in the config are ignored so that older agents can read
// configs written by newer tools (MinAgentVersion guards real
// incompatibilities).
package artifact

import (
	"errors"
)

// Media types and annotation keys of the edgefleet model artifact.
const (
	// ArtifactType is the manifest's artifactType.
	ArtifactType = "application/vnd.edgefleet.model.v1"
	// ConfigMediaType is the media type of the config blob (a JSON Config).
	ConfigMediaType = "application/vnd.edgefleet.model.config.v1+json"
	// ModelMediaType is the media type of the ONNX model layer.
	ModelMediaType = "application/vnd.edgefleet.model.onnx.v1"
	// FileMediaType is the default media type of extra file layers.
	FileMediaType = "application/vnd.edgefleet.model.file.v1"
	// ManifestMediaType is the OCI image manifest media type the artifact uses.
	ManifestMediaType = "application/vnd.oci.image.manifest.v1+json"
	// AnnotationTitle names a layer's file (the OCI pre-defined annotation
	// ORAS uses for file names).
	AnnotationTitle = "org.opencontainers.image.title"
)

// Size limits. A manifest or config larger than these is refused before it
// is read in full.
const (
	// MaxManifestSize bounds the manifest JSON (4 MiB, the limit most
	// registries enforce).
	MaxManifestSize = 4 << 20
	// MaxConfigSize bounds the config blob.
	MaxConfigSize = 1 << 20
	// MaxLayers bounds the number of layers (the model plus extra files).
	MaxLayers = 64
	// MaxTitleLength bounds a layer title.
	MaxTitleLength = 255
)

// ErrInvalid is wrapped by every error about a config or manifest that does
// not follow the spec. Match it with errors.Is.
var ErrInvalid = errors.New("invalid model artifact")
