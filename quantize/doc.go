// Package quantize converts FP32 ONNX models to INT8 (dynamic, or static in
// QDQ format) and FP16, with the numerics of onnxruntime's Python
// quantization tool (see package quantmath), and controls the accuracy the
// conversion costs.
//
// # Basics
//
// Dynamic quantizes the weights of MatMul, Gemm and Conv nodes whose weight
// is constant (an initializer or a Constant node, in the main graph or an
// If/Loop body) to int8 and computes those nodes with DynamicQuantizeLinear +
// MatMulInteger/ConvInteger, as onnxruntime's quantize_dynamic does. It
// needs no data and does not run onnxruntime.
//
// Static inserts QuantizeLinear/DequantizeLinear pairs around Conv, MatMul,
// Gemm and the operators onnxruntime's CPU provider fuses with them, with
// int8 symmetric per-channel weights and int32 biases; activation ranges are
// calibrated by running the FP32 model on a calibration set in onnxruntime
// (MinMax, Percentile or Entropy, as calibrate.py computes them).
//
// FP16 converts float tensors and operators to float16, keeping a block
// list of operators in float32 with Casts at the borders.
//
// Sensitivity measures, per quantized node, how far its output drifts from
// FP32 (SQNR and cosine similarity) on calibration data. AccuracyControl
// quantizes, evaluates with a caller's Evaluator (Classification is one)
// and moves the most sensitive nodes back to float until the metric is
// within a budget, or reports the best plan it found.
//
// ReadCSV and ReadTensorDir load calibration and evaluation data; every
// function reports what it did in a Report (JSON-ready, for an artifact's
// config).
//
// Bad input gives errors matchable with errors.Is: ErrNotONNX,
// ErrExternalData, ErrUnsupported, ErrEmptyCalibration, ErrNothingToQuantize,
// ErrInvalidOptions, ErrDataset, ErrRuntime.
//
// # Caveats
//
// Static, FP16, Sensitivity, AccuracyControl and Classification run
// onnxruntime in-process: call InitRuntime first, or let them find the
// library through $EDGEFLEET_ORT_LIB or .deps/. All functions are safe for
// concurrent use.
//
// Static quantizes the main graph only. Models whose default-domain opset
// cannot be raised safely to what the quantized operators need keep their
// opset: Dynamic then emits onnxruntime's com.microsoft contrib operators
// (DynamicQuantizeMatMul, and weight-only DequantizeLinear for Conv), which
// run in onnxruntime but not in other runtimes.
//
// The tests use Debian's libonnx-testdata package (ONNX's backend test
// cases) when it is installed; CI must install it.
package quantize
