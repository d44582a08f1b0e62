package tfserving_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/agent/internal/testenv"
	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/tensor"
	"github.com/edgefleet/edgefleet/agent/tfserving"
)

// backend adds labels to a real models.Manager.
type backend struct {
	*models.Manager
	labels map[string]map[string]string // model → label → version
}

func (b *backend) ResolveLabel(name, label string) (string, error) {
	if _, err := b.ModelMetadata(name, ""); err != nil {
		return "", err
	}
	v, ok := b.labels[name][label]
	if !ok {
		return "", fmt.Errorf("model %q has no label %q: %w", name, label, models.ErrNotFound)
	}
	return v, nil
}

var _ tfserving.Backend = (*backend)(nil)

// setup loads the digits CNN as versions 1 and 2 (labels stable → 1,
// canary → 2) and the all-dtypes identity model into a real Manager.
func setup(t *testing.T) *backend {
	t.Helper()
	testenv.InitORT(t)
	m := models.NewManager(models.Options{Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(m.Close)
	cnn := testenv.Fixture(t, "digits/cnn.onnx")
	for _, lr := range []models.LoadRequest{
		{Name: "digits", Version: "1", Model: cnn},
		{Name: "digits", Version: "2", Model: cnn},
		{Name: "identity", Version: "1", Model: testenv.Fixture(t, "dtypes/identity_all.onnx")},
	} {
		if err := m.Load(context.Background(), lr); err != nil {
			t.Fatal(err)
		}
	}
	return &backend{Manager: m, labels: map[string]map[string]string{"digits": {"stable": "1", "canary": "2"}}}
}

func do(t *testing.T, h http.Handler, method, path, body string, hdr ...string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q", method, path, ct)
	}
	return rec.Code, rec.Body.String()
}

// digitRows returns the first n held-out digits as [n][8][8] pixels.
func digitRows(t *testing.T, n int) [][64]float32 {
	t.Helper()
	rows, err := csv.NewReader(bytes.NewReader(testenv.Fixture(t, "digits/test.csv"))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	out := make([][64]float32, n)
	for i := range out {
		for j := range 64 {
			v, err := strconv.ParseFloat(rows[i+1][j+1], 32)
			if err != nil {
				t.Fatal(err)
			}
			out[i][j] = float32(v) / 16
		}
	}
	return out
}

// image writes one digit as [1][8][8] nested JSON.
func image(px [64]float32) string {
	var b strings.Builder
	b.WriteString("[[")
	for r := range 8 {
		if r > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('[')
		for c := range 8 {
			if c > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatFloat(float64(px[8*r+c]), 'g', -1, 32))
		}
		b.WriteByte(']')
	}
	b.WriteString("]]")
	return b.String()
}

func decodeNumbers(t *testing.T, body string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(body))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("response %q: %v", body, err)
	}
	return m
}

// float32s flattens nested lists of JSON numbers, parsing them as float32.
func float32s(t *testing.T, v any) []float32 {
	t.Helper()
	switch x := v.(type) {
	case []any:
		var out []float32
		for _, e := range x {
			out = append(out, float32s(t, e)...)
		}
		return out
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 32)
		if err != nil {
			t.Fatal(err)
		}
		return []float32{float32(f)}
	}
	t.Fatalf("unexpected JSON value %#v", v)
	return nil
}

