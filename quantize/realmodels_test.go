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

// TestDynamicPaddleOCRRec quantizes PaddleOCR v4 rec (opset 9, weights in
// Constant nodes) and runs it next to FP32 on a synthetic text-line image.
func TestDynamicPaddleOCRRec(t *testing.T) {
	needRuntime(t)
	fp32 := realModel(t, "ch_PP-OCRv4_rec_infer.onnx")
	q, rep, err := Dynamic(context.Background(), fp32, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%v; warnings %v", rep, rep.Warnings)
	if rep.OpsetAfter != rep.OpsetBefore {
		t.Errorf("opset changed %d -> %d", rep.OpsetBefore, rep.OpsetAfter)
	}
	if rep.SizeRatio() > 0.30 {
		t.Errorf("INT8 model is %.1f%% of FP32, want <= 30%%", 100*rep.SizeRatio())
	}
	// A light background with dark glyph-like strokes, normalised as
	// PaddleOCR does ((x/255 - 0.5) / 0.5).
	const h, w = 48, 320
	img := make([]float32, 3*h*w)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			v := float32(0.9)
			if y > 10 && y < 38 && (x/6)%3 == 0 && x%40 < 30 {
				v = 0.1
			}
			for c := 0; c < 3; c++ {
				img[c*h*w+y*w+x] = (v - 0.5) / 0.5
			}
		}
	}
	in := Batch{{Name: "x", Shape: []int64{1, 3, h, w}, Data: img}}
	want, got := run(t, fp32, in)[0], run(t, q, in)[0]
	const classes = 6625
	// The synthetic strokes are no text, so many frames are ambiguous; the
	// frames FP32 is sure about (top probability >= 0.9) must agree. (CER
	// on rendered text lines is measured by the benchmark.)
	frames := len(want) / classes
	agree, sure, sureAgree := 0, 0, 0
	for f := 0; f < frames; f++ {
		a, b := argmax(want[f*classes:(f+1)*classes]), argmax(got[f*classes:(f+1)*classes])
		if a == b {
			agree++
		}
		if want[f*classes+a] >= 0.9 {
			sure++
			if a == b {
				sureAgree++
			}
		}
	}
	t.Logf("CTC frames agreeing: %d/%d, confident ones %d/%d", agree, frames, sureAgree, sure)
	if sure == 0 || sureAgree != sure {
		t.Fatalf("%d of %d confident CTC frames agree with FP32", sureAgree, sure)
	}
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
