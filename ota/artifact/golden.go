package artifact

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
)

// Compare checks computed output data got (same datatype and shape as want,
// little-endian raw bytes; Triton layout for BYTES) against the expected
// tensor within tol. Floating-point elements pass when |g−w| ≤ Abs + Rel·|w|;
// NaN matches only NaN and an infinity only the same infinity. Integer
// elements use the same bound; BOOL and BYTES must be equal. The error names
// the first mismatching element and the number of mismatches.
func (tol Tolerance) Compare(want *GoldenTensor, got []byte) error {
	if err := want.Validate(); err != nil {
		return err
	}
	if want.Datatype == "BYTES" || want.Datatype == "BOOL" {
		if !bytes.Equal(want.Data, got) {
			return fmt.Errorf("output %q: %s data differs from the golden vector", want.Name, want.Datatype)
		}
		return nil
	}
	size := dtypeSizes[want.Datatype]
	if len(got) != len(want.Data) {
		return fmt.Errorf("output %q: %d bytes, golden vector has %d", want.Name, len(got), len(want.Data))
	}
	bad, first := 0, -1
	var fw, fg float64
	for i := 0; i < len(got)/size; i++ {
		w := decodeElement(want.Datatype, want.Data[i*size:])
		g := decodeElement(want.Datatype, got[i*size:])
		if !within(w, g, tol) {
			if first < 0 {
				first, fw, fg = i, w, g
			}
			bad++
		}
	}
	if bad > 0 {
		return fmt.Errorf("output %q: %d of %d elements outside tolerance (abs %g, rel %g); first at index %d: got %g, want %g",
			want.Name, bad, len(got)/size, tol.Abs, tol.Rel, first, fg, fw)
	}
	return nil
}

func within(w, g float64, tol Tolerance) bool {
	switch {
	case math.IsNaN(w) || math.IsNaN(g):
		return math.IsNaN(w) && math.IsNaN(g)
	case math.IsInf(w, 0) || math.IsInf(g, 0):
		return w == g
	}
	return math.Abs(g-w) <= tol.Abs+tol.Rel*math.Abs(w)
}

// decodeElement reads one element of a fixed-size numeric datatype as float64.
func decodeElement(dt string, b []byte) float64 {
	le := binary.LittleEndian
	switch dt {
	case "UINT8":
		return float64(b[0])
	case "UINT16":
		return float64(le.Uint16(b))
	case "UINT32":
		return float64(le.Uint32(b))
	case "UINT64":
		return float64(le.Uint64(b))
	case "INT8":
		return float64(int8(b[0]))
	case "INT16":
		return float64(int16(le.Uint16(b)))
	case "INT32":
		return float64(int32(le.Uint32(b)))
	case "INT64":
		return float64(int64(le.Uint64(b)))
	case "FP16":
		return float64(HalfToFloat32(le.Uint16(b)))
	case "BF16":
		return float64(math.Float32frombits(uint32(le.Uint16(b)) << 16))
	case "FP32":
		return float64(math.Float32frombits(le.Uint32(b)))
	case "FP64":
		return math.Float64frombits(le.Uint64(b))
	}
	panic("artifact: decodeElement: unsupported datatype " + dt)
}

// HalfToFloat32 converts an IEEE 754 binary16 value to float32 exactly.
func HalfToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // Inf or NaN
		return math.Float32frombits(sign | 0xff<<23 | frac<<13)
	case exp == 0 && frac == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal: normalise
		e := uint32(127 - 15 + 1)
		for frac&0x400 == 0 {
			frac <<= 1
			e--
		}
		return math.Float32frombits(sign | e<<23 | (frac&0x3ff)<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | frac<<13)
}
