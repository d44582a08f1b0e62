package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgefleet/edgefleet/agent/grpcapi/inferencepb"
	"github.com/edgefleet/edgefleet/agent/metrics"
	"github.com/edgefleet/edgefleet/agent/models"
)

// invalid returns a client-mistake error wrapping models.ErrInvalidInput.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{models.ErrInvalidInput}, args...)...)
}

// internalError marks a fault of the server (for example a backend output
// that does not match its own shape) so that it maps to INTERNAL even when it
// wraps a client-facing sentinel.
type internalError struct{ err error }

func (e *internalError) Error() string { return e.err.Error() }
func (e *internalError) Unwrap() error { return e.err }

// Code returns the gRPC status code for an error of the Backend or of
// decoding: models.ErrNotFound → NOT_FOUND, ErrInvalidInput →
// INVALID_ARGUMENT, ErrUnavailable → UNAVAILABLE, ErrOverloaded →
// RESOURCE_EXHAUSTED, context.DeadlineExceeded → DEADLINE_EXCEEDED,
// context.Canceled → CANCELED, an error carrying a gRPC status → its code,
// anything else → INTERNAL.
func Code(err error) codes.Code {
	var ie *internalError
	switch {
	case err == nil:
		return codes.OK
	case errors.As(err, &ie):
		return codes.Internal
	case errors.Is(err, models.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, models.ErrInvalidInput):
		return codes.InvalidArgument
	case errors.Is(err, models.ErrOverloaded):
		return codes.ResourceExhausted
	case errors.Is(err, models.ErrUnavailable):
		return codes.Unavailable
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	}
	if st, ok := status.FromError(err); ok {
		return st.Code()
	}
	return codes.Internal
}

// outcome returns the metrics outcome label for a status code.
func outcome(c codes.Code) string {
	switch c {
	case codes.OK:
		return metrics.OutcomeSuccess
	case codes.NotFound:
		return metrics.OutcomeNotFound
	case codes.ResourceExhausted:
		return metrics.OutcomeOverloaded
	case codes.InvalidArgument, codes.Canceled, codes.DeadlineExceeded, codes.FailedPrecondition, codes.OutOfRange:
		return metrics.OutcomeClientError
	default:
		return metrics.OutcomeServerError
	}
}

// fail logs err and converts it to a gRPC status error. Client mistakes log
// at debug level, server faults at error level.
func (s *Server) fail(ctx context.Context, rpc string, err error) error {
	c := Code(err)
	if outcome(c) == metrics.OutcomeServerError {
		s.log.ErrorContext(ctx, "grpc request failed", "rpc", rpc, "code", c.String(), "err", err)
	} else {
		s.log.DebugContext(ctx, "grpc request rejected", "rpc", rpc, "code", c.String(), "err", err)
	}
	return status.Error(c, err.Error())
}

// observe records one ModelInfer. The version label is the version that
// answered, or the requested one when the request failed. Requests for an
// unknown model are recorded under model "" so that clients cannot create
// unbounded label values.
func (s *Server) observe(model, version string, resp *inferencepb.ModelInferResponse, err error, d time.Duration) {
	if s.metrics == nil {
		return
	}
	oc := outcome(Code(err))
	if resp != nil && resp.GetModelName() != "" {
		model, version = resp.GetModelName(), resp.GetModelVersion()
	} else if oc == metrics.OutcomeNotFound {
		model, version = "", ""
	}
	s.metrics.ObserveRequest(model, version, Protocol, oc, d)
}
