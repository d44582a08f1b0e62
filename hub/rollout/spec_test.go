package rollout_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/hub/rollout"
)

func TestWaveTargets(t *testing.T) {
	tests := []struct {
		waves []float64
		n     int
		want  []int
	}{
		{[]float64{1, 10, 50, 100}, 10000, []int{100, 1000, 5000, 10000}},
		{[]float64{1, 10, 50, 100}, 10, []int{1, 2, 5, 10}}, // at least one device per wave
		{[]float64{1, 10, 50, 100}, 3, []int{1, 2, 3, 3}},   // never more than there are
		{[]float64{1, 10, 50, 100}, 0, []int{0, 0, 0, 0}},   // nobody matches yet
		{[]float64{33.3, 100}, 7, []int{3, 7}},              // ceil
		{[]float64{100}, 5, []int{5}},
	}
	for _, tt := range tests {
		if got := rollout.WaveTargets(tt.waves, tt.n); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("WaveTargets(%v, %d) = %v, want %v", tt.waves, tt.n, got, tt.want)
		}
	}
}

func TestParseWaves(t *testing.T) {
	tests := []struct {
		in   string
		want []float64
		ok   bool
	}{
		{"1%,10%,50%,100%", []float64{1, 10, 50, 100}, true},
		{" 5 , 100 ", []float64{5, 100}, true},
		{"0.5%,100%", []float64{0.5, 100}, true},
		{"10%,50%", nil, false},       // does not end at 100
		{"50%,10%,100%", nil, false},  // not increasing
		{"0%,100%", nil, false},       // empty wave
		{"1%,abc,100%", nil, false},   // not a number
		{"10%,100%,150%", nil, false}, // beyond 100
	}
	for _, tt := range tests {
		got, err := rollout.ParseWaves(tt.in)
		if (err == nil) != tt.ok || tt.ok && !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseWaves(%q) = %v, %v; want %v ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if err != nil && !errors.Is(err, rollout.ErrInvalid) {
			t.Errorf("ParseWaves(%q): error %v does not wrap ErrInvalid", tt.in, err)
		}
	}
}

func TestSpecValidate(t *testing.T) {
	ok := rollout.Spec{Model: "digits", Ref: "127.0.0.1:5000/models/digits:2"}
	tests := []struct {
		name string
		edit func(*rollout.Spec)
		ok   bool
	}{
		{"defaults", func(*rollout.Spec) {}, true},
		{"bad model name", func(s *rollout.Spec) { s.Model = "bad name" }, false},
		{"no ref", func(s *rollout.Spec) { s.Ref = "" }, false},
		{"bad digest", func(s *rollout.Spec) { s.Digest = "sha256:xyz" }, false},
		{"bad selector", func(s *rollout.Spec) { s.Selector = "site=ber lin" }, false},
		{"max failures over 100", func(s *rollout.Spec) { s.MaxFailures = 120 }, false},
		{"error rate above 1", func(s *rollout.Spec) { s.Gates.MaxErrorRate = 2 }, false},
		{"p99 ratio below 1", func(s *rollout.Spec) { s.Gates.MaxP99Ratio = 0.5 }, false},
		{"gate off", func(s *rollout.Spec) { s.Gates.MaxP99Ratio = -1 }, true},
	}
	for _, tt := range tests {
		s := ok
		tt.edit(&s)
		err := s.WithDefaults().Validate()
		if (err == nil) != tt.ok {
			t.Errorf("%s: Validate() = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, rollout.ErrInvalid) {
			t.Errorf("%s: %v does not wrap ErrInvalid", tt.name, err)
		}
	}
	d := ok.WithDefaults()
	if !reflect.DeepEqual(d.Waves, rollout.DefaultWaves) || time.Duration(d.Bake) != rollout.DefaultBake ||
		d.Gates.MaxP99Ratio != rollout.DefaultMaxP99Ratio || d.Gates.MinRequests != rollout.DefaultMinRequests {
		t.Fatalf("defaults not applied: %+v", d)
	}
}

func TestSpecJSON(t *testing.T) {
	var s rollout.Spec
	raw := `{"model":"digits","ref":"r:1","bake":"90s","waves":[1,100],"gates":{"activation_timeout":30}}`
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		t.Fatal(err)
	}
	if time.Duration(s.Bake) != 90*time.Second || time.Duration(s.Gates.ActivationTimeout) != 30*time.Second {
		t.Fatalf("durations: %v %v", s.Bake, s.Gates.ActivationTimeout)
	}
	b, _ := json.Marshal(s)
	var back rollout.Spec
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, s) {
		t.Fatalf("round trip: %s → %+v (%v)", b, back, err)
	}
	if err := json.Unmarshal([]byte(`{"bake":"ten minutes"}`), &s); !errors.Is(err, rollout.ErrInvalid) {
		t.Fatalf("bad duration: %v", err)
	}
}
