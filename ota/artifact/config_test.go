package artifact

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
)

func f32s(vs ...float32) []byte {
	b := make([]byte, 4*len(vs))
	for i, v := range vs {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

// validConfig returns a config like the digits CNN's.
func validConfig() *Config {
	return &Config{
		SchemaVersion: 1,
		Name:          "digits-cnn",
		Version:       "3",
		Inputs:        []TensorSpec{{Name: "input", Datatype: "FP32", Shape: []int64{-1, 1, 2, 2}}},
		Outputs:       []TensorSpec{{Name: "logits", Datatype: "FP32", Shape: []int64{-1, 2}}},
		Precision:     PrecisionINT8,
		Quantization: &Quantization{
			Method: "static-qdq", WeightType: "INT8", ActivationType: "UINT8", PerChannel: true,
			Calibration: &Calibration{Method: "percentile", Percentile: 99.99, Samples: 200},
		},
		ExecutionProviders: []string{"cuda", "cpu"},
		Golden: &Golden{
			Inputs:    []GoldenTensor{{Name: "input", Datatype: "FP32", Shape: []int64{1, 1, 2, 2}, Data: f32s(1, 2, 3, 4)}},
			Outputs:   []GoldenTensor{{Name: "logits", Datatype: "FP32", Shape: []int64{1, 2}, Data: f32s(0.25, -1)}},
			Tolerance: Tolerance{Abs: 1e-5, Rel: 1e-3},
		},
		MinAgentVersion: "v0.3.0",
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *Config)
		want   []string // substrings of the error; none means valid
	}{
		{"valid", func(*Config) {}, nil},
		{"no golden no quantization", func(c *Config) { c.Golden, c.Quantization = nil, nil }, nil},
		{"schema version", func(c *Config) { c.SchemaVersion = 2 }, []string{"schemaVersion is 2"}},
		{"empty name", func(c *Config) { c.Name = "" }, []string{"name"}},
		{"name with slash", func(c *Config) { c.Name = "a/b" }, []string{`name "a/b"`}},
		{"version zero", func(c *Config) { c.Version = "0" }, []string{`version "0"`}},
		{"version leading zero", func(c *Config) { c.Version = "01" }, []string{`version "01"`}},
		{"version semver", func(c *Config) { c.Version = "1.2.3" }, []string{`version "1.2.3"`}},
		{"no inputs", func(c *Config) { c.Inputs = nil; c.Golden = nil }, []string{"inputs: at least one"}},
		{"bad datatype", func(c *Config) { c.Outputs[0].Datatype = "float" }, []string{`unknown datatype "float"`}},
		{"duplicate output", func(c *Config) { c.Outputs = append(c.Outputs, c.Outputs[0]) }, []string{`name "logits" used twice`}},
		{"bad dim", func(c *Config) { c.Inputs[0].Shape[1] = -2 }, []string{"dimension -2"}},
		{"precision", func(c *Config) { c.Precision = "int4" }, []string{`precision "int4"`}},
		{"quant method", func(c *Config) { c.Quantization.Method = "awq" }, []string{`method "awq"`}},
		{"percentile", func(c *Config) { c.Quantization.Calibration.Percentile = 0 }, []string{"percentile 0"}},
		{"calibration method", func(c *Config) { c.Quantization.Calibration.Method = "mse" }, []string{`method "mse"`}},
		{"ep case", func(c *Config) { c.ExecutionProviders = []string{"CUDA"} }, []string{`"CUDA"`}},
		{"ep twice", func(c *Config) { c.ExecutionProviders = []string{"cpu", "cpu"} }, []string{"listed twice"}},
		{"golden short data", func(c *Config) { c.Golden.Inputs[0].Data = f32s(1, 2, 3) }, []string{"needs 16 bytes, data holds 12"}},
		{"golden missing input", func(c *Config) { c.Golden.Inputs = nil }, []string{`model input "input" missing`}},
		{"golden unknown output", func(c *Config) { c.Golden.Outputs[0].Name = "probs" }, []string{`"probs" is not a model outputs`}},
		{"golden dtype", func(c *Config) {
			c.Golden.Outputs[0].Datatype = "FP64"
			c.Golden.Outputs[0].Data = make([]byte, 16)
		}, []string{"datatype FP64, model declares FP32"}},
		{"golden shape", func(c *Config) {
			c.Golden.Outputs[0].Shape = []int64{2, 1}
		}, []string{"does not fit model shape"}},
		{"golden no outputs", func(c *Config) { c.Golden.Outputs = nil }, []string{"at least one expected output"}},
		{"tolerance", func(c *Config) { c.Golden.Tolerance.Rel = math.NaN() }, []string{"tolerance"}},
		{"min agent version", func(c *Config) { c.MinAgentVersion = "1.2" }, []string{"minAgentVersion"}},
		{"several problems listed", func(c *Config) { c.Name = ""; c.Version = "x"; c.Precision = "" }, []string{"name", `version "x"`, "precision"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mutate(c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate accepted an invalid config")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestConfigRoundTrip(t *testing.T) {
	c := validConfig()
	c.SchemaVersion = 0
	b, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	// The golden data travels as standard base64.
	if !strings.Contains(string(b), `"data":"AACAPwAAAEAAAEBAAACAQA=="`) {
		t.Errorf("golden input data not base64 little-endian FP32: %s", b)
	}
	got, err := ParseConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := json.Marshal(got)
	if string(b) != string(b2) {
		t.Errorf("round trip changed the config:\n%s\n%s", b, b2)
	}
	if n, err := got.VersionNumber(); err != nil || n != 3 {
		t.Errorf("VersionNumber = %d, %v; want 3", n, err)
	}
}

func TestParseConfigRejects(t *testing.T) {
	good, err := validConfig().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string][]byte{
		"not json":      []byte("onnx"),
		"trailing data": append(append([]byte{}, good...), []byte(`{}`)...),
		"null":          []byte("null"),
		"oversized":     []byte(`{"name":"` + strings.Repeat("a", MaxConfigSize) + `"}`),
		"wrong types":   []byte(`{"schemaVersion":"1"}`),
	}
	for name, b := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseConfig(b); !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseConfig = %v, want ErrInvalid", err)
			}
		})
	}
	t.Run("unknown fields ignored", func(t *testing.T) {
		b := []byte(strings.Replace(string(good), `{`, `{"futureField":{"x":1},`, 1))
		if _, err := ParseConfig(b); err != nil {
			t.Fatalf("ParseConfig: %v", err)
		}
	})
}

