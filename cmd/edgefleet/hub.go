//go:build !agentonly

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgefleet/edgefleet/hub"
	"github.com/edgefleet/edgefleet/hub/api"
	"github.com/edgefleet/edgefleet/hub/ca"
	"github.com/edgefleet/edgefleet/hub/telemetry"
	"github.com/edgefleet/edgefleet/ota/durable"
	"github.com/spf13/pflag"
)

func newHubCmd(g *globalFlags) *cobra.Command {
	var hf hubFlags
	cmd := &cobra.Command{
		Use:   "hub",
		Short: "Run the hub: device registry, enrollment, MQTT broker, REST API and OCI registry",
		Long: `Run the fleet's control plane. With the defaults it needs nothing else: an
embedded MQTT broker (TLS, device certificates required) on --mqtt, the
HTTPS API on --api and an embedded OCI registry on --registry. For larger
fleets point it at an external broker (--broker mqtts://host:port, e.g.
Mosquitto configured as in hub/broker/mosquitto/) and registry.

The data folder keeps the state, the CA, and the admin credentials the
device and token commands use (admin.crt/admin.key).`,
		Example: `  edgefleet hub --data /var/lib/edgefleet-hub
  edgefleet hub token create --data /var/lib/edgefleet-hub
  edgefleet agent --data /var/lib/edgefleet --hub https://hub.example:7443 --token <token>`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := hf.config(cmd.Flags())
			if err != nil {
				return err
			}
			if err := cfg.Validate(); err != nil {
				return fmt.Errorf("invalid configuration:\n%w", err)
			}
			if hf.check {
				fmt.Fprintln(cmd.OutOrStdout(), "configuration OK")
				return nil
			}
			ctx := cmd.Context()
			h, err := hub.New(ctx, cfg.Options(g.logger()))
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "hub API %s, MQTT %s, registry %s, QUIC telemetry %s, metrics %s, dashboard %s\nCA fingerprint %s\ncreate an enrollment token: edgefleet hub token create --data %s\n",
				h.APIURL(), h.MQTTURL(), orNone(h.RegistryAddr()), orNone(h.QUICAddr()), orNone(h.MetricsURL()), orNone(h.DashboardURL()), h.CAFingerprint(), cfg.Data)
			return h.Run(ctx)
		},
	}
	hf.register(cmd.Flags())
	cmd.AddCommand(newHubTokenCmd(), newHubBrokerCertCmd())
	return cmd
}

// hubFlags are the flags of `edgefleet hub`: a configuration file, the
// same keys as flags, and --check-config.
type hubFlags struct {
	file  string
	flags hub.Config
	check bool
}

