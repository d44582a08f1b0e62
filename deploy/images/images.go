// Package images builds edgefleet's OCI images without a container daemon,
// the way ko does: layers are written as reproducible tars by Go code and
// assembled with go-containerregistry into one image index for linux/amd64
// and linux/arm64.
//
// Each image has three layers, from the least to the most often changed:
//
//  1. a minimal glibc base unpacked from Debian .debs pinned by sha256 in
//     deploy/deps/base.lock (libc6, libgcc-s1, libstdc++6, ca-certificates;
//     documentation except copyright files, manuals, locales and gconv
//     modules left out), plus /etc/passwd and /etc/group with the non-root
//     user 65532, nsswitch.conf, the CA bundle, /tmp and the data folder;
//  2. onnxruntime's libonnxruntime.so.1 for the architecture (npm-pinned,
//     deploy/deps/npm.lock) at /usr/lib/edgefleet/;
//  3. the edgefleet binary, /usr/bin/edgefleet, built with cgo (arm64
//     through Debian's gcc-aarch64-linux-gnu).
//
// Two images: "edgefleet" (the full binary; runs the hub by default) and
// "edgefleet-agent" (the agent-only build, tag agentonly: no hub,
// quantizer or bench code; for sidecars and small boxes). Both run as
// 65532:65532, carry the org.opencontainers.image.{source,revision,version,
// licenses,created,title} annotations on index and manifests, and have a
// health check command (`edgefleet health`).
//
// Builds are reproducible: entries sorted, one timestamp (the commit's, or
// SOURCE_DATE_EPOCH) for files, history and config, owners normalised, and
// gzip without names or times; two builds of one commit give one digest.
// Push writes an index to any registry through package ota's connection
// handling (credentials, plain HTTP for loopback).
package images

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/edgefleet/edgefleet/deploy/internal/buildenv"
	"github.com/edgefleet/edgefleet/ota"
)

// Image names (repositories under a registry prefix, e.g.
// ghcr.io/edgefleet/edgefleet-agent:0.2.0); see README.md in this folder.
const (
	FullName  = "edgefleet"
	AgentName = "edgefleet-agent"
)

// Licenses is the images' org.opencontainers.image.licenses: edgefleet's
// own, onnxruntime's, glibc's, GCC's runtime libraries' and the CA
// certificates'.
const Licenses = "Apache-2.0 AND MIT AND LGPL-2.1-or-later AND GPL-3.0-or-later WITH GCC-exception-3.1 AND MPL-2.0"

// Ports the images expose.
var (
	AgentPorts = []string{"8080/tcp", "8081/tcp"}
	HubPorts   = []string{"7443/tcp", "7443/udp", "8883/tcp", "5000/tcp", "7444/tcp", "7080/tcp"}
)

// Platform is one architecture's inputs.
type Platform struct {
	Arch   buildenv.Arch
	Binary string   // the edgefleet binary built for Arch
	ORTLib string   // onnxruntime's library for Arch
	Debs   []string // the base .debs for Arch
}

// Spec describes one image.
type Spec struct {
	Flavor buildenv.Flavor // buildenv.Full or buildenv.AgentOnly
	Info   buildenv.Info
}

// Name returns the image's name: FullName or AgentName.
func (s Spec) Name() string {
	if s.Flavor == buildenv.AgentOnly {
		return AgentName
	}
	return FullName
}

func (s Spec) annotations() map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":    s.Name(),
		"org.opencontainers.image.source":   s.Info.Source,
		"org.opencontainers.image.revision": s.Info.Revision,
		"org.opencontainers.image.version":  s.Info.Version,
		"org.opencontainers.image.licenses": Licenses,
		"org.opencontainers.image.created":  s.Info.Created.Format(time.RFC3339),
		"org.opencontainers.image.description": map[buildenv.Flavor]string{
			buildenv.Full:      "edgefleet: hub, agent, quantizer (runs the hub by default)",
			buildenv.AgentOnly: "edgefleet agent: serves ONNX models over the Open Inference Protocol",
		}[s.Flavor],
	}
}

// config returns the container configuration: entrypoint, default command,
// user, environment, ports, volume and health check.
func (s Spec) config() v1.Config {
	cmd := []string{"agent", "--data", DataDir, "--http", "0.0.0.0:8080", "--grpc", "0.0.0.0:8081"}
	ports, health := AgentPorts, "http://127.0.0.1:8080/v2/health/ready"
	if s.Flavor == buildenv.Full {
		cmd = []string{"hub", "--data", DataDir, "--api", "0.0.0.0:7443", "--mqtt", "0.0.0.0:8883",
			"--registry", "0.0.0.0:5000", "--metrics", "0.0.0.0:7444", "--dashboard", "0.0.0.0:7080"}
		ports, health = HubPorts, "http://127.0.0.1:7444/metrics"
	}
	exposed := map[string]struct{}{}
	for _, p := range ports {
		exposed[p] = struct{}{}
	}
	return v1.Config{
		User:         fmt.Sprintf("%d:%d", UID, GID),
		Entrypoint:   []string{BinPath},
		Cmd:          cmd,
		WorkingDir:   DataDir,
		Env:          []string{"PATH=/usr/bin:/bin", "EDGEFLEET_ORT_LIB=" + ORTPath, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"},
		ExposedPorts: exposed,
		Volumes:      map[string]struct{}{DataDir: {}},
		Labels:       s.annotations(),
		StopSignal:   "SIGTERM",
		Healthcheck: &v1.HealthConfig{
			Test:        []string{"CMD", BinPath, "health", "--url", health},
			Interval:    30 * time.Second,
			Timeout:     5 * time.Second,
			StartPeriod: 2 * time.Minute,
			Retries:     3,
		},
	}
}

// layer makes a gzip'd OCI layer of a tar held in memory.
func layer(tb []byte) (v1.Layer, error) {
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tb)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
}

