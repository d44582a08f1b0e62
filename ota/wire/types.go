package wire

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// MaxPayload is the largest message the hub and agents accept on any topic
// (1 MiB); larger ones are refused before decoding.
const MaxPayload = 1 << 20

// DesiredState is what the hub wants a device to run. It is published
// retained on the device's desired topic, so a device that connects later
// (after days offline) receives the latest one.
type DesiredState struct {
	// DeviceID is the device the state is meant for.
	DeviceID string `json:"device_id"`
	// Revision increases with every change; 0 means "never set".
	Revision int64 `json:"revision"`
	// Models maps a model name to the artifact the device should run. A
	// model absent from the map is left alone (the hub does not remove
	// models through desired state).
	Models map[string]DesiredModel `json:"models"`
	// Updated is when the hub made this revision.
	Updated time.Time `json:"updated,omitzero"`
}

// DesiredModel is one model's desired artifact.
type DesiredModel struct {
	// Ref is the OCI reference of the model artifact, e.g.
	// "registry:5000/models/digits:3" or ".../digits@sha256:…".
	Ref string `json:"ref"`
	// Digest pins the manifest digest ("sha256:<hex>"); when set the agent
	// pulls by digest and ignores what the tag points to now.
	Digest string `json:"digest,omitempty"`
	// Version is the model version the artifact carries, for display and
	// reports; the artifact's config is authoritative.
	Version string `json:"version,omitempty"`
	// Rollout names the rollout that set this model, "" when set directly.
	Rollout string `json:"rollout,omitempty"`
	// Reject is the manifest digest of a version the hub rolled back: once
	// the desired artifact is active, the agent marks that version bad,
	// exactly as its own post-activation watch does (unloaded, never served
	// again, removed from the cache unless a label keeps it, refused if
	// desired again without force).
	Reject string `json:"reject,omitempty"`
}

// Validate checks the device id, the revision and every model. The error
// wraps ErrInvalid.
func (d DesiredState) Validate() error {
	if err := ValidateDeviceID(d.DeviceID); err != nil {
		return err
	}
	if d.Revision < 0 {
		return fmt.Errorf("revision %d: must not be negative: %w", d.Revision, ErrInvalid)
	}
	for name, m := range d.Models {
		if err := ValidateModelName(name); err != nil {
			return err
		}
		if err := m.Validate(); err != nil {
			return fmt.Errorf("model %q: %w", name, err)
		}
	}
	return nil
}

// Validate checks that the reference is set and the digest, if any, is a
// sha256 digest. The error wraps ErrInvalid.
func (m DesiredModel) Validate() error {
	if strings.TrimSpace(m.Ref) == "" || strings.ContainsAny(m.Ref, " \t\r\n") {
		return fmt.Errorf("ref %q: want an OCI reference: %w", m.Ref, ErrInvalid)
	}
	if m.Digest != "" {
		if err := ValidateDigest(m.Digest); err != nil {
			return err
		}
	}
	if m.Reject != "" {
		if err := ValidateDigest(m.Reject); err != nil {
			return fmt.Errorf("reject: %w", err)
		}
		if m.Reject == m.Digest {
			return fmt.Errorf("reject %s: the desired digest itself: %w", m.Reject, ErrInvalid)
		}
	}
	return nil
}

// ValidateDigest checks a "sha256:<64 lowercase hex>" digest. The error
// wraps ErrInvalid.
func ValidateDigest(d string) error {
	hex, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(hex) != 64 || strings.Trim(hex, "0123456789abcdef") != "" {
		return fmt.Errorf("digest %q: want sha256:<64 lowercase hex digits>: %w", d, ErrInvalid)
	}
	return nil
}

// EqualModels reports whether two desired model sets are the same.
func EqualModels(a, b map[string]DesiredModel) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// Hardware describes a device's compute resources.
type Hardware struct {
	// CPU is the processor model name.
	CPU string `json:"cpu,omitempty"`
	// Cores is the number of logical CPUs.
	Cores int `json:"cores,omitempty"`
	// MemBytes is the installed memory.
	MemBytes int64 `json:"mem_bytes,omitempty"`
	// GPU names the accelerator, "" when there is none.
	GPU string `json:"gpu,omitempty"`
	// Providers lists the onnxruntime execution providers available, in
	// order of preference (e.g. ["cuda", "cpu"]).
	Providers []string `json:"providers,omitempty"`
	// OS and Arch are Go's GOOS and GOARCH.
	OS   string `json:"os,omitempty"`
	Arch string `json:"arch,omitempty"`
}

