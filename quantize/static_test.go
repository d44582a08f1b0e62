package quantize

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/edgefleet/edgefleet/quantize/internal/graph"
	"github.com/edgefleet/edgefleet/quantize/onnxpb"
)

// smallCNN builds input [N,1,8,8] -> Conv(4x1x3x3, pad 1)+bias -> Relu ->
// MaxPool 2x2 -> Flatten -> Gemm(transB, 10x64)+bias -> logits.
func smallCNN(t testing.TB, r *rand.Rand, constantWeights bool) []byte {
	b := newBuilder(17).input("input", graph.Float, -1, 1, 8, 8).output("logits", graph.Float, -1, 10)
	convW := randFloats(r, 4*9, 0.5)
	fcW := randFloats(r, 10*64, 0.3)
	if constantWeights {
		b.constant("conv.w", []int64{4, 1, 3, 3}, convW).constant("fc.w", []int64{10, 64}, fcW)
	} else {
		b.init("conv.w", []int64{4, 1, 3, 3}, convW).init("fc.w", []int64{10, 64}, fcW)
	}
	b.init("conv.b", []int64{4}, randFloats(r, 4, 0.1)).init("fc.b", []int64{10}, randFloats(r, 10, 0.1)).
		node("Conv", "conv", []string{"input", "conv.w", "conv.b"}, []string{"c"},
			&onnxpb.AttributeProto{Name: "pads", Type: onnxpb.AttributeProto_INTS, Ints: []int64{1, 1, 1, 1}},
			&onnxpb.AttributeProto{Name: "kernel_shape", Type: onnxpb.AttributeProto_INTS, Ints: []int64{3, 3}}).
		node("Relu", "relu", []string{"c"}, []string{"r"}).
		node("MaxPool", "pool", []string{"r"}, []string{"p"},
			&onnxpb.AttributeProto{Name: "kernel_shape", Type: onnxpb.AttributeProto_INTS, Ints: []int64{2, 2}},
			&onnxpb.AttributeProto{Name: "strides", Type: onnxpb.AttributeProto_INTS, Ints: []int64{2, 2}}).
		node("Flatten", "flat", []string{"p"}, []string{"f"}).
		node("Gemm", "fc", []string{"f", "fc.w", "fc.b"}, []string{"logits"}, graph.IntAttr("transB", 1))
	return b.bytes(t)
}

func randBatches(r *rand.Rand, n, batch int) []Batch {
	out := make([]Batch, n)
	for i := range out {
		x := make([]float32, batch*64)
		for j := range x {
			x[j] = r.Float32()
		}
		out[i] = Batch{{Name: "input", Shape: []int64{int64(batch), 1, 8, 8}, Data: x}}
	}
	return out
}

func TestStaticSmallCNN(t *testing.T) {
	needRuntime(t)
	r := rand.New(rand.NewPCG(11, 12))
	calib := randBatches(r, 4, 8)
	test := randBatches(r, 1, 16)[0]
	for _, tc := range []struct {
		name     string
		constant bool
		opts     Options
	}{
		{"minmax int8", false, Options{}},
		{"Constant-node weights", true, Options{}},
		{"uint8 activations per tensor", false, Options{ActivationType: Uint8, PerTensor: true}},
		{"percentile", false, Options{Calibration: Percentile}},
		{"entropy", false, Options{Calibration: Entropy, HistogramBins: 512}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fp32 := smallCNN(t, rand.New(rand.NewPCG(1, 1)), tc.constant)
			q, rep, err := Static(context.Background(), fp32, calib, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			ops := opCounts(t, q)
			if ops["Relu"] != 0 || ops["QuantizeLinear"] == 0 || ops["DequantizeLinear"] < 4 {
				t.Fatalf("ops = %v: want Relu folded and QDQ pairs", ops)
			}
			if rep.Weights != 2 || rep.PerChannel == tc.opts.PerTensor {
				t.Fatalf("report = %+v", rep)
			}
			qm, err := graph.Decode(q, "")
			if err != nil {
				t.Fatal(err)
			}
			checkQDQModel(t, qm, tc.opts)
			want := run(t, fp32, Batch{test[0]})[0]
			got := run(t, q, Batch{test[0]})[0]
			if d := maxAbsDiff(got, want); d > 0.05*maxAbs(want)+0.02 {
				t.Fatalf("int8 differs from fp32 by %g (max %g)", d, maxAbs(want))
			}
		})
	}
}

