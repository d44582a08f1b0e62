package config

import (
	"errors"
	"fmt"
	"time"
)

// Telemetry configures the agent's telemetry (package agent/telemetry):
// snapshots of its metrics every interval, queued in <data>/telemetry.db
// and shipped to the hub once the agent is enrolled.
//
//	telemetry:
//	  interval: 10s
//	  budget: 64MiB
//	  transport: quic     # mqtt (default) or quic, falling back to MQTT
//	  quic: hub.example:7443
type Telemetry struct {
	// Disabled turns telemetry off (no queue file, no shipping).
	Disabled bool `yaml:"disabled"`
	// Interval between snapshots; zero means 10s.
	Interval time.Duration `yaml:"interval"`
	// Budget bounds the queue on disk; zero means 64MiB. When it is
	// full the oldest snapshots are dropped (and the drops reported).
	Budget ByteSize `yaml:"budget"`
	// Transport is "mqtt" (the default) or "quic".
	Transport string `yaml:"transport"`
	// QUIC is the hub's QUIC listener (host:port); "" means the host and
	// port of the hub's API, over UDP.
	QUIC string `yaml:"quic"`
	// NoFallback keeps to QUIC when the hub cannot be reached over UDP
	// instead of falling back to MQTT.
	NoFallback bool `yaml:"no_fallback"`
}

// minTelemetryBudget holds a few snapshots.
const minTelemetryBudget = 64 << 10

// Validate lists the problems of t in one error.
func (t Telemetry) Validate() error {
	var errs []error
	if t.Interval < 0 {
		errs = append(errs, fmt.Errorf("telemetry.interval %v: must not be negative", t.Interval))
	}
	if t.Budget != 0 && t.Budget < minTelemetryBudget {
		errs = append(errs, fmt.Errorf("telemetry.budget %v: at least %v", t.Budget, ByteSize(minTelemetryBudget)))
	}
	switch t.Transport {
	case "", "mqtt", "quic":
	default:
		errs = append(errs, fmt.Errorf("telemetry.transport %q: want mqtt or quic", t.Transport))
	}
	return errors.Join(errs...)
}
