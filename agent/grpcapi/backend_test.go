package grpcapi_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/tensor"
)

// echoBackend is a protocol-level stand-in for the model manager: model
// "echo" (versions 1 and 2, default 2) returns its inputs as outputs, and a
// few other models answer with one fixed error each, so that the front end's
// mapping can be checked without onnxruntime. Tests against real models live
// with the manager.
type echoBackend struct {
	ready atomic.Bool
	calls atomic.Int64

	mu   sync.Mutex // guards last
	last *models.InferRequest
}

func newEchoBackend() *echoBackend {
	b := &echoBackend{}
	b.ready.Store(true)
	return b
}

// errModels maps model names to the error their Infer returns.
var errModels = map[string]error{
	"overloaded":  fmt.Errorf("model %q: queue full: %w", "overloaded", models.ErrOverloaded),
	"unavailable": fmt.Errorf("model %q: unloading: %w", "unavailable", models.ErrUnavailable),
	"internal":    errors.New("onnxruntime: session run failed"),
}

func (b *echoBackend) Ready() bool { return b.ready.Load() }

func (b *echoBackend) ServerMetadata() models.ServerMetadata {
	return models.ServerMetadata{Name: "edgefleet", Version: "test", Extensions: []string{"model_repository"}}
}

func (b *echoBackend) resolve(name, version string) (string, error) {
	switch name {
	case "echo":
		switch version {
		case "", "2":
			return "2", nil
		case "1":
			return "1", nil
		}
		return "", fmt.Errorf("model %q version %q: %w", name, version, models.ErrNotFound)
	case "overloaded", "unavailable", "internal", "slow", "badout", "loading":
		if version == "" || version == "1" {
			return "1", nil
		}
	}
	return "", fmt.Errorf("model %q: %w", name, models.ErrNotFound)
}

func (b *echoBackend) ModelMetadata(name, version string) (*models.Metadata, error) {
	v, err := b.resolve(name, version)
	if err != nil {
		return nil, err
	}
	return &models.Metadata{
		Name: name, Versions: []string{"1", "2"}, Platform: "onnxruntime_onnx",
		Inputs:     []models.TensorSpec{{Name: "x", DType: tensor.FP32, Shape: []int64{-1, 1, 8, 8}}},
		Outputs:    []models.TensorSpec{{Name: "y", DType: tensor.FP32, Shape: []int64{-1, 10}}},
		Parameters: map[string]string{"execution_provider": "cpu", "version": v},
	}, nil
}

func (b *echoBackend) ModelReady(name, version string) (bool, error) {
	if _, err := b.resolve(name, version); err != nil {
		return false, err
	}
	return name != "loading", nil
}

func (b *echoBackend) lastRequest() *models.InferRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last
}

func (b *echoBackend) Infer(ctx context.Context, name, version string, req *models.InferRequest) (*models.InferResponse, error) {
	b.calls.Add(1)
	v, err := b.resolve(name, version)
	if err != nil {
		return nil, err
	}
	// Keep a deep copy: the request's tensors reference the wire message.
	cp := &models.InferRequest{ID: req.ID, Outputs: append([]string(nil), req.Outputs...)}
	for _, t := range req.Inputs {
		cp.Inputs = append(cp.Inputs, cloneTensor(t))
	}
	b.mu.Lock()
	b.last = cp
	b.mu.Unlock()

	if err, ok := errModels[name]; ok {
		return nil, err
	}
	res := &models.InferResponse{ModelName: name, ModelVersion: v, ID: req.ID}
	switch name {
	case "slow":
		<-ctx.Done()
		return nil, fmt.Errorf("model %q: %w", name, ctx.Err())
	case "badout":
		res.Outputs = []tensor.Tensor{{Name: "y", DType: tensor.FP32, Shape: []int64{2}, Data: make([]byte, 4)}}
		return res, nil
	}
	if len(req.Outputs) == 0 {
		res.Outputs = cp.Inputs
		return res, nil
	}
	for _, o := range req.Outputs {
		found := false
		for _, t := range cp.Inputs {
			if t.Name == o {
				res.Outputs = append(res.Outputs, t)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("model %q has no output %q: %w", name, o, models.ErrInvalidInput)
		}
	}
	return res, nil
}

func cloneTensor(t tensor.Tensor) tensor.Tensor {
	c := tensor.Tensor{Name: t.Name, DType: t.DType, Shape: append([]int64{}, t.Shape...)}
	if t.Data != nil {
		c.Data = append([]byte{}, t.Data...)
	}
	for _, s := range t.Strings {
		c.Strings = append(c.Strings, append([]byte{}, s...))
	}
	return c
}