func TestSupportsAgent(t *testing.T) {
	tests := []struct {
		min, agent string
		want       bool
		err        bool
	}{
		{"", "0.0.1", true, false},
		{"0.3.0", "0.3.0", true, false},
		{"v0.3.0", "0.2.9", false, false},
		{"0.3.0", "v1.0.0", true, false},
		{"1.0.0", "1.0.0-rc.1", false, false},
		{"1.0.0-rc.2", "1.0.0-rc.10", true, false},
		{"1.0.0-alpha", "1.0.0-alpha.1", true, false},
		{"1.0.0-beta", "1.0.0-alpha.beta", false, false},
		{"1.0.0", "1.0.0+build.7", true, false},
		{"1.0.0", "dev", false, true},
		{"1.0.0", "1.02.0", false, true},
	}
	for _, tt := range tests {
		c := &Config{MinAgentVersion: tt.min}
		got, err := c.SupportsAgent(tt.agent)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("min %q agent %q: got %v, %v; want %v (error %v)", tt.min, tt.agent, got, err, tt.want, tt.err)
		}
	}
}

func TestBytesLayout(t *testing.T) {
	els := [][]byte{[]byte("cat"), {}, []byte("dog!")}
	b := JoinBytes(els)
	if len(b) != 4*3+7 {
		t.Fatalf("JoinBytes length %d", len(b))
	}
	got, err := SplitBytes(b)
	if err != nil || len(got) != 3 || string(got[0]) != "cat" || len(got[1]) != 0 || string(got[2]) != "dog!" {
		t.Fatalf("SplitBytes = %q, %v", got, err)
	}
	if _, err := SplitBytes(b[:len(b)-1]); err == nil {
		t.Error("SplitBytes accepted a truncated element")
	}
	g := GoldenTensor{Name: "s", Datatype: "BYTES", Shape: []int64{2}, Data: b}
	if err := g.Validate(); err == nil || !strings.Contains(err.Error(), "needs 2 BYTES elements, data holds 3") {
		t.Errorf("Validate = %v", err)
	}
}
