package httpapi

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/agent/tensor"
)

// le builds little-endian bytes from values of one fixed-size type.
func le[T uint8 | uint16 | uint32 | uint64](vs ...T) []byte {
	var out []byte
	for _, v := range vs {
		switch x := any(v).(type) {
		case uint8:
			out = append(out, x)
		case uint16:
			out = binary.LittleEndian.AppendUint16(out, x)
		case uint32:
			out = binary.LittleEndian.AppendUint32(out, x)
		case uint64:
			out = binary.LittleEndian.AppendUint64(out, x)
		}
	}
	return out
}

func f32s(vs ...float32) []byte {
	var out []byte
	for _, v := range vs {
		out = binary.LittleEndian.AppendUint32(out, math.Float32bits(v))
	}
	return out
}

func f64s(vs ...float64) []byte {
	var out []byte
	for _, v := range vs {
		out = binary.LittleEndian.AppendUint64(out, math.Float64bits(v))
	}
	return out
}

// nest renders flat element tokens as a row-major nested JSON array of shape.
func nest(tokens []string, shape []int64) string {
	if len(shape) <= 1 {
		return "[" + strings.Join(tokens, ",") + "]"
	}
	rows := int(shape[0])
	per := len(tokens) / max(rows, 1)
	parts := make([]string, rows)
	for i := range parts {
		parts[i] = nest(tokens[i*per:(i+1)*per], shape[1:])
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func shapeJSON(shape []int64) string { return string(appendShape(nil, shape)) }

type dtypeCase struct {
	name      string
	dtype     string
	shape     []int64
	tokens    []string // JSON element tokens in
	wantData  []byte   // expected raw bytes (fixed-size types)
	wantStrs  []string // expected elements (BYTES)
	wantOut   string   // expected response "data" (flat)
	strictOut string   // expected "data" with NonFiniteAsStrings, when different
}

var dtypeCases = []dtypeCase{
	{name: "BOOL", dtype: "BOOL", shape: []int64{2, 2}, tokens: []string{"true", "false", "false", "true"},
		wantData: []byte{1, 0, 0, 1}, wantOut: "[true,false,false,true]"},
	{name: "UINT8", dtype: "UINT8", shape: []int64{3, 1}, tokens: []string{"0", "255", "7"},
		wantData: []byte{0, 255, 7}, wantOut: "[0,255,7]"},
	{name: "UINT16", dtype: "UINT16", shape: []int64{3}, tokens: []string{"0", "65535", "256"},
		wantData: le[uint16](0, 65535, 256), wantOut: "[0,65535,256]"},
	{name: "UINT32", dtype: "UINT32", shape: []int64{1, 2}, tokens: []string{"4294967295", "1"},
		wantData: le[uint32](4294967295, 1), wantOut: "[4294967295,1]"},
	{name: "UINT64 full range", dtype: "UINT64", shape: []int64{2, 1, 1}, tokens: []string{"18446744073709551615", "9007199254740993"},
		wantData: le[uint64](math.MaxUint64, 1<<53+1), wantOut: "[18446744073709551615,9007199254740993]"},
	{name: "INT8", dtype: "INT8", shape: []int64{2}, tokens: []string{"-128", "127"},
		wantData: []byte{0x80, 0x7f}, wantOut: "[-128,127]"},
	{name: "INT16", dtype: "INT16", shape: []int64{2}, tokens: []string{"-32768", "32767"},
		wantData: le[uint16](0x8000, 0x7fff), wantOut: "[-32768,32767]"},
	{name: "INT32", dtype: "INT32", shape: []int64{2, 1}, tokens: []string{"-2147483648", "2147483647"},
		wantData: le[uint32](0x80000000, 0x7fffffff), wantOut: "[-2147483648,2147483647]"},
	{name: "INT64 full range", dtype: "INT64", shape: []int64{4}, tokens: []string{"-9223372036854775808", "9223372036854775807", "-9007199254740993", "-0"},
		wantData: le[uint64](1<<63, 1<<63-1, negU64(1<<53+1), 0),
		wantOut:  "[-9223372036854775808,9223372036854775807,-9007199254740993,0]"},
	{name: "FP16", dtype: "FP16", shape: []int64{2, 2}, tokens: []string{"0.1", "65504", "-2", "1e-7"},
		wantData: le[uint16](0x2e66, 0x7bff, 0xc000, 0x0002), wantOut: "[0.1,65504,-2,1e-07]"},
	{name: "BF16", dtype: "BF16", shape: []int64{3}, tokens: []string{"1.5", "0.1", "256"},
		wantData: le[uint16](0x3fc0, 0x3dcd, 0x4380), wantOut: "[1.5,0.1,256]"},
	{name: "FP32", dtype: "FP32", shape: []int64{2, 2}, tokens: []string{"1.5", "-0.1", "3.4028235e38", "1e-45"},
		wantData: f32s(1.5, -0.1, math.MaxFloat32, math.SmallestNonzeroFloat32), wantOut: "[1.5,-0.1,3.4028235e+38,1e-45]"},
	{name: "FP32 negative zero and exponents", dtype: "FP32", shape: []int64{4}, tokens: []string{"-0", "-0.0", "1E2", "25e-1"},
		wantData: f32s(float32(math.Copysign(0, -1)), float32(math.Copysign(0, -1)), 100, 2.5), wantOut: "[-0,-0,100,2.5]"},
	{name: "FP64", dtype: "FP64", shape: []int64{3}, tokens: []string{"0.1", "-1.7976931348623157e308", "5e-324"},
		wantData: f64s(0.1, -math.MaxFloat64, math.SmallestNonzeroFloat64), wantOut: "[0.1,-1.7976931348623157e+308,5e-324]"},
	{name: "FP32 non-finite tokens", dtype: "FP32", shape: []int64{5}, tokens: []string{"NaN", "Infinity", "-Infinity", "Inf", "-Inf"},
		wantData: f32s(float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.Inf(1)), float32(math.Inf(-1))),
		wantOut:  "[NaN,Infinity,-Infinity,Infinity,-Infinity]", strictOut: `["NaN","Infinity","-Infinity","Infinity","-Infinity"]`},
	{name: "FP64 non-finite strings", dtype: "FP64", shape: []int64{4}, tokens: []string{`"NaN"`, `"inf"`, `"-Infinity"`, `"-INF"`},
		wantData: f64s(math.NaN(), math.Inf(1), math.Inf(-1), math.Inf(-1)),
		wantOut:  "[NaN,Infinity,-Infinity,-Infinity]", strictOut: `["NaN","Infinity","-Infinity","-Infinity"]`},
	{name: "FP16 non-finite", dtype: "FP16", shape: []int64{2}, tokens: []string{"NaN", "-Infinity"},
		wantData: le[uint16](0x7e00, 0xfc00), wantOut: "[NaN,-Infinity]", strictOut: `["NaN","-Infinity"]`},
	{name: "BYTES", dtype: "BYTES", shape: []int64{2, 2}, tokens: []string{`"hello"`, `"\u00e9\n\"q\""`, `""`, `"\ud83d\ude00 \/ \\"`},
		wantStrs: []string{"hello", "é\n\"q\"", "", "😀 / \\"}, wantOut: `["hello","é\n\"q\"","","😀 / \\"]`},
	{name: "scalar", dtype: "INT64", shape: []int64{}, tokens: []string{"16000"},
		wantData: le[uint64](16000), wantOut: "[16000]"},
	{name: "empty", dtype: "FP32", shape: []int64{0, 3}, tokens: nil, wantData: []byte{}, wantOut: "[]"},
}

// TestDTypeRoundTrip sends every data type as flat and as nested JSON data
// through the server and checks the tensor the backend got, byte for byte,
// and the JSON it answered.
func TestDTypeRoundTrip(t *testing.T) {
	for _, tc := range dtypeCases {
		layouts := map[string]string{"flat": "[" + strings.Join(tc.tokens, ",") + "]"}
		if len(tc.shape) > 1 && tc.shape[0] > 0 {
			layouts["nested"] = nest(tc.tokens, tc.shape)
		}
		if len(tc.shape) == 0 {
			layouts["bare scalar"] = tc.tokens[0]
		}
		for layout, data := range layouts {
			for _, strict := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/%s/strict=%v", tc.name, layout, strict), func(t *testing.T) {
					b := &echoBackend{}
					h := New(b, Options{NonFiniteAsStrings: strict})
					body := fmt.Sprintf(`{"inputs":[{"name":"t","shape":%s,"datatype":%q,"data":%s}]}`, shapeJSON(tc.shape), tc.dtype, data)
					res := do(t, h, "POST", "/v2/models/echo/infer", []byte(body), nil)
					if res.status != 200 {
						t.Fatalf("status %d: %s\nrequest: %s", res.status, res.body, body)
					}
					got := b.lastRequest().Inputs[0]
					checkTensor(t, got, tc)
					wantOut := tc.wantOut
					if strict && tc.strictOut != "" {
						wantOut = tc.strictOut
					}
					want := fmt.Sprintf(`{"model_name":"echo","model_version":"2","outputs":[{"name":"t","datatype":%q,"shape":%s,"data":%s}]}`,
						tc.dtype, shapeJSON(tc.shape), wantOut)
					if string(res.body) != want {
						t.Errorf("response\n%s\nwant\n%s", res.body, want)
					}
				})
			}
		}
	}
}

