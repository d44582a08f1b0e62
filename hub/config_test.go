package hub_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/hub"
	"github.com/edgefleet/edgefleet/hub/ca"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hub.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigDefaults(t *testing.T) {
	tests := []struct {
		name, file   string
		wantRegistry string
	}{
		{"empty file", "data: /d\n", hub.DefaultRegistryAddr},
		// An external registry replaces the embedded one, in the file as
		// with the flag.
		{"external registry", "data: /d\nexternal_registry: registry.example.com\n", hub.Off},
		{"both asked for", "data: /d\nexternal_registry: registry.example.com\nregistry: 127.0.0.1:5001\n", "127.0.0.1:5001"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := hub.LoadConfig(writeConfig(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			c = c.WithDefaults()
			if c.Registry != tt.wantRegistry {
				t.Errorf("registry %q, want %q", c.Registry, tt.wantRegistry)
			}
			if c.API != hub.DefaultAPIAddr || c.MQTT != hub.DefaultMQTTAddr || c.Metrics != hub.DefaultMetricsAddr ||
				c.Dashboard != hub.DefaultDashboardAddr || c.DeviceCertValidity != ca.DefaultDeviceValidity {
				t.Errorf("defaults not filled: %+v", c)
			}
			if err := c.Validate(); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestLoadConfigRejectsUnknownKeys(t *testing.T) {
	_, err := hub.LoadConfig(writeConfig(t, "data: /d\nregsitry: off\n"))
	if err == nil || !strings.Contains(err.Error(), "regsitry") {
		t.Fatalf("unknown key: %v", err)
	}
}

func TestConfigValidateListsEveryProblem(t *testing.T) {
	c := hub.Config{API: "nohost", Broker: "mqtt://plain:1883", BrokerSharedGroup: "g", TelemetryWindow: -1,
		AdvertiseAPI: "http://x"}.WithDefaults()
	err := c.Validate()
	if err == nil {
		t.Fatal("invalid configuration accepted")
	}
	for _, want := range []string{"data:", "api:", "broker:", "advertise_api:", "telemetry_window"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q not reported in:\n%v", want, err)
		}
	}
	c = hub.Config{Data: "/d", Broker: "mqtts://b:8883", BrokerSharedGroup: "g", Registry: hub.Off, QUIC: hub.Off}.WithDefaults()
	if err := c.Validate(); err != nil {
		t.Errorf("valid configuration refused: %v", err)
	}
}
