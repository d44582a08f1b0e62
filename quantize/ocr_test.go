package quantize

import (
	"bufio"
	"context"
	"image"
	"image/color"
	"image/draw"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/image/font"
	"golang.org/x/image/font/gofont/goregular"
	"golang.org/x/image/font/opentype"
	"golang.org/x/image/math/fixed"
)

// ocrLines are rendered with Go's own font for the PaddleOCR CER check.
var ocrLines = []string{
	"Hello World 2024",
	"edgefleet quantize",
	"The quick brown fox",
	"jumps over 13 lazy dogs",
	"INT8 models on CPU",
	"Order 4711 shipped",
	"Berlin 10115 Germany",
	"temperature 21.5 C",
}

// renderLine draws s in black on white at PaddleOCR rec's input height
// (48) and returns the normalised [1, 3, 48, w] input.
func renderLine(t testing.TB, s string) Tensor {
	t.Helper()
	f, err := opentype.Parse(goregular.TTF)
	if err != nil {
		t.Fatal(err)
	}
	face, err := opentype.NewFace(f, &opentype.FaceOptions{Size: 30, DPI: 72, Hinting: font.HintingFull})
	if err != nil {
		t.Fatal(err)
	}
	defer face.Close()
	const h = 48
	w := font.MeasureString(face, s).Ceil() + 16
	img := image.NewGray(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	d := font.Drawer{Dst: img, Src: image.NewUniform(color.Black), Face: face, Dot: fixed.P(8, 34)}
	d.DrawString(s)
	x := make([]float32, 3*h*w)
	for y := 0; y < h; y++ {
		for i := 0; i < w; i++ {
			v := (float32(img.GrayAt(i, y).Y)/255 - 0.5) / 0.5
			for c := 0; c < 3; c++ {
				x[c*h*w+y*w+i] = v
			}
		}
	}
	return Tensor{Name: "x", Shape: []int64{1, 3, h, int64(w)}, Data: x}
}

// ocrDict is PaddleOCR's character list: blank, ppocr_keys_v1.txt, space.
func ocrDict(t testing.TB) []string {
	p := filepath.Join("..", ".deps", "models", "ppocr_keys_v1.txt")
	f, err := os.Open(p)
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("%v (run make deps)", err)
		}
		t.Fatal(err)
	}
	defer f.Close()
	dict := []string{""}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		dict = append(dict, strings.TrimRight(sc.Text(), "\r\n"))
	}
	return append(dict, " ")
}

// ctcDecode is greedy CTC decoding of [1, frames, classes] probabilities.
func ctcDecode(probs []float32, classes int, dict []string) string {
	var b strings.Builder
	prev := -1
	for f := 0; f < len(probs)/classes; f++ {
		c := argmax(probs[f*classes : (f+1)*classes])
		if c != prev && c != 0 && c < len(dict) {
			b.WriteString(dict[c])
		}
		prev = c
	}
	return b.String()
}

func levenshtein(a, b []rune) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// ocrCER is an Evaluator: the character error rate of a PaddleOCR rec
// model on the rendered lines.
func ocrCER(t testing.TB, dict []string, lines []Tensor) Evaluator {
	return func(ctx context.Context, model []byte) (float64, error) {
		s, err := newSession(model, []string{"x"}, []string{"softmax_11.tmp_0"})
		if err != nil {
			return 0, err
		}
		defer s.Close()
		errs, total := 0, 0
		for i, in := range lines {
			out, err := s.Run(Batch{in})
			if err != nil {
				return 0, err
			}
			// Spaces at the ends come from the padding around the line.
			got := strings.TrimSpace(ctcDecode(out[0].F32, len(dict), dict))
			want := []rune(ocrLines[i])
			errs += levenshtein([]rune(got), want)
			total += len(want)
			if testing.Verbose() {
				t.Logf("%q -> %q", ocrLines[i], got)
			}
		}
		return float64(errs) / float64(total), nil
	}
}

// TestPaddleOCRCER quantizes PaddleOCR v4 rec (opset 9, weights in
// Constant nodes) dynamically and measures the character error rate on
// text lines rendered with Go's font, FP32 against INT8.
func TestPaddleOCRCER(t *testing.T) {
	needRuntime(t)
	fp32 := realModel(t, "ch_PP-OCRv4_rec_infer.onnx")
	dict := ocrDict(t)
	if len(dict) != 6625 {
		t.Fatalf("dictionary has %d classes, the model 6625", len(dict))
	}
	lines := make([]Tensor, len(ocrLines))
	for i, s := range ocrLines {
		lines[i] = renderLine(t, s)
	}
	cer := ocrCER(t, dict, lines)
	ctx := context.Background()
	base, err := cer(ctx, fp32)
	if err != nil {
		t.Fatal(err)
	}
	q, rep, err := Dynamic(ctx, fp32, Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := cer(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("CER fp32 %.2f%%, int8-dynamic %.2f%% (%v; %v)", 100*base, 100*got, rep, rep.Warnings)
	// Opset 9 with Slice/Clip/... cannot be raised: the contrib forms are
	// used and the opset stays; the weights still shrink to int8.
	if rep.OpsetAfter != rep.OpsetBefore {
		t.Errorf("opset changed %d -> %d", rep.OpsetBefore, rep.OpsetAfter)
	}
	if rep.SizeRatio() > 0.30 {
		t.Errorf("INT8 model is %.1f%% of FP32, want <= 30%%", 100*rep.SizeRatio())
	}
	if base > 0.05 {
		t.Fatalf("fp32 CER %.1f%%: rendering or decoding broken", 100*base)
	}
	if got-base > 0.005 {
		t.Errorf("INT8 CER %.2f%% is more than 0.5 points above FP32 %.2f%%", 100*got, 100*base)
	}
}
