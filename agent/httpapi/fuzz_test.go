package httpapi

import (
	"encoding/binary"
	"strconv"
	"testing"

	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/tensor"
)

// checkDecoded asserts the decoder's guarantees on any request it accepts,
// and that the encoder can write every tensor back.
func checkDecoded(t *testing.T, req *inferRequest) {
	t.Helper()
	seen := map[string]bool{}
	for i := range req.inputs {
		in := &req.inputs[i]
		if err := in.Validate(); err != nil {
			t.Fatalf("decoded input fails Validate: %v", err)
		}
		if in.Name == "" || seen[in.Name] {
			t.Fatalf("input name %q empty or duplicated", in.Name)
		}
		seen[in.Name] = true
	}
	outs := make([]responseOutput, len(req.inputs))
	for i := range req.inputs {
		outs[i] = responseOutput{t: &req.inputs[i], binary: i%2 == 1}
	}
	out := encoder{}.appendResponse(nil, &models.InferResponse{ModelName: "m"}, req.id, outs)
	s := &scanner{b: out}
	if err := s.skipValue(0); err != nil || s.peek() != 0 {
		t.Fatalf("encoder wrote invalid JSON (%v): %q", err, out)
	}
}

func FuzzDecodeInferRequest(f *testing.F) {
	seeds := []string{
		simpleRequest,
		`{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]}],"outputs":[{"name":"y"}]}`,
		`{"inputs":[{"data":[1,2],"shape":[2],"datatype":"INT64","name":"a"}],"parameters":{"binary_data_output":true}}`,
		`{"inputs":[{"name":"s","shape":[2],"datatype":"BYTES","data":["a\u00e9","\"\\"]}]}`,
		`{"inputs":[{"name":"h","shape":[3],"datatype":"FP16","data":[0.1,NaN,-Infinity]}]}`,
		`{"inputs":[{"name":"b","shape":[1,1,2],"datatype":"BOOL","data":[[[true,false]]]}]}`,
		`{"inputs":[{"name":"u","shape":[],"datatype":"UINT64","data":18446744073709551615}]}`,
		`{"inputs":[{"name":"e","shape":[0,2],"datatype":"BF16","data":[]}]}`,
		`{"id":"x","inputs":[{"name":"i8","shape":[2],"datatype":"INT8","data":[-128,"1"]}]}`,
		`{"inputs":[{"name":"x","shape":[1],"datatype":"FP64","data":["-inf"]}]}`,
		`{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1e39,2]}]}`,
		`{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[[1],2]}]}`,
		`{"inputs":[`,
		`{"inputs":[{"name":"x","shape":[-1],"datatype":"FP32","data":[]}]}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeRequest(body, -1)
		if err != nil {
			if _, ok := err.(*requestError); !ok {
				t.Fatalf("error %T is not a request error: %v", err, err)
			}
			return
		}
		checkDecoded(t, req)
	})
}

func FuzzDecodeBinaryRequest(f *testing.F) {
	add := func(header string, bin []byte) { f.Add([]byte(header), bin) }
	add(`{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}`, f32s(1, 2))
	add(`{"inputs":[{"name":"s","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":11}}]}`, bytesElems("hi", "x"))
	add(`{"inputs":[{"name":"b","shape":[3],"datatype":"BOOL","parameters":{"binary_data_size":3}},{"name":"c","shape":[1],"datatype":"INT8","data":[3]}]}`, []byte{1, 0, 1})
	add(`{"inputs":[{"name":"s","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":4}}]}`, binary.LittleEndian.AppendUint32(nil, 0xffffffff))
	add(`{"inputs":[{"name":"a","shape":[1],"datatype":"UINT64","parameters":{"binary_data_size":8}},{"name":"b","shape":[1],"datatype":"FP16","parameters":{"binary_data_size":2}}]}`, make([]byte, 10))
	add(`{"inputs":[{"name":"s","shape":[3],"datatype":"BYTES","parameters":{"binary_data_size":12}}]}`, bytesElems("", "", ""))
	f.Fuzz(func(t *testing.T, header, bin []byte) {
		body := append(append([]byte{}, header...), bin...)
		for _, hl := range []int64{int64(len(header)), int64(len(body))} {
			req, err := decodeRequest(body, hl)
			if err != nil {
				if _, ok := err.(*requestError); !ok {
					t.Fatalf("error %T is not a request error: %v", err, err)
				}
				continue
			}
			checkDecoded(t, req)
			// Binary inputs must lie within the body's binary part.
			for i := range req.inputs {
				if req.binSize[i] >= 0 && req.inputs[i].DType != tensor.Bytes && int64(len(req.inputs[i].Data)) != req.binSize[i] {
					t.Fatalf("input %d: %d bytes, binary_data_size %d", i, len(req.inputs[i].Data), req.binSize[i])
				}
			}
		}
	})
}

// TestFuzzSeedsDecode keeps the fuzz seeds meaningful: the valid ones decode.
func TestFuzzSeedsDecode(t *testing.T) {
	for i, s := range []string{
		`{"inputs":[{"name":"u","shape":[],"datatype":"UINT64","data":18446744073709551615}]}`,
		`{"inputs":[{"name":"e","shape":[0,2],"datatype":"BF16","data":[]}]}`,
	} {
		if _, err := decodeRequest([]byte(s), -1); err != nil {
			t.Errorf("seed %s: %v", strconv.Itoa(i), err)
		}
	}
}
