// Package buildenv is what deploy/images and deploy/packages share: the
// target architectures, `go build` of the edgefleet binary for each (arm64
// with cgo through Debian's gcc-aarch64-linux-gnu), the onnxruntime library
// for each (from the npm-pinned onnxruntime-node, see deploy/deps/npm.lock),
// the sha256-pinned Debian packages of deploy/deps/base.lock, and the
// version and revision stamped into the artifacts.
package buildenv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Arch is one target architecture.
type Arch struct {
	GOARCH string // amd64, arm64
	Debian string // Debian's name: amd64, arm64
	// CC is the C compiler for cgo; empty means the host's default (the
	// host architecture).
	CC string
	// ORTDir is the folder under the deps folder holding onnxruntime's
	// libonnxruntime.so.1 for this architecture (see deploy/deps/npm.lock).
	ORTDir string
	// Triplet is the multiarch triplet (lib folder names, qemu sysroots).
	Triplet string
	// Loader is the dynamic loader's path, as the binary names it.
	Loader string
}

// Arches are the supported targets, amd64 first.
var Arches = []Arch{
	{GOARCH: "amd64", Debian: "amd64", CC: "x86_64-linux-gnu-gcc", ORTDir: "onnxruntime", Triplet: "x86_64-linux-gnu", Loader: "/lib64/ld-linux-x86-64.so.2"},
	{GOARCH: "arm64", Debian: "arm64", CC: "aarch64-linux-gnu-gcc", ORTDir: "onnxruntime/linux-arm64", Triplet: "aarch64-linux-gnu", Loader: "/lib/ld-linux-aarch64.so.1"},
}

// ArchByName returns the Arch whose GOARCH is name.
func ArchByName(name string) (Arch, error) {
	for _, a := range Arches {
		if a.GOARCH == name {
			return a, nil
		}
	}
	return Arch{}, fmt.Errorf("unsupported architecture %q (want amd64 or arm64)", name)
}

// ORTLibName is the file name of onnxruntime's library, in the npm package
// and in the images and packages.
const ORTLibName = "libonnxruntime.so.1"

// ORTLib returns the path of onnxruntime's library for a in the deps folder.
func (a Arch) ORTLib(deps string) (string, error) {
	p := filepath.Join(deps, a.ORTDir, ORTLibName)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("onnxruntime for %s: %w (run make deps)", a.GOARCH, err)
	}
	return p, nil
}

// Root returns the repository root: the folder holding go.mod above the
// working directory.
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Deps returns the deps folder: $EDGEFLEET_DEPS, else <root>/.deps.
func Deps(root string) string {
	if d := os.Getenv("EDGEFLEET_DEPS"); d != "" {
		return d
	}
	return filepath.Join(root, ".deps")
}

// Info is what artifacts are stamped with.
type Info struct {
	Version  string    // semver-ish: from `git describe --tags`, else 0.1.0-dev
	Revision string    // the commit, "unknown" outside git
	Source   string    // repository URL
	Created  time.Time // SOURCE_DATE_EPOCH, else the commit's time, else the Unix epoch
	License  string    // SPDX expression
}

// Source is the project's repository.
const Source = "https://github.com/edgefleet/edgefleet"

// Describe returns the Info of the checkout at root. Two calls on the same
// commit return the same Info (reproducible artifacts): a dirty tree keeps
// the commit's identity.
func Describe(ctx context.Context, root string) Info {
	info := Info{Version: "0.1.0-dev", Revision: "unknown", Source: Source, Created: time.Unix(0, 0).UTC(), License: "Apache-2.0"}
	git := func(args ...string) string {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = root
		out, err := cmd.Output()
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(out))
	}
	if r := git("rev-parse", "HEAD"); r != "" {
		info.Revision = r
	}
	if v := git("describe", "--tags", "--match", "v[0-9]*", "--abbrev=12"); v != "" {
		info.Version = strings.TrimPrefix(v, "v")
	} else if r := info.Revision; len(r) >= 12 {
		info.Version = "0.1.0-dev+" + r[:12]
	}
	if ct := git("log", "-1", "--format=%ct"); ct != "" {
		if s, err := strconv.ParseInt(ct, 10, 64); err == nil {
			info.Created = time.Unix(s, 0).UTC()
		}
	}
	if e := os.Getenv("SOURCE_DATE_EPOCH"); e != "" {
		if s, err := strconv.ParseInt(e, 10, 64); err == nil {
			info.Created = time.Unix(s, 0).UTC()
		}
	}
	return info
}

// Flavor is a build of cmd/edgefleet.
type Flavor string

// The two builds: everything, or the agent alone (build tag agentonly, see
// cmd/edgefleet's package documentation).
const (
	Full      Flavor = "full"
	AgentOnly Flavor = "agentonly"
)

// GoBuild builds cmd/edgefleet for a into out: cgo on (onnxruntime_go
// needs it), -trimpath, no build id and stripped symbols, so the same
// commit gives the same bytes.
func GoBuild(ctx context.Context, root string, a Arch, f Flavor, info Info, out string) error {
	args := []string{"build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-s -w -buildid= -X github.com/edgefleet/edgefleet/agent.Version=" + info.Version,
		"-o", out}
	if f == AgentOnly {
		args = append(args, "-tags", "agentonly")
	}
	args = append(args, "./cmd/edgefleet")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1", "GOOS=linux", "GOARCH="+a.GOARCH, "GOFLAGS=-buildvcs=false")
	if a.GOARCH != runtime.GOARCH { // cross: Debian's cross compiler for cgo
		if _, err := exec.LookPath(a.CC); err != nil {
			return fmt.Errorf("building for %s needs the C cross compiler %s (Debian: apt-get install gcc-%s): %w",
				a.GOARCH, a.CC, strings.TrimSuffix(a.CC, "-gcc"), err)
		}
		cmd.Env = append(cmd.Env, "CC="+a.CC)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build (%s, %s): %w\n%s", a.GOARCH, f, err, stderr.String())
	}
	return nil
}

