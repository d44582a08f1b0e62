package cache_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/edgefleet/edgefleet/agent/cache"
)

// The calls behind `edgefleet model import`, `model ls` and `model rm`.
func Example() {
	dir, err := os.MkdirTemp("", "cache-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()

	c, err := cache.Open(filepath.Join(dir, "cache.db"), cache.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	for _, model := range [][]byte{[]byte("onnx bytes v1"), []byte("onnx bytes v2")} {
		rec, err := c.ImportModel(ctx, "digits", "", model, cache.VersionRecord{
			Source: "file:/models/digits.onnx",
			Inputs: []cache.TensorSpec{{Name: "input", DType: "FP32", Shape: []int64{-1, 64}}},
		})
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("imported", rec.Model, rec.Version, rec.Size, "bytes")
	}
	if err := c.SetActive(ctx, "digits", "2"); err != nil {
		log.Fatal(err)
	}

	models, err := c.Models()
	if err != nil {
		log.Fatal(err)
	}
	for _, m := range models {
		for _, v := range m.Versions {
			fmt.Printf("%s %s active=%v %s\n", m.Name, v.Version, v.Version == m.Active(), v.Digest[:15])
		}
	}

	v2, _ := c.Version("digits", "2")
	b, err := c.ReadBlob(ctx, v2.Digest) // verified against the digest
	fmt.Println(bytes.Equal(b, []byte("onnx bytes v2")), err)

	fmt.Println(c.RemoveVersion(ctx, "digits", "2"))
	fmt.Println(c.RemoveVersion(ctx, "digits", "1"))
	// Output:
	// imported digits 1 13 bytes
	// imported digits 2 13 bytes
	// digits 1 active=false sha256:2ae1cce8
	// digits 2 active=true sha256:7e5e2a1e
	// true <nil>
	// remove version: model "digits" version "2" is active; activate another version first: in use
	// <nil>
}