// checkQDQModel checks the initializers of a QDQ model: int8 weights with
// per-channel scales where asked, int32 biases, activation zero points of
// the activation type.
func checkQDQModel(t *testing.T, m *onnxpb.ModelProto, opts Options) {
	t.Helper()
	inits := map[string]*onnxpb.TensorProto{}
	for _, i := range m.Graph.Initializer {
		inits[i.Name] = i
	}
	act := graph.Int8
	if opts.ActivationType == Uint8 {
		act = graph.Uint8
	}
	for _, n := range m.Graph.Node {
		if n.OpType != "DequantizeLinear" && n.OpType != "QuantizeLinear" {
			continue
		}
		x, s, zp := inits[n.Input[0]], inits[n.Input[1]], inits[n.Input[2]]
		if s == nil || zp == nil {
			t.Fatalf("%s %s: scale or zero point is not an initializer", n.OpType, n.Name)
		}
		if n.OpType == "QuantizeLinear" && graph.Elem(zp.DataType) != act {
			t.Errorf("%s: activation zero point is %v, want %v", n.Name, graph.Elem(zp.DataType), act)
		}
		if x == nil {
			continue
		}
		switch graph.Elem(x.DataType) {
		case graph.Int32: // bias: zero point 0
			v, _ := graph.Int64s(zp)
			for _, z := range v {
				if z != 0 {
					t.Errorf("bias %s has zero point %d", n.Input[0], z)
				}
			}
		case graph.Int8:
			if len(x.Dims) >= 2 && !opts.PerTensor && graph.NumElements(s.Dims) != x.Dims[graph.AttrInt(n, "axis", 1)] {
				t.Errorf("weight %s %v: %d scales, want one per channel", n.Input[0], x.Dims, graph.NumElements(s.Dims))
			}
		}
	}
}

func TestStaticErrors(t *testing.T) {
	needRuntime(t)
	r := rand.New(rand.NewPCG(2, 2))
	fp32 := smallCNN(t, r, false)
	tests := []struct {
		name  string
		model []byte
		calib []Batch
		opts  Options
		want  error
	}{
		{"empty calibration", fp32, nil, Options{}, ErrEmptyCalibration},
		{"batch misses the input", fp32, []Batch{{{Name: "other", Shape: []int64{1}, Data: []float32{1}}}}, Options{}, ErrInvalidOptions},
		{"not onnx", []byte("definitely not a model"), randBatches(r, 1, 1), Options{}, ErrNotONNX},
		{"unknown op type", fp32, randBatches(r, 1, 1), Options{IncludeOpTypes: []string{"NonMaxSuppression"}}, ErrUnsupported},
		{"everything excluded", fp32, randBatches(r, 1, 1), Options{ExcludeOpTypes: StaticOpTypes()}, ErrNothingToQuantize},
		{"bad percentile", fp32, randBatches(r, 1, 1), Options{Calibration: Percentile, Percentile: 120}, ErrInvalidOptions},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Static(context.Background(), tc.model, tc.calib, tc.opts)
			if !errors.Is(err, tc.want) {
				t.Fatalf("error = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestNaming(t *testing.T) {
	needRuntime(t)
	r := rand.New(rand.NewPCG(13, 13))
	fp32 := smallCNN(t, rand.New(rand.NewPCG(1, 1)), false)
	calib := randBatches(r, 2, 4)
	names := func(model []byte) (nodes, values map[string]bool) {
		m, err := graph.Decode(model, "")
		if err != nil {
			t.Fatal(err)
		}
		nodes, values = map[string]bool{}, map[string]bool{}
		for _, n := range m.Graph.Node {
			nodes[n.Name] = true
			for _, o := range n.Output {
				values[o] = true
			}
		}
		for _, i := range m.Graph.Initializer {
			values[i.Name] = true
		}
		return nodes, values
	}
	for _, tc := range []struct {
		name  string
		quant func(Options) ([]byte, *Report, error)
		ort   []string // values named as onnxruntime's tool names them
	}{
		{"static", func(o Options) ([]byte, *Report, error) { return Static(context.Background(), fp32, calib, o) },
			[]string{"input_QuantizeLinear_Output", "input_DequantizeLinear_Output", "conv.w_quantized", "conv.w_scale", "r_scale", "r_zero_point"}},
		{"dynamic", func(o Options) ([]byte, *Report, error) { return Dynamic(context.Background(), fp32, o) },
			[]string{"input_quantized", "input_scale", "input_zero_point", "conv.w_quantized", "c_output_quantized"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ortModel, _, err := tc.quant(Options{ORTNames: true})
			if err != nil {
				t.Fatal(err)
			}
			_, values := names(ortModel)
			for _, v := range tc.ort {
				if !values[v] {
					t.Errorf("ORTNames: no value %q", v)
				}
			}
			compact, _, err := tc.quant(Options{})
			if err != nil {
				t.Fatal(err)
			}
			nodes, values := names(compact)
			for _, v := range tc.ort {
				if values[v] {
					t.Errorf("compact names: value %q present", v)
				}
			}
			for _, n := range []string{"conv", "fc"} {
				if !nodes[n] {
					t.Errorf("original node %q lost its name", n)
				}
			}
			if len(compact) >= len(ortModel) {
				t.Errorf("compact model %d bytes, ORT-named %d", len(compact), len(ortModel))
			}
			// Both run and agree exactly: names change nothing else.
			in := randBatches(r, 1, 2)[0]
			if d := maxAbsDiff(run(t, compact, in)[0], run(t, ortModel, in)[0]); d != 0 {
				t.Errorf("outputs differ by %g", d)
			}
		})
	}
}
