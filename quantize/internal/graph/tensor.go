package graph

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/edgefleet/edgefleet/quantize/onnxpb"
	"github.com/edgefleet/edgefleet/quantize/quantmath"
)

// Elem is an ONNX tensor element type.
type Elem = onnxpb.TensorProto_DataType

// Element types used by the quantizers.
const (
	Float   = onnxpb.TensorProto_FLOAT
	Float16 = onnxpb.TensorProto_FLOAT16
	Double  = onnxpb.TensorProto_DOUBLE
	Uint8   = onnxpb.TensorProto_UINT8
	Int8    = onnxpb.TensorProto_INT8
	Uint16  = onnxpb.TensorProto_UINT16
	Int16   = onnxpb.TensorProto_INT16
	Int32   = onnxpb.TensorProto_INT32
	Int64   = onnxpb.TensorProto_INT64
	Bool    = onnxpb.TensorProto_BOOL
)

// NumElements is the product of dims.
func NumElements(dims []int64) int64 {
	n := int64(1)
	for _, d := range dims {
		n *= d
	}
	return n
}

// Floats returns the elements of a FLOAT, FLOAT16 or DOUBLE tensor as float32.
func Floats(t *onnxpb.TensorProto) ([]float32, error) {
	n := NumElements(t.GetDims())
	if n < 0 {
		return nil, fmt.Errorf("tensor %q: negative dimension in %v", t.GetName(), t.GetDims())
	}
	raw := t.GetRawData()
	switch Elem(t.GetDataType()) {
	case Float:
		if raw != nil || len(t.GetFloatData()) == 0 && n == 0 {
			if int64(len(raw)) != 4*n {
				return nil, fmt.Errorf("tensor %q: %d raw bytes for %d float elements", t.GetName(), len(raw), n)
			}
			out := make([]float32, n)
			for i := range out {
				out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
			}
			return out, nil
		}
		if int64(len(t.GetFloatData())) != n {
			return nil, fmt.Errorf("tensor %q: %d float_data elements for shape %v", t.GetName(), len(t.GetFloatData()), t.GetDims())
		}
		return append([]float32(nil), t.GetFloatData()...), nil
	case Float16:
		out := make([]float32, n)
		if raw != nil {
			if int64(len(raw)) != 2*n {
				return nil, fmt.Errorf("tensor %q: %d raw bytes for %d float16 elements", t.GetName(), len(raw), n)
			}
			for i := range out {
				out[i] = quantmath.Float16ToFloat32(binary.LittleEndian.Uint16(raw[2*i:]))
			}
			return out, nil
		}
		if int64(len(t.GetInt32Data())) != n {
			return nil, fmt.Errorf("tensor %q: %d int32_data elements for shape %v", t.GetName(), len(t.GetInt32Data()), t.GetDims())
		}
		for i, v := range t.GetInt32Data() {
			out[i] = quantmath.Float16ToFloat32(uint16(v))
		}
		return out, nil
	case Double:
		out := make([]float32, n)
		if raw != nil {
			if int64(len(raw)) != 8*n {
				return nil, fmt.Errorf("tensor %q: %d raw bytes for %d double elements", t.GetName(), len(raw), n)
			}
			for i := range out {
				out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(raw[8*i:])))
			}
			return out, nil
		}
		if int64(len(t.GetDoubleData())) != n {
			return nil, fmt.Errorf("tensor %q: %d double_data elements for shape %v", t.GetName(), len(t.GetDoubleData()), t.GetDims())
		}
		for i, v := range t.GetDoubleData() {
			out[i] = float32(v)
		}
		return out, nil
	}
	return nil, fmt.Errorf("tensor %q: element type %v is not a float type", t.GetName(), Elem(t.GetDataType()))
}

