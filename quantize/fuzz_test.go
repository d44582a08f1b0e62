package quantize

import (
	"os"
	"testing"
)

// FuzzReadModel feeds arbitrary bytes to the quantizer's ONNX readers
// (the graph decoder behind every conversion): a model is read or refused
// with an error, never a panic, and what is read is self-consistent.
func FuzzReadModel(f *testing.F) {
	for _, p := range []string{"../agent/testdata/digits/cnn.onnx", "../agent/testdata/digits/transformer.onnx"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/3])
	}
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x05, 'h', 'e', 'l', 'l', 'o'})
	f.Fuzz(func(t *testing.T, model []byte) {
		if _, err := Inputs(model); err != nil {
			return
		}
		if _, err := Outputs(model); err != nil {
			t.Fatalf("Inputs read the model, Outputs refused it: %v", err)
		}
		if _, err := Candidates(model); err != nil {
			t.Fatalf("Inputs read the model, Candidates refused it: %v", err)
		}
	})
}
