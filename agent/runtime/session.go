package runtime

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/edgefleet/edgefleet/agent/tensor"
)

// Execution provider names accepted in Config.Providers.
const (
	ProviderCPU      = "cpu"
	ProviderCUDA     = "cuda"
	ProviderTensorRT = "tensorrt"
)

// ErrInvalidInput is wrapped by Run errors caused by the caller's tensors
// (unknown or missing names, wrong data type or shape).
var ErrInvalidInput = errors.New("invalid input")

// Config holds per-session settings. The zero value is valid: one intra-op
// thread on the CPU provider.
type Config struct {
	// IntraOpThreads is onnxruntime's intra-op thread count; 0 means 1.
	IntraOpThreads int
	// Providers lists execution providers in order of preference, e.g.
	// ["cuda", "cpu"]. Empty means ["cpu"]. CPU is always the last resort.
	Providers []string
	// DeviceID selects the GPU for CUDA and TensorRT.
	DeviceID int
	// Logger receives fallback reasons; nil means slog.Default().
	Logger *slog.Logger
}

// IOSpec describes a model input or output; -1 marks a dynamic dimension.
type IOSpec struct {
	Name  string
	DType tensor.DType
	Shape []int64
}

// Inspect returns the inputs and outputs of an ONNX model without creating a
// session for it.
func Inspect(model []byte) (inputs, outputs []IOSpec, err error) {
	in, out, err := ort.GetInputOutputInfoWithONNXData(model)
	if err != nil {
		return nil, nil, fmt.Errorf("reading model inputs and outputs: %w", err)
	}
	if inputs, err = specs(in); err != nil {
		return nil, nil, err
	}
	if outputs, err = specs(out); err != nil {
		return nil, nil, err
	}
	return inputs, outputs, nil
}

func specs(infos []ort.InputOutputInfo) ([]IOSpec, error) {
	out := make([]IOSpec, len(infos))
	for i, info := range infos {
		if info.OrtValueType != ort.ONNXTypeTensor {
			return nil, fmt.Errorf("%q is a %v; only tensor inputs and outputs are supported", info.Name, info.OrtValueType)
		}
		dt, ok := fromORT(info.DataType)
		if !ok {
			return nil, fmt.Errorf("%q has unsupported element type %v", info.Name, info.DataType)
		}
		out[i] = IOSpec{Name: info.Name, DType: dt, Shape: append([]int64{}, info.Dimensions...)}
	}
	return out, nil
}

// Session is a loaded model. It is safe for concurrent use.
type Session struct {
	inputs, outputs []IOSpec
	inIndex         map[string]int
	outIndex        map[string]int
	model           []byte // kept for a lazy CPU fallback session; nil when primary is CPU
	cfg             Config
	log             *slog.Logger

	provider       string // provider of the primary session
	requested      string // first provider asked for
	fallbackReason string // why provider != requested; "" when equal
	primary        *ort.DynamicAdvancedSession

	mu       sync.Mutex // guards cpu, degraded, degradeWhy, fault
	cpu      *ort.DynamicAdvancedSession
	degraded bool
	degradeW string
	fault    func() error // TestOnly fault injected before primary runs
}

