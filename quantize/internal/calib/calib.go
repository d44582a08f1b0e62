// Package calib computes activation ranges from calibration data the way
// onnxruntime's calibrate.py does (MinMaxCalibrater, PercentileCalibrater,
// EntropyCalibrater), for data that arrives in batches.
//
// calibrate.py builds one histogram over all collected data. Stats does the
// same in two passes over the batches: the first finds each tensor's
// extremes (which fix the histogram's range), the second fills the
// histogram. MinMax needs only the first pass.
package calib

import (
	"errors"
	"fmt"
	"math"
)

// Method is a calibration method.
type Method int

// Calibration methods.
const (
	MinMax Method = iota
	Percentile
	Entropy
)

// Config parameterises a Stats.
type Config struct {
	Method Method
	// Symmetric: MinMax returns [-absmax, absmax]; Percentile histograms
	// absolute values (calibrate.py's Percentile default). Entropy ignores it.
	Symmetric bool
	// Bins is the histogram size (calibrate.py: 2048 for Percentile, 128
	// for Entropy).
	Bins int
	// QuantizedBins is Entropy's number of quantized bins (128).
	QuantizedBins int
	// Percentile is the percentile kept, in (0, 100] (99.999).
	Percentile float64
}

// ErrNoData is returned by Range for a tensor that saw no values.
var ErrNoData = errors.New("no calibration data")

// Stats accumulates the statistics of one tensor.
type Stats struct {
	cfg  Config
	seen bool
	// min, max are the extremes of the values; amin, amax of |values|.
	min, max, amin, amax float32
	// hist spans [lo, hi] in len(hist) equal bins (second pass).
	hist   []int64
	lo, hi float64
	edges  []float64
}

// New returns empty statistics for cfg.
func New(cfg Config) *Stats { return &Stats{cfg: cfg} }

// TwoPass reports whether the method needs a second pass (ObserveHistogram).
func (s *Stats) TwoPass() bool { return s.cfg.Method != MinMax }

// Observe records x in the first pass. NaNs are ignored.
func (s *Stats) Observe(x []float32) {
	for _, v := range x {
		if v != v {
			continue
		}
		a := v
		if a < 0 {
			a = -a
		}
		if !s.seen {
			s.min, s.max, s.amin, s.amax = v, v, a, a
			s.seen = true
			continue
		}
		s.min = min(s.min, v)
		s.max = max(s.max, v)
		s.amin = min(s.amin, a)
		s.amax = max(s.amax, a)
	}
}

// startHistogram fixes the histogram range from the first pass, as
// np.histogram does: absolute values over [min|x|, max|x|] for symmetric
// Percentile, else [-t, t] with t = max(|min|, |max|).
func (s *Stats) startHistogram() {
	var lo, hi float64
	if s.cfg.Method == Percentile && s.cfg.Symmetric {
		lo, hi = float64(s.amin), float64(s.amax)
	} else {
		t := max(math.Abs(float64(s.min)), math.Abs(float64(s.max)))
		lo, hi = -t, t
	}
	if lo == hi { // np.histogram widens an empty range by 0.5 each way
		lo, hi = lo-0.5, hi+0.5
	}
	n := s.cfg.Bins
	s.lo, s.hi = lo, hi
	s.hist = make([]int64, n)
	s.edges = make([]float64, n+1)
	step := (hi - lo) / float64(n)
	for i := range s.edges {
		s.edges[i] = lo + float64(i)*step
	}
	s.edges[n] = hi
}

// ObserveHistogram records x in the second pass.
func (s *Stats) ObserveHistogram(x []float32) {
	if !s.seen {
		return
	}
	if s.hist == nil {
		s.startHistogram()
	}
	abs := s.cfg.Method == Percentile && s.cfg.Symmetric
	n := len(s.hist)
	norm := float64(n) / (s.hi - s.lo)
	for _, v32 := range x {
		if v32 != v32 {
			continue
		}
		v := float64(v32)
		if abs && v < 0 {
			v = -v
		}
		if v < s.lo || v > s.hi {
			continue
		}
		// np.histogram's equal-bin search with its edge corrections.
		i := int((v - s.lo) * norm)
		if i == n {
			i--
		}
		if v < s.edges[i] {
			i--
		} else if i != n-1 && v >= s.edges[i+1] {
			i++
		}
		s.hist[i]++
	}
}

// Range returns the calibrated [lo, hi] range.
func (s *Stats) Range() (lo, hi float32, err error) {
	if !s.seen {
		return 0, 0, ErrNoData
	}
	switch s.cfg.Method {
	case MinMax:
		if s.cfg.Symmetric {
			a := max(-s.min, s.max, s.min, -s.max)
			return -a, a, nil
		}
		return s.min, s.max, nil
	case Percentile:
		if s.hist == nil {
			s.startHistogram()
		}
		return s.percentile()
	case Entropy:
		if s.hist == nil {
			s.startHistogram()
		}
		return s.entropy()
	}
	return 0, 0, fmt.Errorf("calib: unknown method %d", s.cfg.Method)
}

