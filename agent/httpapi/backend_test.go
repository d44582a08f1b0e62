package httpapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/tensor"
)

// echoBackend is an in-test Backend for protocol tests: model "echo" returns
// every input as an output of the same name; a few model names inject the
// manager's sentinel errors. It records the last request it saw.
type echoBackend struct {
	mu       sync.Mutex
	notReady bool
	last     *models.InferRequest
	// outputs, when set, replaces the echoed outputs.
	outputs []tensor.Tensor
}

var _ Backend = (*echoBackend)(nil)

func (b *echoBackend) Ready() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.notReady
}

func (b *echoBackend) ServerMetadata() models.ServerMetadata {
	return models.ServerMetadata{Name: "edgefleet", Version: "test", Extensions: []string{"model_repository"}}
}

func (b *echoBackend) resolve(name, version string) (string, error) {
	switch name {
	case "echo", "overloaded", "unavailable", "invalid", "broken", "slow", "notready":
	default:
		return "", fmt.Errorf("model %q: %w", name, models.ErrNotFound)
	}
	switch version {
	case "":
		return "2", nil
	case "1", "2":
		return version, nil
	}
	return "", fmt.Errorf("model %q version %q: %w", name, version, models.ErrNotFound)
}

func (b *echoBackend) ModelMetadata(name, version string) (*models.Metadata, error) {
	v, err := b.resolve(name, version)
	if err != nil {
		return nil, err
	}
	md := &models.Metadata{
		Name: name, Versions: []string{"1", "2"}, Platform: "onnxruntime_onnx",
		Inputs:  []models.TensorSpec{{Name: "x", DType: tensor.FP32, Shape: []int64{-1, 64}}},
		Outputs: []models.TensorSpec{{Name: "y", DType: tensor.FP32, Shape: []int64{-1, 10}}},
	}
	if v == "2" {
		md.Parameters = map[string]string{"execution_provider": "cpu", "fallback_reason": "cuda: not available"}
	}
	return md, nil
}

func (b *echoBackend) ModelReady(name, version string) (bool, error) {
	if _, err := b.resolve(name, version); err != nil {
		return false, err
	}
	return name != "notready", nil
}

func (b *echoBackend) Infer(ctx context.Context, name, version string, req *models.InferRequest) (*models.InferResponse, error) {
	v, err := b.resolve(name, version)
	if err != nil {
		return nil, err
	}
	for i := range req.Inputs {
		if err := req.Inputs[i].Validate(); err != nil {
			return nil, fmt.Errorf("front end passed an invalid tensor: %w", err)
		}
	}
	b.mu.Lock()
	b.last = cloneRequest(req)
	outputs := b.outputs
	b.mu.Unlock()
	switch name {
	case "overloaded":
		return nil, fmt.Errorf("model %q: queue full: %w", name, models.ErrOverloaded)
	case "unavailable":
		return nil, fmt.Errorf("model %q is unloading: %w", name, models.ErrUnavailable)
	case "invalid":
		return nil, fmt.Errorf("model %q: missing input \"z\": %w", name, models.ErrInvalidInput)
	case "broken":
		return nil, errors.New("session run failed")
	case "slow":
		<-ctx.Done()
		return nil, ctx.Err()
	}
	resp := &models.InferResponse{ModelName: name, ModelVersion: v, ID: req.ID}
	if outputs != nil {
		resp.Outputs = outputs
	} else {
		for _, in := range req.Inputs {
			resp.Outputs = append(resp.Outputs, cloneTensor(in))
		}
	}
	return resp, nil
}

func (b *echoBackend) lastRequest() *models.InferRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last
}

// cloneTensor deep-copies t, since inputs may alias the request body.
func cloneTensor(t tensor.Tensor) tensor.Tensor {
	c := tensor.Tensor{Name: t.Name, DType: t.DType, Shape: append([]int64(nil), t.Shape...)}
	if t.Data != nil {
		c.Data = append([]byte{}, t.Data...)
	}
	if t.Strings != nil {
		c.Strings = make([][]byte, len(t.Strings))
		for i, s := range t.Strings {
			c.Strings[i] = append([]byte{}, s...)
		}
	}
	return c
}

func cloneRequest(r *models.InferRequest) *models.InferRequest {
	c := &models.InferRequest{ID: r.ID, Outputs: append([]string(nil), r.Outputs...)}
	for _, t := range r.Inputs {
		c.Inputs = append(c.Inputs, cloneTensor(t))
	}
	return c
}

// result is a recorded HTTP response.
type result struct {
	status int
	header http.Header
	body   []byte
}

// do serves one request through h in-process.
func do(t testing.TB, h http.Handler, method, path string, body []byte, header map[string]string) result {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req := httptest.NewRequest(method, path, rd)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return result{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
}