func checkTensor(t *testing.T, got tensor.Tensor, tc dtypeCase) {
	t.Helper()
	if got.DType.String() != tc.dtype || !slices.Equal(got.Shape, tc.shape) {
		t.Fatalf("tensor %v %v, want %s %v", got.DType, got.Shape, tc.dtype, tc.shape)
	}
	if err := got.Validate(); err != nil {
		t.Fatal(err)
	}
	if tc.wantStrs != nil {
		if len(got.Strings) != len(tc.wantStrs) {
			t.Fatalf("%d strings, want %d", len(got.Strings), len(tc.wantStrs))
		}
		for i := range tc.wantStrs {
			if string(got.Strings[i]) != tc.wantStrs[i] {
				t.Errorf("string %d = %q, want %q", i, got.Strings[i], tc.wantStrs[i])
			}
		}
		return
	}
	if !bytes.Equal(got.Data, tc.wantData) {
		t.Errorf("data % x, want % x", got.Data, tc.wantData)
	}
}

// TestFieldOrder checks that data may come before datatype and shape.
func TestFieldOrder(t *testing.T) {
	bodies := []string{
		`{"inputs":[{"data":[[1,2],[3,4]],"shape":[2,2],"datatype":"INT32","name":"a"}]}`,
		`{"inputs":[{"data":[[1,2],[3,4]],"datatype":"INT32","name":"a","shape":[2,2]}]}`,
		`{"inputs":[{"name":"a","datatype":"INT32","data":[[1,2],[3,4]],"shape":[2,2]}]}`,
		`{"outputs":[],"inputs":[{"name":"a","shape":[2,2],"datatype":"int32","data":[1,2,3,4],"parameters":{"content_type":"np"}}],"parameters":{"x":{"y":[1,null]}}}`,
	}
	for i, body := range bodies {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			b := &echoBackend{}
			res := do(t, New(b, Options{}), "POST", "/v2/models/echo/infer", []byte(body), nil)
			if res.status != 200 {
				t.Fatalf("status %d: %s", res.status, res.body)
			}
			got := b.lastRequest().Inputs[0]
			if want := le[uint32](1, 2, 3, 4); !bytes.Equal(got.Data, want) || got.DType != tensor.Int32 {
				t.Errorf("got %v % x", got.DType, got.Data)
			}
		})
	}
}