// TestPredictDigitsEveryForm sends the same five digits in the row and
// columnar forms, named and bare, to versions and labels: every answer must
// carry the logits of in-process onnxruntime, bit for bit.
func TestPredictDigitsEveryForm(t *testing.T) {
	h := tfserving.New(setup(t), tfserving.Options{})
	px := digitRows(t, 5)

	// In-process reference on the same [5,1,8,8] batch.
	sess, err := runtime.NewSession(testenv.Fixture(t, "digits/cnn.onnx"), runtime.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	var raw []byte
	for _, p := range px {
		for _, v := range p {
			raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(v))
		}
	}
	ref, err := sess.Run([]tensor.Tensor{{Name: "input", DType: tensor.FP32, Shape: []int64{5, 1, 8, 8}, Data: raw}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]float32, 50)
	for i := range want {
		want[i] = math.Float32frombits(binary.LittleEndian.Uint32(ref.Outputs[0].Data[4*i:]))
	}

	var bare, named []string
	for _, p := range px {
		bare = append(bare, image(p))
		named = append(named, `{"input":`+image(p)+`}`)
	}
	list := func(items []string) string { return "[" + strings.Join(items, ",") + "]" }
	for _, tc := range []struct {
		name, path, body, key string
	}{
		{"row bare", "/v1/models/digits:predict", `{"instances":` + list(bare) + `}`, "predictions"},
		{"row named", "/v1/models/digits:predict", `{"signature_name":"serving_default","instances":` + list(named) + `}`, "predictions"},
		{"columnar bare", "/v1/models/digits:predict", `{"inputs":` + list(bare) + `}`, "outputs"},
		{"columnar named", "/v1/models/digits:predict", `{"inputs":{"input":` + list(bare) + `},"signature_name":""}`, "outputs"},
		{"version", "/v1/models/digits/versions/1:predict", `{"instances":` + list(bare) + `}`, "predictions"},
		{"label", "/v1/models/digits/labels/canary:predict", `{"inputs":` + list(bare) + `}`, "outputs"},
		{"keywords any case", "/V1/Models/digits/Versions/2:PREDICT", `{"instances":` + list(bare) + `}`, "predictions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := do(t, h, http.MethodPost, tc.path, tc.body)
			if code != http.StatusOK {
				t.Fatalf("status %d: %s", code, body)
			}
			m := decodeNumbers(t, body)
			if len(m) != 1 {
				t.Fatalf("response keys %v, want only %q", m, tc.key)
			}
			rows, ok := m[tc.key].([]any)
			if !ok || len(rows) != 5 {
				t.Fatalf("%s = %v, want 5 rows", tc.key, m[tc.key])
			}
			got := float32s(t, rows)
			if len(got) != len(want) {
				t.Fatalf("%d logits, want %d", len(got), len(want))
			}
			for i := range want {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("logit %d = %v, in-process %v", i, got[i], want[i])
				}
			}
		})
	}
}

// identityColumns holds the same two rows of every data type as JSON input
// columns and the JSON each output column must read back as.
var identityColumns = []struct{ in, out, want string }{
	{"in_BOOL", "out_BOOL", `[[true,false,true],[false,false,true]]`},
	{"in_UINT8", "out_UINT8", `[[0,255,7],[1,2,3]]`},
	{"in_UINT16", "out_UINT16", `[[65535,0,1],[2,3,4]]`},
	{"in_UINT32", "out_UINT32", `[[4294967295,0,1],[2,3,4]]`},
	{"in_UINT64", "out_UINT64", `[[18446744073709551615,0,1],[2,3,4]]`},
	{"in_INT8", "out_INT8", `[[-128,127,0],[1,-1,2]]`},
	{"in_INT16", "out_INT16", `[[-32768,32767,0],[1,-1,2]]`},
	{"in_INT32", "out_INT32", `[[-2147483648,2147483647,0],[1,-1,2]]`},
	{"in_INT64", "out_INT64", `[[-9223372036854775808,9223372036854775807,0],[1,-1,2]]`},
	{"in_FP16", "out_FP16", `[[0.5,-2.0,65504.0],[0.099975586,1.0,-0.0]]`},
	{"in_FP32", "out_FP32", `[[1.5,-2.25,0.001],[1e+38,1.0,-0.0]]`},
	{"in_FP64", "out_FP64", `[[0.1,1e+300,-2.5],[5e-324,2.0,-0.0]]`},
	{"in_BYTES", "out_BYTES", `[["hello",{"b64":"//4="},"ünï \"q\""],["",{"b64":"//4="},"x"]]`},
}

