package quantize

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/edgefleet/edgefleet/quantize/internal/graph"
	"github.com/edgefleet/edgefleet/quantize/onnxpb"
	"github.com/edgefleet/edgefleet/quantize/quantmath"
)

// onnxTestData is where Debian's libonnx-testdata package puts ONNX's
// backend node tests (override with EDGEFLEET_ONNX_TESTDATA).
func onnxTestData(t *testing.T) string {
	dir := os.Getenv("EDGEFLEET_ONNX_TESTDATA")
	if dir == "" {
		dir = "/usr/share/libonnx-testdata/data/node"
	}
	if _, err := os.Stat(dir); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("ONNX test data missing (apt-get install libonnx-testdata): %v", err)
		}
		t.Fatalf("ONNX test data missing under CI (apt-get install libonnx-testdata): %v", err)
	}
	return dir
}

// testCase is one ONNX backend node test: a model and one data set.
type testCase struct {
	model   []byte
	inputs  []*onnxpb.TensorProto
	outputs []*onnxpb.TensorProto
}

func loadCase(t *testing.T, dir string) testCase {
	t.Helper()
	var tc testCase
	var err error
	if tc.model, err = os.ReadFile(filepath.Join(dir, "model.onnx")); err != nil {
		t.Fatal(err)
	}
	load := func(prefix string) []*onnxpb.TensorProto {
		var out []*onnxpb.TensorProto
		for i := 0; ; i++ {
			b, err := os.ReadFile(filepath.Join(dir, "test_data_set_0", fmt.Sprintf("%s_%d.pb", prefix, i)))
			if os.IsNotExist(err) {
				return out
			}
			if err != nil {
				t.Fatal(err)
			}
			tp := &onnxpb.TensorProto{}
			if err := proto.Unmarshal(b, tp); err != nil {
				t.Fatal(err)
			}
			out = append(out, tp)
		}
	}
	tc.inputs, tc.outputs = load("input"), load("output")
	return tc
}

// goData converts a TensorProto to a typed Go slice.
func goData(t *testing.T, tp *onnxpb.TensorProto) any {
	t.Helper()
	n := int(graph.NumElements(tp.Dims))
	raw := tp.RawData
	switch graph.Elem(tp.DataType) {
	case graph.Float:
		v, err := graph.Floats(tp)
		if err != nil {
			t.Fatal(err)
		}
		return v
	case graph.Int32, graph.Int64:
		v, err := graph.Int64s(tp)
		if err != nil {
			t.Fatal(err)
		}
		if graph.Elem(tp.DataType) == graph.Int64 {
			return v
		}
		out := make([]int32, len(v))
		for i, x := range v {
			out[i] = int32(x)
		}
		return out
	case graph.Uint8:
		out := make([]uint8, n)
		for i := range out {
			if raw != nil {
				out[i] = raw[i]
			} else {
				out[i] = uint8(tp.Int32Data[i])
			}
		}
		return out
	case graph.Int8:
		out := make([]int8, n)
		for i := range out {
			if raw != nil {
				out[i] = int8(raw[i])
			} else {
				out[i] = int8(tp.Int32Data[i])
			}
		}
		return out
	}
	t.Fatalf("tensor %s: unhandled type %v", tp.Name, graph.Elem(tp.DataType))
	return nil
}

func asInt32(t *testing.T, v any) []int32 {
	rv := reflect.ValueOf(v)
	out := make([]int32, rv.Len())
	for i := range out {
		if e := rv.Index(i); e.CanUint() {
			out[i] = int32(e.Uint())
		} else {
			out[i] = int32(e.Int())
		}
	}
	return out
}

// TestONNXBackendQuantOps runs ONNX's own test cases for the quantization
// operators the quantizer emits through onnxruntime and compares the
// outputs with the expected ones.
func TestONNXBackendQuantOps(t *testing.T) {
	root := onnxTestData(t)
	needRuntime(t)
	cases := []string{
		"test_quantizelinear", "test_quantizelinear_axis", "test_dequantizelinear", "test_dequantizelinear_axis",
		"test_dynamicquantizelinear", "test_dynamicquantizelinear_max_adjusted", "test_dynamicquantizelinear_min_adjusted",
		"test_matmulinteger", "test_basic_convinteger", "test_convinteger_with_padding", "test_qlinearmatmul_2D", "test_qlinearconv",
	}
	for _, name := range cases {
		t.Run(name, func(t *testing.T) {
			tc := loadCase(t, filepath.Join(root, name))
			m, err := graph.Decode(tc.model, "")
			if err != nil {
				t.Fatal(err)
			}
			var b Batch
			for i, in := range modelInputs(m) {
				b = append(b, Tensor{Name: in, Shape: tc.inputs[i].Dims, Data: goData(t, tc.inputs[i])})
			}
			outs := modelOutputs(m)
			specs := make([]*outSpec, len(outs))
			for i, o := range tc.outputs {
				specs[i] = &outSpec{Elem: graph.Elem(o.DataType), Shape: o.Dims}
			}
			s, err := newSession(tc.model, modelInputs(m), outs)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			got, err := s.RunAlloc(b, specs)
			if err != nil {
				t.Fatal(err)
			}
			for i, o := range tc.outputs {
				want := goData(t, o)
				if f, ok := want.([]float32); ok {
					if d := maxAbsDiff(got[i].F32, f); d > 1e-6*max(1, maxAbs(f)) {
						t.Errorf("output %d: differs by %g: got %v want %v", i, d, got[i].F32, f)
					}
					continue
				}
				if !reflect.DeepEqual(got[i].Data, want) {
					t.Errorf("output %d: got %v, want %v", i, got[i].Data, want)
				}
			}
		})
	}
}