func (hf *hubFlags) register(f *pflag.FlagSet) {
	f.StringVarP(&hf.file, "config", "c", "", "YAML configuration file (keys mirror these flags, with _ for -)")
	f.StringVar(&hf.flags.Data, "data", "", "hub data folder (required)")
	f.StringVar(&hf.flags.API, "api", hub.DefaultAPIAddr, "HTTPS API listen address")
	f.StringVar(&hf.flags.MQTT, "mqtt", hub.DefaultMQTTAddr, "embedded MQTT broker listen address (TLS)")
	f.StringVar(&hf.flags.Registry, "registry", hub.DefaultRegistryAddr, `embedded OCI registry listen address ("off" to disable; off by default with --external-registry)`)
	f.StringVar(&hf.flags.Broker, "broker", "", "external MQTT broker, mqtts://host:port (replaces the embedded one)")
	f.StringVar(&hf.flags.BrokerSharedGroup, "broker-shared-group", "", "subscribe through MQTT shared subscriptions in this group (several hubs)")
	f.StringVar(&hf.flags.ExternalRegistry, "external-registry", "", "external OCI registry host[:port] models come from")
	f.StringVar(&hf.flags.AdvertiseAPI, "advertise-api", "", "API URL agents are told (default from --api)")
	f.StringVar(&hf.flags.AdvertiseMQTT, "advertise-mqtt", "", "MQTT URL agents are told (default from --mqtt or --broker)")
	f.StringVar(&hf.flags.AdvertiseRegistry, "advertise-registry", "", "registry host:port agents are told")
	f.StringSliceVar(&hf.flags.Hosts, "host", nil, "extra DNS names/IPs for the hub's server certificate")
	f.DurationVar(&hf.flags.DeviceCertValidity, "device-cert-validity", ca.DefaultDeviceValidity, "lifetime of device certificates")
	f.StringVar(&hf.flags.Metrics, "metrics", hub.DefaultMetricsAddr, `Prometheus /metrics listen address, plain HTTP ("off" to disable)`)
	f.StringVar(&hf.flags.Dashboard, "dashboard", hub.DefaultDashboardAddr, `web dashboard listen address, plain HTTP, read-only ("off" to disable)`)
	f.IntVar(&hf.flags.TelemetryWindow, "telemetry-window", telemetry.DefaultWindow, "telemetry snapshots kept per device for the API and dashboard")
	f.IntVar(&hf.flags.TelemetryMaxSeries, "telemetry-max-series", telemetry.DefaultMaxSeries, "device/model/version label sets on /metrics (the rest are summed under device=\"_overflow\")")
	f.StringVar(&hf.flags.QUIC, "quic", "", `telemetry QUIC listen address, UDP (default: the API's host and port; "off" to disable)`)
	f.BoolVarP(&hf.check, "check-config", "t", false, "validate the configuration and exit")
}

// config reads the --config file (if any), lets the flags set on the
// command line override it, and fills in the defaults: the same precedence
// as the agent's.
func (hf *hubFlags) config(fs *pflag.FlagSet) (hub.Config, error) {
	var cfg hub.Config
	if hf.file != "" {
		var err error
		if cfg, err = hub.LoadConfig(hf.file); err != nil {
			return cfg, err
		}
	}
	// Flags set on the command line override the file.
	override(fs, "data", &cfg.Data, hf.flags.Data)
	override(fs, "api", &cfg.API, hf.flags.API)
	override(fs, "mqtt", &cfg.MQTT, hf.flags.MQTT)
	override(fs, "registry", &cfg.Registry, hf.flags.Registry)
	override(fs, "broker", &cfg.Broker, hf.flags.Broker)
	override(fs, "broker-shared-group", &cfg.BrokerSharedGroup, hf.flags.BrokerSharedGroup)
	override(fs, "external-registry", &cfg.ExternalRegistry, hf.flags.ExternalRegistry)
	override(fs, "advertise-api", &cfg.AdvertiseAPI, hf.flags.AdvertiseAPI)
	override(fs, "advertise-mqtt", &cfg.AdvertiseMQTT, hf.flags.AdvertiseMQTT)
	override(fs, "advertise-registry", &cfg.AdvertiseRegistry, hf.flags.AdvertiseRegistry)
	override(fs, "metrics", &cfg.Metrics, hf.flags.Metrics)
	override(fs, "dashboard", &cfg.Dashboard, hf.flags.Dashboard)
	override(fs, "quic", &cfg.QUIC, hf.flags.QUIC)
	override(fs, "telemetry-window", &cfg.TelemetryWindow, hf.flags.TelemetryWindow)
	override(fs, "telemetry-max-series", &cfg.TelemetryMaxSeries, hf.flags.TelemetryMaxSeries)
	override(fs, "host", &cfg.Hosts, hf.flags.Hosts)
	override(fs, "device-cert-validity", &cfg.DeviceCertValidity, hf.flags.DeviceCertValidity)
	return cfg.WithDefaults(), nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// hubAPIFlags are the flags of commands that call a running hub's API.
type hubAPIFlags struct {
	data string
	url  string
}

func (f *hubAPIFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.data, "data", os.Getenv("EDGEFLEET_HUB_DATA"), "hub data folder holding the admin credentials (default $EDGEFLEET_HUB_DATA)")
	cmd.Flags().StringVar(&f.url, "hub", "", "hub API URL (default: the URL the hub wrote into its data folder)")
}