// Deb is one line of deploy/deps/base.lock.
type Deb struct {
	Package string
	Arch    string // a Debian architecture or "all"
	Version string
	SHA256  string
}

// File is the name apt-get download gives the .deb.
func (d Deb) File() string {
	return fmt.Sprintf("%s_%s_%s.deb", d.Package, strings.ReplaceAll(d.Version, ":", "%3a"), d.Arch)
}

// ReadLock parses a lock file of "package arch version sha256" lines.
func ReadLock(path string) ([]Deb, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var debs []Deb
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fs := strings.Fields(line)
		if len(fs) != 4 || len(fs[3]) != 64 {
			return nil, fmt.Errorf("%s:%d: want PACKAGE ARCH VERSION SHA256", path, n)
		}
		debs = append(debs, Deb{Package: fs[0], Arch: fs[1], Version: fs[2], SHA256: fs[3]})
	}
	return debs, sc.Err()
}

// ForArch returns the lock's packages for a Debian architecture (its own
// and the "all" ones).
func ForArch(debs []Deb, arch string) []Deb {
	var out []Deb
	for _, d := range debs {
		if d.Arch == arch || d.Arch == "all" {
			out = append(out, d)
		}
	}
	return out
}

// Fetch returns the path of d's .deb in cache, downloading it with
// `apt-get download` when it is missing, and checks its sha256 either way.
// When apt does not know the package (no package lists, or a foreign
// architecture not yet added) and this runs as root, it adds the
// architecture, runs apt-get update and tries once more.
func Fetch(ctx context.Context, d Deb, cache string) (string, error) {
	path := filepath.Join(cache, d.File())
	if err := checkSum(path, d.SHA256); err == nil {
		return path, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(cache, "dl-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	os.Chmod(tmp, 0o755) // apt's _apt user writes into it when run as root
	spec := d.Package + "=" + d.Version
	if d.Arch != "all" {
		spec = d.Package + ":" + d.Arch + "=" + d.Version
	}
	download := func() error {
		cmd := exec.CommandContext(ctx, "apt-get", "download", "-qq", spec)
		cmd.Dir = tmp
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get download %s: %w\n%s", spec, err, out)
		}
		return nil
	}
	if err := download(); err != nil {
		if os.Geteuid() != 0 {
			return "", err
		}
		if d.Arch != "all" {
			if out, err := exec.CommandContext(ctx, "dpkg", "--add-architecture", d.Arch).CombinedOutput(); err != nil {
				return "", fmt.Errorf("dpkg --add-architecture %s: %w\n%s", d.Arch, err, out)
			}
		}
		if out, err := exec.CommandContext(ctx, "apt-get", "update", "-qq").CombinedOutput(); err != nil {
			return "", fmt.Errorf("apt-get update: %w\n%s", err, out)
		}
		if err := download(); err != nil {
			return "", fmt.Errorf("%w (a Debian point release may have replaced %s: update deploy/deps/base.lock)", err, spec)
		}
	}
	got := filepath.Join(tmp, d.File())
	if err := checkSum(got, d.SHA256); err != nil {
		return "", err
	}
	return path, os.Rename(got, path)
}

func checkSum(path, want string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("%s: sha256 %s, want %s (deploy/deps/base.lock)", path, got, want)
	}
	return nil
}

// DataTar streams the data archive of a .deb (its files) as an
// uncompressed tar, through `dpkg-deb --fsys-tarfile`.
func DataTar(ctx context.Context, deb string) ([]byte, error) {
	out, err := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", deb).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("dpkg-deb --fsys-tarfile %s: %w\n%s", deb, err, ee.Stderr)
		}
		return nil, fmt.Errorf("dpkg-deb (Debian's dpkg) is needed: %w", err)
	}
	return out, nil
}

// Env is a prepared build: stamped Info, the onnxruntime library and the
// base .debs of each architecture.
type Env struct {
	Root    string
	Info    Info
	ORTLibs map[string]string   // GOARCH → libonnxruntime.so.1
	Debs    map[string][]string // GOARCH → base .debs (deploy/deps/base.lock)
}

// Prepare finds onnxruntime for each architecture in the deps folder and
// fetches (or finds in <deps>/base-debs) the pinned base .debs.
func Prepare(ctx context.Context, root string, arches []Arch) (*Env, error) {
	deps := Deps(root)
	lock, err := ReadLock(filepath.Join(root, "deploy", "deps", "base.lock"))
	if err != nil {
		return nil, err
	}
	env := &Env{Root: root, Info: Describe(ctx, root), ORTLibs: map[string]string{}, Debs: map[string][]string{}}
	for _, a := range arches {
		if env.ORTLibs[a.GOARCH], err = a.ORTLib(deps); err != nil {
			return nil, err
		}
		for _, d := range ForArch(lock, a.Debian) {
			p, err := Fetch(ctx, d, filepath.Join(deps, "base-debs"))
			if err != nil {
				return nil, err
			}
			env.Debs[a.GOARCH] = append(env.Debs[a.GOARCH], p)
		}
	}
	return env, nil
}

// Binary builds cmd/edgefleet for a and f into dir/<flavor>-<arch>/edgefleet.
func (e *Env) Binary(ctx context.Context, a Arch, f Flavor, dir string) (string, error) {
	out := filepath.Join(dir, string(f)+"-"+a.GOARCH, "edgefleet")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", err
	}
	out, err := filepath.Abs(out)
	if err != nil {
		return "", err
	}
	return out, GoBuild(ctx, e.Root, a, f, e.Info, out)
}
