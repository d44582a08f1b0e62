package httpapi

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"context"
	"encoding/binary"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgefleet/edgefleet/agent/metrics"
	"github.com/edgefleet/edgefleet/agent/models"
)

const simpleRequest = `{"id":"r1","inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2.5,-0.125]}]}`

func TestEndpoints(t *testing.T) {
	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		notReady   bool
		wantStatus int
		wantBody   string // exact, when set
		wantHeader map[string]string
	}{
		{name: "live", method: "GET", path: "/v2/health/live", wantStatus: 200, wantBody: ""},
		{name: "live HEAD", method: "HEAD", path: "/v2/health/live", wantStatus: 200},
		{name: "ready", method: "GET", path: "/v2/health/ready", wantStatus: 200, wantBody: ""},
		{name: "not ready", method: "GET", path: "/v2/health/ready", notReady: true, wantStatus: 503, wantBody: ""},
		{name: "live while not ready", method: "GET", path: "/v2/health/live", notReady: true, wantStatus: 200},
		{name: "server metadata", method: "GET", path: "/v2", wantStatus: 200,
			wantBody:   `{"name":"edgefleet","version":"test","extensions":["model_repository","binary_tensor_data"]}`,
			wantHeader: map[string]string{"Content-Type": "application/json"}},
		{name: "server metadata slash", method: "GET", path: "/v2/", wantStatus: 200,
			wantBody: `{"name":"edgefleet","version":"test","extensions":["model_repository","binary_tensor_data"]}`},
		{name: "model metadata default version", method: "GET", path: "/v2/models/echo", wantStatus: 200,
			wantBody: `{"name":"echo","versions":["1","2"],"platform":"onnxruntime_onnx",` +
				`"inputs":[{"name":"x","datatype":"FP32","shape":[-1,64]}],"outputs":[{"name":"y","datatype":"FP32","shape":[-1,10]}],` +
				`"parameters":{"execution_provider":"cpu","fallback_reason":"cuda: not available"}}`},
		{name: "model metadata version", method: "GET", path: "/v2/models/echo/versions/1", wantStatus: 200,
			wantBody: `{"name":"echo","versions":["1","2"],"platform":"onnxruntime_onnx",` +
				`"inputs":[{"name":"x","datatype":"FP32","shape":[-1,64]}],"outputs":[{"name":"y","datatype":"FP32","shape":[-1,10]}]}`},
		{name: "model metadata unknown model", method: "GET", path: "/v2/models/nope", wantStatus: 404,
			wantBody: `{"error":"model \"nope\": not found"}`},
		{name: "model metadata unknown version", method: "GET", path: "/v2/models/echo/versions/9", wantStatus: 404,
			wantBody: `{"error":"model \"echo\" version \"9\": not found"}`},
		{name: "model ready", method: "GET", path: "/v2/models/echo/ready", wantStatus: 200, wantBody: ""},
		{name: "model version ready", method: "GET", path: "/v2/models/echo/versions/1/ready", wantStatus: 200},
		{name: "model not ready", method: "GET", path: "/v2/models/notready/ready", wantStatus: 503,
			wantBody: `{"error":"model \"notready\" is not ready"}`},
		{name: "model ready unknown", method: "GET", path: "/v2/models/nope/ready", wantStatus: 404},
		{name: "model ready unknown version", method: "GET", path: "/v2/models/echo/versions/7/ready", wantStatus: 404},
		{name: "infer", method: "POST", path: "/v2/models/echo/infer", body: simpleRequest, wantStatus: 200,
			wantBody:   `{"model_name":"echo","model_version":"2","id":"r1","outputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2.5,-0.125]}]}`,
			wantHeader: map[string]string{"Content-Type": "application/json"}},
		{name: "infer version", method: "POST", path: "/v2/models/echo/versions/1/infer", body: simpleRequest, wantStatus: 200,
			wantBody: `{"model_name":"echo","model_version":"1","id":"r1","outputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2.5,-0.125]}]}`},
		{name: "infer unknown model", method: "POST", path: "/v2/models/nope/infer", body: simpleRequest, wantStatus: 404,
			wantBody: `{"error":"model \"nope\": not found"}`},
		{name: "infer unknown version", method: "POST", path: "/v2/models/echo/versions/3/infer", body: simpleRequest, wantStatus: 404},
		{name: "infer overloaded", method: "POST", path: "/v2/models/overloaded/infer", body: simpleRequest, wantStatus: 429,
			wantBody: `{"error":"model \"overloaded\": queue full: overloaded"}`},
		{name: "infer unavailable", method: "POST", path: "/v2/models/unavailable/infer", body: simpleRequest, wantStatus: 503},
		{name: "infer invalid input", method: "POST", path: "/v2/models/invalid/infer", body: simpleRequest, wantStatus: 400,
			wantBody: `{"error":"model \"invalid\": missing input \"z\": invalid input"}`},
		{name: "infer internal error", method: "POST", path: "/v2/models/broken/infer", body: simpleRequest, wantStatus: 500,
			wantBody: `{"error":"session run failed"}`},
		{name: "infer malformed", method: "POST", path: "/v2/models/echo/infer", body: `{"inputs":[`, wantStatus: 400},
		{name: "infer with GET", method: "GET", path: "/v2/models/echo/infer", wantStatus: 405,
			wantHeader: map[string]string{"Allow": "POST"}},
		{name: "ready with POST", method: "POST", path: "/v2/health/ready", wantStatus: 405,
			wantHeader: map[string]string{"Allow": "GET, HEAD"}},
		{name: "unknown endpoint", method: "GET", path: "/v1/models/echo", wantStatus: 404,
			wantBody: `{"error":"no such endpoint /v1/models/echo"}`},
		{name: "unknown v2 endpoint", method: "GET", path: "/v2/models/echo/versions/1/stats", wantStatus: 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := &echoBackend{notReady: tc.notReady}
			h := New(b, Options{})
			var body []byte
			if tc.body != "" {
				body = []byte(tc.body)
			}
			res := do(t, h, tc.method, tc.path, body, nil)
			if res.status != tc.wantStatus {
				t.Fatalf("status = %d, want %d (body %s)", res.status, tc.wantStatus, res.body)
			}
			if tc.wantBody != "" || (tc.wantStatus == 200 && tc.method == "GET" && strings.Contains(tc.path, "health")) {
				if string(res.body) != tc.wantBody {
					t.Errorf("body =\n%s\nwant\n%s", res.body, tc.wantBody)
				}
			}
			if tc.wantStatus >= 400 && tc.method != "HEAD" && !strings.Contains(tc.path, "/health/") && !strings.HasPrefix(string(res.body), `{"error":"`) {
				t.Errorf("error body %q is not {\"error\": ...}", res.body)
			}
			for k, v := range tc.wantHeader {
				if got := res.header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestInferDeadline(t *testing.T) {
	h := New(&echoBackend{}, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	req := httptest.NewRequest("POST", "/v2/models/slow/infer", strings.NewReader(simpleRequest)).WithContext(ctx)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusGatewayTimeout {
		t.Fatalf("status = %d, want 504 (body %s)", rec.Code, rec.Body)
	}
}

func TestBodyLimits(t *testing.T) {
	big := `{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2,3]}],"pad":"` + strings.Repeat("a", 600) + `"}`
	gz := func(s string) []byte {
		var buf bytes.Buffer
		w := gzip.NewWriter(&buf)
		w.Write([]byte(s))
		w.Close()
		return buf.Bytes()
	}
	zl := func(s string) []byte {
		var buf bytes.Buffer
		w := zlib.NewWriter(&buf)
		w.Write([]byte(s))
		w.Close()
		return buf.Bytes()
	}
	tests := []struct {
		name       string
		body       []byte
		header     map[string]string
		chunked    bool
		wantStatus int
		wantError  string
	}{
		{name: "under limit", body: []byte(simpleRequest), wantStatus: 200},
		{name: "over limit", body: []byte(big), wantStatus: 413, wantError: "request body exceeds the limit of 512 bytes"},
		{name: "over limit chunked", body: []byte(big), chunked: true, wantStatus: 413},
		{name: "gzip", body: gz(simpleRequest), header: map[string]string{"Content-Encoding": "gzip"}, wantStatus: 200},
		{name: "deflate", body: zl(simpleRequest), header: map[string]string{"Content-Encoding": "deflate"}, wantStatus: 200},
		{name: "gzip bomb", body: gz(big), header: map[string]string{"Content-Encoding": "gzip"}, wantStatus: 413},
		{name: "corrupt gzip", body: []byte("not gzip at all"), header: map[string]string{"Content-Encoding": "gzip"}, wantStatus: 400},
		{name: "unknown encoding", body: []byte(simpleRequest), header: map[string]string{"Content-Encoding": "br"}, wantStatus: 415},
		{name: "bad header length", body: []byte(simpleRequest), header: map[string]string{HeaderInferenceHeaderLength: "x"}, wantStatus: 400},
		{name: "negative header length", body: []byte(simpleRequest), header: map[string]string{HeaderInferenceHeaderLength: "-1"}, wantStatus: 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := New(&echoBackend{}, Options{MaxBodyBytes: 512})
			req := httptest.NewRequest("POST", "/v2/models/echo/infer", bytes.NewReader(tc.body))
			if tc.chunked {
				req.ContentLength = -1
			}
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.wantStatus {
				t.Fatalf("status = %d, want %d (body %s)", rec.Code, tc.wantStatus, rec.Body)
			}
			if tc.wantError != "" && rec.Body.String() != `{"error":"`+tc.wantError+`"}` {
				t.Errorf("body = %s, want error %q", rec.Body, tc.wantError)
			}
		})
	}
}

// TestOverRealServer runs requests through a real HTTP server, so body
// limits, connection reuse and Content-Length behave as in production.
func TestOverRealServer(t *testing.T) {
	srv := httptest.NewServer(New(&echoBackend{}, Options{MaxBodyBytes: 1 << 10}))
	defer srv.Close()
	for i := 0; i < 3; i++ {
		resp, err := http.Post(srv.URL+"/v2/models/echo/infer", "application/json", strings.NewReader(simpleRequest))
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		buf.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(buf.String(), `"data":[1,2.5,-0.125]`) {
			t.Fatalf("status %d body %s", resp.StatusCode, buf.String())
		}
		if resp.ContentLength != int64(buf.Len()) {
			t.Errorf("Content-Length %d, body %d bytes", resp.ContentLength, buf.Len())
		}
	}
	resp, err := http.Post(srv.URL+"/v2/models/echo/infer", "application/json", strings.NewReader(strings.Repeat(" ", 2<<10)+simpleRequest))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized body: status %d, want 413", resp.StatusCode)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	h := New(&echoBackend{}, Options{Metrics: m})
	send := func(path, body string) {
		do(t, h, "POST", path, []byte(body), nil)
	}
	send("/v2/models/echo/infer", simpleRequest)
	send("/v2/models/echo/infer", simpleRequest)
	send("/v2/models/echo/versions/1/infer", simpleRequest)
	send("/v2/models/echo/infer", `{"inputs":[}`)
	send("/v2/models/overloaded/infer", simpleRequest)
	send("/v2/models/broken/infer", simpleRequest)
	send("/v2/models/nope/infer", simpleRequest)
	send("/v2/models/nope2/infer", `garbage`)

	tests := []struct {
		model, version, outcome string
		want                    float64
	}{
		{"echo", "2", metrics.OutcomeSuccess, 2},
		{"echo", "1", metrics.OutcomeSuccess, 1},
		{"echo", "", metrics.OutcomeClientError, 1},
		{"overloaded", "", metrics.OutcomeOverloaded, 1},
		{"broken", "", metrics.OutcomeServerError, 1},
		{"", "", metrics.OutcomeNotFound, 1},
		{"", "", metrics.OutcomeClientError, 1},
	}
	for _, tc := range tests {
		got := testutil.ToFloat64(m.RequestsTotal.WithLabelValues(tc.model, tc.version, Protocol, tc.outcome))
		if got != tc.want {
			t.Errorf("requests_total{model=%q,version=%q,outcome=%q} = %v, want %v", tc.model, tc.version, tc.outcome, got, tc.want)
		}
	}
	if n := testutil.CollectAndCount(m.RequestsTotal); n != len(tests) {
		t.Errorf("%d requests_total series, want %d", n, len(tests))
	}
	// In-flight gauges are back to zero, and unknown models left no series.
	if got := testutil.ToFloat64(m.InFlight.WithLabelValues("echo", "")); got != 0 {
		t.Errorf("inflight{echo} = %v after all requests finished", got)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "edgefleet_agent_inflight_requests" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "model" && strings.HasPrefix(l.GetValue(), "nope") {
					t.Errorf("inflight gauge keeps a series for unknown model %q", l.GetValue())
				}
			}
		}
	}
}

// TestRequestTimeout checks that the Request-Timeout header and Triton's
// "timeout" parameter (µs) bound the backend call.
func TestRequestTimeout(t *testing.T) {
	h := New(&deadlineBackend{echoBackend: &echoBackend{}}, Options{})
	withParam := `{"parameters":{"timeout":20000},"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}`
	for _, tc := range []struct {
		name   string
		body   string
		header map[string]string
		status int
	}{
		{"header", simpleRequest, map[string]string{HeaderTimeout: "20ms"}, http.StatusGatewayTimeout},
		{"parameter", withParam, nil, http.StatusGatewayTimeout},
		{"bad header", simpleRequest, map[string]string{HeaderTimeout: "soon"}, http.StatusBadRequest},
		{"negative parameter", strings.Replace(withParam, "20000", "-1", 1), nil, http.StatusBadRequest},
		{"no timeout answers", simpleRequest, nil, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := do(t, h, "POST", "/v2/models/echo/infer", []byte(tc.body), tc.header); got.status != tc.status {
				t.Errorf("status %d, want %d: %s", got.status, tc.status, got.body)
			}
		})
	}
}

