package hub

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/edgefleet/edgefleet/hub/ca"
)

// Config is the hub's YAML configuration file (`edgefleet hub --config`).
// Every key is optional and mirrors a flag of `edgefleet hub` (with _ for
// -); flags given on the command line override the file, and zero values
// get their defaults from WithDefaults, whichever way they came.
//
// Example:
//
//	data: /var/lib/edgefleet-hub
//	api: 0.0.0.0:7443
//	mqtt: 0.0.0.0:8883
//	registry: "off"                  # an external registry instead:
//	external_registry: registry.example.com
//	advertise_api: https://hub.example.com:7443
//	hosts: [hub.example.com]
//	device_cert_validity: 720h
//	metrics: 127.0.0.1:7444
//	dashboard: 127.0.0.1:7080
type Config struct {
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

// LoadConfig reads a configuration file; unknown keys are errors.
func LoadConfig(path string) (Config, error) {
	var c Config
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("reading config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// WithDefaults fills zero fields with their defaults: the default listen
// addresses, and the embedded registry on DefaultRegistryAddr unless an
// external registry is named (it replaces the embedded one; set Registry
// as well to run both).
func (c Config) WithDefaults() Config {
	def := func(dst *string, v string) {
		if *dst == "" {
			*dst = v
		}
	}
	def(&c.API, DefaultAPIAddr)
	def(&c.MQTT, DefaultMQTTAddr)
	if c.ExternalRegistry != "" {
		def(&c.Registry, Off)
	}
	def(&c.Registry, DefaultRegistryAddr)
	def(&c.Metrics, DefaultMetricsAddr)
	def(&c.Dashboard, DefaultDashboardAddr)
	if c.DeviceCertValidity == 0 {
		c.DeviceCertValidity = ca.DefaultDeviceValidity
	}
	return c
}

// Validate lists every problem of c in one error.
func (c Config) Validate() error {
	var errs []error
	if c.Data == "" {
		errs = append(errs, errors.New("data: the data folder is required (--data DIR)"))
	}
	addr := func(key, v string, offOK bool) {
		if v == "" || offOK && v == Off {
			return
		}
		if _, _, err := net.SplitHostPort(v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not host:port: %w", key, v, err))
		}
	}
	addr("api", c.API, false)
	addr("mqtt", c.MQTT, false)
	addr("registry", c.Registry, true)
	addr("metrics", c.Metrics, true)
	addr("dashboard", c.Dashboard, true)
	addr("quic", c.QUIC, true)
	if c.Broker != "" {
		if u, err := url.Parse(c.Broker); err != nil || u.Host == "" || u.Scheme != "mqtts" && u.Scheme != "ssl" && u.Scheme != "tls" {
			errs = append(errs, fmt.Errorf("broker: %q: want mqtts://host:port", c.Broker))
		}
	}
	if c.BrokerSharedGroup != "" && c.Broker == "" {
		errs = append(errs, errors.New("broker_shared_group: only with an external broker (broker)"))
	}
	if c.AdvertiseAPI != "" {
		if u, err := url.Parse(c.AdvertiseAPI); err != nil || u.Scheme != "https" || u.Host == "" {
			errs = append(errs, fmt.Errorf("advertise_api: %q: want https://host:port", c.AdvertiseAPI))
		}
	}
	if c.DeviceCertValidity < 0 {
		errs = append(errs, errors.New("device_cert_validity: must not be negative"))
	}
	if c.TelemetryWindow < 0 || c.TelemetryMaxSeries < 0 {
		errs = append(errs, errors.New("telemetry_window, telemetry_max_series: must not be negative"))
	}
	return errors.Join(errs...)
}

// Options returns the hub options of c (call WithDefaults first).
func (c Config) Options(log *slog.Logger) Options {
	return Options{
		DataDir:            c.Data,
		APIAddr:            c.API,
		MQTTAddr:           c.MQTT,
		RegistryAddr:       c.Registry,
		Broker:             c.Broker,
		BrokerSharedGroup:  c.BrokerSharedGroup,
		ExternalRegistry:   c.ExternalRegistry,
		AdvertiseAPI:       c.AdvertiseAPI,
		AdvertiseMQTT:      c.AdvertiseMQTT,
		AdvertiseRegistry:  c.AdvertiseRegistry,
		Hosts:              c.Hosts,
		DeviceCertValidity: c.DeviceCertValidity,
		MetricsAddr:        c.Metrics,
		DashboardAddr:      c.Dashboard,
		QUICAddr:           c.QUIC,
		TelemetryWindow:    c.TelemetryWindow,
		TelemetryMaxSeries: c.TelemetryMaxSeries,
		Logger:             log,
	}
}
