package models

import (
	"errors"

	"github.com/edgefleet/edgefleet/agent/tensor"
)

// Sentinel errors returned by the Manager. Protocol front ends map them to
// status codes: ErrNotFound → 404 / NOT_FOUND, ErrInvalidInput → 400 /
// INVALID_ARGUMENT, ErrUnavailable → 503 / UNAVAILABLE, ErrOverloaded → 429 /
// RESOURCE_EXHAUSTED. Match them with errors.Is; messages carry the details.
var (
	ErrNotFound     = errors.New("not found")
	ErrInvalidInput = errors.New("invalid input")
	ErrUnavailable  = errors.New("unavailable")
	ErrOverloaded   = errors.New("overloaded")
)

// TensorSpec describes one model input or output. A dimension of -1 is dynamic.
type TensorSpec struct {
	Name  string
	DType tensor.DType
	Shape []int64
}

// Metadata is what the model metadata endpoints return for one model version.
type Metadata struct {
	Name     string
	Versions []string
	Platform string
	Inputs   []TensorSpec
	Outputs  []TensorSpec
	// Parameters carries runtime facts: execution_provider, fallback_reason,
	// degraded, digest, ...
	Parameters map[string]string
}

// ServerMetadata is what GET /v2 and ServerMetadata return.
type ServerMetadata struct {
	Name       string
	Version    string
	Extensions []string
}

// InferRequest is a protocol-independent inference request.
type InferRequest struct {
	ID     string
	Inputs []tensor.Tensor
	// Outputs names the requested outputs; empty means all outputs in model order.
	Outputs []string
}

// InferResponse is a protocol-independent inference response.
type InferResponse struct {
	ModelName    string
	ModelVersion string
	ID           string
	Outputs      []tensor.Tensor
}

// RepositoryEntry is one model version in a model repository index, with
// Triton's states (READY, UNAVAILABLE) and the reason for a state.
type RepositoryEntry struct {
	Name, Version, State, Reason string
}
