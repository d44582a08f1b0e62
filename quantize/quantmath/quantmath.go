// Package quantmath holds the arithmetic of linear quantization exactly as
// onnxruntime's Python quantization tool computes it
// (onnxruntime/python/tools/quantization/quant_utils.py).
//
// # Basics
//
// A real value r is represented by an integer q through r = scale*(q-zp).
// ComputeScaleZP derives scale and zero point from a real range and an integer
// range; Quantize maps real values to integers with those parameters.
//
// The details that make results bit-identical to onnxruntime's tool:
//
//   - the real range is widened to include 0 (so 0 is exactly representable);
//   - a symmetric range is [-max(|rmin|,|rmax|), +max(|rmin|,|rmax|)], and
//     symmetric int8 uses the integer range [-127, 127];
//   - the range difference rmax-rmin is computed in float32, the scale as
//     float64 (rmax-rmin)/(qmax-qmin), and then stored as float32;
//   - a scale below the smallest normal float32 becomes 1 with zero point 0;
//   - the zero point is round-half-to-even(qmin - rmin/scale), computed in
//     float64, and clipped to [qmin, qmax];
//   - a value is quantized as clip(round-half-to-even(x/scale) + zp), with
//     x/scale computed in float32; weights are clipped to the symmetric range
//     of their type ([-127, 127] for int8), as the tool does;
//   - a bias is quantized to int32 with scale inputScale*weightScale*beta
//     (a float32 product) and zero point 0.
//
// # Caveats
//
// Only the integer types ONNX's QuantizeLinear accepts for 8- and 16-bit
// quantization are covered (INT8, UINT8, INT16, UINT16).
package quantmath

import (
	"errors"
	"fmt"
	"math"
)

// Type is an integer quantization type.
type Type int

// The quantization types. The values are ONNX TensorProto data types.
const (
	Uint8  Type = 2
	Int8   Type = 3
	Uint16 Type = 4
	Int16  Type = 5
)

// String returns the ONNX name of t.
func (t Type) String() string {
	switch t {
	case Uint8:
		return "UINT8"
	case Int8:
		return "INT8"
	case Uint16:
		return "UINT16"
	case Int16:
		return "INT16"
	}
	return fmt.Sprintf("Type(%d)", int(t))
}

// Valid reports whether t is a supported quantization type.
func (t Type) Valid() bool { return t == Uint8 || t == Int8 || t == Uint16 || t == Int16 }

// Signed reports whether t is a signed integer type.
func (t Type) Signed() bool { return t == Int8 || t == Int16 }

// ErrType is returned for a type that is not a supported quantization type.
var ErrType = errors.New("unsupported quantization type")

// ErrRange is returned for an integer range that does not contain 0.
var ErrRange = errors.New("invalid quantization range")

// Range returns the integer range [qmin, qmax] used for t, following
// get_qmin_qmax_for_qType: the reduced range when reduceRange is set (uint8
// [0,127], int8 [-64,64], uint16 [0,32767], int16 [-16384,16384]), else the
// symmetric range for signed types when symmetric is set (int8 [-127,127],
// int16 [-32767,32767]), else the full range of the type.
func Range(t Type, reduceRange, symmetric bool) (qmin, qmax int32, err error) {
	switch {
	case reduceRange:
		switch t {
		case Uint8:
			return 0, 127, nil
		case Int8:
			return -64, 64, nil
		case Uint16:
			return 0, 32767, nil
		case Int16:
			return -16384, 16384, nil
		}
	case symmetric && t == Int8:
		return -127, 127, nil
	case symmetric && t == Int16:
		return -32767, 32767, nil
	default:
		switch t {
		case Uint8:
			return 0, 255, nil
		case Int8:
			return -128, 127, nil
		case Uint16:
			return 0, 65535, nil
		case Int16:
			return -32768, 32767, nil
		}
	}
	return 0, 0, fmt.Errorf("%w: %v", ErrType, t)
}

// tinyFloat32 is numpy.finfo(numpy.float32).tiny, the smallest normal float32.
const tinyFloat32 = 1.1754943508222875e-38

