package artifact

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// ConfigSchemaVersion is the only Config.SchemaVersion this package reads and writes.
const ConfigSchemaVersion = 1

// Config is the artifact's config blob: everything an agent needs to decide
// whether it can run the model and to check it before activation.
type Config struct {
	// SchemaVersion is ConfigSchemaVersion; Marshal fills it in when zero.
	SchemaVersion int `json:"schemaVersion"`
	// Name is the model name: 1–128 characters from [A-Za-z0-9._-],
	// starting with a letter or digit.
	Name string `json:"name"`
	// Version is the model version, a positive decimal integer without
	// leading zeros ("1", "42"). Versions of one model are ordered
	// numerically; agents use that order for rollback protection.
	Version string `json:"version"`
	// Description is free text (at most 4096 bytes); optional.
	Description string `json:"description,omitempty"`
	// Inputs and Outputs describe the model's tensors, in model order.
	Inputs  []TensorSpec `json:"inputs"`
	Outputs []TensorSpec `json:"outputs"`
	// Precision is the numeric precision of the weights.
	Precision Precision `json:"precision"`
	// Quantization describes how a quantized model was made; optional.
	Quantization *Quantization `json:"quantization,omitempty"`
	// ExecutionProviders lists the preferred onnxruntime execution providers
	// in order, lower case ("cuda", "cpu"); empty means the agent's default.
	ExecutionProviders []string `json:"executionProviders,omitempty"`
	// Golden is a test vector the agent runs before activating the model;
	// optional in the format, required by agents that enforce it.
	Golden *Golden `json:"golden,omitempty"`
	// MinAgentVersion is the lowest agent version (semantic version, an
	// optional leading "v") that can serve the model; empty means any.
	MinAgentVersion string `json:"minAgentVersion,omitempty"`
	// Labels are free-form key/value pairs (source, training run, ...).
	Labels map[string]string `json:"labels,omitempty"`
}

// TensorSpec describes one model input or output.
type TensorSpec struct {
	Name string `json:"name"`
	// Datatype is an Open Inference Protocol (KServe v2) data type name:
	// BOOL, UINT8…UINT64, INT8…INT64, FP16, BF16, FP32, FP64 or BYTES.
	Datatype string `json:"datatype"`
	// Shape holds the dimensions; -1 is a dynamic dimension, an empty shape
	// is a scalar.
	Shape []int64 `json:"shape"`
}

// Precision is the numeric precision of a model's weights.
type Precision string

// The precisions a Config may declare.
const (
	PrecisionFP32  Precision = "fp32"
	PrecisionFP16  Precision = "fp16"
	PrecisionBF16  Precision = "bf16"
	PrecisionINT8  Precision = "int8"
	PrecisionUINT8 Precision = "uint8"
	// PrecisionMixed is for models mixing precisions (e.g. INT8 with float
	// fallback nodes).
	PrecisionMixed Precision = "mixed"
)

// Quantization records how a quantized model was produced.
type Quantization struct {
	// Method is "dynamic", "static-qdq" or "fp16".
	Method string `json:"method"`
	// WeightType and ActivationType are data type names (INT8, UINT8, FP16); optional.
	WeightType     string `json:"weightType,omitempty"`
	ActivationType string `json:"activationType,omitempty"`
	// PerChannel reports per-channel weight quantization.
	PerChannel bool `json:"perChannel,omitempty"`
	// Calibration describes static calibration; nil for dynamic quantization.
	Calibration *Calibration `json:"calibration,omitempty"`
	// FloatNodes lists nodes kept in float (accuracy fallback).
	FloatNodes []string `json:"floatNodes,omitempty"`
	// Tool names the quantizer and its version.
	Tool string `json:"tool,omitempty"`
	// Metrics holds evaluation results (e.g. "accuracy", "accuracyDrop").
	Metrics map[string]float64 `json:"metrics,omitempty"`
}

// Calibration describes the data used for static quantization.
type Calibration struct {
	// Method is "minmax", "percentile" or "entropy".
	Method string `json:"method"`
	// Samples is the number of calibration samples; optional.
	Samples int `json:"samples,omitempty"`
	// Percentile is used by the percentile method, in (0, 100].
	Percentile float64 `json:"percentile,omitempty"`
	// Dataset identifies the calibration data (a digest or a name); optional.
	Dataset string `json:"dataset,omitempty"`
}

