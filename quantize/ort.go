package quantize

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/edgefleet/edgefleet/quantize/internal/graph"
	"github.com/edgefleet/edgefleet/quantize/onnxpb"
)

// RuntimeLibraryEnv names the environment variable that points at the
// onnxruntime shared library (shared with the agent).
const RuntimeLibraryEnv = "EDGEFLEET_ORT_LIB"

// ErrRuntime wraps failures to find, load or run onnxruntime.
var ErrRuntime = errors.New("onnxruntime")

var (
	ortMu   sync.Mutex // guards ortPath
	ortPath string
)

// InitRuntime loads the onnxruntime shared library and creates the
// process-wide environment once. libPath may be empty: then
// $EDGEFLEET_ORT_LIB is used, else .deps/onnxruntime/libonnxruntime.so.1 in
// the working directory or one of its parents. If another package of the
// process (the agent's runtime, say) already initialised onnxruntime, that
// environment is used as it is. Safe for concurrent use.
func InitRuntime(libPath string) error {
	ortMu.Lock()
	defer ortMu.Unlock()
	if ortPath != "" || ort.IsInitialized() {
		if ortPath == "" {
			ortPath = "(initialised elsewhere)"
		}
		return nil
	}
	p, err := findRuntimeLibrary(libPath)
	if err != nil {
		return err
	}
	ort.SetSharedLibraryPath(p)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		if ort.IsInitialized() { // lost a race with another package
			ortPath = "(initialised elsewhere)"
			return nil
		}
		return fmt.Errorf("%w: initialising from %s: %w", ErrRuntime, p, err)
	}
	ortPath = p
	return nil
}

// FindRuntimeLibrary returns the path InitRuntime would load for libPath.
func FindRuntimeLibrary(libPath string) (string, error) { return findRuntimeLibrary(libPath) }

func findRuntimeLibrary(libPath string) (string, error) {
	for _, p := range []string{libPath, os.Getenv(RuntimeLibraryEnv)} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%w: library %s: %w (run `make deps` or set %s)", ErrRuntime, p, err, RuntimeLibraryEnv)
		}
		return p, nil
	}
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			p := filepath.Join(d, ".deps", "onnxruntime", "libonnxruntime.so.1")
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				return p, nil
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return "", fmt.Errorf("%w: shared library not found: run `make deps` or set %s", ErrRuntime, RuntimeLibraryEnv)
}

// Tensor is one named model input.
type Tensor struct {
	Name  string
	Shape []int64
	// Data holds the elements in row-major order: []float32, []float64,
	// []int64, []int32, []int16, []int8, []uint8, []uint16 or []bool.
	Data any
}

// Batch is one set of model inputs.
type Batch []Tensor

// output is one fetched model output.
type output struct {
	Shape []int64
	// F32 holds the elements of a float32 output (nil for other types).
	F32 []float32
	// Data holds the elements of a float32, int8, uint8, int32 or int64
	// output as a typed slice.
	Data any
}

// session runs one model in onnxruntime.
type session struct {
	s       *ort.DynamicAdvancedSession
	inputs  []string
	outputs []string
}

// sessionThreads bounds onnxruntime's intra-op threads in the quantizer's
// own sessions (calibration, sensitivity). 0 lets onnxruntime decide.
const sessionThreads = 0

func newSession(model []byte, inputs, outputs []string) (*session, error) {
	return newSessionOpt(model, inputs, outputs, true)
}

// newSessionOpt creates a session; optimize=false disables onnxruntime's
// graph optimizations (calibration reads the float graph as written).
func newSessionOpt(model []byte, inputs, outputs []string, optimize bool) (*session, error) {
	if !ort.IsInitialized() {
		if err := InitRuntime(""); err != nil {
			return nil, err
		}
	}
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("%w: session options: %w", ErrRuntime, err)
	}
	defer so.Destroy()
	if !optimize {
		if err := so.SetGraphOptimizationLevel(ort.GraphOptimizationLevelDisableAll); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrRuntime, err)
		}
	}
	if sessionThreads > 0 {
		if err := so.SetIntraOpNumThreads(sessionThreads); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrRuntime, err)
		}
	}
	s, err := ort.NewDynamicAdvancedSessionWithONNXData(model, inputs, outputs, so)
	if err != nil {
		return nil, fmt.Errorf("%w: creating session: %w", ErrRuntime, err)
	}
	return &session{s: s, inputs: inputs, outputs: outputs}, nil
}

