//go:build !agentonly

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgefleet/edgefleet/hub/api"
)

func newDeviceCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "device",
		Short: "List, inspect, label and revoke the hub's devices (through its API)",
		Long: `Talk to a running hub's API with the admin credentials in its data folder
(--data, or $EDGEFLEET_HUB_DATA).`,
	}
	cmd.AddCommand(newDeviceLsCmd(), newDeviceShowCmd(), newDeviceLabelCmd(), newDeviceRevokeCmd())
	return cmd
}

func newDeviceLsCmd() *cobra.Command {
	var (
		af       hubAPIFlags
		selector string
		output   string
	)
	cmd := &cobra.Command{
		Use:     "ls",
		Short:   "List devices",
		Example: `  edgefleet device ls --data /var/lib/edgefleet-hub --selector site=berlin,gpu=true`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := af.client()
			if err != nil {
				return err
			}
			devs, err := c.Devices(cmd.Context(), selector)
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSONOut(cmd.OutOrStdout(), devs)
			}
			printDevices(cmd.OutOrStdout(), devs, time.Now())
			return nil
		},
	}
	af.register(cmd)
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "label selector: k=v, k!=v, k, !k, comma-separated")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

func printDevices(w io.Writer, devs []api.DeviceView, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tAGENT\tMODELS\tLABELS\tLAST SEEN")
	for _, d := range devs {
		status := "offline"
		switch {
		case d.Revoked:
			status = "revoked"
		case d.Online:
			status = "online"
		}
		var models []string
		for _, name := range slices.Sorted(maps.Keys(d.Models)) {
			m := d.Models[name]
			s := name + "@" + orDash(m.ActiveVersion)
			if m.State != "" && m.State != "active" {
				s += "(" + m.State + ")"
			}
			models = append(models, s)
		}
		seen := "never"
		if !d.LastSeen.IsZero() {
			seen = now.Sub(d.LastSeen).Round(time.Second).String() + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, status, orDash(d.AgentVersion),
			orDash(strings.Join(models, ",")), orDash(formatLabels(d.Labels)), seen)
	}
	tw.Flush()
}

func formatLabels(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func writeJSONOut(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newDeviceShowCmd() *cobra.Command {
	var af hubAPIFlags
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show a device: inventory, desired and reported state (JSON)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := af.client()
			if err != nil {
				return err
			}
			d, err := c.Device(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return writeJSONOut(cmd.OutOrStdout(), d)
		},
	}
	af.register(cmd)
	return cmd
}

func newDeviceLabelCmd() *cobra.Command {
	var af hubAPIFlags
	cmd := &cobra.Command{
		Use:   "label ID KEY=VALUE... [KEY-]...",
		Short: "Set (k=v) or remove (k-) labels of a device",
		Example: `  edgefleet device label edge-1 site=berlin gpu=true
  edgefleet device label edge-1 gpu-`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := af.client()
			if err != nil {
				return err
			}
			d, err := c.Device(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			labels := maps.Clone(d.Device.Labels)
			if labels == nil {
				labels = map[string]string{}
			}
			for _, a := range args[1:] {
				if k, ok := strings.CutSuffix(a, "-"); ok && !strings.Contains(a, "=") {
					delete(labels, k)
					continue
				}
				k, v, ok := strings.Cut(a, "=")
				if !ok || k == "" {
					return fmt.Errorf("label %q: want key=value or key-", a)
				}
				labels[k] = v
			}
			v, err := c.SetLabels(cmd.Context(), args[0], labels)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", v.ID, orDash(formatLabels(v.Labels)))
			return nil
		},
	}
	af.register(cmd)
	return cmd
}

func newDeviceRevokeCmd() *cobra.Command {
	var af hubAPIFlags
	cmd := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a device: its certificate is refused from its next connection on",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := af.client()
			if err != nil {
				return err
			}
			v, err := c.Revoke(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s revoked at %s\n", v.ID, v.RevokedAt.Local().Format(time.RFC3339))
			return nil
		},
	}
	af.register(cmd)
	return cmd
}
