package tfserving

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/tensor"
)

// format is the request (and so response) layout.
type format uint8

const (
	formatRow      format = iota // "instances" → "predictions"
	formatColumnar               // "inputs" → "outputs"
)

// defaultSignature is the only signature an ONNX model has.
const defaultSignature = "serving_default"

// errInvalid marks client mistakes in the request body (400).
var errInvalid = errors.New("invalid argument")

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errInvalid, fmt.Sprintf(format, args...))
}

// decodePredict turns a predict request body into input tensors for the
// model described by inputs.
func decodePredict(body []byte, inputs []models.TensorSpec) ([]tensor.Tensor, format, error) {
	doc, err := parseJSON(body)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", errInvalid, err)
	}
	if doc.kind != kindObject {
		return nil, 0, invalidf("JSON Value: %s Is not object", jsonText(&doc))
	}
	if sig, ok := doc.get("signature_name"); ok {
		if sig.kind != kindString {
			return nil, 0, invalidf("JSON Value: %s not formatted correctly. 'signature_name' key must be a string value.", jsonText(&doc))
		}
		if s := string(sig.text); s != "" && s != defaultSignature {
			return nil, 0, invalidf("Serving signature name: %q not found in signature def", s)
		}
	}
	if len(inputs) == 0 {
		return nil, 0, invalidf("Failed to get input map for signature: DEFAULT")
	}
	instances, hasRows := doc.get("instances")
	columns, hasCols := doc.get("inputs")
	switch {
	case hasRows && hasCols:
		return nil, 0, invalidf("JSON Value: %s Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist", jsonText(&doc))
	case hasRows:
		if instances.kind != kindArray {
			return nil, 0, invalidf("JSON Value: %s Excepting 'instances' to be an list/array", jsonText(&doc))
		}
		if len(instances.arr) == 0 {
			return nil, 0, invalidf("JSON Value: %s No values in 'instances' array", jsonText(&doc))
		}
		ts, err := fromInstances(instances.arr, inputs)
		return ts, formatRow, err
	case hasCols:
		ts, err := fromInputs(columns, inputs)
		return ts, formatColumnar, err
	}
	return nil, 0, invalidf("Missing 'inputs' or 'instances' key")
}

// isB64 reports whether v is a {"b64": "<string>"} object.
func isB64(v *value) bool {
	return v.kind == kindObject && len(v.obj) == 1 && v.obj[0].key == "b64" && v.obj[0].val.kind == kindString
}

// isNamed reports whether v is an object of named inputs.
func isNamed(v *value) bool { return v.kind == kindObject && !isB64(v) }

func inputNames(inputs []models.TensorSpec) string {
	names := make([]string, len(inputs))
	for i, in := range inputs {
		names[i] = in.Name
	}
	slices.Sort(names)
	return strings.Join(names, ",")
}

func specIndex(inputs []models.TensorSpec, name string) int {
	return slices.IndexFunc(inputs, func(s models.TensorSpec) bool { return s.Name == name })
}

// fromInstances decodes the row format: one element per batch row, each a
// value of the single input or an object of every named input.
func fromInstances(rows []value, inputs []models.TensorSpec) ([]tensor.Tensor, error) {
	named := isNamed(&rows[0])
	if !named && len(inputs) > 1 {
		return nil, invalidf("instances is a plain list, but expecting list of objects as multiple input tensors required as per tensorinfo_map")
	}
	builders := make([]*builder, len(inputs))
	for i, in := range inputs {
		builders[i] = &builder{spec: in}
	}
	for n := range rows {
		row := &rows[n]
		if !named {
			if isNamed(row) {
				return nil, invalidf("Expecting value/list but got object at item %d of input list", n)
			}
			if err := builders[0].addItem(row); err != nil {
				return nil, invalidf("Failed to process element: %d of 'instances' list. Error: %v", n, err)
			}
			continue
		}
		if !isNamed(row) {
			return nil, invalidf("Expecting object but got list at item %d of input list", n)
		}
		seen := 0
		for _, m := range row.obj {
			i := specIndex(inputs, m.key)
			if i < 0 {
				return nil, invalidf("Failed to process element: %d key: %s of 'instances' list. Error: JSON object: does not have named input: %s", n, m.key, m.key)
			}
			if builders[i].rows > n {
				return nil, invalidf("Failed to process element: %d key: %s of 'instances' list. Error: duplicate key", n, m.key)
			}
			if err := builders[i].addItem(&m.val); err != nil {
				return nil, invalidf("Failed to process element: %d key: %s of 'instances' list. Error: %v", n, m.key, err)
			}
			seen++
		}
		if seen != len(inputs) {
			return nil, invalidf("Failed to process element: %d of 'instances' list. JSON object: %s keys must be equal to: %s", n, jsonText(row), inputNames(inputs))
		}
	}
	out := make([]tensor.Tensor, 0, len(inputs))
	for _, b := range builders {
		out = append(out, b.tensor(append([]int64{int64(len(rows))}, b.item...)))
	}
	return out, nil
}