// deadlineBackend waits for the request's deadline when it has one.
type deadlineBackend struct{ *echoBackend }

func (b *deadlineBackend) Infer(ctx context.Context, name, version string, req *models.InferRequest) (*models.InferResponse, error) {
	if _, ok := ctx.Deadline(); ok {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return b.echoBackend.Infer(ctx, name, version, req)
}

// TestConcurrentRequests runs JSON and binary requests in parallel, each
// with its own data, and checks every response echoes exactly its request:
// a pooled buffer reused too early would mix them up.
func TestConcurrentRequests(t *testing.T) {
	h := New(&echoBackend{}, Options{Metrics: metrics.New(prometheus.NewRegistry())})
	const workers, perWorker = 8, 60
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		go func() {
			for i := 0; i < perWorker; i++ {
				n := 1 + (w*perWorker+i)%97
				vals := make([]string, n)
				raw := make([]byte, 0, 4*n)
				for k := range vals {
					v := int32(w*1_000_000 + i*1000 + k)
					vals[k] = strconv.Itoa(int(v))
					raw = binary.LittleEndian.AppendUint32(raw, uint32(v))
				}
				id := fmt.Sprintf("w%d-%d", w, i)
				var res result
				if i%2 == 0 {
					body := fmt.Sprintf(`{"id":%q,"inputs":[{"name":"x","shape":[%d],"datatype":"INT32","data":[%s]}]}`, id, n, strings.Join(vals, ","))
					res = do(t, h, "POST", "/v2/models/echo/infer", []byte(body), nil)
					want := fmt.Sprintf(`{"model_name":"echo","model_version":"2","id":%q,"outputs":[{"name":"x","datatype":"INT32","shape":[%d],"data":[%s]}]}`, id, n, strings.Join(vals, ","))
					if res.status != 200 || string(res.body) != want {
						errs <- fmt.Errorf("JSON %s: status %d body %s", id, res.status, res.body)
						return
					}
				} else {
					header := fmt.Sprintf(`{"id":%q,"inputs":[{"name":"x","shape":[%d],"datatype":"INT32","parameters":{"binary_data_size":%d}}],"parameters":{"binary_data_output":true}}`, id, n, 4*n)
					body, hdr := binaryBody(header, raw)
					res = do(t, h, "POST", "/v2/models/echo/infer", body, hdr)
					hl, _ := strconv.Atoi(res.header.Get(HeaderInferenceHeaderLength))
					if res.status != 200 || hl <= 0 || hl > len(res.body) || !bytes.Equal(res.body[hl:], raw) || !strings.Contains(string(res.body[:hl]), id) {
						errs <- fmt.Errorf("binary %s: status %d body %q", id, res.status, res.body)
						return
					}
				}
			}
			errs <- nil
		}()
	}
	for w := 0; w < workers; w++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
