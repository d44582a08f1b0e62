package rollout

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/hub/registry"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// ErrInvalid wraps every complaint about a Spec; it is wire.ErrInvalid, so
// the API answers 400.
var ErrInvalid = wire.ErrInvalid

// Defaults for the zero values of Spec and Gates.
const (
	DefaultBake              = 10 * time.Minute
	DefaultMaxErrorRate      = 0.01
	DefaultMaxNaNRate        = 0.001
	DefaultMaxP99Ratio       = 2.0
	DefaultMaxFallbackRate   = 0.01
	DefaultMinRequests       = 20
	DefaultMinLatencySamples = 100
	DefaultActivationTimeout = 15 * time.Minute
	DefaultLatencySustain    = 30 * time.Second
)

// DefaultWaves are the cumulative wave sizes, in percent of the matching
// devices, when a Spec names none.
var DefaultWaves = []float64{1, 10, 50, 100}

// Spec is what a rollout installs where, and how carefully.
type Spec struct {
	// Model is the model name on the devices.
	Model string `json:"model"`
	// Ref is the OCI reference of the new version's artifact
	// ("host:5000/models/digits:3"). The hub resolves it to a manifest
	// digest when the rollout is created, so a tag that moves later does
	// not split the fleet.
	Ref string `json:"ref"`
	// Digest pins the manifest digest; "" resolves Ref.
	Digest string `json:"digest,omitempty"`
	// Version is the artifact's model version, filled in from its config.
	Version string `json:"version,omitempty"`
	// Selector is a label selector (registry.ParseSelector); "" selects
	// every device.
	Selector string `json:"selector,omitempty"`
	// Waves are cumulative percentages of the matching devices, increasing
	// and ending at 100, e.g. [1, 10, 50, 100]. Every wave adds at least one
	// device while any is left. Empty means DefaultWaves.
	Waves []float64 `json:"waves,omitempty"`
	// Bake is how long the gates must hold once a wave's devices have all
	// reported before the next wave starts; zero means DefaultBake,
	// negative means no wait.
	Bake Duration `json:"bake,omitempty"`
	// MaxFailures is the largest tolerated share of assigned devices, in
	// percent, whose activation failed; more halts the rollout. Zero
	// tolerates none.
	MaxFailures float64 `json:"max_failures,omitempty"`
	// Gates are the health thresholds.
	Gates Gates `json:"gates"`
}

// Gates are the thresholds on the updated devices' reported health. Zero
// values mean the defaults; negative values turn a gate off.
type Gates struct {
	// MaxErrorRate is the largest tolerated fraction of failed requests
	// over all updated devices (DefaultMaxErrorRate).
	MaxErrorRate float64 `json:"max_error_rate,omitempty"`
	// MaxNaNRate is the largest tolerated fraction of responses with NaN
	// or Inf outputs (DefaultMaxNaNRate).
	MaxNaNRate float64 `json:"max_nan_rate,omitempty"`
	// MaxP99Ratio is the largest tolerated ratio of the new version's p99
	// latency to the previous version's (DefaultMaxP99Ratio). While devices
	// matching the selector still run the previous version, the median p99
	// of the updated devices is compared with theirs, measured at the same
	// time (a control group, immune to load that hits the whole fleet);
	// once every device is updated, each device's new p99 is compared with
	// its own from before the update, and the median ratio counts.
	MaxP99Ratio float64 `json:"max_p99_ratio,omitempty"`
	// LatencySustain is how long the latency gate must stay breached
	// before it halts the rollout, so a passing burst of load does not
	// (DefaultLatencySustain; negative halts at once). The other gates
	// halt at once.
	LatencySustain Duration `json:"latency_sustain,omitempty"`
	// MaxFallbackRate is the largest tolerated fraction of updated devices
	// whose new version fell back from a GPU to the CPU
	// (DefaultMaxFallbackRate).
	MaxFallbackRate float64 `json:"max_fallback_rate,omitempty"`
	// MinRequests is how many requests the updated devices must have
	// served together before error and NaN rates are judged
	// (DefaultMinRequests).
	MinRequests int `json:"min_requests,omitempty"`
	// MinLatencySamples is how many requests a device must have served on
	// each version before its p99 counts (DefaultMinLatencySamples).
	MinLatencySamples int `json:"min_latency_samples,omitempty"`
	// ActivationTimeout is how long an online device may take to report
	// the new version before it counts as failed
	// (DefaultActivationTimeout).
	ActivationTimeout Duration `json:"activation_timeout,omitempty"`
}

// withDefaults fills zero fields.
func (g Gates) withDefaults() Gates {
	def := func(v *float64, d float64) {
		if *v == 0 {
			*v = d
		}
	}
	def(&g.MaxErrorRate, DefaultMaxErrorRate)
	def(&g.MaxNaNRate, DefaultMaxNaNRate)
	def(&g.MaxP99Ratio, DefaultMaxP99Ratio)
	def(&g.MaxFallbackRate, DefaultMaxFallbackRate)
	if g.MinRequests == 0 {
		g.MinRequests = DefaultMinRequests
	}
	if g.MinLatencySamples == 0 {
		g.MinLatencySamples = DefaultMinLatencySamples
	}
	if g.ActivationTimeout == 0 {
		g.ActivationTimeout = Duration(DefaultActivationTimeout)
	}
	if g.LatencySustain == 0 {
		g.LatencySustain = Duration(DefaultLatencySustain)
	}
	return g
}

