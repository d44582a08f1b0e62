package opset

import (
	"errors"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/quantize/internal/graph"
	"github.com/edgefleet/edgefleet/quantize/onnxpb"
)

func model(v int64, nodes ...*onnxpb.NodeProto) *onnxpb.ModelProto {
	return &onnxpb.ModelProto{
		IrVersion:   4,
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Version: v}},
		Graph: &onnxpb.GraphProto{
			Name: "g", Node: nodes,
			Input:  []*onnxpb.ValueInfoProto{graph.ValueInfo("x", graph.Float)},
			Output: []*onnxpb.ValueInfoProto{graph.ValueInfo("y", graph.Float)},
		},
	}
}

func ints(name string, v ...int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: name, Type: onnxpb.AttributeProto_INTS, Ints: v}
}

func TestUpgradeRewrites(t *testing.T) {
	m := model(9,
		graph.Node("Slice", "s", []string{"x"}, []string{"a"}, ints("starts", 0), ints("ends", 2), ints("axes", 1)),
		graph.Node("Squeeze", "q", []string{"a"}, []string{"b"}, ints("axes", 0)),
		graph.Node("Clip", "c", []string{"b"}, []string{"y"},
			&onnxpb.AttributeProto{Name: "min", Type: onnxpb.AttributeProto_FLOAT, F: 0},
			&onnxpb.AttributeProto{Name: "max", Type: onnxpb.AttributeProto_FLOAT, F: 6}),
	)
	rep, err := Upgrade(m, 13, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := graph.Opset(m, ""); v != 13 || m.IrVersion < 7 {
		t.Errorf("opset %d, IR %d; want 13 and IR >= 7", v, m.IrVersion)
	}
	for _, n := range m.Graph.Node {
		if len(n.Attribute) != 0 {
			t.Errorf("%s keeps attributes %v", n.GetOpType(), n.Attribute)
		}
	}
	want := map[string]int{"s": 4, "q": 2, "c": 3}
	for _, n := range m.Graph.Node {
		if len(n.Input) != want[n.GetName()] {
			t.Errorf("%s has inputs %v", n.GetName(), n.Input)
		}
	}
	ix := graph.NewIndex(m.Graph)
	if v, _ := graph.Int64s(ix.Init[m.Graph.Node[0].Input[2]]); len(v) != 1 || v[0] != 2 {
		t.Errorf("Slice ends = %v, want [2]", v)
	}
	if rep.From != 9 || rep.To != 13 || rep.Rewritten["Slice@10"] != 1 || rep.Rewritten["Clip@11"] != 1 || rep.Rewritten["Squeeze@13"] != 1 {
		t.Errorf("report %+v", rep)
	}
	if !strings.Contains(rep.String(), "from 9 to 13") {
		t.Errorf("String() = %q", rep.String())
	}
}

func TestUpgradeNoop(t *testing.T) {
	m := model(13, graph.Node("Relu", "r", []string{"x"}, []string{"y"}))
	rep, err := Upgrade(m, 11, Options{})
	if err != nil || rep.From != 13 || rep.To != 13 {
		t.Fatalf("rep %+v, err %v", rep, err)
	}
}

func TestUpgradeRefusesAtomically(t *testing.T) {
	m := model(8,
		graph.Node("Slice", "s", []string{"x"}, []string{"a"}, ints("starts", 0), ints("ends", 2)),
		graph.Node("Scan", "loop", []string{"a"}, []string{"y"}),
	)
	_, err := Upgrade(m, 13, Options{})
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), `node "loop": operator Scan changed in opset 9`) {
		t.Fatalf("err = %v", err)
	}
	if v, _ := graph.Opset(m, ""); v != 8 || len(m.Graph.Node[0].Attribute) != 2 {
		t.Errorf("a refused conversion changed the model (opset %d, Slice attributes %v)", v, m.Graph.Node[0].Attribute)
	}
}

func TestChangedOps(t *testing.T) {
	ops := ChangedOps(9, 13)
	for v, op := range map[int64]string{10: "Slice", 11: "Clip", 12: "Dropout", 13: "Softmax"} {
		if !strings.Contains(strings.Join(ops[v], ","), op) {
			t.Errorf("opset %d: %v lacks %s", v, ops[v], op)
		}
	}
}
