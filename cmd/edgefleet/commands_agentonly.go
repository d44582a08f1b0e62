//go:build agentonly

package main

import "github.com/spf13/cobra"

// flavor names the build in `edgefleet --version`.
const flavor = "agent-only"

// addFullCommands adds nothing in the agent-only build; see
// commands_full.go.
func addFullCommands(_, _ *cobra.Command, _ *globalFlags) {}