func TestOutputsSubset(t *testing.T) {
	const inputs = `"inputs":[{"name":"a","shape":[1],"datatype":"INT8","data":[1]},{"name":"b","shape":[1],"datatype":"INT8","data":[2]},{"name":"c","shape":[1],"datatype":"INT8","data":[3]}]`
	tests := []struct {
		name, outputs string
		wantNames     []string
		wantStatus    int
		wantErr       string
	}{
		{name: "all", outputs: ``, wantNames: []string{"a", "b", "c"}, wantStatus: 200},
		{name: "one", outputs: `,"outputs":[{"name":"b"}]`, wantNames: []string{"b"}, wantStatus: 200},
		{name: "order", outputs: `,"outputs":[{"name":"c"},{"name":"a","parameters":{}}]`, wantNames: []string{"c", "a"}, wantStatus: 200},
		{name: "unknown", outputs: `,"outputs":[{"name":"zz"}]`, wantStatus: 400, wantErr: `model \"echo\" has no output \"zz\"`},
		{name: "duplicate", outputs: `,"outputs":[{"name":"a"},{"name":"a"}]`, wantStatus: 400, wantErr: `output \"a\" requested twice`},
		{name: "no name", outputs: `,"outputs":[{"parameters":{}}]`, wantStatus: 400, wantErr: `outputs[0] has no name`},
		{name: "classification", outputs: `,"outputs":[{"name":"a","parameters":{"classification":3}}]`, wantStatus: 400, wantErr: `classification extension is not supported`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := &echoBackend{}
			res := do(t, New(b, Options{}), "POST", "/v2/models/echo/infer", []byte(`{"id":"q"`+","+inputs+tc.outputs+`}`), nil)
			if res.status != tc.wantStatus {
				t.Fatalf("status %d: %s", res.status, res.body)
			}
			if tc.wantErr != "" {
				if !strings.Contains(string(res.body), tc.wantErr) {
					t.Errorf("body %s, want error containing %s", res.body, tc.wantErr)
				}
				return
			}
			var names []string
			for _, part := range strings.Split(string(res.body), `{"name":"`)[1:] {
				names = append(names, part[:strings.IndexByte(part, '"')])
			}
			if !slices.Equal(names, tc.wantNames) {
				t.Errorf("outputs %v, want %v (%s)", names, tc.wantNames, res.body)
			}
			if !strings.Contains(string(res.body), `"id":"q"`) {
				t.Errorf("id not echoed: %s", res.body)
			}
			if tc.name == "one" && !slices.Equal(b.lastRequest().Outputs, []string{"b"}) {
				t.Errorf("backend saw outputs %v", b.lastRequest().Outputs)
			}
		})
	}
}

