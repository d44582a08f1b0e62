// Command edgefleet is the single edgefleet binary: the agent daemon, the
// model cache tools and (in later releases) the hub and the quantizer, as
// subcommands. Run `edgefleet --help`.
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
