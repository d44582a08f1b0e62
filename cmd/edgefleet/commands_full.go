//go:build !agentonly

package main

import "github.com/spf13/cobra"

// flavor names the build in `edgefleet --version`.
const flavor = "full"

// addFullCommands adds the commands the agent-only build leaves out: the
// hub and its administration, the quantizer, the benchmarks and the fleet
// simulator, and the sidecar injector.
func addFullCommands(root, agent *cobra.Command, g *globalFlags) {
	root.AddCommand(newBenchCmd(g), newHubCmd(g), newDeviceCmd(g), newRolloutCmd(g), newQuantizeCmd(g), newSidecarCmd(g))
	agent.AddCommand(newAgentSimulateCmd(g))
}
