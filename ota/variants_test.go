package ota

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/crane"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/edgefleet/edgefleet/ota/artifact"
)

// variantArtifact is testConfig(version) in precision p with model bytes b.
func variantArtifact(version string, p artifact.Precision, providers []string, b []byte) Artifact {
	cfg := testConfig(version)
	cfg.Precision, cfg.ExecutionProviders = p, providers
	return Artifact{Config: cfg, Model: BytesFile("digits.onnx", b)}
}

func TestSelectVariant(t *testing.T) {
	v := func(p artifact.Precision, eps ...string) Variant {
		return Variant{Precision: p, Providers: eps, Descriptor: v1.Descriptor{Digest: v1.Hash{Algorithm: "sha256", Hex: string(p)}}}
	}
	full := &Index{Variants: []Variant{
		v(artifact.PrecisionFP32, "cuda", "tensorrt", "cpu"),
		v(artifact.PrecisionFP16, "cuda", "tensorrt"),
		v(artifact.PrecisionINT8, "cpu"),
	}}
	twoOnly := &Index{Variants: []Variant{v(artifact.PrecisionFP32, "cuda", "tensorrt", "cpu"), v(artifact.PrecisionINT8, "cpu")}}
	gpuOnly := &Index{Variants: []Variant{v(artifact.PrecisionINT8, "tensorrt"), v(artifact.PrecisionFP32, "cuda")}}
	noFP32 := &Index{Variants: []Variant{v(artifact.PrecisionFP16, "cuda"), v(artifact.PrecisionINT8, "tensorrt")}}
	floatCPU := &Index{Variants: []Variant{v(artifact.PrecisionFP16, "cuda", "cpu"), v(artifact.PrecisionFP32, "cuda", "cpu")}}
	tests := []struct {
		name      string
		ix        *Index
		providers []string
		want      artifact.Precision
		wantErr   error
	}{
		{"no providers means cpu: int8", full, nil, artifact.PrecisionINT8, nil},
		{"cpu only: int8", full, []string{"cpu"}, artifact.PrecisionINT8, nil},
		{"cuda first: fp16", full, []string{"cuda", "cpu"}, artifact.PrecisionFP16, nil},
		{"tensorrt, upper case: fp16", full, []string{" TensorRT "}, artifact.PrecisionFP16, nil},
		{"unknown accelerator falls to cpu: int8", full, []string{"rocm"}, artifact.PrecisionINT8, nil},
		{"fp32 and int8, cuda: fp32", twoOnly, []string{"cuda", "cpu"}, artifact.PrecisionFP32, nil},
		{"fp32 and int8, cpu: int8", twoOnly, []string{"cpu"}, artifact.PrecisionINT8, nil},
		{"float only on cpu: fp32 before fp16", floatCPU, []string{"cpu"}, artifact.PrecisionFP32, nil},
		{"float only on cuda: fp16", floatCPU, []string{"cuda"}, artifact.PrecisionFP16, nil},
		{"nothing for cpu: fp32 fallback", gpuOnly, []string{"cpu"}, artifact.PrecisionFP32, nil},
		{"tensorrt variant for a tensorrt device", gpuOnly, []string{"tensorrt", "cuda"}, artifact.PrecisionINT8, nil},
		{"nothing fits and no fp32", noFP32, []string{"cpu"}, "", ErrNoVariant},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SelectVariant(tc.ix, Preference{Providers: tc.providers})
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("got %v, %v; want %v", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got.Precision != tc.want {
				t.Fatalf("got %v, %v; want %s", got, err, tc.want)
			}
		})
	}
}

