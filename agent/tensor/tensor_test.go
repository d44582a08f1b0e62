package tensor

import (
	"errors"
	"math"
	"testing"
)

func TestParseDType(t *testing.T) {
	for d := Bool; d <= BF16; d++ {
		got, err := ParseDType(d.String())
		if err != nil || got != d {
			t.Errorf("ParseDType(%s) = %v, %v", d, got, err)
		}
	}
	if got, err := ParseDType("fp32"); err != nil || got != FP32 {
		t.Errorf("lower case: %v %v", got, err)
	}
	for _, bad := range []string{"", "FLOAT", "INVALID", "FP8"} {
		if _, err := ParseDType(bad); !errors.Is(err, ErrUnknownDType) {
			t.Errorf("ParseDType(%q) err = %v", bad, err)
		}
	}
	if Invalid.Valid() || DType(200).Valid() || DType(200).String() != "DType(200)" {
		t.Error("invalid types reported valid")
	}
}

func TestNumElements(t *testing.T) {
	for _, tc := range []struct {
		shape []int64
		want  int64
		err   bool
	}{
		{nil, 1, false},
		{[]int64{}, 1, false},
		{[]int64{2, 3, 4}, 24, false},
		{[]int64{5, 0}, 0, false},
		{[]int64{2, -1}, 0, true},
		{[]int64{math.MaxInt64, 2}, 0, true},
		{[]int64{1 << 32, 1 << 32}, 0, true},
	} {
		got, err := NumElements(tc.shape)
		if (err != nil) != tc.err || (!tc.err && got != tc.want) {
			t.Errorf("NumElements(%v) = %d, %v", tc.shape, got, err)
		}
		if tc.err && !errors.Is(err, ErrShape) {
			t.Errorf("NumElements(%v) error %v does not wrap ErrShape", tc.shape, err)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		t    Tensor
		ok   bool
	}{
		{"fp32", Tensor{DType: FP32, Shape: []int64{2, 2}, Data: make([]byte, 16)}, true},
		{"scalar", Tensor{DType: Int64, Shape: []int64{}, Data: make([]byte, 8)}, true},
		{"short", Tensor{DType: FP32, Shape: []int64{2, 2}, Data: make([]byte, 15)}, false},
		{"bytes", Tensor{DType: Bytes, Shape: []int64{2}, Strings: [][]byte{{1}, {}}}, true},
		{"bytes count", Tensor{DType: Bytes, Shape: []int64{3}, Strings: [][]byte{{1}}}, false},
		{"invalid type", Tensor{DType: Invalid, Shape: []int64{1}}, false},
		{"negative dim", Tensor{DType: Uint8, Shape: []int64{-1}}, false},
	} {
		if err := tc.t.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v", tc.name, err)
		}
	}
	b := Tensor{DType: Bytes, Strings: [][]byte{[]byte("ab"), []byte("c")}}
	if b.ByteSize() != 3 {
		t.Errorf("ByteSize = %d", b.ByteSize())
	}
}