// NewSession creates a session from model bytes, trying cfg.Providers in
// order and falling back to CPU; the reason for a fallback is logged and
// available from FallbackReason.
func NewSession(model []byte, cfg Config) (*Session, error) {
	if !ort.IsInitialized() {
		return nil, errors.New("onnxruntime is not initialised (call runtime.Init)")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	inputs, outputs, err := Inspect(model)
	if err != nil {
		return nil, err
	}
	s := &Session{inputs: inputs, outputs: outputs, cfg: cfg, log: cfg.Logger,
		inIndex: map[string]int{}, outIndex: map[string]int{}}
	for i, in := range inputs {
		s.inIndex[in.Name] = i
	}
	for i, o := range outputs {
		s.outIndex[o.Name] = i
	}
	providers := normalizeProviders(cfg.Providers)
	s.requested = providers[0]
	var reasons []string
	for _, p := range providers {
		sess, err := s.create(model, p)
		if err != nil {
			if p == ProviderCPU {
				return nil, fmt.Errorf("creating onnxruntime session: %w", err)
			}
			reasons = append(reasons, fmt.Sprintf("%s: %v", p, err))
			continue
		}
		s.primary, s.provider = sess, p
		break
	}
	if len(reasons) > 0 {
		s.fallbackReason = strings.Join(reasons, "; ")
		s.log.Warn("execution provider unavailable, falling back", "requested", s.requested, "using", s.provider, "reason", s.fallbackReason)
	}
	if s.provider != ProviderCPU {
		s.model = model
	}
	return s, nil
}

func normalizeProviders(ps []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, p := range ps {
		p = strings.ToLower(strings.TrimSpace(p))
		switch p {
		case "trt":
			p = ProviderTensorRT
		case "gpu":
			p = ProviderCUDA
		}
		if p == "" || seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, p)
	}
	if !seen[ProviderCPU] {
		out = append(out, ProviderCPU)
	}
	return out
}

// ValidateProviders reports an unknown provider name.
func ValidateProviders(ps []string) error {
	for _, p := range normalizeProviders(ps) {
		switch p {
		case ProviderCPU, ProviderCUDA, ProviderTensorRT:
		default:
			return fmt.Errorf("unknown execution provider %q (want cpu, cuda or tensorrt)", p)
		}
	}
	return nil
}

func (s *Session) create(model []byte, provider string) (*ort.DynamicAdvancedSession, error) {
	opts, err := ort.NewSessionOptions()
	if err != nil {
		return nil, err
	}
	defer opts.Destroy()
	threads := s.cfg.IntraOpThreads
	if threads <= 0 {
		threads = 1
	}
	if err := opts.SetIntraOpNumThreads(threads); err != nil {
		return nil, err
	}
	if err := opts.SetInterOpNumThreads(1); err != nil {
		return nil, err
	}
	// Run failures come back as errors that the caller reports with their
	// request context; onnxruntime's own copy on stderr would only repeat them.
	if err := opts.SetLogSeverityLevel(ort.LoggingLevelFatal); err != nil {
		return nil, err
	}
	if threads == 1 {
		// A single intra-op thread runs on the caller's thread: no spinning pool.
		_ = opts.AddSessionConfigEntry("session.intra_op.allow_spinning", "0")
	}
	switch provider {
	case ProviderCPU:
	case ProviderCUDA:
		co, err := ort.NewCUDAProviderOptions()
		if err != nil {
			return nil, fmt.Errorf("CUDA provider options: %w", err)
		}
		defer co.Destroy()
		if err := co.Update(map[string]string{"device_id": fmt.Sprint(s.cfg.DeviceID)}); err != nil {
			return nil, fmt.Errorf("CUDA provider options: %w", err)
		}
		if err := opts.AppendExecutionProviderCUDA(co); err != nil {
			return nil, fmt.Errorf("CUDA provider: %w", err)
		}
	case ProviderTensorRT:
		to, err := ort.NewTensorRTProviderOptions()
		if err != nil {
			return nil, fmt.Errorf("TensorRT provider options: %w", err)
		}
		defer to.Destroy()
		if err := to.Update(map[string]string{"device_id": fmt.Sprint(s.cfg.DeviceID)}); err != nil {
			return nil, fmt.Errorf("TensorRT provider options: %w", err)
		}
		if err := opts.AppendExecutionProviderTensorRT(to); err != nil {
			return nil, fmt.Errorf("TensorRT provider: %w", err)
		}
	default:
		return nil, fmt.Errorf("unknown execution provider %q", provider)
	}
	in := make([]string, len(s.inputs))
	for i, x := range s.inputs {
		in[i] = x.Name
	}
	out := make([]string, len(s.outputs))
	for i, x := range s.outputs {
		out[i] = x.Name
	}
	return ort.NewDynamicAdvancedSessionWithONNXData(model, in, out, opts)
}

