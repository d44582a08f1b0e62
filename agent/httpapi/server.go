package httpapi

import (
	"compress/gzip"
	"compress/zlib"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/agent/metrics"
	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/tensor"
)

// Backend is what the REST front end needs from the model manager
// (*models.Manager satisfies it). A version of "" means the model's default
// version. Errors wrapping the models sentinels map to HTTP statuses:
// ErrNotFound 404, ErrInvalidInput 400, ErrOverloaded 429, ErrUnavailable 503.
type Backend interface {
	Ready() bool
	ServerMetadata() models.ServerMetadata
	ModelMetadata(name, version string) (*models.Metadata, error)
	ModelReady(name, version string) (bool, error)
	// Infer runs one request. The input tensors may alias the request body
	// and must be treated as read-only.
	Infer(ctx context.Context, name, version string, req *models.InferRequest) (*models.InferResponse, error)
}

// DefaultMaxBodyBytes is the request body limit when Options.MaxBodyBytes is 0.
const DefaultMaxBodyBytes = 64 << 20

// Protocol is the protocol label the server records in metrics.
const Protocol = "rest"

// Header names of Triton's binary tensor data extension, and of the
// request timeout (a Go duration, e.g. "250ms"; Triton's "timeout" request
// parameter, in microseconds, works too).
const (
	HeaderTimeout               = "Request-Timeout"
	HeaderInferenceHeaderLength = "Inference-Header-Content-Length"
	extensionBinaryTensorData   = "binary_tensor_data"
)

// Options configure a Server. Every field is optional.
type Options struct {
	// Metrics records inference requests and the in-flight gauge; nil records nothing.
	Metrics *metrics.Agent
	// Logger receives server-side failures (debug: client errors); nil discards.
	Logger *slog.Logger
	// MaxBodyBytes caps an inference request body, after decompression when
	// the request has a Content-Encoding; larger bodies get 413. 0 means
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// NonFiniteAsStrings writes NaN and ±Inf output elements as the JSON
	// strings "NaN", "Infinity" and "-Infinity" instead of the bare tokens
	// Triton writes (which strict JSON parsers such as JavaScript's
	// JSON.parse reject). Requests are accepted in both forms either way.
	NonFiniteAsStrings bool
	// Repository serves the model repository extension
	// (/v2/repository/...); nil answers those endpoints 404.
	Repository Repository
}

// Server serves the Open Inference Protocol REST API. It is safe for
// concurrent use.
type Server struct {
	backend Backend
	metrics *metrics.Agent
	log     *slog.Logger
	maxBody int64
	enc     encoder
	mux     *http.ServeMux
	repo    Repository
}

// New returns the REST front end for b.
func New(b Backend, opts Options) *Server {
	s := &Server{
		backend: b,
		metrics: opts.Metrics,
		log:     opts.Logger,
		maxBody: opts.MaxBodyBytes,
		enc:     encoder{nonFiniteStrings: opts.NonFiniteAsStrings},
		mux:     http.NewServeMux(),
		repo:    opts.Repository,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.maxBody <= 0 {
		s.maxBody = DefaultMaxBodyBytes
	}
	routes := []struct {
		method, path string
		h            http.HandlerFunc
	}{
		{"GET", "/v2/health/live", s.live},
		{"GET", "/v2/health/ready", s.ready},
		{"GET", "/v2", s.serverMetadata},
		{"GET", "/v2/{$}", s.serverMetadata},
		{"GET", "/v2/models/{model}", s.modelMetadata},
		{"GET", "/v2/models/{model}/versions/{version}", s.modelMetadata},
		{"GET", "/v2/models/{model}/ready", s.modelReady},
		{"GET", "/v2/models/{model}/versions/{version}/ready", s.modelReady},
		{"POST", "/v2/models/{model}/infer", s.infer},
		{"POST", "/v2/models/{model}/versions/{version}/infer", s.infer},
		{"POST", "/v2/repository/index", s.repositoryIndex},
		{"POST", "/v2/repository/models/{model}/load", s.repositoryLoad},
		{"POST", "/v2/repository/models/{model}/unload", s.repositoryUnload},
	}
	for _, rt := range routes {
		s.mux.HandleFunc(rt.method+" "+rt.path, rt.h)
		allow := rt.method
		if allow == "GET" {
			allow = "GET, HEAD"
		}
		// The method-less pattern is less specific, so it only sees other methods.
		s.mux.HandleFunc(rt.path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			s.writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s", r.Method, r.URL.Path))
		})
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint %s", r.URL.Path))
	})
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) live(w http.ResponseWriter, _ *http.Request) {
	w.WriteHeader(http.StatusOK)
}

