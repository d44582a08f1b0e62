package runtime_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/edgefleet/edgefleet/agent/internal/testenv"
	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/tensor"
)

func f32(name string, shape []int64, vals ...float32) tensor.Tensor {
	b := make([]byte, 4*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return tensor.Tensor{Name: name, DType: tensor.FP32, Shape: shape, Data: b}
}

func i64scalar(name string, v int64) tensor.Tensor {
	b := binary.LittleEndian.AppendUint64(nil, uint64(v))
	return tensor.Tensor{Name: name, DType: tensor.Int64, Shape: []int64{}, Data: b}
}

func identityInputs(n int64) []tensor.Tensor {
	var ins []tensor.Tensor
	for _, dt := range []tensor.DType{tensor.Bool, tensor.Uint8, tensor.Uint16, tensor.Uint32, tensor.Uint64,
		tensor.Int8, tensor.Int16, tensor.Int32, tensor.Int64, tensor.FP16, tensor.FP32, tensor.FP64, tensor.Bytes} {
		t := tensor.Tensor{Name: "in_" + dt.String(), DType: dt, Shape: []int64{n, 3}}
		if dt == tensor.Bytes {
			for i := range n * 3 {
				t.Strings = append(t.Strings, []byte{'s', byte('a' + i), 0xff, 0x80})
			}
		} else {
			t.Data = make([]byte, int(n)*3*dt.Size())
			for i := range t.Data {
				t.Data[i] = byte(i*37 + int(dt))
			}
			if dt == tensor.Bool {
				for i := range t.Data {
					t.Data[i] &= 1
				}
			}
			if dt == tensor.FP32 {
				t = f32(t.Name, t.Shape, slices.Repeat([]float32{1.5, -2, 1e-3}, int(n))...)
			}
			if dt == tensor.FP16 || dt == tensor.FP64 {
				// keep finite values: random bytes can form NaNs whose payload ORT may canonicalise
				for i := range t.Data {
					t.Data[i] &= 0x3f
				}
			}
		}
		ins = append(ins, t)
	}
	return ins
}

func TestRunEveryDType(t *testing.T) {
	testenv.InitORT(t)
	s, err := runtime.NewSession(testenv.Fixture(t, "dtypes/identity_all.onnx"), runtime.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, n := range []int64{1, 4} {
		ins := identityInputs(n)
		res, err := s.Run(ins, nil)
		if err != nil {
			t.Fatalf("batch %d: %v", n, err)
		}
		if len(res.Outputs) != len(ins)+1 {
			t.Fatalf("got %d outputs, want %d", len(res.Outputs), len(ins)+1)
		}
		for i, in := range ins {
			out := res.Outputs[i]
			if out.Name != "out_"+in.DType.String() || out.DType != in.DType || !slices.Equal(out.Shape, in.Shape) {
				t.Fatalf("output %d = %s %v %v, want out_%v %v", i, out.Name, out.DType, out.Shape, in.DType, in.Shape)
			}
			if in.DType == tensor.Bytes {
				if !slices.EqualFunc(out.Strings, in.Strings, bytes.Equal) {
					t.Errorf("BYTES round trip: got %q want %q", out.Strings, in.Strings)
				}
			} else if !bytes.Equal(out.Data, in.Data) {
				t.Errorf("%v round trip: got %x want %x", in.DType, out.Data, in.Data)
			}
		}
		dbl := res.Outputs[len(ins)]
		want := f32("", nil, slices.Repeat([]float32{3, -4, 2e-3}, int(n))...).Data
		if !bytes.Equal(dbl.Data, want) {
			t.Errorf("double_fp32 = %x, want %x", dbl.Data, want)
		}
	}
}

func TestRunOutputSubsetAndOrder(t *testing.T) {
	testenv.InitORT(t)
	s, err := runtime.NewSession(testenv.Fixture(t, "dtypes/identity_all.onnx"), runtime.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	res, err := s.Run(identityInputs(2), []string{"double_fp32", "out_INT8"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Outputs) != 2 || res.Outputs[0].Name != "double_fp32" || res.Outputs[1].Name != "out_INT8" {
		t.Fatalf("outputs = %v", res.Outputs)
	}
}

func TestRunBadInput(t *testing.T) {
	testenv.InitORT(t)
	s, err := runtime.NewSession(testenv.Model(t, "silero_vad_op18_ifless.onnx"), runtime.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	good := func() []tensor.Tensor {
		return []tensor.Tensor{
			f32("input", []int64{1, 512}, make([]float32, 512)...),
			i64scalar("sr", 16000),
			f32("state", []int64{2, 1, 128}, make([]float32, 256)...),
		}
	}
	if _, err := s.Run(good(), nil); err != nil {
		t.Fatalf("good input: %v", err)
	}
	cases := []struct {
		name   string
		mutate func([]tensor.Tensor) []tensor.Tensor
		outs   []string
	}{
		{"missing input", func(in []tensor.Tensor) []tensor.Tensor { return in[:2] }, nil},
		{"extra input", func(in []tensor.Tensor) []tensor.Tensor { return append(in, i64scalar("bogus", 1)) }, nil},
		{"duplicate input", func(in []tensor.Tensor) []tensor.Tensor { return append(in, in[0]) }, nil},
		{"wrong dtype", func(in []tensor.Tensor) []tensor.Tensor {
			in[1] = tensor.Tensor{Name: "sr", DType: tensor.Int32, Shape: []int64{}, Data: make([]byte, 4)}
			return in
		}, nil},
		{"wrong rank", func(in []tensor.Tensor) []tensor.Tensor { in[0].Shape = []int64{512}; return in }, nil},
		{"wrong static dim", func(in []tensor.Tensor) []tensor.Tensor {
			in[2] = f32("state", []int64{2, 2, 64}, make([]float32, 256)...)
			return in
		}, nil},
		{"data length mismatch", func(in []tensor.Tensor) []tensor.Tensor { in[0].Data = in[0].Data[:100]; return in }, nil},
		{"unknown output", func(in []tensor.Tensor) []tensor.Tensor { return in }, []string{"nope"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Run(tc.mutate(good()), tc.outs)
			if !errors.Is(err, runtime.ErrInvalidInput) {
				t.Fatalf("err = %v, want ErrInvalidInput", err)
			}
		})
	}
	// The session still serves after every bad request.
	if _, err := s.Run(good(), nil); err != nil {
		t.Fatalf("good input after bad ones: %v", err)
	}
}

func TestProviderFallbackAtLoad(t *testing.T) {
	testenv.InitORT(t)
	model := testenv.Fixture(t, "dtypes/identity_all.onnx")
	for _, providers := range [][]string{{"cuda", "cpu"}, {"tensorrt", "cuda"}, {"cuda"}} {
		s, err := runtime.NewSession(model, runtime.Config{Providers: providers})
		if err != nil {
			t.Fatalf("%v: %v", providers, err)
		}
		if s.Provider() != runtime.ProviderCPU || s.RequestedProvider() != providers[0] || s.FallbackReason() == "" {
			t.Errorf("%v: provider %q requested %q reason %q; want cpu fallback with a reason",
				providers, s.Provider(), s.RequestedProvider(), s.FallbackReason())
		}
		if _, err := s.Run(identityInputs(1), nil); err != nil {
			t.Errorf("%v: run after fallback: %v", providers, err)
		}
		s.Close()
	}
	if err := runtime.ValidateProviders([]string{"cuda", "npu"}); err == nil {
		t.Error("ValidateProviders accepted an unknown provider")
	}
}

func TestRuntimeFallbackToCPU(t *testing.T) {
	testenv.InitORT(t)
	s, err := runtime.NewSession(testenv.Fixture(t, "dtypes/identity_all.onnx"), runtime.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var calls atomic.Int32
	runtime.TestOnlyInjectGPUFault(s, runtime.ProviderCUDA, func() error {
		calls.Add(1)
		return errors.New("CUDA failure 700: an illegal memory access was encountered")
	})
	res, err := s.Run(identityInputs(1), []string{"double_fp32"})
	if err != nil {
		t.Fatalf("run should have been retried on CPU: %v", err)
	}
	if !res.FellBack || res.Provider != runtime.ProviderCPU {
		t.Errorf("FellBack=%v Provider=%q, want true, cpu", res.FellBack, res.Provider)
	}
	if d, why := s.Degraded(); !d || why == "" {
		t.Errorf("Degraded() = %v, %q; want true with reason", d, why)
	}
	// Later runs go straight to the CPU: the GPU session is not tried again.
	res, err = s.Run(identityInputs(1), nil)
	if err != nil || res.FellBack || calls.Load() != 1 {
		t.Errorf("second run: err=%v fellBack=%v gpu calls=%d; want nil,false,1", err, res.FellBack, calls.Load())
	}
}

func TestSileroScalarInput(t *testing.T) {
	testenv.InitORT(t)
	s, err := runtime.NewSession(testenv.Model(t, "silero_vad_op18_ifless.onnx"), runtime.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// A 440 Hz tone chunk: the model must return a probability in [0,1] and a new state.
	in := make([]float32, 512)
	for i := range in {
		in[i] = float32(0.5 * math.Sin(2*math.Pi*440*float64(i)/16000))
	}
	res, err := s.Run([]tensor.Tensor{f32("input", []int64{1, 512}, in...), i64scalar("sr", 16000),
		f32("state", []int64{2, 1, 128}, make([]float32, 256)...)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := math.Float32frombits(binary.LittleEndian.Uint32(res.Outputs[0].Data))
	if !(p >= 0 && p <= 1) || !slices.Equal(res.Outputs[1].Shape, []int64{2, 1, 128}) {
		t.Fatalf("prob %v state shape %v", p, res.Outputs[1].Shape)
	}
}

func TestFindLibrary(t *testing.T) {
	t.Setenv(runtime.LibraryEnv, "/nonexistent/libonnxruntime.so.1")
	_, err := runtime.FindLibrary("")
	if !errors.Is(err, runtime.ErrLibraryNotFound) {
		t.Fatalf("err = %v, want ErrLibraryNotFound", err)
	}
	if got := err.Error(); !bytes.Contains([]byte(got), []byte("make deps")) {
		t.Errorf("error %q does not name the fix", got)
	}
}

func TestBytesWithNULRejected(t *testing.T) {
	testenv.InitORT(t)
	s, err := runtime.NewSession(testenv.Fixture(t, "dtypes/identity_all.onnx"), runtime.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ins := identityInputs(1)
	for i := range ins {
		if ins[i].DType == tensor.Bytes {
			ins[i].Strings[1] = []byte("a\x00b")
		}
	}
	if _, err := s.Run(ins, nil); !errors.Is(err, runtime.ErrInvalidInput) {
		t.Fatalf("err = %v, want ErrInvalidInput", err)
	}
}
