package quantmath

import "math"

// Float16 limits used when converting weights, as onnxconverter-common's
// float16 converter (used by onnxruntime's tools) clamps them: magnitudes
// below the smallest positive subnormal half become that subnormal, and
// magnitudes above the largest finite half become that value.
const (
	Float16MinPositive = 5.960464477539063e-08 // 2^-24
	Float16MaxFinite   = 65504.0
)

// Float16Bits returns the IEEE 754 binary16 encoding of f, rounded to
// nearest with ties to even. Overflow gives ±Inf, NaN stays NaN.
func Float16Bits(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int((b >> 23) & 0xff)
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		if e < -10 {
			return sign
		}
		full := mant | 0x800000
		shift := uint(14 - e)
		h := full >> shift
		rem := full & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || rem == half && h&1 == 1 {
			h++
		}
		return sign | uint16(h)
	}
	h := sign | uint16(e<<10) | uint16(mant>>13)
	rem := mant & 0x1fff
	if rem > 0x1000 || rem == 0x1000 && h&1 == 1 {
		h++
	}
	return h
}

// Float16ToFloat32 decodes an IEEE 754 binary16 value.
func Float16ToFloat32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0:
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		// Subnormal: normalise.
		e := uint32(127 - 15 + 1)
		for mant&0x400 == 0 {
			mant <<= 1
			e--
		}
		mant &= 0x3ff
		return math.Float32frombits(sign | e<<23 | mant<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

// ClampFloat16 limits v to what float16 represents without flushing to zero
// or overflowing: nonzero magnitudes are clamped to
// [Float16MinPositive, Float16MaxFinite]. Zero, NaN and Inf pass unchanged.
func ClampFloat16(v float32) float32 {
	a := math.Abs(float64(v))
	switch {
	case v == 0 || v != v || math.IsInf(float64(v), 0):
		return v
	case a < Float16MinPositive:
		return float32(math.Copysign(Float16MinPositive, float64(v)))
	case a > Float16MaxFinite:
		return float32(math.Copysign(Float16MaxFinite, float64(v)))
	}
	return v
}