func TestPushVariants(t *testing.T) {
	ctx := context.Background()
	host := newRegistry(t)
	ref := host + "/models/digits:5"
	fp32, int8 := randomBytes(t, 40000), randomBytes(t, 12000)
	dig, err := PushVariants(ctx, ref, []Artifact{
		variantArtifact("5", artifact.PrecisionFP32, nil, fp32),
		variantArtifact("5", artifact.PrecisionINT8, nil, int8),
	}, WithLogger(testLogger(t)))
	if err != nil {
		t.Fatalf("PushVariants: %v", err)
	}
	if got, err := Resolve(ctx, ref); err != nil || got != dig {
		t.Fatalf("tag resolves to %s (%v), PushVariants returned %s", got, err, dig)
	}

	ix, err := InspectIndex(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if ix.Ref != dig || ix.Manifest.ArtifactType != artifact.ArtifactType || len(ix.Variants) != 2 {
		t.Fatalf("index %s artifactType %q with %d variants", ix.Ref, ix.Manifest.ArtifactType, len(ix.Variants))
	}
	if n, v := ix.Model(); n != "digits" || v != "5" {
		t.Errorf("index names %s version %s", n, v)
	}
	wantEntries := []struct {
		p   artifact.Precision
		eps string
	}{{artifact.PrecisionFP32, "cuda,tensorrt,cpu"}, {artifact.PrecisionINT8, "cpu"}}
	for i, w := range wantEntries {
		d := ix.Manifest.Manifests[i]
		if d.Annotations[artifact.AnnotationPrecision] != string(w.p) || d.Annotations[artifact.AnnotationProviders] != w.eps ||
			d.ArtifactType != artifact.ArtifactType || d.MediaType != artifact.ManifestMediaType {
			t.Errorf("entry %d: %+v, want %s for %s", i, d, w.p, w.eps)
		}
	}
	// crane reads the index and each variant by digest.
	if raw, err := crane.Manifest(ref); err != nil || !bytes.Equal(raw, ix.Raw) {
		t.Errorf("crane.Manifest: %v", err)
	}
	for _, v := range ix.Variants {
		if _, err := crane.Manifest(v.Ref.String()); err != nil {
			t.Errorf("crane.Manifest(%s): %v", v.Ref, err)
		}
	}

	t.Run("inspect without a preference lists the variants", func(t *testing.T) {
		_, err := Inspect(ctx, ref)
		if !errors.Is(err, ErrIndex) || !strings.Contains(err.Error(), "int8 for cpu") || !strings.Contains(err.Error(), "fp32 for cuda,tensorrt,cpu") {
			t.Fatalf("Inspect(index): %v, want ErrIndex listing the variants", err)
		}
		if _, err := Pull(ctx, ref, mustDirSink(t)); !errors.Is(err, ErrIndex) {
			t.Fatalf("Pull(index): %v, want ErrIndex", err)
		}
	})
	t.Run("inspect a manifest as an index", func(t *testing.T) {
		if _, err := InspectIndex(ctx, ix.Variants[0].Ref.String()); !errors.Is(err, ErrMediaType) {
			t.Fatalf("InspectIndex(manifest): %v, want ErrMediaType", err)
		}
	})

	for _, tc := range []struct {
		providers []string
		want      artifact.Precision
		model     []byte
	}{
		{[]string{"cpu"}, artifact.PrecisionINT8, int8},
		{[]string{"cuda", "cpu"}, artifact.PrecisionFP32, fp32},
	} {
		t.Run("pull for "+strings.Join(tc.providers, ","), func(t *testing.T) {
			sink := mustDirSink(t)
			res, err := Pull(ctx, ref, sink, WithVariant(Preference{Providers: tc.providers}))
			if err != nil {
				t.Fatal(err)
			}
			if res.Index == nil || res.Variant == nil || res.Index.Ref != dig {
				t.Fatalf("resolved %+v: index and variant not recorded", res)
			}
			if res.Config.Precision != tc.want || res.Variant.Precision != tc.want || res.Ref != res.Variant.Ref {
				t.Fatalf("got %s (variant %v, ref %s), want %s", res.Config.Precision, res.Variant, res.Ref, tc.want)
			}
			b, err := os.ReadFile(sink.Path(res.Model().Digest))
			if err != nil || !bytes.Equal(b, tc.model) {
				t.Fatalf("pulled model differs (%v)", err)
			}
		})
	}

	t.Run("plain artifact with a preference", func(t *testing.T) {
		// WithVariant does not change how a single artifact resolves.
		res, err := Inspect(ctx, ix.Variants[1].Ref.String(), WithVariant(Preference{Providers: []string{"cuda"}}))
		if err != nil || res.Index != nil || res.Config.Precision != artifact.PrecisionINT8 {
			t.Fatalf("Inspect(variant digest): %+v, %v", res, err)
		}
	})
}

func TestPushVariantsRejects(t *testing.T) {
	ctx := context.Background()
	host := newRegistry(t)
	b := []byte("model")
	tests := []struct {
		name     string
		variants []Artifact
		want     string
	}{
		{"none", nil, "0 variants"},
		{"two versions", []Artifact{variantArtifact("1", artifact.PrecisionFP32, nil, b), variantArtifact("2", artifact.PrecisionINT8, nil, b)}, "one model version"},
		{"same kind twice", []Artifact{variantArtifact("1", artifact.PrecisionINT8, nil, b), variantArtifact("1", artifact.PrecisionINT8, []string{"cpu"}, b)}, "both int8 for cpu"},
		{"bad precision", []Artifact{variantArtifact("1", "int4", nil, b)}, "precision"},
		{"bad provider", []Artifact{variantArtifact("1", artifact.PrecisionFP32, []string{"CUDA"}, b)}, "execution provider"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ref := host + "/models/bad:" + strings.ReplaceAll(tc.name, " ", "-")
			_, err := PushVariants(ctx, ref, tc.variants)
			if !errors.Is(err, artifact.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrInvalid mentioning %q", err, tc.want)
			}
			// Nothing was published under the tag.
			if _, err := Resolve(ctx, ref, fastRetry); !errors.Is(err, ErrNotFound) {
				t.Fatalf("tag exists after a refused push: %v", err)
			}
		})
	}
}

// TestVariantIndexMismatch checks that a variant whose config contradicts
// its index entry is refused.
func TestVariantIndexMismatch(t *testing.T) {
	ctx := context.Background()
	host := newRegistry(t)
	repo, err := NewRepository(host + "/models/digits")
	if err != nil {
		t.Fatal(err)
	}
	fp32, err := repo.pushArtifact(ctx, "", variantArtifact("7", artifact.PrecisionFP32, nil, []byte("fp32 model")))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		annotations map[string]string
		index       map[string]string
		want        string
	}{
		{"precision", map[string]string{artifact.AnnotationPrecision: "int8", artifact.AnnotationProviders: "cpu"}, nil, "index says int8"},
		{"version", map[string]string{artifact.AnnotationPrecision: "fp32", artifact.AnnotationProviders: "cpu"},
			map[string]string{artifact.AnnotationModelName: "digits", artifact.AnnotationModelVersion: "8"}, "index says digits version 8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			entry := fp32
			entry.ArtifactType, entry.Annotations = artifact.ArtifactType, tc.annotations
			ix, err := artifact.NewIndex([]v1.Descriptor{entry}, tc.index)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := json.Marshal(ix)
			if _, err := repo.PutManifest(ctx, tc.name, raw, artifact.IndexMediaType); err != nil {
				t.Fatal(err)
			}
			_, err = Inspect(ctx, host+"/models/digits:"+tc.name, WithVariant(Preference{}))
			if !errors.Is(err, artifact.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrInvalid mentioning %q", err, tc.want)
			}
		})
	}
}

func mustDirSink(t *testing.T) *DirSink {
	t.Helper()
	s, err := NewDirSink(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}