// Golden is a test vector: running the model on Inputs must give Outputs
// within Tolerance.
type Golden struct {
	// Inputs holds one tensor for every model input.
	Inputs []GoldenTensor `json:"inputs"`
	// Outputs holds expected values for one or more model outputs.
	Outputs   []GoldenTensor `json:"outputs"`
	Tolerance Tolerance      `json:"tolerance"`
}

// GoldenTensor is a concrete tensor value.
type GoldenTensor struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
	// Data holds the elements as little-endian raw bytes, base64 in JSON.
	// BYTES tensors use Triton's binary layout: each element is a 4-byte
	// little-endian length followed by that many bytes.
	Data []byte `json:"data"`
}

// Tolerance bounds the difference between an expected value w and a
// computed value g: |g−w| ≤ Abs + Rel·|w| (numpy.allclose). Both zero
// means exact equality.
type Tolerance struct {
	Abs float64 `json:"abs"`
	Rel float64 `json:"rel"`
}

var (
	reName    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	reVersion = regexp.MustCompile(`^[1-9][0-9]{0,17}$`)
	reEP      = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
)

// dtypeSizes maps Open Inference Protocol data type names to element sizes
// (0 for BYTES).
var dtypeSizes = map[string]int{
	"BOOL": 1, "UINT8": 1, "UINT16": 2, "UINT32": 4, "UINT64": 8,
	"INT8": 1, "INT16": 2, "INT32": 4, "INT64": 8,
	"FP16": 2, "BF16": 2, "FP32": 4, "FP64": 8, "BYTES": 0,
}

// DatatypeSize returns the element size of an Open Inference Protocol data
// type (0 for BYTES) and whether the name is known.
func DatatypeSize(datatype string) (int, bool) {
	n, ok := dtypeSizes[datatype]
	return n, ok
}

const (
	maxRank        = 16
	maxDescription = 4096
	maxTensors     = 1024
)

// problems collects validation findings so that one error lists them all.
type problems []string

