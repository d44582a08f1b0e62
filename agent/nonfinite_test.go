package agent_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/agent/internal/testenv"
)

// TestJSONNonFiniteOutputs: by default a NaN or ±Inf output element is
// written as the bare token Triton and TF Serving write (not valid JSON);
// json_nonfinite: strings writes strings that strict parsers accept.
func TestJSONNonFiniteOutputs(t *testing.T) {
	nan4 := testenv.Fixture(t, "update/nan4.onnx") // y = 4x + 0*sqrt(x)
	// x = -1 → NaN (sqrt of a negative); 1e38 → +Inf (4e38 overflows FP32).
	req := `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[-1,1e38,0.5,1]}]}`
	for _, tc := range []struct {
		mode     string
		wantData string
		valid    bool
	}{
		{"", `[NaN,Infinity,2,4]`, false},
		{config.JSONNonFiniteTokens, `[NaN,Infinity,2,4]`, false},
		{config.JSONNonFiniteStrings, `["NaN","Infinity",2,4]`, true},
	} {
		t.Run("mode="+tc.mode, func(t *testing.T) {
			r := startAgent(t, config.Config{JSONNonFinite: tc.mode}, map[string][]byte{"nan4": nan4})
			resp, err := http.Post(r.rest.Base+"/v2/models/nan4/infer", "application/json", strings.NewReader(req))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("HTTP %d: %s", resp.StatusCode, body)
			}
			if !strings.Contains(string(body), `"data":`+tc.wantData) {
				t.Fatalf("body %s does not hold data %s", body, tc.wantData)
			}
			if got := json.Valid(body); got != tc.valid {
				t.Fatalf("encoding/json accepts the body: %v, want %v (%s)", got, tc.valid, body)
			}
		})
	}
}
