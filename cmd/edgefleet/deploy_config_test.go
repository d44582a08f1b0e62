//go:build !agentonly

package main

import (
	"testing"

	"github.com/edgefleet/edgefleet/hub"
)

// TestPackagedHubConfig loads the hub.yaml the .deb installs into
// /etc/edgefleet/ with the hub's strict loader (unknown keys fail).
func TestPackagedHubConfig(t *testing.T) {
	c, err := hub.LoadConfig("../../deploy/systemd/hub.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Data != "/var/lib/edgefleet-hub" {
		t.Fatalf("hub.yaml data = %q, want the unit's StateDirectory /var/lib/edgefleet-hub", c.Data)
	}
}
