package grpcapi

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"

	"github.com/edgefleet/edgefleet/agent/grpcapi/inferencepb"
	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/tensor"
)

// aliasOK reports whether typed protobuf slices ([]float32, []int64, ...) may
// share memory with little-endian tensor bytes. It is true on little-endian
// machines; tests turn it off to exercise the copying path.
var aliasOK = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// maxDupScan is the input count up to which duplicate names are found by a
// quadratic scan instead of a map (no allocation for typical requests).
const maxDupScan = 16

// DecodeInputs converts the inputs of req into tensors, validating every
// input strictly: a known datatype, a valid shape, element counts that match
// the shape, either raw_input_contents for every input or typed contents for
// every input, and no duplicate or empty names. The error wraps
// models.ErrInvalidInput and names the offending input.
//
// Fixed-size raw contents are referenced, not copied; on little-endian
// machines so are int32, uint32, int64, uint64, float32 and float64 typed
// contents. The tensors therefore share memory with req and are valid as long
// as req is not modified.
func DecodeInputs(req *inferencepb.ModelInferRequest) ([]tensor.Tensor, error) {
	ins := req.GetInputs()
	raws := req.GetRawInputContents()
	useRaw := len(raws) > 0
	if useRaw && len(raws) != len(ins) {
		return nil, fmt.Errorf("%w: raw_input_contents has %d entries for %d inputs; it needs one per input, in order",
			models.ErrInvalidInput, len(raws), len(ins))
	}
	if err := checkNames(ins); err != nil {
		return nil, err
	}
	out := make([]tensor.Tensor, len(ins))
	for i, in := range ins {
		var raw []byte
		if useRaw {
			if in.GetContents() != nil {
				return nil, fmt.Errorf("%w: input %q: contents must not be set when the request uses raw_input_contents",
					models.ErrInvalidInput, in.GetName())
			}
			raw = raws[i]
		}
		if err := decodeTensor(&out[i], "input", in.GetName(), in.GetDatatype(), in.GetShape(), in.GetContents(), raw, useRaw); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func checkNames(ins []*inferencepb.ModelInferRequest_InferInputTensor) error {
	var seen map[string]struct{}
	if len(ins) > maxDupScan {
		seen = make(map[string]struct{}, len(ins))
	}
	for i, in := range ins {
		name := in.GetName()
		if name == "" {
			return fmt.Errorf("%w: input %d has no name", models.ErrInvalidInput, i)
		}
		dup := false
		if seen != nil {
			_, dup = seen[name]
			seen[name] = struct{}{}
		} else {
			for _, prev := range ins[:i] {
				if prev.GetName() == name {
					dup = true
					break
				}
			}
		}
		if dup {
			return fmt.Errorf("%w: input %q appears more than once", models.ErrInvalidInput, name)
		}
	}
	return nil
}

// decodeTensor fills t from one wire tensor; kind is "input" or "output" for
// messages.
func decodeTensor(t *tensor.Tensor, kind, name, datatype string, shape []int64,
	c *inferencepb.InferTensorContents, raw []byte, useRaw bool) error {
	dt, err := tensor.ParseDType(datatype)
	if err != nil {
		return fmt.Errorf("%w: %s %q: datatype %q is not one of BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, BF16, FP32, FP64, BYTES",
			models.ErrInvalidInput, kind, name, datatype)
	}
	n, err := tensor.NumElements(shape)
	if err != nil {
		return fmt.Errorf("%w: %s %q: %w", models.ErrInvalidInput, kind, name, err)
	}
	*t = tensor.Tensor{Name: name, DType: dt, Shape: shape}
	if useRaw {
		return decodeRaw(t, kind, n, raw)
	}
	return decodeContents(t, kind, n, c)
}

func decodeRaw(t *tensor.Tensor, kind string, n int64, raw []byte) error {
	if t.DType == tensor.Bytes {
		s, err := splitBytes(raw, n)
		if err != nil {
			return fmt.Errorf("%w: %s %q: %w", models.ErrInvalidInput, kind, t.Name, err)
		}
		t.Strings = s
		return nil
	}
	size := int64(t.DType.Size())
	if n > int64(len(raw)) || n*size != int64(len(raw)) {
		return fmt.Errorf("%w: %s %q: shape %v of %v needs %d elements (%s bytes), raw contents hold %d bytes",
			models.ErrInvalidInput, kind, t.Name, t.Shape, t.DType, n, mulString(n, size), len(raw))
	}
	if t.DType == tensor.Bool {
		for i, b := range raw {
			if b > 1 {
				return fmt.Errorf("%w: %s %q: BOOL element %d is byte %d; only 0 and 1 are allowed",
					models.ErrInvalidInput, kind, t.Name, i, b)
			}
		}
	}
	t.Data = raw
	return nil
}

// mulString formats n*size without overflowing.
func mulString(n, size int64) string {
	if size != 0 && n > math.MaxInt64/size {
		return "more than 2^63"
	}
	return fmt.Sprint(n * size)
}

// splitBytes parses n BYTES elements, each a 4-byte little-endian length
// followed by that many bytes. The elements reference raw.
func splitBytes(raw []byte, n int64) ([][]byte, error) {
	// Every element takes at least its 4-byte length prefix: bound n by the
	// payload before allocating anything sized by the (untrusted) shape.
	if n > int64(len(raw)/4) {
		return nil, fmt.Errorf("BYTES raw contents of %d bytes cannot hold %d elements (4-byte length prefix each)", len(raw), n)
	}
	out := make([][]byte, n)
	off := 0
	for i := range out {
		if len(raw)-off < 4 {
			return nil, fmt.Errorf("BYTES raw contents end at element %d of %d: missing 4-byte length prefix", i, n)
		}
		l := binary.LittleEndian.Uint32(raw[off:])
		off += 4
		if uint64(l) > uint64(len(raw)-off) {
			return nil, fmt.Errorf("BYTES element %d declares %d bytes, only %d remain", i, l, len(raw)-off)
		}
		end := off + int(l)
		out[i] = raw[off:end:end]
		off = end
	}
	if off != len(raw) {
		return nil, fmt.Errorf("BYTES raw contents hold %d bytes after the %d elements the shape allows", len(raw)-off, n)
	}
	return out, nil
}

// contentsField names the InferTensorContents field for each data type; ""
// for types that have none (FP16, BF16), which travel raw only.
var contentsField = [...]string{
	tensor.Bool:   "bool_contents",
	tensor.Uint8:  "uint_contents",
	tensor.Uint16: "uint_contents",
	tensor.Uint32: "uint_contents",
	tensor.Uint64: "uint64_contents",
	tensor.Int8:   "int_contents",
	tensor.Int16:  "int_contents",
	tensor.Int32:  "int_contents",
	tensor.Int64:  "int64_contents",
	tensor.FP16:   "",
	tensor.FP32:   "fp32_contents",
	tensor.FP64:   "fp64_contents",
	tensor.Bytes:  "bytes_contents",
	tensor.BF16:   "",
}

func fieldFor(dt tensor.DType) string {
	if int(dt) < len(contentsField) {
		return contentsField[dt]
	}
	return ""
}

// HasTypedContents reports whether dt can travel in InferTensorContents;
// FP16 and BF16 cannot and always travel raw.
func HasTypedContents(dt tensor.DType) bool { return fieldFor(dt) != "" }

// otherField returns the name of a populated field of c other than want, or "".
func otherField(c *inferencepb.InferTensorContents, want string) string {
	fields := [...]struct {
		name string
		n    int
	}{
		{"bool_contents", len(c.GetBoolContents())},
		{"int_contents", len(c.GetIntContents())},
		{"int64_contents", len(c.GetInt64Contents())},
		{"uint_contents", len(c.GetUintContents())},
		{"uint64_contents", len(c.GetUint64Contents())},
		{"fp32_contents", len(c.GetFp32Contents())},
		{"fp64_contents", len(c.GetFp64Contents())},
		{"bytes_contents", len(c.GetBytesContents())},
	}
	for _, f := range fields {
		if f.n > 0 && f.name != want {
			return f.name
		}
	}
	return ""
}

func decodeContents(t *tensor.Tensor, kind string, n int64, c *inferencepb.InferTensorContents) error {
	field := fieldFor(t.DType)
	if field == "" {
		return fmt.Errorf("%w: %s %q: %v has no typed contents field; send it in raw_input_contents",
			models.ErrInvalidInput, kind, t.Name, t.DType)
	}
	if other := otherField(c, field); other != "" {
		return fmt.Errorf("%w: %s %q: datatype %v takes its elements in %s, got %s",
			models.ErrInvalidInput, kind, t.Name, t.DType, field, other)
	}
	var got int
	switch t.DType {
	case tensor.Bool:
		got = len(c.GetBoolContents())
	case tensor.Uint8, tensor.Uint16, tensor.Uint32:
		got = len(c.GetUintContents())
	case tensor.Uint64:
		got = len(c.GetUint64Contents())
	case tensor.Int8, tensor.Int16, tensor.Int32:
		got = len(c.GetIntContents())
	case tensor.Int64:
		got = len(c.GetInt64Contents())
	case tensor.FP32:
		got = len(c.GetFp32Contents())
	case tensor.FP64:
		got = len(c.GetFp64Contents())
	case tensor.Bytes:
		got = len(c.GetBytesContents())
	}
	if int64(got) != n {
		if c == nil && n > 0 {
			return fmt.Errorf("%w: %s %q: no data: set contents.%s or raw_input_contents",
				models.ErrInvalidInput, kind, t.Name, field)
		}
		return fmt.Errorf("%w: %s %q: shape %v needs %d elements, %s has %d",
			models.ErrInvalidInput, kind, t.Name, t.Shape, n, field, got)
	}
	switch t.DType {
	case tensor.Bool:
		b := make([]byte, n)
		for i, v := range c.GetBoolContents() {
			if v {
				b[i] = 1
			}
		}
		t.Data = b
	case tensor.Uint8, tensor.Uint16:
		size := t.DType.Size()
		limit := uint32(1)<<(8*size) - 1
		b := make([]byte, int(n)*size)
		for i, v := range c.GetUintContents() {
			if v > limit {
				return fmt.Errorf("%w: %s %q: element %d is %d, out of range for %v",
					models.ErrInvalidInput, kind, t.Name, i, v, t.DType)
			}
			if size == 1 {
				b[i] = byte(v)
			} else {
				binary.LittleEndian.PutUint16(b[2*i:], uint16(v))
			}
		}
		t.Data = b
	case tensor.Int8, tensor.Int16:
		size := t.DType.Size()
		limit := int32(1)<<(8*size-1) - 1
		b := make([]byte, int(n)*size)
		for i, v := range c.GetIntContents() {
			if v > limit || v < -limit-1 {
				return fmt.Errorf("%w: %s %q: element %d is %d, out of range for %v",
					models.ErrInvalidInput, kind, t.Name, i, v, t.DType)
			}
			if size == 1 {
				b[i] = byte(int8(v))
			} else {
				binary.LittleEndian.PutUint16(b[2*i:], uint16(int16(v)))
			}
		}
		t.Data = b
	case tensor.Uint32:
		t.Data = sliceBytes(c.GetUintContents(), putU32)
	case tensor.Int32:
		t.Data = sliceBytes(c.GetIntContents(), putI32)
	case tensor.Uint64:
		t.Data = sliceBytes(c.GetUint64Contents(), putU64)
	case tensor.Int64:
		t.Data = sliceBytes(c.GetInt64Contents(), putI64)
	case tensor.FP32:
		t.Data = sliceBytes(c.GetFp32Contents(), putF32)
	case tensor.FP64:
		t.Data = sliceBytes(c.GetFp64Contents(), putF64)
	case tensor.Bytes:
		t.Strings = c.GetBytesContents()
	}
	return nil
}

// fixed is the set of element types whose memory layout on a little-endian
// machine is exactly the tensor's raw layout.
type fixed interface {
	~int32 | ~uint32 | ~int64 | ~uint64 | ~float32 | ~float64
}

// sliceBytes returns s as little-endian bytes: the same memory where aliasOK,
// else a copy written element by element with put.
func sliceBytes[T fixed](s []T, put func([]byte, T)) []byte {
	if len(s) == 0 {
		return []byte{}
	}
	size := int(unsafe.Sizeof(s[0]))
	if aliasOK {
		return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), len(s)*size)
	}
	b := make([]byte, len(s)*size)
	for i, v := range s {
		put(b[i*size:], v)
	}
	return b
}

