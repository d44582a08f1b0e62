package fleetapply

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/agent/fleet"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// FleetDir is the folder, inside the agent's data folder, that holds its
// identity and sync state.
const FleetDir = "fleet"

// Client builds the fleet client of agent a from cfg.Hub: it enrolls with
// cfg.Hub.URL and Token unless <data>/fleet holds an identity. It returns
// nil (and no error) when no hub is configured and the agent never
// enrolled: the agent then runs on its own.
func Client(cfg config.Config, a *agent.Agent, log *slog.Logger) (*fleet.Client, error) {
	if log == nil {
		log = slog.Default()
	}
	h := cfg.Hub
	app := New(Options{Updater: a.Updater(), Models: a.Models(), Logger: log.With("component", "fleetapply")})
	c, err := fleet.New(fleet.Options{
		Dir:               filepath.Join(cfg.Data, FleetDir),
		HubURL:            h.URL,
		Token:             h.Token,
		DeviceID:          h.DeviceID,
		Labels:            h.Labels,
		Hardware:          wire.Hardware{Providers: cfg.Defaults.Providers},
		AgentVersion:      agent.Version,
		Applier:           app,
		HeartbeatInterval: h.HeartbeatInterval,
		ReportInterval:    h.ReportInterval,
		Logger:            log.With("component", "fleet"),
	})
	if err != nil {
		return nil, err
	}
	if _, enrolled := c.Identity(); !enrolled && h.URL == "" {
		return nil, nil
	}
	return c, nil
}

// Run runs the agent and, once it serves, its fleet client, until ctx
// ends; then it stops the fleet client first (no desired state is applied
// while the agent drains) and the agent second. Once the device is
// enrolled its telemetry is attached to the fleet connection. An
// enrollment the hub refuses stops both and is returned; so is an agent
// failure.
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
	stop := func(err error) error {
		stopAgent()
		return errors.Join(err, <-agentDone)
	}

	// Enroll first (retrying while the hub is unreachable; the agent
	// serves its cached models meanwhile), so telemetry can ship over the
	// fleet connection.
	enrollCtx, stopEnroll := context.WithCancel(ctx)
	defer stopEnroll()
	enrolled := make(chan error, 1)
	go func() { _, err := c.Enroll(enrollCtx); enrolled <- err }()
	select {
	case err := <-enrolled:
		if err != nil {
			if ctx.Err() != nil {
				return stop(nil)
			}
			return stop(fmt.Errorf("hub: %w", err))
		}
	case err := <-agentDone:
		stopEnroll()
		<-enrolled
		return err
	}
	if err := a.AttachFleet(c); err != nil {
		return stop(fmt.Errorf("telemetry: %w", err))
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
		return errors.Join(<-fleetDone, err)
	}
	return stop(errors.Join(errs...))
}
