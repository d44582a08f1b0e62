package quantize

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/edgefleet/edgefleet/quantize/internal/graph"
)

// BenchmarkDigits measures single-sample CPU latency (one intra-op thread)
// of the digits models in FP32 and after each conversion, and reports the
// model size and held-out accuracy as extra metrics. Run with
//
//	go test -run '^$' -bench Digits ./quantize/
func BenchmarkDigits(b *testing.B) {
	needRuntime(b)
	ctx := context.Background()
	test := loadDigits(b, "test.csv")
	calib := rebatch(b, calibFile(), 32)
	for _, model := range []string{"cnn.onnx", "transformer.onnx"} {
		if _, err := os.Stat(digitsDir + "/" + model); err != nil {
			continue
		}
		fp32 := loadModel(b, model)
		variants := []struct {
			name  string
			quant func() ([]byte, error)
		}{
			{"fp32", func() ([]byte, error) { return fp32, nil }},
			{"int8-static", func() ([]byte, error) { q, _, err := Static(ctx, fp32, calib, Options{}); return q, err }},
			{"int8-static-u8", func() ([]byte, error) {
				q, _, err := Static(ctx, fp32, calib, Options{ActivationType: Uint8})
				return q, err
			}},
			{"int8-dynamic", func() ([]byte, error) { q, _, err := Dynamic(ctx, fp32, Options{}); return q, err }},
			{"fp16", func() ([]byte, error) { q, _, err := FP16(ctx, fp32, Options{}); return q, err }},
		}
		for _, v := range variants {
			for _, batch := range []int{1, 64} {
				b.Run(fmt.Sprintf("%s/%s/batch=%d", model, v.name, batch), func(b *testing.B) {
					q, err := v.quant()
					if err != nil {
						b.Skipf("%s: %v", v.name, err)
					}
					acc, err := accuracy(test)(ctx, q)
					if err != nil {
						b.Fatal(err)
					}
					s := benchSession(b, q)
					defer s.Destroy()
					in := rebatch(b, "test.csv", batch)[0][0]
					x, err := ort.NewTensor(ort.NewShape(in.Shape...), in.Data.([]float32))
					if err != nil {
						b.Fatal(err)
					}
					defer x.Destroy()
					out, err := ort.NewEmptyTensor[float32](ort.NewShape(int64(batch), 10))
					if err != nil {
						b.Fatal(err)
					}
					defer out.Destroy()
					b.ResetTimer()
					for b.Loop() {
						if err := s.Run([]ort.Value{x}, []ort.Value{out}); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/sample")
					b.ReportMetric(float64(len(q)), "bytes")
					b.ReportMetric(100*acc, "acc%")
				})
			}
		}
	}
}

func benchSession(b *testing.B, model []byte) *ort.DynamicAdvancedSession {
	so, err := ort.NewSessionOptions()
	if err != nil {
		b.Fatal(err)
	}
	defer so.Destroy()
	if err := so.SetIntraOpNumThreads(1); err != nil {
		b.Fatal(err)
	}
	if err := so.SetInterOpNumThreads(1); err != nil {
		b.Fatal(err)
	}
	m, err := graph.Decode(model, "")
	if err != nil {
		b.Fatal(err)
	}
	s, err := ort.NewDynamicAdvancedSessionWithONNXData(model, modelInputs(m), []string{"logits"}, so)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// calibFile is the calibration CSV (EDGEFLEET_DIGITS_CALIB overrides it).
func calibFile() string {
	if f := os.Getenv("EDGEFLEET_DIGITS_CALIB"); f != "" {
		return f
	}
	return "calib.csv"
}

// BenchmarkRealModels measures single-request CPU latency (one intra-op
// thread) of PaddleOCR v4 rec (one 48x320 line) and Silero VAD (one
// 512-sample chunk) in FP32 and INT8 (dynamic), with sizes.
func BenchmarkRealModels(b *testing.B) {
	needRuntime(b)
	ctx := context.Background()
	img := make([]float32, 3*48*320)
	for i := range img {
		img[i] = float32(i%97)/48 - 1
	}
	models := []struct {
		file string
		in   Batch
		out  []string
	}{
		{"ch_PP-OCRv4_rec_infer.onnx", Batch{{Name: "x", Shape: []int64{1, 3, 48, 320}, Data: img}}, []string{"softmax_11.tmp_0"}},
		{"silero_vad_op18_ifless.onnx", Batch{
			{Name: "input", Shape: []int64{1, 512}, Data: make([]float32, 512)},
			{Name: "sr", Shape: []int64{}, Data: []int64{16000}},
			{Name: "state", Shape: []int64{2, 1, 128}, Data: make([]float32, 256)},
		}, []string{"output", "stateN"}},
	}
	for _, mdl := range models {
		p := filepath.Join("..", ".deps", "models", mdl.file)
		fp32, err := os.ReadFile(p)
		if err != nil {
			b.Logf("skipping %s: %v", mdl.file, err)
			continue
		}
		variants := []struct {
			name  string
			quant func() ([]byte, error)
		}{
			{"fp32", func() ([]byte, error) { return fp32, nil }},
			{"int8-dynamic", func() ([]byte, error) {
				q, _, err := Dynamic(ctx, fp32, Options{StripNodeMetadata: true})
				return q, err
			}},
		}
		for _, v := range variants {
			b.Run(mdl.file+"/"+v.name, func(b *testing.B) {
				q, err := v.quant()
				if err != nil {
					b.Fatal(err)
				}
				so, err := ort.NewSessionOptions()
				if err != nil {
					b.Fatal(err)
				}
				defer so.Destroy()
				so.SetIntraOpNumThreads(1)
				so.SetInterOpNumThreads(1)
				m, err := graph.Decode(q, "")
				if err != nil {
					b.Fatal(err)
				}
				s, err := ort.NewDynamicAdvancedSessionWithONNXData(q, modelInputs(m), mdl.out, so)
				if err != nil {
					b.Fatal(err)
				}
				defer s.Destroy()
				byName := map[string]Tensor{}
				for _, t := range mdl.in {
					byName[t.Name] = t
				}
				var ins []ort.Value
				for _, name := range modelInputs(m) {
					v, err := toValue(byName[name])
					if err != nil {
						b.Fatal(err)
					}
					defer v.Destroy()
					ins = append(ins, v)
				}
				b.ResetTimer()
				for b.Loop() {
					outs := make([]ort.Value, len(mdl.out))
					if err := s.Run(ins, outs); err != nil {
						b.Fatal(err)
					}
					for _, o := range outs {
						o.Destroy()
					}
				}
				b.ReportMetric(float64(len(q)), "bytes")
			})
		}
	}
}