// TestONNXBackendNumerics checks package quantmath against ONNX's expected
// outputs for QuantizeLinear, DequantizeLinear and DynamicQuantizeLinear.
func TestONNXBackendNumerics(t *testing.T) {
	root := onnxTestData(t)
	t.Run("QuantizeLinear", func(t *testing.T) {
		for _, name := range []string{"test_quantizelinear", "test_quantizelinear_axis"} {
			tc := loadCase(t, filepath.Join(root, name))
			x := goData(t, tc.inputs[0]).([]float32)
			scales := goData(t, tc.inputs[1]).([]float32)
			zps := asInt32(t, goData(t, tc.inputs[2]))
			qmin, qmax := int32(0), int32(255)
			if graph.Elem(tc.inputs[2].DataType) == graph.Int8 {
				qmin, qmax = -128, 127
			}
			want := asInt32(t, goData(t, tc.outputs[0]))
			got := make([]int32, len(x))
			for i, v := range x {
				c := channel(tc.inputs[0].Dims, i, len(scales))
				got[i] = quantmath.QuantizeOne(v, scales[c], zps[c], qmin, qmax)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s: got %v, want %v", name, got, want)
			}
		}
	})
	t.Run("DequantizeLinear", func(t *testing.T) {
		for _, name := range []string{"test_dequantizelinear", "test_dequantizelinear_axis"} {
			tc := loadCase(t, filepath.Join(root, name))
			x := asInt32(t, goData(t, tc.inputs[0]))
			scales := goData(t, tc.inputs[1]).([]float32)
			zps := []int32{0}
			if len(tc.inputs) > 2 {
				zps = asInt32(t, goData(t, tc.inputs[2]))
			}
			want := goData(t, tc.outputs[0]).([]float32)
			for i, v := range x {
				c := channel(tc.inputs[0].Dims, i, len(scales))
				if got := quantmath.Dequantize([]int32{v}, scales[c], zps[min(c, len(zps)-1)])[0]; got != want[i] {
					t.Errorf("%s[%d]: got %v, want %v", name, i, got, want[i])
				}
			}
		}
	})
	t.Run("DynamicQuantizeLinear", func(t *testing.T) {
		for _, name := range []string{"test_dynamicquantizelinear", "test_dynamicquantizelinear_max_adjusted", "test_dynamicquantizelinear_min_adjusted"} {
			tc := loadCase(t, filepath.Join(root, name))
			x := goData(t, tc.inputs[0]).([]float32)
			wantY := asInt32(t, goData(t, tc.outputs[0]))
			wantScale := goData(t, tc.outputs[1]).([]float32)[0]
			wantZP := asInt32(t, goData(t, tc.outputs[2]))[0]
			lo, hi := x[0], x[0]
			for _, v := range x {
				lo, hi = min(lo, v), max(hi, v)
			}
			// The operator divides in float32, the tool in float64: the
			// scales agree to one unit in the last place.
			zp, scale, err := quantmath.ComputeScaleZP(lo, hi, 0, 255, false, 0)
			if err != nil {
				t.Fatal(err)
			}
			if ulps(scale, wantScale) > 1 || zp != wantZP {
				t.Errorf("%s: scale %v zp %d, want %v %d", name, scale, zp, wantScale, wantZP)
			}
			if got := quantmath.Quantize(x, wantScale, wantZP, 0, 255); !reflect.DeepEqual(got, wantY) {
				t.Errorf("%s: y = %v, want %v", name, got, wantY)
			}
		}
	})
}

// channel returns the index along axis 1 of flat element i of a tensor
// with dims, for nch per-channel parameters (0 for per-tensor ones).
func channel(dims []int64, i, nch int) int {
	if nch == 1 {
		return 0
	}
	inner := int64(1)
	for _, d := range dims[2:] {
		inner *= d
	}
	return int((int64(i) / inner) % dims[1])
}

func ulps(a, b float32) int64 {
	d := int64(math.Float32bits(a)) - int64(math.Float32bits(b))
	if d < 0 {
		d = -d
	}
	return d
}
