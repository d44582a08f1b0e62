package quantize

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/edgefleet/edgefleet/quantize/internal/graph"
	"github.com/edgefleet/edgefleet/quantize/onnxpb"
	"github.com/edgefleet/edgefleet/quantize/quantmath"
)

// Errors returned for bad input. They are wrapped with details; match them
// with errors.Is.
var (
	// ErrNotONNX: the model bytes are not an ONNX model.
	ErrNotONNX = graph.ErrNotONNX
	// ErrExternalData: a tensor's data is in an external file that could not
	// be loaded (set Options.ExternalDataDir to the model's folder).
	ErrExternalData = graph.ErrExternalData
	// ErrUnsupported: the model or an option asks for something the
	// quantizer cannot do (an excluded op type it does not know, an opset
	// that cannot be raised safely, a weight type other than int8/uint8...).
	ErrUnsupported = errors.New("unsupported")
	// ErrEmptyCalibration: static quantization got no calibration batches.
	ErrEmptyCalibration = errors.New("empty calibration set")
	// ErrNothingToQuantize: no node of the model qualifies for quantization.
	ErrNothingToQuantize = errors.New("nothing to quantize")
	// ErrInvalidOptions: an option value is out of range.
	ErrInvalidOptions = errors.New("invalid options")
)

// Type is a quantized element type.
type Type = quantmath.Type

// Quantized element types.
const (
	Int8  = quantmath.Int8
	Uint8 = quantmath.Uint8
)

// CalibrationMethod selects how activation ranges are derived from the
// calibration data (calibrate.py's CalibrationMethod).
type CalibrationMethod int

// Calibration methods.
const (
	// MinMax uses the smallest and largest value seen.
	MinMax CalibrationMethod = iota
	// Percentile cuts the histogram's tails at Options.Percentile.
	Percentile
	// Entropy picks the range minimising the KL divergence between the
	// histogram and its quantized version.
	Entropy
)

// String returns the method's name.
func (c CalibrationMethod) String() string {
	switch c {
	case MinMax:
		return "minmax"
	case Percentile:
		return "percentile"
	case Entropy:
		return "entropy"
	}
	return fmt.Sprintf("CalibrationMethod(%d)", int(c))
}

// ParseCalibrationMethod parses "minmax", "percentile" or "entropy".
func ParseCalibrationMethod(s string) (CalibrationMethod, error) {
	for _, c := range []CalibrationMethod{MinMax, Percentile, Entropy} {
		if c.String() == s {
			return c, nil
		}
	}
	return 0, fmt.Errorf("%w: unknown calibration method %q (want minmax, percentile or entropy)", ErrInvalidOptions, s)
}

