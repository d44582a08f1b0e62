package hub_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps the hub and the agent apart: nothing under hub/
// imports agent/, and the agent's hub client does not import hub/.
func TestDependencies(t *testing.T) {
	tests := []struct {
		pkg       string
		forbidden string
	}{
		{"github.com/edgefleet/edgefleet/hub/...", "github.com/edgefleet/edgefleet/agent"},
		{"github.com/edgefleet/edgefleet/agent/fleet", "github.com/edgefleet/edgefleet/hub"},
		{"github.com/edgefleet/edgefleet/ota/wire", "github.com/"},
	}
	for _, tt := range tests {
		out, err := exec.Command("go", "list", "-deps", tt.pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", tt.pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			if strings.HasPrefix(dep, tt.forbidden) && !strings.HasPrefix(dep, "github.com/edgefleet/edgefleet/ota/wire") {
				t.Errorf("%s depends on %s", tt.pkg, dep)
			}
		}
	}
}
