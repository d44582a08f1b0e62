//go:build !agentonly

package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/edgefleet/edgefleet/hub"
	"github.com/edgefleet/edgefleet/hub/api"
	"github.com/edgefleet/edgefleet/hub/ca"
	"github.com/edgefleet/edgefleet/hub/telemetry"
)

// hubConfig is the hub's YAML configuration file; keys mirror the flags.
type hubConfig struct {
	Data               string        `yaml:"data"`
	API                string        `yaml:"api"`
	MQTT               string        `yaml:"mqtt"`
	Registry           string        `yaml:"registry"`
	Broker             string        `yaml:"broker"`
	BrokerSharedGroup  string        `yaml:"broker_shared_group"`
	ExternalRegistry   string        `yaml:"external_registry"`
	AdvertiseAPI       string        `yaml:"advertise_api"`
	AdvertiseMQTT      string        `yaml:"advertise_mqtt"`
	AdvertiseRegistry  string        `yaml:"advertise_registry"`
	Hosts              []string      `yaml:"hosts"`
	DeviceCertValidity time.Duration `yaml:"device_cert_validity"`
	Metrics            string        `yaml:"metrics"`
	Dashboard          string        `yaml:"dashboard"`
	QUIC               string        `yaml:"quic"`
	TelemetryWindow    int           `yaml:"telemetry_window"`
	TelemetryMaxSeries int           `yaml:"telemetry_max_series"`
}