func (s *session) Close() { s.s.Destroy() }

// outSpec pre-allocates an output whose shape is known: onnxruntime_go
// cannot allocate 0-d outputs itself.
type outSpec struct {
	Elem  graph.Elem
	Shape []int64
}

func allocOutput(sp *outSpec) (ort.Value, error) {
	if sp == nil {
		return nil, nil
	}
	if len(sp.Shape) == 0 {
		switch sp.Elem {
		case graph.Float:
			return ort.NewEmptyScalar[float32]()
		case graph.Uint8:
			return ort.NewEmptyScalar[uint8]()
		case graph.Int8:
			return ort.NewEmptyScalar[int8]()
		case graph.Int32:
			return ort.NewEmptyScalar[int32]()
		case graph.Int64:
			return ort.NewEmptyScalar[int64]()
		}
	} else {
		shape := ort.NewShape(sp.Shape...)
		switch sp.Elem {
		case graph.Float:
			return ort.NewEmptyTensor[float32](shape)
		case graph.Uint8:
			return ort.NewEmptyTensor[uint8](shape)
		case graph.Int8:
			return ort.NewEmptyTensor[int8](shape)
		case graph.Int32:
			return ort.NewEmptyTensor[int32](shape)
		case graph.Int64:
			return ort.NewEmptyTensor[int64](shape)
		}
	}
	return nil, fmt.Errorf("cannot pre-allocate a %v output", sp.Elem)
}

// Run feeds b (by input name) and returns the outputs in s.outputs order.
func (s *session) Run(b Batch) ([]output, error) { return s.RunAlloc(b, nil) }

// RunAlloc is Run with outputs pre-allocated where specs (indexed like
// s.outputs; nil entries or a nil slice mean "let onnxruntime allocate")
// say so.
func (s *session) RunAlloc(b Batch, specs []*outSpec) ([]output, error) {
	byName := map[string]Tensor{}
	for _, t := range b {
		byName[t.Name] = t
	}
	ins := make([]ort.Value, len(s.inputs))
	defer func() {
		for _, v := range ins {
			if v != nil {
				v.Destroy()
			}
		}
	}()
	for i, name := range s.inputs {
		t, ok := byName[name]
		if !ok {
			return nil, fmt.Errorf("batch has no tensor for model input %q", name)
		}
		v, err := toValue(t)
		if err != nil {
			return nil, err
		}
		ins[i] = v
	}
	outs := make([]ort.Value, len(s.outputs))
	for i := range specs {
		v, err := allocOutput(specs[i])
		if err != nil {
			for _, o := range outs {
				if o != nil {
					o.Destroy()
				}
			}
			return nil, err
		}
		outs[i] = v
	}
	if err := s.s.Run(ins, outs); err != nil {
		for _, o := range outs {
			if o != nil {
				o.Destroy()
			}
		}
		return nil, fmt.Errorf("%w: run: %w", ErrRuntime, err)
	}
	res := make([]output, len(outs))
	for i, v := range outs {
		if v == nil {
			continue
		}
		res[i].Shape = append([]int64(nil), v.GetShape()...)
		switch t := v.(type) {
		case *ort.Scalar[float32]:
			res[i].F32 = []float32{t.GetData()}
			res[i].Data = res[i].F32
		case *ort.Scalar[uint8]:
			res[i].Data = []uint8{t.GetData()}
		case *ort.Scalar[int8]:
			res[i].Data = []int8{t.GetData()}
		case *ort.Scalar[int32]:
			res[i].Data = []int32{t.GetData()}
		case *ort.Scalar[int64]:
			res[i].Data = []int64{t.GetData()}
		case *ort.Tensor[float32]:
			res[i].F32 = append([]float32(nil), t.GetData()...)
			res[i].Data = res[i].F32
		case *ort.Tensor[uint8]:
			res[i].Data = append([]uint8(nil), t.GetData()...)
		case *ort.Tensor[int8]:
			res[i].Data = append([]int8(nil), t.GetData()...)
		case *ort.Tensor[int32]:
			res[i].Data = append([]int32(nil), t.GetData()...)
		case *ort.Tensor[int64]:
			res[i].Data = append([]int64(nil), t.GetData()...)
		}
		v.Destroy()
	}
	return res, nil
}