// fromInputs decodes the columnar format: the single input's tensor, or an
// object of named inputs, each in its natural nested form.
func fromInputs(v *value, inputs []models.TensorSpec) ([]tensor.Tensor, error) {
	if !isNamed(v) {
		if len(inputs) > 1 {
			return nil, invalidf("inputs is a plain value/list, but expecting an object as multiple input tensors required as per tensorinfo_map")
		}
		b := &builder{spec: inputs[0]}
		if err := b.addItem(v); err != nil {
			return nil, invalidf("%v", err)
		}
		return []tensor.Tensor{b.tensor(b.item)}, nil
	}
	for _, m := range v.obj {
		if specIndex(inputs, m.key) < 0 {
			return nil, invalidf("'inputs' object has %q, which is not an input of the model (inputs: %s)", m.key, inputNames(inputs))
		}
	}
	out := make([]tensor.Tensor, 0, len(inputs))
	for _, in := range inputs {
		item, ok := v.get(in.Name)
		if !ok {
			return nil, invalidf("Missing named input: %s in 'inputs' object.", in.Name)
		}
		b := &builder{spec: in}
		if err := b.addItem(item); err != nil {
			return nil, invalidf("input %s: %v", in.Name, err)
		}
		out = append(out, b.tensor(b.item))
	}
	return out, nil
}

// builder accumulates the elements of one input tensor.
type builder struct {
	spec    models.TensorSpec
	item    []int64 // shape of one item, from the first
	rows    int     // items added
	data    []byte
	strings [][]byte
}

func (b *builder) tensor(shape []int64) tensor.Tensor {
	return tensor.Tensor{Name: b.spec.Name, DType: b.spec.DType, Shape: shape, Data: b.data, Strings: b.strings}
}

// addItem appends one item (a nested list or a scalar), checking that it is
// dense and has the shape of the first item.
func (b *builder) addItem(v *value) error {
	shape := denseShape(v, nil)
	if b.rows == 0 {
		b.item = shape
		n, err := tensor.NumElements(shape)
		if err != nil {
			return err
		}
		if b.spec.DType == tensor.Bytes {
			b.strings = make([][]byte, 0, n)
		} else {
			b.data = make([]byte, 0, n*int64(b.spec.DType.Size()))
		}
	} else if !slices.Equal(shape, b.item) {
		return fmt.Errorf("Expecting shape %s but got: %s", shapeText(b.item), shapeText(shape))
	}
	if err := b.fill(v, 0, shape); err != nil {
		return err
	}
	b.rows++
	return nil
}

func shapeText(s []int64) string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = strconv.FormatInt(d, 10)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// denseShape infers a shape by following first elements, as TF Serving does.
func denseShape(v *value, shape []int64) []int64 {
	for v.kind == kindArray {
		shape = append(shape, int64(len(v.arr)))
		if len(v.arr) == 0 {
			break
		}
		v = &v.arr[0]
	}
	return shape
}

func (b *builder) fill(v *value, level int, shape []int64) error {
	rank := len(shape)
	if v.kind != kindArray {
		if level != rank {
			return fmt.Errorf("JSON Value: %s found at incorrect level: %d in the JSON DOM. Expected at level: %d", jsonText(v), level+1, rank)
		}
		return b.element(v)
	}
	if level >= rank {
		return fmt.Errorf("Encountered list at unexpected level: %d expected < %d", level, rank)
	}
	if int64(len(v.arr)) != shape[level] {
		return fmt.Errorf("Encountered list at unexpected size: %d at level: %d expected size: %d", len(v.arr), level, shape[level])
	}
	for i := range v.arr {
		if err := b.fill(&v.arr[i], level+1, shape); err != nil {
			return err
		}
	}
	return nil
}

// tfTypeNames are TF's names of the data types, used in error messages.
var tfTypeNames = map[tensor.DType]string{
	tensor.Bool: "bool", tensor.Uint8: "uint8", tensor.Uint16: "uint16", tensor.Uint32: "uint32",
	tensor.Uint64: "uint64", tensor.Int8: "int8", tensor.Int16: "int16", tensor.Int32: "int32",
	tensor.Int64: "int64", tensor.FP16: "half", tensor.FP32: "float", tensor.FP64: "double",
	tensor.Bytes: "string", tensor.BF16: "bfloat16",
}

func (b *builder) typeError(v *value) error {
	return fmt.Errorf("JSON Value: %s Type: %s is not of expected type: %s", jsonText(v), v.typeName(), tfTypeNames[b.spec.DType])
}

