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

// ocrCalibLines calibrate static quantization of the OCR models; they
// differ from the evaluation lines.
var ocrCalibLines = []string{
	"Invoice 2291 due Friday",
	"edge devices at scale",
	"Quantized weights 8 bit",
	"Hamburg 20095 port",
	"battery 87% charging",
	"ROUTE 66 EXIT 12",
	"calibration samples",
	"Kilometer 42.195",
}

// ocrClsSample is line as PaddleOCR's direction classifier takes it:
// height 48, scaled to at most 192 wide (nearest), padded with zeros to
// [1, 3, 48, 192]; rotated by 180° when flip is set.
func ocrClsSample(line Tensor, flip bool) Tensor {
	const H, W = 48, 192
	h, w := int(line.Shape[2]), int(line.Shape[3])
	d := line.Data.([]float32)
	nw := min(w, W)
	out := make([]float32, 3*H*W)
	for c := range 3 {
		for y := range H {
			for i := range nw {
				sy, sx := y, i*w/nw
				if flip {
					sy, sx = h-1-y, (nw-1-i)*w/nw
				}
				out[c*H*W+y*W+i] = d[c*h*w+sy*w+sx]
			}
		}
	}
	return Tensor{Name: "x", Shape: []int64{1, 3, H, W}, Data: out}
}

// ocrClsAccuracy is an Evaluator: the share of samples (upright lines,
// label 0, and the same lines rotated, label 1) the classifier gets right.
func ocrClsAccuracy(samples []Tensor, labels []int) Evaluator {
	return func(ctx context.Context, model []byte) (float64, error) {
		s, err := newSession(model, []string{"x"}, []string{"softmax_0.tmp_0"})
		if err != nil {
			return 0, err
		}
		defer s.Close()
		right := 0
		for i, in := range samples {
			out, err := s.Run(Batch{in})
			if err != nil {
				return 0, err
			}
			if argmax(out[0].F32) == labels[i] {
				right++
			}
		}
		return float64(right) / float64(len(samples)), nil
	}
}

// ocrPage is a detector input with the boxes of the text it shows.
type ocrPage struct {
	in    Tensor
	boxes []image.Rectangle
}

// renderPage draws lines (24 px Go font) on a white 192×512 page, one
// every 44 px with a varying indent, normalised as PaddleOCR det expects
// (ImageNet mean and deviation); boxes are the lines' ink extents.
func renderPage(t testing.TB, lines []string, indent int) ocrPage {
	t.Helper()
	f, err := opentype.Parse(goregular.TTF)
	if err != nil {
		t.Fatal(err)
	}
	face, err := opentype.NewFace(f, &opentype.FaceOptions{Size: 24, DPI: 72, Hinting: font.HintingFull})
	if err != nil {
		t.Fatal(err)
	}
	defer face.Close()
	const H, W = 192, 512
	img := image.NewGray(image.Rect(0, 0, W, H))
	draw.Draw(img, img.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	var p ocrPage
	for k, s := range lines {
		x, base := 12+(indent*37+k*53)%120, 34+k*44
		d := font.Drawer{Dst: img, Src: image.NewUniform(color.Black), Face: face, Dot: fixed.P(x, base)}
		b, _ := d.BoundString(s)
		d.DrawString(s)
		p.boxes = append(p.boxes, image.Rect(b.Min.X.Floor(), b.Min.Y.Floor(), min(W, b.Max.X.Ceil()), b.Max.Y.Ceil()))
	}
	mean, std := [3]float32{0.485, 0.456, 0.406}, [3]float32{0.229, 0.224, 0.225}
	x := make([]float32, 3*H*W)
	for y := range H {
		for i := range W {
			v := float32(img.GrayAt(i, y).Y) / 255
			for c := range 3 {
				x[c*H*W+y*W+i] = (v - mean[c]) / std[c]
			}
		}
	}
	p.in = Tensor{Name: "x", Shape: []int64{1, 3, H, W}, Data: x}
	return p
}

// ocrBoxRecall is an Evaluator: the share of text boxes the detector
// finds, a box counting as found when at least 30% of its pixels have a
// text probability above 0.3 (DB's binarisation threshold; its map covers
// a shrunk text region, so full coverage is not expected).
func ocrBoxRecall(pages []ocrPage) Evaluator {
	return func(ctx context.Context, model []byte) (float64, error) {
		s, err := newSession(model, []string{"x"}, []string{"sigmoid_0.tmp_0"})
		if err != nil {
			return 0, err
		}
		defer s.Close()
		found, total := 0, 0
		for _, p := range pages {
			out, err := s.Run(Batch{p.in})
			if err != nil {
				return 0, err
			}
			w := int(p.in.Shape[3])
			for _, b := range p.boxes {
				on := 0
				for y := b.Min.Y; y < b.Max.Y; y++ {
					for x := b.Min.X; x < b.Max.X; x++ {
						if out[0].F32[y*w+x] > 0.3 {
							on++
						}
					}
				}
				if float64(on) >= 0.3*float64(b.Dx()*b.Dy()) {
					found++
				}
				total++
			}
		}
		return float64(found) / float64(total), nil
	}
}

// TestPaddleOCRClsStatic quantizes PaddleOCR's opset-9 direction
// classifier statically: the quantizer converts it to opset 13 itself
// (reported), folds its BatchNormalizations and hard-swishes, and the INT8
// model classifies upright and rotated lines as FP32 does.
func TestPaddleOCRClsStatic(t *testing.T) {
	needRuntime(t)
	ctx := context.Background()
	fp32 := realModel(t, "ch_ppocr_mobile_v2.0_cls_infer.onnx")
	var in []Tensor
	var labels []int
	for _, s := range ocrLines[:4] {
		l := renderLine(t, s)
		in = append(in, ocrClsSample(l, false), ocrClsSample(l, true))
		labels = append(labels, 0, 1)
	}
	var calib []Batch
	for i, s := range ocrCalibLines[:4] {
		calib = append(calib, Batch{ocrClsSample(renderLine(t, s), i%2 == 1)})
	}
	acc := ocrClsAccuracy(in, labels)
	base, err := acc(ctx, fp32)
	if err != nil {
		t.Fatal(err)
	}
	q, rep, err := Static(ctx, fp32, calib, Options{ActivationType: Uint8, Fold: true, ConvOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OpsetBefore != 9 || rep.OpsetAfter != 13 || rep.Conversion == nil || rep.Conversion.Rewritten["Slice@10"] != 1 || !rep.PerChannel {
		t.Errorf("report: opset %d -> %d, conversion %v, per-channel %v", rep.OpsetBefore, rep.OpsetAfter, rep.Conversion, rep.PerChannel)
	}
	if rep.Folded["BatchNormalization into Conv"] == 0 || rep.Folded["hard-swish to HardSigmoid·x"] == 0 {
		t.Errorf("folded %v: want BatchNormalizations and hard-swishes", rep.Folded)
	}
	got, err := acc(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("accuracy fp32 %.3f, int8 %.3f; %v", base, got, rep)
	if base < 0.75 {
		t.Fatalf("fp32 accuracy %.3f: rendering or preprocessing broken", base)
	}
	if got < base-1e-9 {
		t.Errorf("INT8 accuracy %.3f below FP32 %.3f", got, base)
	}
}
