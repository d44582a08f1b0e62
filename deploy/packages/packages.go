// Package packages builds edgefleet's .deb packages (amd64, arm64) with
// goreleaser's nfpm as a library: the edgefleet binary (/usr/bin),
// onnxruntime's library (/usr/lib/edgefleet/), the systemd units of
// deploy/systemd (/lib/systemd/system/, not enabled on install), the default
// configuration (/etc/edgefleet/agent.yaml and hub.yaml, conffiles), the GPU
// drop-in example, copyright and changelog. The units keep their state in
// /var/lib/edgefleet and /var/lib/edgefleet-hub (StateDirectory=, created by
// systemd for the DynamicUser= services). Maintainer scripts honour
// $DPKG_ROOT, so the package installs into a scratch root with
// `dpkg --root` as the tests do.
package packages

import (
	"bytes"
	"compress/gzip"
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"

	"github.com/edgefleet/edgefleet/deploy/images"
	"github.com/edgefleet/edgefleet/deploy/internal/buildenv"
	"github.com/edgefleet/edgefleet/deploy/systemd"
)

//go:embed scripts copyright
var assets embed.FS

// Name is the package's name.
const Name = "edgefleet"

// Maintainer is the Maintainer: field.
const Maintainer = "edgefleet maintainers <edgefleet@users.noreply.github.com>"

// UnitDir is where the units go (Debian bookworm: /lib, not /usr/lib).
const UnitDir = "/lib/systemd/system"

// Spec is one package to build.
type Spec struct {
	Arch   buildenv.Arch
	Binary string // edgefleet built for Arch
	ORTLib string // onnxruntime's library for Arch
	Info   buildenv.Info
}

// DebVersion turns a build version into a Debian version: "0.1.0-dev+abc"
// becomes "0.1.0~dev+abc" (sorts before 0.1.0).
func DebVersion(v string) string {
	return strings.Replace(v, "-", "~", 1)
}

// FileName is the package's file name, as Debian names it.
func (s Spec) FileName() string {
	return fmt.Sprintf("%s_%s_%s.deb", Name, DebVersion(s.Info.Version), s.Arch.Debian)
}

// Build writes the package into dir and returns its path.
func Build(s Spec, dir string) (string, error) {
	stage, err := os.MkdirTemp("", "edgefleet-deb-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(stage)
	put := func(src fs.FS, name, as string) (string, error) {
		b, err := fs.ReadFile(src, name)
		if err != nil {
			return "", err
		}
		p := filepath.Join(stage, as)
		return p, os.WriteFile(p, b, 0o644)
	}
	mtime := s.Info.Created
	info := func(mode os.FileMode) *files.ContentFileInfo {
		return &files.ContentFileInfo{Owner: "root", Group: "root", Mode: mode, MTime: mtime}
	}
	contents := files.Contents{
		{Source: s.Binary, Destination: images.BinPath, FileInfo: info(0o755)},
		{Source: s.ORTLib, Destination: images.ORTPath, FileInfo: info(0o644)},
	}
	for _, u := range systemd.Units {
		p, err := put(systemd.Files, u, u)
		if err != nil {
			return "", err
		}
		contents = append(contents, &files.Content{Source: p, Destination: UnitDir + "/" + u, FileInfo: info(0o644)})
	}
	for _, c := range []string{"agent.yaml", "hub.yaml"} {
		p, err := put(systemd.Files, c, c)
		if err != nil {
			return "", err
		}
		contents = append(contents, &files.Content{Source: p, Destination: "/etc/edgefleet/" + c, Type: files.TypeConfig, FileInfo: info(0o644)})
	}
	doc := "/usr/share/doc/" + Name + "/"
	p, err := put(systemd.Files, "gpu.conf.example", "gpu.conf.example")
	if err != nil {
		return "", err
	}
	contents = append(contents, &files.Content{Source: p, Destination: doc + "gpu.conf.example", FileInfo: info(0o644)})
	if p, err = put(assets, "copyright", "copyright"); err != nil {
		return "", err
	}
	contents = append(contents, &files.Content{Source: p, Destination: doc + "copyright", FileInfo: info(0o644)})
	// changelog.gz (a native package), reproducible (no name, no time in the gzip header).
	var cl bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&cl, gzip.BestCompression)
	fmt.Fprintf(zw, "%s (%s) unstable; urgency=medium\n\n  * Release %s (%s).\n\n -- %s  %s\n",
		Name, DebVersion(s.Info.Version), s.Info.Version, s.Info.Revision, Maintainer, mtime.Format("Mon, 02 Jan 2006 15:04:05 -0700"))
	zw.Close()
	clPath := filepath.Join(stage, "changelog.gz")
	if err := os.WriteFile(clPath, cl.Bytes(), 0o644); err != nil {
		return "", err
	}
	contents = append(contents, &files.Content{Source: clPath, Destination: doc + "changelog.gz", FileInfo: info(0o644)})
	scripts := map[string]string{}
	for _, n := range []string{"postinst", "prerm", "postrm"} {
		p, err := put(assets, "scripts/"+n, n)
		if err != nil {
			return "", err
		}
		scripts[n] = p
	}

	pkg := &nfpm.Info{
		Name:          Name,
		Arch:          s.Arch.Debian,
		Platform:      "linux",
		Version:       DebVersion(s.Info.Version),
		VersionSchema: "none",
		Section:       "net",
		Priority:      "optional",
		Maintainer:    Maintainer,
		Homepage:      s.Info.Source,
		License:       "Apache-2.0 AND MIT",
		MTime:         mtime,
		Description: "serve quantized ONNX models on edge boxes, roll them out over the air\n" +
			"edgefleet's agent serves ONNX models through onnxruntime over the Open\n" +
			"Inference Protocol (KServe v2, REST and gRPC) from a local model cache; its\n" +
			"hub rolls new model versions out to a fleet as signed OCI artifacts in\n" +
			"gated canary waves. Hardened systemd units for both are included.",
		Overridables: nfpm.Overridables{
			Depends:  []string{"libc6 (>= 2.34)", "libstdc++6 (>= 7)", "libgcc-s1"},
			Contents: contents,
			Scripts:  nfpm.Scripts{PostInstall: scripts["postinst"], PreRemove: scripts["prerm"], PostRemove: scripts["postrm"]},
			Deb:      nfpm.Deb{Compression: "gzip"}, // xz in pure Go takes minutes; every dpkg reads gzip
		},
	}
	pkg = nfpm.WithDefaults(pkg)
	if err := nfpm.PrepareForPackager(pkg, "deb"); err != nil {
		return "", err
	}
	var buf bytes.Buffer
	if err := deb.Default.Package(pkg, &buf); err != nil {
		return "", fmt.Errorf("nfpm: %w", err)
	}
	out := filepath.Join(dir, s.FileName())
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		return "", err
	}
	return out, nil
}
