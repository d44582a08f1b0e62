package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/models"
)

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoad(t *testing.T) {
	c, err := Load(write(t, `
data: /var/lib/edgefleet
http: 127.0.0.1:9000
max_body_bytes: 8MiB
cache_budget: 2GB
drain_timeout: 3s
defaults: {instances: 3, providers: [cuda, cpu]}
models:
  digits-cnn:
    instances: 1
    default_version: "4"
    version_policy: {latest: 2}
    labels: {stable: "4"}
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Data != "/var/lib/edgefleet" || c.HTTP != "127.0.0.1:9000" || c.MaxBodyBytes != 8<<20 ||
		c.CacheBudget != 2_000_000_000 || c.DrainTimeout != 3*time.Second {
		t.Errorf("config = %+v", c)
	}
	s := c.ModelSettings("digits-cnn")
	if s.Instances != 1 || s.Providers[0] != "cuda" || s.DefaultVersion != "4" || s.VersionPolicy.Latest != 2 || s.Labels["stable"] != "4" {
		t.Errorf("digits-cnn settings = %+v", s)
	}
	if o := c.ModelSettings("other"); o.Instances != 3 || o.DefaultVersion != "" {
		t.Errorf("other settings = %+v", o)
	}
	d := Config{Data: "x"}.WithDefaults()
	if d.HTTP != DefaultHTTP || d.GRPC != DefaultGRPC || d.MaxBodyBytes != DefaultMaxBodyBytes || d.DrainTimeout != DefaultDrainTimeout {
		t.Errorf("defaults = %+v", d)
	}
	if empty, err := Load(write(t, "")); err != nil || empty.Data != "" {
		t.Errorf("empty file: %+v %v", empty, err)
	}
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"unknown key", "data: x\nhttp_addr: y\n", "http_addr"},
		{"bad size", "max_body_bytes: lots\n", "line 1"},
		{"bad yaml", "data: [\n", "config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(write(t, tc.body))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want mention of %q", err, tc.want)
			}
		})
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("missing file accepted")
	}
}

func TestValidateListsEveryProblem(t *testing.T) {
	c := Config{Defaults: models.Settings{Providers: []string{"npu"}},
		Models: map[string]models.Settings{"m": {VersionPolicy: models.VersionPolicy{Latest: 1, All: true}}}}
	err := c.Validate()
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{"data:", "defaults:", "models.m:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestByteSizeFlag(t *testing.T) {
	var b ByteSize
	if err := b.Set("64MiB"); err != nil || b != 64<<20 || b.String() != "64 MiB" {
		t.Errorf("Set(64MiB) = %v, %v (%s)", b, err, b)
	}
	if err := b.Set("-"); err == nil {
		t.Error("bad size accepted")
	}
}
