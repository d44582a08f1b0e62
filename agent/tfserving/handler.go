package tfserving

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/agent/metrics"
	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/tensor"
)

// Backend is what the TF Serving front end needs from the model manager. A
// version of "" means the model's default version. Errors wrapping the
// models sentinels map to HTTP statuses: ErrNotFound 404, ErrInvalidInput
// 400, ErrOverloaded 429, ErrUnavailable 503.
type Backend interface {
	ModelMetadata(name, version string) (*models.Metadata, error)
	ModelReady(name, version string) (bool, error)
	// Infer runs one request. The input tensors may alias the request body;
	// they must not be used after Infer returns.
	Infer(ctx context.Context, name, version string, req *models.InferRequest) (*models.InferResponse, error)
	// ResolveLabel returns the version a label (e.g. "stable", "canary")
	// points at. An unknown label or model is an error wrapping
	// models.ErrNotFound.
	ResolveLabel(name, label string) (version string, err error)
}

// Protocol is the protocol label the handler records in metrics.
const Protocol = "tfserving"

// DefaultMaxBodyBytes is the request body limit when Options.MaxBodyBytes is 0.
const DefaultMaxBodyBytes = 64 << 20

// Options configure the handler. Every field is optional.
type Options struct {
	// Metrics records predict requests; nil records nothing.
	Metrics *metrics.Agent
	// Logger receives server-side failures (debug: client errors); nil discards.
	Logger *slog.Logger
	// MaxBodyBytes caps a predict request body, after gzip decompression when
	// the request has Content-Encoding: gzip; larger bodies get 413. 0 means
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
}

type handler struct {
	b       Backend
	metrics *metrics.Agent
	log     *slog.Logger
	maxBody int64
}

// New returns an http.Handler serving TF Serving's REST API under /v1/ (mount
// it on "/v1/"):
//
//	GET  /v1/models/{m}[/versions/{v}|/labels/{l}]             model status
//	GET  /v1/models/{m}[/versions/{v}|/labels/{l}]/metadata    model metadata
//	POST /v1/models/{m}[/versions/{v}|/labels/{l}]:predict     predict
//
// Other paths and methods under /v1/ answer 400 "Malformed request", as TF
// Serving does; :classify and :regress answer 501.
func New(b Backend, opts Options) http.Handler {
	h := &handler{b: b, metrics: opts.Metrics, log: opts.Logger, maxBody: opts.MaxBodyBytes}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.maxBody <= 0 {
		h.maxBody = DefaultMaxBodyBytes
	}
	return h
}

// route is a parsed /v1/models path.
type route struct {
	model, version, label string
	method                string // "predict", "classify", "regress" (POST) or "" (GET)
	metadata              bool
}

// parsePath parses the paths TF Serving accepts (keywords case-insensitive,
// names free of '/' and ':'). Versions may be any such name, not only
// digits, since edgefleet versions are strings.
func parsePath(path string, post bool) (route, bool) {
	const prefix = "/v1/models"
	if len(path) < len(prefix) || !strings.EqualFold(path[:len(prefix)], prefix) {
		return route{}, false
	}
	rest := path[len(prefix):]
	var r route
	if post {
		i := strings.LastIndexByte(rest, ':')
		if i < 0 {
			return route{}, false
		}
		r.method = strings.ToLower(rest[i+1:])
		if r.method != "predict" && r.method != "classify" && r.method != "regress" {
			return route{}, false
		}
		rest = rest[:i]
	}
	if rest == "" && !post {
		return r, true // no model: "Missing model name"
	}
	if !strings.HasPrefix(rest, "/") {
		return route{}, false
	}
	seg := strings.Split(rest[1:], "/")
	if !post && len(seg) > 1 && strings.EqualFold(seg[len(seg)-1], "metadata") {
		r.metadata = true
		seg = seg[:len(seg)-1]
	}
	for _, s := range seg {
		if s == "" || strings.ContainsRune(s, ':') {
			return route{}, false
		}
	}
	switch {
	case len(seg) == 1:
	case len(seg) == 3 && strings.EqualFold(seg[1], "versions"):
		r.version = seg[2]
	case len(seg) == 3 && strings.EqualFold(seg[1], "labels"):
		r.label = seg[2]
	default:
		return route{}, false
	}
	r.model = seg[0]
	return r, true
}

