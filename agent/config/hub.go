package config

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/edgefleet/edgefleet/ota/wire"
)

// Hub connects the agent to a hub (packages agent/fleet and
// agent/fleetapply): the agent enrolls once with a bootstrap token, keeps
// its identity in <data>/fleet, installs the models its desired state
// names and reports their state and health. An agent that enrolled before
// reconnects without any of these keys.
//
//	hub:
//	  url: https://hub.example:7443
//	  token: <bootstrap token>      # only until the agent has enrolled
//	  device_id: edge-berlin-01     # default: the hub picks one
//	  labels: {site: berlin, gpu: "true"}
//	  heartbeat_interval: 30s
//	  report_interval: 60s
type Hub struct {
	// URL is the hub's API, https://host:port.
	URL string `yaml:"url"`
	// Token is the bootstrap token ("<secret>.<ca-fingerprint>").
	Token string `yaml:"token"`
	// DeviceID asks for an id at enrollment; "" lets the hub choose.
	DeviceID string `yaml:"device_id"`
	// Labels are asked for at enrollment (the token's labels win).
	Labels map[string]string `yaml:"labels"`
	// HeartbeatInterval defaults to 30 s.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// ReportInterval is how often model states and health are reported
	// besides after every change (default 60 s).
	ReportInterval time.Duration `yaml:"report_interval"`
}

// Validate lists the problems of h in one error.
func (h Hub) Validate() error {
	var errs []error
	if h.URL != "" {
		if u, err := url.Parse(h.URL); err != nil || u.Scheme != "https" || u.Host == "" {
			errs = append(errs, fmt.Errorf("hub.url %q: want https://host:port", h.URL))
		}
	}
	if h.Token != "" {
		if h.URL == "" {
			errs = append(errs, errors.New("hub.token without hub.url (--hub)"))
		}
		if _, _, err := wire.ParseToken(h.Token); err != nil {
			errs = append(errs, fmt.Errorf("hub.token: %w", err))
		}
	}
	if h.DeviceID != "" {
		if err := wire.ValidateDeviceID(h.DeviceID); err != nil {
			errs = append(errs, fmt.Errorf("hub.device_id: %w", err))
		}
	}
	if h.HeartbeatInterval < 0 || h.ReportInterval < 0 {
		errs = append(errs, errors.New("hub: heartbeat_interval and report_interval must not be negative"))
	}
	return errors.Join(errs...)
}