func (p *problems) addf(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

func (p problems) err(what string) error {
	if len(p) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s: %s", ErrInvalid, what, strings.Join(p, "; "))
}

// Validate checks c against the spec and returns one error (wrapping
// ErrInvalid) that lists every problem, or nil.
func (c *Config) Validate() error {
	var p problems
	if c.SchemaVersion != ConfigSchemaVersion {
		p.addf("schemaVersion is %d, want %d", c.SchemaVersion, ConfigSchemaVersion)
	}
	if !reName.MatchString(c.Name) {
		p.addf("name %q must be 1-128 characters of [A-Za-z0-9._-] starting with a letter or digit", c.Name)
	}
	if !reVersion.MatchString(c.Version) {
		p.addf("version %q must be a positive decimal integer without leading zeros", c.Version)
	}
	if len(c.Description) > maxDescription {
		p.addf("description is %d bytes, limit %d", len(c.Description), maxDescription)
	}
	inputs := checkSpecs(&p, "inputs", c.Inputs)
	outputs := checkSpecs(&p, "outputs", c.Outputs)
	switch c.Precision {
	case PrecisionFP32, PrecisionFP16, PrecisionBF16, PrecisionINT8, PrecisionUINT8, PrecisionMixed:
	default:
		p.addf("precision %q must be one of fp32, fp16, bf16, int8, uint8, mixed", c.Precision)
	}
	if q := c.Quantization; q != nil {
		checkQuantization(&p, q)
	}
	seen := map[string]bool{}
	for _, ep := range c.ExecutionProviders {
		if !reEP.MatchString(ep) {
			p.addf("execution provider %q must be lower case [a-z0-9_-]", ep)
		}
		if seen[ep] {
			p.addf("execution provider %q listed twice", ep)
		}
		seen[ep] = true
	}
	if g := c.Golden; g != nil {
		checkGolden(&p, g, inputs, outputs)
	}
	if c.MinAgentVersion != "" {
		if _, err := parseSemver(c.MinAgentVersion); err != nil {
			p.addf("minAgentVersion: %v", err)
		}
	}
	for k := range c.Labels {
		if k == "" {
			p.addf("label with an empty key")
		}
	}
	return p.err("config")
}

func checkSpecs(p *problems, what string, specs []TensorSpec) map[string]TensorSpec {
	if len(specs) == 0 {
		p.addf("%s: at least one tensor is required", what)
	}
	if len(specs) > maxTensors {
		p.addf("%s: %d tensors, limit %d", what, len(specs), maxTensors)
	}
	byName := make(map[string]TensorSpec, len(specs))
	for i, s := range specs {
		if s.Name == "" {
			p.addf("%s[%d]: empty name", what, i)
		}
		if _, dup := byName[s.Name]; dup {
			p.addf("%s: name %q used twice", what, s.Name)
		}
		byName[s.Name] = s
		if _, ok := dtypeSizes[s.Datatype]; !ok {
			p.addf("%s %q: unknown datatype %q", what, s.Name, s.Datatype)
		}
		if len(s.Shape) > maxRank {
			p.addf("%s %q: rank %d exceeds %d", what, s.Name, len(s.Shape), maxRank)
		}
		for _, d := range s.Shape {
			if d < -1 {
				p.addf("%s %q: dimension %d (use -1 for dynamic)", what, s.Name, d)
				break
			}
		}
	}
	return byName
}

func checkQuantization(p *problems, q *Quantization) {
	switch q.Method {
	case "dynamic", "static-qdq", "fp16":
	default:
		p.addf("quantization.method %q must be dynamic, static-qdq or fp16", q.Method)
	}
	for _, t := range []string{q.WeightType, q.ActivationType} {
		if _, ok := dtypeSizes[t]; t != "" && !ok {
			p.addf("quantization: unknown datatype %q", t)
		}
	}
	if c := q.Calibration; c != nil {
		switch c.Method {
		case "minmax", "entropy":
		case "percentile":
			if !(c.Percentile > 0 && c.Percentile <= 100) {
				p.addf("quantization.calibration.percentile %v must be in (0, 100]", c.Percentile)
			}
		default:
			p.addf("quantization.calibration.method %q must be minmax, percentile or entropy", c.Method)
		}
		if c.Samples < 0 {
			p.addf("quantization.calibration.samples %d is negative", c.Samples)
		}
	}
	for k, v := range q.Metrics {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			p.addf("quantization.metrics[%q] is not finite", k)
		}
	}
}

func checkGolden(p *problems, g *Golden, inputs, outputs map[string]TensorSpec) {
	tol := g.Tolerance
	if !(tol.Abs >= 0 && tol.Rel >= 0) || math.IsInf(tol.Abs, 0) || math.IsInf(tol.Rel, 0) {
		p.addf("golden.tolerance must be finite and non-negative, got abs=%v rel=%v", tol.Abs, tol.Rel)
	}
	if len(g.Outputs) == 0 {
		p.addf("golden.outputs: at least one expected output is required")
	}
	check := func(what string, ts []GoldenTensor, specs map[string]TensorSpec) {
		seen := map[string]bool{}
		for _, t := range ts {
			if seen[t.Name] {
				p.addf("golden.%s: %q given twice", what, t.Name)
			}
			seen[t.Name] = true
			if err := t.Validate(); err != nil {
				p.addf("golden.%s: %v", what, err)
				continue
			}
			s, ok := specs[t.Name]
			if !ok {
				p.addf("golden.%s: %q is not a model %s", what, t.Name, what)
				continue
			}
			if s.Datatype != t.Datatype {
				p.addf("golden.%s %q: datatype %s, model declares %s", what, t.Name, t.Datatype, s.Datatype)
			}
			if !ShapeMatches(s.Shape, t.Shape) {
				p.addf("golden.%s %q: shape %v does not fit model shape %v", what, t.Name, t.Shape, s.Shape)
			}
		}
		if what == "inputs" {
			for n := range specs {
				if !seen[n] {
					p.addf("golden.inputs: model input %q missing", n)
				}
			}
		}
	}
	check("inputs", g.Inputs, inputs)
	check("outputs", g.Outputs, outputs)
}

// ShapeMatches reports whether a concrete shape fits a declared shape: same
// rank, and equal dimensions wherever the declared one is not -1.
func ShapeMatches(declared, concrete []int64) bool {
	if len(declared) != len(concrete) {
		return false
	}
	for i, d := range declared {
		if d != -1 && d != concrete[i] {
			return false
		}
	}
	return true
}

