package config

import (
	"errors"
	"fmt"
	"time"
)

// Update configures over-the-air model updates (package agent/update).
//
// Example:
//
//	update:
//	  trust_keys: [/etc/edgefleet/cosign.pub]  # refuse unsigned artifacts
//	  require_golden: true
//	  watch:                                    # post-activation watch, every model
//	    window: 10m
//	    max_error_rate: 0.01
//	    max_p99_ratio: 2
//	  models:                                   # per-model watch overrides
//	    digits-cnn:
//	      window: 1h
type Update struct {
	// TrustKeys are PEM files of ECDSA P-256 public keys (cosign.pub). When
	// set, artifacts without a valid signature by one of them are refused.
	TrustKeys []string `yaml:"trust_keys"`
	// RequireGolden refuses artifacts whose config has no golden test vector.
	RequireGolden bool `yaml:"require_golden"`
	// Insecure allows plain HTTP to any registry; loopback and private
	// registries may use plain HTTP without it.
	Insecure bool `yaml:"insecure"`
	// NoResume discards updates interrupted by a restart instead of resuming
	// them when the agent starts again.
	NoResume bool `yaml:"no_resume"`
	// Watch holds the post-activation watch thresholds for every model.
	Watch Watch `yaml:"watch"`
	// Models holds per-model watch thresholds, merged over Watch.
	Models map[string]Watch `yaml:"models"`
}

// Defaults for the zero values of Watch.
const (
	DefaultWatchWindow   = 10 * time.Minute
	DefaultWatchInterval = time.Second
	DefaultMinRequests   = 20
	DefaultMaxErrorRate  = 0.01
	DefaultMaxP99Ratio   = 3.0
)

// Watch holds the thresholds of the post-activation watch: for Window after
// a new version becomes active, its live traffic is compared with the
// previous version's, and a breach rolls back to the previous version at
// once.
type Watch struct {
	// Window is how long a new version is watched; zero means
	// DefaultWatchWindow, negative disables the watch.
	Window time.Duration `yaml:"window"`
	// Interval is how often the watch evaluates; zero means
	// DefaultWatchInterval. Errors and NaN/Inf outputs are evaluated as they
	// happen as well.
	Interval time.Duration `yaml:"interval"`
	// MinRequests is how many requests the new version must have served
	// before error rate and latency are judged; zero means DefaultMinRequests.
	MinRequests int `yaml:"min_requests"`
	// MaxErrorRate is the largest tolerated fraction of failed requests
	// (server errors, not client mistakes); zero means DefaultMaxErrorRate,
	// 1 disables the check.
	MaxErrorRate float64 `yaml:"max_error_rate"`
	// MaxNonFiniteRate is the largest tolerated fraction of responses with a
	// NaN or Inf output; zero (the default) means any such response breaches,
	// 1 disables the check.
	MaxNonFiniteRate float64 `yaml:"max_nonfinite_rate"`
	// MaxP99Ratio is the largest tolerated ratio of the new version's p99
	// latency to the previous version's, judged once both have at least 100
	// (and MinRequests) recent requests; zero means DefaultMaxP99Ratio,
	// negative disables the check.
	MaxP99Ratio float64 `yaml:"max_p99_ratio"`
	// AllowFallback tolerates the new version falling back from a GPU
	// execution provider to the CPU; by default that breaches.
	AllowFallback bool `yaml:"allow_fallback"`
}

// Merge returns w with zero fields taken from d.
func (w Watch) Merge(d Watch) Watch {
	if w.Window == 0 {
		w.Window = d.Window
	}
	if w.Interval == 0 {
		w.Interval = d.Interval
	}
	if w.MinRequests == 0 {
		w.MinRequests = d.MinRequests
	}
	if w.MaxErrorRate == 0 {
		w.MaxErrorRate = d.MaxErrorRate
	}
	if w.MaxNonFiniteRate == 0 {
		w.MaxNonFiniteRate = d.MaxNonFiniteRate
	}
	if w.MaxP99Ratio == 0 {
		w.MaxP99Ratio = d.MaxP99Ratio
	}
	w.AllowFallback = w.AllowFallback || d.AllowFallback
	return w
}

// WithDefaults fills zero fields with their defaults.
func (w Watch) WithDefaults() Watch {
	return w.Merge(Watch{Window: DefaultWatchWindow, Interval: DefaultWatchInterval,
		MinRequests: DefaultMinRequests, MaxErrorRate: DefaultMaxErrorRate, MaxP99Ratio: DefaultMaxP99Ratio})
}

// Validate reports thresholds that cannot work.
func (w Watch) Validate() error {
	var errs []error
	if w.Interval < 0 || w.MinRequests < 0 {
		errs = append(errs, errors.New("interval and min_requests must not be negative"))
	}
	for name, r := range map[string]float64{"max_error_rate": w.MaxErrorRate, "max_nonfinite_rate": w.MaxNonFiniteRate} {
		if r < 0 || r > 1 {
			errs = append(errs, fmt.Errorf("%s %g: want a fraction in [0, 1]", name, r))
		}
	}
	return errors.Join(errs...)
}

// WatchFor returns the watch thresholds of a model: its entry merged over
// Watch, with defaults for what neither sets.
func (u Update) WatchFor(model string) Watch {
	return u.Models[model].Merge(u.Watch).WithDefaults()
}

// Validate lists every problem of u.
func (u Update) Validate() error {
	var errs []error
	if err := u.Watch.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("update.watch: %w", err))
	}
	for name, w := range u.Models {
		if err := w.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("update.models.%s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