// httpError is an error with the HTTP status it answers.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) error {
	return &httpError{status, fmt.Sprintf(format, args...)}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	post := r.Method == http.MethodPost
	rt, ok := parsePath(r.URL.Path, post)
	if !ok || (!post && r.Method != http.MethodGet) {
		h.fail(w, r, errorf(http.StatusBadRequest, "Malformed request: %s %s", r.Method, r.URL.Path))
		return
	}
	switch {
	case rt.model == "":
		h.fail(w, r, errorf(http.StatusBadRequest, "Missing model name in request."))
	case post && rt.method != "predict":
		h.fail(w, r, errorf(http.StatusNotImplemented, "%s is not supported: ONNX models have only the predict signature %q", rt.method, defaultSignature))
	case post:
		h.predict(w, r, rt)
	case rt.metadata:
		h.serveMetadata(w, r, rt)
	default:
		h.serveStatus(w, r, rt)
	}
}

// resolve turns a label into a version.
func (h *handler) resolve(rt *route) error {
	if rt.label == "" {
		return nil
	}
	v, err := h.b.ResolveLabel(rt.model, rt.label)
	if err == nil {
		rt.version = v
		return nil
	}
	if errors.Is(err, models.ErrNotFound) {
		if _, merr := h.b.ModelMetadata(rt.model, ""); errors.Is(merr, models.ErrNotFound) {
			return errorf(http.StatusNotFound, "Servable not found for request: Latest(%s)", rt.model)
		}
		return errorf(http.StatusBadRequest, "Unrecognized servable version label: %s", rt.label)
	}
	return err
}

// notFound rewrites a backend ErrNotFound in TF Serving's words.
func notFound(err error, rt route) error {
	if !errors.Is(err, models.ErrNotFound) {
		return err
	}
	if rt.version == "" {
		return errorf(http.StatusNotFound, "Servable not found for request: Latest(%s)", rt.model)
	}
	return errorf(http.StatusNotFound, "Servable not found for request: Specific(%s, %s)", rt.model, rt.version)
}

func (h *handler) serveStatus(w http.ResponseWriter, r *http.Request, rt route) {
	if err := h.resolve(&rt); err != nil {
		h.fail(w, r, err)
		return
	}
	versions := []string{rt.version}
	if rt.version == "" {
		md, err := h.b.ModelMetadata(rt.model, "")
		if err != nil {
			if errors.Is(err, models.ErrNotFound) {
				err = errorf(http.StatusNotFound, "Could not find any versions of model %s", rt.model)
			}
			h.fail(w, r, err)
			return
		}
		versions = md.Versions
	}
	b := []byte(`{"model_version_status":[`)
	for i, v := range versions {
		ready, err := h.b.ModelReady(rt.model, v)
		if err != nil {
			if errors.Is(err, models.ErrNotFound) {
				if _, merr := h.b.ModelMetadata(rt.model, ""); errors.Is(merr, models.ErrNotFound) {
					err = errorf(http.StatusNotFound, "Could not find any versions of model %s", rt.model)
				} else {
					err = errorf(http.StatusNotFound, "Could not find version %s of model %s", v, rt.model)
				}
			}
			h.fail(w, r, err)
			return
		}
		state, code, msg := "AVAILABLE", "OK", ""
		if !ready {
			state, code, msg = "UNKNOWN", "UNAVAILABLE", "model version is not ready"
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"version":`...)
		b = appendString(b, []byte(v))
		b = append(b, `,"state":"`...)
		b = append(b, state...)
		b = append(b, `","status":{"error_code":"`...)
		b = append(b, code...)
		b = append(b, `","error_message":`...)
		b = appendString(b, []byte(msg))
		b = append(b, "}}"...)
	}
	b = append(b, "]}"...)
	writeJSON(w, http.StatusOK, b)
}

// tfDTypes are TF's DataType enum names.
var tfDTypes = map[tensor.DType]string{
	tensor.Bool: "DT_BOOL", tensor.Uint8: "DT_UINT8", tensor.Uint16: "DT_UINT16", tensor.Uint32: "DT_UINT32",
	tensor.Uint64: "DT_UINT64", tensor.Int8: "DT_INT8", tensor.Int16: "DT_INT16", tensor.Int32: "DT_INT32",
	tensor.Int64: "DT_INT64", tensor.FP16: "DT_HALF", tensor.FP32: "DT_FLOAT", tensor.FP64: "DT_DOUBLE",
	tensor.Bytes: "DT_STRING", tensor.BF16: "DT_BFLOAT16",
}

// servedVersion is the version a metadata lookup resolved to.
func servedVersion(md *models.Metadata, asked string) string {
	if asked != "" {
		return asked
	}
	if v := md.Parameters["version"]; v != "" {
		return v
	}
	best := ""
	for _, v := range md.Versions {
		if best == "" || models.CompareVersions(v, best) > 0 {
			best = v
		}
	}
	return best
}

func (h *handler) serveMetadata(w http.ResponseWriter, r *http.Request, rt route) {
	if err := h.resolve(&rt); err != nil {
		h.fail(w, r, err)
		return
	}
	md, err := h.b.ModelMetadata(rt.model, rt.version)
	if err != nil {
		h.fail(w, r, notFound(err, rt))
		return
	}
	b := []byte(`{"model_spec":{"name":`)
	b = appendString(b, []byte(rt.model))
	b = append(b, `,"signature_name":"","version":`...)
	b = appendString(b, []byte(servedVersion(md, rt.version)))
	b = append(b, `},"metadata":{"signature_def":{"signature_def":{"`+defaultSignature+`":{"inputs":`...)
	b = appendSpecs(b, md.Inputs)
	b = append(b, `,"outputs":`...)
	b = appendSpecs(b, md.Outputs)
	b = append(b, `,"method_name":"tensorflow/serving/predict","defaults":{}}}}}}`...)
	writeJSON(w, http.StatusOK, b)
}

func appendSpecs(b []byte, specs []models.TensorSpec) []byte {
	b = append(b, '{')
	for i, s := range specs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, []byte(s.Name))
		b = append(b, `:{"dtype":"`...)
		b = append(b, tfDTypes[s.DType]...)
		b = append(b, `","tensor_shape":{"dim":[`...)
		for j, d := range s.Shape {
			if j > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"size":"`...)
			b = strconv.AppendInt(b, d, 10)
			b = append(b, `","name":""}`...)
		}
		b = append(b, `],"unknown_rank":false},"name":`...)
		b = appendString(b, []byte(s.Name))
		b = append(b, '}')
	}
	return append(b, '}')
}