// ComputeScaleZP returns the zero point and scale for the real range
// [rmin, rmax] and the integer range [qmin, qmax], as compute_scale_zp does.
// minRealRange, when positive, is the smallest range rmax-rmin enforced
// (the tool's MinimumRealRange option); 0 disables it.
func ComputeScaleZP(rmin, rmax float32, qmin, qmax int32, symmetric bool, minRealRange float32) (zp int32, scale float32, err error) {
	if qmin > 0 || qmax < 0 || qmin > qmax {
		return 0, 0, fmt.Errorf("%w: qmin %d, qmax %d must satisfy qmin <= 0 <= qmax", ErrRange, qmin, qmax)
	}
	if isNaN32(rmin) || isNaN32(rmax) || math.IsInf(float64(rmin), 0) || math.IsInf(float64(rmax), 0) {
		return 0, 0, fmt.Errorf("%w: real range [%v, %v] is not finite", ErrRange, rmin, rmax)
	}
	// The range always includes 0, so that 0 is exactly representable.
	rmin = min(rmin, 0)
	rmax = max(rmax, 0)
	if minRealRange > 0 {
		rmax = max(rmax, rmin+minRealRange)
	}
	if symmetric {
		absmax := max(abs32(rmin), abs32(rmax))
		rmin, rmax = -absmax, absmax
	}
	dr := float64(rmax - rmin) // float32 difference, widened
	if math.IsInf(dr, 0) {
		return 0, 0, fmt.Errorf("%w: real range [%v, %v] overflows float32", ErrRange, rmin, rmax)
	}
	dq := float64(qmax) - float64(qmin)
	s := dr / dq
	if s < tinyFloat32 {
		return 0, 1, nil
	}
	z := math.RoundToEven(float64(qmin) - float64(rmin)/s)
	return clampInt32(z, qmin, qmax), float32(s), nil
}

// Quantize returns clip(round-half-to-even(x/scale)+zp, qmin, qmax) for every
// x, computing x/scale in float32 as quantize_nparray does. NaN maps to zp.
func Quantize(x []float32, scale float32, zp, qmin, qmax int32) []int32 {
	q := make([]int32, len(x))
	for i, v := range x {
		q[i] = QuantizeOne(v, scale, zp, qmin, qmax)
	}
	return q
}

// QuantizeOne quantizes a single value; see Quantize.
func QuantizeOne(x, scale float32, zp, qmin, qmax int32) int32 {
	d := x / scale // float32 division, as numpy does for float32 arrays
	if isNaN32(d) {
		return clampInt32(float64(zp), qmin, qmax)
	}
	r := float32(math.RoundToEven(float64(d))) + float32(zp)
	return clampInt32(float64(r), qmin, qmax)
}

// Dequantize returns scale*(q-zp) for every q, in float32.
func Dequantize(q []int32, scale float32, zp int32) []float32 {
	out := make([]float32, len(q))
	for i, v := range q {
		out[i] = float32(v-zp) * scale
	}
	return out
}

// Params are the quantization parameters of one tensor or one channel.
type Params struct {
	// RMin and RMax are the real range the parameters were computed from
	// (before widening to include 0).
	RMin, RMax float32
	Scale      float32
	ZeroPoint  int32
}

// QuantizeData quantizes a weight tensor as quantize_data does: the range is
// the data's min and max (0 for empty data), scale and zero point come from
// ComputeScaleZP with Range(t, reduceRange, symmetric), and the values are
// clipped to the symmetric range of t (the tool always clips weights there).
func QuantizeData(data []float32, t Type, symmetric, reduceRange bool, minRealRange float32) (Params, []int32, error) {
	var p Params
	p.Scale = 1
	if len(data) > 0 {
		p.RMin, p.RMax = data[0], data[0]
		for _, v := range data[1:] {
			if v < p.RMin {
				p.RMin = v
			}
			if v > p.RMax {
				p.RMax = v
			}
		}
		if isNaN32(p.RMin) || isNaN32(p.RMax) || hasNaN(data) {
			return p, nil, fmt.Errorf("%w: data contains NaN", ErrRange)
		}
		qmin, qmax, err := Range(t, reduceRange, symmetric)
		if err != nil {
			return p, nil, err
		}
		p.ZeroPoint, p.Scale, err = ComputeScaleZP(p.RMin, p.RMax, qmin, qmax, symmetric, minRealRange)
		if err != nil {
			return p, nil, err
		}
	} else if !t.Valid() {
		return p, nil, fmt.Errorf("%w: %v", ErrType, t)
	}
	clo, chi, err := Range(t, false, true)
	if err != nil {
		return p, nil, err
	}
	return p, Quantize(data, p.Scale, p.ZeroPoint, clo, chi), nil
}