// Model states an agent reports, following the activation state machine.
const (
	StatePending     = "pending"     // desired, not yet downloaded
	StateDownloading = "downloading" // pull in progress
	StateDownloaded  = "downloaded"  // all blobs cached, digests match
	StateVerified    = "verified"    // signature and config checked
	StateWarmed      = "warmed"      // session created, golden vector matches
	StateActive      = "active"      // serving
	StateFailed      = "failed"      // the desired version could not be activated
	StateRolledBack  = "rolled_back" // activated, then rolled back by the local watch
)

// Health summarises a model version's behaviour on live traffic since it
// became active; rollout gates compare it across versions.
type Health struct {
	Requests  uint64  `json:"requests"`
	Errors    uint64  `json:"errors"`
	NaNs      uint64  `json:"nans"`      // responses with NaN or Inf outputs
	Fallbacks uint64  `json:"fallbacks"` // runs retried from GPU on CPU
	P99Ms     float64 `json:"p99_ms"`
}

// ReportedModel is one model's state on a device.
type ReportedModel struct {
	ActiveVersion   string `json:"active_version,omitempty"`
	ActiveDigest    string `json:"active_digest,omitempty"`
	State           string `json:"state,omitempty"`
	PreviousVersion string `json:"previous_version,omitempty"`
	// DesiredDigest is the digest the agent is working towards, "" when it
	// has nothing pending.
	DesiredDigest string `json:"desired_digest,omitempty"`
	// Provider is the execution provider the active version runs on.
	Provider  string `json:"provider,omitempty"`
	LastError string `json:"last_error,omitempty"`
	Health    Health `json:"health"`
}

// ReportedState is what a device reports about itself: inventory, model
// states and the last desired revision it applied.
type ReportedState struct {
	DeviceID     string                   `json:"device_id"`
	AgentVersion string                   `json:"agent_version,omitempty"`
	Hardware     Hardware                 `json:"hardware"`
	Labels       map[string]string        `json:"labels,omitempty"`
	Models       map[string]ReportedModel `json:"models,omitempty"`
	// AppliedRevision is the last desired revision applied successfully.
	AppliedRevision int64 `json:"applied_revision"`
	// FailedRevision is the last desired revision whose application
	// failed (LastError says why); the agent does not retry it until a
	// newer revision arrives.
	FailedRevision int64     `json:"failed_revision,omitempty"`
	LastError      string    `json:"last_error,omitempty"`
	Time           time.Time `json:"time"`
}

// Validate checks the device id and model names. The error wraps
// ErrInvalid.
func (r ReportedState) Validate() error {
	if err := ValidateDeviceID(r.DeviceID); err != nil {
		return err
	}
	for name := range r.Models {
		if err := ValidateModelName(name); err != nil {
			return err
		}
	}
	return nil
}

// Heartbeat is published every interval while a device is connected.
type Heartbeat struct {
	DeviceID        string    `json:"device_id"`
	Time            time.Time `json:"time"`
	UptimeSeconds   int64     `json:"uptime_s"`
	AppliedRevision int64     `json:"applied_revision"`
	// IntervalSeconds is the time to the next heartbeat; the hub counts a
	// device offline after three missed ones.
	IntervalSeconds int64 `json:"interval_s"`
}

// Presence is the retained message on the presence topic: Online true when
// a device connects, false as its last will (or when it disconnects
// cleanly).
type Presence struct {
	Online bool      `json:"online"`
	Time   time.Time `json:"time,omitzero"`
}

// Encode marshals a message.
func Encode(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("wire: encode %T: %w", v, err)
	}
	return b, nil
}

// Decode unmarshals a message of at most MaxPayload bytes into v. Unknown
// fields are ignored; the error wraps ErrInvalid.
func Decode(b []byte, v any) error {
	if len(b) > MaxPayload {
		return fmt.Errorf("wire: %T of %d bytes exceeds %d: %w", v, len(b), MaxPayload, ErrInvalid)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("wire: decode %T: %v: %w", v, err, ErrInvalid)
	}
	return nil
}
