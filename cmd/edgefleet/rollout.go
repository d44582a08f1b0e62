//go:build !agentonly

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgefleet/edgefleet/hub/api"
	"github.com/edgefleet/edgefleet/hub/rollout"
)

func newRolloutCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "Canary rollouts of model versions through the hub (create, status, pause, resume, abort, rollback)",
		Long: `Roll a model version out to the devices a label selector matches, in waves:
each wave updates more devices, and the next starts only when every online
device of the wave has reported and the gates (activation failures, error
rate, NaN/Inf outputs, p99 latency against the previous version, GPU to CPU
fallbacks) have held for the bake time. A breached gate halts the rollout
and sets the devices it updated back to their previous version.

The commands talk to a running hub's API with the admin credentials in its
data folder (--data, or $EDGEFLEET_HUB_DATA).`,
	}
	cmd.AddCommand(newRolloutCreateCmd(), newRolloutStatusCmd(), newRolloutLsCmd())
	for _, a := range []struct{ name, short string }{
		{"pause", "Stop updating more devices (the gates still watch the updated ones)"},
		{"resume", "Continue a paused rollout"},
		{"abort", "Stop a rollout; devices keep the version they have"},
		{"rollback", "Set every device the rollout touched back to its previous version"},
	} {
		cmd.AddCommand(newRolloutActionCmd(a.name, a.short))
	}
	return cmd
}

func newRolloutCreateCmd() *cobra.Command {
	var (
		af                                   hubAPIFlags
		spec                                 rollout.Spec
		waves, maxFailures, errRate, nanRate string
		fallbackRate, output                 string
		bake, timeout, sustain               time.Duration
		wait                                 bool
		p99Ratio                             float64
		minRequests, minLatencySamples       int
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Start a rollout",
		Example: `  edgefleet rollout create --data /var/lib/edgefleet-hub --model digits-cnn \
    --ref 127.0.0.1:5000/models/digits-cnn:3 --selector 'site=berlin,gpu=true' \
    --waves 1%,10%,50%,100% --bake 10m --max-failures 2%`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := af.client()
			if err != nil {
				return err
			}
			fs := cmd.Flags()
			if output != "table" && output != "json" {
				return fmt.Errorf("--output %q: want table or json", output)
			}
			if spec.Waves, err = rollout.ParseWaves(waves); err != nil {
				return err
			}
			if spec.MaxFailures, err = rollout.ParsePercent(maxFailures); err != nil {
				return fmt.Errorf("--max-failures %w", err)
			}
			spec.Bake = rollout.Duration(bake)
			if bake == 0 {
				spec.Bake = -1 // an explicit 0: no wait
			}
			for _, f := range []struct {
				flag string
				src  string
				dst  *float64
			}{{"max-error-rate", errRate, &spec.Gates.MaxErrorRate}, {"max-nan-rate", nanRate, &spec.Gates.MaxNaNRate},
				{"max-fallback-rate", fallbackRate, &spec.Gates.MaxFallbackRate}} {
				if !fs.Changed(f.flag) {
					continue
				}
				if f.src == "off" {
					*f.dst = -1
					continue
				}
				p, err := rollout.ParsePercent(f.src)
				if err != nil {
					return fmt.Errorf("--%s %w", f.flag, err)
				}
				*f.dst = p / 100
			}
			if fs.Changed("max-p99-ratio") {
				spec.Gates.MaxP99Ratio = p99Ratio
			}
			spec.Gates.MinRequests, spec.Gates.MinLatencySamples = minRequests, minLatencySamples
			spec.Gates.ActivationTimeout, spec.Gates.LatencySustain = rollout.Duration(timeout), rollout.Duration(sustain)
			st, err := c.CreateRollout(cmd.Context(), spec)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if wait {
				if st, err = waitRollout(cmd.Context(), c, st.ID, cmd.ErrOrStderr()); err != nil {
					return err
				}
			}
			if output == "json" {
				if err := writeJSONOut(w, st); err != nil {
					return err
				}
			} else {
				printRollout(w, st)
			}
			// The exit status does not depend on the output format.
			if wait && st.State != rollout.StateCompleted {
				return fmt.Errorf("rollout %s ended %s: %s", st.ID, st.State, st.Reason)
			}
			return nil
		},
	}
	af.register(cmd)
	f := cmd.Flags()
	f.StringVar(&spec.Model, "model", "", "model name on the devices (required)")
	f.StringVar(&spec.Ref, "ref", "", "OCI reference of the new version, e.g. 127.0.0.1:5000/models/digits-cnn:3 (required)")
	f.StringVar(&spec.Digest, "digest", "", "pin the manifest digest (default: --ref resolved by the hub now)")
	f.StringVarP(&spec.Selector, "selector", "l", "", "label selector of the devices: k=v, k!=v, k, !k, comma-separated (default: all)")
	f.StringVar(&waves, "waves", "1%,10%,50%,100%", "cumulative wave sizes in percent of the matching devices")
	f.DurationVar(&bake, "bake", rollout.DefaultBake, "how long the gates must hold after a wave settles (0: no wait)")
	f.StringVar(&maxFailures, "max-failures", "0%", "tolerated share of devices whose activation fails")
	f.StringVar(&errRate, "max-error-rate", "1%", `tolerated share of failed requests ("off" disables)`)
	f.StringVar(&nanRate, "max-nan-rate", "0.1%", `tolerated share of responses with NaN/Inf outputs ("off" disables)`)
	f.Float64Var(&p99Ratio, "max-p99-ratio", rollout.DefaultMaxP99Ratio, "tolerated p99 latency of the new version over the previous one's (negative disables)")
	f.StringVar(&fallbackRate, "max-fallback-rate", "1%", `tolerated share of updated devices falling back from GPU to CPU ("off" disables)`)
	f.IntVar(&minRequests, "min-requests", 0, "requests the updated devices must serve before rates are judged (0: default 20)")
	f.IntVar(&minLatencySamples, "min-latency-samples", 0, "requests per device and version before its p99 counts (0: default 100)")
	f.DurationVar(&timeout, "activation-timeout", 0, "how long an online device may take to report the new version (0: default 15m)")
	f.DurationVar(&sustain, "latency-sustain", 0, "how long the latency gate must stay breached before it halts (0: default 30s)")
	f.BoolVar(&wait, "wait", false, "wait until the rollout ends; exit non-zero unless it completed")
	f.StringVarP(&output, "output", "o", "table", "table or json")
	cmd.MarkFlagRequired("model")
	cmd.MarkFlagRequired("ref")
	return cmd
}

