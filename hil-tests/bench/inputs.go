package bench

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/tensor"
)

// RandomInputs builds deterministic inputs for a model's inputs; dynamic
// dimensions take 1 unless shapes (NAME=AxBxC) give the shape.
// runtime.Init must have been called.
func RandomInputs(model []byte, shapes []string) ([]tensor.Tensor, error) {
	ins, _, err := runtime.Inspect(model)
	if err != nil {
		return nil, err
	}
	given := map[string][]int64{}
	for _, s := range shapes {
		name, dims, ok := strings.Cut(s, "=")
		if !ok {
			return nil, fmt.Errorf("shape %q: want NAME=AxBxC", s)
		}
		var shape []int64
		for _, d := range strings.Split(dims, "x") {
			n, err := strconv.ParseInt(d, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("shape %q: %w", s, err)
			}
			shape = append(shape, n)
		}
		given[name] = shape
	}
	seed := uint32(1)
	var out []tensor.Tensor
	for _, in := range ins {
		shape := given[in.Name]
		if shape == nil {
			shape = make([]int64, len(in.Shape))
			for i, d := range in.Shape {
				shape[i] = max(d, 1)
			}
		}
		t := tensor.Tensor{Name: in.Name, DType: in.DType, Shape: shape}
		n := t.NumElements()
		switch in.DType {
		case tensor.FP32:
			t.Data = make([]byte, 4*n)
			for i := range n {
				seed = seed*1664525 + 1013904223
				binary.LittleEndian.PutUint32(t.Data[4*i:], math.Float32bits(float32(seed>>8)/float32(1<<24)))
			}
		case tensor.Int64:
			t.Data = make([]byte, 8*n)
			for i := range n {
				binary.LittleEndian.PutUint64(t.Data[8*i:], 16000)
			}
		default:
			if in.DType.Size() == 0 {
				return nil, fmt.Errorf("input %q: %v inputs are not generated", in.Name, in.DType)
			}
			t.Data = make([]byte, n*int64(in.DType.Size()))
		}
		out = append(out, t)
	}
	return out, nil
}
