package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestUpdateConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "agent.yaml")
	yml := `data: /tmp/x
update:
  trust_keys: [/etc/edgefleet/cosign.pub]
  require_golden: true
  watch: {window: 10m, max_error_rate: 0.05, max_p99_ratio: -1}
  models:
    digits:
      window: 1h
      max_nonfinite_rate: 0.2
      allow_fallback: true
`
	if err := os.WriteFile(p, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WithDefaults().Validate(); err != nil {
		t.Fatal(err)
	}
	u := c.Update
	if !u.RequireGolden || len(u.TrustKeys) != 1 {
		t.Fatalf("update: %+v", u)
	}
	tests := []struct {
		model string
		want  Watch
	}{
		{"other", Watch{Window: 10 * time.Minute, Interval: DefaultWatchInterval, MinRequests: DefaultMinRequests,
			MaxErrorRate: 0.05, MaxP99Ratio: -1}},
		{"digits", Watch{Window: time.Hour, Interval: DefaultWatchInterval, MinRequests: DefaultMinRequests,
			MaxErrorRate: 0.05, MaxNonFiniteRate: 0.2, MaxP99Ratio: -1, AllowFallback: true}},
	}
	for _, tc := range tests {
		if got := u.WatchFor(tc.model); got != tc.want {
			t.Errorf("WatchFor(%s) = %+v\nwant %+v", tc.model, got, tc.want)
		}
	}
	if got := (Update{}).WatchFor("m"); got.Window != DefaultWatchWindow || got.MaxErrorRate != DefaultMaxErrorRate || got.MaxP99Ratio != DefaultMaxP99Ratio {
		t.Errorf("defaults: %+v", got)
	}
}

func TestUpdateConfigInvalid(t *testing.T) {
	c := Config{Data: "/tmp/x", Update: Update{
		Watch:  Watch{MaxErrorRate: 2},
		Models: map[string]Watch{"m": {MaxNonFiniteRate: -0.5, MinRequests: -1}},
	}}
	err := c.WithDefaults().Validate()
	for _, want := range []string{"update.watch: max_error_rate 2", "update.models.m: interval and min_requests", "max_nonfinite_rate -0.5"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %q", err, want)
		}
	}
}
