package update

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/cache"
	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/tensor"
	"github.com/edgefleet/edgefleet/ota"
	"github.com/edgefleet/edgefleet/ota/artifact"
)

func lat(n int, d time.Duration) snapshot {
	s := snapshot{Requests: int64(n), Samples: n, P99: d}
	return s
}

func TestEvaluate(t *testing.T) {
	th := config.Watch{MinRequests: 10}.WithDefaults()
	tests := []struct {
		name string
		th   config.Watch
		h    health
		want string // substring of the reason; "" = healthy
	}{
		{"quiet", th, health{}, ""},
		{"healthy traffic", th, health{cur: snapshot{Requests: 1000, Errors: 5}}, ""},
		{"error rate over the limit", th, health{cur: snapshot{Requests: 100, Errors: 2}}, "error rate 2.00%"},
		{"errors before enough requests", th, health{cur: snapshot{Requests: 9, Errors: 9}}, ""},
		{"errors at min requests", th, health{cur: snapshot{Requests: 10, Errors: 10}}, "error rate 100.00%"},
		{"error check disabled", config.Watch{MaxErrorRate: 1}.Merge(th), health{cur: snapshot{Requests: 100, Errors: 100}}, ""},
		{"one NaN breaches by default", th, health{cur: snapshot{Requests: 1, NonFinite: 1}}, "NaN/Inf outputs in 1 of 1"},
		{"NaN rate within a tolerance", config.Watch{MaxNonFiniteRate: 0.1}.Merge(th), health{cur: snapshot{Requests: 100, NonFinite: 5}}, ""},
		{"NaN rate over a tolerance", config.Watch{MaxNonFiniteRate: 0.1}.Merge(th), health{cur: snapshot{Requests: 100, NonFinite: 11}}, "NaN/Inf outputs in 11 of 100"},
		{"NaN check disabled", config.Watch{MaxNonFiniteRate: 1}.Merge(th), health{cur: snapshot{Requests: 100, NonFinite: 100}}, ""},
		{"runtime fallback", th, health{degraded: "run failed on cuda"}, "at run time: run failed on cuda"},
		{"load fallback", th, health{loadFallback: "requested cuda"}, "GPU to CPU: requested cuda"},
		{"fallback allowed", config.Watch{AllowFallback: true}.Merge(th), health{degraded: "x", loadFallback: "y"}, ""},
		{"p99 regression", th, health{cur: lat(200, 4*time.Millisecond), base: lat(200, time.Millisecond)}, "4.0× the previous"},
		{"p99 within ratio", th, health{cur: lat(200, 2*time.Millisecond), base: lat(200, time.Millisecond)}, ""},
		{"p99 with too few samples", th, health{cur: lat(99, time.Second), base: lat(200, time.Millisecond)}, ""},
		{"p99 without a baseline", th, health{cur: lat(200, time.Second), base: lat(50, time.Millisecond)}, ""},
		{"p99 check disabled", config.Watch{MaxP99Ratio: -1}.Merge(th), health{cur: lat(200, time.Second), base: lat(200, time.Millisecond)}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := evaluate(tc.th, tc.h)
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
				t.Fatalf("evaluate = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestObserverStats(t *testing.T) {
	o := newObserver()
	wake := make(chan struct{}, 1)
	o.setDefault("m", "1")
	o.watch("m", "2", wake)
	nan := tensor.Tensor{Name: "y", DType: tensor.FP32, Shape: []int64{1}, Data: binary.LittleEndian.AppendUint32(nil, math.Float32bits(float32(math.NaN())))}
	ok := tensor.Tensor{Name: "y", DType: tensor.FP32, Shape: []int64{1}, Data: binary.LittleEndian.AppendUint32(nil, math.Float32bits(1))}
	start := o.snapshot("m", "2")
	for i := range 300 {
		o.observe("m", "", &models.InferResponse{ModelVersion: "2", Outputs: []tensor.Tensor{ok}}, nil, time.Duration(i+1)*time.Microsecond)
	}
	o.observe("m", "", &models.InferResponse{ModelVersion: "2", Outputs: []tensor.Tensor{nan}}, nil, time.Microsecond)
	o.observe("m", "", nil, errors.New("run failed"), time.Microsecond)                       // attributed to the default, 1
	o.observe("m", "2", nil, fmt.Errorf("bad: %w", models.ErrInvalidInput), time.Microsecond) // a client mistake: not counted
	o.observe("m", "2", nil, errors.New("run failed"), time.Microsecond)
	s := o.snapshot("m", "2").since(start)
	if s.Requests != 302 || s.Errors != 1 || s.NonFinite != 1 || s.Samples != 301 {
		t.Fatalf("version 2: %+v", s)
	}
	// 301 samples (1µs twice, then 2…300µs): the 298th smallest.
	if s.P99 != 297*time.Microsecond {
		t.Fatalf("p99 = %v, want 297µs", s.P99)
	}
	if d := o.snapshot("m", "1"); d.Requests != 1 || d.Errors != 1 {
		t.Fatalf("default version: %+v", d)
	}
	select {
	case <-wake:
	default:
		t.Fatal("no wake-up for a NaN or an error of a watched version")
	}
	// Unwatched versions are not scanned for NaN.
	o.observe("m", "1", &models.InferResponse{ModelVersion: "1", Outputs: []tensor.Tensor{nan}}, nil, time.Microsecond)
	if d := o.snapshot("m", "1"); d.NonFinite != 0 {
		t.Fatalf("unwatched version scanned: %+v", d)
	}
	// The ring keeps the latest ringSize latencies.
	for i := range 2 * ringSize {
		o.observe("m", "3", &models.InferResponse{ModelVersion: "3"}, nil, time.Duration(i))
	}
	if d := o.snapshot("m", "3"); d.Samples != ringSize || d.P99 < time.Duration(2*ringSize-ringSize/50) {
		t.Fatalf("ring: %d samples, p99 %v", d.Samples, d.P99)
	}
}

func TestNonFinite(t *testing.T) {
	f32 := func(v float32) []byte { return binary.LittleEndian.AppendUint32(nil, math.Float32bits(v)) }
	f64 := func(v float64) []byte { return binary.LittleEndian.AppendUint64(nil, math.Float64bits(v)) }
	u16 := func(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
	tests := []struct {
		name string
		t    tensor.Tensor
		want bool
	}{
		{"fp32 finite", tensor.Tensor{DType: tensor.FP32, Data: append(f32(1), f32(-3e38)...)}, false},
		{"fp32 NaN", tensor.Tensor{DType: tensor.FP32, Data: append(f32(1), f32(float32(math.NaN()))...)}, true},
		{"fp32 -Inf", tensor.Tensor{DType: tensor.FP32, Data: f32(float32(math.Inf(-1)))}, true},
		{"fp64 Inf", tensor.Tensor{DType: tensor.FP64, Data: f64(math.Inf(1))}, true},
		{"fp64 max", tensor.Tensor{DType: tensor.FP64, Data: f64(math.MaxFloat64)}, false},
		{"fp16 Inf", tensor.Tensor{DType: tensor.FP16, Data: u16(0x7c00)}, true},
		{"fp16 max", tensor.Tensor{DType: tensor.FP16, Data: u16(0x7bff)}, false},
		{"bf16 NaN", tensor.Tensor{DType: tensor.BF16, Data: u16(0x7fc1)}, true},
		{"int32 all ones", tensor.Tensor{DType: tensor.Int32, Data: []byte{0xff, 0xff, 0xff, 0x7f}}, false},
	}
	for _, tc := range tests {
		if got := tensor.HasNonFinite([]tensor.Tensor{tc.t}); got != tc.want {
			t.Errorf("%s: nonFinite = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestHalfConversions(t *testing.T) {
	tests := []struct {
		f          float32
		half, bf16 uint16
	}{
		{0, 0, 0},
		{1, 0x3c00, 0x3f80},
		{-2, 0xc000, 0xc000},
		{0.125, 0x3000, 0x3e00},
		{65504, 0x7bff, 0x4780},
		{1e6, 0x7c00, 0x4974},                   // half overflows to Inf
		{5.960464477539063e-08, 0x0001, 0x3380}, // smallest half subnormal
		{1.0009765625, 0x3c01, 0x3f80},          // bf16 rounds to even
	}
	for _, tc := range tests {
		if got := float32ToHalf(tc.f); got != tc.half {
			t.Errorf("float32ToHalf(%g) = %#04x, want %#04x", tc.f, got, tc.half)
		}
		if got := float32ToBF16(tc.f); got != tc.bf16 {
			t.Errorf("float32ToBF16(%g) = %#04x, want %#04x", tc.f, got, tc.bf16)
		}
		if tc.half != 0x7c00 {
			if back := artifact.HalfToFloat32(tc.half); back != tc.f {
				t.Errorf("half %#04x reads back as %g, want %g", tc.half, back, tc.f)
			}
		}
	}
}

func TestParseInputs(t *testing.T) {
	tests := []struct {
		name, json string
		want       []tensor.Tensor
		err        string
	}{
		{"nested fp32 and int64", `{"inputs":[{"name":"x","datatype":"FP32","shape":[2,2],"data":[[1,2],[3,0.5]]},{"name":"n","datatype":"INT64","shape":[],"data":7}]}`,
			[]tensor.Tensor{
				{Name: "x", DType: tensor.FP32, Shape: []int64{2, 2}, Data: f32s(1, 2, 3, 0.5)},
				{Name: "n", DType: tensor.Int64, Shape: []int64{}, Data: binary.LittleEndian.AppendUint64(nil, 7)},
			}, ""},
		{"bool and bytes", `{"inputs":[{"name":"b","datatype":"BOOL","shape":[2],"data":[true,false]},{"name":"s","datatype":"BYTES","shape":[1],"data":["hi"]}]}`,
			[]tensor.Tensor{
				{Name: "b", DType: tensor.Bool, Shape: []int64{2}, Data: []byte{1, 0}},
				{Name: "s", DType: tensor.Bytes, Shape: []int64{1}, Strings: [][]byte{[]byte("hi")}},
			}, ""},
		{"too few elements", `{"inputs":[{"name":"x","datatype":"FP32","shape":[3],"data":[1,2]}]}`, nil, "shape"},
		{"out of range", `{"inputs":[{"name":"x","datatype":"UINT8","shape":[1],"data":[256]}]}`, nil, "does not fit UINT8"},
		{"fraction into an integer", `{"inputs":[{"name":"x","datatype":"INT32","shape":[1],"data":[1.5]}]}`, nil, "does not fit INT32"},
		{"unknown type", `{"inputs":[{"name":"x","datatype":"FP8","shape":[1],"data":[1]}]}`, nil, "unknown data type"},
		{"no inputs", `{}`, nil, `no "inputs"`},
		{"not json", `{`, nil, "golden inputs"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseInputs([]byte(tc.json))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func f32s(vs ...float32) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

func TestGenerateInputs(t *testing.T) {
	specs := []runtime.IOSpec{
		{Name: "x", DType: tensor.FP16, Shape: []int64{-1, 3}},
		{Name: "i", DType: tensor.Int8, Shape: []int64{2}},
		{Name: "s", DType: tensor.Bytes, Shape: []int64{-1}},
	}
	a, b := GenerateInputs(specs, 1), GenerateInputs(specs, 1)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatal("GenerateInputs is not deterministic")
	}
	for _, in := range a {
		if err := in.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	if !equalShape(a[0].Shape, []int64{1, 3}) || len(a[2].Strings) != 1 {
		t.Fatalf("dynamic dimensions not set to 1: %v, %d strings", a[0].Shape, len(a[2].Strings))
	}
	for i := 0; i < len(a[0].Data); i += 2 {
		v := artifact.HalfToFloat32(binary.LittleEndian.Uint16(a[0].Data[i:]))
		if v < 0 || v >= 1 || v*8 != float32(int(v*8)) {
			t.Fatalf("generated FP16 value %g is not a multiple of 1/8 in [0, 1)", v)
		}
	}
}

func equalShape(a, b []int64) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

func TestMatchSpecs(t *testing.T) {
	cfg := &artifact.Config{
		Inputs:  []artifact.TensorSpec{{Name: "x", Datatype: "FP32", Shape: []int64{-1, 4}}},
		Outputs: []artifact.TensorSpec{{Name: "y", Datatype: "FP32", Shape: []int64{-1, 4}}},
	}
	x := runtime.IOSpec{Name: "x", DType: tensor.FP32, Shape: []int64{-1, 4}}
	y := runtime.IOSpec{Name: "y", DType: tensor.FP32, Shape: []int64{1, -1}}
	tests := []struct {
		name      string
		ins, outs []runtime.IOSpec
		err       string
	}{
		{"match", []runtime.IOSpec{x}, []runtime.IOSpec{y}, ""},
		{"dtype", []runtime.IOSpec{{Name: "x", DType: tensor.FP64, Shape: x.Shape}}, []runtime.IOSpec{y}, `input "x" is FP64 in the model`},
		{"rank", []runtime.IOSpec{{Name: "x", DType: tensor.FP32, Shape: []int64{4}}}, []runtime.IOSpec{y}, "shape [4]"},
		{"dimension", []runtime.IOSpec{{Name: "x", DType: tensor.FP32, Shape: []int64{1, 5}}}, []runtime.IOSpec{y}, "shape [1 5]"},
		{"undeclared output", []runtime.IOSpec{x}, []runtime.IOSpec{y, {Name: "z", DType: tensor.FP32}}, `output "z" is not declared`},
		{"missing input", nil, []runtime.IOSpec{y}, `input "x" is declared but`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := matchSpecs(cfg, tc.ins, tc.outs)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("matchSpecs = %v, want %q", err, tc.err)
			}
		})
	}
}

func TestStatusOf(t *testing.T) {
	tests := []struct {
		err  error
		code int
	}{
		{fmt.Errorf("x: %w", ErrInvalid), http.StatusBadRequest},
		{fmt.Errorf("x: %w", models.ErrNotFound), http.StatusNotFound},
		{fmt.Errorf("x: %w", ota.ErrNotFound), http.StatusNotFound},
		{fmt.Errorf("x: %w", ErrBusy), http.StatusConflict},
		{fmt.Errorf("x: %w", ErrOlderVersion), http.StatusConflict},
		{fmt.Errorf("x: %w", ErrNoPrevious), http.StatusConflict},
		{fmt.Errorf("x: %w", ErrRefused), http.StatusUnprocessableEntity},
		{fmt.Errorf("x: %w", ota.ErrDigestMismatch), http.StatusBadGateway},
		{fmt.Errorf("x: %w", cache.ErrNoSpace), http.StatusInsufficientStorage},
		{errors.New("disk on fire"), http.StatusInternalServerError},
	}
	for _, tc := range tests {
		if got := statusOf(tc.err); got != tc.code {
			t.Errorf("statusOf(%v) = %d, want %d", tc.err, got, tc.code)
		}
	}
}
