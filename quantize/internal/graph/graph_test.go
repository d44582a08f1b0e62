package graph

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/edgefleet/edgefleet/quantize/onnxpb"
)

func model(nodes ...*onnxpb.NodeProto) *onnxpb.ModelProto {
	return &onnxpb.ModelProto{
		IrVersion:   7,
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Version: 13}},
		Graph: &onnxpb.GraphProto{
			Name:   "g",
			Input:  []*onnxpb.ValueInfoProto{ValueInfo("x", Float)},
			Output: []*onnxpb.ValueInfoProto{ValueInfo("y", Float)},
			Node:   nodes,
		},
	}
}

func encode(t *testing.T, m *onnxpb.ModelProto) []byte {
	t.Helper()
	b, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeRejects(t *testing.T) {
	noOpset := model(Node("Relu", "r", []string{"x"}, []string{"y"}))
	noOpset.OpsetImport = []*onnxpb.OperatorSetIdProto{{Domain: "com.example", Version: 1}}
	empty := model()
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"text", []byte("this is a text file, not a model\n")},
		{"truncated", encode(t, model(Node("Relu", "r", []string{"x"}, []string{"y"})))[:20]},
		{"tensor instead of model", func() []byte { b, _ := proto.Marshal(FloatTensor("w", []int64{2}, []float32{1, 2})); return b }()},
		{"no default opset", encode(t, noOpset)},
		{"no nodes", encode(t, empty)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Decode(tc.data, ""); !errors.Is(err, ErrNotONNX) {
				t.Fatalf("error = %v, want ErrNotONNX", err)
			}
		})
	}
	if _, err := Decode(encode(t, model(Node("Relu", "r", []string{"x"}, []string{"y"}))), ""); err != nil {
		t.Fatalf("valid model: %v", err)
	}
}

func TestExternalData(t *testing.T) {
	dir := t.TempDir()
	data := FloatTensor("", nil, []float32{0, 1, 2, 3, 4, 5}).RawData
	if err := os.WriteFile(filepath.Join(dir, "weights.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	mk := func(loc, offset, length string) []byte {
		w := &onnxpb.TensorProto{Name: "w", Dims: []int64{2}, DataType: int32(Float), DataLocation: onnxpb.TensorProto_EXTERNAL}
		for _, kv := range [][2]string{{"location", loc}, {"offset", offset}, {"length", length}} {
			if kv[1] != "" {
				w.ExternalData = append(w.ExternalData, &onnxpb.StringStringEntryProto{Key: kv[0], Value: kv[1]})
			}
		}
		m := model(Node("Add", "a", []string{"x", "w"}, []string{"y"}))
		m.Graph.Initializer = []*onnxpb.TensorProto{w}
		return encode(t, m)
	}
	t.Run("loaded from the model folder", func(t *testing.T) {
		m, err := Decode(mk("weights.bin", "8", "8"), dir)
		if err != nil {
			t.Fatal(err)
		}
		w := m.Graph.Initializer[0]
		v, err := Floats(w)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(v, []float32{2, 3}) || w.DataLocation != onnxpb.TensorProto_DEFAULT || len(w.ExternalData) != 0 {
			t.Fatalf("tensor = %v (%v, %v)", v, w.DataLocation, w.ExternalData)
		}
	})
	bad := []struct {
		name, loc, off, length, dir, msg string
	}{
		{"no folder given", "weights.bin", "", "", "", "weights.bin"},
		{"file missing", "missing.bin", "", "", dir, "missing.bin"},
		{"escapes the folder", "../weights.bin", "", "", dir, "escapes"},
		{"absolute path", "/etc/passwd", "", "", dir, "escapes"},
		{"range past the end", "weights.bin", "16", "16", dir, "outside"},
		{"bad offset", "weights.bin", "x", "", dir, "offset"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(mk(tc.loc, tc.off, tc.length), tc.dir)
			if !errors.Is(err, ErrExternalData) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error = %v, want ErrExternalData mentioning %q", err, tc.msg)
			}
		})
	}
}