// QuantizePerChannel quantizes data of the given shape independently along
// axis, as quantize_weight_per_channel does. It returns one Params per
// channel and the quantized values in the original layout.
func QuantizePerChannel(data []float32, shape []int64, axis int, t Type, symmetric, reduceRange bool, minRealRange float32) ([]Params, []int32, error) {
	if axis < 0 {
		axis += len(shape)
	}
	if axis < 0 || axis >= len(shape) {
		return nil, nil, fmt.Errorf("quantmath: axis %d out of range for shape %v", axis, shape)
	}
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	if n != int64(len(data)) {
		return nil, nil, fmt.Errorf("quantmath: shape %v holds %d elements, data has %d", shape, n, len(data))
	}
	outer, inner := int64(1), int64(1)
	for i := 0; i < axis; i++ {
		outer *= shape[i]
	}
	for i := axis + 1; i < len(shape); i++ {
		inner *= shape[i]
	}
	channels := shape[axis]
	params := make([]Params, channels)
	q := make([]int32, len(data))
	buf := make([]float32, 0, outer*inner)
	for c := int64(0); c < channels; c++ {
		buf = buf[:0]
		for o := int64(0); o < outer; o++ {
			base := (o*channels + c) * inner
			buf = append(buf, data[base:base+inner]...)
		}
		p, qc, err := QuantizeData(buf, t, symmetric, reduceRange, minRealRange)
		if err != nil {
			return nil, nil, fmt.Errorf("channel %d: %w", c, err)
		}
		params[c] = p
		k := 0
		for o := int64(0); o < outer; o++ {
			base := (o*channels + c) * inner
			copy(q[base:base+inner], qc[k:k+int(inner)])
			k += int(inner)
		}
	}
	return params, q, nil
}

// BiasScale returns inputScale*weightScale*beta computed in float32.
func BiasScale(inputScale, weightScale, beta float32) float32 {
	return inputScale * weightScale * beta
}

// QuantizeBias quantizes a bias to int32 with zero point 0 and scale
// inputScale*weightScales[c]*beta for channel c (weightScales has one entry
// for a per-tensor weight, or one per bias element). It returns the int32
// values and the bias scales. Values are clipped to the int32 range.
func QuantizeBias(bias []float32, inputScale float32, weightScales []float32, beta float32) ([]int32, []float32, error) {
	if len(weightScales) != 1 && len(weightScales) != len(bias) {
		return nil, nil, fmt.Errorf("quantmath: %d weight scales for a bias of %d elements", len(weightScales), len(bias))
	}
	scales := make([]float32, len(weightScales))
	for i, ws := range weightScales {
		scales[i] = BiasScale(inputScale, ws, beta)
	}
	q := make([]int32, len(bias))
	for i, b := range bias {
		s := scales[0]
		if len(scales) > 1 {
			s = scales[i]
		}
		d := b / s
		if isNaN32(d) {
			q[i] = 0
			continue
		}
		q[i] = clampInt32(math.RoundToEven(float64(d)), math.MinInt32, math.MaxInt32)
	}
	return q, scales, nil
}

func clampInt32(v float64, lo, hi int32) int32 {
	if v <= float64(lo) {
		return lo
	}
	if v >= float64(hi) {
		return hi
	}
	return int32(v)
}

func abs32(v float32) float32 {
	if v < 0 {
		return -v
	}
	return v
}

func isNaN32(v float32) bool { return v != v }

func hasNaN(x []float32) bool {
	for _, v := range x {
		if v != v {
			return true
		}
	}
	return false
}
