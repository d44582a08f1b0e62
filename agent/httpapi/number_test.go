package httpapi

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/tensor"
)

// TestSmallFloatMatchesFloat32 checks the generic narrowing against Go's own
// float64→float32 conversion (correctly rounded, ties to even), using the
// float32 layout.
func TestSmallFloatMatchesFloat32(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	check := func(f float64) {
		got, _ := fmtFP32.fromFloat64(f)
		want := math.Float32bits(float32(f))
		if math.IsNaN(f) {
			if got&0x7fc00000 != 0x7fc00000 {
				t.Fatalf("%v: got %#x, want a quiet NaN", f, got)
			}
			return
		}
		if got != want {
			t.Fatalf("%v (%#x): got %#x, want %#x", f, math.Float64bits(f), got, want)
		}
	}
	for _, f := range []float64{0, math.Copysign(0, -1), 1, -1, math.MaxFloat32, math.SmallestNonzeroFloat32,
		math.SmallestNonzeroFloat32 / 2, math.SmallestNonzeroFloat32 * 0.75, math.Inf(1), math.Inf(-1), math.NaN(),
		math.MaxFloat64, 3.4028235677973366e38, 3.4028235677973362e38, 1e-50} {
		check(f)
	}
	for i := 0; i < 200000; i++ {
		switch i % 3 {
		case 0: // any float64
			check(math.Float64frombits(r.Uint64()))
		case 1: // float32 range, including subnormals
			check(math.Ldexp(r.Float64()+0.5, r.IntN(300)-170) * float64(1-2*r.IntN(2)))
		default: // exact halfway points between float32 neighbours
			a := math.Float32frombits(r.Uint32() & 0x7f7fffff)
			b := math.Nextafter32(a, float32(math.Inf(1)))
			check((float64(a) + float64(b)) / 2)
		}
	}
}

// TestHalfExhaustive round-trips every FP16 and BF16 bit pattern through the
// encoder and the decoder.
func TestHalfExhaustive(t *testing.T) {
	for _, tc := range []struct {
		dt tensor.DType
		sf smallFloat
	}{{tensor.FP16, fmtFP16}, {tensor.BF16, fmtBF16}} {
		t.Run(tc.dt.String(), func(t *testing.T) {
			data := make([]byte, 0, 1<<17)
			for b := 0; b < 1<<16; b++ {
				data = binary.LittleEndian.AppendUint16(data, uint16(b))
			}
			out := encoder{}.appendData(nil, &tensor.Tensor{DType: tc.dt, Data: data})
			s := &scanner{b: out}
			tt := tensor.Tensor{Name: "h", DType: tc.dt, Shape: []int64{1 << 16}}
			info, err := s.data(&tt, &where{kind: "input", name: "h", named: true})
			if err != nil {
				t.Fatal(err)
			}
			if info.count != 1<<16 {
				t.Fatalf("%d elements", info.count)
			}
			maxLen := 0
			for i, tok := range strings.Split(string(out[1:len(out)-1]), ",") {
				maxLen = max(maxLen, len(tok))
				got := binary.LittleEndian.Uint16(tt.Data[2*i:])
				want := uint16(i)
				if math.IsNaN(tc.sf.toFloat64(uint32(want))) {
					if !math.IsNaN(tc.sf.toFloat64(uint32(got))) {
						t.Fatalf("%#04x: NaN came back as %#04x", want, got)
					}
					continue
				}
				if got != want {
					t.Fatalf("%#04x encoded as %s decoded as %#04x", want, tok, got)
				}
			}
			if maxLen > maxElemLen(tc.dt) {
				t.Errorf("longest element %d bytes exceeds the %d bytes budgeted", maxLen, maxElemLen(tc.dt))
			}
		})
	}
}