func TestFloats(t *testing.T) {
	tests := []struct {
		name string
		t    *onnxpb.TensorProto
		want []float32
		err  bool
	}{
		{"raw float", FloatTensor("a", []int64{3}, []float32{1, -2, 3.5}), []float32{1, -2, 3.5}, false},
		{"float_data", &onnxpb.TensorProto{Dims: []int64{2}, DataType: int32(Float), FloatData: []float32{4, 5}}, []float32{4, 5}, false},
		{"raw float16", Float16Tensor("h", []int64{2}, []float32{1, -0.5}), []float32{1, -0.5}, false},
		{"float16 in int32_data", &onnxpb.TensorProto{Dims: []int64{1}, DataType: int32(Float16), Int32Data: []int32{0x3c00}}, []float32{1}, false},
		{"double", &onnxpb.TensorProto{Dims: []int64{1}, DataType: int32(Double), DoubleData: []float64{0.25}}, []float32{0.25}, false},
		{"scalar", FloatTensor("s", nil, []float32{7}), []float32{7}, false},
		{"short raw data", &onnxpb.TensorProto{Dims: []int64{4}, DataType: int32(Float), RawData: []byte{0, 0, 0, 0}}, nil, true},
		{"not float", Int64Tensor("i", []int64{1}, []int64{1}), nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Floats(tc.t)
			if (err != nil) != tc.err {
				t.Fatalf("error = %v, want error %v", err, tc.err)
			}
			if !tc.err && !slices.Equal(got, tc.want) {
				t.Fatalf("Floats = %v, want %v", got, tc.want)
			}
		})
	}
	// Float16Tensor clamps instead of overflowing or flushing.
	v, _ := Floats(Float16Tensor("c", []int64{2}, []float32{1e9, 1e-12}))
	if v[0] != 65504 || v[1] <= 0 {
		t.Fatalf("clamped float16 = %v", v)
	}
}

func TestTopoSort(t *testing.T) {
	m := model(
		Node("Relu", "c", []string{"b"}, []string{"y"}),
		Node("Neg", "b", []string{"a"}, []string{"b"}),
		Node("Abs", "a", []string{"x"}, []string{"a"}),
	)
	if err := TopoSort(m.Graph); err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, n := range m.Graph.Node {
		order = append(order, n.Name)
	}
	if !slices.Equal(order, []string{"a", "b", "c"}) {
		t.Fatalf("order = %v", order)
	}
	cyc := model(Node("Neg", "p", []string{"q"}, []string{"p"}), Node("Neg", "q", []string{"p"}, []string{"q"}))
	if err := TopoSort(cyc.Graph); err == nil {
		t.Fatal("cycle accepted")
	}
}

func TestRemoveUnused(t *testing.T) {
	body := &onnxpb.GraphProto{
		Name:   "body",
		Output: []*onnxpb.ValueInfoProto{ValueInfo("o", Float)},
		Node:   []*onnxpb.NodeProto{Node("Identity", "id", []string{"sub_w"}, []string{"o"})},
	}
	cond := &onnxpb.NodeProto{OpType: "If", Name: "if", Input: []string{"c"}, Output: []string{"y"}, Attribute: []*onnxpb.AttributeProto{
		{Name: "then_branch", Type: onnxpb.AttributeProto_GRAPH, G: body},
		{Name: "else_branch", Type: onnxpb.AttributeProto_GRAPH, G: body},
	}}
	m := model(
		&onnxpb.NodeProto{OpType: "Constant", Name: "dead", Output: []string{"dead_c"}, Attribute: []*onnxpb.AttributeProto{{Name: "value", Type: onnxpb.AttributeProto_TENSOR, T: FloatTensor("", nil, []float32{1})}}},
		Node("Greater", "gt", []string{"x", "zero"}, []string{"c"}),
		cond,
	)
	m.Graph.Initializer = []*onnxpb.TensorProto{
		FloatTensor("zero", nil, []float32{0}), FloatTensor("sub_w", nil, []float32{1}),
		FloatTensor("unused", nil, []float32{1}), FloatTensor("default_in", nil, []float32{1}),
	}
	m.Graph.Input = append(m.Graph.Input, ValueInfo("default_in", Float))
	RemoveUnused(m.Graph)
	var inits []string
	for _, t := range m.Graph.Initializer {
		inits = append(inits, t.Name)
	}
	if !slices.Equal(inits, []string{"zero", "sub_w", "default_in"}) {
		t.Fatalf("initializers = %v: want the unused one gone, the subgraph's and the input's kept", inits)
	}
	if len(m.Graph.Node) != 2 {
		t.Fatalf("%d nodes: want the dead Constant removed", len(m.Graph.Node))
	}
}

