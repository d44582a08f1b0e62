package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/agent/config"
)

// analyze runs systemd-analyze with the unit search path set to dir (so
// drop-ins in dir/<unit>.d/ count) and returns its combined output.
func analyze(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatalf("systemd-analyze (Debian package systemd) is needed: %v", err)
	}
	cmd := exec.Command("systemd-analyze", args...)
	cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+dir+":", "SYSTEMD_LOG_COLOR=0")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// unitDir writes the units into a fresh folder, with ExecStart's
// /usr/bin/edgefleet replaced by an executable that exists here (verify
// checks that it does; the .deb test checks that the package installs
// /usr/bin/edgefleet), plus the GPU drop-in when gpu is set, and extra
// files.
func unitDir(t *testing.T, gpu bool, extra map[string]string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, u := range Units {
		b, err := Files.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "ExecStart=/usr/bin/edgefleet ") {
			t.Fatalf("%s: ExecStart does not run /usr/bin/edgefleet", u)
		}
		b = []byte(strings.ReplaceAll(string(b), "/usr/bin/edgefleet", exe))
		if err := os.WriteFile(filepath.Join(dir, u), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if gpu {
		b, err := Files.ReadFile("gpu.conf.example")
		if err != nil {
			t.Fatal(err)
		}
		extra = map[string]string{"edgefleet-agent.service.d/gpu.conf": string(b)}
	}
	for name, body := range extra {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestVerify runs systemd-analyze verify on both units, with and without
// the GPU drop-in. verify exits 0 on unknown keys and bad values and only
// prints them, so any output fails the test; the negative case shows that
// such output is caught.
func TestVerify(t *testing.T) {
	for _, tc := range []struct {
		name  string
		gpu   bool
		extra map[string]string
		clean bool
	}{
		{name: "units", clean: true},
		{name: "units+gpu drop-in", gpu: true, clean: true},
		{name: "unknown key in a drop-in", extra: map[string]string{
			"edgefleet-agent.service.d/typo.conf": "[Service]\nProtectSystm=strict\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := unitDir(t, tc.gpu, tc.extra)
			args := []string{"verify", "--man=no"}
			for _, u := range Units {
				args = append(args, filepath.Join(dir, u))
			}
			out, err := analyze(t, dir, args...)
			out = strings.TrimSpace(out)
			if tc.clean && (err != nil || out != "") {
				t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
			}
			if !tc.clean && !strings.Contains(out, "Unknown key") {
				t.Fatalf("systemd-analyze verify did not report the unknown key (err %v):\n%s", err, out)
			}
		})
	}
}

var exposureRE = regexp.MustCompile(`Overall exposure level for (\S+): ([0-9.]+) (\S+)`)

// TestSecurityExposure holds both units (and the agent with its GPU
// drop-in) to an exposure of at most 2.0 in `systemd-analyze security
// --offline=yes`, whose --threshold= makes it exit non-zero above that.
func TestSecurityExposure(t *testing.T) {
	for _, gpu := range []bool{false, true} {
		dir := unitDir(t, gpu, nil)
		for _, u := range Units {
			out, err := analyze(t, dir, "security", "--offline=yes", "--threshold=20", "--no-pager", filepath.Join(dir, u))
			m := exposureRE.FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("%s: no exposure level in systemd-analyze security output (err %v):\n%s", u, err, out)
			}
			score, _ := strconv.ParseFloat(m[2], 64)
			t.Logf("%s (gpu drop-in %v): exposure %.1f %s", u, gpu, score, m[3])
			if err != nil || score > 2.0 {
				t.Errorf("%s (gpu drop-in %v): exposure %.1f %s, want ≤ 2.0 (err %v)\n%s", u, gpu, score, m[3], err, out)
			}
		}
	}
}

// TestUnitsNotify checks the settings the sd_notify integration and the
// hardening depend on, so an edit cannot drop them unnoticed.
func TestUnitsNotify(t *testing.T) {
	want := []string{"Type=notify", "NotifyAccess=main", "WatchdogSec=", "Restart=on-failure", "DynamicUser=yes",
		"StateDirectory=", "ProtectSystem=strict", "CapabilityBoundingSet=\n", "SystemCallFilter=@system-service",
		"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectKernelTunables=yes",
		"ProtectKernelModules=yes", "ProtectKernelLogs=yes"}
	for _, u := range Units {
		b, err := Files.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range want {
			if !strings.Contains(string(b), "\n"+w) {
				t.Errorf("%s lacks %q", u, w)
			}
		}
	}
}

// TestAgentConfig loads the default agent.yaml with the agent's strict
// loader (unknown keys fail) and validates it; hub.yaml is checked the same
// way in cmd/edgefleet (TestPackagedHubConfig).
func TestAgentConfig(t *testing.T) {
	b, err := Files.ReadFile("agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "agent.yaml")
	os.WriteFile(p, b, 0o644)
	c, err := config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Data != "/var/lib/edgefleet" || c.ORTLib != "/usr/lib/edgefleet/libonnxruntime.so.1" {
		t.Fatalf("agent.yaml: data %q, ort_lib %q", c.Data, c.ORTLib)
	}
	c.Data = t.TempDir()
	if err := c.WithDefaults().Validate(); err != nil {
		t.Fatalf("agent.yaml does not validate: %v", err)
	}
}
