package quantize

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// realModel reads a model that `make deps` puts under .deps/models; it
// skips when the file is missing and CI is unset.
func realModel(t *testing.T, name string) []byte {
	p := filepath.Join("..", ".deps", "models", name)
	b, err := os.ReadFile(p)
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("%s missing (run make deps): %v", name, err)
		}
		t.Fatalf("%s missing under CI: %v", name, err)
	}
	return b
}

// TestDynamicSileroVAD quantizes Silero VAD (weights used inside If
// branches) and runs it on a synthetic voiced signal, chunk by chunk with
// its recurrent state, next to FP32.
func TestDynamicSileroVAD(t *testing.T) {
	needRuntime(t)
	fp32 := realModel(t, "silero_vad_op18_ifless.onnx")
	q, rep, err := Dynamic(context.Background(), fp32, Options{StripNodeMetadata: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%v; %v", rep, rep.Warnings)
	// torch's per-node stack traces are a quarter of the FP32 file; without
	// them the INT8 model meets the size goal.
	if rep.SizeRatio() > 0.30 {
		t.Errorf("INT8 model is %.1f%% of FP32, want <= 30%%", 100*rep.SizeRatio())
	}
	if len(rep.Quantized) < 10 {
		t.Fatalf("quantized %d nodes: the If branches were not reached", len(rep.Quantized))
	}
	const chunk = 512
	var sf, sq []float32 = make([]float32, 256), make([]float32, 256)
	maxDiff := 0.0
	for c := 0; c < 40; c++ {
		x := make([]float32, chunk)
		for i := range x {
			tt := float64(c*chunk+i) / 16000
			env := 0.0
			if c >= 10 && c < 30 { // a "syllable" train in the middle
				env = 0.3 * math.Abs(math.Sin(2*math.Pi*3*tt))
			}
			v := 0.0
			for k := 1; k <= 8; k++ {
				v += math.Sin(2*math.Pi*140*float64(k)*tt) / float64(k)
			}
			x[i] = float32(env*v + 0.001*math.Sin(2*math.Pi*50*tt))
		}
		step := func(model []byte, state []float32) (float32, []float32) {
			out := run(t, model, Batch{
				{Name: "input", Shape: []int64{1, chunk}, Data: x},
				{Name: "sr", Shape: []int64{}, Data: []int64{16000}},
				{Name: "state", Shape: []int64{2, 1, 128}, Data: state},
			})
			return out[0][0], out[1]
		}
		var pf, pq float32
		pf, sf = step(fp32, sf)
		pq, sq = step(q, sq)
		if math.IsNaN(float64(pq)) || pq < 0 || pq > 1 {
			t.Fatalf("chunk %d: int8 probability %v", c, pq)
		}
		maxDiff = max(maxDiff, math.Abs(float64(pf-pq)))
	}
	t.Logf("max speech-probability difference over 40 chunks: %.4f", maxDiff)
	if maxDiff > 0.2 {
		t.Fatalf("int8 speech probability differs from FP32 by %.3f", maxDiff)
	}
}

func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

// TestFP16PaddleOCRRec converts PaddleOCR v4 rec (weights in Constant
// nodes) to float16 and compares it with FP32.
func TestFP16PaddleOCRRec(t *testing.T) {
	needRuntime(t)
	fp32 := realModel(t, "ch_PP-OCRv4_rec_infer.onnx")
	q, rep, err := FP16(context.Background(), fp32, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%v", rep)
	if rep.Weights < 100 || rep.SizeRatio() > 0.55 {
		t.Fatalf("%d weights converted, size %.1f%%", rep.Weights, 100*rep.SizeRatio())
	}
	img := make([]float32, 3*48*320)
	for i := range img {
		img[i] = float32(i%97)/48 - 1
	}
	in := Batch{{Name: "x", Shape: []int64{1, 3, 48, 320}, Data: img}}
	want, got := run(t, fp32, in)[0], run(t, q, in)[0]
	if d := maxAbsDiff(want, got); d > 0.02 {
		t.Fatalf("fp16 probabilities differ from fp32 by %g", d)
	}
}
