package artifact

import (
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func hashOf(s string) v1.Hash {
	h, _, err := v1.SHA256(strings.NewReader(s))
	if err != nil {
		panic(err)
	}
	return h
}

func validManifest() *v1.Manifest {
	m, err := NewManifest(
		v1.Descriptor{MediaType: ConfigMediaType, Size: 100, Digest: hashOf("config")},
		[]v1.Descriptor{
			{MediaType: ModelMediaType, Size: 5, Digest: hashOf("model"), Annotations: map[string]string{AnnotationTitle: "model.onnx"}},
			{MediaType: FileMediaType, Size: 6, Digest: hashOf("labels"), Annotations: map[string]string{AnnotationTitle: "labels.txt"}},
		}, nil)
	if err != nil {
		panic(err)
	}
	return m
}

func TestCheckManifest(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(m *v1.Manifest)
		want   string
	}{
		{"valid", func(*v1.Manifest) {}, ""},
		{"extra file any media type", func(m *v1.Manifest) { m.Layers[1].MediaType = "text/plain; charset=utf-8" }, ""},
		{"schema", func(m *v1.Manifest) { m.SchemaVersion = 1 }, "schemaVersion is 1"},
		{"docker media type", func(m *v1.Manifest) { m.MediaType = "application/vnd.docker.distribution.manifest.v2+json" }, "mediaType is"},
		{"no artifactType", func(m *v1.Manifest) { m.ArtifactType = "" }, "artifactType is"},
		{"config type", func(m *v1.Manifest) { m.Config.MediaType = "application/vnd.oci.image.config.v1+json" }, "config mediaType"},
		{"config too big", func(m *v1.Manifest) { m.Config.Size = MaxConfigSize + 1 }, "config size"},
		{"sha512", func(m *v1.Manifest) { m.Layers[0].Digest = v1.Hash{Algorithm: "sha512", Hex: strings.Repeat("a", 128)} }, "is not sha256"},
		{"no model", func(m *v1.Manifest) { m.Layers[0].MediaType = FileMediaType }, "0 layers of media type"},
		{"two models", func(m *v1.Manifest) { m.Layers[1].MediaType = ModelMediaType }, "2 layers of media type"},
		{"no title", func(m *v1.Manifest) { m.Layers[1].Annotations = nil }, "missing org.opencontainers.image.title"},
		{"path title", func(m *v1.Manifest) { m.Layers[1].Annotations[AnnotationTitle] = "../etc/passwd" }, "path separator"},
		{"dotdot title", func(m *v1.Manifest) { m.Layers[1].Annotations[AnnotationTitle] = ".." }, "not a file name"},
		{"control title", func(m *v1.Manifest) { m.Layers[1].Annotations[AnnotationTitle] = "a\nb" }, "control character"},
		{"duplicate title", func(m *v1.Manifest) { m.Layers[1].Annotations[AnnotationTitle] = "model.onnx" }, "used twice"},
		{"bad media type", func(m *v1.Manifest) { m.Layers[1].MediaType = "labels" }, "not type/subtype"},
		{"no layers", func(m *v1.Manifest) { m.Layers = nil }, "0 layers, want"},
		{"negative size", func(m *v1.Manifest) { m.Layers[1].Size = -1 }, "negative size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := validManifest()
			tt.mutate(m)
			err := CheckManifest(m)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("CheckManifest = %v, want ErrInvalid mentioning %q", err, tt.want)
			}
		})
	}
}

func TestParseManifest(t *testing.T) {
	m := validManifest()
	if l, ok := ModelLayer(m); !ok || Title(l) != "model.onnx" {
		t.Fatalf("ModelLayer = %v, %v", l, ok)
	}
	raw := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.edgefleet.model.v1",` +
		`"config":{"mediaType":"application/vnd.edgefleet.model.config.v1+json","size":10,"digest":"` + hashOf("c").String() + `"},` +
		`"layers":[{"mediaType":"application/vnd.edgefleet.model.onnx.v1","size":3,"digest":"` + hashOf("m").String() + `","annotations":{"org.opencontainers.image.title":"m.onnx"}}]}`
	if _, err := ParseManifest([]byte(raw)); err != nil {
		t.Fatalf("ParseManifest: %v", err)
	}
	for name, b := range map[string]string{
		"trailing":  raw + "{}",
		"truncated": raw[:len(raw)-2],
		"oversized": raw + strings.Repeat(" ", MaxManifestSize),
		"bad hash":  strings.Replace(raw, hashOf("m").String(), "sha256:xyz", 1),
	} {
		if _, err := ParseManifest([]byte(b)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: ParseManifest = %v, want ErrInvalid", name, err)
		}
	}
}

