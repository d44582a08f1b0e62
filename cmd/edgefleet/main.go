// Command edgefleet is the single edgefleet binary: the agent daemon, the
// model cache and OTA tools, the hub, the quantizer and the benchmarks, as
// subcommands. Run `edgefleet --help`.
//
// This package only parses flags and wires packages together; what a
// command does lives in the package that owns it (hub.Config and its
// loader, ota.Build for artifacts and variants, agent/config, quantize, …).
// Flags override a configuration file the same way for agent and hub:
// override copies a flag that was set on the command line, then the
// owning package's WithDefaults fills what is still zero.
//
// # Build flavours
//
// The default build is the full binary. The build tag agentonly leaves out
// everything an edge box or a sidecar does not run — the hub, device and
// rollout administration, the quantizer, the benchmarks, the fleet simulator
// and the sidecar injector — so that none of their packages is linked in:
//
//	go build -tags agentonly ./cmd/edgefleet   # agent, model and OTA commands only
//
// The scheme: every file of this package that is hub, admin or tooling code
// starts with
//
//	//go:build !agentonly
//
// and registers its commands in addFullCommands (commands_full.go);
// commands_agentonly.go is the empty counterpart. A new command for the hub
// side goes into a !agentonly file and into addFullCommands; `edgefleet
// --version` names the flavour. deploy/images builds its agent-only image
// with this tag.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "edgefleet:", err)
		os.Exit(1)
	}
}
