package httpapi

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/edgefleet/edgefleet/agent/tensor"
)

var (
	nan = math.NaN()
	inf = math.Inf(1)
)

// inferRequest is a decoded Open Inference Protocol request.
type inferRequest struct {
	id     string
	inputs []tensor.Tensor
	// binSize[i] is input i's binary_data_size, or -1 when its data is JSON.
	binSize []int64
	outputs []requestedOutput
	// binaryOutput is the request-level binary_data_output parameter.
	binaryOutput bool
	// timeout is the request-level "timeout" parameter; 0 means none.
	timeout time.Duration
}

// requestedOutput is one entry of the request's "outputs".
type requestedOutput struct {
	name string
	// binary is the output's binary_data parameter: -1 unset, 0 false, 1 true.
	binary int8
}

// hasBinaryInputs reports whether any input's data lies in the binary part.
func (r *inferRequest) hasBinaryInputs() bool {
	for _, n := range r.binSize {
		if n >= 0 {
			return true
		}
	}
	return false
}

// decodeRequest parses an inference request body. headerLen is the value of
// the Inference-Header-Content-Length header, or -1 when it is absent: then
// the whole body is JSON. Otherwise the first headerLen bytes are JSON and the
// rest holds the inputs' binary data in input order; fixed-size inputs alias
// body, so body must not be reused while the tensors are in use.
//
// Every returned tensor passes Validate.
func decodeRequest(body []byte, headerLen int64) (*inferRequest, error) {
	jsonPart, binPart := body, []byte(nil)
	if headerLen >= 0 {
		if headerLen > int64(len(body)) {
			return nil, badRequest("Inference-Header-Content-Length %d exceeds the body size %d", headerLen, len(body))
		}
		jsonPart, binPart = body[:headerLen], body[headerLen:]
	}
	req, err := decodeJSONRequest(jsonPart)
	if err != nil {
		return nil, err
	}
	if err := req.attachBinary(binPart, headerLen >= 0); err != nil {
		return nil, err
	}
	return req, nil
}

// attachBinary slices the binary part of the body into the inputs that have a
// binary_data_size, in input order.
func (r *inferRequest) attachBinary(bin []byte, haveHeader bool) error {
	off := int64(0)
	for i := range r.inputs {
		size := r.binSize[i]
		if size < 0 {
			continue
		}
		t := &r.inputs[i]
		if !haveHeader {
			return badRequest("input %q: binary_data_size is set but the request has no Inference-Header-Content-Length header", t.Name)
		}
		if size > int64(len(bin))-off {
			return badRequest("input %q: binary_data_size %d exceeds the %d bytes of binary data left after the JSON header", t.Name, size, int64(len(bin))-off)
		}
		data := bin[off : off+size : off+size]
		off += size
		if err := setBinaryData(t, data); err != nil {
			return err
		}
	}
	if off != int64(len(bin)) {
		return badRequest("binary data is %d bytes but the inputs' binary_data_size add up to %d", len(bin), off)
	}
	return nil
}

// setBinaryData fills t from its raw binary data: little-endian elements, or
// for BYTES 4-byte little-endian lengths each followed by that many bytes.
func setBinaryData(t *tensor.Tensor, data []byte) error {
	n, _ := tensor.NumElements(t.Shape) // validated when the input was decoded
	if t.DType != tensor.Bytes {
		if want := n * int64(t.DType.Size()); int64(len(data)) != want {
			return badRequest("input %q: binary_data_size %d does not match shape %v of %v (%d bytes)", t.Name, len(data), t.Shape, t.DType, want)
		}
		if t.DType == tensor.Bool {
			for _, c := range data {
				if c > 1 {
					return badRequest("input %q: BOOL binary data holds byte %d; only 0 and 1 are allowed", t.Name, c)
				}
			}
		}
		t.Data = data
		return nil
	}
	// Each element needs at least its 4-byte length, which bounds n.
	if n > int64(len(data))/4 {
		return badRequest("input %q: %d bytes of BYTES binary data cannot hold the %d elements of shape %v", t.Name, len(data), n, t.Shape)
	}
	strs := make([][]byte, n)
	off := 0
	for k := range strs {
		if len(data)-off < 4 {
			return badRequest("input %q: BYTES binary data ends inside the length of element %d", t.Name, k)
		}
		l := binary.LittleEndian.Uint32(data[off:])
		off += 4
		if uint64(l) > uint64(len(data)-off) {
			return badRequest("input %q: BYTES element %d has length %d but only %d bytes are left", t.Name, k, l, len(data)-off)
		}
		strs[k] = data[off : off+int(l) : off+int(l)]
		off += int(l)
	}
	if off != len(data) {
		return badRequest("input %q: BYTES binary data has %d bytes after its %d elements", t.Name, len(data)-off, n)
	}
	t.Strings = strs
	return nil
}