func (h *handler) predict(w http.ResponseWriter, r *http.Request, rt route) {
	start := time.Now()
	status := http.StatusOK
	defer func() {
		h.metrics.ObserveRequest(rt.model, rt.version, Protocol, metrics.HTTPOutcome(status), time.Since(start))
	}()
	if err := h.resolve(&rt); err != nil {
		status = h.fail(w, r, err)
		return
	}
	md, err := h.b.ModelMetadata(rt.model, rt.version)
	if err != nil {
		status = h.fail(w, r, notFound(err, rt))
		return
	}
	// Pin the version the inputs were decoded for.
	rt.version = servedVersion(md, rt.version)
	body, err := h.readBody(r)
	if err != nil {
		status = h.fail(w, r, err)
		return
	}
	inputs, f, err := decodePredict(body, md.Inputs)
	if err != nil {
		status = h.fail(w, r, err)
		return
	}
	res, err := h.b.Infer(r.Context(), rt.model, rt.version, &models.InferRequest{Inputs: inputs})
	if err != nil {
		status = h.fail(w, r, notFound(err, rt))
		return
	}
	out, err := encodePredict(make([]byte, 0, 256), res.Outputs, f)
	if err != nil {
		status = h.fail(w, r, fmt.Errorf("%w: %w", errInvalid, err))
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *handler) readBody(r *http.Request) ([]byte, error) {
	var rd io.Reader = r.Body
	switch enc := strings.ToLower(r.Header.Get("Content-Encoding")); enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			return nil, errorf(http.StatusBadRequest, "reading gzip request body: %v", err)
		}
		defer zr.Close()
		rd = zr
	default:
		return nil, errorf(http.StatusUnsupportedMediaType, "unsupported Content-Encoding %q (want gzip or none)", enc)
	}
	body, err := io.ReadAll(io.LimitReader(rd, h.maxBody+1))
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "reading request body: %v", err)
	}
	if int64(len(body)) > h.maxBody {
		return nil, errorf(http.StatusRequestEntityTooLarge, "request body exceeds %d bytes", h.maxBody)
	}
	return body, nil
}

// statusOf maps an error to its HTTP status.
func statusOf(err error) int {
	var he *httpError
	switch {
	case errors.As(err, &he):
		return he.status
	case errors.Is(err, errInvalid), errors.Is(err, models.ErrInvalidInput):
		return http.StatusBadRequest
	case errors.Is(err, models.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, models.ErrOverloaded):
		return http.StatusTooManyRequests
	case errors.Is(err, models.ErrUnavailable):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, context.Canceled):
		return 499 // client closed request, as TF Serving answers CANCELLED
	}
	return http.StatusInternalServerError
}

// fail writes {"error": ...} and returns the status written.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) int {
	status := statusOf(err)
	msg := err.Error()
	msg = strings.TrimPrefix(msg, errInvalid.Error()+": ")
	if status >= 500 {
		h.log.Error("tfserving request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	} else {
		h.log.Debug("tfserving request rejected", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	b := append([]byte(`{"error":`), appendString(nil, []byte(msg))...)
	writeJSON(w, status, append(b, '}'))
	return status
}

func writeJSON(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
