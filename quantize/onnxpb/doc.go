// Package onnxpb holds the Go bindings of the ONNX protobuf schema.
//
// onnx.proto3 is the proto3 variant of ONNX 1.12's onnx.in.proto, produced by
// ONNX's own gen_proto.py (as shipped in Debian's python3-onnx) with one
// added line, the go_package option. onnx.proto3.pb.go is generated from it by
// protoc (Debian's protobuf-compiler) and protoc-gen-go v1.36.12:
//
//	go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
//	go generate ./quantize/onnxpb
//
// Fields added to ONNX after 1.12 are kept as unknown fields, so a model
// decoded and re-encoded with these bindings keeps them.
package onnxpb

//go:generate protoc --proto_path=. --go_out=. --go_opt=paths=source_relative --go_opt=Monnx.proto3=github.com/edgefleet/edgefleet/quantize/onnxpb onnx.proto3