func TestToleranceCompare(t *testing.T) {
	f16 := func(vs ...uint16) []byte {
		b := make([]byte, 2*len(vs))
		for i, v := range vs {
			binary.LittleEndian.PutUint16(b[2*i:], v)
		}
		return b
	}
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	tests := []struct {
		name string
		tol  Tolerance
		want GoldenTensor
		got  []byte
		err  string
	}{
		{"exact", Tolerance{}, GoldenTensor{Name: "y", Datatype: "FP32", Shape: []int64{2}, Data: f32s(1, 2)}, f32s(1, 2), ""},
		{"abs ok", Tolerance{Abs: 0.01}, GoldenTensor{Name: "y", Datatype: "FP32", Shape: []int64{2}, Data: f32s(1, 2)}, f32s(1.005, 1.995), ""},
		{"rel ok", Tolerance{Rel: 0.01}, GoldenTensor{Name: "y", Datatype: "FP32", Shape: []int64{1}, Data: f32s(100)}, f32s(100.9), ""},
		{"outside", Tolerance{Abs: 0.01}, GoldenTensor{Name: "y", Datatype: "FP32", Shape: []int64{3}, Data: f32s(1, 2, 3)}, f32s(1, 2.5, 3.5), "2 of 3 elements outside tolerance"},
		{"nan matches nan", Tolerance{}, GoldenTensor{Name: "y", Datatype: "FP32", Shape: []int64{1}, Data: f32s(nan)}, f32s(nan), ""},
		{"nan vs number", Tolerance{Abs: 1e9}, GoldenTensor{Name: "y", Datatype: "FP32", Shape: []int64{1}, Data: f32s(1)}, f32s(nan), "outside tolerance"},
		{"inf vs big", Tolerance{Abs: 1e9}, GoldenTensor{Name: "y", Datatype: "FP32", Shape: []int64{1}, Data: f32s(inf)}, f32s(3e38), "outside tolerance"},
		{"length", Tolerance{}, GoldenTensor{Name: "y", Datatype: "FP32", Shape: []int64{1}, Data: f32s(1)}, f32s(1, 2), "8 bytes, golden vector has 4"},
		{"fp16", Tolerance{Abs: 0.001}, GoldenTensor{Name: "y", Datatype: "FP16", Shape: []int64{2}, Data: f16(0x3c00, 0xc000)}, f16(0x3c00, 0xc000), ""},
		{"fp16 off", Tolerance{Abs: 0.0001}, GoldenTensor{Name: "y", Datatype: "FP16", Shape: []int64{1}, Data: f16(0x3c00)}, f16(0x3c01), "got 1.0009765625, want 1"},
		{"int64 exact", Tolerance{}, GoldenTensor{Name: "y", Datatype: "INT64", Shape: []int64{1}, Data: []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}, []byte{0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, "got -2, want -1"},
		{"bool", Tolerance{Abs: 1}, GoldenTensor{Name: "y", Datatype: "BOOL", Shape: []int64{2}, Data: []byte{1, 0}}, []byte{1, 1}, "BOOL data differs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.tol.Compare(&tt.want, tt.got)
			if tt.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("Compare = %v, want %q", err, tt.err)
			}
		})
	}
}

func TestHalfToFloat32(t *testing.T) {
	tests := map[uint16]float32{
		0x0000: 0, 0x3c00: 1, 0xc000: -2, 0x7bff: 65504, 0x0001: 5.960464477539063e-08,
		0x03ff: 6.097555160522461e-05, 0x0400: 6.103515625e-05, 0x3555: 0.333251953125,
	}
	for h, want := range tests {
		if got := HalfToFloat32(h); got != want {
			t.Errorf("HalfToFloat32(%#04x) = %g, want %g", h, got, want)
		}
	}
	if !math.IsInf(float64(HalfToFloat32(0xfc00)), -1) || !math.IsNaN(float64(HalfToFloat32(0x7e00))) {
		t.Error("infinity or NaN not preserved")
	}
}