// decodeJSONRequest parses the JSON inference request object.
func decodeJSONRequest(b []byte) (*inferRequest, error) {
	s := scanner{b: b}
	if err := s.expect('{', "expected '{' at the start of the request"); err != nil {
		return nil, err
	}
	req := &inferRequest{}
	var seen [4]bool
	dup := func(k int, key string) error {
		if seen[k] {
			return badRequest("duplicate field %q in request", key)
		}
		seen[k] = true
		return nil
	}
	for n := 0; ; n++ {
		key, ok, err := s.nextMember(n)
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		switch string(key) {
		case "id":
			if err := dup(0, "id"); err != nil {
				return nil, err
			}
			if s.peek() != '"' {
				return nil, badRequest("request id must be a string")
			}
			v, err := s.readString()
			if err != nil {
				return nil, err
			}
			req.id = string(v)
		case "parameters":
			if err := dup(1, "parameters"); err != nil {
				return nil, err
			}
			err = s.parameters(nil, func(key string) error {
				switch key {
				case "binary_data_output":
					v, err := s.boolParam(nil, key)
					req.binaryOutput = v
					return err
				case "timeout":
					// Triton's per-request timeout, in microseconds.
					n, err := s.scanNumber()
					f, ok := n.float64()
					if err != nil || !ok || n.neg || f > 1e15 {
						return badRequest("request parameter \"timeout\" must be a non-negative number of microseconds")
					}
					req.timeout = time.Duration(f) * time.Microsecond
					return nil
				}
				return s.skipValue(1)
			})
		case "inputs":
			if err := dup(2, "inputs"); err != nil {
				return nil, err
			}
			err = s.inputs(req)
		case "outputs":
			if err := dup(3, "outputs"); err != nil {
				return nil, err
			}
			err = s.outputs(req)
		default:
			err = s.skipValue(1)
		}
		if err != nil {
			return nil, err
		}
	}
	if s.peek() != 0 {
		return nil, badRequest("malformed JSON at offset %d: data after the request object", s.i)
	}
	if !seen[2] {
		return nil, badRequest("request has no \"inputs\"")
	}
	return req, nil
}

// parameters iterates over a parameters object, calling member for each key
// with the scanner positioned at the value; member must consume it.
func (s *scanner) parameters(owner *where, member func(key string) error) error {
	if s.peek() != '{' {
		return badRequest("%s parameters must be an object", owner)
	}
	s.i++
	for n := 0; ; n++ {
		key, ok, err := s.nextMember(n)
		if err != nil || !ok {
			return err
		}
		if err := member(string(key)); err != nil {
			return err
		}
	}
}

func (s *scanner) boolParam(owner *where, key string) (bool, error) {
	switch {
	case s.literal("true"):
		return true, nil
	case s.literal("false"):
		return false, nil
	}
	return false, badRequest("%s parameter %q must be a boolean", owner, key)
}

