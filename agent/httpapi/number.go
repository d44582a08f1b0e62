package httpapi

import (
	"math"
	"strconv"
	"unsafe"
)

// unsafeString views b as a string without copying. The result must not
// outlive b or be retained; it is only passed to strconv parsers, which copy
// whatever they keep (the input of a NumError).
func unsafeString(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// number is a JSON number scanned in one pass: value = ±mant × 10^exp, exact
// unless trunc is set.
type number struct {
	mant    uint64
	exp     int
	neg     bool
	trunc   bool // a non-zero digit beyond the 19th significant one was dropped
	integer bool // no fraction and no exponent part
}

var pow10f64 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

var pow10f32 = [...]float32{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10}

// float64 returns the correctly rounded value when Clinger's fast path
// applies: an exact mantissa below 2^53 and a power of ten that is exact in
// float64, so one IEEE multiplication or division rounds once.
func (n *number) float64() (float64, bool) {
	if n.trunc || n.mant > 1<<53 {
		return 0, false
	}
	f := float64(n.mant)
	switch {
	case n.mant == 0 || n.exp == 0:
	case n.exp > 0 && n.exp < len(pow10f64):
		f *= pow10f64[n.exp]
	case n.exp < 0 && -n.exp < len(pow10f64):
		f /= pow10f64[-n.exp]
	default:
		return 0, false
	}
	if n.neg {
		f = -f
	}
	return f, true
}

// float32 is the float32 analogue of float64: mantissa below 2^24 and a power
// of ten exact in float32.
func (n *number) float32() (float32, bool) {
	if n.trunc || n.mant > 1<<24 {
		return 0, false
	}
	f := float32(n.mant)
	switch {
	case n.mant == 0 || n.exp == 0:
	case n.exp > 0 && n.exp < len(pow10f32):
		f *= pow10f32[n.exp]
	case n.exp < 0 && -n.exp < len(pow10f32):
		f /= pow10f32[-n.exp]
	default:
		return 0, false
	}
	if n.neg {
		f = -f
	}
	return f, true
}

// smallFloat describes a binary floating-point format narrower than float64.
type smallFloat struct {
	ebits, mbits uint
}

var (
	fmtFP16 = smallFloat{ebits: 5, mbits: 10}
	fmtBF16 = smallFloat{ebits: 8, mbits: 7}
	fmtFP32 = smallFloat{ebits: 8, mbits: 23} // used by tests as an oracle check
)

func (sf smallFloat) inf() uint32  { return (1<<sf.ebits - 1) << sf.mbits }
func (sf smallFloat) sign() uint32 { return 1 << (sf.ebits + sf.mbits) }

// fromFloat64 rounds f to the format with round-half-to-even, handling
// subnormals, overflow to infinity and NaN. tie reports that f lay exactly
// halfway between two representable values (so a caller that got f by
// rounding a longer decimal may have to break the tie from the decimal).
func (sf smallFloat) fromFloat64(f float64) (bits uint32, tie bool) {
	b := math.Float64bits(f)
	var sign uint32
	if b>>63 != 0 {
		sign = sf.sign()
	}
	exp := int(b>>52) & 0x7ff
	frac := b & (1<<52 - 1)
	if exp == 0x7ff {
		if frac != 0 {
			return sign | sf.inf() | 1<<(sf.mbits-1), false
		}
		return sign | sf.inf(), false
	}
	if exp == 0 { // zero or float64 subnormal: far below any small format
		return sign, false
	}
	bias := 1<<(sf.ebits-1) - 1
	e := exp - 1023
	if e > bias {
		return sign | sf.inf(), false
	}
	m := frac | 1<<52
	shift := 52 - int(sf.mbits)
	he := e + bias
	if emin := 1 - bias; e < emin {
		shift += emin - e
		he = 0
	}
	if shift > 63 {
		return sign, false
	}
	q := m >> shift
	r := m & (1<<shift - 1)
	half := uint64(1) << (shift - 1)
	tie = r == half
	if r > half || (tie && q&1 == 1) {
		q++
	}
	if he == 0 {
		// Subnormal; a carry into bit mbits is the smallest normal number,
		// which the same bit pattern encodes.
		return sign | uint32(q), tie
	}
	if q == 1<<(sf.mbits+1) {
		q >>= 1
		he++
	}
	if he >= 1<<sf.ebits-1 {
		return sign | sf.inf(), tie
	}
	return sign | uint32(he)<<sf.mbits | uint32(q)&(1<<sf.mbits-1), tie
}

// toFloat64 converts bits of the format to float64 exactly.
func (sf smallFloat) toFloat64(bits uint32) float64 {
	neg := bits&sf.sign() != 0
	e := int(bits>>sf.mbits) & (1<<sf.ebits - 1)
	m := bits & (1<<sf.mbits - 1)
	bias := 1<<(sf.ebits-1) - 1
	var f float64
	switch {
	case e == 1<<sf.ebits-1:
		if m != 0 {
			return math.NaN()
		}
		f = math.Inf(1)
	case e == 0:
		f = math.Ldexp(float64(m), 1-bias-int(sf.mbits))
	default:
		f = math.Ldexp(float64(m|1<<sf.mbits), e-bias-int(sf.mbits))
	}
	if neg {
		f = -f
	}
	return f
}

// fromDecimal rounds the decimal text tok (whose float64 value is f) to the
// format, correctly: when f sits exactly on a halfway point the decimal may
// lie on either side of it, so the tie is broken from the exact decimal.
func (sf smallFloat) fromDecimal(f float64, tok []byte) uint32 {
	bits, tie := sf.fromFloat64(f)
	if !tie {
		return bits
	}
	c := cmpDecimal(tok, f)
	lo := bits
	if math.Abs(sf.toFloat64(bits)) > math.Abs(f) {
		lo = bits - 1 // bits was rounded up (to even) from the midpoint
	}
	switch {
	case c > 0:
		return lo + 1
	case c < 0:
		return lo
	}
	return bits
}

// cmpDecimal compares the magnitude of the JSON number tok with that of the
// finite non-zero f exactly, in time linear in len(tok) (no big-number
// arithmetic, so a huge token costs no more than scanning it).
func cmpDecimal(tok []byte, f float64) int {
	td, tp := decimalDigits(tok)
	var buf [800]byte
	// 767 significant digits represent any float64 exactly.
	fd, fp := decimalDigits(strconv.AppendFloat(buf[:0], math.Abs(f), 'e', 767, 64))
	switch {
	case len(td) == 0:
		return -1
	case tp != fp:
		if tp > fp {
			return 1
		}
		return -1
	}
	n := min(len(td), len(fd))
	for i := 0; i < n; i++ {
		if td[i] != fd[i] {
			if td[i] > fd[i] {
				return 1
			}
			return -1
		}
	}
	// Trailing zeros were stripped: any remaining digit makes that side larger.
	switch {
	case len(td) > n:
		return 1
	case len(fd) > n:
		return -1
	}
	return 0
}

// decimalDigits normalises a decimal number (JSON or 'e' format) to its
// significant digits, without leading or trailing zeros, and the exponent p
// such that its magnitude is 0.digits × 10^p. The exponent is clamped far
// outside any float range.
func decimalDigits(s []byte) (digits []byte, p int) {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	start := i
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	intPart := s[start:i]
	var frac []byte
	if i < len(s) && s[i] == '.' {
		i++
		fs := i
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		frac = s[fs:i]
	}
	exp := 0
	if i < len(s) && s[i]|0x20 == 'e' {
		i++
		neg := false
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			neg = s[i] == '-'
			i++
		}
		for ; i < len(s) && isDigit(s[i]); i++ {
			if exp < 1e8 {
				exp = exp*10 + int(s[i]-'0')
			}
		}
		if neg {
			exp = -exp
		}
	}
	p = len(intPart) + exp
	// Leading zeros: first in the integer part, then in the fraction.
	k := 0
	for k < len(intPart) && intPart[k] == '0' {
		k++
	}
	p -= k
	intPart = intPart[k:]
	if len(intPart) == 0 {
		k = 0
		for k < len(frac) && frac[k] == '0' {
			k++
		}
		p -= k
		frac = frac[k:]
	}
	digits = make([]byte, 0, len(intPart)+len(frac))
	digits = append(append(digits, intPart...), frac...)
	for len(digits) > 0 && digits[len(digits)-1] == '0' {
		digits = digits[:len(digits)-1]
	}
	return digits, p
}

// appendShortest appends a decimal for bits of the format: integral values
// below 2^24 exactly ("65504", as float32 printing would give), others as the shortest
// decimal that rounds back to bits (at most 5 significant digits for FP16, 4
// for BF16) rather than the longer float32 form (0.1, not 0.099975586).
func (sf smallFloat) appendShortest(dst []byte, bits uint32) []byte {
	f := sf.toFloat64(bits)
	if f == math.Trunc(f) && math.Abs(f) < 1<<24 {
		return strconv.AppendFloat(dst, f, 'f', -1, 64)
	}
	var tmp [32]byte
	for prec := 1; prec < 17; prec++ {
		s := strconv.AppendFloat(tmp[:0], f, 'e', prec-1, 64)
		g, err := strconv.ParseFloat(unsafeString(s), 64)
		if err == nil && sf.fromDecimal(g, s) == bits {
			// g is the float64 nearest a short decimal, so its shortest
			// float64 form is that decimal.
			return strconv.AppendFloat(dst, g, 'g', -1, 64)
		}
	}
	return strconv.AppendFloat(dst, f, 'g', -1, 64)
}

// unsafeBytes views s as a byte slice without copying; the result must not
// be modified.
func unsafeBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}