func newRolloutStatusCmd() *cobra.Command {
	var (
		af      hubAPIFlags
		devices bool
		wait    bool
		output  string
	)
	cmd := &cobra.Command{
		Use:     "status ID",
		Short:   "Show a rollout's waves, gates and devices",
		Example: `  edgefleet rollout status --data /var/lib/edgefleet-hub ro-3f2a9c01b7de --devices`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := af.client()
			if err != nil {
				return err
			}
			var st rollout.Status
			if wait {
				if st, err = waitRollout(cmd.Context(), c, args[0], cmd.ErrOrStderr()); err != nil {
					return err
				}
			}
			if st, err = c.Rollout(cmd.Context(), args[0], devices || output == "json"); err != nil {
				return err
			}
			if output == "json" {
				return writeJSONOut(cmd.OutOrStdout(), st)
			}
			printRollout(cmd.OutOrStdout(), st)
			return nil
		},
	}
	af.register(cmd)
	cmd.Flags().BoolVar(&devices, "devices", false, "list every device's part")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the rollout ends")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

func newRolloutLsCmd() *cobra.Command {
	var (
		af     hubAPIFlags
		output string
	)
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List rollouts, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := af.client()
			if err != nil {
				return err
			}
			list, err := c.Rollouts(cmd.Context())
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSONOut(cmd.OutOrStdout(), list)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tMODEL\tVERSION\tSTATE\tWAVE\tUPDATED\tFAILED\tMATCHING\tCREATED")
			for _, st := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", st.ID, st.Spec.Model, orDash(st.Spec.Version), st.State,
					waveLabel(st), st.Counts.Updated, st.Counts.Failed, st.Counts.Matching, st.Created.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
	af.register(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

func newRolloutActionCmd(action, short string) *cobra.Command {
	var af hubAPIFlags
	cmd := &cobra.Command{
		Use:   action + " ID",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := af.client()
			if err != nil {
				return err
			}
			st, err := c.RolloutAction(cmd.Context(), args[0], action)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "rollout %s: %s\n", st.ID, st.State)
			return nil
		},
	}
	af.register(cmd)
	return cmd
}

