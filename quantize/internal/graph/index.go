package graph

import (
	"fmt"
	"strconv"

	"github.com/edgefleet/edgefleet/quantize/onnxpb"
)

// Index answers producer, consumer and constant lookups for one graph. It is
// a snapshot: rebuild it after changing the graph.
type Index struct {
	G *onnxpb.GraphProto
	// Producer maps a value name to the index of the node that outputs it.
	Producer map[string]int
	// Consumers maps a value name to the indexes of the nodes reading it
	// (nodes whose subgraphs read it count as readers).
	Consumers map[string][]int
	// Init maps initializer names to initializers.
	Init map[string]*onnxpb.TensorProto
	// Inputs and Outputs are the graph's input and output names.
	Inputs, Outputs map[string]bool
	names           Names
}

// Defines reports whether name is an input, initializer or node output of
// the indexed graph itself (not of an enclosing graph).
func (ix *Index) Defines(name string) bool {
	_, init := ix.Init[name]
	_, prod := ix.Producer[name]
	return init || prod || ix.Inputs[name]
}

// Scope chains the indexes of nested graphs for name resolution.
type Scope struct {
	Ix     *Index
	Parent *Scope
}

// Const resolves name to a constant in the innermost graph defining it.
func (s *Scope) Const(name string) (*onnxpb.TensorProto, bool) {
	for sc := s; sc != nil; sc = sc.Parent {
		if sc.Ix.Defines(name) {
			return sc.Ix.Const(name)
		}
	}
	return nil, false
}

// Names is a set of value and node names shared by the graphs of a model,
// so that names handed out in a subgraph collide with nothing outside it.
type Names map[string]bool

