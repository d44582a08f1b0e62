package grpcapi

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgefleet/edgefleet/agent/grpcapi/inferencepb"
	"github.com/edgefleet/edgefleet/agent/models"
)

// Repository is the model repository extension's backend. Errors wrap the
// models sentinels.
type Repository interface {
	Index(ctx context.Context, readyOnly bool) ([]models.RepositoryEntry, error)
	// Load (re)loads a model; model, when non-nil, is imported first as version
	// ("" = next).
	Load(ctx context.Context, name, version string, model []byte) error
	Unload(ctx context.Context, name, version string) error
}

// RepositoryIndex lists the repository's model versions.
func (s *Server) RepositoryIndex(ctx context.Context, req *inferencepb.RepositoryIndexRequest) (*inferencepb.RepositoryIndexResponse, error) {
	if s.repo == nil {
		return nil, status.Error(codes.Unimplemented, "the model repository extension is not enabled")
	}
	es, err := s.repo.Index(ctx, req.GetReady())
	if err != nil {
		return nil, s.fail(ctx, "RepositoryIndex", err)
	}
	resp := &inferencepb.RepositoryIndexResponse{}
	for _, e := range es {
		resp.Models = append(resp.Models, &inferencepb.RepositoryIndexResponse_ModelIndex{
			Name: e.Name, Version: e.Version, State: e.State, Reason: e.Reason})
	}
	return resp, nil
}

// RepositoryModelLoad loads or reloads a model, optionally importing the
// model file given as the bytes parameter "file:<version>/model.onnx".
func (s *Server) RepositoryModelLoad(ctx context.Context, req *inferencepb.RepositoryModelLoadRequest) (*inferencepb.RepositoryModelLoadResponse, error) {
	if s.repo == nil {
		return nil, status.Error(codes.Unimplemented, "the model repository extension is not enabled")
	}
	var model []byte
	version := ""
	for k, p := range req.GetParameters() {
		path, ok := strings.CutPrefix(k, "file:")
		if !ok {
			continue
		}
		if model != nil {
			return nil, s.fail(ctx, "RepositoryModelLoad", fmt.Errorf("%w: more than one file parameter", models.ErrInvalidInput))
		}
		b, ok := p.GetParameterChoice().(*inferencepb.ModelRepositoryParameter_BytesParam)
		if !ok || len(b.BytesParam) == 0 {
			return nil, s.fail(ctx, "RepositoryModelLoad", fmt.Errorf("%w: parameter %q must carry the file's bytes", models.ErrInvalidInput, k))
		}
		model = b.BytesParam
		if dir, file, ok := strings.Cut(path, "/"); ok && file != "" {
			version = dir
		}
	}
	if err := s.repo.Load(ctx, req.GetModelName(), version, model); err != nil {
		return nil, s.fail(ctx, "RepositoryModelLoad", err)
	}
	s.SyncHealth()
	return &inferencepb.RepositoryModelLoadResponse{}, nil
}

// RepositoryModelUnload unloads a model (all versions, or the version named
// by the string parameter "version").
func (s *Server) RepositoryModelUnload(ctx context.Context, req *inferencepb.RepositoryModelUnloadRequest) (*inferencepb.RepositoryModelUnloadResponse, error) {
	if s.repo == nil {
		return nil, status.Error(codes.Unimplemented, "the model repository extension is not enabled")
	}
	version := req.GetParameters()["version"].GetStringParam()
	if err := s.repo.Unload(ctx, req.GetModelName(), version); err != nil {
		return nil, s.fail(ctx, "RepositoryModelUnload", err)
	}
	return &inferencepb.RepositoryModelUnloadResponse{}, nil
}