// bytesSlice returns little-endian bytes b as a []T: the same memory where
// aliasOK and b is suitably aligned, else a copy read element by element with get.
func bytesSlice[T fixed](b []byte, get func([]byte) T) []T {
	var zero T
	size := int(unsafe.Sizeof(zero))
	n := len(b) / size
	if n == 0 {
		return []T{}
	}
	p := unsafe.Pointer(unsafe.SliceData(b))
	if aliasOK && uintptr(p)%unsafe.Alignof(zero) == 0 {
		return unsafe.Slice((*T)(p), n)
	}
	s := make([]T, n)
	for i := range s {
		s[i] = get(b[i*size:])
	}
	return s
}

func putU32(b []byte, v uint32)  { binary.LittleEndian.PutUint32(b, v) }
func putI32(b []byte, v int32)   { binary.LittleEndian.PutUint32(b, uint32(v)) }
func putU64(b []byte, v uint64)  { binary.LittleEndian.PutUint64(b, v) }
func putI64(b []byte, v int64)   { binary.LittleEndian.PutUint64(b, uint64(v)) }
func putF32(b []byte, v float32) { binary.LittleEndian.PutUint32(b, math.Float32bits(v)) }
func putF64(b []byte, v float64) { binary.LittleEndian.PutUint64(b, math.Float64bits(v)) }

