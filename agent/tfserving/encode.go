package tfserving

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/edgefleet/edgefleet/agent/tensor"
)

// encodePredict writes the predict response: {"predictions": ...} for the
// row format, {"outputs": ...} for the columnar one. A single output is
// written bare; several as objects keyed by output name.
func encodePredict(b []byte, outs []tensor.Tensor, f format) ([]byte, error) {
	if len(outs) == 0 {
		return nil, fmt.Errorf("Cannot convert empty tensor map to JSON")
	}
	for i := range outs {
		if err := outs[i].Validate(); err != nil {
			return nil, err
		}
	}
	if f == formatColumnar {
		b = append(b, `{"outputs":`...)
		if len(outs) == 1 {
			b = appendTensor(b, &outs[0], 0, 0)
		} else {
			b = append(b, '{')
			for i := range outs {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendString(b, []byte(outs[i].Name))
				b = append(b, ':')
				b = appendTensor(b, &outs[i], 0, 0)
			}
			b = append(b, '}')
		}
		return append(b, '}'), nil
	}

	// Row format: every output must be batched to the same size.
	batch := int64(-1)
	for i := range outs {
		o := &outs[i]
		if len(o.Shape) == 0 {
			return nil, fmt.Errorf("Tensor name: %s has no shape information ", o.Name)
		}
		if batch >= 0 && o.Shape[0] != batch {
			return nil, fmt.Errorf("Tensor name: %s has inconsistent batch size: %d expecting: %d", o.Name, o.Shape[0], batch)
		}
		batch = o.Shape[0]
	}
	b = append(b, `{"predictions":[`...)
	for item := range batch {
		if item > 0 {
			b = append(b, ',')
		}
		if len(outs) > 1 {
			b = append(b, '{')
		}
		for i := range outs {
			o := &outs[i]
			if len(outs) > 1 {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendString(b, []byte(o.Name))
				b = append(b, ':')
			}
			per, _ := tensor.NumElements(o.Shape[1:])
			b = appendTensor(b, o, 1, item*per)
		}
		if len(outs) > 1 {
			b = append(b, '}')
		}
	}
	return append(b, "]}"...), nil
}

// appendTensor writes the elements of t from dimension dim on, starting at
// element offset, as nested lists (a scalar when dim is past the rank).
func appendTensor(b []byte, t *tensor.Tensor, dim int, offset int64) []byte {
	if dim >= len(t.Shape) {
		return appendElement(b, t, offset)
	}
	stride, _ := tensor.NumElements(t.Shape[dim+1:])
	b = append(b, '[')
	for i := range t.Shape[dim] {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendTensor(b, t, dim+1, offset+i*stride)
	}
	return append(b, ']')
}

func appendElement(b []byte, t *tensor.Tensor, i int64) []byte {
	d := t.Data
	switch t.DType {
	case tensor.Bool:
		return strconv.AppendBool(b, d[i] != 0)
	case tensor.Uint8:
		return strconv.AppendUint(b, uint64(d[i]), 10)
	case tensor.Uint16:
		return strconv.AppendUint(b, uint64(binary.LittleEndian.Uint16(d[2*i:])), 10)
	case tensor.Uint32:
		return strconv.AppendUint(b, uint64(binary.LittleEndian.Uint32(d[4*i:])), 10)
	case tensor.Uint64:
		return strconv.AppendUint(b, binary.LittleEndian.Uint64(d[8*i:]), 10)
	case tensor.Int8:
		return strconv.AppendInt(b, int64(int8(d[i])), 10)
	case tensor.Int16:
		return strconv.AppendInt(b, int64(int16(binary.LittleEndian.Uint16(d[2*i:]))), 10)
	case tensor.Int32:
		return strconv.AppendInt(b, int64(int32(binary.LittleEndian.Uint32(d[4*i:]))), 10)
	case tensor.Int64:
		return strconv.AppendInt(b, int64(binary.LittleEndian.Uint64(d[8*i:])), 10)
	case tensor.FP16:
		return appendDecimal(b, float64(halfToFloat32(binary.LittleEndian.Uint16(d[2*i:]))), 32)
	case tensor.BF16:
		return appendDecimal(b, float64(bf16ToFloat32(binary.LittleEndian.Uint16(d[2*i:]))), 32)
	case tensor.FP32:
		return appendDecimal(b, float64(math.Float32frombits(binary.LittleEndian.Uint32(d[4*i:]))), 32)
	case tensor.FP64:
		return appendDecimal(b, math.Float64frombits(binary.LittleEndian.Uint64(d[8*i:])), 64)
	case tensor.Bytes:
		s := t.Strings[i]
		if strings.HasSuffix(t.Name, "_bytes") || !utf8.Valid(s) {
			b = append(b, `{"b64":"`...)
			b = base64.StdEncoding.AppendEncode(b, s)
			return append(b, `"}`...)
		}
		return appendString(b, s)
	}
	return append(b, "null"...)
}

// appendDecimal writes a float as TF Serving does: the shortest text that
// reads back to the same value, ".0" after whole numbers, and the tokens
// NaN, Infinity and -Infinity.
func appendDecimal(b []byte, f float64, bits int) []byte {
	switch {
	case math.IsNaN(f):
		return append(b, "NaN"...)
	case math.IsInf(f, 1):
		return append(b, "Infinity"...)
	case math.IsInf(f, -1):
		return append(b, "-Infinity"...)
	}
	start := len(b)
	b = strconv.AppendFloat(b, f, 'g', -1, bits)
	for _, c := range b[start:] {
		if c == '.' || c == 'e' {
			return b
		}
	}
	return append(b, ".0"...)
}
