package httpapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Listener serves an http.Handler (the REST API, /metrics, the TF Serving
// API) over HTTP/1.1 with fasthttp instead of net/http's server.
//
// net/http starts a goroutine per request to watch the connection while the
// handler runs, and its connection state machine wakes the scheduler several
// times per request; on a small VM those futex wake-ups are most of the CPU a
// small model's request costs. fasthttp serves each connection on one
// goroutine, reads the request, calls the handler on that same goroutine and
// writes the buffered response with one write. The handler sees an ordinary
// *http.Request and http.ResponseWriter, so every route behaves as under
// net/http; the differences are that a response is buffered whole before it
// is written (Flush is a no-op) and that a request's context is not cancelled
// when its client disconnects (deadlines from Request-Timeout still apply).
type Listener struct {
	srv *fasthttp.Server

	mu    sync.Mutex
	conns map[net.Conn]connInfo // open connections, for Shutdown
}

type connInfo struct {
	state fasthttp.ConnState
	since time.Time
}

// ListenerOptions configure a Listener.
type ListenerOptions struct {
	// MaxBodyBytes bounds a request body; 0 means DefaultMaxBodyBytes.
	// Handlers apply their own, lower limits.
	MaxBodyBytes int64
	// ReadHeaderTimeout bounds the wait for a request's header, idle time on
	// a keep-alive connection included (an idle connection is closed after
	// it); 0 means 2 minutes, longer than Go's and browsers' client idle
	// timeouts so clients close idle connections first.
	ReadHeaderTimeout time.Duration
	// Logger receives connection-level errors; nil discards them.
	Logger *slog.Logger
}

// NewListener returns a Listener serving h.
func NewListener(h http.Handler, opts ListenerOptions) *Listener {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.ReadHeaderTimeout <= 0 {
		opts.ReadHeaderTimeout = 2 * time.Minute
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	srv := &fasthttp.Server{
		Handler: adapt(h),
		Name:    "edgefleet",
		// Bodies up to this size are read before the handler runs; larger
		// ones are streamed to it, which enforces its own limit.
		MaxRequestBodySize:    4 << 20,
		StreamRequestBody:     true,
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		// The header must arrive within ReadHeaderTimeout, so slow clients
		// cannot hold connections open; a body may take a day.
		HeaderReceived: func(*fasthttp.RequestHeader) fasthttp.RequestConfig {
			return fasthttp.RequestConfig{ReadTimeout: 24 * time.Hour, MaxRequestBodySize: int(min(opts.MaxBodyBytes, 1<<40))}
		},
		ReadTimeout:                   opts.ReadHeaderTimeout,
		IdleTimeout:                   0,
		DisablePreParseMultipartForm:  true,
		DisableHeaderNamesNormalizing: false,
		Logger:                        slogPrintf{log},
	}
	l := &Listener{srv: srv, conns: map[net.Conn]connInfo{}}
	srv.ConnState = l.track
	return l
}

// track follows connection states so that Shutdown can close idle ones.
func (l *Listener) track(c net.Conn, st fasthttp.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch st {
	case fasthttp.StateClosed, fasthttp.StateHijacked:
		delete(l.conns, c)
	default:
		l.conns[c] = connInfo{state: st, since: time.Now()}
	}
}

// closeIdle closes connections between requests, and connections that were
// accepted over a second ago and have sent nothing (clients dial spare
// keep-alive connections; fasthttp counts those as active).
func (l *Listener) closeIdle() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for c, info := range l.conns {
		silent := false
		if tc, ok := c.(*trackedConn); ok {
			silent = !tc.got.Load() && time.Since(tc.accepted) > time.Second
		}
		if info.state == fasthttp.StateIdle || silent {
			_ = c.Close()
			delete(l.conns, c)
		}
	}
}

// Serve accepts connections on ln until Shutdown or Close; it returns
// http.ErrServerClosed after a shutdown.
func (l *Listener) Serve(ln net.Listener) error {
	err := l.srv.Serve(trackedListener{ln})
	if err == nil || errors.Is(err, net.ErrClosed) {
		return http.ErrServerClosed
	}
	return err
}

// Shutdown stops accepting connections and waits until the requests in
// progress have finished or ctx is done.
//
// Keep-alive connections waiting for their next request are closed (fasthttp
// alone leaves some open until its context ends).
func (l *Listener) Shutdown(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- l.srv.ShutdownWithContext(ctx) }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-errc:
			return err
		case <-tick.C:
			l.closeIdle()
		}
	}
}

// Close stops accepting connections without waiting for requests in progress.
func (l *Listener) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := l.srv.ShutdownWithContext(ctx)
	l.mu.Lock()
	for c := range l.conns {
		_ = c.Close()
		delete(l.conns, c)
	}
	l.mu.Unlock()
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