// Options control quantization. The zero value gives onnxruntime's defaults
// for each mode, with the differences noted per field.
type Options struct {
	// WeightType is the weights' type: Int8 (default) or Uint8. Int8 weights
	// are symmetric ([-127, 127], zero point 0).
	WeightType Type
	// ActivationType is the type of statically quantized activations:
	// Int8 (default, as quantize_static) or Uint8. Dynamic quantization
	// always uses uint8 activations (DynamicQuantizeLinear). On x86
	// onnxruntime runs QLinearConv on uint8 activations: it rewrites int8
	// QuantizeLinear/DequantizeLinear pairs to uint8, but not those whose
	// value feeds several operators (hard-swish's x·f(x)), and a Conv whose
	// input and output types then differ stays in float. Uint8 avoids that
	// (the Auto recipes use it).
	ActivationType Type
	// ActivationSymmetric makes activation ranges symmetric around 0.
	ActivationSymmetric bool
	// WeightAsymmetric uses the full asymmetric range for weights even when
	// they are int8 (onnxruntime's WeightSymmetric=False).
	WeightAsymmetric bool
	// ReduceRange quantizes weights to 7 bits, for CPUs without VNNI whose
	// u8s8 kernels can saturate.
	ReduceRange bool
	// PerTensor quantizes static weights with one scale per tensor instead
	// of one per output channel (the default here; onnxruntime's default is
	// per-tensor). Dynamic quantization is always per-tensor unless
	// DynamicPerChannel is set.
	PerTensor bool
	// DynamicPerChannel quantizes dynamic MatMul and Gemm weights per
	// output column and, when symmetric (int8), Conv weights per output
	// channel (onnxruntime keeps Conv per tensor); this rescues models
	// whose Conv weights have outlier channels (Silero VAD).
	DynamicPerChannel bool

	// Calibration is the static calibration method (MinMax by default).
	Calibration CalibrationMethod
	// Percentile is the percentile kept by the Percentile method; 0 means
	// 99.999.
	Percentile float64
	// HistogramBins is the number of histogram bins; 0 means calibrate.py's
	// default for the method (2048 for Percentile, 128 for Entropy).
	HistogramBins int
	// QuantizedBins is the Entropy method's number of quantized bins; 0
	// means 128.
	QuantizedBins int
	// CalibrationAsymmetric collects Percentile histograms on signed values
	// (calibrate.py's Percentile default is symmetric: absolute values).
	// Entropy and MinMax are always collected asymmetrically.
	CalibrationAsymmetric bool

	// ExcludeNodes lists node names that stay in float. A node without a
	// name is called OpType_index (its position in the graph), as in Report.
	ExcludeNodes []string
	// ExcludeOpTypes lists operator types that stay in float.
	ExcludeOpTypes []string
	// IncludeOpTypes adds operator types that are kept in float by default
	// (Softmax, LayerNormalization, InstanceNormalization, BatchNormalization)
	// to static quantization.
	IncludeOpTypes []string
	// Nodes, when not empty, restricts quantization to these node names.
	Nodes []string

	// Fold simplifies the float graph before static quantization: a
	// BatchNormalization, or a Mul/Add by a per-channel constant, after a
	// Conv folds into the Conv's weights and bias, and hard-swish spelled
	// x·Clip(x+3,0,6)/6 becomes x·HardSigmoid(x). Fewer float operators
	// between quantized Convs means fewer QuantizeLinear/DequantizeLinear
	// at run time (RESULTS.md: what makes PaddleOCR INT8 faster than FP32).
	Fold bool
	// ConvOnly quantizes statically only the operators with weights (Conv,
	// ConvTranspose, MatMul, Gemm) and those moving 8-bit data unchanged
	// (Reshape, Transpose, pooling, ...): element-wise Add/Mul/Concat stay
	// float, without QuantizeLinear/DequantizeLinear pairs around them
	// that onnxruntime could not fuse.
	ConvOnly bool

	// ORTNames names the values and nodes a conversion adds as
	// onnxruntime's tool does (x_QuantizeLinear_Output, w_scale, ...). By
	// default they get short generated names (q12_s) and added nodes no
	// names, which keeps small models small.
	ORTNames bool

	// StripNodeMetadata drops the nodes' metadata_props from the output
	// (exporter debug information: torch.onnx stores stack traces there,
	// which can outweigh an INT8 model's weights).
	StripNodeMetadata bool

	// ExternalDataDir is the folder external tensor data files are read
	// from (the model file's folder). Empty: external data is an error.
	ExternalDataDir string

	// FP16Block lists operator types FP16 keeps in float32, in addition to
	// DefaultFP16Block.
	FP16Block []string
	// FP16IO converts the model's float32 inputs and outputs to float16 too;
	// by default they stay float32, with Casts inside the graph.
	FP16IO bool

	// Logger receives progress and decisions; nil discards them.
	Logger *slog.Logger
}

// withDefaults returns a copy of o with zero fields set to their defaults.
func (o Options) withDefaults() (Options, error) {
	if o.WeightType == 0 {
		o.WeightType = Int8
	}
	if o.ActivationType == 0 {
		o.ActivationType = Int8
	}
	if o.WeightType != Int8 && o.WeightType != Uint8 {
		return o, fmt.Errorf("%w: weight type %v (want INT8 or UINT8)", ErrUnsupported, o.WeightType)
	}
	if o.ActivationType != Int8 && o.ActivationType != Uint8 {
		return o, fmt.Errorf("%w: activation type %v (want INT8 or UINT8)", ErrUnsupported, o.ActivationType)
	}
	if o.Percentile == 0 {
		o.Percentile = 99.999
	}
	if o.Percentile < 0 || o.Percentile > 100 {
		return o, fmt.Errorf("%w: percentile %v outside [0, 100]", ErrInvalidOptions, o.Percentile)
	}
	if o.HistogramBins == 0 {
		if o.Calibration == Percentile {
			o.HistogramBins = 2048
		} else {
			o.HistogramBins = 128
		}
	}
	if o.QuantizedBins == 0 {
		o.QuantizedBins = 128
	}
	if o.HistogramBins < 1 || o.QuantizedBins < 2 {
		return o, fmt.Errorf("%w: %d histogram bins, %d quantized bins", ErrInvalidOptions, o.HistogramBins, o.QuantizedBins)
	}
	if o.Calibration < MinMax || o.Calibration > Entropy {
		return o, fmt.Errorf("%w: calibration method %v", ErrInvalidOptions, o.Calibration)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

// weightSymmetric reports whether weights use symmetric ranges.
func (o Options) weightSymmetric() bool {
	return o.WeightType == Int8 && !o.WeightAsymmetric
}

// selected reports whether node name of type op passes the node filters.
func (o Options) selected(name, op string) bool {
	if len(o.Nodes) > 0 && !slices.Contains(o.Nodes, name) {
		return false
	}
	if slices.Contains(o.ExcludeNodes, name) || slices.Contains(o.ExcludeOpTypes, op) {
		return false
	}
	return true
}

// finish applies the output-only options to m.
func (o Options) finish(m *onnxpb.ModelProto, rep *Report) {
	if o.StripNodeMetadata {
		if n := graph.StripNodeMetadata(m.Graph); n > 0 {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("stripped %d bytes of node metadata", n))
		}
	}
}