func (s *scanner) outputs(req *inferRequest) error {
	if s.peek() != '[' {
		return badRequest("request \"outputs\" must be an array")
	}
	s.i++
	for n := 0; ; n++ {
		ok, err := s.nextElem(n)
		if err != nil || !ok {
			return err
		}
		label := &where{kind: "output", idx: n}
		if s.peek() != '{' {
			return badRequest("%s must be an object", label)
		}
		s.i++
		out := requestedOutput{binary: -1}
		haveName := false
		for m := 0; ; m++ {
			key, ok, err := s.nextMember(m)
			if err != nil {
				return err
			}
			if !ok {
				break
			}
			switch string(key) {
			case "name":
				if s.peek() != '"' {
					return badRequest("%s name must be a string", label)
				}
				v, err := s.readString()
				if err != nil {
					return err
				}
				out.name, haveName = string(v), true
				label.name, label.named = out.name, true
			case "parameters":
				err = s.parameters(label, func(key string) error {
					switch key {
					case "binary_data":
						v, err := s.boolParam(label, key)
						out.binary = 0
						if v {
							out.binary = 1
						}
						return err
					case "classification":
						return badRequest("%s: the classification extension is not supported", label)
					}
					return s.skipValue(1)
				})
			default:
				err = s.skipValue(1)
			}
			if err != nil {
				return err
			}
		}
		if !haveName || out.name == "" {
			return badRequest("%s has no name", label)
		}
		for _, o := range req.outputs {
			if o.name == out.name {
				return badRequest("output %q requested twice", out.name)
			}
		}
		req.outputs = append(req.outputs, out)
	}
}

func (s *scanner) inputs(req *inferRequest) error {
	if s.peek() != '[' {
		return badRequest("request \"inputs\" must be an array")
	}
	s.i++
	for n := 0; ; n++ {
		ok, err := s.nextElem(n)
		if err != nil || !ok {
			return err
		}
		t, binSize, err := s.input(n)
		if err != nil {
			return err
		}
		for i := range req.inputs {
			if req.inputs[i].Name == t.Name {
				return badRequest("duplicate input %q", t.Name)
			}
		}
		req.inputs = append(req.inputs, t)
		req.binSize = append(req.binSize, binSize)
	}
}

// input parses one $request_input object.
func (s *scanner) input(idx int) (tensor.Tensor, int64, error) {
	var t tensor.Tensor
	if s.peek() != '{' {
		return t, 0, badRequest("inputs[%d] must be an object", idx)
	}
	s.i++
	var (
		haveName, haveShape, haveDType, haveData bool
		dtypeErr                                 error
		binSize                                  = int64(-1)
		dataStart                                = -1 // offset of data seen before the datatype
		info                                     dataInfo
		label                                    = &where{kind: "input", idx: idx}
	)
	for m := 0; ; m++ {
		key, ok, err := s.nextMember(m)
		if err != nil {
			return t, 0, err
		}
		if !ok {
			break
		}
		field := string(key)
		if m > 0 && ((field == "name" && haveName) || (field == "shape" && haveShape) ||
			(field == "datatype" && (haveDType || dtypeErr != nil)) || (field == "data" && haveData)) {
			return t, 0, badRequest("%s: duplicate field %q", label, field)
		}
		switch field {
		case "name":
			if s.peek() != '"' {
				return t, 0, badRequest("%s: name must be a string", label)
			}
			v, err := s.readString()
			if err != nil {
				return t, 0, err
			}
			t.Name, haveName = string(v), true
			label.name, label.named = t.Name, true
			if t.Name == "" {
				return t, 0, badRequest("inputs[%d]: name is empty", idx)
			}
		case "shape":
			t.Shape, err = s.shape(label)
			haveShape = true
		case "datatype":
			if s.peek() != '"' {
				return t, 0, badRequest("%s: datatype must be a string", label)
			}
			v, err := s.readString()
			if err != nil {
				return t, 0, err
			}
			t.DType, dtypeErr = tensor.ParseDType(unsafeString(v))
			if dtypeErr != nil {
				dtypeErr = fmt.Errorf("unknown datatype %q", v)
			} else {
				haveDType = true
			}
		case "parameters":
			err = s.parameters(label, func(key string) error {
				if key != "binary_data_size" {
					return s.skipValue(1)
				}
				n, err := s.scanNumber()
				if err != nil || !n.integer || n.neg && n.mant != 0 || n.trunc || n.exp != 0 || n.mant > math.MaxInt64 {
					return badRequest("%s: binary_data_size must be a non-negative integer", label)
				}
				binSize = int64(n.mant)
				return nil
			})
		case "data":
			haveData = true
			if haveDType {
				info, err = s.data(&t, label)
			} else {
				dataStart = s.i
				err = s.skipValue(1)
			}
		default:
			err = s.skipValue(1)
		}
		if err != nil {
			return t, 0, err
		}
	}
	switch {
	case !haveName:
		return t, 0, badRequest("inputs[%d] has no name", idx)
	case dtypeErr != nil:
		return t, 0, badRequest("%s: %v", label, dtypeErr)
	case !haveDType:
		return t, 0, badRequest("%s has no datatype", label)
	case !haveShape:
		return t, 0, badRequest("%s has no shape", label)
	case haveData && binSize >= 0:
		return t, 0, badRequest("%s has both data and binary_data_size", label)
	case !haveData && binSize < 0:
		return t, 0, badRequest("%s has neither data nor binary_data_size", label)
	}
	n, err := tensor.NumElements(t.Shape)
	if err != nil {
		return t, 0, badRequest("%s: %v", label, err)
	}
	if binSize >= 0 {
		return t, binSize, nil
	}
	if dataStart >= 0 {
		end := s.i
		s.i = dataStart
		info, err = s.data(&t, label)
		if err != nil {
			return t, 0, err
		}
		s.i = end
	}
	if err := info.check(t.Shape, n); err != nil {
		return t, 0, badRequest("%s: %v", label, err)
	}
	return t, -1, nil
}

