package grpcapi

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/edgefleet/edgefleet/agent/grpcapi/inferencepb"
	"github.com/edgefleet/edgefleet/agent/metrics"
	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/tensor"
)

// Protocol is the protocol label this front end records metrics under.
const Protocol = "grpc"

// ServiceName is the full name of the inference service, also the health
// service name that reports its readiness.
const ServiceName = "inference.GRPCInferenceService"

// DefaultMaxRecvMsgSize is the request size limit when Options.MaxRecvMsgSize is 0.
const DefaultMaxRecvMsgSize = 64 << 20

// Backend is what the front end needs from the model manager
// (*models.Manager). Version "" selects a model's default version. Errors
// wrap the models sentinels (ErrNotFound, ErrInvalidInput, ErrUnavailable,
// ErrOverloaded) or a context error.
//
// Infer owns neither req nor its tensors after it returns; the tensors of the
// response it returns belong to the caller, which references them until the
// reply has been sent.
type Backend interface {
	Ready() bool
	ServerMetadata() models.ServerMetadata
	ModelMetadata(name, version string) (*models.Metadata, error)
	ModelReady(name, version string) (bool, error)
	Infer(ctx context.Context, name, version string, req *models.InferRequest) (*models.InferResponse, error)
}

// Options configure a Server. The zero value is valid.
type Options struct {
	// Metrics receives one ObserveRequest per ModelInfer; nil records nothing.
	Metrics *metrics.Agent
	// Logger logs failed requests (client mistakes at debug level, server
	// faults at error level); nil discards.
	Logger *slog.Logger
	// MaxRecvMsgSize caps the size of one request in bytes, used by
	// ServerOptions and NewGRPCServer; 0 means DefaultMaxRecvMsgSize. A larger
	// request is refused with RESOURCE_EXHAUSTED before it is decoded.
	MaxRecvMsgSize int
	// Repository serves the model repository RPCs; nil answers them UNIMPLEMENTED.
	Repository Repository
}

// Server implements inferencepb.GRPCInferenceServiceServer on a Backend and
// keeps the standard gRPC health service in step with the Backend's
// readiness. Its methods are safe for concurrent use.
type Server struct {
	inferencepb.UnimplementedGRPCInferenceServiceServer

	b       Backend
	metrics *metrics.Agent
	log     *slog.Logger
	maxRecv int
	health  *health.Server
	repo    Repository

	mu        sync.Mutex // guards lastKnown, lastReady and stopped
	lastKnown bool       // lastReady has been published to health
	lastReady bool
	stopped   bool // Shutdown was called; health stays NOT_SERVING
}

// New returns a Server answering from b.
func New(b Backend, opts Options) *Server {
	s := &Server{
		b:       b,
		metrics: opts.Metrics,
		log:     opts.Logger,
		maxRecv: opts.MaxRecvMsgSize,
		health:  health.NewServer(),
		repo:    opts.Repository,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.maxRecv <= 0 {
		s.maxRecv = DefaultMaxRecvMsgSize
	}
	s.SyncHealth()
	return s
}

// ServerOptions returns the grpc.ServerOptions that Options asks for (the
// request size limit); pass them to grpc.NewServer when building the
// grpc.Server yourself.
//
// Besides the size limit they cut per-call scheduler work: a fixed pool of
// stream workers handles calls instead of a new goroutine per call, and
// connections share their write buffers.
func (s *Server) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.MaxRecvMsgSize(s.maxRecv),
		grpc.NumStreamWorkers(uint32(max(runtime.GOMAXPROCS(0), 1))),
		grpc.SharedWriteBuffer(true)}
}

// Register registers the inference service, the standard health service
// (grpc.health.v1.Health) and server reflection on gs.
func (s *Server) Register(gs *grpc.Server) {
	inferencepb.RegisterGRPCInferenceServiceServer(gs, s)
	healthpb.RegisterHealthServer(gs, &healthService{Server: s.health, s: s})
	reflection.Register(gs)
}

// NewGRPCServer builds a grpc.Server with the Server's options plus extra,
// and registers everything Register does on it.
func NewGRPCServer(b Backend, opts Options, extra ...grpc.ServerOption) (*grpc.Server, *Server) {
	s := New(b, opts)
	gs := grpc.NewServer(append(s.ServerOptions(), extra...)...)
	s.Register(gs)
	return gs, s
}

// SyncHealth sets the health status of the server ("") and of ServiceName to
// SERVING or NOT_SERVING from Backend.Ready. Health Check calls and the
// ServerReady RPC sync by themselves; call SyncHealth (or run WatchHealth)
// so that health Watch streams learn of changes promptly.
func (s *Server) SyncHealth() {
	ready := s.b.Ready()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped || (s.lastKnown && s.lastReady == ready) {
		return
	}
	s.lastKnown, s.lastReady = true, ready
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ready {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
	s.health.SetServingStatus(ServiceName, st)
}

// WatchHealth calls SyncHealth every interval until ctx is done.
func (s *Server) WatchHealth(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.SyncHealth()
		}
	}
}

// Shutdown marks every health status NOT_SERVING for good, so that load
// balancers stop sending work while in-flight requests drain (call it before
// grpc.Server.GracefulStop). Inference RPCs keep being answered.
func (s *Server) Shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	s.health.Shutdown()
}

