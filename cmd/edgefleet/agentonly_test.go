package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestAgentOnlyLinksNoHubCode checks that the agentonly build tag keeps the
// hub, the quantizer, the benchmarks' tools and the sidecar injector out of
// the binary (the agent-only image relies on it).
func TestAgentOnlyLinksNoHubCode(t *testing.T) {
	out, err := exec.Command("go", "list", "-tags", "agentonly", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	const mod = "github.com/edgefleet/edgefleet/"
	var agentPkgs int
	for _, p := range strings.Fields(string(out)) {
		rel, ok := strings.CutPrefix(p, mod)
		if !ok {
			continue
		}
		for _, banned := range []string{"hub", "quantize", "sidecar", "hil-tests", "agent/loadgen"} {
			if rel == banned || strings.HasPrefix(rel, banned+"/") {
				t.Errorf("the agent-only build links %s", p)
			}
		}
		if strings.HasPrefix(rel, "agent") {
			agentPkgs++
		}
	}
	if agentPkgs == 0 {
		t.Fatalf("go list -deps named no agent package:\n%s", out)
	}
}