// where names the part of a request an error is about; it is formatted only
// when an error is reported. A nil *where is the request itself.
type where struct {
	kind  string // "input" or "output"
	name  string
	named bool
	idx   int
}

func (w *where) String() string {
	switch {
	case w == nil:
		return "request"
	case w.named:
		return fmt.Sprintf("%s %q", w.kind, w.name)
	}
	return fmt.Sprintf("%ss[%d]", w.kind, w.idx)
}

func (s *scanner) shape(label *where) ([]int64, error) {
	if s.peek() != '[' {
		return nil, badRequest("%s: shape must be an array of integers", label)
	}
	s.i++
	shape := make([]int64, 0, 4)
	for n := 0; ; n++ {
		ok, err := s.nextElem(n)
		if err != nil {
			return nil, err
		}
		if !ok {
			return shape, nil
		}
		c := s.peek()
		if c != '-' && !isDigit(c) {
			return nil, badRequest("%s: shape must be an array of integers", label)
		}
		num, err := s.scanNumber()
		if err != nil {
			return nil, err
		}
		if !num.integer || num.trunc || num.exp != 0 || num.mant > math.MaxInt64 {
			return nil, badRequest("%s: shape dimension must be an integer in int64 range", label)
		}
		if num.neg && num.mant != 0 {
			return nil, badRequest("%s: shape has negative dimension -%d", label, num.mant)
		}
		if len(shape) >= maxNesting {
			return nil, badRequest("%s: shape has more than %d dimensions", label, maxNesting)
		}
		shape = append(shape, int64(num.mant))
	}
}

// dataInfo describes the layout of a parsed "data" array.
type dataInfo struct {
	count int64
	// depth is 0 for a bare scalar, 1 for a flat array, k for a nested one.
	depth int
	// dims holds the length of the arrays at each nesting level (rectangular).
	dims [maxNesting]int64
}

// check matches the parsed layout against the declared shape: flat data needs
// the right element count, nested data must have exactly the declared shape.
func (d *dataInfo) check(shape []int64, n int64) error {
	switch {
	case d.depth <= 1:
		if d.count != n {
			return fmt.Errorf("data has %d elements but shape %v needs %d", d.count, shape, n)
		}
	case d.depth != len(shape) || !equalDims(d.dims[:d.depth], shape):
		// Clone so the error does not pin d (and its array) on the heap.
		return fmt.Errorf("nested data has shape %v but the declared shape is %v", slices.Clone(d.dims[:d.depth]), shape)
	}
	return nil
}

