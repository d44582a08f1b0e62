package packages_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/deploy/internal/buildenv"
	"github.com/edgefleet/edgefleet/deploy/packages"
)

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s is needed (Debian): %v", name, err)
	}
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestDebs builds the amd64 and arm64 packages from freshly built binaries,
// checks their control data and contents with dpkg-deb, runs lintian on
// the amd64 one (no errors allowed), installs the amd64 one into a scratch root with
// dpkg --root, runs the installed binary against the installed onnxruntime,
// and purges it again.
func TestDebs(t *testing.T) {
	ctx := context.Background()
	root, err := buildenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	env, err := buildenv.Prepare(ctx, root, buildenv.Arches)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	debs := map[string]string{}
	for _, a := range buildenv.Arches {
		bin, err := env.Binary(ctx, a, buildenv.Full, filepath.Join(dir, "bin"))
		if err != nil {
			t.Fatal(err)
		}
		if debs[a.GOARCH], err = packages.Build(packages.Spec{Arch: a, Binary: bin, ORTLib: env.ORTLibs[a.GOARCH], Info: env.Info}, dir); err != nil {
			t.Fatal(err)
		}
	}

	for arch, deb := range debs {
		info := run(t, "dpkg-deb", "--info", deb)
		for _, want := range []string{"Package: edgefleet", "Architecture: " + arch, "Depends: libc6 (>= 2.34)",
			"Version: " + packages.DebVersion(env.Info.Version), "Maintainer: " + packages.Maintainer, "postinst", "prerm", "postrm", "conffiles"} {
			if !strings.Contains(info, want) {
				t.Errorf("%s: dpkg-deb --info lacks %q:\n%s", arch, want, info)
			}
		}
		contents := run(t, "dpkg-deb", "--contents", deb)
		for _, want := range []string{
			`-rwxr-xr-x root/root .* \./usr/bin/edgefleet\n`,
			`-rw-r--r-- root/root .* \./usr/lib/edgefleet/libonnxruntime\.so\.1\n`,
			`\./lib/systemd/system/edgefleet-agent\.service\n`, `\./lib/systemd/system/edgefleet-hub\.service\n`,
			`\./etc/edgefleet/agent\.yaml\n`, `\./etc/edgefleet/hub\.yaml\n`,
			`\./usr/share/doc/edgefleet/copyright\n`, `\./usr/share/doc/edgefleet/gpu\.conf\.example\n`,
		} {
			if !regexp.MustCompile(want).MatchString(contents) {
				t.Errorf("%s: dpkg-deb --contents lacks %s:\n%s", arch, want, contents)
			}
		}
		conffiles := run(t, "dpkg-deb", "--info", deb, "conffiles")
		if conffiles != "/etc/edgefleet/agent.yaml\n/etc/edgefleet/hub.yaml\n" {
			t.Errorf("%s: conffiles %q", arch, conffiles)
		}
	}

	// lintian: errors fail, warnings are logged. Only the amd64 package:
	// lintian takes minutes on a loaded 2-core machine, and the arm64 one
	// differs only in its two ELF files (checked with dpkg-deb above).
	if _, err := exec.LookPath("lintian"); err != nil {
		t.Fatalf("lintian (Debian package lintian) is needed: %v", err)
	}
	out, err := exec.Command("lintian", "--tag-display-limit", "0", "--fail-on", "error", debs["amd64"]).CombinedOutput()
	t.Logf("lintian:\n%s", out)
	if err != nil || regexp.MustCompile(`(?m)^E: `).Match(out) {
		t.Errorf("lintian reports errors (%v)", err)
	}

	// Install into a scratch root; the maintainer scripts see $DPKG_ROOT
	// and leave the host's systemd alone.
	sr := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates"} {
		os.MkdirAll(filepath.Join(sr, d), 0o755)
	}
	os.WriteFile(filepath.Join(sr, "var/lib/dpkg/status"), nil, 0o644)
	dpkg := func(args ...string) string {
		return run(t, "dpkg", append([]string{"--root=" + sr, "--force-depends", "--force-script-chrootless", "--log=/dev/null"}, args...)...)
	}
	dpkg("--install", debs["amd64"])
	if st := dpkg("--status", "edgefleet"); !strings.Contains(st, "Status: install ok installed") {
		t.Fatalf("not installed:\n%s", st)
	}
	bin := filepath.Join(sr, "usr/bin/edgefleet")
	if v := run(t, bin, "--version"); !strings.Contains(v, "edgefleet version "+env.Info.Version+" (full)") {
		t.Errorf("installed binary --version: %q", v)
	}
	run(t, bin, "agent", "--config", filepath.Join(sr, "etc/edgefleet/agent.yaml"), "--check-config")
	imp := run(t, bin, "model", "import", "--data", t.TempDir(), "--name", "digits-cnn",
		"--ort-lib", filepath.Join(sr, "usr/lib/edgefleet/libonnxruntime.so.1"), filepath.Join(root, "agent/testdata/digits/cnn.onnx"))
	if !strings.Contains(imp, "imported digits-cnn version 1") {
		t.Errorf("installed binary, model import with the installed onnxruntime: %s", imp)
	}
	for _, f := range []string{"lib/systemd/system/edgefleet-agent.service", "etc/edgefleet/hub.yaml", "usr/lib/edgefleet/libonnxruntime.so.1"} {
		if _, err := os.Stat(filepath.Join(sr, f)); err != nil {
			t.Errorf("installed: %v", err)
		}
	}
	dpkg("--purge", "edgefleet")
	for _, f := range []string{"usr/bin/edgefleet", "etc/edgefleet/agent.yaml"} {
		if _, err := os.Stat(filepath.Join(sr, f)); !os.IsNotExist(err) {
			t.Errorf("%s left after purge (%v)", f, err)
		}
	}
}