// WithDefaults returns s with every zero field set to its default (the
// Version and Digest stay as they are).
func (s Spec) WithDefaults() Spec {
	if len(s.Waves) == 0 {
		s.Waves = append([]float64(nil), DefaultWaves...)
	}
	if s.Bake == 0 {
		s.Bake = Duration(DefaultBake)
	}
	if s.Bake < 0 {
		s.Bake = 0
	}
	s.Gates = s.Gates.withDefaults()
	return s
}

// Validate lists every problem of s (after WithDefaults) in one error
// wrapping ErrInvalid.
func (s Spec) Validate() error {
	var errs []error
	if err := wire.ValidateModelName(s.Model); err != nil {
		errs = append(errs, fmt.Errorf("model: %w", err))
	}
	if err := (wire.DesiredModel{Ref: s.Ref, Digest: s.Digest}).Validate(); err != nil {
		errs = append(errs, err)
	}
	if _, err := registry.ParseSelector(s.Selector); err != nil {
		errs = append(errs, err)
	}
	if err := validateWaves(s.Waves); err != nil {
		errs = append(errs, err)
	}
	if s.MaxFailures < 0 || s.MaxFailures > 100 || math.IsNaN(s.MaxFailures) {
		errs = append(errs, fmt.Errorf("max_failures %g: want a percentage in [0, 100]: %w", s.MaxFailures, ErrInvalid))
	}
	g := s.Gates
	for name, v := range map[string]float64{"max_error_rate": g.MaxErrorRate, "max_nan_rate": g.MaxNaNRate, "max_fallback_rate": g.MaxFallbackRate} {
		if v > 1 || math.IsNaN(v) {
			errs = append(errs, fmt.Errorf("gates.%s %g: want a fraction in [0, 1] (negative turns the gate off): %w", name, v, ErrInvalid))
		}
	}
	if g.MaxP99Ratio > 0 && g.MaxP99Ratio < 1 || math.IsNaN(g.MaxP99Ratio) {
		errs = append(errs, fmt.Errorf("gates.max_p99_ratio %g: want at least 1 (negative turns the gate off): %w", g.MaxP99Ratio, ErrInvalid))
	}
	if g.MinRequests < 0 || g.MinLatencySamples < 0 || g.ActivationTimeout < 0 {
		errs = append(errs, fmt.Errorf("gates: min_requests, min_latency_samples and activation_timeout must not be negative: %w", ErrInvalid))
	}
	return errors.Join(errs...)
}

func validateWaves(w []float64) error {
	if len(w) == 0 {
		return fmt.Errorf("waves: none given: %w", ErrInvalid)
	}
	prev := 0.0
	for i, p := range w {
		if math.IsNaN(p) || p <= prev || p > 100 {
			return fmt.Errorf("waves %v: want increasing percentages in (0, 100]: %w", w, ErrInvalid)
		}
		prev = p
		_ = i
	}
	if w[len(w)-1] != 100 {
		return fmt.Errorf("waves %v: the last wave must be 100%%: %w", w, ErrInvalid)
	}
	return nil
}

// ParseWaves parses "1%,10%,50%,100%" (the % signs are optional).
func ParseWaves(s string) ([]float64, error) {
	var out []float64
	for part := range strings.SplitSeq(s, ",") {
		p := strings.TrimSuffix(strings.TrimSpace(part), "%")
		v, err := strconv.ParseFloat(p, 64)
		if err != nil {
			return nil, fmt.Errorf("waves %q: %q is not a percentage: %w", s, part, ErrInvalid)
		}
		out = append(out, v)
	}
	if err := validateWaves(out); err != nil {
		return nil, err
	}
	return out, nil
}

// ParsePercent parses "2%" or "2" as 2 (percent).
func ParsePercent(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(s), "%"), 64)
	if err != nil || v < 0 || v > 100 {
		return 0, fmt.Errorf("%q: want a percentage such as 2%%: %w", s, ErrInvalid)
	}
	return v, nil
}

// WaveTargets returns how many of n devices the waves cover, cumulatively:
// ceil(p·n/100), at least one more than the wave before while devices are
// left, never more than n.
func WaveTargets(waves []float64, n int) []int {
	out := make([]int, len(waves))
	prev := 0
	for i, p := range waves {
		t := int(math.Ceil(p * float64(n) / 100))
		if t <= prev {
			t = prev + 1
		}
		t = min(t, n)
		out[i] = t
		prev = t
	}
	return out
}

// Duration is a time.Duration written in JSON as a Go duration string
// ("10m", "1h30m"); numbers are read as seconds.
type Duration time.Duration

// MarshalJSON writes d as "10m0s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads "10m" or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var secs float64
		if err2 := json.Unmarshal(b, &secs); err2 != nil {
			return fmt.Errorf("duration %s: want a string such as \"10m\": %w", b, ErrInvalid)
		}
		*d = Duration(secs * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %v: %w", s, err, ErrInvalid)
	}
	*d = Duration(v)
	return nil
}

// String formats d like time.Duration.
func (d Duration) String() string { return time.Duration(d).String() }