func equalDims(a, b []int64) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// data parses the value of "data" into t (whose DType is set): a flat array,
// a nested row-major array, or a bare scalar.
func (s *scanner) data(t *tensor.Tensor, label *where) (dataInfo, error) {
	var info dataInfo
	dt := t.DType
	var out []byte
	var arena []byte
	var ends []int
	capElems := int64(-1)
	if n, err := tensor.NumElements(t.Shape); err == nil && t.Shape != nil {
		// Each JSON element takes at least two bytes ("0,"), which bounds
		// the preallocation whatever the declared shape.
		capElems = min(n, int64(len(s.b)-s.i)/2+1)
	}
	if dt != tensor.Bytes && capElems > 0 {
		out = make([]byte, 0, capElems*int64(dt.Size()))
	}
	elem := func() error {
		var err error
		if dt == tensor.Bytes {
			if s.peek() != '"' {
				return badRequest("%s: BYTES data must be JSON strings", label)
			}
			var v []byte
			if v, err = s.readString(); err == nil {
				arena = append(arena, v...)
				ends = append(ends, len(arena))
			}
			return err
		}
		out, err = s.element(dt, out, label)
		return err
	}
	if s.peek() != '[' {
		if err := elem(); err != nil {
			return info, err
		}
		info.count = 1
	} else if err := s.nestedArray(&info, elem); err != nil {
		return info, err
	}
	if dt == tensor.Bytes {
		t.Strings = make([][]byte, len(ends))
		start := 0
		for k, end := range ends {
			t.Strings[k] = arena[start:end:end]
			start = end
		}
	} else {
		if out == nil {
			out = []byte{}
		}
		t.Data = out
	}
	return info, nil
}

// nestedArray walks a (possibly nested) array at s.i, calling elem for each
// scalar and recording the layout. Scalars must all sit at the same depth and
// arrays at one level must all have the same length.
func (s *scanner) nestedArray(info *dataInfo, elem func() error) error {
	var counts [maxNesting]int64
	var set [maxNesting]bool
	depth, maxDepth, leaf := 0, 0, -1
	for {
		// Expecting a value.
		c := s.peek()
		if c == '[' {
			if depth > 0 {
				counts[depth-1]++
			}
			if leaf >= 0 && depth >= leaf {
				return badRequest("malformed data at offset %d: arrays and values mixed at one nesting level", s.i)
			}
			if depth == maxNesting {
				return badRequest("malformed data at offset %d: nested deeper than %d levels", s.i, maxNesting)
			}
			s.i++
			counts[depth] = 0
			depth++
			maxDepth = max(maxDepth, depth)
			if s.peek() != ']' {
				continue
			}
			// Empty array: fall through to the closing logic.
		} else {
			if leaf < 0 {
				if depth < maxDepth {
					return badRequest("malformed data at offset %d: arrays and values mixed at one nesting level", s.i)
				}
				leaf = depth
			} else if depth != leaf {
				return badRequest("malformed data at offset %d: values at different nesting levels", s.i)
			}
			if err := elem(); err != nil {
				return err
			}
			counts[depth-1]++
			info.count++
		}
		// After a value: ',' continues, ']' closes one or more levels.
		for {
			c := s.peek()
			if c == ',' {
				s.i++
				if s.peek() == ']' {
					return s.syntax("expected a value after ','")
				}
				break
			}
			if c != ']' {
				return s.syntax("expected ',' or ']' in data")
			}
			s.i++
			l := depth - 1
			if set[l] && info.dims[l] != counts[l] {
				return badRequest("malformed data at offset %d: nested arrays of different lengths (%d and %d) at level %d", s.i-1, info.dims[l], counts[l], l)
			}
			set[l], info.dims[l] = true, counts[l]
			depth--
			if depth == 0 {
				info.depth = maxDepth
				return nil
			}
		}
	}
}

