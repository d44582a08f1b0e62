package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/agent/fleetapply"
)

func newAgentCmd(g *globalFlags) *cobra.Command {
	var (
		cfgFile string
		flags   config.Config
		check   bool
		labels  []string
		models  []string
		keys    []string
		mode    string
	)
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the agent: serve cached models over the Open Inference Protocol (REST + gRPC)",
		Long: `Run the agent daemon. It loads the models cached in --data and serves them over
the Open Inference Protocol: REST on --http (and --unix), gRPC on --grpc, and
Prometheus metrics on /metrics of the REST listener. Listeners bind to
loopback by default (sidecar use). SIGTERM drains in-flight requests.

With --hub and --token the agent enrolls with a hub once (its identity stays
in <data>/fleet, so later starts need neither), then installs the models its
desired state names over the air and reports their state and health.

With --model NAME=REF (repeatable) the agent installs the artifact REF as
model NAME when it starts, through the same verified, resumable update path
(signatures checked with --trust-key), and reports ready on
/v2/health/ready only once every named model is warm: the pod sidecar's way
of receiving its models (see 'edgefleet sidecar').`,
		Example: `  edgefleet model import --data /var/lib/edgefleet --name digits-cnn cnn.onnx
  edgefleet agent --data /var/lib/edgefleet --http 127.0.0.1:8080 --grpc 127.0.0.1:8081
  edgefleet agent --data /tmp/edgefleet --model digits=registry.example/models/digits:1 --trust-key cosign.pub
  edgefleet agent --data /var/lib/edgefleet --hub https://hub.example:7443 --token <token> --labels site=berlin,gpu=true`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := config.Config{}
			if cfgFile != "" {
				var err error
				if cfg, err = config.Load(cfgFile); err != nil {
					return err
				}
			}
			// Flags set on the command line override the file.
			fs := cmd.Flags()
			override(fs, "data", &cfg.Data, flags.Data)
			override(fs, "http", &cfg.HTTP, flags.HTTP)
			override(fs, "grpc", &cfg.GRPC, flags.GRPC)
			override(fs, "unix", &cfg.Unix, flags.Unix)
			override(fs, "health", &cfg.Health, flags.Health)
			if fs.Changed("unix-mode") {
				m, err := strconv.ParseUint(mode, 8, 32)
				if err != nil || m > 0o777 {
					return fmt.Errorf("--unix-mode %q: want octal permission bits such as 0660", mode)
				}
				cfg.UnixMode = os.FileMode(m)
			}
			for _, m := range models {
				sm, err := config.ParseStartModel(m)
				if err != nil {
					return err
				}
				cfg.StartModels = append(cfg.StartModels, sm)
			}
			if fs.Changed("trust-key") {
				cfg.Update.TrustKeys = keys
			}
			var err error
			if cfg.Update.TrustKeys, err = config.ExpandKeyPaths(cfg.Update.TrustKeys); err != nil {
				return err
			}
			override(fs, "max-body", &cfg.MaxBodyBytes, flags.MaxBodyBytes)
			override(fs, "cache-budget", &cfg.CacheBudget, flags.CacheBudget)
			override(fs, "drain-timeout", &cfg.DrainTimeout, flags.DrainTimeout)
			override(fs, "ort-lib", &cfg.ORTLib, flags.ORTLib)
			override(fs, "providers", &cfg.Defaults.Providers, flags.Defaults.Providers)
			override(fs, "instances", &cfg.Defaults.Instances, flags.Defaults.Instances)
			override(fs, "intra-op-threads", &cfg.Defaults.IntraOpThreads, flags.Defaults.IntraOpThreads)
			override(fs, "telemetry-interval", &cfg.Telemetry.Interval, flags.Telemetry.Interval)
			override(fs, "telemetry-budget", &cfg.Telemetry.Budget, flags.Telemetry.Budget)
			override(fs, "telemetry-transport", &cfg.Telemetry.Transport, flags.Telemetry.Transport)
			override(fs, "telemetry-quic", &cfg.Telemetry.QUIC, flags.Telemetry.QUIC)
			override(fs, "hub", &cfg.Hub.URL, flags.Hub.URL)
			override(fs, "token", &cfg.Hub.Token, flags.Hub.Token)
			override(fs, "device-id", &cfg.Hub.DeviceID, flags.Hub.DeviceID)
			if fs.Changed("labels") {
				l, err := parseLabels("labels", labels)
				if err != nil {
					return err
				}
				cfg.Hub.Labels = l
			}
			if check {
				if err := cfg.WithDefaults().Validate(); err != nil {
					return fmt.Errorf("invalid configuration:\n%w", err)
				}
				fmt.Fprintln(cmd.OutOrStdout(), "configuration OK")
				return nil
			}
			log := g.logger()
			a, err := agent.New(cfg, log)
			if err != nil {
				return err
			}
			c, err := fleetapply.Client(cfg, a, log)
			if err != nil {
				return err
			}
			if c == nil {
				return a.Run(cmd.Context())
			}
			return fleetapply.Run(cmd.Context(), a, c)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfgFile, "config", "c", "", "YAML configuration file (keys mirror these flags)")
	f.StringVar(&flags.Data, "data", "", "data folder holding the model cache (required)")
	f.StringVar(&flags.HTTP, "http", config.DefaultHTTP, `REST listen address ("off" to disable)`)
	f.StringVar(&flags.GRPC, "grpc", config.DefaultGRPC, `gRPC listen address ("off" to disable)`)
	f.StringVar(&flags.Unix, "unix", "", "also serve REST on this unix socket")
	f.StringVar(&mode, "unix-mode", "", "permission bits of the --unix socket, octal (e.g. 0666 for a pod's shared emptyDir)")
	f.StringVar(&flags.Health, "health", "", "also serve only /v2/health/* and /metrics on this address (kubelet probes)")
	f.StringArrayVar(&models, "model", nil, "install the artifact REF as model NAME at start, NAME=REF (repeatable); ready once all are warm")
	f.StringSliceVar(&keys, "trust-key", nil, "PEM public key file, or a folder of them, to verify artifacts with (repeatable)")
	flags.MaxBodyBytes = config.DefaultMaxBodyBytes
	f.Var(&flags.MaxBodyBytes, "max-body", "largest request body / gRPC message (e.g. 64MiB)")
	f.Var(&flags.CacheBudget, "cache-budget", "disk budget of the model cache (e.g. 2GiB; 0 = unlimited)")
	f.DurationVar(&flags.DrainTimeout, "drain-timeout", config.DefaultDrainTimeout, "how long SIGTERM waits for in-flight requests")
	f.StringVar(&flags.ORTLib, "ort-lib", "", "onnxruntime shared library (default: $EDGEFLEET_ORT_LIB, then .deps/)")
	f.StringSliceVar(&flags.Defaults.Providers, "providers", []string{"cpu"}, "execution providers in order, e.g. cuda,cpu")
	f.IntVar(&flags.Defaults.Instances, "instances", 2, "concurrent runs per model")
	f.IntVar(&flags.Defaults.IntraOpThreads, "intra-op-threads", 1, "onnxruntime intra-op threads per run")
	f.DurationVar(&flags.Telemetry.Interval, "telemetry-interval", 10*time.Second, "time between telemetry snapshots")
	f.Var(&flags.Telemetry.Budget, "telemetry-budget", "disk budget of the telemetry queue (e.g. 64MiB; 0 = default)")
	f.StringVar(&flags.Telemetry.Transport, "telemetry-transport", "mqtt", "how telemetry reaches the hub: mqtt, or quic (falls back to MQTT when UDP is blocked)")
	f.StringVar(&flags.Telemetry.QUIC, "telemetry-quic", "", "the hub's QUIC address host:port (default: the hub API's host and port)")
	f.StringVar(&flags.Hub.URL, "hub", "", "hub API URL to enroll with, https://host:port (identity kept in <data>/fleet)")
	f.StringVar(&flags.Hub.Token, "token", "", "bootstrap token from 'edgefleet hub token create' (needed once)")
	f.StringVar(&flags.Hub.DeviceID, "device-id", "", "device id to ask for at enrollment (default: the hub picks one)")
	f.StringSliceVar(&labels, "labels", nil, "labels to ask for at enrollment, k=v,k=v")
	f.BoolVarP(&check, "check-config", "t", false, "validate the configuration and exit")
	cmd.AddCommand(newAgentUpdateCmds(g)...)
	return cmd
}