type slogPrintf struct{ log *slog.Logger }

func (s slogPrintf) Printf(format string, args ...any) {
	s.log.Debug("HTTP connection", "msg", strings.TrimSpace(fmt.Sprintf(format, args...)))
}

// adapt runs h on the connection's goroutine for each request.
func adapt(h http.Handler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		st := statePool.Get().(*adaptState)
		defer st.release()
		r := &st.req
		if err := convertRequest(ctx, r, &st.body); err != nil {
			ctx.Error(`{"error":"malformed request URI"}`, fasthttp.StatusBadRequest)
			ctx.SetContentType("application/json")
			return
		}
		w := &st.w
		w.ctx, w.status, w.wrote = ctx, 0, false
		h.ServeHTTP(w, r)
		if !w.wrote {
			w.WriteHeader(http.StatusOK)
		}
		if len(ctx.Response.Header.ContentType()) == 0 {
			if b := ctx.Response.Body(); len(b) > 0 {
				ctx.Response.Header.SetContentType(http.DetectContentType(b[:min(len(b), 512)]))
			}
		}
	}
}

// adaptState is the per-request state, pooled.
type adaptState struct {
	req  http.Request
	w    responseWriter
	body bytes.Reader
}

var statePool = sync.Pool{New: func() any {
	return &adaptState{req: http.Request{Header: http.Header{}}, w: responseWriter{header: http.Header{}}}
}}

func (st *adaptState) release() {
	clear(st.req.Header)
	clear(st.w.header)
	st.req = http.Request{Header: st.req.Header}
	st.w.ctx = nil
	st.body.Reset(nil)
	statePool.Put(st)
}

// convertRequest fills r from ctx. Strings a handler may keep (path,
// header values) are copied: fasthttp reuses its buffers after the handler
// returns.
func convertRequest(ctx *fasthttp.RequestCtx, r *http.Request, body *bytes.Reader) error {
	uri := string(ctx.RequestURI())
	u, err := url.ParseRequestURI(uri)
	if err != nil {
		return err
	}
	r.Method = methodString(ctx.Method())
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.1", 1, 1
	if !ctx.Request.Header.IsHTTP11() {
		r.Proto, r.ProtoMinor = "HTTP/1.0", 0
	}
	r.URL, r.RequestURI = u, uri
	r.Host = string(ctx.Host())
	r.RemoteAddr = ctx.RemoteAddr().String()
	for k, v := range ctx.Request.Header.All() {
		if string(k) == "Transfer-Encoding" {
			r.TransferEncoding = append(r.TransferEncoding, string(v))
			continue
		}
		r.Header[string(k)] = append(r.Header[string(k)], string(v))
	}
	if ctx.IsBodyStream() {
		r.Body = io.NopCloser(ctx.RequestBodyStream())
		r.ContentLength = int64(ctx.Request.Header.ContentLength())
	} else {
		b := ctx.PostBody()
		body.Reset(b)
		r.Body = io.NopCloser(body)
		r.ContentLength = int64(len(b))
	}
	if r.ContentLength < 0 {
		r.ContentLength = -1
	}
	return nil
}

// methodString avoids an allocation for the common methods.
func methodString(m []byte) string {
	switch string(m) {
	case http.MethodGet:
		return http.MethodGet
	case http.MethodPost:
		return http.MethodPost
	case http.MethodHead:
		return http.MethodHead
	case http.MethodPut:
		return http.MethodPut
	case http.MethodDelete:
		return http.MethodDelete
	}
	return string(m)
}

// responseWriter buffers the response in fasthttp's response.
type responseWriter struct {
	ctx    *fasthttp.RequestCtx
	header http.Header
	status int
	wrote  bool
}

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) WriteHeader(code int) {
	if w.wrote {
		return
	}
	w.wrote, w.status = true, code
	resp := &w.ctx.Response
	resp.SetStatusCode(code)
	for k, vs := range w.header {
		if k == "Content-Length" {
			continue // fasthttp sets it from the buffered body
		}
		for _, v := range vs {
			resp.Header.Add(k, v)
		}
	}
}

func (w *responseWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ctx.Write(b)
}

// Flush is a no-op: the response is written once the handler returns.
func (w *responseWriter) Flush() {}

// trackedListener wraps accepted connections in trackedConn.
type trackedListener struct{ net.Listener }

func (l trackedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &trackedConn{Conn: c, accepted: time.Now()}, nil
}

// trackedConn notes whether the client has sent anything.
type trackedConn struct {
	net.Conn
	accepted time.Time
	got      atomic.Bool
}

func (c *trackedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && !c.got.Load() {
		c.got.Store(true)
	}
	return n, err
}