// element parses one scalar of data type dt and appends its little-endian
// encoding to out.
func (s *scanner) element(dt tensor.DType, out []byte, label *where) ([]byte, error) {
	switch dt {
	case tensor.FP32:
		f, err := s.float32(label)
		return binary.LittleEndian.AppendUint32(out, math.Float32bits(f)), err
	case tensor.FP64:
		f, _, err := s.float64(label, dt)
		return binary.LittleEndian.AppendUint64(out, math.Float64bits(f)), err
	case tensor.FP16, tensor.BF16:
		start := s.i
		f, tok, err := s.float64(label, dt)
		if err != nil {
			return out, err
		}
		sf := fmtFP16
		if dt == tensor.BF16 {
			sf = fmtBF16
		}
		bits := uint32(0)
		if tok {
			bits = sf.fromDecimal(f, s.b[start:s.i])
		} else {
			bits, _ = sf.fromFloat64(f)
		}
		if bits&^sf.sign() == sf.inf() && !math.IsInf(f, 0) {
			return out, badRequest("%s: value %s out of range for %v", label, s.b[start:s.i], dt)
		}
		return binary.LittleEndian.AppendUint16(out, uint16(bits)), nil
	case tensor.Bool:
		switch {
		case s.literal("true"):
			return append(out, 1), nil
		case s.literal("false"):
			return append(out, 0), nil
		}
		return out, s.typeError(label, dt, "true or false")
	}
	start := s.i
	neg, mag, err := s.integer(label, dt)
	if err != nil {
		return out, err
	}
	var lo, hi uint64 // magnitude bounds for negative and positive values
	switch dt {
	case tensor.Int8:
		lo, hi = 1<<7, 1<<7-1
	case tensor.Int16:
		lo, hi = 1<<15, 1<<15-1
	case tensor.Int32:
		lo, hi = 1<<31, 1<<31-1
	case tensor.Int64:
		lo, hi = 1<<63, 1<<63-1
	case tensor.Uint8:
		hi = 1<<8 - 1
	case tensor.Uint16:
		hi = 1<<16 - 1
	case tensor.Uint32:
		hi = 1<<32 - 1
	case tensor.Uint64:
		hi = math.MaxUint64
	}
	if (neg && mag > lo) || (!neg && mag > hi) {
		return out, badRequest("%s: value %s out of range for %v", label, s.b[start:s.i], dt)
	}
	v := mag
	if neg {
		v = -mag
	}
	switch dt.Size() {
	case 1:
		return append(out, byte(v)), nil
	case 2:
		return binary.LittleEndian.AppendUint16(out, uint16(v)), nil
	case 4:
		return binary.LittleEndian.AppendUint32(out, uint32(v)), nil
	}
	return binary.LittleEndian.AppendUint64(out, v), nil
}

func (s *scanner) typeError(label *where, dt tensor.DType, want string) error {
	if s.i >= len(s.b) {
		return s.syntax("expected a value")
	}
	return badRequest("%s: %v data must be %s, found %s at offset %d", label, dt, want, describeByte(s.b[s.i]), s.i)
}

// integer reads a JSON integer literal exactly (no float round trip) and
// returns its sign and magnitude; overflow of uint64 is reported as a range
// error.
func (s *scanner) integer(label *where, dt tensor.DType) (neg bool, mag uint64, err error) {
	b := s.b
	i := s.i
	if i < len(b) && b[i] == '-' {
		neg = true
		i++
	}
	if i >= len(b) || !isDigit(b[i]) {
		return false, 0, s.typeError(label, dt, "integers")
	}
	overflow := false
	if b[i] == '0' {
		i++
	} else {
		for ; i < len(b) && isDigit(b[i]); i++ {
			d := uint64(b[i] - '0')
			if mag > (math.MaxUint64-d)/10 {
				overflow = true
			}
			mag = mag*10 + d
		}
	}
	if i < len(b) && (b[i] == '.' || b[i]|0x20 == 'e') {
		start := s.i
		if _, err := s.scanNumber(); err != nil {
			return false, 0, err
		}
		return false, 0, badRequest("%s: %v data must be integers, found %s", label, dt, s.b[start:s.i])
	}
	start := s.i
	s.i = i
	if overflow {
		return false, 0, badRequest("%s: value %s out of range for %v", label, s.b[start:i], dt)
	}
	return neg, mag, nil
}