func toValue(t Tensor) (ort.Value, error) {
	shape := ort.NewShape(t.Shape...)
	var v ort.Value
	var err error
	switch d := t.Data.(type) {
	case []float32:
		v, err = newTensor(shape, d)
	case []float64:
		v, err = newTensor(shape, d)
	case []int64:
		v, err = newTensor(shape, d)
	case []int32:
		v, err = newTensor(shape, d)
	case []int16:
		v, err = newTensor(shape, d)
	case []int8:
		v, err = newTensor(shape, d)
	case []uint8:
		v, err = newTensor(shape, d)
	case []uint16:
		v, err = newTensor(shape, d)
	case []bool:
		v, err = newTensor(shape, d)
	default:
		return nil, fmt.Errorf("input %q: unsupported data type %T", t.Name, t.Data)
	}
	if err != nil {
		return nil, fmt.Errorf("input %q: %w", t.Name, err)
	}
	return v, nil
}

func newTensor[T ort.TensorData](shape ort.Shape, d []T) (ort.Value, error) {
	if len(shape) == 0 { // a 0-d tensor holds one element
		if len(d) != 1 {
			return nil, fmt.Errorf("%d elements for a scalar", len(d))
		}
		return ort.NewScalar(d[0])
	}
	if int64(len(d)) != shape.FlattenedSize() {
		return nil, fmt.Errorf("%d elements for shape %v", len(d), []int64(shape))
	}
	// onnxruntime reads the Go slice in place; copy so callers keep theirs.
	return ort.NewTensor(shape, append([]T(nil), d...))
}

// modelInputs lists the graph inputs that are not initializers.
func modelInputs(m *onnxpb.ModelProto) []string {
	inits := map[string]bool{}
	for _, t := range m.GetGraph().GetInitializer() {
		inits[t.GetName()] = true
	}
	var out []string
	for _, vi := range m.GetGraph().GetInput() {
		if !inits[vi.GetName()] {
			out = append(out, vi.GetName())
		}
	}
	return out
}

func modelOutputs(m *onnxpb.ModelProto) []string {
	var out []string
	for _, vi := range m.GetGraph().GetOutput() {
		out = append(out, vi.GetName())
	}
	return out
}

// inferTypes returns the element type of every value of m's main graph, as
// onnxruntime infers it: each node output is exposed as an untyped graph
// output and the session's output metadata is read back.
func inferTypes(m *onnxpb.ModelProto) (map[string]graph.Elem, error) {
	if !ort.IsInitialized() {
		if err := InitRuntime(""); err != nil {
			return nil, err
		}
	}
	c := graph.Clone(m)
	g := c.Graph
	types := map[string]graph.Elem{}
	have := map[string]bool{}
	for _, vi := range g.GetOutput() {
		have[vi.GetName()] = true
	}
	for _, vi := range append(append([]*onnxpb.ValueInfoProto{}, g.GetInput()...), g.GetOutput()...) {
		if e, ok := graph.ElemOf(vi); ok {
			types[vi.GetName()] = e
		}
	}
	for _, t := range g.GetInitializer() {
		types[t.GetName()] = graph.Elem(t.GetDataType())
	}
	for _, n := range g.GetNode() {
		for _, o := range n.GetOutput() {
			if o != "" && !have[o] {
				have[o] = true
				g.Output = append(g.Output, &onnxpb.ValueInfoProto{Name: o})
			}
		}
	}
	// Value infos may disagree with what onnxruntime infers; drop them so
	// the inferred types win.
	g.ValueInfo = nil
	data, err := graph.Encode(c)
	if err != nil {
		return nil, err
	}
	_, outs, err := ort.GetInputOutputInfoWithONNXData(data)
	if err != nil {
		return nil, fmt.Errorf("%w: inferring value types: %w", ErrRuntime, err)
	}
	for _, o := range outs {
		if o.OrtValueType == ort.ONNXTypeTensor {
			types[o.Name] = graph.Elem(o.DataType)
		}
	}
	return types, nil
}
