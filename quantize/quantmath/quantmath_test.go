package quantmath

import (
	"errors"
	"math"
	"slices"
	"testing"
)

func TestRange(t *testing.T) {
	tests := []struct {
		name       string
		typ        Type
		reduce     bool
		symmetric  bool
		qmin, qmax int32
	}{
		{"uint8", Uint8, false, false, 0, 255},
		{"uint8 symmetric keeps full range", Uint8, false, true, 0, 255},
		{"int8", Int8, false, false, -128, 127},
		{"int8 symmetric", Int8, false, true, -127, 127},
		{"int8 reduced", Int8, true, true, -64, 64},
		{"uint8 reduced", Uint8, true, false, 0, 127},
		{"int16 symmetric", Int16, false, true, -32767, 32767},
		{"uint16", Uint16, false, false, 0, 65535},
		{"int16 reduced", Int16, true, false, -16384, 16384},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lo, hi, err := Range(tc.typ, tc.reduce, tc.symmetric)
			if err != nil {
				t.Fatal(err)
			}
			if lo != tc.qmin || hi != tc.qmax {
				t.Fatalf("Range = [%d, %d], want [%d, %d]", lo, hi, tc.qmin, tc.qmax)
			}
		})
	}
	if _, _, err := Range(Type(1), false, false); !errors.Is(err, ErrType) {
		t.Fatalf("Range(FLOAT) error = %v, want ErrType", err)
	}
}

func TestComputeScaleZP(t *testing.T) {
	tests := []struct {
		name       string
		rmin, rmax float32
		qmin, qmax int32
		symmetric  bool
		minRange   float32
		zp         int32
		scale      float32
	}{
		// onnxruntime's own unit test cases (test_quant_util.py).
		{"zero range symmetric", 0, 0, -127, 127, true, 0, 0, 1},
		{"inverted range collapses to zero", 1, -1, -127, 127, true, 0, 0, 1},
		// absmax 2, (2-(-2))/254 in float64 then float32.
		{"symmetric int8", -1, 2, -127, 127, true, 0, 0, float32(4.0 / 254.0)},
		// 3/255; zp = round(0 + 1/(3/255)) = 85.
		{"asymmetric uint8", -1, 2, 0, 255, false, 0, 85, float32(3.0 / 255.0)},
		// zp = round(127.5) = 128 (half to even).
		{"uint8 half-even zero point", -1, 1, 0, 255, false, 0, 128, float32(2.0 / 255.0)},
		// zp = round(-128 + 127.5) = round(-0.5) = 0, not -1.
		{"int8 half-even zero point", -1, 1, -128, 127, false, 0, 0, float32(2.0 / 255.0)},
		// The range is widened to include 0: [0.5, 2] -> [0, 2].
		{"positive range includes zero", 0.5, 2, 0, 255, false, 0, 0, float32(2.0 / 255.0)},
		// [-3, -1] -> [-3, 0]: zp = round(0 + 3/(3/255)) = 255.
		{"negative range includes zero", -3, -1, 0, 255, false, 0, 255, float32(3.0 / 255.0)},
		// A minimum real range of 1 widens [0, 0.01] to [0, 1].
		{"minimum real range", 0, 0.01, 0, 255, false, 1, 0, float32(1.0 / 255.0)},
		// Subnormal range: scale below float32 tiny -> 1, 0.
		{"tiny range", -1e-40, 1e-40, -127, 127, true, 0, 0, 1},
		// Symmetric 0.6: dr = float32(1.2000000476837158), /254, to float32.
		{"float32 range difference", -0.6, 0.1, -127, 127, true, 0, 0, float32(float64(float32(1.2000000476837158)) / 254)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			zp, scale, err := ComputeScaleZP(tc.rmin, tc.rmax, tc.qmin, tc.qmax, tc.symmetric, tc.minRange)
			if err != nil {
				t.Fatal(err)
			}
			if zp != tc.zp || scale != tc.scale {
				t.Fatalf("ComputeScaleZP = (%d, %v), want (%d, %v)", zp, scale, tc.zp, tc.scale)
			}
		})
	}
	if got := float32(float64(float32(1.2000000476837158)) / 254); got != 0.004724409431219101 {
		t.Fatalf("hand-computed scale = %v", got)
	}
}