func TestBadInput(t *testing.T) {
	in := func(fields string) string { return `{"inputs":[{` + fields + `}]}` }
	deep := strings.Repeat("[", 70) + "1" + strings.Repeat("]", 70)
	tests := []struct {
		name, body string
		header     map[string]string
		wantErr    string
	}{
		{"empty body", ``, nil, "unexpected end of input"},
		{"truncated", `{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1,`, nil, "unexpected end of input"},
		{"truncated string", `{"id":"abc`, nil, "unterminated string"},
		{"trailing garbage", simpleRequest + "x", nil, "data after the request object"},
		{"two objects", simpleRequest + simpleRequest, nil, "data after the request object"},
		{"not an object", `[]`, nil, "expected '{' at the start of the request"},
		{"no inputs", `{"id":"a"}`, nil, `request has no \"inputs\"`},
		{"inputs not array", `{"inputs":{}}`, nil, `request \"inputs\" must be an array`},
		{"input not object", `{"inputs":[1]}`, nil, "inputs[0] must be an object"},
		{"id not string", `{"id":5,"inputs":[]}`, nil, "request id must be a string"},
		{"duplicate request field", `{"inputs":[],"inputs":[]}`, nil, `duplicate field \"inputs\" in request`},
		{"trailing comma in object", `{"inputs":[],}`, nil, "expected a string key"},
		{"trailing comma in data", in(`"name":"x","shape":[2],"datatype":"FP32","data":[1,2,]`), nil, "expected a value after ','"},
		{"missing colon", `{"inputs"[]}`, nil, "expected ':' after key"},
		{"single quotes", `{'inputs':[]}`, nil, "expected a string key"},
		{"invalid escape", `{"id":"\x","inputs":[]}`, nil, "invalid escape"},
		{"bad unicode escape", `{"id":"\u12G4","inputs":[]}`, nil, "invalid \\\\u escape"},
		{"control character", "{\"id\":\"a\tb\",\"inputs\":[]}", nil, "control character in string"},
		{"leading zero", in(`"name":"x","shape":[2],"datatype":"INT32","data":[01,2]`), nil, "expected ',' or ']' in data"},
		{"bare dot", in(`"name":"x","shape":[1],"datatype":"FP32","data":[.5]`), nil, `FP32 data must be numbers, found '.'`},
		{"dangling exponent", in(`"name":"x","shape":[1],"datatype":"FP32","data":[1e]`), nil, "expected a digit in exponent"},
		{"plus sign", in(`"name":"x","shape":[1],"datatype":"FP64","data":[+1]`), nil, `FP64 data must be numbers, found '+'`},
		{"hex float", in(`"name":"x","shape":[1],"datatype":"FP64","data":[0x10]`), nil, "expected ',' or ']' in data"},
		{"name not string", in(`"name":5`), nil, "inputs[0]: name must be a string"},
		{"empty name", in(`"name":""`), nil, "inputs[0]: name is empty"},
		{"missing name", in(`"shape":[1],"datatype":"FP32","data":[1]`), nil, "inputs[0] has no name"},
		{"missing datatype", in(`"name":"x","shape":[1],"data":[1]`), nil, `input \"x\" has no datatype`},
		{"missing shape", in(`"name":"x","datatype":"FP32","data":[1]`), nil, `input \"x\" has no shape`},
		{"missing data", in(`"name":"x","shape":[1],"datatype":"FP32"`), nil, `input \"x\" has neither data nor binary_data_size`},
		{"data and binary", in(`"name":"x","shape":[1],"datatype":"FP32","data":[1],"parameters":{"binary_data_size":4}`), nil, `input \"x\" has both data and binary_data_size`},
		{"duplicate input field", in(`"name":"x","name":"y"`), nil, `input \"x\": duplicate field \"name\"`},
		{"unknown datatype", in(`"name":"x","shape":[1],"datatype":"FP8","data":[1]`), nil, `input \"x\": unknown datatype \"FP8\"`},
		{"datatype not string", in(`"name":"x","datatype":11`), nil, `input \"x\": datatype must be a string`},
		{"shape not array", in(`"name":"x","shape":"2"`), nil, `input \"x\": shape must be an array of integers`},
		{"shape of strings", in(`"name":"x","shape":["2"]`), nil, `input \"x\": shape must be an array of integers`},
		{"negative dimension", in(`"name":"x","shape":[-1,2],"datatype":"FP32","data":[1,2]`), nil, `input \"x\": shape has negative dimension -1`},
		{"fractional dimension", in(`"name":"x","shape":[1.5]`), nil, "shape dimension must be an integer"},
		{"huge dimension", in(`"name":"x","shape":[99999999999999999999]`), nil, "shape dimension must be an integer in int64 range"},
		{"shape overflow", in(`"name":"x","shape":[4611686018427387904,4],"datatype":"FP32","data":[1]`), nil, "overflows"},
		{"huge shape small data", in(`"name":"x","shape":[1000000000000],"datatype":"FP32","data":[1]`), nil, `data has 1 elements but shape [1000000000000] needs 1000000000000`},
		{"count mismatch", in(`"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3]`), nil, `input \"x\": data has 3 elements but shape [2 2] needs 4`},
		{"count mismatch data first", in(`"data":[1,2,3],"name":"x","shape":[2,2],"datatype":"FP32"`), nil, `input \"x\": data has 3 elements but shape [2 2] needs 4`},
		{"ragged nesting", in(`"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2,3],[4]]`), nil, "nested arrays of different lengths (3 and 1)"},
		{"nested shape mismatch", in(`"name":"x","shape":[2,3],"datatype":"FP32","data":[[1,2],[3,4],[5,6]]`), nil, "nested data has shape [3 2] but the declared shape is [2 3]"},
		{"nested rank mismatch", in(`"name":"x","shape":[4],"datatype":"FP32","data":[[1,2],[3,4]]`), nil, "nested data has shape [2 2] but the declared shape is [4]"},
		{"mixed nesting value first", in(`"name":"x","shape":[2],"datatype":"FP32","data":[1,[2]]`), nil, "arrays and values mixed"},
		{"mixed nesting array first", in(`"name":"x","shape":[2],"datatype":"FP32","data":[[1],2]`), nil, "values at different nesting levels"},
		{"mixed nesting empty array", in(`"name":"x","shape":[2],"datatype":"FP32","data":[[],2]`), nil, "arrays and values mixed"},
		{"too deep", in(`"name":"x","shape":[1],"datatype":"FP32","data":` + deep), nil, "nested deeper than 64 levels"},
		{"bare scalar wrong count", in(`"name":"x","shape":[2],"datatype":"FP32","data":1`), nil, "data has 1 elements but shape [2] needs 2"},
		{"float in INT32", in(`"name":"x","shape":[1],"datatype":"INT32","data":[1.5]`), nil, `input \"x\": INT32 data must be integers, found 1.5`},
		{"exponent in INT64", in(`"name":"x","shape":[1],"datatype":"INT64","data":[1e3]`), nil, "INT64 data must be integers, found 1e3"},
		{"NaN in INT32", in(`"name":"x","shape":[1],"datatype":"INT32","data":[NaN]`), nil, "INT32 data must be integers, found 'N'"},
		{"string in FP32", in(`"name":"x","shape":[1],"datatype":"FP32","data":["a"]`), nil, `FP32 data must be numbers, found string \"a\"`},
		{"numeric string in FP32", in(`"name":"x","shape":[1],"datatype":"FP32","data":["1.5"]`), nil, `found string \"1.5\"`},
		{"null in FP32", in(`"name":"x","shape":[1],"datatype":"FP32","data":[null]`), nil, "FP32 data must be numbers, found 'n'"},
		{"number in BOOL", in(`"name":"x","shape":[1],"datatype":"BOOL","data":[1]`), nil, "BOOL data must be true or false"},
		{"number in BYTES", in(`"name":"x","shape":[1],"datatype":"BYTES","data":[1]`), nil, "BYTES data must be JSON strings"},
		{"UINT8 overflow", in(`"name":"x","shape":[1],"datatype":"UINT8","data":[256]`), nil, "value 256 out of range for UINT8"},
		{"INT8 underflow", in(`"name":"x","shape":[1],"datatype":"INT8","data":[-129]`), nil, "value -129 out of range for INT8"},
		{"UINT32 negative", in(`"name":"x","shape":[1],"datatype":"UINT32","data":[-1]`), nil, "value -1 out of range for UINT32"},
		{"INT64 overflow", in(`"name":"x","shape":[1],"datatype":"INT64","data":[9223372036854775808]`), nil, "value 9223372036854775808 out of range for INT64"},
		{"INT64 underflow", in(`"name":"x","shape":[1],"datatype":"INT64","data":[-9223372036854775809]`), nil, "out of range for INT64"},
		{"UINT64 overflow", in(`"name":"x","shape":[1],"datatype":"UINT64","data":[18446744073709551616]`), nil, "value 18446744073709551616 out of range for UINT64"},
		{"FP32 overflow", in(`"name":"x","shape":[1],"datatype":"FP32","data":[1e39]`), nil, "value 1e39 out of range for FP32"},
		{"FP64 overflow", in(`"name":"x","shape":[1],"datatype":"FP64","data":[1e309]`), nil, "value 1e309 out of range for FP64"},
		{"FP16 overflow", in(`"name":"x","shape":[1],"datatype":"FP16","data":[65520]`), nil, "value 65520 out of range for FP16"},
		{"BF16 overflow", in(`"name":"x","shape":[1],"datatype":"BF16","data":[3.4e39]`), nil, "out of range for BF16"},
		{"duplicate input", `{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]},{"name":"x","shape":[1],"datatype":"FP32","data":[2]}]}`, nil, `duplicate input \"x\"`},
		{"binary without header", in(`"name":"x","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}`), nil, `input \"x\": binary_data_size is set but the request has no Inference-Header-Content-Length header`},
		{"binary size not integer", in(`"name":"x","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":"4"}`), nil, "binary_data_size must be a non-negative integer"},
		{"binary size negative", in(`"name":"x","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":-4}`), nil, "binary_data_size must be a non-negative integer"},
		{"binary_data_output not bool", `{"parameters":{"binary_data_output":1},"inputs":[]}`, nil, `request parameter \"binary_data_output\" must be a boolean`},
		{"parameters not object", `{"parameters":[],"inputs":[]}`, nil, "request parameters must be an object"},
		{"binary_data not bool", `{"inputs":[],"outputs":[{"name":"y","parameters":{"binary_data":"yes"}}]}`, nil, `output \"y\" parameter \"binary_data\" must be a boolean`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := &echoBackend{}
			res := do(t, New(b, Options{}), "POST", "/v2/models/echo/infer", []byte(tc.body), tc.header)
			if res.status != 400 {
				t.Fatalf("status %d, want 400: %s", res.status, res.body)
			}
			if !strings.Contains(string(res.body), tc.wantErr) {
				t.Errorf("error %s\nwant it to contain %s", res.body, tc.wantErr)
			}
			if b.lastRequest() != nil {
				t.Errorf("backend ran a rejected request")
			}
		})
	}
}

