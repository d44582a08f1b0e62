// Package graph holds the ONNX model plumbing the quantizers share: decoding
// and validating models, reading and writing tensor data, indexing a graph's
// producers and consumers, naming new values, opset bookkeeping and
// topological ordering.
package graph

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/edgefleet/edgefleet/quantize/onnxpb"
)

// Errors returned by Decode. The quantize package re-exports them.
var (
	// ErrNotONNX means the bytes are not an ONNX model.
	ErrNotONNX = errors.New("not an ONNX model")
	// ErrExternalData means a tensor keeps its data in an external file that
	// could not be loaded.
	ErrExternalData = errors.New("external tensor data unavailable")
)

// DefaultDomain is the ONNX operator set domain ("" and "ai.onnx" are both
// the default domain).
const DefaultDomain = ""

// Decode parses and checks an ONNX model. Tensors whose data lives in
// external files are loaded from dir (the folder of the model file); an empty
// dir makes any external tensor an error wrapping ErrExternalData.
func Decode(data []byte, dir string) (*onnxpb.ModelProto, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: empty input", ErrNotONNX)
	}
	m := &onnxpb.ModelProto{}
	if err := proto.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotONNX, err)
	}
	if m.GetIrVersion() <= 0 || m.GetGraph() == nil || len(m.GetOpsetImport()) == 0 {
		return nil, fmt.Errorf("%w: no IR version, graph or opset import", ErrNotONNX)
	}
	if len(m.Graph.GetNode()) == 0 {
		return nil, fmt.Errorf("%w: graph %q has no nodes", ErrNotONNX, m.Graph.GetName())
	}
	if _, ok := Opset(m, DefaultDomain); !ok {
		return nil, fmt.Errorf("%w: no default-domain opset import", ErrNotONNX)
	}
	var extErr error
	WalkTensors(m.Graph, func(t *onnxpb.TensorProto) {
		if extErr != nil || t.GetDataLocation() != onnxpb.TensorProto_EXTERNAL {
			return
		}
		extErr = loadExternal(t, dir)
	})
	if extErr != nil {
		return nil, extErr
	}
	return m, nil
}

// Encode serialises m deterministically.
func Encode(m *onnxpb.ModelProto) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode model: %w", err)
	}
	return b, nil
}

// Clone returns a deep copy of m.
func Clone(m *onnxpb.ModelProto) *onnxpb.ModelProto {
	return proto.Clone(m).(*onnxpb.ModelProto)
}

// loadExternal replaces t's external data reference with the data itself.
func loadExternal(t *onnxpb.TensorProto, dir string) error {
	var loc string
	var offset, length int64 = 0, -1
	for _, kv := range t.GetExternalData() {
		var err error
		switch kv.GetKey() {
		case "location":
			loc = kv.GetValue()
		case "offset":
			offset, err = strconv.ParseInt(kv.GetValue(), 10, 64)
		case "length":
			length, err = strconv.ParseInt(kv.GetValue(), 10, 64)
		}
		if err != nil {
			return fmt.Errorf("%w: tensor %q: bad %s: %v", ErrExternalData, t.GetName(), kv.GetKey(), err)
		}
	}
	if loc == "" {
		return fmt.Errorf("%w: tensor %q has no external data location", ErrExternalData, t.GetName())
	}
	if dir == "" {
		return fmt.Errorf("%w: tensor %q is stored in external file %q; quantize the model from its file path so the file can be found", ErrExternalData, t.GetName(), loc)
	}
	clean := filepath.Clean(filepath.FromSlash(loc))
	if filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, ".."+string(filepath.Separator)) {
		return fmt.Errorf("%w: tensor %q: external location %q escapes the model folder", ErrExternalData, t.GetName(), loc)
	}
	path := filepath.Join(dir, clean)
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%w: tensor %q: %v", ErrExternalData, t.GetName(), err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("%w: tensor %q: %v", ErrExternalData, t.GetName(), err)
	}
	if length < 0 {
		length = st.Size() - offset
	}
	if offset < 0 || length < 0 || offset+length > st.Size() {
		return fmt.Errorf("%w: tensor %q: range [%d, %d) outside %s (%d bytes)", ErrExternalData, t.GetName(), offset, offset+length, loc, st.Size())
	}
	buf := make([]byte, length)
	if _, err := f.ReadAt(buf, offset); err != nil {
		return fmt.Errorf("%w: tensor %q: %v", ErrExternalData, t.GetName(), err)
	}
	t.RawData = buf
	t.ExternalData = nil
	t.DataLocation = onnxpb.TensorProto_DEFAULT
	return nil
}

