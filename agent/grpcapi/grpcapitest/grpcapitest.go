// Package grpcapitest starts a grpcapi server on a loopback port for tests
// and gives typed helpers to call it, so that tests of a real model manager
// exercise the gRPC front end in a few lines:
//
//	h := grpcapitest.Start(t, manager, grpcapi.Options{})
//	res, err := h.Infer(ctx, "digits_cnn", "", &models.InferRequest{Inputs: in}, true)
package grpcapitest

import (
	"context"
	"errors"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/edgefleet/edgefleet/agent/grpcapi"
	"github.com/edgefleet/edgefleet/agent/grpcapi/inferencepb"
	"github.com/edgefleet/edgefleet/agent/models"
)

// Harness is a running server and a client connected to it.
type Harness struct {
	Server *grpcapi.Server
	GRPC   *grpc.Server
	// Addr is the loopback address the server listens on.
	Addr   string
	Conn   *grpc.ClientConn
	Client inferencepb.GRPCInferenceServiceClient
	Health healthpb.HealthClient
}

// Start serves b on 127.0.0.1 with an ephemeral port and connects a client
// whose message size limits are 1 GiB. Both are closed by tb.Cleanup.
func Start(tb testing.TB, b grpcapi.Backend, opts grpcapi.Options) *Harness {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("grpcapitest: listen: %v", err)
	}
	gs, srv := grpcapi.NewGRPCServer(b, opts)
	done := make(chan error, 1)
	go func() { done <- gs.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30), grpc.MaxCallSendMsgSize(1<<30)))
	if err != nil {
		gs.Stop()
		tb.Fatalf("grpcapitest: dial: %v", err)
	}
	tb.Cleanup(func() {
		_ = conn.Close()
		gs.Stop()
		if err := <-done; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			tb.Errorf("grpcapitest: serve: %v", err)
		}
	})
	return &Harness{
		Server: srv,
		GRPC:   gs,
		Addr:   lis.Addr().String(),
		Conn:   conn,
		Client: inferencepb.NewGRPCInferenceServiceClient(conn),
		Health: healthpb.NewHealthClient(conn),
	}
}

// Infer sends req to model (version "" for the default) with inputs in
// raw_input_contents when raw is set, typed contents otherwise, and decodes
// the reply. Errors are gRPC status errors (see status.Code).
func (h *Harness) Infer(ctx context.Context, model, version string, req *models.InferRequest, raw bool) (*models.InferResponse, error) {
	pr, err := grpcapi.NewInferRequest(model, version, req, raw)
	if err != nil {
		return nil, err
	}
	resp, err := h.Client.ModelInfer(ctx, pr)
	if err != nil {
		return nil, err
	}
	return grpcapi.DecodeOutputs(resp)
}