// binaryBody builds a request body with Triton's binary extension.
func binaryBody(header string, parts ...[]byte) ([]byte, map[string]string) {
	body := []byte(header)
	for _, p := range parts {
		body = append(body, p...)
	}
	return body, map[string]string{HeaderInferenceHeaderLength: strconv.Itoa(len(header)), "Content-Type": "application/octet-stream"}
}

func bytesElems(ss ...string) []byte {
	var out []byte
	for _, s := range ss {
		out = binary.LittleEndian.AppendUint32(out, uint32(len(s)))
		out = append(out, s...)
	}
	return out
}

func TestBinaryRequest(t *testing.T) {
	header := `{"id":"bin","inputs":[` +
		`{"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}},` +
		`{"name":"c","shape":[1],"datatype":"INT32","data":[7]},` +
		`{"name":"b","shape":[3],"datatype":"BYTES","parameters":{"binary_data_size":19}},` +
		`{"name":"d","shape":[2],"datatype":"BOOL","parameters":{"binary_data_size":2}}],` +
		`"outputs":[{"name":"a","parameters":{"binary_data":true}},{"name":"b","parameters":{"binary_data":true}},{"name":"c"},{"name":"d"}]}`
	aData := f32s(1.5, -2)
	bData := bytesElems("hi", "", "\x00\xffraw")
	dData := []byte{1, 0}
	body, hdr := binaryBody(header, aData, bData, dData)
	b := &echoBackend{}
	res := do(t, New(b, Options{}), "POST", "/v2/models/echo/infer", body, hdr)
	if res.status != 200 {
		t.Fatalf("status %d: %s", res.status, res.body)
	}
	req := b.lastRequest()
	if got := req.Inputs[0].Data; !bytes.Equal(got, aData) {
		t.Errorf("a = % x", got)
	}
	if got := req.Inputs[1].Data; !bytes.Equal(got, le[uint32](7)) {
		t.Errorf("c = % x", got)
	}
	if got := req.Inputs[2].Strings; len(got) != 3 || string(got[0]) != "hi" || string(got[1]) != "" || string(got[2]) != "\x00\xffraw" {
		t.Errorf("b = %q", got)
	}
	if got := req.Inputs[3].Data; !bytes.Equal(got, dData) {
		t.Errorf("d = % x", got)
	}
	wantJSON := `{"model_name":"echo","model_version":"2","id":"bin","outputs":[` +
		`{"name":"a","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":8}},` +
		`{"name":"b","datatype":"BYTES","shape":[3],"parameters":{"binary_data_size":19}},` +
		`{"name":"c","datatype":"INT32","shape":[1],"data":[7]},` +
		`{"name":"d","datatype":"BOOL","shape":[2],"data":[true,false]}]}`
	want := append(append([]byte(wantJSON), aData...), bData...)
	if !bytes.Equal(res.body, want) {
		t.Errorf("response\n%q\nwant\n%q", res.body, want)
	}
	if got := res.header.Get(HeaderInferenceHeaderLength); got != strconv.Itoa(len(wantJSON)) {
		t.Errorf("%s = %s, want %d", HeaderInferenceHeaderLength, got, len(wantJSON))
	}
	if got := res.header.Get("Content-Type"); got != "application/octet-stream" {
		t.Errorf("Content-Type = %s", got)
	}
	if got := res.header.Get("Content-Length"); got != strconv.Itoa(len(want)) {
		t.Errorf("Content-Length = %s, want %d", got, len(want))
	}
}