// Inputs returns the model's inputs.
func (s *Session) Inputs() []IOSpec { return s.inputs }

// Outputs returns the model's outputs.
func (s *Session) Outputs() []IOSpec { return s.outputs }

// Provider returns the execution provider of the primary session.
func (s *Session) Provider() string { return s.provider }

// RequestedProvider returns the first provider the configuration asked for.
func (s *Session) RequestedProvider() string { return s.requested }

// FallbackReason explains why Provider differs from RequestedProvider at load time.
func (s *Session) FallbackReason() string { return s.fallbackReason }

// Degraded reports whether a run failed on the GPU and requests now go to the
// CPU, and why.
func (s *Session) Degraded() (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.degraded, s.degradeW
}

// Close releases the sessions. Run must not be called afterwards.
func (s *Session) Close() error {
	var errs []error
	if s.primary != nil {
		errs = append(errs, s.primary.Destroy())
		s.primary = nil
	}
	s.mu.Lock()
	if s.cpu != nil {
		errs = append(errs, s.cpu.Destroy())
		s.cpu = nil
	}
	s.mu.Unlock()
	return errors.Join(errs...)
}

// RunResult carries the outputs of Run and whether the run fell back to the CPU.
type RunResult struct {
	Outputs []tensor.Tensor
	// Provider is the provider that produced the outputs.
	Provider string
	// FellBack is true when this run failed on the GPU and was retried on the CPU.
	FellBack bool
}

// Run validates inputs against the model and runs it. outputNames selects and
// orders the outputs; empty means all, in model order. A failure of a GPU
// session is retried on a CPU session, and the session is marked degraded.
func (s *Session) Run(inputs []tensor.Tensor, outputNames []string) (RunResult, error) {
	outIdx, err := s.selectOutputs(outputNames)
	if err != nil {
		return RunResult{}, err
	}
	ordered, err := s.orderInputs(inputs)
	if err != nil {
		return RunResult{}, err
	}
	in := make([]ort.Value, len(ordered))
	defer destroyAll(in)
	for i, t := range ordered {
		if in[i], err = toORT(t); err != nil {
			return RunResult{}, fmt.Errorf("%w: %w", ErrInvalidInput, err)
		}
	}
	sess, provider, degraded := s.current()
	if !degraded {
		outs, err := s.runOnce(sess, provider, in, outIdx, ordered)
		if err == nil || provider == ProviderCPU {
			return RunResult{Outputs: outs, Provider: provider}, err
		}
		s.log.Error("run failed on GPU session, retrying on CPU and marking degraded", "provider", provider, "err", err)
		s.markDegraded(fmt.Sprintf("run failed on %s: %v", provider, err))
	}
	cpu, err := s.cpuSession()
	if err != nil {
		return RunResult{}, err
	}
	outs, err := s.runOnce(cpu, ProviderCPU, in, outIdx, ordered)
	return RunResult{Outputs: outs, Provider: ProviderCPU, FellBack: !degraded}, err
}

func (s *Session) current() (*ort.DynamicAdvancedSession, string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.primary, s.provider, s.degraded
}

func (s *Session) markDegraded(why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.degraded {
		s.degraded, s.degradeW = true, why
	}
}

func (s *Session) cpuSession() (*ort.DynamicAdvancedSession, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cpu != nil {
		return s.cpu, nil
	}
	if s.provider == ProviderCPU || s.model == nil {
		// The primary already runs on the CPU (or was only labelled a GPU
		// session by TestOnlyInjectGPUFault).
		return s.primary, nil
	}
	cpu, err := s.create(s.model, ProviderCPU)
	if err != nil {
		return nil, fmt.Errorf("creating CPU fallback session: %w", err)
	}
	s.cpu = cpu
	return cpu, nil
}

