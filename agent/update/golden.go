package update

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/tensor"
	"github.com/edgefleet/edgefleet/ota/artifact"
)

// DefaultTolerance is the golden-vector tolerance Describe uses when none is
// given: numpy.allclose's defaults tightened for float32 models.
var DefaultTolerance = artifact.Tolerance{Abs: 1e-4, Rel: 1e-3}

// DescribeOptions configure Describe.
type DescribeOptions struct {
	// Name and Version go into the config (both required).
	Name, Version string
	// Precision of the weights; "" means fp32.
	Precision artifact.Precision
	// Inputs are the golden vector's inputs; nil generates them from Seed
	// (dynamic dimensions set to 1).
	Inputs []tensor.Tensor
	// Seed seeds generated inputs.
	Seed uint64
	// NoGolden leaves the golden vector out.
	NoGolden bool
	// Tolerance of the golden vector; nil means DefaultTolerance. A zero
	// Tolerance means an exact match (ota/SPEC.md section 3.1).
	Tolerance *artifact.Tolerance
	// Settings are the session settings the expected outputs are computed
	// with; the zero value is one CPU thread.
	Settings models.Settings
	// Optional config fields.
	Description        string
	ExecutionProviders []string
	MinAgentVersion    string
	Labels             map[string]string
}

// Describe builds the artifact config of an ONNX model: its inputs and
// outputs as onnxruntime reports them and a golden test vector computed by
// running the model on the given (or generated) inputs. onnxruntime must be
// initialised.
func Describe(model []byte, o DescribeOptions) (*artifact.Config, error) {
	ins, outs, err := runtime.Inspect(model)
	if err != nil {
		return nil, fmt.Errorf("not a model onnxruntime can load: %w", err)
	}
	cfg := &artifact.Config{SchemaVersion: artifact.ConfigSchemaVersion, Name: o.Name, Version: o.Version, Description: o.Description,
		Inputs: artifactSpecs(ins), Outputs: artifactSpecs(outs), Precision: o.Precision,
		ExecutionProviders: o.ExecutionProviders, MinAgentVersion: o.MinAgentVersion, Labels: o.Labels}
	if cfg.Precision == "" {
		cfg.Precision = artifact.PrecisionFP32
	}
	if !o.NoGolden {
		inputs := o.Inputs
		if inputs == nil {
			inputs = GenerateInputs(ins, o.Seed)
		}
		sess, err := newSession(model, o.Settings)
		if err != nil {
			return nil, err
		}
		defer sess.Close()
		res, err := sess.Run(inputs, nil)
		if err != nil {
			return nil, fmt.Errorf("running the model on the golden inputs: %w", err)
		}
		g := &artifact.Golden{Tolerance: DefaultTolerance}
		if o.Tolerance != nil {
			g.Tolerance = *o.Tolerance
		}
		for _, t := range inputs {
			g.Inputs = append(g.Inputs, goldenOf(t))
		}
		for _, t := range res.Outputs {
			g.Outputs = append(g.Outputs, goldenOf(t))
		}
		cfg.Golden = g
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func artifactSpecs(in []runtime.IOSpec) []artifact.TensorSpec {
	out := make([]artifact.TensorSpec, len(in))
	for i, s := range in {
		out[i] = artifact.TensorSpec{Name: s.Name, Datatype: s.DType.String(), Shape: s.Shape}
	}
	return out
}

func goldenOf(t tensor.Tensor) artifact.GoldenTensor {
	g := artifact.GoldenTensor{Name: t.Name, Datatype: t.DType.String(), Shape: t.Shape, Data: t.Data}
	if t.DType == tensor.Bytes {
		g.Data = artifact.JoinBytes(t.Strings)
	}
	if g.Shape == nil {
		g.Shape = []int64{}
	}
	return g
}

// GenerateInputs returns deterministic inputs for the specs: dynamic
// dimensions are 1, floats are multiples of 1/8 in [0, 1) (exact in every
// float type), integers 0…9, booleans random, strings "edgefleet-N".
func GenerateInputs(specs []runtime.IOSpec, seed uint64) []tensor.Tensor {
	r := rand.New(rand.NewPCG(seed, 0x6564676566))
	out := make([]tensor.Tensor, len(specs))
	for i, s := range specs {
		t := tensor.Tensor{Name: s.Name, DType: s.DType, Shape: make([]int64, len(s.Shape))}
		for j, d := range s.Shape {
			t.Shape[j] = max(d, 1)
		}
		n := int(t.NumElements())
		if s.DType == tensor.Bytes {
			for k := range n {
				t.Strings = append(t.Strings, fmt.Appendf(nil, "edgefleet-%d", k))
			}
			out[i] = t
			continue
		}
		vals := make([]float64, n)
		for k := range vals {
			switch s.DType {
			case tensor.FP16, tensor.BF16, tensor.FP32, tensor.FP64:
				vals[k] = float64(r.IntN(8)) / 8
			case tensor.Bool:
				vals[k] = float64(r.IntN(2))
			default:
				vals[k] = float64(r.IntN(10))
			}
		}
		t.Data, _ = encodeValues(s.DType, vals) // every generated value fits
		out[i] = t
	}
	return out
}

// ParseInputs reads golden inputs written as an Open Inference Protocol JSON
// request: {"inputs": [{"name": ..., "datatype": ..., "shape": [...],
// "data": [...]}]}; data may be flat or nested, BYTES elements are strings.
func ParseInputs(b []byte) ([]tensor.Tensor, error) {
	var req struct {
		Inputs []struct {
			Name     string          `json:"name"`
			Datatype string          `json:"datatype"`
			Shape    []int64         `json:"shape"`
			Data     json.RawMessage `json:"data"`
		} `json:"inputs"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&req); err != nil {
		return nil, fmt.Errorf("golden inputs: %w", err)
	}
	if len(req.Inputs) == 0 {
		return nil, errors.New(`golden inputs: no "inputs"`)
	}
	var out []tensor.Tensor
	for _, in := range req.Inputs {
		dt, err := tensor.ParseDType(in.Datatype)
		if err != nil {
			return nil, fmt.Errorf("golden input %q: %w", in.Name, err)
		}
		var raw any
		d := json.NewDecoder(bytes.NewReader(in.Data))
		d.UseNumber()
		if err := d.Decode(&raw); err != nil {
			return nil, fmt.Errorf("golden input %q: data: %w", in.Name, err)
		}
		var flat []any
		flatten(raw, &flat)
		t := tensor.Tensor{Name: in.Name, DType: dt, Shape: in.Shape}
		if t.Shape == nil {
			t.Shape = []int64{}
		}
		if dt == tensor.Bytes {
			for _, e := range flat {
				s, ok := e.(string)
				if !ok {
					return nil, fmt.Errorf("golden input %q: BYTES elements must be strings", in.Name)
				}
				t.Strings = append(t.Strings, []byte(s))
			}
		} else {
			vals := make([]float64, len(flat))
			for i, e := range flat {
				switch v := e.(type) {
				case json.Number:
					if vals[i], err = v.Float64(); err != nil {
						return nil, fmt.Errorf("golden input %q: %w", in.Name, err)
					}
				case bool:
					if v {
						vals[i] = 1
					}
				default:
					return nil, fmt.Errorf("golden input %q: element %d is %T, want a number", in.Name, i, e)
				}
			}
			if t.Data, err = encodeValues(dt, vals); err != nil {
				return nil, fmt.Errorf("golden input %q: %w", in.Name, err)
			}
		}
		if err := t.Validate(); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

func flatten(v any, out *[]any) {
	if a, ok := v.([]any); ok {
		for _, e := range a {
			flatten(e, out)
		}
		return
	}
	*out = append(*out, v)
}

// encodeValues writes vals as little-endian elements of dt.
func encodeValues(dt tensor.DType, vals []float64) ([]byte, error) {
	size := dt.Size()
	if size == 0 {
		return nil, fmt.Errorf("cannot encode numbers as %v", dt)
	}
	b := make([]byte, len(vals)*size)
	for i, v := range vals {
		p := b[i*size:]
		integral := v == math.Trunc(v)
		switch dt {
		case tensor.Bool:
			if v != 0 {
				p[0] = 1
			}
		case tensor.Uint8, tensor.Uint16, tensor.Uint32, tensor.Uint64:
			if !integral || v < 0 || v > math.Ldexp(1, 8*size)-1 {
				return nil, fmt.Errorf("%v does not fit %v", v, dt)
			}
			putUint(p, size, uint64(v))
		case tensor.Int8, tensor.Int16, tensor.Int32, tensor.Int64:
			lim := math.Ldexp(1, 8*size-1)
			if !integral || v < -lim || v > lim-1 {
				return nil, fmt.Errorf("%v does not fit %v", v, dt)
			}
			putUint(p, size, uint64(int64(v)))
		case tensor.FP16:
			binary.LittleEndian.PutUint16(p, float32ToHalf(float32(v)))
		case tensor.BF16:
			binary.LittleEndian.PutUint16(p, float32ToBF16(float32(v)))
		case tensor.FP32:
			binary.LittleEndian.PutUint32(p, math.Float32bits(float32(v)))
		case tensor.FP64:
			binary.LittleEndian.PutUint64(p, math.Float64bits(v))
		}
	}
	return b, nil
}

func putUint(p []byte, size int, v uint64) {
	for i := range size {
		p[i] = byte(v >> (8 * i))
	}
}

// float32ToBF16 rounds to the nearest bfloat16, ties to even.
func float32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if f != f { // NaN stays a quiet NaN
		return uint16(b>>16) | 0x40
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

// float32ToHalf rounds to the nearest IEEE 754 half, ties to even.
func float32ToHalf(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23&0xff) - 127 + 15
	mant := b & 0x7fffff
	switch {
	case b&0x7fffffff > 0x7f800000: // NaN
		return sign | 0x7e00
	case exp >= 0x1f: // overflow and Inf
		return sign | 0x7c00
	case exp <= 0: // subnormal or zero
		if exp < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint(14 - exp)
		half := mant >> shift
		rem := mant & (1<<shift - 1)
		mid := uint32(1) << (shift - 1)
		if rem > mid || rem == mid && half&1 == 1 {
			half++
		}
		return sign | uint16(half)
	}
	half := uint32(exp)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || rem == 0x1000 && half&1 == 1 {
		half++ // may carry into the exponent, which is correct rounding
	}
	return sign | uint16(half)
}
