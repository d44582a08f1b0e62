// Package opset upgrades an ONNX model's default-domain operator set, as
// ONNX's version converter does: every node whose operator changed
// incompatibly between the model's opset and the target is rewritten to the
// newer form (Slice's attributes become inputs, Upsample becomes Resize,
// Softmax keeps its opset-13-changed meaning through Flatten and Reshape,
// ...), then the opset import is raised.
//
// # Basics
//
// Upgrade converts a decoded model in place; Convert works on serialized
// bytes. Both return a Report of what was rewritten. Operators whose change
// has no rewrite here (Scan 8 → 9, a BatchNormalization with spatial=0, a
// Resize-10 whose scales are computed at run time, ...) make the conversion
// fail with an error wrapping ErrUnsupported that names the node, the
// operator and the opset where it changed; nothing is converted then.
//
// Conversions run from opset 7 to at most MaxTarget. Other domains
// (ai.onnx.ml, com.microsoft, custom) are left untouched.
//
// # Caveats
//
// Clip and Pad take their bounds as inputs from opset 11: the constants are
// typed from the model's value infos, or Options.Types, falling back to
// float32 (the only type most exporters use for them).
package opset

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/edgefleet/edgefleet/quantize/internal/graph"
	"github.com/edgefleet/edgefleet/quantize/onnxpb"
)

// ErrUnsupported is wrapped by the errors of conversions this package cannot
// do: a target out of range, or an operator whose change it cannot rewrite.
var ErrUnsupported = errors.New("opset conversion unsupported")

// MinSource is the oldest default-domain opset Upgrade converts from.
const MinSource = 7

// MaxTarget is the newest default-domain opset Upgrade converts to.
const MaxTarget = 18

// Options tune a conversion. The zero value is ready to use.
type Options struct {
	// Types gives the element type (onnxpb.TensorProto_DataType) of values
	// the model's value infos do not declare; Clip and Pad bounds are typed
	// from it. Nil: value infos, initializers and a walk through
	// type-preserving operators, else float32.
	Types map[string]int32
	// Ranks gives the rank of values the value infos do not shape. Softmax,
	// LogSoftmax and Hardmax over the last axis need no rewrite to opset 13;
	// without a known rank they get the general Flatten/Reshape form.
	Ranks map[string]int
}

// Report describes an upgrade.
type Report struct {
	From int64 `json:"from"`
	To   int64 `json:"to"`
	// Rewritten counts the nodes rewritten per change ("Slice@10",
	// "Upsample@10->Resize", ...).
	Rewritten map[string]int `json:"rewritten,omitempty"`
}

// String summarises the report in one line.
func (r *Report) String() string {
	if r.From == r.To {
		return fmt.Sprintf("default-domain opset %d kept", r.From)
	}
	keys := make([]string, 0, len(r.Rewritten))
	for k := range r.Rewritten {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s×%d", k, r.Rewritten[k])
	}
	s := fmt.Sprintf("default-domain opset converted from %d to %d", r.From, r.To)
	if len(parts) > 0 {
		s += " (rewrote " + strings.Join(parts, ", ") + ")"
	}
	return s
}

// Convert decodes model, upgrades it to target and encodes it.
func Convert(model []byte, target int64, opts Options) ([]byte, *Report, error) {
	m, err := graph.Decode(model, "")
	if err != nil {
		return nil, nil, err
	}
	rep, err := Upgrade(m, target, opts)
	if err != nil {
		return nil, nil, err
	}
	out, err := graph.Encode(m)
	return out, rep, err
}