func (s *Session) runOnce(sess *ort.DynamicAdvancedSession, provider string, in []ort.Value, outIdx []int, inputs []tensor.Tensor) ([]tensor.Tensor, error) {
	if provider != ProviderCPU {
		s.mu.Lock()
		fault := s.fault
		s.mu.Unlock()
		if fault != nil {
			if err := fault(); err != nil {
				return nil, err
			}
		}
	}
	outs := make([]ort.Value, len(s.outputs))
	defer destroyAll(outs)
	for i, o := range s.outputs {
		if o.DType == tensor.FP16 || o.DType == tensor.BF16 {
			// onnxruntime_go copies too few bytes of auto-allocated 16-bit
			// float outputs: preallocate them from a resolved shape.
			shape, ok := resolveShape(o.Shape, inputs)
			if !ok {
				return nil, fmt.Errorf("output %q: %v output with dynamic shape %v is not supported", o.Name, o.DType, o.Shape)
			}
			v, err := newEmpty(o.DType, shape)
			if err != nil {
				return nil, fmt.Errorf("output %q: %w", o.Name, err)
			}
			outs[i] = v
		}
	}
	if err := sess.Run(in, outs); err != nil {
		if isInputError(err) {
			return nil, fmt.Errorf("%w: the model rejected the input: %w", ErrInvalidInput, err)
		}
		return nil, fmt.Errorf("onnxruntime run (%s): %w", provider, err)
	}
	result := make([]tensor.Tensor, len(outIdx))
	for j, i := range outIdx {
		t, err := fromORTValue(s.outputs[i].Name, s.outputs[i].DType, outs[i])
		if err != nil {
			return nil, fmt.Errorf("output %q: %w", s.outputs[i].Name, err)
		}
		result[j] = t
	}
	return result, nil
}

// inputErrorMarkers are substrings of onnxruntime run errors that the
// caller's tensors cause (shapes the graph cannot take), as opposed to faults
// of the runtime or the device.
var inputErrorMarkers = []string{"INVALID_ARGUMENT", "Invalid rank", "Got invalid dimensions",
	"Invalid input shape", "not broadcastable", "Shape mismatch", "Invalid dimensions"}

func isInputError(err error) bool {
	msg := err.Error()
	for _, m := range inputErrorMarkers {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return false
}

// resolveShape substitutes the first input's batch dimension for a leading
// dynamic dimension; it fails on any other dynamic dimension.
func resolveShape(shape []int64, inputs []tensor.Tensor) ([]int64, bool) {
	out := append([]int64{}, shape...)
	for i, d := range out {
		if d >= 0 {
			continue
		}
		if i != 0 || len(inputs) == 0 || len(inputs[0].Shape) == 0 {
			return nil, false
		}
		out[i] = inputs[0].Shape[0]
	}
	return out, true
}

func (s *Session) selectOutputs(names []string) ([]int, error) {
	if len(names) == 0 {
		idx := make([]int, len(s.outputs))
		for i := range idx {
			idx[i] = i
		}
		return idx, nil
	}
	idx := make([]int, len(names))
	for j, n := range names {
		i, ok := s.outIndex[n]
		if !ok {
			return nil, fmt.Errorf("%w: unknown output %q (model outputs: %s)", ErrInvalidInput, n, joinNames(s.outputs))
		}
		idx[j] = i
	}
	return idx, nil
}

func (s *Session) orderInputs(inputs []tensor.Tensor) ([]tensor.Tensor, error) {
	ordered := make([]tensor.Tensor, len(s.inputs))
	seen := make([]bool, len(s.inputs))
	for _, t := range inputs {
		i, ok := s.inIndex[t.Name]
		if !ok {
			return nil, fmt.Errorf("%w: unexpected input %q (model inputs: %s)", ErrInvalidInput, t.Name, joinNames(s.inputs))
		}
		if seen[i] {
			return nil, fmt.Errorf("%w: input %q given twice", ErrInvalidInput, t.Name)
		}
		seen[i] = true
		spec := s.inputs[i]
		if t.DType != spec.DType {
			return nil, fmt.Errorf("%w: input %q has data type %v, model expects %v", ErrInvalidInput, t.Name, t.DType, spec.DType)
		}
		if err := checkShape(spec.Shape, t.Shape); err != nil {
			return nil, fmt.Errorf("%w: input %q: %w", ErrInvalidInput, t.Name, err)
		}
		if err := t.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidInput, err)
		}
		ordered[i] = t
	}
	for i, ok := range seen {
		if !ok {
			return nil, fmt.Errorf("%w: missing input %q", ErrInvalidInput, s.inputs[i].Name)
		}
	}
	return ordered, nil
}

