package httpapi

import (
	"encoding/binary"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/tensor"
)

// responseOutput is an output tensor chosen for the response and whether its
// data goes in the binary part.
type responseOutput struct {
	t      *tensor.Tensor
	binary bool
}

// encoder writes JSON by appending to a byte slice.
type encoder struct {
	// nonFiniteStrings writes NaN and ±Inf as the strings "NaN", "Infinity"
	// and "-Infinity" instead of Triton's bare tokens.
	nonFiniteStrings bool
}

// appendResponse appends the JSON inference response to dst. Binary outputs
// get parameters.binary_data_size and no data; the caller sends their bytes
// (see binaryData) after the JSON in the same order.
func (e encoder) appendResponse(dst []byte, resp *models.InferResponse, id string, outs []responseOutput) []byte {
	dst = append(dst, `{"model_name":`...)
	dst = appendString(dst, resp.ModelName)
	dst = append(dst, `,"model_version":`...)
	dst = appendString(dst, resp.ModelVersion)
	if id != "" {
		dst = append(dst, `,"id":`...)
		dst = appendString(dst, id)
	}
	dst = append(dst, `,"outputs":[`...)
	for i, o := range outs {
		if i > 0 {
			dst = append(dst, ',')
		}
		t := o.t
		dst = append(dst, `{"name":`...)
		dst = appendString(dst, t.Name)
		dst = append(dst, `,"datatype":"`...)
		dst = append(dst, t.DType.String()...)
		dst = append(dst, `","shape":`...)
		dst = appendShape(dst, t.Shape)
		if o.binary {
			dst = append(dst, `,"parameters":{"binary_data_size":`...)
			dst = strconv.AppendInt(dst, int64(binarySize(t)), 10)
			dst = append(dst, `}}`...)
			continue
		}
		dst = append(dst, `,"data":`...)
		dst = e.appendData(dst, t)
		dst = append(dst, '}')
	}
	return append(dst, "]}"...)
}

func appendShape(dst []byte, shape []int64) []byte {
	dst = append(dst, '[')
	for i, d := range shape {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendInt(dst, d, 10)
	}
	return append(dst, ']')
}

// binarySize is the size of t in Triton's binary tensor format.
func binarySize(t *tensor.Tensor) int {
	if t.DType != tensor.Bytes {
		return len(t.Data)
	}
	return 4*len(t.Strings) + t.ByteSize()
}

// appendBinaryBytes appends the BYTES elements of t as 4-byte little-endian
// lengths each followed by the element.
func appendBinaryBytes(dst []byte, t *tensor.Tensor) []byte {
	for _, s := range t.Strings {
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(s)))
		dst = append(dst, s...)
	}
	return dst
}

// maxElemLen bounds the JSON text of one element of each fixed-size type,
// separator included, so appendData grows its buffer once.
func maxElemLen(dt tensor.DType) int {
	switch dt {
	case tensor.Bool:
		return 6
	case tensor.Uint8, tensor.Int8:
		return 5
	case tensor.Uint16, tensor.Int16:
		return 7
	case tensor.Uint32, tensor.Int32:
		return 12
	case tensor.FP16, tensor.BF16:
		return 14
	case tensor.FP32:
		return 16
	}
	return 25
}

// appendData appends t's elements as a flat JSON array.
func (e encoder) appendData(dst []byte, t *tensor.Tensor) []byte {
	d := t.Data
	if t.DType == tensor.Bytes {
		n := 2
		for _, s := range t.Strings {
			n += len(s) + 3
		}
		dst = slices.Grow(dst, n)
		dst = append(dst, '[')
		for i, s := range t.Strings {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendStringBytes(dst, s)
		}
		return append(dst, ']')
	}
	size := t.DType.Size()
	if size == 0 {
		return append(dst, "[]"...)
	}
	n := len(d) / size
	dst = slices.Grow(dst, n*maxElemLen(t.DType)+2)
	dst = append(dst, '[')
	le := binary.LittleEndian
	switch t.DType {
	case tensor.FP32:
		for i := 0; i+4 <= len(d); i += 4 {
			if i > 0 {
				dst = append(dst, ',')
			}
			f := math.Float32frombits(le.Uint32(d[i:]))
			if f-f != 0 { // NaN or ±Inf
				dst = e.appendNonFinite(dst, float64(f))
				continue
			}
			dst = strconv.AppendFloat(dst, float64(f), 'g', -1, 32)
		}
	case tensor.FP64:
		for i := 0; i+8 <= len(d); i += 8 {
			if i > 0 {
				dst = append(dst, ',')
			}
			f := math.Float64frombits(le.Uint64(d[i:]))
			if f-f != 0 {
				dst = e.appendNonFinite(dst, f)
				continue
			}
			dst = strconv.AppendFloat(dst, f, 'g', -1, 64)
		}
	case tensor.FP16, tensor.BF16:
		sf := fmtFP16
		if t.DType == tensor.BF16 {
			sf = fmtBF16
		}
		for i := 0; i+2 <= len(d); i += 2 {
			if i > 0 {
				dst = append(dst, ',')
			}
			bits := uint32(le.Uint16(d[i:]))
			if f := sf.toFloat64(bits); f-f != 0 {
				dst = e.appendNonFinite(dst, f)
				continue
			}
			dst = sf.appendShortest(dst, bits)
		}
	case tensor.Bool:
		for i, c := range d {
			if i > 0 {
				dst = append(dst, ',')
			}
			if c != 0 {
				dst = append(dst, "true"...)
			} else {
				dst = append(dst, "false"...)
			}
		}
	case tensor.Uint8:
		for i, c := range d {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = strconv.AppendUint(dst, uint64(c), 10)
		}
	case tensor.Int8:
		for i, c := range d {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = strconv.AppendInt(dst, int64(int8(c)), 10)
		}
	case tensor.Uint16:
		for i := 0; i+2 <= len(d); i += 2 {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = strconv.AppendUint(dst, uint64(le.Uint16(d[i:])), 10)
		}
	case tensor.Int16:
		for i := 0; i+2 <= len(d); i += 2 {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = strconv.AppendInt(dst, int64(int16(le.Uint16(d[i:]))), 10)
		}
	case tensor.Uint32:
		for i := 0; i+4 <= len(d); i += 4 {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = strconv.AppendUint(dst, uint64(le.Uint32(d[i:])), 10)
		}
	case tensor.Int32:
		for i := 0; i+4 <= len(d); i += 4 {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = strconv.AppendInt(dst, int64(int32(le.Uint32(d[i:]))), 10)
		}
	case tensor.Uint64:
		for i := 0; i+8 <= len(d); i += 8 {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = strconv.AppendUint(dst, le.Uint64(d[i:]), 10)
		}
	case tensor.Int64:
		for i := 0; i+8 <= len(d); i += 8 {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = strconv.AppendInt(dst, int64(le.Uint64(d[i:])), 10)
		}
	}
	return append(dst, ']')
}

