package fleetapply

import (
	"testing"

	"github.com/edgefleet/edgefleet/agent/update"
	"github.com/edgefleet/edgefleet/ota/wire"
)

func TestRefs(t *testing.T) {
	tests := []struct {
		ref, repo, digest string
	}{
		{"127.0.0.1:5000/models/digits:3", "127.0.0.1:5000/models/digits", ""},
		{"127.0.0.1:5000/models/digits@sha256:ab", "127.0.0.1:5000/models/digits", "sha256:ab"},
		{"127.0.0.1:5000/models/digits", "127.0.0.1:5000/models/digits", ""},
		{"registry.example/models/digits:3", "registry.example/models/digits", ""},
	}
	for _, tt := range tests {
		if got := repoOf(tt.ref); got != tt.repo {
			t.Errorf("repoOf(%q) = %q, want %q", tt.ref, got, tt.repo)
		}
		if got := digestOf(tt.ref); got != tt.digest {
			t.Errorf("digestOf(%q) = %q, want %q", tt.ref, got, tt.digest)
		}
	}
}

func TestPendingState(t *testing.T) {
	for step, want := range map[string]string{
		update.StepResolving: wire.StateDownloading, update.StepDownloading: wire.StateDownloading,
		update.StepDownloaded: wire.StateDownloaded, update.StepVerified: wire.StateVerified,
		update.StepWarmed: wire.StateWarmed, update.StepActivating: wire.StateWarmed,
		update.StepInterrupted: wire.StateDownloading,
	} {
		if got := pendingState(step); got != want {
			t.Errorf("pendingState(%q) = %q, want %q", step, got, want)
		}
	}
}