// Upgrade converts m's default domain to opset target in place. A model
// already at target or newer is left as it is (Report.From == Report.To).
// On error m is unchanged.
func Upgrade(m *onnxpb.ModelProto, target int64, opts Options) (*Report, error) {
	from, ok := graph.Opset(m, graph.DefaultDomain)
	if !ok {
		return nil, fmt.Errorf("%w: the model imports no default-domain opset", ErrUnsupported)
	}
	rep := &Report{From: from, To: from, Rewritten: map[string]int{}}
	if from >= target {
		return rep, nil
	}
	if target > MaxTarget {
		return nil, fmt.Errorf("%w: target opset %d is above %d, the newest this converter knows", ErrUnsupported, target, MaxTarget)
	}
	if from < MinSource {
		return nil, fmt.Errorf("%w: the model imports opset %d; conversion starts at opset %d (opset 7 changed broadcasting)", ErrUnsupported, from, MinSource)
	}
	work := proto.Clone(m).(*onnxpb.ModelProto)
	c := &converter{m: work, names: graph.ModelNames(work), opts: opts, rep: rep}
	c.collectTypes()
	for v := from + 1; v <= target; v++ {
		if err := c.graph(work.Graph, v); err != nil {
			return nil, err
		}
	}
	graph.EnsureOpset(work, target)
	rep.To = target
	proto.Reset(m)
	proto.Merge(m, work)
	return rep, nil
}

// converter holds one upgrade's state.
type converter struct {
	m     *onnxpb.ModelProto
	names graph.Names
	opts  Options
	rep   *Report
	// types are the known element types of values.
	types map[string]int32
	// producers maps every value to the node writing it (all graphs).
	producers map[string]*onnxpb.NodeProto
	// consts maps initializer and Constant-node values to their tensors.
	consts map[string]*onnxpb.TensorProto
	seq    int
}

// unique returns a fresh value name derived from base.
func (c *converter) unique(base string) string {
	name := base
	for i := 1; c.names[name]; i++ {
		name = fmt.Sprintf("%s_%d", base, i)
	}
	c.names[name] = true
	return name
}