func TestUniqueAndScope(t *testing.T) {
	m := model(Node("Relu", "r", []string{"x"}, []string{"y"}))
	m.Graph.Initializer = []*onnxpb.TensorProto{FloatTensor("w", nil, []float32{3})}
	names := ModelNames(m)
	ix := NewIndexNames(m.Graph, names)
	if got := ix.Unique("y"); got != "y_1" {
		t.Fatalf("Unique(y) = %q", got)
	}
	if got := ix.Unique("y"); got != "y_2" {
		t.Fatalf("second Unique(y) = %q", got)
	}
	if got := ix.Unique("fresh"); got != "fresh" {
		t.Fatalf("Unique(fresh) = %q", got)
	}
	// A subgraph index sharing the names never reuses them.
	sub := NewIndexNames(&onnxpb.GraphProto{}, names)
	if got := sub.Unique("fresh"); got != "fresh_1" {
		t.Fatalf("subgraph Unique(fresh) = %q", got)
	}
	// The subgraph resolves the outer initializer; an input shadows it.
	s := &Scope{Ix: sub, Parent: &Scope{Ix: ix}}
	if _, ok := s.Const("w"); !ok {
		t.Fatal("outer constant not found")
	}
	shadow := NewIndex(&onnxpb.GraphProto{Input: []*onnxpb.ValueInfoProto{ValueInfo("w", Float)}})
	if _, ok := (&Scope{Ix: shadow, Parent: &Scope{Ix: ix}}).Const("w"); ok {
		t.Fatal("a subgraph input named like an outer constant resolved to the constant")
	}
}

func TestEnsureOpset(t *testing.T) {
	m := model(Node("Relu", "r", []string{"x"}, []string{"y"}))
	m.IrVersion = 4
	prev, changed := EnsureOpset(m, 13)
	if prev != 13 || changed {
		t.Fatalf("EnsureOpset(13) on opset 13 = %d, %v", prev, changed)
	}
	m.OpsetImport[0].Version = 9
	prev, changed = EnsureOpset(m, 11)
	if prev != 9 || !changed || m.OpsetImport[0].Version != 11 || m.IrVersion != 6 {
		t.Fatalf("raise: prev %d changed %v opset %d ir %d", prev, changed, m.OpsetImport[0].Version, m.IrVersion)
	}
	EnsureDomain(m, "com.microsoft", 1)
	EnsureDomain(m, "com.microsoft", 1)
	if len(m.OpsetImport) != 2 {
		t.Fatalf("opset imports = %v", m.OpsetImport)
	}
}

func TestStripNodeMetadata(t *testing.T) {
	n := Node("Relu", "r", []string{"x"}, []string{"y"})
	// metadata_props (field 9) and an unrelated unknown field (8).
	var unk []byte
	unk = protowire.AppendTag(unk, 9, protowire.BytesType)
	unk = protowire.AppendBytes(unk, []byte("stack trace"))
	unk = protowire.AppendTag(unk, 8, protowire.BytesType)
	unk = protowire.AppendBytes(unk, []byte("overload"))
	n.ProtoReflect().SetUnknown(unk)
	m := model(n)
	if got := StripNodeMetadata(m.Graph); got != 2+len("stack trace") {
		t.Fatalf("removed %d bytes", got)
	}
	rest := m.Graph.Node[0].ProtoReflect().GetUnknown()
	num, _, l := protowire.ConsumeTag(rest)
	if num != 8 || l <= 0 {
		t.Fatalf("kept unknown fields %q: want field 8 only", rest)
	}
}