func (f *hubAPIFlags) client() (*api.Client, error) {
	if f.data == "" {
		return nil, errors.New("--data (the hub's data folder, for its admin credentials) is required")
	}
	base, cfg, err := api.AdminCredentials(f.data, f.url)
	if err != nil {
		return nil, err
	}
	return api.NewClient(base, cfg), nil
}

func newHubTokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage bootstrap tokens for enrolling agents"}
	var (
		af       hubAPIFlags
		ttl      time.Duration
		deviceID string
		labels   []string
	)
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a one-time bootstrap token (through the running hub's API)",
		Long: `Create a one-time bootstrap token. The token ends with the hub CA's
fingerprint, so the agent checks it enrolls with this hub. It is shown once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := af.client()
			if err != nil {
				return err
			}
			lm, err := parseLabels("label", labels)
			if err != nil {
				return err
			}
			req := api.TokenRequest{DeviceID: deviceID, Labels: lm}
			if ttl > 0 {
				req.TTL = ttl.String()
			}
			tok, err := c.CreateToken(cmd.Context(), req)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok.Token)
			base, _, _ := api.AdminCredentials(af.data, af.url)
			fmt.Fprintf(cmd.ErrOrStderr(), "expires %s; enroll an agent with:\n  edgefleet agent --data DIR --hub %s --token %s\n",
				tok.Expires.Local().Format(time.RFC3339), base, tok.Token)
			return nil
		},
	}
	af.register(create)
	create.Flags().DurationVar(&ttl, "ttl", 0, "validity (default 24h)")
	create.Flags().StringVar(&deviceID, "device-id", "", "bind the token to this device id (also allows re-enrolling it)")
	create.Flags().StringSliceVar(&labels, "label", nil, "label given to the device, k=v (repeatable)")
	cmd.AddCommand(create)
	return cmd
}

func newHubBrokerCertCmd() *cobra.Command {
	var (
		data, out string
		hosts     []string
		validity  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "broker-cert",
		Short: "Write a server certificate for an external MQTT broker (Mosquitto), signed by the hub's CA",
		Long: `Write broker.crt, broker.key, ca.crt and crl.pem into --out, for an external
broker configured as in hub/broker/mosquitto/mosquitto.conf. Works offline on
the hub's data folder (the CA files), also while the hub runs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if data == "" || out == "" || len(hosts) == 0 {
				return errors.New("--data, --out and at least one --host are required")
			}
			c, err := ca.LoadOrCreate(data, "")
			if err != nil {
				return err
			}
			srv, err := c.IssueServer(hosts, validity)
			if err != nil {
				return err
			}
			key, err := ca.EncodeKey(srv.PrivateKey)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(out, 0o700); err != nil {
				return err
			}
			// The hub's current CRL, or an empty one before its first start.
			crl, err := os.ReadFile(filepath.Join(data, hub.CRLFile))
			if err != nil {
				if crl, err = c.CRL(nil, time.Now().Unix(), 30*24*time.Hour); err != nil {
					return err
				}
			}
			type outFile struct {
				name string
				b    []byte
				perm os.FileMode
			}
			files := []outFile{
				{"broker.key", key, 0o600},
				{"broker.crt", ca.EncodeCert(srv.Leaf), 0o644},
				{"ca.crt", c.CertPEM(), 0o644},
				{"crl.pem", crl, 0o644},
			}
			for _, f := range files {
				if err := durable.WriteFile(filepath.Join(out, f.name), f.b, f.perm); err != nil {
					return err
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote broker.crt, broker.key, ca.crt, crl.pem to %s (valid for %s)\n", out, strings.Join(hosts, ", "))
			return nil
		},
	}
	cmd.Flags().StringVar(&data, "data", "", "hub data folder (required)")
	cmd.Flags().StringVar(&out, "out", "", "output folder (required)")
	cmd.Flags().StringSliceVar(&hosts, "host", nil, "DNS name or IP agents use to reach the broker (repeatable, required)")
	cmd.Flags().DurationVar(&validity, "validity", ca.DefaultServerValidity, "certificate lifetime")
	return cmd
}
