package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgefleet/edgefleet/agent/metrics"
	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/tensor"
)

// The encoding/json baselines decode into and encode from typed structs, the
// best case for reflection (what a hand-written Go server would do).
type jsonTensor struct {
	Name     string    `json:"name"`
	Shape    []int64   `json:"shape"`
	Datatype string    `json:"datatype"`
	Data     []float32 `json:"data,omitempty"`
}

type jsonRequest struct {
	ID     string       `json:"id,omitempty"`
	Inputs []jsonTensor `json:"inputs"`
}

type jsonResponse struct {
	ModelName    string       `json:"model_name"`
	ModelVersion string       `json:"model_version"`
	ID           string       `json:"id,omitempty"`
	Outputs      []jsonTensor `json:"outputs"`
}

// pair runs the edgefleet codec and the encoding/json baseline as
// sub-benchmarks. Both report cpu-ns/op (process CPU time, which a busy
// shared machine inflates far less than wall time); the baseline reports how
// many times more CPU it needs.
func pair(b *testing.B, bytesPerOp int64, ours, baseline func(b *testing.B)) {
	var oursCPU float64
	b.Run("edgefleet", func(b *testing.B) {
		oursCPU = measure(b, bytesPerOp, ours)
	})
	b.Run("encoding_json", func(b *testing.B) {
		cpu := measure(b, bytesPerOp, baseline)
		if oursCPU > 0 && cpu > 0 {
			b.ReportMetric(cpu/oursCPU, "x_cpu_vs_edgefleet")
		}
	})
}

// measure runs f and reports CPU time per operation and CPU-based MB/s.
func measure(b *testing.B, bytesPerOp int64, f func(b *testing.B)) float64 {
	b.SetBytes(bytesPerOp)
	b.ReportAllocs()
	start := processCPU()
	f(b)
	cpu := float64((processCPU() - start).Nanoseconds()) / float64(b.N)
	if cpu > 0 {
		b.ReportMetric(cpu, "cpu-ns/op")
		if bytesPerOp > 0 {
			b.ReportMetric(float64(bytesPerOp)/cpu*1e3, "cpu-MB/s")
		}
	}
	return cpu
}

// digitsValues returns n pixel values like the digits CNN input (0..16 / 16).
func digitsValues(n int) []float32 {
	r := rand.New(rand.NewPCG(9, 9))
	vs := make([]float32, n)
	for i := range vs {
		vs[i] = float32(r.IntN(17)) / 16
	}
	return vs
}

// requestBody renders an FP32 request. long writes each value the way
// Python's json does for numpy float32 .tolist() (17 significant digits).
func requestBody(vals []float32, shape []int64, long bool) []byte {
	var sb strings.Builder
	fmt.Fprintf(&sb, `{"id":"bench","inputs":[{"name":"input","shape":%s,"datatype":"FP32","data":[`, shapeJSON(shape))
	for i, v := range vals {
		if i > 0 {
			sb.WriteString(", ")
		}
		if long {
			sb.WriteString(strconv.FormatFloat(float64(v), 'g', 17, 64))
		} else {
			sb.WriteString(strconv.FormatFloat(float64(v), 'g', -1, 64))
		}
	}
	sb.WriteString("]}]}")
	return []byte(sb.String())
}

func benchDecode(b *testing.B, body []byte) {
	pair(b, int64(len(body)),
		func(b *testing.B) {
			for b.Loop() {
				if _, err := decodeRequest(body, -1); err != nil {
					b.Fatal(err)
				}
			}
		},
		func(b *testing.B) {
			for b.Loop() {
				var req jsonRequest
				if err := json.Unmarshal(body, &req); err != nil {
					b.Fatal(err)
				}
			}
		})
}

func BenchmarkDecode(b *testing.B) {
	small := digitsValues(64)
	b.Run("1x1x8x8_FP32", func(b *testing.B) { benchDecode(b, requestBody(small, []int64{1, 1, 8, 8}, false)) })
	b.Run("1x1x8x8_FP32_17digits", func(b *testing.B) { benchDecode(b, requestBody(small, []int64{1, 1, 8, 8}, true)) })
	large := probabilities(265_000)
	b.Run("265k_FP32", func(b *testing.B) { benchDecode(b, requestBody(large, []int64{1, 265_000}, false)) })
}

