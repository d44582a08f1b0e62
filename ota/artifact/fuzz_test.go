package artifact

import (
	"encoding/json"
	"testing"
)

func FuzzParseConfig(f *testing.F) {
	good, _ := validConfig().Marshal()
	f.Add(good)
	f.Add([]byte(`{"schemaVersion":1}`))
	f.Add([]byte(`{"golden":{"inputs":[{"datatype":"BYTES","shape":[2],"data":"AQAAAA=="}]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			return
		}
		// Whatever parses must re-encode to something that parses again.
		again, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseConfig(again); err != nil {
			t.Fatalf("accepted config does not survive a round trip: %v", err)
		}
	})
}

func FuzzParseManifest(f *testing.F) {
	good, _ := json.Marshal(validManifest())
	f.Add(good)
	f.Add([]byte(`{"schemaVersion":2,"layers":[{}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b)
		if err != nil {
			return
		}
		if _, ok := ModelLayer(m); !ok {
			t.Fatal("accepted manifest has no model layer")
		}
		for _, l := range m.Layers {
			if CheckTitle(Title(l)) != nil {
				t.Fatalf("accepted unsafe title %q", Title(l))
			}
		}
	})
}