// healthService is the standard health server, synced with the Backend's
// readiness before every Check.
type healthService struct {
	*health.Server
	s *Server
}

func (h *healthService) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	h.s.SyncHealth()
	return h.Server.Check(ctx, req)
}

// ServerLive reports true: a server that answers is live.
func (s *Server) ServerLive(context.Context, *inferencepb.ServerLiveRequest) (*inferencepb.ServerLiveResponse, error) {
	return &inferencepb.ServerLiveResponse{Live: true}, nil
}

// ServerReady reports Backend.Ready.
func (s *Server) ServerReady(context.Context, *inferencepb.ServerReadyRequest) (*inferencepb.ServerReadyResponse, error) {
	s.SyncHealth()
	return &inferencepb.ServerReadyResponse{Ready: s.b.Ready()}, nil
}

// ModelReady reports Backend.ModelReady; an unknown model or version is NOT_FOUND.
func (s *Server) ModelReady(ctx context.Context, req *inferencepb.ModelReadyRequest) (*inferencepb.ModelReadyResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "model name is empty")
	}
	ok, err := s.b.ModelReady(req.GetName(), req.GetVersion())
	if err != nil {
		return nil, s.fail(ctx, "ModelReady", err)
	}
	return &inferencepb.ModelReadyResponse{Ready: ok}, nil
}

// ServerMetadata reports Backend.ServerMetadata.
func (s *Server) ServerMetadata(context.Context, *inferencepb.ServerMetadataRequest) (*inferencepb.ServerMetadataResponse, error) {
	md := s.b.ServerMetadata()
	return &inferencepb.ServerMetadataResponse{Name: md.Name, Version: md.Version, Extensions: md.Extensions}, nil
}

// ModelMetadata reports Backend.ModelMetadata; Metadata.Parameters travel as
// the response's properties.
func (s *Server) ModelMetadata(ctx context.Context, req *inferencepb.ModelMetadataRequest) (*inferencepb.ModelMetadataResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "model name is empty")
	}
	md, err := s.b.ModelMetadata(req.GetName(), req.GetVersion())
	if err != nil {
		return nil, s.fail(ctx, "ModelMetadata", err)
	}
	return &inferencepb.ModelMetadataResponse{
		Name:       md.Name,
		Versions:   md.Versions,
		Platform:   md.Platform,
		Inputs:     tensorMetadata(md.Inputs),
		Outputs:    tensorMetadata(md.Outputs),
		Properties: md.Parameters,
	}, nil
}

func tensorMetadata(specs []models.TensorSpec) []*inferencepb.ModelMetadataResponse_TensorMetadata {
	out := make([]*inferencepb.ModelMetadataResponse_TensorMetadata, len(specs))
	for i, sp := range specs {
		out[i] = &inferencepb.ModelMetadataResponse_TensorMetadata{Name: sp.Name, Datatype: sp.DType.String(), Shape: sp.Shape}
	}
	return out
}

// ModelInfer decodes the request (DecodeInputs), runs it on the Backend and
// encodes the outputs (EncodeOutputs): raw when the request was raw, typed
// otherwise. Requested outputs must be distinct and non-empty.
func (s *Server) ModelInfer(ctx context.Context, req *inferencepb.ModelInferRequest) (*inferencepb.ModelInferResponse, error) {
	start := time.Now()
	model, version := req.GetModelName(), req.GetModelVersion()
	resp, err := s.infer(ctx, req)
	s.observe(model, version, resp, err, time.Since(start))
	if err != nil {
		return nil, s.fail(ctx, "ModelInfer", err)
	}
	return resp, nil
}

func (s *Server) infer(ctx context.Context, req *inferencepb.ModelInferRequest) (*inferencepb.ModelInferResponse, error) {
	if req.GetModelName() == "" {
		return nil, invalid("model_name is empty")
	}
	inputs, err := DecodeInputs(req)
	if err != nil {
		return nil, err
	}
	mreq := &models.InferRequest{ID: req.GetId(), Inputs: inputs}
	if outs := req.GetOutputs(); len(outs) > 0 {
		mreq.Outputs = make([]string, len(outs))
		for i, o := range outs {
			name := o.GetName()
			if name == "" {
				return nil, invalid("requested output %d has no name", i)
			}
			for _, prev := range mreq.Outputs[:i] {
				if prev == name {
					return nil, invalid("output %q is requested more than once", name)
				}
			}
			mreq.Outputs[i] = name
		}
	}
	res, err := s.b.Infer(ctx, req.GetModelName(), req.GetModelVersion(), mreq)
	if err != nil {
		return nil, err
	}
	if len(mreq.Outputs) > 0 {
		res.Outputs = selectOutputs(res.Outputs, mreq.Outputs)
	}
	if res.ID == "" {
		res.ID = req.GetId()
	}
	resp, err := EncodeOutputs(res, len(req.GetRawInputContents()) > 0)
	if err != nil {
		return nil, &internalError{fmt.Errorf("model %q: %w", req.GetModelName(), err)}
	}
	return resp, nil
}

// selectOutputs drops outputs that were not requested, in place, in case
// the backend returned more.
func selectOutputs(outs []tensor.Tensor, want []string) []tensor.Tensor {
	kept := outs[:0]
	for _, t := range outs {
		for _, w := range want {
			if t.Name == w {
				kept = append(kept, t)
				break
			}
		}
	}
	return kept
}