// identityInputs is identityColumns as requests send them (FP16 given as a
// decimal that rounds, BYTES partly as b64).
func identityInputs() map[string]string {
	m := map[string]string{}
	for _, c := range identityColumns {
		m[c.in] = c.want
	}
	m["in_FP16"] = `[[0.5,-2,65504],[0.1,1,-0.0]]`
	m["in_FP32"] = `[[1.5,-2.25,1e-3],[1E38,1,-0.0]]`
	m["in_BYTES"] = `[["hello",{"b64":"//4="},"ünï \"q\""],[{"b64":""},{"b64":"//4"},"x"]]`
	return m
}

func rowOf(col string, i int) string {
	var rows []json.RawMessage
	if err := json.Unmarshal([]byte(col), &rows); err != nil {
		panic(err)
	}
	return string(rows[i])
}

// TestPredictIdentityEveryDType sends every data type through the identity
// model in both forms; outputs must read back exactly, row and columnar
// answers must agree, BYTES as strings or b64.
func TestPredictIdentityEveryDType(t *testing.T) {
	h := tfserving.New(setup(t), tfserving.Options{})
	in := identityInputs()

	var cols []string
	for name, v := range in {
		cols = append(cols, strconv.Quote(name)+":"+v)
	}
	code, body := do(t, h, http.MethodPost, "/v1/models/identity:predict", `{"inputs":{`+strings.Join(cols, ",")+`}}`)
	if code != http.StatusOK {
		t.Fatalf("columnar: %d %s", code, body)
	}
	var columnar struct{ Outputs map[string]json.RawMessage }
	if err := json.Unmarshal([]byte(body), &columnar); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if len(columnar.Outputs) != len(identityColumns)+1 {
		t.Errorf("%d outputs, want %d", len(columnar.Outputs), len(identityColumns)+1)
	}
	for _, c := range identityColumns {
		if got := string(columnar.Outputs[c.out]); got != c.want {
			t.Errorf("%s = %s, want %s", c.out, got, c.want)
		}
	}
	if got, want := string(columnar.Outputs["double_fp32"]), `[[3.0,-4.5,0.002],[2e+38,2.0,-0.0]]`; got != want {
		t.Errorf("double_fp32 = %s, want %s", got, want)
	}

	// Row form: one object of every input per instance.
	var rows []string
	for i := range 2 {
		var fields []string
		for name, v := range in {
			fields = append(fields, strconv.Quote(name)+":"+rowOf(v, i))
		}
		rows = append(rows, "{"+strings.Join(fields, ",")+"}")
	}
	code, body = do(t, h, http.MethodPost, "/v1/models/identity/versions/1:predict", `{"instances":[`+strings.Join(rows, ",")+`]}`)
	if code != http.StatusOK {
		t.Fatalf("row: %d %s", code, body)
	}
	var row struct{ Predictions []map[string]json.RawMessage }
	if err := json.Unmarshal([]byte(body), &row); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if len(row.Predictions) != 2 {
		t.Fatalf("%d predictions, want 2: %s", len(row.Predictions), body)
	}
	for i := range 2 {
		for _, c := range identityColumns {
			if got, want := string(row.Predictions[i][c.out]), rowOf(c.want, i); got != want {
				t.Errorf("row %d %s = %s, columnar gives %s", i, c.out, got, want)
			}
		}
	}
}

// TestNonFinite: NaN and Infinity tokens go in and come out as TF Serving
// writes them.
func TestNonFinite(t *testing.T) {
	h := tfserving.New(setup(t), tfserving.Options{})
	in := identityInputs()
	in["in_FP32"] = `[[NaN,Infinity,-Infinity],[-Inf,Inf,0]]`
	in["in_FP64"] = `[[NaN,Infinity,-Infinity],[1,2,3]]`
	var cols []string
	for name, v := range in {
		cols = append(cols, strconv.Quote(name)+":"+v)
	}
	code, body := do(t, h, http.MethodPost, "/v1/models/identity:predict", `{"inputs":{`+strings.Join(cols, ",")+`}}`)
	if code != http.StatusOK {
		t.Fatalf("%d %s", code, body)
	}
	for _, want := range []string{
		`"out_FP32":[[NaN,Infinity,-Infinity],[-Infinity,Infinity,0.0]]`,
		`"out_FP64":[[NaN,Infinity,-Infinity],[1.0,2.0,3.0]]`,
		`"double_fp32":[[NaN,Infinity,-Infinity],[-Infinity,Infinity,0.0]]`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("response lacks %s: %s", want, body)
		}
	}
}

