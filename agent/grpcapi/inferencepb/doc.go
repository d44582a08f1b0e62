// Package inferencepb holds the Go bindings generated from
// open_inference_grpc.proto, the Open Inference Protocol (KServe v2) gRPC
// service "inference.GRPCInferenceService".
//
// Do not edit the .pb.go files; change the .proto and run
//
//	go generate ./agent/grpcapi/...
//
// which needs protoc and the protoc-gen-go and protoc-gen-go-grpc plugins on
// PATH (go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12 and
// google.golang.org/grpc/cmd/protoc-gen-go-grpc).
package inferencepb

//go:generate protoc --proto_path=. --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative open_inference_grpc.proto
