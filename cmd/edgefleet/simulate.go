//go:build !agentonly

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgefleet/edgefleet/hil-tests/fleetsim"
	"github.com/edgefleet/edgefleet/hub/api"
	"github.com/edgefleet/edgefleet/ota/wire"
)

func newAgentSimulateCmd(g *globalFlags) *cobra.Command {
	var (
		hubURL, hubData, tokensFile, prefix string
		count, concurrency                  int
		labels, localAddrs                  []string
		heartbeat, report                   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "simulate",
		Short: "Simulate many agents against a hub (load tests; no onnxruntime)",
		Long: `Run --count simulated agents in this process. Each enrolls with its own key
and bootstrap token, connects to the hub's MQTT broker with its own client
certificate, and speaks the real protocol (presence and last will,
heartbeats, retained desired state, reported state); desired models are
"activated" at once without downloading anything.

Tokens come from --tokens (one per line, one per device) or are created
through the hub's admin API with the credentials in --hub-data, one per
device, bound to its id. Each device needs a file descriptor: raise
'ulimit -n' above --count, and spread connections over several loopback
addresses with --local-addrs when ephemeral ports run short.`,
		Example: `  edgefleet agent simulate --hub-data /var/lib/edgefleet-hub --count 10000 --labels site=berlin
  edgefleet agent simulate --hub https://hub:7443 --tokens tokens.txt --count 500`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if count <= 0 {
				return errors.New("--count must be positive")
			}
			lbl, err := parseLabels("labels", labels)
			if err != nil {
				return err
			}
			token, base, err := simTokens(hubURL, hubData, tokensFile, prefix, count)
			if err != nil {
				return err
			}
			f, err := fleetsim.New(fleetsim.Options{HubURL: base, Count: count, IDPrefix: prefix, Token: token,
				Labels:            func(int) map[string]string { return lbl },
				Hardware:          wire.Hardware{CPU: "simulated", Cores: 1, Providers: []string{"cpu"}, OS: "linux", Arch: "sim"},
				HeartbeatInterval: heartbeat, ReportInterval: report, Concurrency: concurrency,
				LocalAddrs: localAddrs, Logger: g.logger()})
			if err != nil {
				return err
			}
			out := cmd.ErrOrStderr()
			start := time.Now()
			if err := f.Enroll(ctx); err != nil {
				return err
			}
			fmt.Fprintf(out, "%d devices enrolled in %v\n", count, time.Since(start).Round(time.Millisecond))
			start = time.Now()
			if err := f.Start(ctx); err != nil {
				f.Close()
				return err
			}
			defer f.Close()
			fmt.Fprintf(out, "%d devices connected in %v\n", f.Connected(), time.Since(start).Round(time.Millisecond))
			t := time.NewTicker(10 * time.Second)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-t.C:
					fmt.Fprintf(out, "%d connected, %d desired states applied\n", f.Connected(), f.Applies())
				}
			}
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&hubURL, "hub", "", "hub API URL (default: the URL in --hub-data)")
	fl.StringVar(&hubData, "hub-data", os.Getenv("EDGEFLEET_HUB_DATA"), "hub data folder: admin credentials to create one bootstrap token per device")
	fl.StringVar(&tokensFile, "tokens", "", "file of bootstrap tokens, one per line (instead of --hub-data)")
	fl.IntVar(&count, "count", 100, "number of simulated devices")
	fl.StringVar(&prefix, "id-prefix", "sim-", "device ids are <prefix><5-digit index>")
	fl.StringSliceVar(&labels, "labels", nil, "labels of every device, k=v,k=v")
	fl.DurationVar(&heartbeat, "heartbeat", 30*time.Second, "heartbeat interval")
	fl.DurationVar(&report, "report-interval", 0, "report every interval besides after each change (0: only on change)")
	fl.IntVar(&concurrency, "concurrency", 64, "parallel enrollments and connection attempts")
	fl.StringSliceVar(&localAddrs, "local-addrs", nil, "source IPs to spread connections over, e.g. 127.0.0.2,127.0.0.3")
	return cmd
}

// simTokens returns the token source and the hub URL.
func simTokens(hubURL, hubData, tokensFile, prefix string, count int) (fleetsim.TokenFunc, string, error) {
	if tokensFile != "" {
		if hubURL == "" {
			return nil, "", errors.New("--hub is required with --tokens")
		}
		f, err := os.Open(tokensFile)
		if err != nil {
			return nil, "", err
		}
		defer f.Close()
		var toks []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if t := strings.TrimSpace(sc.Text()); t != "" {
				toks = append(toks, t)
			}
		}
		if err := sc.Err(); err != nil {
			return nil, "", err
		}
		if len(toks) < count {
			return nil, "", fmt.Errorf("%s holds %d tokens for %d devices", tokensFile, len(toks), count)
		}
		var (
			mu   sync.Mutex
			next int
		)
		return func(context.Context, string) (string, error) {
			mu.Lock()
			defer mu.Unlock()
			next++
			return toks[next-1], nil
		}, hubURL, nil
	}
	if hubData == "" {
		return nil, "", errors.New("--hub-data (admin credentials) or --tokens is required")
	}
	base, cfg, err := api.AdminCredentials(hubData, hubURL)
	if err != nil {
		return nil, "", err
	}
	c := api.NewClient(base, cfg)
	return func(ctx context.Context, id string) (string, error) {
		tr, err := c.CreateToken(ctx, api.TokenRequest{DeviceID: id})
		return tr.Token, err
	}, base, nil
}