// WalkTensors calls fn for every tensor held by g: initializers, tensor
// attributes of nodes (Constant values included) and the same inside
// subgraphs.
func WalkTensors(g *onnxpb.GraphProto, fn func(*onnxpb.TensorProto)) {
	for _, t := range g.GetInitializer() {
		fn(t)
	}
	for _, st := range g.GetSparseInitializer() {
		if st.GetValues() != nil {
			fn(st.GetValues())
		}
	}
	for _, n := range g.GetNode() {
		for _, a := range n.GetAttribute() {
			if a.GetT() != nil {
				fn(a.GetT())
			}
			for _, t := range a.GetTensors() {
				fn(t)
			}
			if a.GetG() != nil {
				WalkTensors(a.GetG(), fn)
			}
			for _, sg := range a.GetGraphs() {
				WalkTensors(sg, fn)
			}
		}
	}
}

// Opset returns the version imported for domain ("" or "ai.onnx" for the
// default domain).
func Opset(m *onnxpb.ModelProto, domain string) (int64, bool) {
	for _, o := range m.GetOpsetImport() {
		if sameDomain(o.GetDomain(), domain) {
			return o.GetVersion(), true
		}
	}
	return 0, false
}

func sameDomain(a, b string) bool {
	norm := func(s string) string {
		if s == "ai.onnx" {
			return ""
		}
		return s
	}
	return norm(a) == norm(b)
}

// minIRForOpset is the lowest IR version that may import each default-domain
// opset (ONNX's versioning table).
func minIRForOpset(v int64) int64 {
	switch {
	case v >= 23:
		return 11
	case v >= 21:
		return 10
	case v >= 19:
		return 9
	case v >= 15:
		return 8
	case v >= 12:
		return 7
	case v >= 11:
		return 6
	case v >= 10:
		return 5
	case v >= 9:
		return 4
	}
	return 3
}

// EnsureOpset raises the default-domain opset to at least v (and the IR
// version to what that opset needs). It reports the previous version and
// whether it changed anything.
func EnsureOpset(m *onnxpb.ModelProto, v int64) (prev int64, changed bool) {
	for _, o := range m.GetOpsetImport() {
		if sameDomain(o.GetDomain(), DefaultDomain) {
			prev = o.GetVersion()
			if prev >= v {
				return prev, false
			}
			o.Version = v
			if ir := minIRForOpset(v); m.IrVersion < ir {
				m.IrVersion = ir
			}
			return prev, true
		}
	}
	m.OpsetImport = append(m.OpsetImport, &onnxpb.OperatorSetIdProto{Version: v})
	return 0, true
}

// EnsureDomain adds an opset import for domain at version v if missing.
func EnsureDomain(m *onnxpb.ModelProto, domain string, v int64) {
	if _, ok := Opset(m, domain); ok {
		return
	}
	m.OpsetImport = append(m.OpsetImport, &onnxpb.OperatorSetIdProto{Domain: domain, Version: v})
}

// nodeMetadataField is NodeProto.metadata_props (IR 10), which the bindings
// (ONNX 1.12) keep as an unknown field.
const nodeMetadataField = 9

// StripNodeMetadata drops the metadata_props of every node of g and its
// subgraphs (exporter debug information such as torch's stack traces; it
// carries no semantics). It returns the number of bytes removed.
func StripNodeMetadata(g *onnxpb.GraphProto) int {
	removed := 0
	for _, n := range g.GetNode() {
		r := n.ProtoReflect()
		unk := r.GetUnknown()
		var keep []byte
		for b := unk; len(b) > 0; {
			num, typ, l := protowire.ConsumeTag(b)
			if l < 0 {
				keep = unk // malformed: leave untouched
				break
			}
			m := protowire.ConsumeFieldValue(num, typ, b[l:])
			if m < 0 {
				keep = unk
				break
			}
			if num != nodeMetadataField {
				keep = append(keep, b[:l+m]...)
			} else {
				removed += l + m
			}
			b = b[l+m:]
		}
		if len(keep) != len(unk) {
			r.SetUnknown(keep)
		}
		for _, a := range n.GetAttribute() {
			if a.GetG() != nil {
				removed += StripNodeMetadata(a.GetG())
			}
			for _, sg := range a.GetGraphs() {
				removed += StripNodeMetadata(sg)
			}
		}
	}
	return removed
}
