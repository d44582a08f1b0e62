package fleetapply

import (
	"context"
	"errors"
	"fmt"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/agent/fleet"
)

// Run runs the agent and, once it serves, its fleet client, until ctx
// ends; then it stops the fleet client first (no desired state is applied
// while the agent drains) and the agent second. An enrollment the hub
// refuses stops both and is returned; so is an agent failure.
func Run(ctx context.Context, a *agent.Agent, c *fleet.Client) error {
	agentCtx, stopAgent := context.WithCancel(context.WithoutCancel(ctx))
	defer stopAgent()
	agentDone := make(chan error, 1)
	go func() { agentDone <- a.Run(agentCtx) }()
	select {
	case <-a.Ready():
	case err := <-agentDone:
		return err
	case <-ctx.Done():
		stopAgent()
		return <-agentDone
	}

	fleetCtx, stopFleet := context.WithCancel(ctx)
	defer stopFleet()
	fleetDone := make(chan error, 1)
	go func() { fleetDone <- c.Run(fleetCtx) }()

	var errs []error
	select {
	case <-ctx.Done():
		errs = append(errs, <-fleetDone)
	case err := <-fleetDone:
		if err != nil {
			errs = append(errs, fmt.Errorf("hub: %w", err))
		}
	case err := <-agentDone:
		stopFleet()
		errs = append(errs, <-fleetDone, err)
		return errors.Join(errs...)
	}
	stopAgent()
	errs = append(errs, <-agentDone)
	return errors.Join(errs...)
}
