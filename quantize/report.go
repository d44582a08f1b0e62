package quantize

import (
	"fmt"
	"slices"

	"github.com/edgefleet/edgefleet/quantize/internal/graph"
	"github.com/edgefleet/edgefleet/quantize/onnxpb"
)

// Mode names a kind of conversion.
type Mode string

// Conversion modes, as recorded in Report.Mode (and meant for an OCI
// artifact's precision field).
const (
	ModeDynamic Mode = "int8-dynamic"
	ModeStatic  Mode = "int8-static-qdq"
	ModeFP16    Mode = "fp16"
)

// Report describes what a conversion did.
type Report struct {
	Mode Mode `json:"mode"`
	// Quantized lists the nodes converted, in graph order.
	Quantized []NodeInfo `json:"quantized"`
	// Skipped lists candidate nodes left in float, with the reason.
	Skipped []Skip `json:"skipped,omitempty"`
	// WeightType and ActivationType are the integer types used ("INT8",
	// "UINT8"); empty for FP16.
	WeightType     string `json:"weight_type,omitempty"`
	ActivationType string `json:"activation_type,omitempty"`
	// PerChannel reports whether weights got one scale per output channel.
	PerChannel bool `json:"per_channel"`
	// Weights is the number of weight tensors converted.
	Weights int `json:"weights"`
	// OpsetBefore and OpsetAfter are the default-domain opset versions.
	OpsetBefore int64 `json:"opset_before"`
	OpsetAfter  int64 `json:"opset_after"`
	// SizeBefore and SizeAfter are the serialized model sizes in bytes.
	SizeBefore int `json:"size_before"`
	SizeAfter  int `json:"size_after"`
	// Conversion is the opset conversion applied before quantizing (nil
	// when the model's opset sufficed).
	Conversion *ConversionReport `json:"conversion,omitempty"`
	// Folded counts the rewrites Options.Fold applied before quantizing.
	Folded map[string]int `json:"folded,omitempty"`
	// Calibration describes the calibration of a static quantization.
	Calibration *CalibrationInfo `json:"calibration,omitempty"`
	// Warnings are decisions worth a look (an opset raised, per-channel
	// weights refused by an old opset, ...).
	Warnings []string `json:"warnings,omitempty"`
}

// NodeInfo names one node.
type NodeInfo struct {
	Name   string `json:"name"`
	OpType string `json:"op_type"`
}

// Skip is a candidate node left in float.
type Skip struct {
	Name   string `json:"name"`
	OpType string `json:"op_type"`
	Reason string `json:"reason"`
}

// CalibrationInfo records how activations were calibrated.
type CalibrationInfo struct {
	Method  string `json:"method"`
	Batches int    `json:"batches"`
	// Samples counts the calibration samples (the leading dimension of
	// each batch's first tensor, 1 for a scalar).
	Samples int `json:"samples,omitempty"`
	// Percentile is the Percentile method's percentile; 0 for the others.
	Percentile float64 `json:"percentile,omitempty"`
	// Ranges maps each calibrated tensor to the [min, max] range used.
	Ranges map[string][2]float32 `json:"ranges"`
}

// SizeRatio is SizeAfter/SizeBefore.
func (r *Report) SizeRatio() float64 {
	if r.SizeBefore == 0 {
		return 0
	}
	return float64(r.SizeAfter) / float64(r.SizeBefore)
}

// String summarises the report in one line.
func (r *Report) String() string {
	return fmt.Sprintf("%s: %d nodes converted, %d skipped, %d weights, %d -> %d bytes (%.1f%%), opset %d -> %d",
		r.Mode, len(r.Quantized), len(r.Skipped), r.Weights, r.SizeBefore, r.SizeAfter, 100*r.SizeRatio(), r.OpsetBefore, r.OpsetAfter)
}

// nodeName returns a name for n usable in reports and new node names.
func nodeName(n *onnxpb.NodeProto, i int) string {
	if n.GetName() != "" {
		return n.GetName()
	}
	return fmt.Sprintf("%s_%d", n.GetOpType(), i)
}

// breakingOps lists, per default-domain opset version, operators whose
// signature changed incompatibly in that version; raising a model's opset
// across such a version would silently change their meaning.
var breakingOps = map[int64][]string{
	10: {"Slice", "TopK", "Upsample", "Dropout", "AveragePool", "MaxPool"},
	11: {"Pad", "Clip", "Resize", "Upsample", "Split", "Squeeze", "Unsqueeze", "Concat", "Gather", "ScatterElements", "Scatter"},
	12: {"Dropout", "Clip", "MaxPool", "ArgMax", "ArgMin", "ReduceMax", "ReduceMin"},
	13: {"Squeeze", "Unsqueeze", "Split", "ReduceSum", "Pad", "Resize", "Softmax", "LogSoftmax", "Hardmax", "Dropout"},
}

// raiseOpset raises m's default-domain opset to v if that cannot change the
// meaning of an operator m uses; it returns a warning describing the change.
func raiseOpset(m *onnxpb.ModelProto, v int64) (string, error) {
	cur, _ := graph.Opset(m, graph.DefaultDomain)
	if cur >= v {
		return "", nil
	}
	if err := checkRaise(m, v); err != nil {
		return "", err
	}
	graph.EnsureOpset(m, v)
	return fmt.Sprintf("default-domain opset raised from %d to %d", cur, v), nil
}

// checkRaise reports whether raising m's default-domain opset to v could
// change the meaning of an operator m uses.
func checkRaise(m *onnxpb.ModelProto, v int64) error {
	cur, _ := graph.Opset(m, graph.DefaultDomain)
	used := map[string]bool{}
	var walk func(g *onnxpb.GraphProto)
	walk = func(g *onnxpb.GraphProto) {
		for _, n := range g.GetNode() {
			if graph.IsDefaultDomain(n) {
				used[n.GetOpType()] = true
			}
			for _, a := range n.GetAttribute() {
				if a.GetG() != nil {
					walk(a.GetG())
				}
				for _, sg := range a.GetGraphs() {
					walk(sg)
				}
			}
		}
	}
	walk(m.Graph)
	for ver := cur + 1; ver <= v; ver++ {
		for _, op := range breakingOps[ver] {
			if used[op] {
				return fmt.Errorf("%w: the quantized operators need default-domain opset %d but the model imports opset %d and uses %s, which changed in opset %d; convert the model to opset %d or later first",
					ErrUnsupported, v, cur, op, ver, v)
			}
		}
	}
	return nil
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
