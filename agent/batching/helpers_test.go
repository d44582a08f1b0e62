package batching_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/csv"
	"math"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/batching"
	"github.com/edgefleet/edgefleet/agent/internal/testenv"
	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/tensor"
)

// identityDTypes are the inputs of identity_all.onnx, in model order.
var identityDTypes = []tensor.DType{tensor.Bool, tensor.Uint8, tensor.Uint16, tensor.Uint32, tensor.Uint64,
	tensor.Int8, tensor.Int16, tensor.Int32, tensor.Int64, tensor.FP16, tensor.FP32, tensor.FP64, tensor.Bytes}

// session opens a real onnxruntime session on a committed fixture.
func session(t testing.TB, fixture string) *runtime.Session {
	t.Helper()
	testenv.InitORT(t)
	s, err := runtime.NewSession(testenv.Fixture(t, fixture), runtime.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// newBatcher starts a Batcher closed at the end of the test (after the
// gates registered later have released their runs).
func newBatcher(t *testing.T, run batching.RunFunc, opts batching.Options) *batching.Batcher {
	b := batching.New(run, opts)
	t.Cleanup(b.Close)
	return b
}

// runOf adapts a session to a RunFunc.
func runOf(s *runtime.Session) func(context.Context, []tensor.Tensor, []string) ([]tensor.Tensor, error) {
	return func(_ context.Context, in []tensor.Tensor, outs []string) ([]tensor.Tensor, error) {
		res, err := s.Run(in, outs)
		return res.Outputs, err
	}
}

// identityRequest builds an [n,3] request for identity_all.onnx whose every
// element depends on seed, so that rows of different requests differ.
func identityRequest(n int64, seed int, outputs []string) *batching.Request {
	req := &batching.Request{Outputs: outputs}
	for _, dt := range identityDTypes {
		t := tensor.Tensor{Name: "in_" + dt.String(), DType: dt, Shape: []int64{n, 3}}
		switch dt {
		case tensor.Bytes:
			for i := range n * 3 {
				t.Strings = append(t.Strings, []byte("s"+strconv.Itoa(seed)+"/"+strconv.FormatInt(i, 10)+"\xff"))
			}
		case tensor.FP32:
			for i := range n * 3 {
				t.Data = binary.LittleEndian.AppendUint32(t.Data, math.Float32bits(float32(seed)*0.25+float32(i)*1e-3-1))
			}
		default:
			t.Data = make([]byte, int(n)*3*dt.Size())
			for i := range t.Data {
				t.Data[i] = byte(i*37 + seed*11 + int(dt))
				switch dt {
				case tensor.Bool:
					t.Data[i] &= 1
				case tensor.FP16, tensor.FP64:
					t.Data[i] &= 0x3f // finite values only
				}
			}
		}
		req.Inputs = append(req.Inputs, t)
	}
	return req
}

// equalTensors reports whether two output lists are byte-identical.
func equalTensors(t *testing.T, what string, got, want []tensor.Tensor) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d outputs, want %d", what, len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Name != w.Name || g.DType != w.DType || !slices.Equal(g.Shape, w.Shape) ||
			!bytes.Equal(g.Data, w.Data) || !slices.EqualFunc(g.Strings, w.Strings, bytes.Equal) {
			t.Fatalf("%s: output %d = %s %v %v (%d bytes), want %s %v %v (%d bytes)", what, i,
				g.Name, g.DType, g.Shape, len(g.Data), w.Name, w.DType, w.Shape, len(w.Data))
		}
	}
}

// gate wraps a RunFunc, records every run and can hold runs until released
// (to queue requests deterministically behind a busy worker).
type gate struct {
	t       *testing.T
	inner   func(context.Context, []tensor.Tensor, []string) ([]tensor.Tensor, error)
	entered chan int64 // rows of each run as it starts

	mu   sync.Mutex    // guards hold and runs
	hold chan struct{} // non-nil: runs wait until it is closed
	runs []runRec
}

type runRec struct {
	rows    int64
	outputs []string
}

func newGate(t *testing.T, inner func(context.Context, []tensor.Tensor, []string) ([]tensor.Tensor, error)) *gate {
	return &gate{t: t, inner: inner, entered: make(chan int64, 1024)}
}

func (g *gate) run(ctx context.Context, in []tensor.Tensor, outs []string) ([]tensor.Tensor, error) {
	rows := int64(-1)
	if len(in) > 0 && len(in[0].Shape) > 0 {
		rows = in[0].Shape[0]
	}
	g.mu.Lock()
	g.runs = append(g.runs, runRec{rows, slices.Clone(outs)})
	hold := g.hold
	g.mu.Unlock()
	g.entered <- rows
	if hold != nil {
		<-hold
	}
	return g.inner(ctx, in, outs)
}

// block makes the runs that start from now on wait until the returned
// release is called (runs that started earlier keep their own hold).
func (g *gate) block() (release func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	h := make(chan struct{})
	g.hold = h
	var once sync.Once
	release = func() {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			close(h)
			if g.hold == h {
				g.hold = nil
			}
		})
	}
	g.t.Cleanup(release) // a failed test must not leave runs (and Close) hanging
	return release
}

func (g *gate) records() []runRec {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.runs)
}

// waitEntered waits for the next run to start and returns its rows.
func (g *gate) waitEntered(t *testing.T) int64 {
	t.Helper()
	select {
	case r := <-g.entered:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("no run started")
		return 0
	}
}

// sizes collects ObserveBatch calls.
type sizes struct {
	mu sync.Mutex
	v  []int
}

func (s *sizes) observe(n int) {
	s.mu.Lock()
	s.v = append(s.v, n)
	s.mu.Unlock()
}

func (s *sizes) get() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.v)
}

// digits is the held-out digits set: pixels scaled to 0..1, 64 per row.
func digits(t testing.TB) [][]float32 {
	t.Helper()
	rows, err := csv.NewReader(bytes.NewReader(testenv.Fixture(t, "digits/test.csv"))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]float32
	for _, r := range rows[1:] {
		px := make([]float32, 64)
		for i := range px {
			v, err := strconv.ParseFloat(r[i+1], 32)
			if err != nil {
				t.Fatal(err)
			}
			px[i] = float32(v) / 16
		}
		out = append(out, px)
	}
	return out
}

// digitsRequest builds an [n,1,8,8] request from rows [from, from+n).
func digitsRequest(px [][]float32, from, n int) *batching.Request {
	var data []byte
	for i := from; i < from+n; i++ {
		for _, v := range px[i%len(px)] {
			data = binary.LittleEndian.AppendUint32(data, math.Float32bits(v))
		}
	}
	return &batching.Request{Inputs: []tensor.Tensor{{Name: "input", DType: tensor.FP32, Shape: []int64{int64(n), 1, 8, 8}, Data: data}}}
}