func loadHubConfig(path string) (hubConfig, error) {
	var c hubConfig
	b, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

func newHubCmd(g *globalFlags) *cobra.Command {
	var (
		cfgFile string
		flags   hubConfig
	)
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
			cfg := hubConfig{API: hub.DefaultAPIAddr, MQTT: hub.DefaultMQTTAddr, Registry: hub.DefaultRegistryAddr, Metrics: hub.DefaultMetricsAddr, Dashboard: hub.DefaultDashboardAddr}
			if cfgFile != "" {
				var err error
				if cfg, err = loadHubConfig(cfgFile); err != nil {
					return err
				}
			}
			fs := cmd.Flags()
			set := func(name string, dst *string, v string) {
				if fs.Changed(name) || *dst == "" {
					*dst = v
				}
			}
			set("data", &cfg.Data, flags.Data)
			set("api", &cfg.API, flags.API)
			set("mqtt", &cfg.MQTT, flags.MQTT)
			set("registry", &cfg.Registry, flags.Registry)
			set("broker", &cfg.Broker, flags.Broker)
			set("broker-shared-group", &cfg.BrokerSharedGroup, flags.BrokerSharedGroup)
			set("external-registry", &cfg.ExternalRegistry, flags.ExternalRegistry)
			set("advertise-api", &cfg.AdvertiseAPI, flags.AdvertiseAPI)
			set("advertise-mqtt", &cfg.AdvertiseMQTT, flags.AdvertiseMQTT)
			set("advertise-registry", &cfg.AdvertiseRegistry, flags.AdvertiseRegistry)
			set("metrics", &cfg.Metrics, flags.Metrics)
			set("dashboard", &cfg.Dashboard, flags.Dashboard)
			if fs.Changed("quic") {
				cfg.QUIC = flags.QUIC
			}
			if fs.Changed("telemetry-window") {
				cfg.TelemetryWindow = flags.TelemetryWindow
			}
			if fs.Changed("telemetry-max-series") {
				cfg.TelemetryMaxSeries = flags.TelemetryMaxSeries
			}
			if fs.Changed("host") {
				cfg.Hosts = flags.Hosts
			}
			if fs.Changed("device-cert-validity") || cfg.DeviceCertValidity == 0 {
				cfg.DeviceCertValidity = flags.DeviceCertValidity
			}
			if cfg.Data == "" {
				return errors.New("--data is required")
			}
			if cfg.ExternalRegistry != "" && !fs.Changed("registry") && cfgFile == "" {
				cfg.Registry = hub.Off // an external registry replaces the embedded one
			}
			ctx := cmd.Context()
			h, err := hub.New(ctx, hub.Options{
				DataDir:            cfg.Data,
				APIAddr:            cfg.API,
				MQTTAddr:           cfg.MQTT,
				RegistryAddr:       cfg.Registry,
				Broker:             cfg.Broker,
				BrokerSharedGroup:  cfg.BrokerSharedGroup,
				ExternalRegistry:   cfg.ExternalRegistry,
				AdvertiseAPI:       cfg.AdvertiseAPI,
				AdvertiseMQTT:      cfg.AdvertiseMQTT,
				AdvertiseRegistry:  cfg.AdvertiseRegistry,
				Hosts:              cfg.Hosts,
				DeviceCertValidity: cfg.DeviceCertValidity,
				MetricsAddr:        cfg.Metrics,
				DashboardAddr:      cfg.Dashboard,
				QUICAddr:           cfg.QUIC,
				TelemetryWindow:    cfg.TelemetryWindow,
				TelemetryMaxSeries: cfg.TelemetryMaxSeries,
				Logger:             g.logger(),
			})
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
	f := cmd.Flags()
	f.StringVarP(&cfgFile, "config", "c", "", "YAML configuration file (keys mirror these flags, with _ for -)")
	f.StringVar(&flags.Data, "data", "", "hub data folder (required)")
	f.StringVar(&flags.API, "api", hub.DefaultAPIAddr, "HTTPS API listen address")
	f.StringVar(&flags.MQTT, "mqtt", hub.DefaultMQTTAddr, "embedded MQTT broker listen address (TLS)")
	f.StringVar(&flags.Registry, "registry", hub.DefaultRegistryAddr, `embedded OCI registry listen address ("off" to disable)`)
	f.StringVar(&flags.Broker, "broker", "", "external MQTT broker, mqtts://host:port (replaces the embedded one)")
	f.StringVar(&flags.BrokerSharedGroup, "broker-shared-group", "", "subscribe through MQTT shared subscriptions in this group (several hubs)")
	f.StringVar(&flags.ExternalRegistry, "external-registry", "", "external OCI registry host[:port] models come from")
	f.StringVar(&flags.AdvertiseAPI, "advertise-api", "", "API URL agents are told (default from --api)")
	f.StringVar(&flags.AdvertiseMQTT, "advertise-mqtt", "", "MQTT URL agents are told (default from --mqtt or --broker)")
	f.StringVar(&flags.AdvertiseRegistry, "advertise-registry", "", "registry host:port agents are told")
	f.StringSliceVar(&flags.Hosts, "host", nil, "extra DNS names/IPs for the hub's server certificate")
	f.DurationVar(&flags.DeviceCertValidity, "device-cert-validity", ca.DefaultDeviceValidity, "lifetime of device certificates")
	f.StringVar(&flags.Metrics, "metrics", hub.DefaultMetricsAddr, `Prometheus /metrics listen address, plain HTTP ("off" to disable)`)
	f.StringVar(&flags.Dashboard, "dashboard", hub.DefaultDashboardAddr, `web dashboard listen address, plain HTTP, read-only ("off" to disable)`)
	f.IntVar(&flags.TelemetryWindow, "telemetry-window", telemetry.DefaultWindow, "telemetry snapshots kept per device for the API and dashboard")
	f.IntVar(&flags.TelemetryMaxSeries, "telemetry-max-series", telemetry.DefaultMaxSeries, "device/model/version label sets on /metrics (the rest are summed under device=\"_overflow\")")
	f.StringVar(&flags.QUIC, "quic", "", `telemetry QUIC listen address, UDP (default: the API's host and port; "off" to disable)`)
	cmd.AddCommand(newHubTokenCmd(), newHubBrokerCertCmd())
	return cmd
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
			lm, err := parseLabels(labels)
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
				if err := ca.WriteFileAtomic(filepath.Join(out, f.name), f.b, f.perm); err != nil {
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
