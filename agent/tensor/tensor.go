// Package tensor holds the agent's in-memory tensor type and the Open
// Inference Protocol (KServe v2) data types.
//
// # Basics
//
// A Tensor carries its elements as little-endian raw bytes (Data) for every
// fixed-size data type, and as a list of byte strings (Strings) for BYTES.
// Raw bytes are what onnxruntime consumes and what the binary protocols
// (Triton's binary extension, gRPC raw_input_contents) carry, so tensors move
// between the wire and the runtime without per-element conversion.
//
// # Caveats
//
// Tensors are not safe for concurrent mutation; treat a Tensor handed to the
// runtime or an encoder as read-only.
package tensor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
)

// DType is an Open Inference Protocol tensor data type.
type DType uint8

// The Open Inference Protocol data types. Invalid is the zero value.
const (
	Invalid DType = iota
	Bool
	Uint8
	Uint16
	Uint32
	Uint64
	Int8
	Int16
	Int32
	Int64
	FP16
	FP32
	FP64
	Bytes
	BF16
)

var dtypeNames = [...]string{
	Invalid: "INVALID",
	Bool:    "BOOL",
	Uint8:   "UINT8",
	Uint16:  "UINT16",
	Uint32:  "UINT32",
	Uint64:  "UINT64",
	Int8:    "INT8",
	Int16:   "INT16",
	Int32:   "INT32",
	Int64:   "INT64",
	FP16:    "FP16",
	FP32:    "FP32",
	FP64:    "FP64",
	Bytes:   "BYTES",
	BF16:    "BF16",
}

var dtypeSizes = [...]int{
	Bool: 1, Uint8: 1, Uint16: 2, Uint32: 4, Uint64: 8,
	Int8: 1, Int16: 2, Int32: 4, Int64: 8,
	FP16: 2, FP32: 4, FP64: 8, Bytes: 0, BF16: 2,
}

// String returns the protocol name of d ("FP32", "INT64", ...).
func (d DType) String() string {
	if int(d) < len(dtypeNames) {
		return dtypeNames[d]
	}
	return fmt.Sprintf("DType(%d)", d)
}

// Size is the size in bytes of one element, or 0 for BYTES and Invalid.
func (d DType) Size() int {
	if int(d) < len(dtypeSizes) {
		return dtypeSizes[d]
	}
	return 0
}

// Valid reports whether d is one of the protocol data types.
func (d DType) Valid() bool { return d > Invalid && int(d) < len(dtypeNames) }

// ErrUnknownDType is returned by ParseDType for a name that is not a protocol data type.
var ErrUnknownDType = errors.New("unknown data type")

// ParseDType parses a protocol data type name; it accepts any letter case.
func ParseDType(s string) (DType, error) {
	for i, n := range dtypeNames {
		if i != 0 && strings.EqualFold(n, s) {
			return DType(i), nil
		}
	}
	return Invalid, fmt.Errorf("%w %q", ErrUnknownDType, s)
}

// Tensor is a named, typed, shaped block of elements.
type Tensor struct {
	Name  string
	DType DType
	// Shape holds the dimensions; an empty Shape is a scalar (one element).
	Shape []int64
	// Data holds NumElements()*DType.Size() little-endian bytes for fixed-size types.
	Data []byte
	// Strings holds NumElements() elements for BYTES tensors.
	Strings [][]byte
}

// ErrShape is wrapped by errors about shapes and element counts.
var ErrShape = errors.New("shape mismatch")

// NumElements returns the product of the dimensions of shape, or an error if
// a dimension is negative or the product overflows.
func NumElements(shape []int64) (int64, error) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("%w: negative dimension %d in %v", ErrShape, d, shape)
		}
		if d != 0 && n > math.MaxInt64/d {
			return 0, fmt.Errorf("%w: shape %v overflows", ErrShape, shape)
		}
		n *= d
	}
	return n, nil
}

// NumElements returns the element count implied by t.Shape (0 on an invalid shape).
func (t *Tensor) NumElements() int64 {
	n, err := NumElements(t.Shape)
	if err != nil {
		return 0
	}
	return n
}

// Validate checks that the data matches the data type and shape.
func (t *Tensor) Validate() error {
	if !t.DType.Valid() {
		return fmt.Errorf("tensor %q: invalid data type %v", t.Name, t.DType)
	}
	n, err := NumElements(t.Shape)
	if err != nil {
		return fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	if t.DType == Bytes {
		if int64(len(t.Strings)) != n {
			return fmt.Errorf("tensor %q: %w: shape %v needs %d elements, got %d", t.Name, ErrShape, t.Shape, n, len(t.Strings))
		}
		return nil
	}
	if want := n * int64(t.DType.Size()); int64(len(t.Data)) != want {
		return fmt.Errorf("tensor %q: %w: shape %v of %v needs %d bytes, got %d", t.Name, ErrShape, t.Shape, t.DType, want, len(t.Data))
	}
	return nil
}

// ByteSize returns the payload size in bytes (for BYTES, the sum of element lengths).
func (t *Tensor) ByteSize() int {
	if t.DType != Bytes {
		return len(t.Data)
	}
	s := 0
	for _, b := range t.Strings {
		s += len(b)
	}
	return s
}

// HasNonFinite reports whether any floating-point tensor (FP16, BF16, FP32,
// FP64) holds a NaN or an Inf. Other types are skipped.
func HasNonFinite(outs []Tensor) bool {
	for i := range outs {
		t := &outs[i]
		switch t.DType {
		case FP32:
			for j := 0; j+4 <= len(t.Data); j += 4 {
				if binary.LittleEndian.Uint32(t.Data[j:])&0x7f800000 == 0x7f800000 {
					return true
				}
			}
		case FP64:
			for j := 0; j+8 <= len(t.Data); j += 8 {
				if binary.LittleEndian.Uint64(t.Data[j:])&0x7ff0000000000000 == 0x7ff0000000000000 {
					return true
				}
			}
		case FP16:
			for j := 0; j+2 <= len(t.Data); j += 2 {
				if binary.LittleEndian.Uint16(t.Data[j:])&0x7c00 == 0x7c00 {
					return true
				}
			}
		case BF16:
			for j := 0; j+2 <= len(t.Data); j += 2 {
				if binary.LittleEndian.Uint16(t.Data[j:])&0x7f80 == 0x7f80 {
					return true
				}
			}
		}
	}
	return false
}