// waitRollout polls a rollout until it reaches a final state, printing its
// progress when it changes.
func waitRollout(ctx context.Context, c *api.Client, id string, progress io.Writer) (rollout.Status, error) {
	last := ""
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		st, err := c.Rollout(ctx, id, false)
		if err != nil {
			return st, err
		}
		line := fmt.Sprintf("%s wave %s: %d updated, %d updating, %d failed of %d matching", st.State, waveLabel(st),
			st.Counts.Updated, st.Counts.Updating, st.Counts.Failed, st.Counts.Matching)
		if line != last {
			fmt.Fprintln(progress, line)
			last = line
		}
		if rollout.Final(st.State) {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, errors.Join(ctx.Err(), fmt.Errorf("rollout %s still %s", id, st.State))
		case <-t.C:
		}
	}
}

func waveLabel(st rollout.Status) string {
	n := len(st.Spec.Waves)
	if st.Wave >= n {
		return fmt.Sprintf("%d/%d", n, n)
	}
	return fmt.Sprintf("%d/%d (%g%%)", st.Wave+1, n, st.Spec.Waves[st.Wave])
}

func printRollout(w io.Writer, st rollout.Status) {
	s := st.Spec
	fmt.Fprintf(w, "rollout   %s\nmodel     %s version %s\nref       %s\ndigest    %s\nselector  %s\nstate     %s\n",
		st.ID, s.Model, orDash(s.Version), s.Ref, orDash(s.Digest), orDash(s.Selector), st.State)
	if st.Reason != "" {
		fmt.Fprintf(w, "reason    %s\n", st.Reason)
	}
	fmt.Fprintf(w, "wave      %s, bake %v\n", waveLabel(st), time.Duration(s.Bake))
	c := st.Counts
	fmt.Fprintf(w, "devices   %d matching, %d assigned: %d updated, %d updating, %d failed, %d reverting, %d reverted, %d revert failed; %d offline\n",
		c.Matching, c.Assigned, c.Updated, c.Updating, c.Failed, c.Reverting, c.Reverted, c.RevertFailed, c.Offline)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nWAVE\tPERCENT\tTARGET\tASSIGNED\tUPDATED\tFAILED")
	for i, wv := range st.Waves {
		fmt.Fprintf(tw, "%d\t%g%%\t%d\t%d\t%d\t%d\n", i+1, wv.Percent, wv.Target, wv.Assigned, wv.Updated, wv.Failed)
	}
	fmt.Fprintln(tw, "\nGATE\tVALUE\tLIMIT\tSTATUS\tDETAIL")
	for _, g := range st.Gates {
		status := "ok"
		switch {
		case !g.OK:
			status = "BREACHED"
		case !g.Judged:
			status = "no data"
		}
		fmt.Fprintf(tw, "%s\t%.4g\t%g\t%s\t%s\n", g.Name, g.Value, g.Limit, status, g.Detail)
	}
	if len(st.Devices) > 0 {
		fmt.Fprintln(tw, "\nDEVICE\tWAVE\tPHASE\tPREVIOUS\tREQUESTS\tP99 MS\tERROR")
		for _, d := range st.Devices {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%.3g\t%s\n", d.ID, d.Wave+1, d.Phase, orDash(d.PrevVersion), d.Health.Requests,
				d.Health.P99Ms, orDash(strings.TrimSpace(d.Error)))
		}
	}
	tw.Flush()
}