func getU32(b []byte) uint32  { return binary.LittleEndian.Uint32(b) }
func getI32(b []byte) int32   { return int32(binary.LittleEndian.Uint32(b)) }
func getU64(b []byte) uint64  { return binary.LittleEndian.Uint64(b) }
func getI64(b []byte) int64   { return int64(binary.LittleEndian.Uint64(b)) }
func getF32(b []byte) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(b)) }
func getF64(b []byte) float64 { return math.Float64frombits(binary.LittleEndian.Uint64(b)) }

// typedContents returns t's elements in the InferTensorContents field of its
// data type. t must be valid and HasTypedContents(t.DType).
func typedContents(t *tensor.Tensor) *inferencepb.InferTensorContents {
	c := &inferencepb.InferTensorContents{}
	d := t.Data
	switch t.DType {
	case tensor.Bool:
		s := make([]bool, len(d))
		for i, v := range d {
			s[i] = v != 0
		}
		c.BoolContents = s
	case tensor.Uint8:
		s := make([]uint32, len(d))
		for i, v := range d {
			s[i] = uint32(v)
		}
		c.UintContents = s
	case tensor.Uint16:
		s := make([]uint32, len(d)/2)
		for i := range s {
			s[i] = uint32(binary.LittleEndian.Uint16(d[2*i:]))
		}
		c.UintContents = s
	case tensor.Int8:
		s := make([]int32, len(d))
		for i, v := range d {
			s[i] = int32(int8(v))
		}
		c.IntContents = s
	case tensor.Int16:
		s := make([]int32, len(d)/2)
		for i := range s {
			s[i] = int32(int16(binary.LittleEndian.Uint16(d[2*i:])))
		}
		c.IntContents = s
	case tensor.Uint32:
		c.UintContents = bytesSlice(d, getU32)
	case tensor.Int32:
		c.IntContents = bytesSlice(d, getI32)
	case tensor.Uint64:
		c.Uint64Contents = bytesSlice(d, getU64)
	case tensor.Int64:
		c.Int64Contents = bytesSlice(d, getI64)
	case tensor.FP32:
		c.Fp32Contents = bytesSlice(d, getF32)
	case tensor.FP64:
		c.Fp64Contents = bytesSlice(d, getF64)
	case tensor.Bytes:
		c.BytesContents = t.Strings
	}
	return c
}

