package agent_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/csv"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/agent/internal/testenv"
	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/tensor"
	"github.com/edgefleet/edgefleet/hil-tests/v2client"
)

// digitsSet is the held-out digits test set: labels and pixels scaled to 0..1.
type digitsSet struct {
	labels []int
	pixels [][]float32 // 64 per row
}

func loadDigits(t testing.TB, name string) digitsSet {
	t.Helper()
	rows, err := csv.NewReader(bytes.NewReader(testenv.Fixture(t, "digits/"+name))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var d digitsSet
	for _, r := range rows[1:] {
		lbl, err := strconv.Atoi(r[0])
		if err != nil || len(r) != 65 {
			t.Fatalf("bad row %v", r)
		}
		px := make([]float32, 64)
		for i := range px {
			v, err := strconv.ParseFloat(r[i+1], 32)
			if err != nil {
				t.Fatal(err)
			}
			px[i] = float32(v) / 16
		}
		d.labels = append(d.labels, lbl)
		d.pixels = append(d.pixels, px)
	}
	return d
}

// batch builds one [n,1,8,8] request from rows [from, from+n).
func (d digitsSet) batch(from, n int) *models.InferRequest {
	var px []float32
	for i := from; i < from+n; i++ {
		px = append(px, d.pixels[i]...)
	}
	return &models.InferRequest{Inputs: []tensor.Tensor{f32Tensor("input", []int64{int64(n), 1, 8, 8}, px)}}
}

func argmax10(logits []byte, row int) int {
	best, bi := float32(math.Inf(-1)), 0
	for j := range 10 {
		v := math.Float32frombits(binary.LittleEndian.Uint32(logits[4*(10*row+j):]))
		if v > best {
			best, bi = v, j
		}
	}
	return bi
}

func TestDigitsServedAccuracy(t *testing.T) {
	cnn := testenv.Fixture(t, "digits/cnn.onnx")
	tr := testenv.Fixture(t, "digits/transformer.onnx")
	test := loadDigits(t, "test.csv")
	if len(test.labels) < 300 {
		t.Fatalf("only %d test rows", len(test.labels))
	}
	r := startAgent(t, config.Config{}, map[string][]byte{"digits-cnn": cnn, "digits-transformer": tr})
	ctx := context.Background()
	for _, tc := range []struct {
		model string
		bytes []byte
		min   float64
	}{{"digits-cnn", cnn, 0.98}, {"digits-transformer", tr, 0.95}} {
		// One request per image on every protocol; all must agree with in-process onnxruntime.
		for _, proto := range protocols {
			correct := 0
			for i := range test.labels {
				req := test.batch(i, 1)
				got, err := r.infer(ctx, proto, tc.model, "", req)
				if err != nil {
					t.Fatalf("%s %s row %d: %v", tc.model, proto, i, err)
				}
				if i < 5 {
					sameTensors(t, tc.model+" "+proto, got.Outputs, inProcess(t, tc.bytes, req))
				}
				if argmax10(got.Outputs[0].Data, 0) == test.labels[i] {
					correct++
				}
			}
			acc := float64(correct) / float64(len(test.labels))
			t.Logf("%s over %s: accuracy %.4f (%d/%d)", tc.model, proto, acc, correct, len(test.labels))
			if acc < tc.min {
				t.Errorf("%s over %s: accuracy %.4f < %.2f", tc.model, proto, acc, tc.min)
			}
		}
		// Batched: the whole set in requests of 40 over gRPC and REST binary gives the same predictions.
		for _, proto := range []string{"grpc-raw", "rest-binary"} {
			correct := 0
			for i := 0; i+40 <= len(test.labels); i += 40 {
				got, err := r.infer(ctx, proto, tc.model, "", test.batch(i, 40))
				if err != nil {
					t.Fatal(err)
				}
				for j := range 40 {
					if argmax10(got.Outputs[0].Data, j) == test.labels[i+j] {
						correct++
					}
				}
			}
			if acc := float64(correct) / float64(len(test.labels)/40*40); acc < tc.min {
				t.Errorf("%s batched over %s: accuracy %.4f", tc.model, proto, acc)
			}
		}
	}
}

// TestSampleRequest checks the request that `make run` and the README tell
// people to send: the CNN must predict the digit its id names.
func TestSampleRequest(t *testing.T) {
	body := testenv.Fixture(t, "digits/sample-request.json")
	r := startAgent(t, config.Config{}, map[string][]byte{"digits-cnn": testenv.Fixture(t, "digits/cnn.onnx")})
	resp, err := http.Post(r.rest.InferURL("digits-cnn", ""), "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	got, err := v2client.DecodeResponse(b, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%d %s: %v", resp.StatusCode, b, err)
	}
	want, err := strconv.Atoi(strings.TrimPrefix(got.ID, "sample-label-"))
	if err != nil {
		t.Fatalf("id %q does not name the label", got.ID)
	}
	if p := argmax10(got.Outputs[0].Data, 0); p != want {
		t.Fatalf("sample predicted %d, its label is %d", p, want)
	}
}

// TestTFServingPredict serves the digits CNN through TF Serving's REST API
// (row and columnar forms, version and label paths) on the real agent.
func TestTFServingPredict(t *testing.T) {
	cnn := testenv.Fixture(t, "digits/cnn.onnx")
	test := loadDigits(t, "test.csv")
	r := startAgent(t, config.Config{Models: map[string]models.Settings{"digits-cnn": {Labels: map[string]string{"stable": "1"}}}},
		map[string][]byte{"digits-cnn": cnn})
	img := func(i int) string {
		var sb strings.Builder
		sb.WriteString("[[")
		for y := range 8 {
			if y > 0 {
				sb.WriteString(",")
			}
			sb.WriteString("[")
			for x := range 8 {
				if x > 0 {
					sb.WriteString(",")
				}
				sb.WriteString(strconv.FormatFloat(float64(test.pixels[i][8*y+x]), 'g', -1, 32))
			}
			sb.WriteString("]")
		}
		sb.WriteString("]]")
		return sb.String()
	}
	for _, path := range []string{"/v1/models/digits-cnn:predict", "/v1/models/digits-cnn/versions/1:predict", "/v1/models/digits-cnn/labels/stable:predict"} {
		body := `{"instances":[` + img(1) + `,` + img(2) + `]}`
		resp, err := http.Post(r.rest.Base+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var out struct {
			Predictions [][]float64 `json:"predictions"`
		}
		if resp.StatusCode != 200 || json.Unmarshal(b, &out) != nil || len(out.Predictions) != 2 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
		}
		for k, row := range out.Predictions {
			best := 0
			for j := range row {
				if row[j] > row[best] {
					best = j
				}
			}
			if best != test.labels[1+k] {
				t.Errorf("%s: instance %d predicted %d, label %d", path, k, best, test.labels[1+k])
			}
		}
	}
	resp, err := http.Get(r.rest.Base + "/v1/models/digits-cnn")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"state":"AVAILABLE"`) {
		t.Errorf("model status: %s", b)
	}
	resp, err = http.Post(r.rest.Base+"/v1/models/nope:predict", "application/json", strings.NewReader(`{"instances":[1]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("unknown model: %d", resp.StatusCode)
	}
}
