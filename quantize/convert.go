package quantize

import (
	"context"
	"errors"
	"fmt"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/edgefleet/edgefleet/quantize/internal/graph"
	"github.com/edgefleet/edgefleet/quantize/onnxpb"
	"github.com/edgefleet/edgefleet/quantize/opset"
)

// ConversionReport describes an opset conversion (package opset).
type ConversionReport = opset.Report

// StaticOpset is the default-domain opset Static converts older models to:
// per-channel DequantizeLinear needs 13.
const StaticOpset = 13

// Convert upgrades model's default-domain operator set to target (package
// opset), rewriting the operators that changed in between. When
// onnxruntime is available the values' element types and ranks are
// inferred with it, which lets Softmax over the last axis and Clip/Pad
// bounds of any float type convert without guesses. Errors wrap
// ErrUnsupported (an operator that cannot be converted, named) or
// ErrNotONNX.
func Convert(ctx context.Context, model []byte, target int64, opts Options) ([]byte, *ConversionReport, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	m, err := graph.Decode(model, opts.ExternalDataDir)
	if err != nil {
		return nil, nil, err
	}
	rep, err := convertModel(m, target)
	if err != nil {
		return nil, nil, err
	}
	out, err := graph.Encode(m)
	if err != nil {
		return nil, nil, err
	}
	return out, rep, nil
}

// convertModel upgrades m in place, with types and ranks from onnxruntime
// when it can load m.
func convertModel(m *onnxpb.ModelProto, target int64) (*ConversionReport, error) {
	var o opset.Options
	if cur, _ := graph.Opset(m, graph.DefaultDomain); cur < target {
		o.Types, o.Ranks = inferShapes(m)
	}
	rep, err := opset.Upgrade(m, target, o)
	if errors.Is(err, opset.ErrUnsupported) {
		return nil, fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	return rep, err
}

// inferShapes returns the element types and ranks onnxruntime infers for
// the main graph's values, or nils when it cannot.
func inferShapes(m *onnxpb.ModelProto) (map[string]int32, map[string]int) {
	if !ort.IsInitialized() && InitRuntime("") != nil {
		return nil, nil
	}
	c := graph.Clone(m)
	g := c.Graph
	have := map[string]bool{}
	for _, vi := range g.GetOutput() {
		have[vi.GetName()] = true
	}
	for _, n := range g.GetNode() {
		for _, o := range n.GetOutput() {
			if o != "" && !have[o] {
				have[o] = true
				g.Output = append(g.Output, &onnxpb.ValueInfoProto{Name: o})
			}
		}
	}
	g.ValueInfo = nil
	data, err := graph.Encode(c)
	if err != nil {
		return nil, nil
	}
	_, outs, err := ort.GetInputOutputInfoWithONNXData(data)
	if err != nil {
		return nil, nil
	}
	types, ranks := map[string]int32{}, map[string]int{}
	for _, o := range outs {
		if o.OrtValueType == ort.ONNXTypeTensor {
			types[o.Name] = int32(o.DataType)
			if o.Dimensions != nil {
				ranks[o.Name] = len(o.Dimensions)
			}
		}
	}
	return types, ranks
}