// float32 reads an FP32 element: a JSON number rounded once to float32, or a
// non-finite token or string.
func (s *scanner) float32(label *where) (float32, error) {
	start := s.i
	if s.i < len(s.b) {
		if c := s.b[s.i]; c == '"' || c == 'N' || c == 'I' || (c == '-' && s.i+1 < len(s.b) && s.b[s.i+1] == 'I') {
			f, err := s.special(label, tensor.FP32)
			return float32(f), err
		}
	}
	n, err := s.scanNumber()
	if err != nil {
		return 0, s.floatTypeError(label, tensor.FP32, start, err)
	}
	if f, ok := n.float32(); ok {
		return f, nil
	}
	if !n.trunc {
		if f, ok := eiselLemire32(n.mant, n.exp, n.neg); ok {
			return f, nil
		}
	}
	f, err := strconv.ParseFloat(unsafeString(s.b[start:s.i]), 32)
	if err != nil {
		return 0, badRequest("%s: value %s out of range for FP32", label, s.b[start:s.i])
	}
	return float32(f), nil
}

// float64 reads an element as float64. tok reports that the value came from
// a decimal number token (as opposed to a non-finite literal), which lies at
// s.b[start:s.i] for the caller.
func (s *scanner) float64(label *where, dt tensor.DType) (f float64, tok bool, err error) {
	start := s.i
	if s.i < len(s.b) {
		if c := s.b[s.i]; c == '"' || c == 'N' || c == 'I' || (c == '-' && s.i+1 < len(s.b) && s.b[s.i+1] == 'I') {
			f, err := s.special(label, dt)
			return f, false, err
		}
	}
	n, err := s.scanNumber()
	if err != nil {
		return 0, false, s.floatTypeError(label, dt, start, err)
	}
	if f, ok := n.float64(); ok {
		return f, true, nil
	}
	if !n.trunc {
		if f, ok := eiselLemire64(n.mant, n.exp, n.neg); ok {
			return f, true, nil
		}
	}
	f, err = strconv.ParseFloat(unsafeString(s.b[start:s.i]), 64)
	if err != nil {
		return 0, false, badRequest("%s: value %s out of range for %v", label, s.b[start:s.i], dt)
	}
	return f, true, nil
}

// floatTypeError turns a failed number scan into the clearer message: the
// scan's own syntax error for a malformed number, a type error otherwise.
func (s *scanner) floatTypeError(label *where, dt tensor.DType, start int, err error) error {
	if start < len(s.b) && (s.b[start] == '-' || isDigit(s.b[start])) {
		return err
	}
	s.i = start
	return s.typeError(label, dt, "numbers")
}

// special reads a non-finite value: a bare NaN/Infinity/Inf token, or one of
// the strings "NaN", "Inf", "-Inf", "Infinity", "-Infinity" (any letter case)
// for clients whose JSON encoder cannot write bare tokens.
func (s *scanner) special(label *where, dt tensor.DType) (float64, error) {
	start := s.i
	if f, ok := s.nonFinite(); ok {
		return f, nil
	}
	if s.b[s.i] == '"' {
		v, err := s.readString()
		if err != nil {
			return 0, err
		}
		if len(v) <= len("-infinity") {
			if f, err := strconv.ParseFloat(unsafeString(v), 64); err == nil && (math.IsNaN(f) || math.IsInf(f, 0)) && v[0] != '+' {
				return f, nil
			}
		}
		s.i = start
		return 0, badRequest("%s: %v data must be numbers, found string %q (only \"NaN\", \"Inf\", \"-Inf\", \"Infinity\" and \"-Infinity\" are accepted)", label, dt, v)
	}
	return 0, s.typeError(label, dt, "numbers")
}