// exactRound rounds the decimal s to the format by brute force with exact
// rational arithmetic: the oracle for correct rounding.
func exactRound(sf smallFloat, s string) uint32 {
	x, ok := new(big.Rat).SetString(s)
	if !ok {
		panic(s)
	}
	neg := x.Sign() < 0
	x.Abs(x)
	// Finite non-negative values in increasing order are bit patterns 0..inf-1.
	n := int(sf.inf())
	vals := func(i int) *big.Rat { return new(big.Rat).SetFloat64(sf.toFloat64(uint32(i))) }
	i := sort.Search(n, func(i int) bool { return vals(i).Cmp(x) >= 0 })
	var bits uint32
	switch {
	case i == n: // above the largest finite value
		maxv := vals(n - 1)
		// Overflow threshold: max + half an ulp of max (ulp = max - prev).
		ulp := new(big.Rat).Sub(maxv, vals(n-2))
		thr := new(big.Rat).Add(maxv, new(big.Rat).Quo(ulp, big.NewRat(2, 1)))
		if x.Cmp(thr) >= 0 {
			bits = sf.inf()
		} else {
			bits = uint32(n - 1)
		}
	case vals(i).Cmp(x) == 0 || i == 0:
		bits = uint32(i)
	default:
		lo, hi := vals(i-1), vals(i)
		mid := new(big.Rat).Add(lo, hi)
		mid.Quo(mid, big.NewRat(2, 1))
		switch c := x.Cmp(mid); {
		case c < 0:
			bits = uint32(i - 1)
		case c > 0:
			bits = uint32(i)
		case (i-1)%2 == 0:
			bits = uint32(i - 1)
		default:
			bits = uint32(i)
		}
	}
	if neg {
		bits |= sf.sign()
	}
	return bits
}

// TestHalfDecimalRounding checks that decimals round to FP16/BF16 exactly as
// the rational oracle says, including decimals a hair above or below a
// halfway point, which a float64 detour would round twice.
func TestHalfDecimalRounding(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct {
		dt tensor.DType
		sf smallFloat
	}{{tensor.FP16, fmtFP16}, {tensor.BF16, fmtBF16}} {
		t.Run(tc.dt.String(), func(t *testing.T) {
			var inputs []string
			for i := 0; i < 3000; i++ {
				// A halfway point between neighbours, written exactly...
				b := uint32(r.IntN(int(tc.sf.inf()) - 1))
				lo, hi := tc.sf.toFloat64(b), tc.sf.toFloat64(b+1)
				mid := new(big.Rat).Add(new(big.Rat).SetFloat64(lo), new(big.Rat).SetFloat64(hi))
				mid.Quo(mid, big.NewRat(2, 1))
				exact := mid.FloatString(60)
				exact = strings.TrimRight(exact, "0")
				if strings.HasSuffix(exact, ".") {
					exact += "0"
				}
				inputs = append(inputs, exact)
				// ...and nudged by far less than a float64 ulp either way.
				inputs = append(inputs, exact+"00000000000000000000001")
				eps := new(big.Rat).SetFrac64(1, 1)
				eps.Quo(eps, new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(70), nil)))
				inputs = append(inputs, new(big.Rat).Sub(mid, eps).FloatString(80))
				// Random short decimals too.
				inputs = append(inputs, strconv.FormatFloat(math.Ldexp(r.Float64(), r.IntN(40)-30), 'g', 1+r.IntN(8), 64))
			}
			inputs = append(inputs, "65519.99999999999999999999", "65520", "65519", "3.3895313892515355e38", "3.3961775292304e38", "1e-8", "2.98023223876953125e-8", "2.98023223876953125000001e-8")
			for _, in := range inputs {
				for _, s := range []string{in, "-" + in} {
					want := exactRound(tc.sf, s)
					if want&^tc.sf.sign() == tc.sf.inf() {
						continue // out of range: rejected by the decoder, tested elsewhere
					}
					sc := &scanner{b: []byte(s)}
					out, err := sc.element(tc.dt, nil, &where{kind: "input", name: "x", named: true})
					if err != nil {
						t.Fatalf("%s: %v", s, err)
					}
					if got := uint32(binary.LittleEndian.Uint16(out)); got != want {
						t.Fatalf("%s: got %#04x, want %#04x", s, got, want)
					}
				}
			}
		})
	}
}

