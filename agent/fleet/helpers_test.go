package fleet_test

import (
	"testing"

	"github.com/edgefleet/edgefleet/hub/registry"
)

func mustSelector(t *testing.T, s string) registry.Selector {
	t.Helper()
	sel, err := registry.ParseSelector(s)
	if err != nil {
		t.Fatal(err)
	}
	return sel
}