func checkShape(want, got []int64) error {
	if len(want) != len(got) {
		return fmt.Errorf("shape %v has rank %d, model expects rank %d %v", got, len(got), len(want), want)
	}
	for i := range want {
		if want[i] >= 0 && want[i] != got[i] {
			return fmt.Errorf("shape %v does not match model shape %v at dimension %d", got, want, i)
		}
	}
	return nil
}

func joinNames(specs []IOSpec) string {
	n := make([]string, len(specs))
	for i, s := range specs {
		n[i] = s.Name
	}
	return strings.Join(n, ", ")
}

func destroyAll(vs []ort.Value) {
	for _, v := range vs {
		if v != nil {
			v.Destroy()
		}
	}
}

var ortTypes = map[tensor.DType]ort.TensorElementDataType{
	tensor.Bool: ort.TensorElementDataTypeBool, tensor.Uint8: ort.TensorElementDataTypeUint8,
	tensor.Uint16: ort.TensorElementDataTypeUint16, tensor.Uint32: ort.TensorElementDataTypeUint32,
	tensor.Uint64: ort.TensorElementDataTypeUint64, tensor.Int8: ort.TensorElementDataTypeInt8,
	tensor.Int16: ort.TensorElementDataTypeInt16, tensor.Int32: ort.TensorElementDataTypeInt32,
	tensor.Int64: ort.TensorElementDataTypeInt64, tensor.FP16: ort.TensorElementDataTypeFloat16,
	tensor.FP32: ort.TensorElementDataTypeFloat, tensor.FP64: ort.TensorElementDataTypeDouble,
	tensor.Bytes: ort.TensorElementDataTypeString, tensor.BF16: ort.TensorElementDataTypeBFloat16,
}

func fromORT(t ort.TensorElementDataType) (tensor.DType, bool) {
	for k, v := range ortTypes {
		if v == t {
			return k, true
		}
	}
	return tensor.Invalid, false
}