// rawContents returns t's elements in the raw wire layout: Data itself for
// fixed-size types, 4-byte little-endian length-prefixed elements for BYTES.
func rawContents(t *tensor.Tensor) []byte {
	if t.DType != tensor.Bytes {
		return t.Data
	}
	size := 4 * len(t.Strings)
	for _, s := range t.Strings {
		size += len(s)
	}
	b := make([]byte, 0, size)
	for _, s := range t.Strings {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	return b
}

// useRaw reports whether ts must travel raw: when the caller asked for raw,
// or when one of them has a data type without a typed contents field (the
// protocol forbids mixing raw and typed tensors in one message).
func useRaw(ts []tensor.Tensor, raw bool) bool {
	if raw {
		return true
	}
	for i := range ts {
		if !HasTypedContents(ts[i].DType) {
			return true
		}
	}
	return false
}

// EncodeOutputs builds the ModelInferResponse for res. Outputs travel in
// raw_output_contents when raw is set or when an output is FP16 or BF16,
// otherwise in typed contents. Fixed-size outputs are referenced, not copied
// (typed ones on little-endian machines when aligned), so res must stay
// unmodified until the response has been sent. An output that fails
// tensor.Validate is an error (a backend bug, not a client mistake).
func EncodeOutputs(res *models.InferResponse, raw bool) (*inferencepb.ModelInferResponse, error) {
	resp := &inferencepb.ModelInferResponse{
		ModelName:    res.ModelName,
		ModelVersion: res.ModelVersion,
		Id:           res.ID,
		Outputs:      make([]*inferencepb.ModelInferResponse_InferOutputTensor, len(res.Outputs)),
	}
	raw = useRaw(res.Outputs, raw)
	if raw {
		resp.RawOutputContents = make([][]byte, len(res.Outputs))
	}
	for i := range res.Outputs {
		t := &res.Outputs[i]
		if err := t.Validate(); err != nil {
			return nil, fmt.Errorf("output %d: %w", i, err)
		}
		o := &inferencepb.ModelInferResponse_InferOutputTensor{Name: t.Name, Datatype: t.DType.String(), Shape: t.Shape}
		if raw {
			resp.RawOutputContents[i] = rawContents(t)
		} else {
			o.Contents = typedContents(t)
		}
		resp.Outputs[i] = o
	}
	return resp, nil
}

// DecodeOutputs converts a ModelInferResponse back into a models.InferResponse,
// validating it as strictly as DecodeInputs validates requests. It is the
// client side of EncodeOutputs, for tests and tools.
func DecodeOutputs(resp *inferencepb.ModelInferResponse) (*models.InferResponse, error) {
	outs := resp.GetOutputs()
	raws := resp.GetRawOutputContents()
	raw := len(raws) > 0
	if raw && len(raws) != len(outs) {
		return nil, fmt.Errorf("%w: raw_output_contents has %d entries for %d outputs", models.ErrInvalidInput, len(raws), len(outs))
	}
	res := &models.InferResponse{
		ModelName:    resp.GetModelName(),
		ModelVersion: resp.GetModelVersion(),
		ID:           resp.GetId(),
		Outputs:      make([]tensor.Tensor, len(outs)),
	}
	for i, o := range outs {
		var r []byte
		if raw {
			if o.GetContents() != nil {
				return nil, fmt.Errorf("%w: output %q: contents set alongside raw_output_contents", models.ErrInvalidInput, o.GetName())
			}
			r = raws[i]
		}
		if err := decodeTensor(&res.Outputs[i], "output", o.GetName(), o.GetDatatype(), o.GetShape(), o.GetContents(), r, raw); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// NewInferRequest builds the ModelInferRequest that asks model (version ""
// for the default) for req. Inputs travel in raw_input_contents when raw is
// set or when one of them is FP16 or BF16, otherwise in typed contents. It
// is the client side of DecodeInputs, for tests and tools; inputs are
// validated with tensor.Validate.
func NewInferRequest(model, version string, req *models.InferRequest, raw bool) (*inferencepb.ModelInferRequest, error) {
	pr := &inferencepb.ModelInferRequest{
		ModelName: model,
		Id:        req.ID,
		Inputs:    make([]*inferencepb.ModelInferRequest_InferInputTensor, len(req.Inputs)),
	}
	if version != "" {
		pr.ModelVersion = &version
	}
	raw = useRaw(req.Inputs, raw)
	if raw {
		pr.RawInputContents = make([][]byte, len(req.Inputs))
	}
	for i := range req.Inputs {
		t := &req.Inputs[i]
		if err := t.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %w", models.ErrInvalidInput, err)
		}
		in := &inferencepb.ModelInferRequest_InferInputTensor{Name: t.Name, Datatype: t.DType.String(), Shape: t.Shape}
		if raw {
			pr.RawInputContents[i] = rawContents(t)
		} else {
			in.Contents = typedContents(t)
		}
		pr.Inputs[i] = in
	}
	for _, name := range req.Outputs {
		pr.Outputs = append(pr.Outputs, &inferencepb.ModelInferRequest_InferRequestedOutputTensor{Name: name})
	}
	return pr, nil
}
