package wire

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestValidateDeviceID(t *testing.T) {
	tests := []struct {
		name string
		id   string
		ok   bool
	}{
		{"simple", "edge-001", true},
		{"dots and underscores", "berlin.rack_2", true},
		{"max length", strings.Repeat("a", 64), true},
		{"empty", "", false},
		{"too long", strings.Repeat("a", 65), false},
		{"slash", "a/b", false},
		{"plus wildcard", "a+", false},
		{"hash wildcard", "a#", false},
		{"dollar", "$SYS", false},
		{"leading dash", "-a", false},
		{"leading underscore (reserved for hub identities)", "_hub", false},
		{"space", "a b", false},
		{"non-ascii", "gerät", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateDeviceID(tt.id)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidateDeviceID(%q) = %v, want ok=%v", tt.id, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
		})
	}
}

func TestTopics(t *testing.T) {
	if got, want := Topic("d1", KindDesired), "edgefleet/v1/devices/d1/desired"; got != want {
		t.Fatalf("Topic = %q, want %q", got, want)
	}
	if got, want := Filter(KindReported), "edgefleet/v1/devices/+/reported"; got != want {
		t.Fatalf("Filter = %q, want %q", got, want)
	}
	for _, k := range Kinds {
		id, kind, ok := ParseTopic(Topic("dev-9", k))
		if !ok || id != "dev-9" || kind != k {
			t.Fatalf("ParseTopic(Topic(dev-9, %s)) = %q, %q, %v", k, id, kind, ok)
		}
	}
	bad := []string{
		"edgefleet/v1/devices/d1",
		"edgefleet/v1/devices/d1/unknown",
		"edgefleet/v1/devices/+/desired",
		"edgefleet/v2/devices/d1/desired",
		"other/d1/desired",
		"edgefleet/v1/devices//desired",
	}
	for _, topic := range bad {
		if _, _, ok := ParseTopic(topic); ok {
			t.Errorf("ParseTopic(%q) ok, want refused", topic)
		}
	}
}

func TestInDeviceTree(t *testing.T) {
	tests := []struct {
		topic string
		want  bool
	}{
		{"edgefleet/v1/devices/d1/desired", true},
		{"edgefleet/v1/devices/d1/#", true},
		{"edgefleet/v1/devices/d1/+", true},
		{"edgefleet/v1/devices/d1", true},
		{"edgefleet/v1/devices/d10/desired", false},
		{"edgefleet/v1/devices/d2/desired", false},
		{"edgefleet/v1/devices/+/desired", false},
		{"edgefleet/v1/devices/#", false},
		{"#", false},
		{"$share/g/edgefleet/v1/devices/d1/desired", false},
	}
	for _, tt := range tests {
		if got := InDeviceTree("d1", tt.topic); got != tt.want {
			t.Errorf("InDeviceTree(d1, %q) = %v, want %v", tt.topic, got, tt.want)
		}
	}
}

func TestDeviceMayPublish(t *testing.T) {
	want := map[Kind]bool{
		KindDesired: false, KindTelemetryAck: false,
		KindReported: true, KindHeartbeat: true, KindPresence: true, KindTelemetry: true,
	}
	for _, k := range Kinds {
		if got := DeviceMayPublish(k); got != want[k] {
			t.Errorf("DeviceMayPublish(%s) = %v, want %v", k, got, want[k])
		}
	}
}

