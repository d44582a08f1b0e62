// Package httpapi serves the Open Inference Protocol (KServe v2) REST API,
// with Triton's binary tensor data extension, in front of the agent's model
// manager.
//
// # Basics
//
// New returns a *Server (an http.Handler) for a Backend, which *models.Manager
// satisfies:
//
//	GET  /v2/health/live                                  200
//	GET  /v2/health/ready                                 200, or 503 while not ready
//	GET  /v2                                              server metadata
//	GET  /v2/models/{m}[/versions/{v}]                    model metadata
//	GET  /v2/models/{m}[/versions/{v}]/ready              200, 503 not ready, 404 unknown
//	POST /v2/models/{m}[/versions/{v}]/infer              inference
//
// Errors are {"error": "..."} with 400 for malformed or invalid requests, 404
// for an unknown model or version, 405 for a wrong method, 413 for a body over
// Options.MaxBodyBytes, 415 for an unsupported Content-Encoding, 429 when the
// model is overloaded, 503 when it is unavailable or not ready, 504 when the
// request's deadline passed, and 500 otherwise. Health endpoints answer with
// an empty body.
//
// Model metadata carries the protocol's fields (name, versions, platform,
// inputs, outputs, with -1 for dynamic dimensions) plus "parameters" holding
// the manager's runtime facts (execution provider, fallback reason, ...) when
// there are any.
//
// # Tensor data in JSON
//
// Requests are decoded by a purpose-built single-pass scanner that writes
// elements straight into the tensor's little-endian buffer; responses are
// written by appending to a pooled buffer. Neither uses reflection.
//
//   - "data" may be flat or nested row-major. Nested data must be rectangular
//     and have exactly the declared shape; flat data must have its element
//     count. A 0-d (scalar) input may also give its one value bare.
//   - The fields of an input may come in any order; unknown fields and
//     unknown parameters are ignored.
//   - Integers must be JSON integer literals and are parsed exactly (INT64 and
//     UINT64 over their full range, never through float64); a value outside
//     the type's range is an error.
//   - FP32 and FP64 values are rounded once, exactly as strconv.ParseFloat
//     with that bit size does. FP16 and BF16 values are rounded correctly
//     (ties to even) from the decimal, not via a float64 detour. A finite
//     number that rounds to infinity in its type is an error.
//   - BOOL is true or false. BYTES elements are JSON strings; escapes are
//     decoded and the bytes kept as they are.
//   - Output data is always flat. FP32 and FP64 use the shortest decimal that
//     parses back to the same value; FP16 and BF16 likewise, except integral
//     values below 2^24, which are written exactly. BYTES that are not valid
//     UTF-8 get U+FFFD in place of invalid bytes (JSON cannot carry them; ask
//     for binary output instead).
//
// Non-finite floats follow Triton (rapidjson's NaN/Inf flags): requests may
// carry the bare tokens NaN, Infinity, -Infinity, Inf and -Inf, or the strings
// "NaN", "Inf", "-Inf", "Infinity" and "-Infinity" in any letter case;
// responses write the bare tokens NaN, Infinity and -Infinity, which Python's
// json module and Triton's clients read (TF Serving writes the same tokens).
// Options.NonFiniteAsStrings (the agent's json_nonfinite: strings) writes the
// strings instead, for strict JSON parsers such as JavaScript's JSON.parse and
// Go's encoding/json, which reject the bare tokens.
//
// # Listener
//
// Listener serves the handler over HTTP/1.1 with fasthttp rather than
// net/http's server: each request runs on its connection's goroutine with no
// per-request watcher goroutine, which halves the CPU time of a small
// request on a 2-core VM. The agent uses it for its TCP and unix-socket
// listeners.
//
// # Binary tensor data extension
//
// With an Inference-Header-Content-Length: N header, the first N bytes of
// the body are the JSON request and the rest holds the data of the inputs
// that have a "binary_data_size" parameter, in input order, with no padding;
// JSON and binary inputs may be mixed. BOOL is one byte (0 or 1) per element
// and BYTES is a 4-byte little-endian length before each element. Sizes must
// match the shapes and add up to the binary part exactly.
//
// An output is returned in binary when its request entry has parameters
// {"binary_data": true}, or when the request has {"binary_data_output":
// true} and the output does not say otherwise. The response then has
// Content-Type application/octet-stream, its own Inference-Header-Content-Length
// header, and the binary outputs in the JSON carry parameters
// {"binary_data_size": n} instead of data. Bodies may be gzip or deflate
// compressed (Content-Encoding), as Triton's clients can send them; the size
// limit applies after decompression.
//
// # Metrics
//
// Each inference request is recorded with metrics.Agent.ObserveRequest under
// the protocol label "rest" and an outcome derived from the status, and is
// counted in the in-flight gauge while it runs. Requests for models the
// backend does not know are recorded with empty model and version labels so
// that arbitrary names cannot create unbounded series.
//
// # Caveats
//
// Binary input tensors alias the request body (no copy) and must be treated
// as read-only. A body that tensors alias is never recycled, so a backend may
// keep input tensors past Infer (a batcher whose caller gave up, say) and
// still see intact data.
//
// The extension's "classification" output parameter is not supported (400).
// Response compression (Accept-Encoding) is not offered; responses are
// uncompressed, which Triton's clients accept.
package httpapi
