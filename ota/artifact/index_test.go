package artifact

import (
	"errors"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestParseIndex(t *testing.T) {
	const (
		d1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
		d2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	)
	entry := func(d, prec, eps string) string {
		return `{"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.edgefleet.model.v1","size":700,"digest":"` + d +
			`","annotations":{"org.edgefleet.model.precision":"` + prec + `","org.edgefleet.model.providers":"` + eps + `"}}`
	}
	index := func(artifactType string, entries ...string) string {
		return `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","artifactType":"` + artifactType +
			`","manifests":[` + strings.Join(entries, ",") + `]}`
	}
	tests := []struct {
		name string
		raw  string
		want string // "" = valid
	}{
		{"valid", index(ArtifactType, entry(d1, "fp32", "cuda,tensorrt,cpu"), entry(d2, "int8", "cpu")), ""},
		{"wrong artifactType", index("application/x", entry(d1, "fp32", "cpu")), "artifactType"},
		{"no manifests", index(ArtifactType), "0 manifests"},
		{"bad precision", index(ArtifactType, entry(d1, "int4", "cpu")), "precision"},
		{"no providers", index(ArtifactType, entry(d1, "fp32", "")), "no execution providers"},
		{"bad provider", index(ArtifactType, entry(d1, "fp32", "CPU")), "lower case"},
		{"provider twice", index(ArtifactType, entry(d1, "fp32", "cpu,cpu")), "listed twice"},
		{"digest twice", index(ArtifactType, entry(d1, "fp32", "cuda"), entry(d1, "int8", "cpu")), "listed twice"},
		{"same kind twice", index(ArtifactType, entry(d1, "int8", "cpu"), entry(d2, "int8", "cpu")), "second int8 variant"},
		{"child is an index", strings.Replace(index(ArtifactType, entry(d1, "fp32", "cpu")), "manifest.v1", "index.v1", 1), "mediaType"},
		{"trailing data", index(ArtifactType, entry(d1, "fp32", "cpu")) + "{}", "trailing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ix, err := ParseIndex([]byte(tc.raw))
			if tc.want == "" {
				if err != nil || len(ix.Manifests) != 2 {
					t.Fatalf("ParseIndex: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrInvalid mentioning %q", err, tc.want)
			}
		})
	}
}

func TestDefaultProviders(t *testing.T) {
	tests := []struct {
		p    Precision
		want string
	}{{PrecisionINT8, "cpu"}, {PrecisionUINT8, "cpu"}, {PrecisionMixed, "cpu"}, {PrecisionFP32, "cuda,tensorrt,cpu"}, {PrecisionFP16, "cuda,tensorrt,cpu"}}
	for _, tc := range tests {
		if got := strings.Join(DefaultProviders(tc.p), ","); got != tc.want {
			t.Errorf("DefaultProviders(%s) = %s, want %s", tc.p, got, tc.want)
		}
	}
	if _, err := NewIndex([]v1.Descriptor{}, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("NewIndex with no entries: %v", err)
	}
}
