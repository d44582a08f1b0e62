package calib

import (
	"errors"
	"math/rand/v2"
	"testing"
)

func collect(cfg Config, batches ...[]float32) (float32, float32, error) {
	s := New(cfg)
	for _, b := range batches {
		s.Observe(b)
	}
	if s.TwoPass() {
		for _, b := range batches {
			s.ObserveHistogram(b)
		}
	}
	return s.Range()
}

func seq(from, n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(from + i)
	}
	return out
}

func TestRanges(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		batches [][]float32
		lo, hi  float32
	}{
		{"minmax", Config{Method: MinMax}, [][]float32{{1, -2}, {3}}, -2, 3},
		{"minmax symmetric", Config{Method: MinMax, Symmetric: true}, [][]float32{{1, -2}, {3}}, -3, 3},
		// |x| over 0..99 in 10 bins of width 9.9: cdf 0.1..1.0; the 85th
		// percentile falls in bin 8, whose left edge is 79.2; the symmetric
		// (-79.2, 79.2) is clipped to the data minimum 0.
		{"percentile symmetric", Config{Method: Percentile, Symmetric: true, Bins: 10, Percentile: 85},
			[][]float32{seq(0, 50), seq(50, 50)}, 0, 79.2},
		// -50..49 over [-50, 50] in 10 bins: cutting 10% per side gives
		// edges 0 (cdf 0.1) and 9 (cdf 0.9 rounds below 0.9 -> index 9).
		{"percentile asymmetric", Config{Method: Percentile, Bins: 10, Percentile: 80},
			[][]float32{seq(-50, 100)}, -50, 40},
		// 128 bins and 128 quantized bins leave one window: the whole
		// histogram, clipped to the data's extremes.
		{"entropy default bins", Config{Method: Entropy, Bins: 128, QuantizedBins: 128},
			[][]float32{{-1, 0.5}, {3, 2}}, -1, 3},
		{"constant data", Config{Method: Percentile, Symmetric: true, Bins: 16, Percentile: 99}, [][]float32{{2, 2, 2}}, 2, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lo, hi, err := collect(tc.cfg, tc.batches...)
			if err != nil {
				t.Fatal(err)
			}
			if lo != tc.lo || hi != tc.hi {
				t.Fatalf("range = [%v, %v], want [%v, %v]", lo, hi, tc.lo, tc.hi)
			}
		})
	}
}

func TestEntropyCutsOutliers(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	data := make([]float32, 20000)
	for i := range data {
		data[i] = float32(r.NormFloat64() * 0.1)
	}
	data[0] = 10 // a lone outlier
	lo, hi, err := collect(Config{Method: Entropy, Bins: 2048, QuantizedBins: 128}, data[:10000], data[10000:])
	if err != nil {
		t.Fatal(err)
	}
	if hi >= 10 || hi < 0.2 || lo > -0.2 {
		t.Fatalf("entropy range [%v, %v]: want the outlier cut and the bulk (|x| < ~0.4) kept", lo, hi)
	}
	mlo, mhi, _ := collect(Config{Method: MinMax}, data)
	if mhi != 10 || mlo > -0.2 {
		t.Fatalf("minmax range [%v, %v]", mlo, mhi)
	}
	plo, phi, err := collect(Config{Method: Percentile, Symmetric: true, Bins: 2048, Percentile: 99.9}, data)
	if err != nil {
		t.Fatal(err)
	}
	if phi >= 1 || plo <= -1 || phi < 0.2 {
		t.Fatalf("percentile range [%v, %v]", plo, phi)
	}
}

func TestNoData(t *testing.T) {
	s := New(Config{Method: MinMax})
	s.Observe([]float32{})
	if _, _, err := s.Range(); !errors.Is(err, ErrNoData) {
		t.Fatalf("error = %v, want ErrNoData", err)
	}
}

func TestHistogramBinning(t *testing.T) {
	// Values on bin edges go right, except the last edge, as np.histogram.
	s := New(Config{Method: Percentile, Bins: 4, Percentile: 100})
	data := []float32{-2, -1, 0, 1, 2}
	s.Observe(data)
	s.ObserveHistogram(data)
	want := []int64{1, 1, 1, 2}
	for i, c := range s.hist {
		if c != want[i] {
			t.Fatalf("hist = %v, want %v", s.hist, want)
		}
	}
}