// Int64s returns the elements of an INT64 or INT32 tensor.
func Int64s(t *onnxpb.TensorProto) ([]int64, error) {
	n := NumElements(t.GetDims())
	raw := t.GetRawData()
	switch Elem(t.GetDataType()) {
	case Int64:
		if raw != nil {
			if int64(len(raw)) != 8*n {
				return nil, fmt.Errorf("tensor %q: %d raw bytes for %d int64 elements", t.GetName(), len(raw), n)
			}
			out := make([]int64, n)
			for i := range out {
				out[i] = int64(binary.LittleEndian.Uint64(raw[8*i:]))
			}
			return out, nil
		}
		return append([]int64(nil), t.GetInt64Data()...), nil
	case Int32:
		if raw != nil {
			out := make([]int64, len(raw)/4)
			for i := range out {
				out[i] = int64(int32(binary.LittleEndian.Uint32(raw[4*i:])))
			}
			return out, nil
		}
		out := make([]int64, len(t.GetInt32Data()))
		for i, v := range t.GetInt32Data() {
			out[i] = int64(v)
		}
		return out, nil
	}
	return nil, fmt.Errorf("tensor %q: element type %v is not an integer type", t.GetName(), Elem(t.GetDataType()))
}

// FloatTensor builds a FLOAT tensor stored as raw data.
func FloatTensor(name string, dims []int64, v []float32) *onnxpb.TensorProto {
	raw := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(x))
	}
	return &onnxpb.TensorProto{Name: name, Dims: dims, DataType: int32(Float), RawData: raw}
}

// Float16Tensor builds a FLOAT16 tensor from float32 values, clamping
// magnitudes to the finite, nonzero float16 range (see quantmath.ClampFloat16).
func Float16Tensor(name string, dims []int64, v []float32) *onnxpb.TensorProto {
	raw := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(raw[2*i:], quantmath.Float16Bits(quantmath.ClampFloat16(x)))
	}
	return &onnxpb.TensorProto{Name: name, Dims: dims, DataType: int32(Float16), RawData: raw}
}

// IntTensor builds an integer tensor of element type e (INT8, UINT8, INT16,
// UINT16 or INT32) from values already in range, stored as raw data.
func IntTensor(name string, e Elem, dims []int64, v []int32) *onnxpb.TensorProto {
	var raw []byte
	switch e {
	case Int8, Uint8:
		raw = make([]byte, len(v))
		for i, x := range v {
			raw[i] = byte(x)
		}
	case Int16, Uint16:
		raw = make([]byte, 2*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint16(raw[2*i:], uint16(x))
		}
	case Int32:
		raw = make([]byte, 4*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint32(raw[4*i:], uint32(x))
		}
	default:
		panic(fmt.Sprintf("graph.IntTensor: unsupported element type %v", e))
	}
	return &onnxpb.TensorProto{Name: name, Dims: dims, DataType: int32(e), RawData: raw}
}

// Int64Tensor builds an INT64 tensor.
func Int64Tensor(name string, dims []int64, v []int64) *onnxpb.TensorProto {
	raw := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(raw[8*i:], uint64(x))
	}
	return &onnxpb.TensorProto{Name: name, Dims: dims, DataType: int32(Int64), RawData: raw}
}

// ByteSize estimates the stored size of t's data.
func ByteSize(t *onnxpb.TensorProto) int {
	return len(t.GetRawData()) + 4*len(t.GetFloatData()) + 4*len(t.GetInt32Data()) +
		8*len(t.GetInt64Data()) + 8*len(t.GetDoubleData()) + 8*len(t.GetUint64Data())
}

// ValueInfo builds a tensor ValueInfoProto with element type e and no shape.
func ValueInfo(name string, e Elem) *onnxpb.ValueInfoProto {
	return &onnxpb.ValueInfoProto{
		Name: name,
		Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
			TensorType: &onnxpb.TypeProto_Tensor{ElemType: int32(e)},
		}},
	}
}

// ElemOf returns the element type declared by a tensor ValueInfoProto.
func ElemOf(vi *onnxpb.ValueInfoProto) (Elem, bool) {
	tt := vi.GetType().GetTensorType()
	if tt == nil || tt.GetElemType() == 0 {
		return 0, false
	}
	return Elem(tt.GetElemType()), true
}
