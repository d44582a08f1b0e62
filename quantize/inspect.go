package quantize

import (
	"errors"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/edgefleet/edgefleet/quantize/internal/graph"
	"github.com/edgefleet/edgefleet/quantize/onnxpb"
)

// Input describes one model input (a graph input that is not an
// initializer).
type Input struct {
	Name string
	// Type is the ONNX element type's name (FLOAT, INT64, ...).
	Type string
	// Shape holds the dimensions, -1 where a dimension is symbolic or
	// unknown; nil when the model declares no shape.
	Shape []int64
}

// Inputs lists model's inputs in order. It reads the model only (no
// external data, no onnxruntime).
func Inputs(model []byte) ([]Input, error) {
	m, err := decodeStructure(model)
	if err != nil {
		return nil, err
	}
	names := modelInputs(m)
	var out []Input
	for _, vi := range m.GetGraph().GetInput() {
		if !slices.Contains(names, vi.GetName()) {
			continue
		}
		in := Input{Name: vi.GetName()}
		tt := vi.GetType().GetTensorType()
		in.Type = onnxpb.TensorProto_DataType(tt.GetElemType()).String()
		if sh := tt.GetShape(); sh != nil {
			in.Shape = make([]int64, len(sh.GetDim()))
			for i, d := range sh.GetDim() {
				in.Shape[i] = -1
				if v, ok := d.GetValue().(*onnxpb.TensorShapeProto_Dimension_DimValue); ok {
					in.Shape[i] = v.DimValue
				}
			}
		}
		out = append(out, in)
	}
	return out, nil
}

// Candidates lists the nodes of model's main graph, in graph order, whose
// operator type Dynamic or Static can convert, named as in Report. With a
// quantized model whose Report is lost, Sensitivity(ctx, fp32, q, data,
// &Report{Quantized: candidates}) measures every such node's drift.
func Candidates(model []byte) ([]NodeInfo, error) {
	m, err := decodeStructure(model)
	if err != nil {
		return nil, err
	}
	ops := slices.Concat(StaticOpTypes(), DynamicOpTypes)
	var out []NodeInfo
	for i, n := range m.Graph.Node {
		if graph.IsDefaultDomain(n) && slices.Contains(ops, n.GetOpType()) {
			out = append(out, NodeInfo{Name: nodeName(n, i), OpType: n.GetOpType()})
		}
	}
	return out, nil
}

// decodeStructure decodes model for its graph structure: tensors kept in
// missing external files are no error here.
func decodeStructure(model []byte) (*onnxpb.ModelProto, error) {
	m, err := graph.Decode(model, "")
	if !errors.Is(err, ErrExternalData) {
		return m, err
	}
	m = &onnxpb.ModelProto{}
	if err := proto.Unmarshal(model, m); err != nil {
		return nil, err
	}
	return m, nil
}

// Outputs lists model's output names in order.
func Outputs(model []byte) ([]string, error) {
	m, err := decodeStructure(model)
	if err != nil {
		return nil, err
	}
	return modelOutputs(m), nil
}
