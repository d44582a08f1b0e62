// Package grpcapi is the agent's Open Inference Protocol (KServe v2) gRPC
// front end: the service inference.GRPCInferenceService of the canonical
// open_inference_grpc.proto (bindings in inferencepb), the standard gRPC
// health service and server reflection.
//
// # Basics
//
// A Server answers from a Backend, the small set of model manager methods it
// needs (*models.Manager satisfies it):
//
//	gs, srv := grpcapi.NewGRPCServer(manager, grpcapi.Options{Metrics: m, Logger: log})
//	go srv.WatchHealth(ctx, time.Second)
//	err := gs.Serve(listener)
//
// On SIGTERM call srv.Shutdown (health turns NOT_SERVING) and then
// gs.GracefulStop, which lets in-flight requests finish.
//
// # Tensors on the wire
//
// ModelInfer accepts inputs either all in raw_input_contents (one entry per
// input, little-endian elements, BYTES elements each preceded by a 4-byte
// little-endian length) or all in typed InferTensorContents; FP16 and BF16
// only travel raw. Every mistake (unknown datatype, element count not
// matching the shape, mixing raw and typed, a raw entry count not matching the
// inputs, out-of-range INT8/INT16/UINT8/UINT16 values, BOOL bytes other than
// 0 and 1, duplicate names) is INVALID_ARGUMENT with a message naming the
// tensor. Responses use raw_output_contents when the request was raw (as
// Triton does) or when an output is FP16/BF16, typed contents otherwise.
//
// Decoding and encoding reference the wire buffers instead of copying where
// the layout allows (raw contents always; 32- and 64-bit typed contents on
// little-endian machines), so a request costs no per-element work.
//
// # Errors
//
// Backend errors map to status codes by Code: models.ErrNotFound → NOT_FOUND,
// ErrInvalidInput → INVALID_ARGUMENT, ErrUnavailable → UNAVAILABLE,
// ErrOverloaded → RESOURCE_EXHAUSTED, a context deadline → DEADLINE_EXCEEDED,
// anything else → INTERNAL.
//
// # Caveats
//
// Only the six core RPCs are implemented; Server embeds
// inferencepb.UnimplementedGRPCInferenceServiceServer so that RPCs added to
// the .proto later (the model repository extension) answer UNIMPLEMENTED
// until they are written.
package grpcapi