// ModelNames collects every value and node name of m, subgraphs included.
func ModelNames(m *onnxpb.ModelProto) Names {
	names := Names{}
	var walk func(g *onnxpb.GraphProto)
	walk = func(g *onnxpb.GraphProto) {
		ix := NewIndexNames(g, names)
		_ = ix
		for _, n := range g.GetNode() {
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
	walk(m.GetGraph())
	return names
}

// NewIndex indexes g with its own name set.
func NewIndex(g *onnxpb.GraphProto) *Index { return NewIndexNames(g, Names{}) }

// NewIndexNames indexes g, adding its names to names and handing out new
// names (Unique) that avoid everything in names.
func NewIndexNames(g *onnxpb.GraphProto, names Names) *Index {
	ix := &Index{
		G:         g,
		Producer:  map[string]int{},
		Consumers: map[string][]int{},
		Init:      map[string]*onnxpb.TensorProto{},
		Inputs:    map[string]bool{},
		Outputs:   map[string]bool{},
		names:     names,
	}
	for _, t := range g.GetInitializer() {
		ix.Init[t.GetName()] = t
		ix.names[t.GetName()] = true
	}
	for _, vi := range g.GetInput() {
		ix.Inputs[vi.GetName()] = true
		ix.names[vi.GetName()] = true
	}
	for _, vi := range g.GetOutput() {
		ix.Outputs[vi.GetName()] = true
		ix.names[vi.GetName()] = true
	}
	for _, vi := range g.GetValueInfo() {
		ix.names[vi.GetName()] = true
	}
	for i, n := range g.GetNode() {
		ix.names[n.GetName()] = true
		for _, o := range n.GetOutput() {
			if o != "" {
				ix.Producer[o] = i
				ix.names[o] = true
			}
		}
		seen := map[string]bool{}
		for _, in := range NodeReads(n) {
			if in == "" || seen[in] {
				continue
			}
			seen[in] = true
			ix.Consumers[in] = append(ix.Consumers[in], i)
		}
	}
	return ix
}

// NodeReads returns the names n reads: its inputs and the outer-scope names
// its subgraphs read.
func NodeReads(n *onnxpb.NodeProto) []string {
	out := append([]string(nil), n.GetInput()...)
	for _, a := range n.GetAttribute() {
		if a.GetG() != nil {
			out = append(out, outerReads(a.GetG())...)
		}
		for _, sg := range a.GetGraphs() {
			out = append(out, outerReads(sg)...)
		}
	}
	return out
}

// outerReads lists the names a subgraph reads that it does not define.
func outerReads(g *onnxpb.GraphProto) []string {
	defined := map[string]bool{}
	for _, vi := range g.GetInput() {
		defined[vi.GetName()] = true
	}
	for _, t := range g.GetInitializer() {
		defined[t.GetName()] = true
	}
	for _, n := range g.GetNode() {
		for _, o := range n.GetOutput() {
			defined[o] = true
		}
	}
	var out []string
	for _, n := range g.GetNode() {
		for _, in := range NodeReads(n) {
			if in != "" && !defined[in] {
				out = append(out, in)
			}
		}
	}
	for _, vi := range g.GetOutput() {
		if !defined[vi.GetName()] {
			out = append(out, vi.GetName())
		}
	}
	return out
}

// Const returns the constant tensor behind name: an initializer that is not
// overridable by a graph input, or the value of a Constant node (value
// attribute). ok is false when name is not a constant.
func (ix *Index) Const(name string) (t *onnxpb.TensorProto, ok bool) {
	if t, ok := ix.Init[name]; ok {
		if ix.Inputs[name] {
			return nil, false // an input with a default value can be overridden
		}
		return t, true
	}
	p, ok := ix.Producer[name]
	if !ok {
		return nil, false
	}
	n := ix.G.Node[p]
	if n.GetOpType() != "Constant" || n.GetDomain() != "" && n.GetDomain() != "ai.onnx" {
		return nil, false
	}
	for _, a := range n.GetAttribute() {
		if a.GetName() == "value" && a.GetT() != nil {
			return a.GetT(), true
		}
	}
	return nil, false
}

// Unique returns base, or base with a numeric suffix, so that the result
// collides with no name in the graph or handed out before.
func (ix *Index) Unique(base string) string {
	name := base
	for i := 1; ix.names[name]; i++ {
		name = base + "_" + strconv.Itoa(i)
	}
	ix.names[name] = true
	return name
}

// Attr returns n's attribute called name, or nil.
func Attr(n *onnxpb.NodeProto, name string) *onnxpb.AttributeProto {
	for _, a := range n.GetAttribute() {
		if a.GetName() == name {
			return a
		}
	}
	return nil
}

// AttrInt returns the integer attribute name of n, or def.
func AttrInt(n *onnxpb.NodeProto, name string, def int64) int64 {
	if a := Attr(n, name); a != nil {
		return a.GetI()
	}
	return def
}

// AttrFloat returns the float attribute name of n, or def.
func AttrFloat(n *onnxpb.NodeProto, name string, def float32) float32 {
	if a := Attr(n, name); a != nil {
		return a.GetF()
	}
	return def
}

// IntAttr builds an INT attribute.
func IntAttr(name string, v int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: name, Type: onnxpb.AttributeProto_INT, I: v}
}

// Node builds a default-domain node.
func Node(op, name string, inputs, outputs []string, attrs ...*onnxpb.AttributeProto) *onnxpb.NodeProto {
	return &onnxpb.NodeProto{OpType: op, Name: name, Input: inputs, Output: outputs, Attribute: attrs}
}

// IsDefaultDomain reports whether n is an ONNX (default-domain) operator.
func IsDefaultDomain(n *onnxpb.NodeProto) bool {
	return n.GetDomain() == "" || n.GetDomain() == "ai.onnx"
}

// TopoSort orders g's nodes so that every node comes after the producers of
// what it reads. Already-ordered graphs keep their order. It fails on a
// cycle or on a read of a value that nothing defines.
func TopoSort(g *onnxpb.GraphProto) error {
	avail := map[string]bool{"": true}
	for _, vi := range g.GetInput() {
		avail[vi.GetName()] = true
	}
	for _, t := range g.GetInitializer() {
		avail[t.GetName()] = true
	}
	for _, st := range g.GetSparseInitializer() {
		avail[st.GetValues().GetName()] = true
	}
	producers := map[string]bool{}
	for _, n := range g.GetNode() {
		for _, o := range n.GetOutput() {
			producers[o] = true
		}
	}
	pending := g.Node
	out := make([]*onnxpb.NodeProto, 0, len(pending))
	for len(pending) > 0 {
		var rest []*onnxpb.NodeProto
		progress := false
		for _, n := range pending {
			ready := true
			for _, in := range NodeReads(n) {
				if !avail[in] && producers[in] {
					ready = false
					break
				}
			}
			if !ready {
				rest = append(rest, n)
				continue
			}
			progress = true
			out = append(out, n)
			for _, o := range n.GetOutput() {
				avail[o] = true
			}
		}
		if !progress {
			return fmt.Errorf("graph %q has a cycle through node %q", g.GetName(), rest[0].GetName())
		}
		pending = rest
	}
	g.Node = out
	return nil
}

// RemoveUnused deletes initializers and Constant nodes that nothing reads
// any more and that are not graph outputs. Initializers listed as graph
// inputs are kept.
func RemoveUnused(g *onnxpb.GraphProto) {
	for {
		ix := NewIndex(g)
		changed := false
		var nodes []*onnxpb.NodeProto
		for _, n := range g.Node {
			if n.GetOpType() == "Constant" && IsDefaultDomain(n) && len(n.Output) == 1 &&
				len(ix.Consumers[n.Output[0]]) == 0 && !ix.Outputs[n.Output[0]] {
				changed = true
				continue
			}
			nodes = append(nodes, n)
		}
		g.Node = nodes
		var inits []*onnxpb.TensorProto
		for _, t := range g.Initializer {
			if len(ix.Consumers[t.GetName()]) == 0 && !ix.Outputs[t.GetName()] && !ix.Inputs[t.GetName()] {
				changed = true
				continue
			}
			inits = append(inits, t)
		}
		g.Initializer = inits
		if !changed {
			return
		}
	}
}