func TestBinaryOutputSelection(t *testing.T) {
	const inputs = `"inputs":[{"name":"a","shape":[1],"datatype":"UINT16","data":[258]},{"name":"b","shape":[1],"datatype":"INT8","data":[-1]}]`
	tests := []struct {
		name     string
		rest     string
		wantJSON string
		wantBin  []byte
	}{
		{name: "request-level binary_data_output", rest: `,"parameters":{"binary_data_output":true}`,
			wantJSON: `{"model_name":"echo","model_version":"2","outputs":[{"name":"a","datatype":"UINT16","shape":[1],"parameters":{"binary_data_size":2}},{"name":"b","datatype":"INT8","shape":[1],"parameters":{"binary_data_size":1}}]}`,
			wantBin:  []byte{2, 1, 0xff}},
		{name: "output-level false overrides", rest: `,"parameters":{"binary_data_output":true},"outputs":[{"name":"a","parameters":{"binary_data":false}},{"name":"b"}]`,
			wantJSON: `{"model_name":"echo","model_version":"2","outputs":[{"name":"a","datatype":"UINT16","shape":[1],"data":[258]},{"name":"b","datatype":"INT8","shape":[1],"parameters":{"binary_data_size":1}}]}`,
			wantBin:  []byte{0xff}},
		{name: "output-level true", rest: `,"outputs":[{"name":"b","parameters":{"binary_data":true}}]`,
			wantJSON: `{"model_name":"echo","model_version":"2","outputs":[{"name":"b","datatype":"INT8","shape":[1],"parameters":{"binary_data_size":1}}]}`,
			wantBin:  []byte{0xff}},
		{name: "binary_data_output false", rest: `,"parameters":{"binary_data_output":false}`,
			wantJSON: `{"model_name":"echo","model_version":"2","outputs":[{"name":"a","datatype":"UINT16","shape":[1],"data":[258]},{"name":"b","datatype":"INT8","shape":[1],"data":[-1]}]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := do(t, New(&echoBackend{}, Options{}), "POST", "/v2/models/echo/infer", []byte("{"+inputs+tc.rest+"}"), nil)
			if res.status != 200 {
				t.Fatalf("status %d: %s", res.status, res.body)
			}
			want := append([]byte(tc.wantJSON), tc.wantBin...)
			if !bytes.Equal(res.body, want) {
				t.Errorf("response\n%q\nwant\n%q", res.body, want)
			}
			hl := res.header.Get(HeaderInferenceHeaderLength)
			if tc.wantBin == nil {
				if hl != "" || res.header.Get("Content-Type") != "application/json" {
					t.Errorf("JSON response has %s %q, Content-Type %q", HeaderInferenceHeaderLength, hl, res.header.Get("Content-Type"))
				}
			} else if hl != strconv.Itoa(len(tc.wantJSON)) {
				t.Errorf("%s = %q, want %d", HeaderInferenceHeaderLength, hl, len(tc.wantJSON))
			}
		})
	}
}

func TestBadBinaryInput(t *testing.T) {
	hdrFP32 := `{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}`
	tests := []struct {
		name    string
		header  string
		parts   [][]byte
		hlen    string // overrides the header length when set
		wantErr string
	}{
		{name: "header length beyond body", header: hdrFP32, parts: [][]byte{f32s(1, 2)}, hlen: "1000",
			wantErr: "Inference-Header-Content-Length 1000 exceeds the body size"},
		{name: "header length cuts JSON", header: hdrFP32, parts: [][]byte{f32s(1, 2)}, hlen: "20",
			wantErr: "malformed JSON"},
		{name: "missing binary data", header: hdrFP32, parts: [][]byte{f32s(1)},
			wantErr: `input \"a\": binary_data_size 8 exceeds the 4 bytes of binary data left after the JSON header`},
		{name: "extra binary data", header: hdrFP32, parts: [][]byte{f32s(1, 2, 3)},
			wantErr: "binary data is 12 bytes but the inputs' binary_data_size add up to 8"},
		{name: "size does not match shape", header: `{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":4}}]}`, parts: [][]byte{f32s(1)},
			wantErr: `input \"a\": binary_data_size 4 does not match shape [2] of FP32 (8 bytes)`},
		{name: "BOOL not 0 or 1", header: `{"inputs":[{"name":"a","shape":[2],"datatype":"BOOL","parameters":{"binary_data_size":2}}]}`, parts: [][]byte{{1, 2}},
			wantErr: `input \"a\": BOOL binary data holds byte 2`},
		{name: "BYTES length overruns", header: `{"inputs":[{"name":"s","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":6}}]}`, parts: [][]byte{{9, 0, 0, 0, 'a', 'b'}},
			wantErr: `input \"s\": BYTES element 0 has length 9 but only 2 bytes are left`},
		{name: "BYTES too few elements", header: `{"inputs":[{"name":"s","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":6}}]}`, parts: [][]byte{bytesElems("ab")},
			wantErr: `input \"s\": 6 bytes of BYTES binary data cannot hold the 2 elements of shape [2]`},
		{name: "BYTES truncated length", header: `{"inputs":[{"name":"s","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":9}}]}`, parts: [][]byte{append(bytesElems("ab"), 1, 0, 0)},
			wantErr: `input \"s\": BYTES binary data ends inside the length of element 1`},
		{name: "BYTES trailing bytes", header: `{"inputs":[{"name":"s","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":8}}]}`, parts: [][]byte{append(bytesElems("ab"), 'x', 'y')},
			wantErr: `input \"s\": BYTES binary data has 2 bytes after its 1 elements`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body, hdr := binaryBody(tc.header, tc.parts...)
			if tc.hlen != "" {
				hdr[HeaderInferenceHeaderLength] = tc.hlen
			}
			b := &echoBackend{}
			res := do(t, New(b, Options{}), "POST", "/v2/models/echo/infer", body, hdr)
			if res.status != 400 {
				t.Fatalf("status %d, want 400: %s", res.status, res.body)
			}
			if !strings.Contains(string(res.body), tc.wantErr) {
				t.Errorf("error %s\nwant it to contain %s", res.body, tc.wantErr)
			}
		})
	}
}

// TestBinaryInputsAliasBody checks the documented zero-copy behaviour and
// that the server never recycles a body that tensors alias.
func TestBinaryInputsAliasBody(t *testing.T) {
	header := `{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}`
	body := append([]byte(header), f32s(1, 2)...)
	req, err := decodeRequest(body, int64(len(header)))
	if err != nil {
		t.Fatal(err)
	}
	if &req.inputs[0].Data[0] != &body[len(header)] {
		t.Error("binary input data was copied")
	}
	if !req.hasBinaryInputs() {
		t.Error("hasBinaryInputs = false")
	}
	if cap(req.inputs[0].Data) != 8 {
		t.Errorf("binary input capacity %d lets appends clobber the next input", cap(req.inputs[0].Data))
	}
}

// negU64 is the two's complement bit pattern of -v.
func negU64(v int64) uint64 { return uint64(-v) }