func (s *Server) ready(w http.ResponseWriter, _ *http.Request) {
	if s.backend.Ready() {
		w.WriteHeader(http.StatusOK)
		return
	}
	w.WriteHeader(http.StatusServiceUnavailable)
}

func (s *Server) serverMetadata(w http.ResponseWriter, _ *http.Request) {
	md := s.backend.ServerMetadata()
	if !slices.Contains(md.Extensions, extensionBinaryTensorData) {
		md.Extensions = append(slices.Clip(md.Extensions), extensionBinaryTensorData)
	}
	s.writeJSON(w, http.StatusOK, appendServerMetadata(nil, md))
}

func (s *Server) modelMetadata(w http.ResponseWriter, r *http.Request) {
	name, version := r.PathValue("model"), r.PathValue("version")
	md, err := s.backend.ModelMetadata(name, version)
	if err == nil && md == nil {
		err = fmt.Errorf("model %q: %w", name, models.ErrNotFound)
	}
	if err != nil {
		s.writeError(w, statusOf(err), err.Error())
		return
	}
	s.writeJSON(w, http.StatusOK, appendModelMetadata(nil, md))
}

func (s *Server) modelReady(w http.ResponseWriter, r *http.Request) {
	name, version := r.PathValue("model"), r.PathValue("version")
	ok, err := s.backend.ModelReady(name, version)
	switch {
	case err != nil:
		s.writeError(w, statusOf(err), err.Error())
	case !ok:
		s.writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("model %s is not ready", modelRef(name, version)))
	default:
		w.WriteHeader(http.StatusOK)
	}
}

func modelRef(name, version string) string {
	if version == "" {
		return strconv.Quote(name)
	}
	return fmt.Sprintf("%q version %q", name, version)
}

// infer serves POST .../infer.
func (s *Server) infer(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	name, version := r.PathValue("model"), r.PathValue("version")
	res := s.serveInfer(w, r, name, version)
	if res.err != nil {
		if res.status >= 500 {
			s.log.Error("inference request failed", "model", name, "version", version, "status", res.status, "err", res.err)
		} else {
			s.log.Debug("inference request rejected", "model", name, "version", version, "status", res.status, "err", res.err)
		}
		s.writeError(w, res.status, res.err.Error())
	}
	if s.metrics == nil {
		return
	}
	labelVersion := version
	if res.version != "" {
		labelVersion = res.version
	}
	known := res.known
	if !known && res.status != http.StatusNotFound {
		// Rejected before the backend saw it: label only models that exist.
		_, err := s.backend.ModelReady(name, version)
		known = !errors.Is(err, models.ErrNotFound)
	}
	if !known {
		// Unknown names must not create unbounded label values.
		name, labelVersion = "", ""
	}
	s.metrics.ObserveRequest(name, labelVersion, Protocol, metrics.HTTPOutcome(res.status), time.Since(start))
}

// inferResult is the outcome of one inference request.
type inferResult struct {
	status  int
	err     error  // set when the response is still to be written as an error
	version string // the version that served the request
	known   bool   // the backend has the model (it handled the request)
}