// BaseLayer builds the glibc base layer from the .debs.
func BaseLayer(ctx context.Context, debs []string, mtime time.Time) (v1.Layer, error) {
	entries, err := baseEntries(ctx, debs)
	if err != nil {
		return nil, err
	}
	tb, err := layerTar(entries, mtime)
	if err != nil {
		return nil, err
	}
	return layer(tb)
}

// fileLayer is a layer with one file (and its folders).
func fileLayer(src, dst string, mode int64, mtime time.Time) (v1.Layer, error) {
	b, err := os.ReadFile(src)
	if err != nil {
		return nil, err
	}
	e := entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(dst, "/"), Mode: mode}, data: b}
	tb, err := layerTar([]entry{e}, mtime)
	if err != nil {
		return nil, err
	}
	return layer(tb)
}

// BuildImage builds the image of spec for one platform.
func BuildImage(ctx context.Context, spec Spec, p Platform) (v1.Image, error) {
	mtime := spec.Info.Created
	base, err := BaseLayer(ctx, p.Debs, mtime)
	if err != nil {
		return nil, fmt.Errorf("%s base: %w", p.Arch.GOARCH, err)
	}
	ort, err := fileLayer(p.ORTLib, ORTPath, 0o644, mtime)
	if err != nil {
		return nil, err
	}
	bin, err := fileLayer(p.Binary, BinPath, 0o755, mtime)
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	hist := func(by string) v1.History {
		return v1.History{Created: v1.Time{Time: mtime}, CreatedBy: by, Comment: "deploy/images"}
	}
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: base, History: hist("glibc base from Debian .debs (deploy/deps/base.lock)")},
		mutate.Addendum{Layer: ort, History: hist("onnxruntime " + ORTPath)},
		mutate.Addendum{Layer: bin, History: hist("edgefleet " + spec.Info.Version + " (" + string(spec.Flavor) + ")")},
	)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = p.Arch.GOARCH, "linux"
	if p.Arch.GOARCH == "arm64" {
		cf.Variant = "v8"
	}
	cf.Created = v1.Time{Time: mtime}
	cf.Author = spec.Info.Source
	cf.Config = spec.config()
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, err
	}
	return mutate.Annotations(img, spec.annotations()).(v1.Image), nil
}

// Build builds the image index of spec with one image per platform.
func Build(ctx context.Context, spec Spec, plats []Platform) (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range plats {
		img, err := BuildImage(ctx, spec, p)
		if err != nil {
			return nil, err
		}
		plat := &v1.Platform{OS: "linux", Architecture: p.Arch.GOARCH}
		if p.Arch.GOARCH == "arm64" {
			plat.Variant = "v8"
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: plat}})
	}
	return mutate.Annotations(idx, spec.annotations()).(v1.ImageIndex), nil
}

// Push writes idx (its images and blobs) to ref, e.g.
// registry.example:5000/edgefleet-agent:0.2.0, through package ota's
// registry connection (its options: credentials, TLS, plain HTTP).
func Push(ctx context.Context, ref string, idx v1.ImageIndex, opts ...ota.Option) (name.Digest, error) {
	repo, r, err := ota.ParseReference(ref, opts...)
	if err != nil {
		return name.Digest{}, err
	}
	if err := remote.WriteIndex(r, idx, repo.RemoteOptions(ctx)...); err != nil {
		return name.Digest{}, fmt.Errorf("pushing %s: %w", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		return name.Digest{}, err
	}
	return repo.Name().Digest(d.String()), nil
}

// Size is an image's size on the wire and unpacked.
type Size struct {
	Compressed int64 // manifest, config and compressed layers
	Unpacked   int64 // the layers' uncompressed tars
}

// SizeOf measures img.
func SizeOf(img v1.Image) (Size, error) {
	var s Size
	m, err := img.RawManifest()
	if err != nil {
		return s, err
	}
	c, err := img.RawConfigFile()
	if err != nil {
		return s, err
	}
	s.Compressed = int64(len(m) + len(c))
	ls, err := img.Layers()
	if err != nil {
		return s, err
	}
	for _, l := range ls {
		n, err := l.Size()
		if err != nil {
			return s, err
		}
		s.Compressed += n
		rc, err := l.Uncompressed()
		if err != nil {
			return s, err
		}
		u, err := io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return s, err
		}
		s.Unpacked += u
	}
	return s, nil
}