func TestStatusAndMetadata(t *testing.T) {
	h := tfserving.New(setup(t), tfserving.Options{})
	status := func(vs ...string) string {
		var parts []string
		for _, v := range vs {
			parts = append(parts, `{"version":"`+v+`","state":"AVAILABLE","status":{"error_code":"OK","error_message":""}}`)
		}
		return `{"model_version_status":[` + strings.Join(parts, ",") + `]}`
	}
	sig := `"inputs":{"input":{"dtype":"DT_FLOAT","tensor_shape":{"dim":[{"size":"-1","name":""},{"size":"1","name":""},{"size":"8","name":""},{"size":"8","name":""}],"unknown_rank":false},"name":"input"}},` +
		`"outputs":{"logits":{"dtype":"DT_FLOAT","tensor_shape":{"dim":[{"size":"-1","name":""},{"size":"10","name":""}],"unknown_rank":false},"name":"logits"}},` +
		`"method_name":"tensorflow/serving/predict","defaults":{}`
	metadata := func(v string) string {
		return `{"model_spec":{"name":"digits","signature_name":"","version":"` + v + `"},"metadata":{"signature_def":{"signature_def":{"serving_default":{` + sig + `}}}}}`
	}
	for _, tc := range []struct {
		path string
		code int
		want string // whole body when code is 200, else a substring of the error
	}{
		{"/v1/models/digits", 200, status("1", "2")},
		{"/v1/models/digits/versions/1", 200, status("1")},
		{"/v1/models/digits/labels/canary", 200, status("2")},
		{"/v1/models/digits/metadata", 200, metadata("2")},
		{"/v1/models/digits/versions/1/metadata", 200, metadata("1")},
		{"/v1/models/digits/labels/stable/metadata", 200, metadata("1")},
		{"/v1/models/nope", 404, "Could not find any versions of model nope"},
		{"/v1/models/digits/versions/9", 404, "Could not find version 9 of model digits"},
		{"/v1/models/nope/versions/1", 404, "Could not find any versions of model nope"},
		{"/v1/models/digits/labels/beta", 400, "Unrecognized servable version label: beta"},
		{"/v1/models/nope/labels/stable", 404, "Servable not found for request: Latest(nope)"},
		{"/v1/models/nope/metadata", 404, "Servable not found for request: Latest(nope)"},
		{"/v1/models/digits/versions/9/metadata", 404, "Servable not found for request: Specific(digits, 9)"},
		{"/v1/models", 400, "Missing model name"},
		{"/v1/models/digits/versions/1/labels/x", 400, "Malformed request"},
		{"/v1/models/digits:predict", 400, "Malformed request"},
		{"/v1/models/digits/extra", 400, "Malformed request"},
		{"/v1/foo", 400, "Malformed request"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			code, body := do(t, h, http.MethodGet, tc.path, "")
			if code != tc.code {
				t.Fatalf("status %d, want %d: %s", code, tc.code, body)
			}
			if tc.code == 200 {
				if body != tc.want {
					t.Fatalf("body\n%s\nwant\n%s", body, tc.want)
				}
				return
			}
			var e struct{ Error string }
			if err := json.Unmarshal([]byte(body), &e); err != nil || !strings.Contains(e.Error, tc.want) {
				t.Fatalf("body %s, want an error containing %q", body, tc.want)
			}
		})
	}

	// Every data type's TF name.
	_, body := do(t, h, http.MethodGet, "/v1/models/identity/metadata", "")
	var md struct {
		Metadata struct {
			SignatureDef struct {
				SignatureDef map[string]struct {
					Inputs map[string]struct{ Dtype string }
				} `json:"signature_def"`
			} `json:"signature_def"`
		}
	}
	if err := json.Unmarshal([]byte(body), &md); err != nil {
		t.Fatal(err)
	}
	ins := md.Metadata.SignatureDef.SignatureDef["serving_default"].Inputs
	for in, want := range map[string]string{"in_BOOL": "DT_BOOL", "in_UINT8": "DT_UINT8", "in_UINT16": "DT_UINT16",
		"in_UINT32": "DT_UINT32", "in_UINT64": "DT_UINT64", "in_INT8": "DT_INT8", "in_INT16": "DT_INT16",
		"in_INT32": "DT_INT32", "in_INT64": "DT_INT64", "in_FP16": "DT_HALF", "in_FP32": "DT_FLOAT",
		"in_FP64": "DT_DOUBLE", "in_BYTES": "DT_STRING"} {
		if got := ins[in].Dtype; got != want {
			t.Errorf("%s dtype %q, want %q", in, got, want)
		}
	}
}