func (s *Server) serveInfer(w http.ResponseWriter, r *http.Request, name, version string) inferResult {
	headerLen := int64(-1)
	if v := r.Header.Get(HeaderInferenceHeaderLength); v != "" {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || n < 0 {
			return fail(badRequest("invalid %s header %q", HeaderInferenceHeaderLength, v))
		}
		headerLen = n
	}
	// A binary request's tensors will alias its body, which therefore cannot
	// go back to the pool: read it into an exact-size buffer of its own.
	bodyBuf, err := s.readBody(w, r, headerLen < 0)
	if err != nil {
		return fail(err)
	}
	req, err := decodeRequest(*bodyBuf, headerLen)
	if err != nil {
		putBuf(bodyBuf)
		return fail(err)
	}
	if !req.hasBinaryInputs() {
		// Nothing aliases a JSON-only body: the decoder copied what it kept.
		putBuf(bodyBuf)
	}
	mreq := models.InferRequest{ID: req.id, Inputs: req.inputs}
	if len(req.outputs) > 0 {
		mreq.Outputs = make([]string, len(req.outputs))
		for i, o := range req.outputs {
			mreq.Outputs[i] = o.name
		}
	}
	ctx := r.Context()
	timeout := req.timeout
	if h := r.Header.Get(HeaderTimeout); h != "" {
		d, err := time.ParseDuration(h)
		if err != nil || d <= 0 {
			return fail(badRequest("invalid %s header %q: want a duration such as 250ms", HeaderTimeout, h))
		}
		timeout = d
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	resp, err := s.backend.Infer(ctx, name, version, &mreq)
	if err != nil {
		res := fail(err)
		res.known = res.status != http.StatusNotFound
		return res
	}
	res := inferResult{status: http.StatusOK, known: true}
	if resp == nil {
		res.status, res.err = http.StatusInternalServerError, errors.New("model returned no response")
		return res
	}
	res.version = resp.ModelVersion
	outs, err := selectOutputs(req, resp)
	if err != nil {
		res.status, res.err = statusOf(err), err
		return res
	}
	s.writeInferResponse(w, req, resp, outs)
	return res
}

func fail(err error) inferResult { return inferResult{status: statusOf(err), err: err} }

// selectOutputs picks the outputs to return, in the requested order, and
// whether each goes in the binary part.
func selectOutputs(req *inferRequest, resp *models.InferResponse) ([]responseOutput, error) {
	var outs []responseOutput
	if len(req.outputs) == 0 {
		outs = make([]responseOutput, len(resp.Outputs))
		for i := range resp.Outputs {
			outs[i] = responseOutput{t: &resp.Outputs[i], binary: req.binaryOutput}
		}
	} else {
		outs = make([]responseOutput, len(req.outputs))
		for i, ro := range req.outputs {
			var t *tensor.Tensor
			for k := range resp.Outputs {
				if resp.Outputs[k].Name == ro.name {
					t = &resp.Outputs[k]
					break
				}
			}
			if t == nil {
				return nil, badRequest("model %q has no output %q", resp.ModelName, ro.name)
			}
			bin := req.binaryOutput
			if ro.binary >= 0 {
				bin = ro.binary == 1
			}
			outs[i] = responseOutput{t: t, binary: bin}
		}
	}
	for _, o := range outs {
		if err := o.t.Validate(); err != nil {
			return nil, fmt.Errorf("model returned a malformed output: %w", err)
		}
	}
	return outs, nil
}

func (s *Server) writeInferResponse(w http.ResponseWriter, req *inferRequest, resp *models.InferResponse, outs []responseOutput) {
	bp := getBuf(4096)
	defer putBuf(bp)
	body := s.enc.appendResponse((*bp)[:0], resp, req.id, outs)
	*bp = body
	total := len(body)
	anyBinary := false
	for _, o := range outs {
		if o.binary {
			anyBinary = true
			total += binarySize(o.t)
		}
	}
	h := w.Header()
	h.Set("Content-Length", strconv.Itoa(total))
	if !anyBinary {
		h["Content-Type"] = contentTypeJSON
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
		return
	}
	h["Content-Type"] = contentTypeBinary
	h.Set(HeaderInferenceHeaderLength, strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(body); err != nil {
		return
	}
	var scratch *[]byte
	for _, o := range outs {
		if !o.binary {
			continue
		}
		data := o.t.Data
		if o.t.DType == tensor.Bytes {
			if scratch == nil {
				scratch = getBuf(4096)
				defer putBuf(scratch)
			}
			*scratch = appendBinaryBytes((*scratch)[:0], o.t)
			data = *scratch
		}
		if _, err := w.Write(data); err != nil {
			return
		}
	}
}

// readBody reads the request body into a pooled buffer, enforcing the size
// limit and undoing a gzip or deflate Content-Encoding.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, pooled bool) (*[]byte, error) {
	tooLarge := s.tooLarge()
	if r.ContentLength > s.maxBody {
		return nil, tooLarge
	}
	var rd io.Reader = http.MaxBytesReader(w, r.Body, s.maxBody)
	identity := true
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip", "deflate":
		var zr io.ReadCloser
		var err error
		if enc == "gzip" {
			zr, err = gzip.NewReader(rd)
		} else {
			zr, err = zlib.NewReader(rd)
		}
		if err != nil {
			return nil, bodyError(err, tooLarge, enc)
		}
		defer zr.Close()
		rd = io.LimitReader(zr, s.maxBody+1)
		identity = false
	default:
		return nil, &requestError{status: http.StatusUnsupportedMediaType,
			msg: fmt.Sprintf("unsupported Content-Encoding %q (supported: gzip, deflate)", enc)}
	}
	// Trust Content-Length only as a hint (capped), so a client that claims a
	// large body but sends little costs little memory.
	hint := 32 << 10
	if identity && r.ContentLength >= 0 {
		hint = int(min(r.ContentLength+1, 4<<20))
	}
	var bp *[]byte
	if pooled {
		bp = getBuf(hint)
	} else {
		b := make([]byte, 0, hint)
		bp = &b
	}
	buf := (*bp)[:0]
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, cap(buf))
		}
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > s.maxBody {
			*bp = buf
			putBuf(bp)
			return nil, tooLarge
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			*bp = buf
			putBuf(bp)
			return nil, bodyError(err, tooLarge, "")
		}
	}
	*bp = buf
	return bp, nil
}

