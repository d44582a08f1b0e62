package cache

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"
)

var benchSizes = []struct {
	name string
	n    int
}{
	{"1MB", 1 << 20},
	{"10MB", 10 << 20},
}

func BenchmarkReadBlob(b *testing.B) {
	ctx := context.Background()
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			c := mustOpen(b, tempPath(b), Options{})
			d, err := c.PutBytes(ctx, randomBytes(1, sz.n))
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(sz.n))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.ReadBlob(ctx, d); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkPut(b *testing.B) {
	ctx := context.Background()
	writers := []struct {
		name  string
		write func(c *Cache, data []byte) (string, error)
	}{
		{"PutBytes", func(c *Cache, data []byte) (string, error) { return c.PutBytes(ctx, data) }},
		{"Put", func(c *Cache, data []byte) (string, error) {
			d, _, err := c.Put(ctx, bytes.NewReader(data))
			return d, err
		}},
		{"Partial", func(c *Cache, data []byte) (string, error) {
			d := DigestOf(data) // a puller knows the digest from the manifest
			if err := c.BeginPartial(ctx, d, int64(len(data))); err != nil {
				return "", err
			}
			if _, err := c.WritePartialFrom(ctx, d, bytes.NewReader(data)); err != nil {
				return "", err
			}
			return d, c.CommitPartial(ctx, d)
		}},
	}
	for _, w := range writers {
		for _, sz := range benchSizes {
			b.Run(w.name+"/"+sz.name, func(b *testing.B) {
				c := mustOpen(b, tempPath(b), Options{})
				data := randomBytes(2, sz.n)
				b.SetBytes(int64(sz.n))
				b.ReportAllocs()
				i := uint64(0)
				for b.Loop() {
					i++
					binary.LittleEndian.PutUint64(data, i) // a new blob each time
					d, err := w.write(c, data)
					if err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					if err := c.DeleteBlob(ctx, d); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
			})
		}
	}
}
