package broker_test

import (
	"math/big"
	"testing"
)

func mustSerial(t *testing.T, hex string) *big.Int {
	t.Helper()
	n, ok := new(big.Int).SetString(hex, 16)
	if !ok {
		t.Fatalf("serial %q", hex)
	}
	return n
}