// randomFloatText writes f in one of several styles a client might use.
func randomFloatText(r *rand.Rand, f float64, bits int) string {
	switch r.IntN(6) {
	case 0:
		return strconv.FormatFloat(f, 'g', -1, bits)
	case 1:
		return strconv.FormatFloat(f, 'e', r.IntN(20), 64)
	case 2:
		return strconv.FormatFloat(f, 'E', -1, 64)
	case 3:
		if math.Abs(f) < 1e30 && math.Abs(f) > 1e-30 {
			return strconv.FormatFloat(f, 'f', r.IntN(40), 64)
		}
		return strconv.FormatFloat(f, 'g', 17, 64)
	case 4: // a long random mantissa with a random exponent
		var sb strings.Builder
		if r.IntN(2) == 0 {
			sb.WriteByte('-')
		}
		sb.WriteByte(byte('1' + r.IntN(9)))
		sb.WriteByte('.')
		for k := r.IntN(30) + 1; k > 0; k-- {
			sb.WriteByte(byte('0' + r.IntN(10)))
		}
		fmt.Fprintf(&sb, "e%d", r.IntN(70)-40)
		return sb.String()
	}
	return strconv.FormatFloat(f, 'g', 1+r.IntN(17), 64)
}

// TestParityWithStrconv decodes random numbers in many notations and checks
// the bits against strconv (which encoding/json uses) and encoding/json
// itself; then checks the encoder's output parses back to the same bits.
func TestParityWithStrconv(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	const n = 20000
	for _, dt := range []tensor.DType{tensor.FP32, tensor.FP64, tensor.Int64, tensor.Uint64} {
		t.Run(dt.String(), func(t *testing.T) {
			toks := make([]string, n)
			for i := range toks {
				switch dt {
				case tensor.FP32:
					f := float64(math.Float32frombits(r.Uint32()))
					if f-f != 0 {
						f = 1.25
					}
					if i%4 == 0 { // short, "human" numbers exercise the fast path
						f = float64(r.IntN(200000)-100000) / math.Pow10(r.IntN(8))
					}
					toks[i] = randomFloatText(r, f, 32)
				case tensor.FP64:
					f := math.Float64frombits(r.Uint64())
					if f-f != 0 {
						f = -0.5
					}
					if i%4 == 0 {
						f = float64(r.Int64N(1<<53)) / math.Pow10(r.IntN(23))
					}
					toks[i] = randomFloatText(r, f, 64)
				case tensor.Int64:
					toks[i] = strconv.FormatInt(int64(r.Uint64()), 10)
				default:
					toks[i] = strconv.FormatUint(r.Uint64()>>r.IntN(64), 10)
				}
			}
			body := fmt.Sprintf(`{"inputs":[{"name":"x","shape":[%d],"datatype":%q,"data":[%s]}]}`, n, dt, strings.Join(toks, ","))
			req, err := decodeJSONRequest([]byte(body))
			if err != nil {
				t.Fatal(err)
			}
			got := req.inputs[0].Data
			var viaJSON struct {
				Inputs []struct {
					Data json.RawMessage
				}
			}
			if err := json.Unmarshal([]byte(body), &viaJSON); err != nil {
				t.Fatal(err)
			}
			switch dt {
			case tensor.FP32:
				var js []float32
				must(t, json.Unmarshal(viaJSON.Inputs[0].Data, &js))
				for i, tok := range toks {
					want, err := strconv.ParseFloat(tok, 32)
					if err != nil {
						continue // out of range: rejected, tested elsewhere
					}
					g := binary.LittleEndian.Uint32(got[4*i:])
					if g != math.Float32bits(float32(want)) || g != math.Float32bits(js[i]) {
						t.Fatalf("%s: got %#x, strconv %#x, encoding/json %#x", tok, g, math.Float32bits(float32(want)), math.Float32bits(js[i]))
					}
				}
			case tensor.FP64:
				var js []float64
				must(t, json.Unmarshal(viaJSON.Inputs[0].Data, &js))
				for i, tok := range toks {
					want, _ := strconv.ParseFloat(tok, 64)
					g := binary.LittleEndian.Uint64(got[8*i:])
					if g != math.Float64bits(want) || g != math.Float64bits(js[i]) {
						t.Fatalf("%s: got %#x, strconv %#x", tok, g, math.Float64bits(want))
					}
				}
			case tensor.Int64:
				var js []int64
				must(t, json.Unmarshal(viaJSON.Inputs[0].Data, &js))
				for i, tok := range toks {
					want, _ := strconv.ParseInt(tok, 10, 64)
					if g := int64(binary.LittleEndian.Uint64(got[8*i:])); g != want || g != js[i] {
						t.Fatalf("%s: got %d, want %d", tok, g, want)
					}
				}
			default:
				var js []uint64
				must(t, json.Unmarshal(viaJSON.Inputs[0].Data, &js))
				for i, tok := range toks {
					want, _ := strconv.ParseUint(tok, 10, 64)
					if g := binary.LittleEndian.Uint64(got[8*i:]); g != want || g != js[i] {
						t.Fatalf("%s: got %d, want %d", tok, g, want)
					}
				}
			}

			// Encode the decoded tensor and parse it back with encoding/json.
			out := encoder{}.appendResponse(nil, &models.InferResponse{ModelName: "m", ModelVersion: "1"}, "",
				[]responseOutput{{t: &req.inputs[0]}})
			var resp struct {
				Outputs []struct {
					Data json.RawMessage
				}
			}
			must(t, json.Unmarshal(out, &resp))
			var back []byte
			switch dt {
			case tensor.FP32:
				var vs []float32
				must(t, json.Unmarshal(resp.Outputs[0].Data, &vs))
				back = f32s(vs...)
			case tensor.FP64:
				var vs []float64
				must(t, json.Unmarshal(resp.Outputs[0].Data, &vs))
				back = f64s(vs...)
			case tensor.Int64:
				var vs []int64
				must(t, json.Unmarshal(resp.Outputs[0].Data, &vs))
				for _, v := range vs {
					back = binary.LittleEndian.AppendUint64(back, uint64(v))
				}
			default:
				var vs []uint64
				must(t, json.Unmarshal(resp.Outputs[0].Data, &vs))
				back = le(vs...)
			}
			if !slices.Equal(back, got) {
				t.Fatal("encoded output does not parse back to the same bits")
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestStringParity checks string escapes against encoding/json both ways.
func TestStringParity(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	alphabet := []rune{'a', 'Z', '"', '\\', '/', '\n', '\t', '\x00', '\x1f', 'é', '€', '😀', '\u2028', 0x7f}
	for i := 0; i < 2000; i++ {
		var sb strings.Builder
		for k := r.IntN(12); k > 0; k-- {
			sb.WriteRune(alphabet[r.IntN(len(alphabet))])
		}
		want := sb.String()
		enc, _ := json.Marshal(want) // escapes <, >, & and U+2028 too
		s := &scanner{b: enc}
		got, err := s.readString()
		if err != nil || string(got) != want {
			t.Fatalf("decoding %s: %q, %v; want %q", enc, got, err, want)
		}
		mine := appendString(nil, want)
		var back string
		if err := json.Unmarshal(mine, &back); err != nil || back != want {
			t.Fatalf("encoding %q: %s parses as %q, %v", want, mine, back, err)
		}
	}
	// Invalid UTF-8 in output becomes U+FFFD, as with encoding/json.
	if got := string(appendStringBytes(nil, []byte("a\xffb"))); got != `"a\ufffdb"` {
		t.Errorf("invalid UTF-8 encoded as %s", got)
	}
	// Lone surrogates decode to U+FFFD, as with encoding/json.
	s := &scanner{b: []byte(`"\ud800x\udc00"`)}
	if got, _ := s.readString(); string(got) != "\ufffdx\ufffd" {
		t.Errorf("lone surrogates decoded as %q", got)
	}
}

func TestPow10Table(t *testing.T) {
	// Entries as published with strconv's table (eisel_lemire.go).
	if got := pow10Table[0]; got != [2]uint64{0x1732C869CD60E453, 0xFA8FD5A0081C0288} {
		t.Errorf("1e-348 = %#x", got)
	}
	if got := pow10Table[-pow10MinExp]; got != [2]uint64{0, 0x8000000000000000} {
		t.Errorf("1e0 = %#x", got)
	}
	if got := pow10Table[-pow10MinExp+1]; got != [2]uint64{0, 0xA000000000000000} {
		t.Errorf("1e1 = %#x", got)
	}
}

// TestEiselLemireParity compares the direct conversion with strconv on
// random 1..19 digit mantissas over the whole exponent range.
func TestEiselLemireParity(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	declined := 0
	for i := 0; i < 300000; i++ {
		man := r.Uint64() >> r.IntN(64)
		for man > 9999999999999999999 {
			man /= 10
		}
		exp := r.IntN(700) - 350
		neg := r.IntN(2) == 0
		s := strconv.FormatUint(man, 10) + "e" + strconv.Itoa(exp)
		if neg {
			s = "-" + s
		}
		if f, ok := eiselLemire64(man, exp, neg); ok {
			want, _ := strconv.ParseFloat(s, 64)
			if math.Float64bits(f) != math.Float64bits(want) {
				t.Fatalf("%s: float64 %v, strconv %v", s, f, want)
			}
		} else {
			declined++
		}
		if f, ok := eiselLemire32(man, exp, neg); ok {
			want, _ := strconv.ParseFloat(s, 32)
			if math.Float32bits(f) != math.Float32bits(float32(want)) {
				t.Fatalf("%s: float32 %v, strconv %v", s, f, want)
			}
		}
	}
	if declined > 300000/2 {
		t.Errorf("declined %d of 300000: the fast path is not doing its job", declined)
	}
}

func TestEightDigits(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	for i := 0; i < 100000; i++ {
		n := r.Uint64N(1e8)
		s := fmt.Sprintf("%08d", n)
		if got, ok := eightDigits([]byte(s), 0); !ok || got != n {
			t.Fatalf("%s: %d %v", s, got, ok)
		}
		// Any non-digit byte makes it decline.
		bad := []byte(s)
		bad[r.IntN(8)] = []byte{'/', ':', '.', 'e', ' ', 0, 0xb0, 0x3a}[r.IntN(8)]
		if _, ok := eightDigits(bad, 0); ok {
			t.Fatalf("%q accepted", bad)
		}
	}
	if _, ok := eightDigits([]byte("1234567"), 0); ok {
		t.Fatal("short input accepted")
	}
}

func TestCmpDecimal(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	for i := 0; i < 20000; i++ {
		f := math.Ldexp(float64(r.Int64N(1<<20)+1), r.IntN(80)-60)
		var tok string
		switch i % 4 {
		case 0:
			tok = strconv.FormatFloat(f, 'f', -1, 64)
		case 1:
			tok = strconv.FormatFloat(f*(1+float64(r.IntN(3)-1)*1e-12), 'e', r.IntN(30), 64)
		case 2:
			tok = "000" + strconv.FormatFloat(f, 'f', 40, 64) + "000"
		default:
			tok = strconv.FormatFloat(f, 'e', -1, 64) + strings.Repeat("0", r.IntN(5))
			tok = strings.Replace(tok, "e", "000e", 1)
		}
		x, ok := new(big.Rat).SetString(tok)
		if !ok {
			t.Fatalf("oracle cannot parse %s", tok)
		}
		want := x.Cmp(new(big.Rat).SetFloat64(f))
		if got := cmpDecimal([]byte(tok), f); got != want {
			t.Fatalf("cmpDecimal(%s, %v) = %d, want %d", tok, f, got, want)
		}
	}
	// A huge token is compared in linear time.
	huge := []byte("1.00048828125" + strings.Repeat("0", 8<<20) + "1")
	if got := cmpDecimal(huge, 1.00048828125); got != 1 {
		t.Errorf("huge token: %d", got)
	}
}