func TestComputeScaleZPErrors(t *testing.T) {
	tests := []struct {
		name       string
		rmin, rmax float32
		qmin, qmax int32
	}{
		{"qmin above zero", -1, 1, 1, 255},
		{"qmax below zero", -1, 1, -128, -1},
		{"NaN range", float32(math.NaN()), 1, 0, 255},
		{"infinite range", float32(math.Inf(-1)), 1, 0, 255},
		{"overflowing difference", -3e38, 3e38, 0, 255},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := ComputeScaleZP(tc.rmin, tc.rmax, tc.qmin, tc.qmax, false, 0); !errors.Is(err, ErrRange) {
				t.Fatalf("error = %v, want ErrRange", err)
			}
		})
	}
}

func TestQuantize(t *testing.T) {
	tests := []struct {
		name       string
		x          []float32
		scale      float32
		zp         int32
		qmin, qmax int32
		want       []int32
	}{
		{
			// scale 0.5: x/scale = 0.5, 1.5, -0.5, 2.5, 5.5 round half to even.
			name: "half to even", x: []float32{0.25, 0.75, -0.25, 1.25, 2.75},
			scale: 0.5, zp: 0, qmin: -127, qmax: 127,
			want: []int32{0, 2, 0, 2, 6},
		},
		{
			name: "saturate symmetric int8", x: []float32{100, -100, 63.5, -63.5},
			scale: 0.5, zp: 0, qmin: -127, qmax: 127,
			want: []int32{127, -127, 127, -127},
		},
		{
			name: "uint8 with zero point", x: []float32{-1, 0, 1, 2, -5},
			scale: 0.5, zp: 10, qmin: 0, qmax: 255,
			want: []int32{8, 10, 12, 14, 0},
		},
		{
			// float32(0.3)/float32(0.00472440943) = 63.500004 in float32 -> 64.
			name: "float32 division", x: []float32{-0.6, 0.1, 0.3},
			scale: 0.004724409431219101, zp: 0, qmin: -127, qmax: 127,
			want: []int32{-127, 21, 64},
		},
		{
			name: "NaN maps to zero point", x: []float32{float32(math.NaN())},
			scale: 1, zp: 3, qmin: 0, qmax: 255, want: []int32{3},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Quantize(tc.x, tc.scale, tc.zp, tc.qmin, tc.qmax)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Quantize = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestQuantizeData(t *testing.T) {
	tests := []struct {
		name      string
		data      []float32
		typ       Type
		symmetric bool
		want      Params
		q         []int32
	}{
		{
			name: "int8 symmetric weights", data: []float32{-0.6, 0.1, 0.3}, typ: Int8, symmetric: true,
			want: Params{RMin: -0.6, RMax: 0.3, Scale: 0.004724409431219101, ZeroPoint: 0},
			q:    []int32{-127, 21, 64},
		},
		{
			// [-1, 2] uint8: scale 3/255, zp 85; 2/(3/255) = 170 -> 255.
			name: "uint8 asymmetric weights", data: []float32{-1, 0, 2}, typ: Uint8,
			want: Params{RMin: -1, RMax: 2, Scale: float32(3.0 / 255.0), ZeroPoint: 85},
			q:    []int32{0, 85, 255},
		},
		{
			// Asymmetric int8 still clips values to [-127, 127] as the tool does:
			// [-1, 1] gives scale 2/255, zp 0 and -1/scale = -127.5 -> -128 -> -127.
			name: "int8 asymmetric clips to symmetric range", data: []float32{-1, 1}, typ: Int8,
			want: Params{RMin: -1, RMax: 1, Scale: float32(2.0 / 255.0), ZeroPoint: 0},
			q:    []int32{-127, 127},
		},
		{
			name: "empty", data: nil, typ: Int8, symmetric: true,
			want: Params{Scale: 1}, q: []int32{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, q, err := QuantizeData(tc.data, tc.typ, tc.symmetric, false, 0)
			if err != nil {
				t.Fatal(err)
			}
			if p != tc.want {
				t.Fatalf("params = %+v, want %+v", p, tc.want)
			}
			if !slices.Equal(q, tc.q) {
				t.Fatalf("q = %v, want %v", q, tc.q)
			}
		})
	}
	if _, _, err := QuantizeData([]float32{1, float32(math.NaN())}, Int8, true, false, 0); !errors.Is(err, ErrRange) {
		t.Fatalf("NaN data error = %v, want ErrRange", err)
	}
}

func TestQuantizePerChannel(t *testing.T) {
	// Shape [2, 3] quantized along axis 0 and axis 1, int8 symmetric.
	data := []float32{
		-1.27, 0.5, 1.0,
		2.54, -0.01, 0,
	}
	t.Run("axis 0", func(t *testing.T) {
		ps, q, err := QuantizePerChannel(data, []int64{2, 3}, 0, Int8, true, false, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) != 2 {
			t.Fatalf("%d channels, want 2", len(ps))
		}
		// Row 0 absmax 1.27: scale float32(float64(float32(2.54))/254).
		s0 := float32(float64(float32(1.27)+float32(1.27)) / 254)
		s1 := float32(float64(float32(2.54)+float32(2.54)) / 254)
		if ps[0].Scale != s0 || ps[1].Scale != s1 {
			t.Fatalf("scales = %v, %v; want %v, %v", ps[0].Scale, ps[1].Scale, s0, s1)
		}
		// 0.5/0.01 = 50, 1/0.01 = 100; -0.01/0.02 = -0.5 -> 0.
		want := []int32{-127, 50, 100, 127, 0, 0}
		if !slices.Equal(q, want) {
			t.Fatalf("q = %v, want %v", q, want)
		}
	})
	t.Run("axis 1", func(t *testing.T) {
		ps, q, err := QuantizePerChannel(data, []int64{2, 3}, -1, Int8, true, false, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) != 3 {
			t.Fatalf("%d channels, want 3", len(ps))
		}
		// Column 0 absmax 2.54 (scale 0.02): -1.27 -> -63.5 -> -64; 2.54 -> 127.
		if q[0] != -64 || q[3] != 127 {
			t.Fatalf("column 0 = %d, %d; want -64, 127", q[0], q[3])
		}
		// Column 2 is [1, 0]: 1 -> 127, 0 -> 0.
		if q[2] != 127 || q[5] != 0 {
			t.Fatalf("column 2 = %d, %d; want 127, 0", q[2], q[5])
		}
	})
	if _, _, err := QuantizePerChannel(data, []int64{3, 2}, 0, Int8, true, false, 0); err != nil {
		t.Fatalf("reshaped data: %v", err)
	}
	if _, _, err := QuantizePerChannel(data, []int64{5}, 0, Int8, true, false, 0); err == nil {
		t.Fatal("shape/data mismatch accepted")
	}
	if _, _, err := QuantizePerChannel(data, []int64{2, 3}, 2, Int8, true, false, 0); err == nil {
		t.Fatal("out-of-range axis accepted")
	}
}

func TestQuantizeBias(t *testing.T) {
	// input scale 0.5, weight scale 0.25 -> bias scale 0.125.
	q, scales, err := QuantizeBias([]float32{1, -0.0625, 0.1875, 1e12}, 0.5, []float32{0.25}, 1)
	if err != nil {
		t.Fatal(err)
	}
	// 8, -0.5 -> 0 (half even), 1.5 -> 2, saturated.
	if want := []int32{8, 0, 2, math.MaxInt32}; !slices.Equal(q, want) {
		t.Fatalf("q = %v, want %v", q, want)
	}
	if len(scales) != 1 || scales[0] != 0.125 {
		t.Fatalf("scales = %v, want [0.125]", scales)
	}
	// Per channel with beta 2: scales 0.5*[0.25, 1]*2 = [0.25, 1].
	q, scales, err = QuantizeBias([]float32{1, 3.5}, 0.5, []float32{0.25, 1}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(q, []int32{4, 4}) || !slices.Equal(scales, []float32{0.25, 1}) {
		t.Fatalf("per channel = %v %v, want [4 4] [0.25 1]", q, scales)
	}
	if _, _, err := QuantizeBias([]float32{1, 2, 3}, 1, []float32{1, 1}, 1); err == nil {
		t.Fatal("mismatched scales accepted")
	}
}

func TestDequantizeRoundTrip(t *testing.T) {
	x := []float32{-1, -0.5, 0, 0.25, 1}
	zp, scale, err := ComputeScaleZP(-1, 1, 0, 255, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	back := Dequantize(Quantize(x, scale, zp, 0, 255), scale, zp)
	for i := range x {
		if d := math.Abs(float64(back[i] - x[i])); d > float64(scale)/2+1e-7 {
			t.Fatalf("x[%d]=%v came back as %v (error %v > scale/2)", i, x[i], back[i], d)
		}
	}
}

func TestFloat16(t *testing.T) {
	tests := []struct {
		name string
		in   float32
		bits uint16
	}{
		{"one", 1, 0x3c00},
		{"minus two", -2, 0xc000},
		{"max finite", 65504, 0x7bff},
		{"overflow to inf", 65520, 0x7c00},
		{"just below overflow rounds down", 65519, 0x7bff},
		{"smallest subnormal", 5.960464477539063e-08, 0x0001},
		{"half of smallest subnormal ties to zero", 2.9802322387695312e-08, 0x0000},
		{"smallest normal", 6.103515625e-05, 0x0400},
		{"tie to even down", 1 + 1.0/2048, 0x3c00},
		{"tie to even up", 1 + 3.0/2048, 0x3c02},
		{"third", 1.0 / 3, 0x3555},
		{"inf", float32(math.Inf(1)), 0x7c00},
		{"negative zero", float32(math.Copysign(0, -1)), 0x8000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Float16Bits(tc.in); got != tc.bits {
				t.Fatalf("Float16Bits(%v) = %#04x, want %#04x", tc.in, got, tc.bits)
			}
		})
	}
	if h := Float16Bits(float32(math.NaN())); h&0x7c00 != 0x7c00 || h&0x3ff == 0 {
		t.Fatalf("NaN encoded as %#04x", h)
	}
	// Every finite half round-trips through float32.
	for h := uint32(0); h < 0x10000; h++ {
		if h&0x7c00 == 0x7c00 {
			continue
		}
		f := Float16ToFloat32(uint16(h))
		if got := Float16Bits(f); got != uint16(h) {
			t.Fatalf("half %#04x -> %v -> %#04x", h, f, got)
		}
	}
	clamps := []struct{ in, want float32 }{
		{1e-9, Float16MinPositive}, {-1e-9, -Float16MinPositive}, {1e6, Float16MaxFinite},
		{-1e6, -Float16MaxFinite}, {0, 0}, {0.5, 0.5},
	}
	for _, c := range clamps {
		if got := ClampFloat16(c.in); got != c.want {
			t.Fatalf("ClampFloat16(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestSQNRAndCosine(t *testing.T) {
	ref := []float32{3, 4}
	if got := SQNR(ref, ref); !math.IsInf(got, 1) {
		t.Fatalf("SQNR identical = %v, want +Inf", got)
	}
	// signal 25, noise 0.25 -> 10*log10(100) = 20 dB.
	if got := SQNR(ref, []float32{3.5, 4}); math.Abs(got-20) > 1e-9 {
		t.Fatalf("SQNR = %v, want 20", got)
	}
	if got := SQNR([]float32{0, 0}, []float32{1, 0}); !math.IsInf(got, -1) {
		t.Fatalf("SQNR zero reference = %v, want -Inf", got)
	}
	if got := Cosine(ref, []float32{6, 8}); math.Abs(got-1) > 1e-12 {
		t.Fatalf("Cosine parallel = %v, want 1", got)
	}
	if got := Cosine([]float32{1, 0}, []float32{0, 1}); got != 0 {
		t.Fatalf("Cosine orthogonal = %v, want 0", got)
	}
	if got := Cosine([]float32{1, 0}, []float32{-1, 0}); got != -1 {
		t.Fatalf("Cosine opposite = %v, want -1", got)
	}
}