// toORT wraps t's data (without copying for fixed-size types) in an ort.Value.
func toORT(t tensor.Tensor) (ort.Value, error) {
	if t.DType == tensor.Bytes {
		if len(t.Shape) == 0 {
			return nil, fmt.Errorf("tensor %q: BYTES scalars are not supported", t.Name)
		}
		st, err := ort.NewStringTensor(ort.Shape(t.Shape))
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		strs := make([]string, len(t.Strings))
		for i, b := range t.Strings {
			if bytes.IndexByte(b, 0) >= 0 {
				st.Destroy()
				return nil, fmt.Errorf("tensor %q: BYTES element %d contains a NUL byte, which onnxruntime string tensors cannot hold", t.Name, i)
			}
			strs[i] = string(b)
		}
		if err := st.SetContents(strs); err != nil {
			st.Destroy()
			return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		return st, nil
	}
	if len(t.Shape) == 0 {
		return scalar(t)
	}
	if len(t.Data) == 0 {
		return nil, fmt.Errorf("tensor %q: empty tensors (a zero dimension in %v) are not supported", t.Name, t.Shape)
	}
	v, err := ort.NewCustomDataTensor(ort.Shape(t.Shape), t.Data, ortTypes[t.DType])
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	return v, nil
}

func scalar(t tensor.Tensor) (ort.Value, error) {
	d := t.Data
	switch t.DType {
	case tensor.FP32:
		return ort.NewScalar(*(*float32)(unsafe.Pointer(&d[0])))
	case tensor.FP64:
		return ort.NewScalar(*(*float64)(unsafe.Pointer(&d[0])))
	case tensor.Int64:
		return ort.NewScalar(*(*int64)(unsafe.Pointer(&d[0])))
	case tensor.Int32:
		return ort.NewScalar(*(*int32)(unsafe.Pointer(&d[0])))
	case tensor.Int16:
		return ort.NewScalar(*(*int16)(unsafe.Pointer(&d[0])))
	case tensor.Int8:
		return ort.NewScalar(int8(d[0]))
	case tensor.Uint64:
		return ort.NewScalar(*(*uint64)(unsafe.Pointer(&d[0])))
	case tensor.Uint32:
		return ort.NewScalar(*(*uint32)(unsafe.Pointer(&d[0])))
	case tensor.Uint16:
		return ort.NewScalar(*(*uint16)(unsafe.Pointer(&d[0])))
	case tensor.Uint8:
		return ort.NewScalar(d[0])
	}
	return nil, fmt.Errorf("tensor %q: %v scalars are not supported", t.Name, t.DType)
}

func newEmpty(dt tensor.DType, shape []int64) (ort.Value, error) {
	n, err := tensor.NumElements(shape)
	if err != nil {
		return nil, err
	}
	if n == 0 || len(shape) == 0 {
		return nil, fmt.Errorf("cannot preallocate shape %v", shape)
	}
	return ort.NewCustomDataTensor(ort.Shape(shape), make([]byte, n*int64(dt.Size())), ortTypes[dt])
}

// fromORTValue takes the data of an output value. The Go-backed slices that
// onnxruntime_go fills are reused without another copy.
func fromORTValue(name string, dt tensor.DType, v ort.Value) (tensor.Tensor, error) {
	shape := []int64(v.GetShape())
	if shape == nil {
		shape = []int64{}
	}
	t := tensor.Tensor{Name: name, DType: dt, Shape: append([]int64{}, shape...)}
	switch x := v.(type) {
	case *ort.StringTensor:
		strs, err := x.GetContents()
		if err != nil {
			return t, err
		}
		t.Strings = make([][]byte, len(strs))
		for i, s := range strs {
			t.Strings[i] = []byte(s)
		}
		return t, nil
	case *ort.CustomDataTensor:
		t.Data = x.GetData()
	case *ort.Tensor[float32]:
		t.Data = asBytes(x.GetData())
	case *ort.Tensor[float64]:
		t.Data = asBytes(x.GetData())
	case *ort.Tensor[int64]:
		t.Data = asBytes(x.GetData())
	case *ort.Tensor[int32]:
		t.Data = asBytes(x.GetData())
	case *ort.Tensor[int16]:
		t.Data = asBytes(x.GetData())
	case *ort.Tensor[int8]:
		t.Data = asBytes(x.GetData())
	case *ort.Tensor[uint64]:
		t.Data = asBytes(x.GetData())
	case *ort.Tensor[uint32]:
		t.Data = asBytes(x.GetData())
	case *ort.Tensor[uint16]:
		t.Data = asBytes(x.GetData())
	case *ort.Tensor[uint8]:
		t.Data = x.GetData()
	case *ort.Tensor[bool]:
		t.Data = asBytes(x.GetData())
	default:
		return t, fmt.Errorf("unsupported output value %T", v)
	}
	if err := t.Validate(); err != nil {
		return t, err
	}
	return t, nil
}

func asBytes[T any](s []T) []byte {
	if len(s) == 0 {
		return nil
	}
	var z T
	return unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), len(s)*int(unsafe.Sizeof(z)))
}

// TestOnlyInjectGPUFault makes s behave as if its primary session ran on
// provider (e.g. "cuda") and calls fault before each primary run; a non-nil
// error from fault fails that run, exercising the runtime CPU fallback on
// machines without a GPU.
func TestOnlyInjectGPUFault(s *Session, provider string, fault func() error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.provider = provider
	s.fault = fault
}