func TestDesiredValidate(t *testing.T) {
	digest := "sha256:" + strings.Repeat("ab", 32)
	tests := []struct {
		name string
		d    DesiredState
		ok   bool
	}{
		{"empty models", DesiredState{DeviceID: "d1"}, true},
		{"model with digest", DesiredState{DeviceID: "d1", Revision: 3, Models: map[string]DesiredModel{
			"digits": {Ref: "localhost:5000/models/digits:3", Digest: digest}}}, true},
		{"bad device", DesiredState{DeviceID: "a/b"}, false},
		{"negative revision", DesiredState{DeviceID: "d1", Revision: -1}, false},
		{"bad model name", DesiredState{DeviceID: "d1", Models: map[string]DesiredModel{"a b": {Ref: "r"}}}, false},
		{"empty ref", DesiredState{DeviceID: "d1", Models: map[string]DesiredModel{"m": {}}}, false},
		{"ref with space", DesiredState{DeviceID: "d1", Models: map[string]DesiredModel{"m": {Ref: "a b"}}}, false},
		{"short digest", DesiredState{DeviceID: "d1", Models: map[string]DesiredModel{"m": {Ref: "r", Digest: "sha256:abc"}}}, false},
		{"uppercase digest", DesiredState{DeviceID: "d1", Models: map[string]DesiredModel{"m": {Ref: "r", Digest: strings.ToUpper(digest)}}}, false},
		{"reject another digest", DesiredState{DeviceID: "d1", Models: map[string]DesiredModel{"m": {Ref: "r", Digest: digest,
			Reject: "sha256:" + strings.Repeat("cd", 32)}}}, true},
		{"reject the desired digest", DesiredState{DeviceID: "d1", Models: map[string]DesiredModel{"m": {Ref: "r", Digest: digest, Reject: digest}}}, false},
		{"reject a bad digest", DesiredState{DeviceID: "d1", Models: map[string]DesiredModel{"m": {Ref: "r", Reject: "sha256:x"}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.d.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	in := ReportedState{
		DeviceID:     "d1",
		AgentVersion: "1.2.3",
		Hardware:     Hardware{CPU: "x", Cores: 4, MemBytes: 8 << 30, Providers: []string{"cuda", "cpu"}},
		Labels:       map[string]string{"site": "berlin"},
		Models: map[string]ReportedModel{"digits": {ActiveVersion: "3", State: StateActive,
			Health: Health{Requests: 10, Errors: 1, NaNs: 2, Fallbacks: 3, P99Ms: 1.5}}},
		AppliedRevision: 7,
		Time:            now,
	}
	b, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	var out ReportedState
	if err := Decode(b, &out); err != nil {
		t.Fatal(err)
	}
	if out.DeviceID != in.DeviceID || out.Models["digits"].Health != in.Models["digits"].Health ||
		out.Hardware.Providers[0] != "cuda" || !out.Time.Equal(now) || out.AppliedRevision != 7 {
		t.Fatalf("round trip lost data: %+v", out)
	}
	// Unknown fields are ignored (forward compatibility).
	if err := Decode([]byte(`{"device_id":"d1","revision":2,"future":true}`), new(DesiredState)); err != nil {
		t.Fatalf("unknown field refused: %v", err)
	}
}

func TestDecodeRejects(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
	}{
		{"not json", []byte("hello")},
		{"wrong type", []byte(`{"revision":"seven"}`)},
		{"oversized", []byte(`{"device_id":"` + strings.Repeat("a", MaxPayload) + `"}`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Decode(tt.b, new(DesiredState))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Decode = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestEqualModels(t *testing.T) {
	a := map[string]DesiredModel{"m": {Ref: "r:1"}}
	if !EqualModels(a, map[string]DesiredModel{"m": {Ref: "r:1"}}) {
		t.Fatal("equal sets reported different")
	}
	if EqualModels(a, map[string]DesiredModel{"m": {Ref: "r:2"}}) || EqualModels(a, nil) ||
		EqualModels(a, map[string]DesiredModel{"n": {Ref: "r:1"}}) {
		t.Fatal("different sets reported equal")
	}
	if !EqualModels(nil, map[string]DesiredModel{}) {
		t.Fatal("nil and empty differ")
	}
}

func TestToken(t *testing.T) {
	fp := strings.Repeat("0123456789abcdef", 4)
	tok := FormatToken("s3cr3t-s3cr3t-s3cr3t", fp)
	secret, gotFP, err := ParseToken(tok)
	if err != nil || secret != "s3cr3t-s3cr3t-s3cr3t" || gotFP != fp[:FingerprintPrefixLen] {
		t.Fatalf("ParseToken(%q) = %q, %q, %v", tok, secret, gotFP, err)
	}
	if _, full, err := ParseToken("s3cr3t-s3cr3t-s3cr3t." + strings.ToUpper(fp)); err != nil || full != fp {
		t.Fatalf("full upper-case fingerprint: %q %v", full, err)
	}
	for _, bad := range []string{"", "nodot", ".abc", "s3cr3t-s3cr3t-s3cr3t.abc", "short." + fp, "s3cr3t-s3cr3t-s3cr3t." + strings.Repeat("z", 32)} {
		if _, _, err := ParseToken(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseToken(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}
