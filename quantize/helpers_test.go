package quantize

import (
	"math/rand/v2"
	"testing"

	"github.com/edgefleet/edgefleet/deploy/testenv"
	"github.com/edgefleet/edgefleet/quantize/internal/graph"
	"github.com/edgefleet/edgefleet/quantize/onnxpb"
)

// needRuntime initialises onnxruntime, skipping the test when the library
// is missing (failing it under CI).
func needRuntime(t testing.TB) {
	t.Helper()
	if err := InitRuntime(testenv.ORTLibrary(t)); err != nil {
		t.Fatalf("onnxruntime: %v", err)
	}
}

// builder assembles small models for tests.
type builder struct{ m *onnxpb.ModelProto }

func newBuilder(opset int64) *builder {
	return &builder{m: &onnxpb.ModelProto{
		IrVersion:   8,
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Version: opset}},
		Graph:       &onnxpb.GraphProto{Name: "test"},
	}}
}

func (b *builder) input(name string, e graph.Elem, dims ...int64) *builder {
	b.m.Graph.Input = append(b.m.Graph.Input, valueInfo(name, e, dims))
	return b
}

func (b *builder) output(name string, e graph.Elem, dims ...int64) *builder {
	b.m.Graph.Output = append(b.m.Graph.Output, valueInfo(name, e, dims))
	return b
}

func (b *builder) init(name string, dims []int64, v []float32) *builder {
	b.m.Graph.Initializer = append(b.m.Graph.Initializer, graph.FloatTensor(name, dims, v))
	return b
}

func (b *builder) constant(name string, dims []int64, v []float32) *builder {
	b.m.Graph.Node = append(b.m.Graph.Node, &onnxpb.NodeProto{
		OpType: "Constant", Name: name + "_const", Output: []string{name},
		Attribute: []*onnxpb.AttributeProto{{Name: "value", Type: onnxpb.AttributeProto_TENSOR, T: graph.FloatTensor("", dims, v)}},
	})
	return b
}

func (b *builder) node(op, name string, in, out []string, attrs ...*onnxpb.AttributeProto) *builder {
	b.m.Graph.Node = append(b.m.Graph.Node, graph.Node(op, name, in, out, attrs...))
	return b
}

func (b *builder) bytes(t testing.TB) []byte {
	t.Helper()
	data, err := graph.Encode(b.m)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func valueInfo(name string, e graph.Elem, dims []int64) *onnxpb.ValueInfoProto {
	vi := graph.ValueInfo(name, e)
	shape := &onnxpb.TensorShapeProto{}
	for _, d := range dims {
		dim := &onnxpb.TensorShapeProto_Dimension{}
		if d < 0 {
			dim.Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "N"}
		} else {
			dim.Value = &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d}
		}
		shape.Dim = append(shape.Dim, dim)
	}
	vi.GetType().GetTensorType().Shape = shape
	return vi
}

func randFloats(r *rand.Rand, n int, scale float32) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = (r.Float32()*2 - 1) * scale
	}
	return out
}

// run executes model on b in onnxruntime and returns the float32 outputs.
func run(t testing.TB, model []byte, b Batch, outputs ...string) [][]float32 {
	t.Helper()
	m, err := graph.Decode(model, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(outputs) == 0 {
		outputs = modelOutputs(m)
	}
	s, err := newSession(model, modelInputs(m), outputs)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	outs, err := s.Run(b)
	if err != nil {
		t.Fatal(err)
	}
	res := make([][]float32, len(outs))
	for i, o := range outs {
		res[i] = o.F32
	}
	return res
}

// opCounts counts the node types of model's main graph.
func opCounts(t testing.TB, model []byte) map[string]int {
	t.Helper()
	m, err := graph.Decode(model, "")
	if err != nil {
		t.Fatal(err)
	}
	c := map[string]int{}
	for _, n := range m.Graph.Node {
		c[n.OpType]++
	}
	return c
}

func maxAbsDiff(a, b []float32) float64 {
	var m float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		if d < 0 {
			d = -d
		}
		m = max(m, d)
	}
	return m
}

func maxAbs(a []float32) float64 {
	var m float64
	for _, v := range a {
		m = max(m, float64(v), -float64(v))
	}
	return m
}
