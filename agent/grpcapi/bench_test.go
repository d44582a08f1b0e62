package grpcapi_test

import (
	"math"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/edgefleet/edgefleet/agent/grpcapi"
	"github.com/edgefleet/edgefleet/agent/grpcapi/grpcapitest"
	pb "github.com/edgefleet/edgefleet/agent/grpcapi/inferencepb"
	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/tensor"
)

// benchShapes are the digits CNN input and a PaddleOCR rec input (width 320).
var benchShapes = []struct {
	name  string
	shape []int64
}{
	{"1x1x8x8", []int64{1, 1, 8, 8}},
	{"1x3x48x320", []int64{1, 3, 48, 320}},
}

func benchTensor(shape []int64) tensor.Tensor {
	n, _ := tensor.NumElements(shape)
	vals := make([]float32, n)
	for i := range vals {
		vals[i] = float32(math.Sin(float64(i)))
	}
	return tensor.Tensor{Name: "x", DType: tensor.FP32, Shape: shape, Data: le(vals)}
}

func modeName(raw bool) string {
	if raw {
		return "raw"
	}
	return "typed"
}

// BenchmarkDecode measures request decoding: DecodeInputs alone, and
// proto.Unmarshal plus DecodeInputs (what a request costs past the transport).
func BenchmarkDecode(b *testing.B) {
	for _, s := range benchShapes {
		in := benchTensor(s.shape)
		for _, raw := range []bool{true, false} {
			pr, err := grpcapi.NewInferRequest("m", "", &models.InferRequest{Inputs: []tensor.Tensor{in}}, raw)
			if err != nil {
				b.Fatal(err)
			}
			wire, err := proto.Marshal(pr)
			if err != nil {
				b.Fatal(err)
			}
			b.Run(s.name+"/"+modeName(raw), func(b *testing.B) {
				b.SetBytes(int64(len(in.Data)))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := grpcapi.DecodeInputs(pr); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(s.name+"/"+modeName(raw)+"+unmarshal", func(b *testing.B) {
				b.SetBytes(int64(len(in.Data)))
				b.ReportAllocs()
				for b.Loop() {
					var req pb.ModelInferRequest
					if err := proto.Unmarshal(wire, &req); err != nil {
						b.Fatal(err)
					}
					if _, err := grpcapi.DecodeInputs(&req); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkEncode measures response encoding: EncodeOutputs alone, and with
// proto.Marshal.
func BenchmarkEncode(b *testing.B) {
	for _, s := range benchShapes {
		res := &models.InferResponse{ModelName: "m", ModelVersion: "1", Outputs: []tensor.Tensor{benchTensor(s.shape)}}
		for _, raw := range []bool{true, false} {
			b.Run(s.name+"/"+modeName(raw), func(b *testing.B) {
				b.SetBytes(int64(len(res.Outputs[0].Data)))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := grpcapi.EncodeOutputs(res, raw); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(s.name+"/"+modeName(raw)+"+marshal", func(b *testing.B) {
				b.SetBytes(int64(len(res.Outputs[0].Data)))
				b.ReportAllocs()
				for b.Loop() {
					resp, err := grpcapi.EncodeOutputs(res, raw)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := proto.Marshal(resp); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkModelInfer measures a whole ModelInfer over loopback TCP against
// the echo backend (no model runs): the gRPC front end's overhead at
// concurrency 1, with p50/p99 reported.
func BenchmarkModelInfer(b *testing.B) {
	h := grpcapitest.Start(b, newEchoBackend(), grpcapi.Options{})
	for _, s := range benchShapes {
		in := benchTensor(s.shape)
		for _, raw := range []bool{true, false} {
			pr, err := grpcapi.NewInferRequest("echo", "", &models.InferRequest{Inputs: []tensor.Tensor{in}}, raw)
			if err != nil {
				b.Fatal(err)
			}
			b.Run(s.name+"/"+modeName(raw), func(b *testing.B) {
				ctx := b.Context()
				b.SetBytes(int64(len(in.Data)))
				b.ReportAllocs()
				var lat []time.Duration
				for b.Loop() {
					t0 := time.Now()
					if _, err := h.Client.ModelInfer(ctx, pr); err != nil {
						b.Fatal(err)
					}
					lat = append(lat, time.Since(t0))
				}
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			})
		}
	}
}