// probabilities returns n softmax-like outputs: mostly tiny values, as an
// OCR recogniser's per-class scores are.
func probabilities(n int) []float32 {
	r := rand.New(rand.NewPCG(1, 7))
	vs := make([]float32, n)
	for i := range vs {
		vs[i] = float32(math.Exp(-r.Float64() * 20))
	}
	return vs
}

func benchEncode(b *testing.B, vals []float32, shape []int64) {
	t := tensor.Tensor{Name: "output", DType: tensor.FP32, Shape: shape, Data: f32s(vals...)}
	resp := &models.InferResponse{ModelName: "m", ModelVersion: "1", Outputs: []tensor.Tensor{t}}
	outs := []responseOutput{{t: &resp.Outputs[0]}}
	size := len(encoder{}.appendResponse(nil, resp, "bench", outs))
	jresp := jsonResponse{ModelName: "m", ModelVersion: "1", ID: "bench",
		Outputs: []jsonTensor{{Name: "output", Shape: shape, Datatype: "FP32", Data: vals}}}
	pair(b, int64(size),
		func(b *testing.B) {
			var buf []byte
			for b.Loop() {
				bp := getBuf(4096)
				buf = encoder{}.appendResponse((*bp)[:0], resp, "bench", outs)
				*bp = buf
				putBuf(bp)
			}
		},
		func(b *testing.B) {
			for b.Loop() {
				if _, err := json.Marshal(&jresp); err != nil {
					b.Fatal(err)
				}
			}
		})
}

func BenchmarkEncode(b *testing.B) {
	b.Run("1x10_FP32", func(b *testing.B) { benchEncode(b, probabilities(10), []int64{1, 10}) })
	b.Run("265k_FP32", func(b *testing.B) { benchEncode(b, probabilities(265_000), []int64{1, 40, 6625}) })
}

// fixedBackend answers every request with one precomputed output, so the
// handler benchmark measures the front end alone.
type fixedBackend struct {
	echoBackend
	out tensor.Tensor
}

func (f *fixedBackend) Infer(_ context.Context, name, _ string, req *models.InferRequest) (*models.InferResponse, error) {
	return &models.InferResponse{ModelName: name, ModelVersion: "1", ID: req.ID, Outputs: []tensor.Tensor{f.out}}, nil
}

// nullWriter is a ResponseWriter that counts bytes, so the handler benchmark
// measures the front end rather than a recorder's buffers.
type nullWriter struct {
	h    http.Header
	code int
	n    int
}

func (w *nullWriter) Header() http.Header         { return w.h }
func (w *nullWriter) WriteHeader(code int)        { w.code = code }
func (w *nullWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }

// BenchmarkHandler runs the whole front end in-process (routing, body read,
// decode, backend call, encode, write) for the digits CNN's request and
// response shapes, JSON and binary, with metrics on.
func BenchmarkHandler(b *testing.B) {
	be := &fixedBackend{out: tensor.Tensor{Name: "logits", DType: tensor.FP32, Shape: []int64{1, 10}, Data: f32s(probabilities(10)...)}}
	h := New(be, Options{Metrics: metrics.New(prometheus.NewRegistry())})
	jsonBody := requestBody(digitsValues(64), []int64{1, 1, 8, 8}, false)
	header := `{"inputs":[{"name":"input","shape":[1,1,8,8],"datatype":"FP32","parameters":{"binary_data_size":256}}],"outputs":[{"name":"logits","parameters":{"binary_data":true}}]}`
	binBody := append([]byte(header), f32s(digitsValues(64)...)...)
	for _, tc := range []struct {
		name string
		body []byte
		hl   string
	}{{"json", jsonBody, ""}, {"binary", binBody, strconv.Itoa(len(header))}} {
		b.Run(tc.name, func(b *testing.B) {
			rd := bytes.NewReader(nil)
			req := httptest.NewRequest("POST", "/v2/models/digits/infer", nil)
			if tc.hl != "" {
				req.Header.Set(HeaderInferenceHeaderLength, tc.hl)
			}
			w := &nullWriter{h: http.Header{}}
			measure(b, int64(len(tc.body)), func(b *testing.B) {
				for b.Loop() {
					rd.Reset(tc.body)
					req.Body = io.NopCloser(rd)
					req.ContentLength = int64(len(tc.body))
					clear(w.h)
					w.code = 0
					h.ServeHTTP(w, req)
					if w.code != 200 {
						b.Fatalf("status %d", w.code)
					}
				}
			})
		})
	}
}
