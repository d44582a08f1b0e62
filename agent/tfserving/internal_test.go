package tfserving

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/tensor"
)

func TestHalfConversions(t *testing.T) {
	// Every half value survives half → float32 → half.
	for h := range 1 << 16 {
		f := halfToFloat32(uint16(h))
		if f != f { // NaN: stays NaN
			if g := halfToFloat32(float32ToHalf(f)); g == g {
				t.Fatalf("NaN %#04x became %v", h, g)
			}
			continue
		}
		if back := float32ToHalf(f); back != uint16(h) {
			t.Fatalf("half %#04x → %v → %#04x", h, f, back)
		}
	}
	for _, tc := range []struct {
		in   float32
		want uint16
	}{
		{0.1, 0x2e66}, {65504, 0x7bff}, {65520, 0x7c00}, {1e-8, 0}, {-1e-8, 0x8000},
		{5.960464477539063e-08, 0x0001}, {2.9802322387695312e-08, 0}, // ties to even
		{8.940696716308594e-08, 0x0002}, {1 + 1.0/2048, 0x3c00}, {1 + 3.0/2048, 0x3c02},
		{float32(math.Inf(-1)), 0xfc00},
	} {
		if got := float32ToHalf(tc.in); got != tc.want {
			t.Errorf("float32ToHalf(%v) = %#04x, want %#04x", tc.in, got, tc.want)
		}
	}
	for _, tc := range []struct {
		in   float32
		want uint16
	}{{1, 0x3f80}, {-2, 0xc000}, {1 + 1.0/256, 0x3f80}, {1 + 3.0/256, 0x3f82}, {float32(math.Inf(1)), 0x7f80}} {
		if got := float32ToBF16(tc.in); got != tc.want {
			t.Errorf("float32ToBF16(%v) = %#04x, want %#04x", tc.in, got, tc.want)
		}
		if tc.in == float32(int(tc.in)) && bf16ToFloat32(tc.want) != tc.in {
			t.Errorf("bf16ToFloat32(%#04x) = %v, want %v", tc.want, bf16ToFloat32(tc.want), tc.in)
		}
	}
}

func TestAppendDecimal(t *testing.T) {
	for _, tc := range []struct {
		f    float64
		bits int
		want string
	}{
		{1, 32, "1.0"}, {-0.0 * -1, 32, "0.0"}, {0.1, 32, "0.1"}, {float64(float32(0.1)), 32, "0.1"},
		{1e6, 32, "1e+06"}, {123456792, 32, "1.2345679e+08"}, {0.1, 64, "0.1"}, {100, 64, "100.0"},
		{math.NaN(), 64, "NaN"}, {math.Inf(1), 32, "Infinity"}, {math.Inf(-1), 64, "-Infinity"},
	} {
		if got := string(appendDecimal(nil, tc.f, tc.bits)); got != tc.want {
			t.Errorf("appendDecimal(%v, %d) = %s, want %s", tc.f, tc.bits, got, tc.want)
		}
	}
}

func TestParseJSON(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want: compact re-encoding, or "error: substring"
	}{
		{`{"a" : [1, -2.5e3, NaN, -Infinity, Inf], "b": {"c": null}}`, `{"a":[1,-2.5e3,NaN,-Infinity,Inf],"b":{"c":null}}`},
		{` "\u00e9\ud83d\ude00\n\"" `, `"é😀\n\""`},
		{`[true,false,"",{}]`, `[true,false,"",{}]`},
		{`-NaN`, "error: Invalid value"},
		{`01`, "error: root must not be followed"},
		{`1.`, "error: Missing fraction"},
		{`1e`, "error: Missing exponent"},
		{`[1,]`, "error: Invalid value"},
		{`{"a" 1}`, "error: Missing a colon"},
		{`{"a":1,}`, "error: Missing a name"},
		{`"\ud83d"`, "error: surrogate"},
		{"\"\x01\"", "error: Invalid character"},
		{"\"\xff\"", "error: Invalid encoding"},
		{`"abc`, "error: Missing a closing quotation mark"},
		{``, "error: The document is empty"},
	} {
		v, err := parseJSON([]byte(tc.in))
		if want, isErr := strings.CutPrefix(tc.want, "error: "); isErr {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("parseJSON(%q) = %v, want error %q", tc.in, err, want)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseJSON(%q): %v", tc.in, err)
			continue
		}
		if got := string(appendJSONText(nil, &v, 1<<20)); got != tc.want {
			t.Errorf("parseJSON(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

var fuzzSpecs = []models.TensorSpec{
	{Name: "x", DType: tensor.FP32, Shape: []int64{-1, 2}},
	{Name: "s", DType: tensor.Bytes, Shape: []int64{-1}},
	{Name: "h", DType: tensor.FP16, Shape: []int64{-1}},
	{Name: "i", DType: tensor.Int8, Shape: []int64{-1}},
}

// FuzzDecodePredict: any body either fails cleanly or yields tensors whose
// data matches their shape, which encode back without error.
func FuzzDecodePredict(f *testing.F) {
	for _, s := range []string{
		`{"instances":[{"x":[1,2],"s":"a","h":0.5,"i":-1},{"x":[3,NaN],"s":{"b64":"YQ=="},"h":1,"i":2}]}`,
		`{"inputs":{"x":[[1,2]],"s":["a"],"h":[1],"i":[1]}}`,
		`{"signature_name":"serving_default","inputs":{"x":1,"s":"","h":[],"i":[[1]]}}`,
		`{"instances":[[1,2]]}`, `[`, `{"inputs":[[[[[]]]]]}`,
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, body []byte, single bool) {
		specs := fuzzSpecs
		if single {
			specs = specs[:1]
		}
		ts, format, err := decodePredict(body, specs)
		if err != nil {
			return
		}
		for i := range ts {
			if err := ts[i].Validate(); err != nil {
				t.Fatalf("decoded %v: %v", ts[i], err)
			}
			if !slices.ContainsFunc(specs, func(s models.TensorSpec) bool { return s.Name == ts[i].Name && s.DType == ts[i].DType }) {
				t.Fatalf("decoded unknown tensor %q", ts[i].Name)
			}
		}
		if len(ts) != len(specs) {
			t.Fatalf("decoded %d tensors for %d inputs", len(ts), len(specs))
		}
		if _, err := encodePredict(nil, ts, format); err != nil {
			t.Fatalf("encoding decoded tensors: %v", err)
		}
	})
}
