package quantize

import (
	"fmt"

	"github.com/edgefleet/edgefleet/quantize/internal/graph"
	"github.com/edgefleet/edgefleet/quantize/onnxpb"
	"github.com/edgefleet/edgefleet/quantize/quantmath"
)

// qweight is a quantized constant added to the graph.
type qweight struct {
	// Q, Scale and ZP are the names of the quantized data, scale and zero
	// point initializers.
	Q, Scale, ZP string
	// Scales holds the scale values (one, or one per channel).
	Scales []float32
	// Axis is the channel axis for per-channel parameters, -1 per tensor.
	Axis int
	// Cols is the weight's last dimension.
	Cols int64
	// Dequantized names the float output of a DequantizeLinear of Q, once
	// one exists.
	Dequantized string
}

// quantizeWeight quantizes the float tensor w (dims as given, data in data)
// to type t and appends the initializers to g. axis < 0 quantizes per
// tensor. name is the weight's name; nm names the new initializers.
func quantizeWeight(nm *namer, g *onnxpb.GraphProto, name string, dims []int64, data []float32, t Type, symmetric, reduceRange bool, axis int) (*qweight, error) {
	base := nm.group(name, "w")
	qw := &qweight{
		Q:     nm.value(base, "_quantized", "_q"),
		Scale: nm.value(base, "_scale", "_s"),
		ZP:    nm.value(base, "_zero_point", "_z"),
		Axis:  axis,
	}
	if len(dims) > 0 {
		qw.Cols = dims[len(dims)-1]
	}
	elem := graph.Elem(t)
	if axis < 0 {
		p, q, err := quantmath.QuantizeData(data, t, symmetric, reduceRange, 0)
		if err != nil {
			return nil, fmt.Errorf("weight %q: %w", name, err)
		}
		qw.Scales = []float32{p.Scale}
		g.Initializer = append(g.Initializer,
			graph.IntTensor(qw.Q, elem, dims, q),
			graph.FloatTensor(qw.Scale, nil, qw.Scales),
			graph.IntTensor(qw.ZP, elem, nil, []int32{p.ZeroPoint}))
		return qw, nil
	}
	ps, q, err := quantmath.QuantizePerChannel(data, dims, axis, t, symmetric, reduceRange, 0)
	if err != nil {
		return nil, fmt.Errorf("weight %q: %w", name, err)
	}
	zps := make([]int32, len(ps))
	qw.Scales = make([]float32, len(ps))
	for i, p := range ps {
		qw.Scales[i] = p.Scale
		zps[i] = p.ZeroPoint
	}
	n := []int64{int64(len(ps))}
	g.Initializer = append(g.Initializer,
		graph.IntTensor(qw.Q, elem, dims, q),
		graph.FloatTensor(qw.Scale, n, qw.Scales),
		graph.IntTensor(qw.ZP, elem, n, zps))
	return qw, nil
}

// constFloat32 returns the data of name if it is a constant FLOAT tensor.
func constFloat32(s *graph.Scope, name string) (*onnxpb.TensorProto, []float32, string) {
	t, ok := s.Const(name)
	if !ok {
		return nil, nil, "not a constant (initializer or Constant node)"
	}
	if graph.Elem(t.GetDataType()) != graph.Float {
		return nil, nil, fmt.Sprintf("constant is %v, not FLOAT", graph.Elem(t.GetDataType()))
	}
	data, err := graph.Floats(t)
	if err != nil {
		return nil, nil, err.Error()
	}
	return t, data, ""
}

// transpose2D returns the [cols, rows] transpose of a row-major [rows, cols]
// matrix.
func transpose2D(data []float32, rows, cols int64) []float32 {
	out := make([]float32, len(data))
	for r := int64(0); r < rows; r++ {
		for c := int64(0); c < cols; c++ {
			out[c*rows+r] = data[r*cols+c]
		}
	}
	return out
}