// clip limits a threshold pair to the observed extremes.
func (s *Stats) clip(lo, hi float32) (float32, float32) {
	if lo < s.min {
		lo = s.min
	}
	if hi > s.max {
		hi = s.max
	}
	return lo, hi
}

// cdf returns the cumulative distribution of the histogram.
func (s *Stats) cdf() []float64 {
	var total int64
	for _, c := range s.hist {
		total += c
	}
	cdf := make([]float64, len(s.hist))
	var acc float64
	for i, c := range s.hist {
		acc += float64(c) / float64(total)
		cdf[i] = acc
	}
	return cdf
}

// searchSorted is np.searchsorted(a, v) (side "left"): the first index i
// with a[i] >= v, or len(a).
func searchSorted(a []float64, v float64) int {
	lo, hi := 0, len(a)
	for lo < hi {
		m := (lo + hi) / 2
		if a[m] < v {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

func (s *Stats) percentile() (float32, float32, error) {
	p := s.cfg.Percentile
	if p <= 0 || p > 100 {
		return 0, 0, fmt.Errorf("calib: percentile %v outside (0, 100]", p)
	}
	cdf := s.cdf()
	if s.cfg.Symmetric {
		t := float32(s.edges[searchSorted(cdf, p/100)])
		lo, hi := s.clip(-t, t)
		return lo, hi, nil
	}
	cut := (100 - p) / 200
	lo := float32(s.edges[searchSorted(cdf, cut)])
	hi := float32(s.edges[searchSorted(cdf, 1-cut)])
	lo, hi = s.clip(lo, hi)
	return lo, hi, nil
}

// entropy is get_entropy_threshold: among symmetric windows around the zero
// bin of at least QuantizedBins bins, pick the one whose distribution (with
// outliers folded into its end bins) loses the least information (KL
// divergence) when merged into QuantizedBins bins.
func (s *Stats) entropy() (float32, float32, error) {
	hist := s.hist
	nb := len(hist)
	nq := s.cfg.QuantizedBins
	zero := nb / 2
	half := nq / 2
	if half > zero {
		return 0, 0, fmt.Errorf("calib: %d quantized bins exceed %d histogram bins", nq, nb)
	}
	type cand struct{ lo, hi float64 }
	best, bestKL := cand{}, math.Inf(1)
	for i := half; i <= zero; i++ {
		start := zero - i
		end := min(zero+i+1, nb)
		c := cand{s.edges[start], s.edges[end]}
		sliced := hist[start:end]
		p := make([]float64, len(sliced))
		for j, v := range sliced {
			p[j] = float64(v)
		}
		var left, right int64
		for _, v := range hist[:start] {
			left += v
		}
		for _, v := range hist[end:] {
			right += v
		}
		p[0] += float64(left)
		p[len(p)-1] += float64(right)

		merged := len(sliced) / nq
		qbins := make([]int64, nq)
		for k := 0; k < nq; k++ {
			for _, v := range sliced[k*merged : k*merged+merged] {
				qbins[k] += v
			}
		}
		for _, v := range sliced[nq*merged:] {
			qbins[nq-1] += v
		}
		// Expand back; calibrate.py stores the averages in an int64 array
		// (truncating) and spreads them over every bin of the group.
		q := make([]float64, len(p))
		for k := 0; k < nq; k++ {
			st, en := k*merged, k*merged+merged
			var norm int64
			for _, v := range p[st:en] {
				if v != 0 {
					norm++
				}
			}
			if norm != 0 {
				avg := float64(int64(float64(qbins[k]) / float64(norm)))
				for j := st; j < en; j++ {
					q[j] = avg
				}
			}
		}
		kl := math.Inf(1)
		ps, qs := smooth(p), smooth(q)
		if ps != nil && qs != nil {
			kl = klDivergence(ps, qs)
		}
		if kl < bestKL || math.IsInf(bestKL, 1) && i == half {
			best, bestKL = c, kl
		}
	}
	lo, hi := s.clip(float32(best.lo), float32(best.hi))
	return lo, hi, nil
}

// smooth is smooth_distribution with eps 1e-4: zero bins get eps, taken
// evenly from the nonzero ones. It returns nil for an all-zero or
// unsmoothable distribution.
func smooth(p []float64) []float64 {
	const eps = 0.0001
	var zeros int
	for _, v := range p {
		if v == 0 {
			zeros++
		}
	}
	nonzeros := len(p) - zeros
	if nonzeros == 0 {
		return nil
	}
	eps1 := eps * float64(zeros) / float64(nonzeros)
	if eps1 >= 1 {
		return nil
	}
	out := make([]float64, len(p))
	for i, v := range p {
		if v == 0 {
			out[i] = eps
		} else {
			out[i] = v - eps1
		}
		if out[i] <= 0 {
			return nil
		}
	}
	return out
}

// klDivergence is scipy.stats.entropy(p, q): both are normalised first.
func klDivergence(p, q []float64) float64 {
	var sp, sq float64
	for i := range p {
		sp += p[i]
		sq += q[i]
	}
	var kl float64
	for i := range p {
		pi, qi := p[i]/sp, q[i]/sq
		if pi > 0 {
			kl += pi * math.Log(pi/qi)
		}
	}
	return kl
}