func TestPredictErrors(t *testing.T) {
	b := setup(t)
	h := tfserving.New(b, tfserving.Options{})
	small := tfserving.New(b, tfserving.Options{MaxBodyBytes: 1024})
	px := digitRows(t, 1)[0]
	good := `{"instances":[` + image(px) + `]}`
	identityRow := func(mut func(map[string]string)) string {
		in := identityInputs()
		mut(in)
		var f []string
		for k, v := range in {
			f = append(f, strconv.Quote(k)+":"+rowOf(v, 0))
		}
		return `{"instances":[{` + strings.Join(f, ",") + `}]}`
	}
	identityCols := func(mut func(map[string]string)) string {
		in := identityInputs()
		mut(in)
		var f []string
		for k, v := range in {
			f = append(f, strconv.Quote(k)+":"+v)
		}
		return `{"inputs":{` + strings.Join(f, ",") + `}}`
	}
	const digits, identity = "/v1/models/digits:predict", "/v1/models/identity:predict"
	for _, tc := range []struct {
		name, method, path, body string
		h                        http.Handler
		code                     int
		want                     string
	}{
		{"bad JSON", "POST", digits, `{"instances": [1,2`, h, 400, "JSON Parse error"},
		{"empty body", "POST", digits, ``, h, 400, "JSON Parse error: The document is empty"},
		{"trailing garbage", "POST", digits, good + `x`, h, 400, "JSON Parse error"},
		{"not an object", "POST", digits, `[1,2]`, h, 400, "Is not object"},
		{"signature_name not a string", "POST", digits, `{"signature_name":100,"instances":[1]}`, h, 400, "'signature_name' key must be a string value."},
		{"unknown signature", "POST", digits, `{"signature_name":"other","instances":[1]}`, h, 400, `Serving signature name: "other" not found in signature def`},
		{"both forms", "POST", digits, `{"instances":[1],"inputs":[1]}`, h, 400, "expecting only one of 'inputs' or 'instances'"},
		{"neither form", "POST", digits, `{}`, h, 400, "Missing 'inputs' or 'instances' key"},
		{"instances not a list", "POST", digits, `{"instances":"x"}`, h, 400, "to be an list/array"},
		{"no instances", "POST", digits, `{"instances":[]}`, h, 400, "No values in 'instances' array"},
		{"string for float", "POST", digits, `{"instances":["x"]}`, h, 400, "is not of expected type: float"},
		{"null for float", "POST", digits, `{"inputs":[[null]]}`, h, 400, "Type: Null is not of expected type: float"},
		{"b64 for float", "POST", digits, `{"inputs":{"b64":"AAAA"}}`, h, 400, "is not of expected type: float"},
		{"ragged list", "POST", digits, `{"inputs":[[[1,2],[3]]]}`, h, 400, "Encountered list at unexpected size: 1 at level: 2 expected size: 2"},
		{"scalar among lists", "POST", digits, `{"inputs":[[[1],2]]}`, h, 400, "found at incorrect level: 3 in the JSON DOM. Expected at level: 3"},
		{"list below the leaves", "POST", digits, `{"inputs":[[1,[2]]]}`, h, 400, "Encountered list at unexpected level: 2 expected < 2"},
		{"instances of different shapes", "POST", digits, `{"instances":[[1,2],[1,2,3]]}`, h, 400, "Expecting shape [2] but got: [3]"},
		{"wrong shape for the model", "POST", digits, `{"instances":[[[[1,2,3,4,5,6,7]]]]}`, h, 400, "invalid input"},
		{"lossy float", "POST", digits, `{"inputs":[[[[16777217]]]]}`, h, 400, "without loss of precision"},
		{"float out of range", "POST", digits, `{"inputs":[[[[1e39]]]]}`, h, 400, "without loss of precision"},
		{"extra named input", "POST", digits, `{"inputs":{"input":[[[[1]]]],"bogus":1}}`, h, 400, `"bogus", which is not an input of the model`},
		{"named instance with an unknown key", "POST", digits, `{"instances":[{"input":[[[1]]],"bogus":1}]}`, h, 400, "does not have named input: bogus"},
		{"named instance missing a key", "POST", identity, identityRow(func(m map[string]string) { delete(m, "in_INT8") }), h, 400, "keys must be equal to"},
		{"plain list for a multi-input model", "POST", identity, `{"instances":[1]}`, h, 400, "expecting list of objects as multiple input tensors"},
		{"plain inputs for a multi-input model", "POST", identity, `{"inputs":[1]}`, h, 400, "expecting an object as multiple input tensors"},
		{"missing named input", "POST", identity, identityCols(func(m map[string]string) { delete(m, "in_INT8") }), h, 400, "Missing named input: in_INT8 in 'inputs' object."},
		{"fraction for int32", "POST", identity, identityCols(func(m map[string]string) { m["in_INT32"] = `[[1.5,0,0],[0,0,0]]` }), h, 400, "is not of expected type: int32"},
		{"uint8 overflow", "POST", identity, identityCols(func(m map[string]string) { m["in_UINT8"] = `[[256,0,0],[0,0,0]]` }), h, 400, "is not of expected type: uint8"},
		{"negative unsigned", "POST", identity, identityCols(func(m map[string]string) { m["in_UINT64"] = `[[-1,0,0],[0,0,0]]` }), h, 400, "is not of expected type: uint64"},
		{"number for bool", "POST", identity, identityCols(func(m map[string]string) { m["in_BOOL"] = `[[1,0,0],[0,0,0]]` }), h, 400, "is not of expected type: bool"},
		{"half out of range", "POST", identity, identityCols(func(m map[string]string) { m["in_FP16"] = `[[70000.5,0,0],[0,0,0]]` }), h, 400, "to half without loss of precision"},
		{"bad base64", "POST", identity, identityRow(func(m map[string]string) { m["in_BYTES"] = `[[{"b64":"!!"},"a","b"]]` }), h, 400, "Unable to base64 decode"},
		{"object that is not b64", "POST", identity, identityRow(func(m map[string]string) { m["in_BYTES"] = `[[{"b64":"AA","x":1},"a","b"]]` }), h, 400, "not formatted correctly for base64 data"},
		{"NUL byte in a string", "POST", identity, identityRow(func(m map[string]string) { m["in_BYTES"] = `[[{"b64":"AA=="},"a","b"]]` }), h, 400, "NUL byte"},
		{"number for string", "POST", identity, identityRow(func(m map[string]string) { m["in_BYTES"] = `[[1,"a","b"]]` }), h, 400, "is not of expected type: string"},
		{"deep nesting", "POST", digits, `{"inputs":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, h, 400, "Nesting deeper than"},
		{"invalid escape", "POST", digits, `{"instances":["\q"]}`, h, 400, "Invalid escape character"},
		{"unknown model", "POST", "/v1/models/nope:predict", good, h, 404, "Servable not found for request: Latest(nope)"},
		{"unknown version", "POST", "/v1/models/digits/versions/9:predict", good, h, 404, "Servable not found for request: Specific(digits, 9)"},
		{"unknown label", "POST", "/v1/models/digits/labels/beta:predict", good, h, 400, "Unrecognized servable version label: beta"},
		{"label of unknown model", "POST", "/v1/models/nope/labels/stable:predict", good, h, 404, "Servable not found for request: Latest(nope)"},
		{"oversized body", "POST", digits, good + strings.Repeat(" ", 2048), small, 413, "exceeds 1024 bytes"},
		{"GET predict", "GET", digits, good, h, 400, "Malformed request: GET"},
		{"PUT status", "PUT", "/v1/models/digits", ``, h, 400, "Malformed request: PUT"},
		{"no method", "POST", "/v1/models/digits", good, h, 400, "Malformed request"},
		{"unknown method", "POST", "/v1/models/digits:explain", good, h, 400, "Malformed request"},
		{"colon in name", "POST", "/v1/models/dig:its:predict", good, h, 400, "Malformed request"},
		{"classify", "POST", "/v1/models/digits:classify", `{"examples":[]}`, h, 501, "classify is not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := do(t, tc.h, tc.method, tc.path, tc.body)
			if code != tc.code {
				t.Fatalf("status %d, want %d: %s", code, tc.code, body)
			}
			var e struct{ Error string }
			if err := json.Unmarshal([]byte(body), &e); err != nil || !strings.Contains(e.Error, tc.want) {
				t.Fatalf("body %s, want an error containing %q", body, tc.want)
			}
		})
	}
	// Still serving.
	if code, body := do(t, h, "POST", digits, good); code != 200 {
		t.Fatalf("good request after bad ones: %d %s", code, body)
	}
}

// TestOverHTTP serves the handler on a real socket, with a gzip body.
func TestOverHTTP(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("/v1/", tfserving.New(setup(t), tfserving.Options{}))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	px := digitRows(t, 2)
	body := `{"instances":[` + image(px[0]) + `,` + image(px[1]) + `]}`
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	io.WriteString(zw, body)
	zw.Close()

	for _, tc := range []struct {
		name     string
		body     io.Reader
		encoding string
	}{
		{"plain", strings.NewReader(body), ""},
		{"gzip", &gz, "gzip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest("POST", srv.URL+"/v1/models/digits/labels/stable:predict", tc.body)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			if tc.encoding != "" {
				req.Header.Set("Content-Encoding", tc.encoding)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 {
				t.Fatalf("%d %s", resp.StatusCode, b)
			}
			var r struct{ Predictions [][]float64 }
			if err := json.Unmarshal(b, &r); err != nil || len(r.Predictions) != 2 || len(r.Predictions[0]) != 10 {
				t.Fatalf("%v: %s", err, b)
			}
		})
	}
}

// TestBinaryOutputs checks BYTES outputs: valid UTF-8 as strings, other
// bytes as b64, exactly as sent.
func TestBinaryOutputs(t *testing.T) {
	h := tfserving.New(setup(t), tfserving.Options{})
	in := identityInputs()
	blob := []byte{1, 2, 0xfe, 0xff, 'a'} // no NUL: onnxruntime strings cannot hold one
	in["in_BYTES"] = `[[{"b64":"` + base64.StdEncoding.EncodeToString(blob) + `"},"plain","é"],[{"b64":"` + base64.RawURLEncoding.EncodeToString([]byte("ok")) + `"},"\u00e9\n","\ud83d\ude00"]]`
	var cols []string
	for name, v := range in {
		cols = append(cols, strconv.Quote(name)+":"+v)
	}
	code, body := do(t, h, http.MethodPost, "/v1/models/identity:predict", `{"inputs":{`+strings.Join(cols, ",")+`}}`)
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	want := `"out_BYTES":[[{"b64":"AQL+/2E="},"plain","é"],["ok","é\n","😀"]]`
	if !strings.Contains(body, want) {
		t.Fatalf("response lacks %s: %s", want, body)
	}
}