func (c *converter) collectTypes() {
	c.types = map[string]int32{}
	c.producers = map[string]*onnxpb.NodeProto{}
	c.consts = map[string]*onnxpb.TensorProto{}
	var walk func(g *onnxpb.GraphProto)
	walk = func(g *onnxpb.GraphProto) {
		for _, vis := range [][]*onnxpb.ValueInfoProto{g.GetInput(), g.GetOutput(), g.GetValueInfo()} {
			for _, vi := range vis {
				if e, ok := graph.ElemOf(vi); ok {
					c.types[vi.GetName()] = int32(e)
				}
			}
		}
		for _, t := range g.GetInitializer() {
			c.types[t.GetName()] = t.GetDataType()
			c.consts[t.GetName()] = t
		}
		for _, n := range g.GetNode() {
			for _, o := range n.GetOutput() {
				c.producers[o] = n
			}
			if n.GetOpType() == "Constant" && graph.IsDefaultDomain(n) && len(n.Output) == 1 {
				if a := graph.Attr(n, "value"); a != nil && a.GetT() != nil {
					c.consts[n.Output[0]] = a.GetT()
					c.types[n.Output[0]] = a.GetT().GetDataType()
				}
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
	walk(c.m.Graph)
	for k, v := range c.opts.Types {
		if _, ok := c.types[k]; !ok {
			c.types[k] = v
		}
	}
}

// sameType lists operators whose first output has their first input's type.
var sameType = map[string]bool{
	"Add": true, "Sub": true, "Mul": true, "Div": true, "Relu": true, "Clip": true, "Conv": true, "ConvTranspose": true,
	"BatchNormalization": true, "Sigmoid": true, "HardSigmoid": true, "Tanh": true, "MaxPool": true, "AveragePool": true,
	"GlobalAveragePool": true, "GlobalMaxPool": true, "Reshape": true, "Transpose": true, "Squeeze": true, "Unsqueeze": true,
	"Flatten": true, "Slice": true, "Concat": true, "Split": true, "Pad": true, "Resize": true, "Upsample": true,
	"Softmax": true, "LogSoftmax": true, "MatMul": true, "Gemm": true, "LeakyRelu": true, "PRelu": true, "Pow": true,
	"Sqrt": true, "Exp": true, "Log": true, "Abs": true, "Neg": true, "Identity": true, "Dropout": true, "Gather": true,
	"ReduceMean": true, "ReduceSum": true, "ReduceMax": true, "ReduceMin": true, "Erf": true, "Expand": true, "Tile": true,
	"InstanceNormalization": true, "LRN": true, "Elu": true, "Selu": true, "Softplus": true, "HardSwish": true, "Max": true, "Min": true,
}

// elemType returns the element type of value name, float32 when unknown.
func (c *converter) elemType(name string) int32 {
	for range 10000 {
		if t, ok := c.types[name]; ok && t != 0 {
			return t
		}
		n := c.producers[name]
		if n == nil || !graph.IsDefaultDomain(n) || len(n.Input) == 0 {
			break
		}
		switch {
		case n.GetOpType() == "Cast":
			return int32(graph.AttrInt(n, "to", int64(graph.Float)))
		case n.GetOpType() == "Shape" || n.GetOpType() == "Size" || n.GetOpType() == "ArgMax" || n.GetOpType() == "ArgMin":
			return int32(graph.Int64)
		case sameType[n.GetOpType()]:
			name = n.Input[0]
		default:
			return int32(graph.Float)
		}
	}
	return int32(graph.Float)
}

// scalar builds a 0-d tensor of element type e holding v.
func scalar(name string, e int32, v float64) (*onnxpb.TensorProto, error) {
	t := &onnxpb.TensorProto{Name: name, DataType: e}
	switch graph.Elem(e) {
	case graph.Float:
		t.FloatData = []float32{float32(v)}
	case graph.Double:
		t.DoubleData = []float64{v}
	case graph.Float16:
		return graph.Float16Tensor(name, nil, []float32{float32(v)}), nil
	case graph.Int64:
		t.Int64Data = []int64{int64(v)}
	case graph.Int32, graph.Int16, graph.Int8, graph.Uint8, graph.Uint16:
		t.Int32Data = []int32{int32(v)}
	default:
		return nil, fmt.Errorf("no scalar of element type %d", e)
	}
	return t, nil
}

// step describes a node rewrite needed when crossing to opset version.
type step func(c *converter, g *onnxpb.GraphProto, n *onnxpb.NodeProto) ([]*onnxpb.NodeProto, string, error)

// steps maps a default-domain opset version to the operators that changed
// incompatibly in it and how to rewrite them. Operators whose changes were
// compatible (new attributes with the old behaviour as default, new types,
// negative axes) need no rewrite and are not listed.
var steps = map[int64]map[string]step{
	9: {
		"BatchNormalization": batchNorm9,
		"Upsample":           upsample9,
		"Scan":               nil,
	},
	10: {
		"Slice":    slice10,
		"TopK":     topK10,
		"Upsample": upsample10,
	},
	11: {
		"Pad":     pad11,
		"Clip":    clip11,
		"Resize":  resize11,
		"Scatter": scatter11,
	},
	12: {
		"Dropout": dropout12,
	},
	13: {
		"Squeeze":    axesToInput("Squeeze"),
		"Unsqueeze":  axesToInput("Unsqueeze"),
		"ReduceSum":  axesToInput("ReduceSum"),
		"Split":      split13,
		"Softmax":    softmax13,
		"LogSoftmax": softmax13,
		"Hardmax":    softmax13,
	},
	16: {
		"RoiAlign": roiAlign16,
	},
	18: {
		"ReduceMean":      axesToInput("ReduceMean"),
		"ReduceMax":       axesToInput("ReduceMax"),
		"ReduceMin":       axesToInput("ReduceMin"),
		"ReduceProd":      axesToInput("ReduceProd"),
		"ReduceL1":        axesToInput("ReduceL1"),
		"ReduceL2":        axesToInput("ReduceL2"),
		"ReduceLogSum":    axesToInput("ReduceLogSum"),
		"ReduceLogSumExp": axesToInput("ReduceLogSumExp"),
		"ReduceSumSquare": axesToInput("ReduceSumSquare"),
		"Split":           split18,
	},
}

// ChangedOps returns, per opset version from from+1 to to, the operators
// whose meaning changed in that version (those Upgrade rewrites or
// refuses).
func ChangedOps(from, to int64) map[int64][]string {
	out := map[int64][]string{}
	for v := from + 1; v <= to; v++ {
		for op := range steps[v] {
			out[v] = append(out[v], op)
		}
		slices.Sort(out[v])
	}
	return out
}

// graph rewrites g's nodes (and its subgraphs') for opset version v.
func (c *converter) graph(g *onnxpb.GraphProto, v int64) error {
	var out []*onnxpb.NodeProto
	for i, n := range g.Node {
		for _, a := range n.GetAttribute() {
			if a.GetG() != nil {
				if err := c.graph(a.GetG(), v); err != nil {
					return err
				}
			}
			for _, sg := range a.GetGraphs() {
				if err := c.graph(sg, v); err != nil {
					return err
				}
			}
		}
		fn, listed := steps[v][n.GetOpType()]
		if !graph.IsDefaultDomain(n) || !listed {
			out = append(out, n)
			continue
		}
		name := n.GetName()
		if name == "" {
			name = fmt.Sprintf("%s_%d", n.GetOpType(), i)
		}
		if fn == nil {
			return fmt.Errorf("%w: node %q: operator %s changed in opset %d and has no conversion", ErrUnsupported, name, n.GetOpType(), v)
		}
		op := n.GetOpType()
		nodes, what, err := fn(c, g, n)
		if err != nil {
			return fmt.Errorf("%w: node %q: %s changed in opset %d: %v", ErrUnsupported, name, n.GetOpType(), v, err)
		}
		c.rep.Rewritten[fmt.Sprintf("%s@%d%s", op, v, what)]++
		out = append(out, nodes...)
	}
	g.Node = out
	return nil
}

// --- helpers ---

func takeAttr(n *onnxpb.NodeProto, name string) *onnxpb.AttributeProto {
	for i, a := range n.Attribute {
		if a.GetName() == name {
			n.Attribute = slices.Delete(n.Attribute, i, i+1)
			return a
		}
	}
	return nil
}

func setString(n *onnxpb.NodeProto, name, v string) {
	if a := graph.Attr(n, name); a != nil {
		a.S = []byte(v)
		return
	}
	n.Attribute = append(n.Attribute, &onnxpb.AttributeProto{Name: name, Type: onnxpb.AttributeProto_STRING, S: []byte(v)})
}

func strAttr(n *onnxpb.NodeProto, name, def string) string {
	if a := graph.Attr(n, name); a != nil {
		return string(a.GetS())
	}
	return def
}

// addInit adds an initializer to g under a fresh name and returns it.
func (c *converter) addInit(g *onnxpb.GraphProto, base string, t *onnxpb.TensorProto) string {
	t.Name = c.unique(base)
	g.Initializer = append(g.Initializer, t)
	c.consts[t.Name] = t
	c.types[t.Name] = t.GetDataType()
	return t.Name
}

func (c *converter) ints(g *onnxpb.GraphProto, base string, v []int64) string {
	return c.addInit(g, base, graph.Int64Tensor("", []int64{int64(len(v))}, v))
}

// setInput sets n's input k, padding with empty (omitted) inputs.
func setInput(n *onnxpb.NodeProto, k int, name string) {
	for len(n.Input) <= k {
		n.Input = append(n.Input, "")
	}
	n.Input[k] = name
}

func baseName(n *onnxpb.NodeProto, suffix string) string {
	if n.GetName() != "" {
		return n.GetName() + "_" + suffix
	}
	if len(n.Output) > 0 && n.Output[0] != "" {
		return n.Output[0] + "_" + suffix
	}
	return suffix
}

// --- rewrites ---

// batchNorm9 drops BatchNormalization's spatial attribute (removed in 9);
// only spatial=1, the old default, keeps its meaning.
func batchNorm9(_ *converter, _ *onnxpb.GraphProto, n *onnxpb.NodeProto) ([]*onnxpb.NodeProto, string, error) {
	if a := takeAttr(n, "spatial"); a != nil && a.GetI() != 1 {
		return nil, "", fmt.Errorf("spatial=%d has no opset-9 equivalent", a.GetI())
	}
	return []*onnxpb.NodeProto{n}, "", nil
}

// upsample9 moves Upsample-7's scales attribute to an input.
func upsample9(c *converter, g *onnxpb.GraphProto, n *onnxpb.NodeProto) ([]*onnxpb.NodeProto, string, error) {
	a := takeAttr(n, "scales")
	if a == nil {
		return []*onnxpb.NodeProto{n}, "", nil
	}
	s := c.addInit(g, baseName(n, "scales"), graph.FloatTensor("", []int64{int64(len(a.GetFloats()))}, a.GetFloats()))
	setInput(n, 1, s)
	return []*onnxpb.NodeProto{n}, "", nil
}

// upsample10 replaces the deprecated Upsample with Resize-10 (same inputs
// and mode).
func upsample10(c *converter, g *onnxpb.GraphProto, n *onnxpb.NodeProto) ([]*onnxpb.NodeProto, string, error) {
	if len(n.Input) < 2 || n.Input[1] == "" {
		if _, _, err := upsample9(c, g, n); err != nil {
			return nil, "", err
		}
	}
	if len(n.Input) < 2 || n.Input[1] == "" {
		return nil, "", errors.New("no scales")
	}
	n.OpType = "Resize"
	return []*onnxpb.NodeProto{n}, "->Resize", nil
}

// slice10 moves Slice-1's starts, ends and axes attributes to inputs.
func slice10(c *converter, g *onnxpb.GraphProto, n *onnxpb.NodeProto) ([]*onnxpb.NodeProto, string, error) {
	starts, ends, axes := takeAttr(n, "starts"), takeAttr(n, "ends"), takeAttr(n, "axes")
	if starts == nil || ends == nil {
		return nil, "", errors.New("starts or ends missing")
	}
	setInput(n, 1, c.ints(g, baseName(n, "starts"), starts.GetInts()))
	setInput(n, 2, c.ints(g, baseName(n, "ends"), ends.GetInts()))
	if axes != nil {
		setInput(n, 3, c.ints(g, baseName(n, "axes"), axes.GetInts()))
	}
	n.Input = n.Input[:max(3, len(n.Input))]
	return []*onnxpb.NodeProto{n}, "", nil
}

// topK10 moves TopK-1's k attribute to an input.
func topK10(c *converter, g *onnxpb.GraphProto, n *onnxpb.NodeProto) ([]*onnxpb.NodeProto, string, error) {
	k := takeAttr(n, "k")
	if k == nil {
		return nil, "", errors.New("k missing")
	}
	setInput(n, 1, c.ints(g, baseName(n, "k"), []int64{k.GetI()}))
	return []*onnxpb.NodeProto{n}, "", nil
}

// pad11 moves Pad-2's pads and value attributes to inputs.
func pad11(c *converter, g *onnxpb.GraphProto, n *onnxpb.NodeProto) ([]*onnxpb.NodeProto, string, error) {
	pads := takeAttr(n, "pads")
	if pads == nil {
		return nil, "", errors.New("pads missing")
	}
	value := takeAttr(n, "value")
	setInput(n, 1, c.ints(g, baseName(n, "pads"), pads.GetInts()))
	mode := strAttr(n, "mode", "constant")
	if value != nil && value.GetF() != 0 && mode == "constant" {
		t, err := scalar("", c.elemType(n.Input[0]), float64(value.GetF()))
		if err != nil {
			return nil, "", err
		}
		setInput(n, 2, c.addInit(g, baseName(n, "value"), t))
	}
	return []*onnxpb.NodeProto{n}, "", nil
}

// clip11 moves Clip-6's min and max attributes to inputs.
func clip11(c *converter, g *onnxpb.GraphProto, n *onnxpb.NodeProto) ([]*onnxpb.NodeProto, string, error) {
	lo, hi := takeAttr(n, "min"), takeAttr(n, "max")
	e := c.elemType(n.Input[0])
	for k, a := range []*onnxpb.AttributeProto{lo, hi} {
		if a == nil {
			continue
		}
		v := float64(a.GetF())
		if math.IsInf(v, 0) || math.Abs(v) >= math.MaxFloat32 {
			continue // no bound on this side
		}
		t, err := scalar("", e, v)
		if err != nil {
			return nil, "", err
		}
		setInput(n, 1+k, c.addInit(g, baseName(n, []string{"min", "max"}[k]), t))
	}
	return []*onnxpb.NodeProto{n}, "", nil
}

// resize11 gives Resize-10 (and converted Upsample) Resize-11's inputs (X,
// roi, scales) and spells out opset 10's coordinate mapping: asymmetric,
// and for nearest onnxruntime's opset-10 rounding (floor when upsampling,
// ceil when downsampling).
func resize11(c *converter, g *onnxpb.GraphProto, n *onnxpb.NodeProto) ([]*onnxpb.NodeProto, string, error) {
	if len(n.Input) < 2 {
		return nil, "", errors.New("no scales input")
	}
	scales := n.Input[1]
	n.Input = []string{n.Input[0], "", scales}
	mode := strAttr(n, "mode", "nearest")
	setString(n, "coordinate_transformation_mode", "asymmetric")
	if mode == "nearest" {
		t, ok := c.consts[scales]
		if !ok {
			return nil, "", errors.New("nearest mode with scales computed at run time (its rounding depends on them)")
		}
		s, err := graph.Floats(t)
		if err != nil {
			return nil, "", err
		}
		up, down := false, false
		for _, x := range s {
			up = up || x > 1
			down = down || x < 1
		}
		switch {
		case up && down:
			return nil, "", errors.New("nearest mode that upsamples some axes and downsamples others")
		case down:
			setString(n, "nearest_mode", "ceil")
		default:
			setString(n, "nearest_mode", "floor")
		}
	}
	return []*onnxpb.NodeProto{n}, "", nil
}

// scatter11 renames the deprecated Scatter to ScatterElements (same
// meaning).
func scatter11(_ *converter, _ *onnxpb.GraphProto, n *onnxpb.NodeProto) ([]*onnxpb.NodeProto, string, error) {
	n.OpType = "ScatterElements"
	return []*onnxpb.NodeProto{n}, "->ScatterElements", nil
}

// dropout12 moves Dropout's ratio attribute to an input (inference ignores
// it, but the node keeps its meaning in training mode).
func dropout12(c *converter, g *onnxpb.GraphProto, n *onnxpb.NodeProto) ([]*onnxpb.NodeProto, string, error) {
	r := takeAttr(n, "ratio")
	if r == nil {
		return []*onnxpb.NodeProto{n}, "", nil
	}
	t, err := scalar("", int32(graph.Float), float64(r.GetF()))
	if err != nil {
		return nil, "", err
	}
	setInput(n, 1, c.addInit(g, baseName(n, "ratio"), t))
	return []*onnxpb.NodeProto{n}, "", nil
}

// axesToInput moves an axes attribute to the second input.
func axesToInput(op string) step {
	return func(c *converter, g *onnxpb.GraphProto, n *onnxpb.NodeProto) ([]*onnxpb.NodeProto, string, error) {
		a := takeAttr(n, "axes")
		if a == nil {
			return []*onnxpb.NodeProto{n}, "", nil
		}
		setInput(n, 1, c.ints(g, baseName(n, "axes"), a.GetInts()))
		return []*onnxpb.NodeProto{n}, "", nil
	}
}

// split13 moves Split's split attribute to an input.
func split13(c *converter, g *onnxpb.GraphProto, n *onnxpb.NodeProto) ([]*onnxpb.NodeProto, string, error) {
	a := takeAttr(n, "split")
	if a == nil {
		return []*onnxpb.NodeProto{n}, "", nil
	}
	setInput(n, 1, c.ints(g, baseName(n, "split"), a.GetInts()))
	return []*onnxpb.NodeProto{n}, "", nil
}

// split18 adds num_outputs to a Split without split sizes (opset 18 asks
// for one of the two).
func split18(_ *converter, _ *onnxpb.GraphProto, n *onnxpb.NodeProto) ([]*onnxpb.NodeProto, string, error) {
	if len(n.Input) > 1 && n.Input[1] != "" {
		return []*onnxpb.NodeProto{n}, "", nil
	}
	n.Attribute = append(n.Attribute, graph.IntAttr("num_outputs", int64(len(n.Output))))
	return []*onnxpb.NodeProto{n}, "", nil
}

// rank returns the rank of value name: declared by a value info or a
// constant, given in Options.Ranks, or derived through the operators that
// produce it.
func (c *converter) rank(name string) (int, bool) {
	return c.rankDepth(name, 0)
}

func (c *converter) rankDepth(name string, depth int) (int, bool) {
	if depth > 200 {
		return 0, false
	}
	var find func(g *onnxpb.GraphProto) (int, bool)
	find = func(g *onnxpb.GraphProto) (int, bool) {
		for _, vis := range [][]*onnxpb.ValueInfoProto{g.GetInput(), g.GetOutput(), g.GetValueInfo()} {
			for _, vi := range vis {
				if vi.GetName() == name {
					if s := vi.GetType().GetTensorType().GetShape(); s != nil {
						return len(s.GetDim()), true
					}
				}
			}
		}
		return 0, false
	}
	if r, ok := find(c.m.Graph); ok {
		return r, true
	}
	if t, ok := c.consts[name]; ok {
		return len(t.GetDims()), true
	}
	if r, ok := c.opts.Ranks[name]; ok && r > 0 {
		return r, true
	}
	n := c.producers[name]
	if n == nil || !graph.IsDefaultDomain(n) || len(n.Input) == 0 {
		return 0, false
	}
	in := func(i int) (int, bool) {
		if i >= len(n.Input) || n.Input[i] == "" {
			return 0, false
		}
		return c.rankDepth(n.Input[i], depth+1)
	}
	switch op := n.GetOpType(); op {
	case "Transpose":
		if a := graph.Attr(n, "perm"); a != nil {
			return len(a.GetInts()), true
		}
		return in(0)
	case "Reshape":
		if t, ok := c.consts[n.Input[1]]; ok && len(t.GetDims()) == 1 {
			return int(t.GetDims()[0]), true
		}
	case "Add", "Sub", "Mul", "Div", "Pow", "MatMul", "Where", "Max", "Min", "Equal", "Less", "Greater":
		a, aok := in(0)
		b, bok := in(1)
		if aok && bok {
			return max(a, b), true
		}
	case "Squeeze", "Unsqueeze":
		a := graph.Attr(n, "axes")
		r, ok := in(0)
		if a == nil || !ok {
			break
		}
		if op == "Squeeze" {
			return r - len(a.GetInts()), true
		}
		return r + len(a.GetInts()), true
	case "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2":
		if graph.AttrInt(n, "keepdims", 1) == 1 {
			return in(0)
		}
	case "Flatten":
		return 2, true
	case "Shape":
		return 1, true
	default:
		if sameType[op] && op != "Gather" && op != "Expand" && op != "Tile" && op != "Gemm" {
			return in(0)
		}
	}
	return 0, false
}

// softmax13 keeps the opset-1..12 meaning of Softmax, LogSoftmax and
// Hardmax (the input coerced to 2-D at axis) under opset 13 (along axis
// only): unchanged when axis is the last dimension, else Flatten(axis) →
// op(axis=-1) → Reshape to the input's shape.
func softmax13(c *converter, _ *onnxpb.GraphProto, n *onnxpb.NodeProto) ([]*onnxpb.NodeProto, string, error) {
	axis := graph.AttrInt(n, "axis", 1)
	if axis == -1 {
		return []*onnxpb.NodeProto{n}, "", nil
	}
	for _, v := range []string{n.Input[0], n.Output[0]} {
		if r, ok := c.rank(v); ok && axis == int64(r-1) {
			return []*onnxpb.NodeProto{n}, "", nil
		}
	}
	x, y := n.Input[0], n.Output[0]
	base := baseName(n, "2d")
	flat, shape, out2d := c.unique(base+"_in"), c.unique(base+"_shape"), c.unique(base+"_out")
	nodes := []*onnxpb.NodeProto{
		graph.Node("Shape", c.unique(base+"_Shape"), []string{x}, []string{shape}),
		graph.Node("Flatten", c.unique(base+"_Flatten"), []string{x}, []string{flat}, graph.IntAttr("axis", axis)),
	}
	takeAttr(n, "axis")
	n.Attribute = append(n.Attribute, graph.IntAttr("axis", -1))
	n.Input[0], n.Output[0] = flat, out2d
	nodes = append(nodes, n, graph.Node("Reshape", c.unique(base+"_Reshape"), []string{out2d, shape}, []string{y}))
	return nodes, "(2-D)", nil
}

// roiAlign16 pins RoiAlign's coordinate mode to its pre-16 behaviour (the
// default changed from output_half_pixel to half_pixel).
func roiAlign16(_ *converter, _ *onnxpb.GraphProto, n *onnxpb.NodeProto) ([]*onnxpb.NodeProto, string, error) {
	if graph.Attr(n, "coordinate_transformation_mode") == nil {
		setString(n, "coordinate_transformation_mode", "output_half_pixel")
	}
	return []*onnxpb.NodeProto{n}, "", nil
}
