package quantize

import (
	"slices"

	"github.com/edgefleet/edgefleet/quantize/internal/graph"
)

// Candidates lists the nodes of model's main graph, in graph order, whose
// operator type Dynamic or Static can convert, named as in Report. With a
// quantized model whose Report is lost, Sensitivity(ctx, fp32, q, data,
// &Report{Quantized: candidates}) measures every such node's drift.
func Candidates(model []byte) ([]NodeInfo, error) {
	m, err := graph.Decode(model, "")
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