func bodyError(err, tooLarge error, encoding string) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return tooLarge
	}
	if encoding != "" || errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) ||
		errors.Is(err, zlib.ErrChecksum) || errors.Is(err, zlib.ErrHeader) {
		return badRequest("reading request body: invalid compressed data: %v", err)
	}
	return badRequest("reading request body: %v", err)
}

// statusOf maps an error to its HTTP status.
func statusOf(err error) int {
	var re *requestError
	switch {
	case errors.As(err, &re):
		return re.status
	case errors.Is(err, models.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, models.ErrInvalidInput):
		return http.StatusBadRequest
	case errors.Is(err, models.ErrOverloaded):
		return http.StatusTooManyRequests
	case errors.Is(err, models.ErrUnavailable):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, context.Canceled):
		return statusClientClosed
	}
	return http.StatusInternalServerError
}

// statusClientClosed is nginx's code for a request the client abandoned; it
// only reaches logs and metrics since the client is gone.
const statusClientClosed = 499

func (s *Server) writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h["Content-Type"] = contentTypeJSON
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func (s *Server) writeError(w http.ResponseWriter, status int, msg string) {
	if status == statusClientClosed {
		return
	}
	bp := getBuf(256)
	*bp = appendError((*bp)[:0], msg)
	s.writeJSON(w, status, *bp)
	putBuf(bp)
}

// Shared header values; net/http never modifies them.
var (
	contentTypeJSON   = []string{"application/json"}
	contentTypeBinary = []string{"application/octet-stream"}
)

// Buffers for request bodies and responses. Buffers over maxPooled are left
// to the garbage collector so one huge request does not pin memory.
var bufPool sync.Pool

const maxPooled = 16 << 20

func getBuf(n int) *[]byte {
	if p, ok := bufPool.Get().(*[]byte); ok {
		if cap(*p) >= n {
			*p = (*p)[:0]
			return p
		}
		bufPool.Put(p)
	}
	b := make([]byte, 0, max(n, 4096))
	return &b
}

func putBuf(p *[]byte) {
	if cap(*p) <= maxPooled {
		bufPool.Put(p)
	}
}
