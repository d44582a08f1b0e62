package ota

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"syscall"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Errors returned by pulls and inspections, wrapped with details; match them
// with errors.Is. Registry answers with an unexpected status come back as
// *transport.Error (match with errors.As).
var (
	// ErrDigestMismatch: downloaded bytes do not hash to the expected digest.
	// The partial download is discarded.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrTooLarge: a manifest, config or layer exceeds its limit, or the
	// registry sent more bytes than the descriptor declares.
	ErrTooLarge = errors.New("too large")
	// ErrMediaType: a manifest or blob came with a media type the artifact
	// format does not allow.
	ErrMediaType = errors.New("unexpected media type")
	// ErrProtocol: the registry broke the HTTP or distribution protocol
	// (e.g. a Content-Range that does not match the request).
	ErrProtocol = errors.New("registry protocol error")
	// ErrNotFound: the manifest or blob does not exist.
	ErrNotFound = errors.New("not found")
	// ErrIndex: the reference names a variant index and no variant
	// preference was given (WithVariant); the error lists the variants.
	ErrIndex = errors.New("reference is a variant index")
	// ErrNoVariant: no variant of an index suits the preference.
	ErrNoVariant = errors.New("no suitable variant")
)

// retryable marks errors worth another attempt.
type retryable struct{ err error }

func (r retryable) Error() string { return r.err.Error() }
func (r retryable) Unwrap() error { return r.err }

// isRetryable classifies an attempt's error. parent is the caller's context:
// once it is done nothing is retried.
func isRetryable(parent context.Context, err error) bool {
	if err == nil || parent.Err() != nil {
		return false
	}
	var p permanent
	if errors.As(err, &p) {
		return false
	}
	var r retryable
	if errors.As(err, &r) {
		return true
	}
	for _, permanent := range []error{ErrDigestMismatch, ErrTooLarge, ErrMediaType, ErrNotFound, ErrIndex, ErrNoVariant} {
		if errors.Is(err, permanent) {
			return false
		}
	}
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusRequestTimeout, http.StatusTooManyRequests:
			return true
		}
		return te.StatusCode >= 500
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne)
}