// appendNonFinite writes NaN or ±Inf: bare NaN/Infinity/-Infinity tokens as
// Triton does (rapidjson's kWriteNanAndInfFlag, also read by Python's json),
// or the same words as strings when nonFiniteStrings is set.
func (e encoder) appendNonFinite(dst []byte, f float64) []byte {
	var w string
	switch {
	case math.IsNaN(f):
		w = "NaN"
	case f > 0:
		w = "Infinity"
	default:
		w = "-Infinity"
	}
	if e.nonFiniteStrings {
		dst = append(dst, '"')
		dst = append(dst, w...)
		return append(dst, '"')
	}
	return append(dst, w...)
}

const hexDigits = "0123456789abcdef"

// safeASCII marks the ASCII bytes that need no escaping in a JSON string.
var safeASCII = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func appendString(dst []byte, s string) []byte {
	return appendStringBytes(dst, unsafeBytes(s))
}

// appendStringBytes appends s as a JSON string. Invalid UTF-8 becomes U+FFFD
// (as encoding/json does): JSON strings cannot carry arbitrary bytes, which
// is what the binary extension is for.
func appendStringBytes(dst []byte, s []byte) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if safeASCII[c] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

func appendStringArray(dst []byte, ss []string) []byte {
	dst = append(dst, '[')
	for i, s := range ss {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, s)
	}
	return append(dst, ']')
}

// appendError appends {"error": msg}.
func appendError(dst []byte, msg string) []byte {
	dst = append(dst, `{"error":`...)
	dst = appendString(dst, msg)
	return append(dst, '}')
}

// appendServerMetadata appends the $metadata_server_response object.
func appendServerMetadata(dst []byte, m models.ServerMetadata) []byte {
	dst = append(dst, `{"name":`...)
	dst = appendString(dst, m.Name)
	dst = append(dst, `,"version":`...)
	dst = appendString(dst, m.Version)
	dst = append(dst, `,"extensions":`...)
	dst = appendStringArray(dst, m.Extensions)
	return append(dst, '}')
}

// appendModelMetadata appends the $metadata_model_response object, plus the
// runtime facts in "parameters" when there are any.
func appendModelMetadata(dst []byte, m *models.Metadata) []byte {
	dst = append(dst, `{"name":`...)
	dst = appendString(dst, m.Name)
	dst = append(dst, `,"versions":`...)
	dst = appendStringArray(dst, m.Versions)
	dst = append(dst, `,"platform":`...)
	dst = appendString(dst, m.Platform)
	dst = append(dst, `,"inputs":`...)
	dst = appendSpecs(dst, m.Inputs)
	dst = append(dst, `,"outputs":`...)
	dst = appendSpecs(dst, m.Outputs)
	if len(m.Parameters) > 0 {
		keys := make([]string, 0, len(m.Parameters))
		for k := range m.Parameters {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		dst = append(dst, `,"parameters":{`...)
		for i, k := range keys {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, k)
			dst = append(dst, ':')
			dst = appendString(dst, m.Parameters[k])
		}
		dst = append(dst, '}')
	}
	return append(dst, '}')
}

func appendSpecs(dst []byte, specs []models.TensorSpec) []byte {
	dst = append(dst, '[')
	for i, sp := range specs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"name":`...)
		dst = appendString(dst, sp.Name)
		dst = append(dst, `,"datatype":"`...)
		dst = append(dst, sp.DType.String()...)
		dst = append(dst, `","shape":`...)
		dst = appendShape(dst, sp.Shape)
		dst = append(dst, '}')
	}
	return append(dst, ']')
}
