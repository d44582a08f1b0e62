package quantmath

import "math"

// SQNR returns the signal-to-quantization-noise ratio in decibels of got
// against the reference ref: 10*log10(sum(ref²)/sum((ref-got)²)). Identical
// slices give +Inf; a zero reference with nonzero error gives -Inf. The
// slices must have the same length.
func SQNR(ref, got []float32) float64 {
	var sig, noise float64
	for i, r := range ref {
		d := float64(r) - float64(got[i])
		sig += float64(r) * float64(r)
		noise += d * d
	}
	switch {
	case noise == 0:
		return math.Inf(1)
	case sig == 0:
		return math.Inf(-1)
	}
	return 10 * math.Log10(sig/noise)
}

// Cosine returns the cosine similarity of a and b. Two zero vectors are
// identical (1); one zero vector against a nonzero one gives 0.
func Cosine(a, b []float32) float64 {
	var dot, na, nb float64
	for i, x := range a {
		y := float64(b[i])
		dot += float64(x) * y
		na += float64(x) * float64(x)
		nb += y * y
	}
	switch {
	case na == 0 && nb == 0:
		return 1
	case na == 0 || nb == 0:
		return 0
	}
	return dot / math.Sqrt(na*nb)
}
