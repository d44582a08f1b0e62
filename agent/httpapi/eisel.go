package httpapi

import (
	"math"
	"math/big"
	"math/bits"
)

// Eisel-Lemire decimal-to-binary conversion (Lemire, "Number Parsing at a
// Gigabyte per Second", 2021), the algorithm strconv uses. The scanner has
// already split a number into an exact 19-digit mantissa and a decimal
// exponent, so converting here avoids strconv re-reading every digit. The
// functions return ok=false where the result could be ambiguous; callers then
// fall back to strconv, so results always equal strconv's.

const (
	pow10MinExp = -348
	pow10MaxExp = 347
)

// pow10Table[e-pow10MinExp] holds the top 128 bits of 10^e, normalised so
// the most significant bit is set and rounded down: {low 64, high 64}.
var pow10Table = makePow10Table()

func makePow10Table() [pow10MaxExp - pow10MinExp + 1][2]uint64 {
	var t [pow10MaxExp - pow10MinExp + 1][2]uint64
	ten := big.NewInt(10)
	mask := new(big.Int).SetUint64(math.MaxUint64)
	for e := pow10MinExp; e <= pow10MaxExp; e++ {
		var v *big.Int
		if e >= 0 {
			v = new(big.Int).Exp(ten, big.NewInt(int64(e)), nil)
			if n := v.BitLen(); n > 128 {
				v.Rsh(v, uint(n-128))
			} else {
				v.Lsh(v, uint(128-n))
			}
		} else {
			// floor(2^k / 10^-e) with k chosen so the quotient has 128 bits or more.
			d := new(big.Int).Exp(ten, big.NewInt(int64(-e)), nil)
			k := d.BitLen() + 128
			v = new(big.Int).Lsh(big.NewInt(1), uint(k))
			v.Quo(v, d)
			if n := v.BitLen(); n > 128 {
				v.Rsh(v, uint(n-128))
			}
		}
		lo := new(big.Int).And(v, mask).Uint64()
		hi := new(big.Int).Rsh(v, 64).Uint64()
		t[e-pow10MinExp] = [2]uint64{lo, hi}
	}
	return t
}

func eiselLemire64(man uint64, exp10 int, neg bool) (float64, bool) {
	if man == 0 {
		if neg {
			return math.Copysign(0, -1), true
		}
		return 0, true
	}
	if exp10 < pow10MinExp || exp10 > pow10MaxExp {
		return 0, false
	}
	clz := bits.LeadingZeros64(man)
	man <<= uint(clz)
	const bias = 1023
	retExp2 := uint64(217706*exp10>>16+64+bias) - uint64(clz)
	p := &pow10Table[exp10-pow10MinExp]
	xHi, xLo := bits.Mul64(man, p[1])
	if xHi&0x1FF == 0x1FF && xLo+man < man {
		yHi, yLo := bits.Mul64(man, p[0])
		mergedHi, mergedLo := xHi, xLo+yHi
		if mergedLo < xLo {
			mergedHi++
		}
		if mergedHi&0x1FF == 0x1FF && mergedLo+1 == 0 && yLo+man < man {
			return 0, false
		}
		xHi, xLo = mergedHi, mergedLo
	}
	msb := xHi >> 63
	retMantissa := xHi >> (msb + 9)
	retExp2 -= 1 ^ msb
	if xLo == 0 && xHi&0x1FF == 0 && retMantissa&3 == 1 {
		return 0, false
	}
	retMantissa += retMantissa & 1
	retMantissa >>= 1
	if retMantissa>>53 > 0 {
		retMantissa >>= 1
		retExp2++
	}
	if retExp2-1 >= 0x7FF-1 {
		return 0, false
	}
	b := retExp2<<52 | retMantissa&(1<<52-1)
	if neg {
		b |= 1 << 63
	}
	return math.Float64frombits(b), true
}

func eiselLemire32(man uint64, exp10 int, neg bool) (float32, bool) {
	if man == 0 {
		if neg {
			return float32(math.Copysign(0, -1)), true
		}
		return 0, true
	}
	if exp10 < pow10MinExp || exp10 > pow10MaxExp {
		return 0, false
	}
	clz := bits.LeadingZeros64(man)
	man <<= uint(clz)
	const bias = 127
	retExp2 := uint64(217706*exp10>>16+64+bias) - uint64(clz)
	p := &pow10Table[exp10-pow10MinExp]
	xHi, xLo := bits.Mul64(man, p[1])
	if xHi&0x3FFFFFFFFF == 0x3FFFFFFFFF && xLo+man < man {
		yHi, yLo := bits.Mul64(man, p[0])
		mergedHi, mergedLo := xHi, xLo+yHi
		if mergedLo < xLo {
			mergedHi++
		}
		if mergedHi&0x3FFFFFFFFF == 0x3FFFFFFFFF && mergedLo+1 == 0 && yLo+man < man {
			return 0, false
		}
		xHi, xLo = mergedHi, mergedLo
	}
	msb := xHi >> 63
	retMantissa := xHi >> (msb + 38)
	retExp2 -= 1 ^ msb
	if xLo == 0 && xHi&0x3FFFFFFFFF == 0 && retMantissa&3 == 1 {
		return 0, false
	}
	retMantissa += retMantissa & 1
	retMantissa >>= 1
	if retMantissa>>24 > 0 {
		retMantissa >>= 1
		retExp2++
	}
	if retExp2-1 >= 0xFF-1 {
		return 0, false
	}
	b := retExp2<<23 | retMantissa&(1<<23-1)
	if neg {
		b |= 1 << 31
	}
	return math.Float32frombits(uint32(b)), true
}
