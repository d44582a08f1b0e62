package quantize

import (
	"fmt"

	"github.com/edgefleet/edgefleet/quantize/internal/graph"
)

// namer hands out the names of the values and nodes a conversion adds.
//
// In onnxruntime's style (Options.ORTNames) they derive from the value they
// belong to ("x_QuantizeLinear_Output", "w_scale", node "x_QuantizeLinear").
// In the default compact style each group of added values gets a short id
// ("q12_q", "q12_s") and added nodes get no name: long derived names repeat
// a tensor's name a dozen times per QDQ pair, which on small models weighs
// more than their INT8 weights.
type namer struct {
	ix  *graph.Index
	ort bool
	seq int
}

func newNamer(ix *graph.Index, o Options) *namer { return &namer{ix: ix, ort: o.ORTNames} }

// group returns the base of the names added for value v: v itself in
// onnxruntime's style, else a fresh id with the given prefix.
func (n *namer) group(v, prefix string) string {
	if n.ort {
		return v
	}
	n.seq++
	return fmt.Sprintf("%s%d", prefix, n.seq)
}

// value returns a unique value name: base+ortSuffix or base+short.
func (n *namer) value(base, ortSuffix, short string) string {
	if n.ort {
		return n.ix.Unique(base + ortSuffix)
	}
	return n.ix.Unique(base + short)
}

// node returns the name of an added node: base+ortSuffix in onnxruntime's
// style, none otherwise.
func (n *namer) node(base, ortSuffix string) string {
	if n.ort {
		return n.ix.Unique(base + ortSuffix)
	}
	return ""
}