// NumElements returns the element count of a concrete shape.
func NumElements(shape []int64) (int64, error) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension %d in %v", d, shape)
		}
		if d != 0 && n > math.MaxInt64/d {
			return 0, fmt.Errorf("shape %v overflows", shape)
		}
		n *= d
	}
	return n, nil
}

// Validate checks that Data holds exactly the elements Shape and Datatype call for.
func (t *GoldenTensor) Validate() error {
	if t.Name == "" {
		return fmt.Errorf("tensor with an empty name")
	}
	size, ok := dtypeSizes[t.Datatype]
	if !ok {
		return fmt.Errorf("tensor %q: unknown datatype %q", t.Name, t.Datatype)
	}
	if len(t.Shape) > maxRank {
		return fmt.Errorf("tensor %q: rank %d exceeds %d", t.Name, len(t.Shape), maxRank)
	}
	n, err := NumElements(t.Shape)
	if err != nil {
		return fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	if t.Datatype == "BYTES" {
		els, err := SplitBytes(t.Data)
		if err != nil {
			return fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		if int64(len(els)) != n {
			return fmt.Errorf("tensor %q: shape %v needs %d BYTES elements, data holds %d", t.Name, t.Shape, n, len(els))
		}
		return nil
	}
	if n > math.MaxInt64/int64(size) || int64(len(t.Data)) != n*int64(size) {
		return fmt.Errorf("tensor %q: shape %v of %s needs %d bytes, data holds %d", t.Name, t.Shape, t.Datatype, n*int64(size), len(t.Data))
	}
	return nil
}

// SplitBytes splits BYTES tensor data in Triton's binary layout (4-byte
// little-endian length, then the bytes, per element) into its elements. The
// elements alias b.
func SplitBytes(b []byte) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, fmt.Errorf("BYTES data: %d trailing bytes, need a 4-byte length", len(b))
		}
		n := binary.LittleEndian.Uint32(b)
		b = b[4:]
		if uint64(n) > uint64(len(b)) {
			return nil, fmt.Errorf("BYTES data: element of %d bytes, only %d left", n, len(b))
		}
		out = append(out, b[:n:n])
		b = b[n:]
	}
	return out, nil
}

// JoinBytes encodes elements in Triton's binary BYTES layout (the inverse of SplitBytes).
func JoinBytes(elements [][]byte) []byte {
	var buf bytes.Buffer
	for _, e := range elements {
		var l [4]byte
		binary.LittleEndian.PutUint32(l[:], uint32(len(e)))
		buf.Write(l[:])
		buf.Write(e)
	}
	return buf.Bytes()
}

// VersionNumber returns Version as an integer.
func (c *Config) VersionNumber() (uint64, error) {
	if !reVersion.MatchString(c.Version) {
		return 0, fmt.Errorf("%w: version %q is not a positive decimal integer", ErrInvalid, c.Version)
	}
	return strconv.ParseUint(c.Version, 10, 64)
}

// SupportsAgent reports whether an agent of the given semantic version may
// serve the model (agentVersion ≥ MinAgentVersion).
func (c *Config) SupportsAgent(agentVersion string) (bool, error) {
	if c.MinAgentVersion == "" {
		return true, nil
	}
	cmp, err := CompareVersions(agentVersion, c.MinAgentVersion)
	if err != nil {
		return false, err
	}
	return cmp >= 0, nil
}

// Marshal validates c and returns its canonical JSON encoding (the config
// blob). A zero SchemaVersion is set to ConfigSchemaVersion first.
func (c *Config) Marshal() ([]byte, error) {
	if c.SchemaVersion == 0 {
		c.SchemaVersion = ConfigSchemaVersion
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(c)
}

// ParseConfig decodes and validates a config blob.
func ParseConfig(b []byte) (*Config, error) {
	if len(b) > MaxConfigSize {
		return nil, fmt.Errorf("%w: config is %d bytes, limit %d", ErrInvalid, len(b), MaxConfigSize)
	}
	var c Config
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: config: %v", ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: config: trailing data after the JSON object", ErrInvalid)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}
