// Package config reads the agent's YAML configuration. Every key is optional
// and mirrors a command-line flag of `edgefleet agent`; flags given on the
// command line override the file.
//
// Example:
//
//	data: /var/lib/edgefleet
//	http: 127.0.0.1:8080
//	grpc: 127.0.0.1:8081
//	unix: /run/edgefleet/agent.sock
//	max_body_bytes: 64MiB
//	cache_budget: 2GiB
//	drain_timeout: 15s
//	defaults:            # serving settings for every model
//	  instances: 2
//	  intra_op_threads: 1
//	  providers: [cuda, cpu]
//	models:              # per-model overrides
//	  digits-cnn:
//	    instances: 1
//	    default_version: "3"
//	update:              # over-the-air updates (see Update)
//	  trust_keys: [/etc/edgefleet/cosign.pub]
//	  watch: {window: 10m, max_error_rate: 0.01}
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/dustin/go-humanize"
	"gopkg.in/yaml.v3"

	"github.com/edgefleet/edgefleet/agent/models"
)

// Defaults for the zero values of Config.
const (
	DefaultHTTP         = "127.0.0.1:8080"
	DefaultGRPC         = "127.0.0.1:8081"
	DefaultMaxBodyBytes = 64 << 20
	DefaultDrainTimeout = 15 * time.Second
)

// Values of Config.JSONNonFinite.
const (
	JSONNonFiniteTokens  = "tokens"
	JSONNonFiniteStrings = "strings"
)

// Config is the agent configuration.
type Config struct {
	// Data is the agent's data folder (the bbolt cache lives there). Required.
	Data string `yaml:"data"`
	// HTTP is the REST listen address; "" means DefaultHTTP, "off" disables it.
	HTTP string `yaml:"http"`
	// GRPC is the gRPC listen address; "" means DefaultGRPC, "off" disables it.
	GRPC string `yaml:"grpc"`
	// Unix, when set, also serves REST on this unix socket path.
	Unix string `yaml:"unix"`
	// UnixMode, when set, is the socket's permission bits (e.g. 0o666 to let
	// every user of a pod's shared emptyDir connect); zero keeps the umask's.
	UnixMode os.FileMode `yaml:"unix_mode"`
	// Health, when set, is a listener that serves only /v2/health/live,
	// /v2/health/ready and /metrics (kubelet probes and Prometheus reach a
	// pod's IP, while the API stays on loopback).
	Health string `yaml:"health"`
	// StartModels are installed over the air at start; see StartModel.
	StartModels []StartModel `yaml:"start_models"`
	// MaxBodyBytes bounds request bodies (REST) and messages (gRPC); zero means DefaultMaxBodyBytes.
	MaxBodyBytes ByteSize `yaml:"max_body_bytes"`
	// JSONNonFinite chooses how REST v2 JSON responses write NaN and ±Inf
	// output elements: "tokens" (default, as Triton and TF Serving do: bare
	// NaN, Infinity, -Infinity, which Python's json and Triton's clients read)
	// or "strings" ("NaN", "Infinity", "-Infinity": valid JSON for strict
	// parsers such as JavaScript's JSON.parse and Go's encoding/json).
	JSONNonFinite string `yaml:"json_nonfinite"`
	// CacheBudget bounds the model cache on disk; zero means unlimited.
	CacheBudget ByteSize `yaml:"cache_budget"`
	// DrainTimeout bounds how long SIGTERM waits for in-flight requests; zero means DefaultDrainTimeout.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// ORTLib is the onnxruntime shared library; "" means search (see runtime.FindLibrary).
	ORTLib string `yaml:"ort_lib"`
	// Defaults are serving settings for every model.
	Defaults models.Settings `yaml:"defaults"`
	// Models holds per-model settings, merged over Defaults.
	Models map[string]models.Settings `yaml:"models"`
	// Update configures over-the-air model updates; see Update.
	Update Update `yaml:"update"`
	// Telemetry configures the snapshots shipped to the hub; see Telemetry.
	Telemetry Telemetry `yaml:"telemetry"`
	// Hub connects the agent to a hub; see Hub.
	Hub Hub `yaml:"hub"`
}

// ByteSize is a size in bytes that YAML may write as a number or as "64MiB", "2GB".
type ByteSize int64

// UnmarshalYAML accepts integers and humanised sizes.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*b = v
	return nil
}

// String formats b in IEC units.
func (b ByteSize) String() string { return humanize.IBytes(uint64(b)) }

// Set implements pflag.Value.
func (b *ByteSize) Set(s string) error {
	v, err := ParseByteSize(s)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// Type implements pflag.Value.
func (b *ByteSize) Type() string { return "bytes" }

// ParseByteSize parses "1048576", "64MiB", "2GB".
func ParseByteSize(s string) (ByteSize, error) {
	v, err := humanize.ParseBytes(s)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q: %w", s, err)
	}
	return ByteSize(v), nil
}

// Load reads a YAML config file. Unknown keys are errors.
func Load(path string) (Config, error) {
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

// WithDefaults fills zero fields with their defaults.
func (c Config) WithDefaults() Config {
	if c.HTTP == "" {
		c.HTTP = DefaultHTTP
	}
	if c.GRPC == "" {
		c.GRPC = DefaultGRPC
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	return c
}

// Validate lists every problem of c in one error.
func (c Config) Validate() error {
	var errs []error
	if c.Data == "" {
		errs = append(errs, errors.New("data: the data folder is required (--data DIR)"))
	}
	if c.MaxBodyBytes < 0 || c.CacheBudget < 0 {
		errs = append(errs, errors.New("sizes must not be negative"))
	}
	switch c.JSONNonFinite {
	case "", JSONNonFiniteTokens, JSONNonFiniteStrings:
	default:
		errs = append(errs, fmt.Errorf("json_nonfinite: %q, want %q or %q", c.JSONNonFinite, JSONNonFiniteTokens, JSONNonFiniteStrings))
	}
	if err := c.Defaults.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("defaults: %w", err))
	}
	for name, s := range c.Models {
		if err := s.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("models.%s: %w", name, err))
		}
	}
	if err := c.Update.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := validateStart(c.StartModels); err != nil {
		errs = append(errs, err)
	}
	if err := c.Telemetry.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Hub.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ModelSettings returns the settings of a model: its entry merged over Defaults.
func (c Config) ModelSettings(name string) models.Settings {
	return c.Models[name].Merge(c.Defaults)
}
