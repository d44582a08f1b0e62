// Package quantize converts FP32 ONNX models to INT8 (dynamic or static QDQ)
// and FP16, with the numerics of onnxruntime's Python quantization tool
// (see package quantmath), and controls the accuracy the conversion costs.
//
// # Basics
//
// Dynamic quantizes the weights of MatMul and Gemm nodes whose second input
// is constant (an initializer or a Constant node) to int8 and computes those
// nodes with DynamicQuantizeLinear + MatMulInteger, as onnxruntime's
// quantize_dynamic does. It needs no data.
//
// Static inserts QuantizeLinear/DequantizeLinear pairs (QDQ format) around
// Conv, MatMul, Gemm and the operators onnxruntime's CPU provider fuses with
// them, with int8 symmetric per-channel weights and int32 biases; activation
// ranges are calibrated by running the FP32 model on a calibration set in
// onnxruntime (MinMax, Percentile or Entropy, as calibrate.py computes them).
//
// FP16 converts float tensors and operators to float16, keeping a block list
// of operators in float32 with Casts at the borders.
//
// Sensitivity measures, per quantized node, how far its output drifts from
// FP32 (SQNR and cosine similarity) on calibration data; AccuracyControl
// uses it to move the most sensitive nodes back to float until a metric is
// within a budget.
//
// # Caveats
//
// Static, Sensitivity and AccuracyControl run onnxruntime in-process: call
// InitRuntime first (or let them find the library through
// $EDGEFLEET_ORT_LIB or .deps/). Only the main graph is quantized; nodes
// inside If/Loop/Scan bodies stay in float.
package quantize