// element appends one scalar JSON value converted to the input's data type.
func (b *builder) element(v *value) error {
	dt := b.spec.DType
	if dt == tensor.Bytes {
		switch {
		case v.kind == kindString:
			b.strings = append(b.strings, v.text)
		case isB64(v):
			raw, err := decodeB64(v.obj[0].val.text)
			if err != nil {
				return fmt.Errorf("Unable to base64 decode %s: %v", jsonText(v), err)
			}
			b.strings = append(b.strings, raw)
		case v.kind == kindObject:
			return fmt.Errorf("JSON Value: %s not formatted correctly for base64 data", jsonText(v))
		default:
			return b.typeError(v)
		}
		return nil
	}
	if dt == tensor.Bool {
		switch v.kind {
		case kindTrue:
			b.data = append(b.data, 1)
		case kindFalse:
			b.data = append(b.data, 0)
		default:
			return b.typeError(v)
		}
		return nil
	}
	if v.kind != kindNumber {
		return b.typeError(v)
	}
	s := string(v.text)
	switch dt {
	case tensor.FP32, tensor.FP16, tensor.BF16:
		f, err := parseDecimal(s, 32)
		if err != nil {
			return lossy(v, "float")
		}
		f32 := float32(f)
		if dt == tensor.FP16 && !math.IsInf(f, 0) && math.Abs(f) > maxHalf {
			return lossy(v, "half")
		}
		switch dt {
		case tensor.FP32:
			b.data = binary.LittleEndian.AppendUint32(b.data, math.Float32bits(f32))
		case tensor.FP16:
			b.data = binary.LittleEndian.AppendUint16(b.data, float32ToHalf(f32))
		default:
			b.data = binary.LittleEndian.AppendUint16(b.data, float32ToBF16(f32))
		}
	case tensor.FP64:
		f, err := parseDecimal(s, 64)
		if err != nil {
			return lossy(v, "double")
		}
		b.data = binary.LittleEndian.AppendUint64(b.data, math.Float64bits(f))
	case tensor.Int8, tensor.Int16, tensor.Int32, tensor.Int64:
		n, err := strconv.ParseInt(s, 10, 8*dt.Size())
		if err != nil {
			return b.typeError(v)
		}
		switch dt.Size() {
		case 1:
			b.data = append(b.data, byte(n))
		case 2:
			b.data = binary.LittleEndian.AppendUint16(b.data, uint16(n))
		case 4:
			b.data = binary.LittleEndian.AppendUint32(b.data, uint32(n))
		default:
			b.data = binary.LittleEndian.AppendUint64(b.data, uint64(n))
		}
	case tensor.Uint8, tensor.Uint16, tensor.Uint32, tensor.Uint64:
		n, err := strconv.ParseUint(s, 10, 8*dt.Size())
		if err != nil {
			return b.typeError(v)
		}
		switch dt.Size() {
		case 1:
			b.data = append(b.data, byte(n))
		case 2:
			b.data = binary.LittleEndian.AppendUint16(b.data, uint16(n))
		case 4:
			b.data = binary.LittleEndian.AppendUint32(b.data, uint32(n))
		default:
			b.data = binary.LittleEndian.AppendUint64(b.data, n)
		}
	default:
		return fmt.Errorf("Conversion of JSON Value: %s to type: %v is not supported", jsonText(v), dt)
	}
	return nil
}

func lossy(v *value, target string) error {
	return fmt.Errorf("Cannot convert JSON value: %s to %s without loss of precision.", jsonText(v), target)
}

// parseDecimal parses a JSON number for a floating-point input of the given
// bits, with TF Serving's rules: NaN and ±Infinity tokens are accepted,
// integers beyond the mantissa (2^24-1 for float, 2^53-1 for double) and
// finite values beyond the type's range are refused as lossy.
func parseDecimal(s string, bits int) (float64, error) {
	switch s {
	case "NaN":
		return math.NaN(), nil
	case "Infinity", "Inf":
		return math.Inf(1), nil
	case "-Infinity", "-Inf":
		return math.Inf(-1), nil
	}
	if !strings.ContainsAny(s, ".eE") {
		limit := uint64(1)<<24 - 1
		if bits == 64 {
			limit = uint64(1)<<53 - 1
		}
		n, err := strconv.ParseUint(strings.TrimPrefix(s, "-"), 10, 64)
		if err != nil || n > limit {
			return 0, errors.New("lossy integer")
		}
		if s[0] == '-' {
			return -float64(n), nil
		}
		return float64(n), nil
	}
	f, err := strconv.ParseFloat(s, bits)
	if err != nil { // out of range
		return 0, err
	}
	return f, nil
}

// decodeB64 decodes standard base64, padded or not, and the URL-safe
// alphabet as a fallback.
func decodeB64(s []byte) ([]byte, error) {
	str := strings.TrimRight(string(s), "=")
	if b, err := base64.RawStdEncoding.DecodeString(str); err == nil {
		return b, nil
	}
	return base64.RawURLEncoding.DecodeString(str)
}
