package ota

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/crane"

	"github.com/edgefleet/edgefleet/deploy/testenv"
	"github.com/edgefleet/edgefleet/ota/artifact"
)

// TestDistributionRegistry runs push, inspect, crane listing and a resumed
// pull against Debian's docker-registry (CNCF Distribution 2.8), whose
// Range handling is net/http's, not go-containerregistry's.
func TestDistributionRegistry(t *testing.T) {
	ctx := context.Background()
	host := testenv.Distribution(t)
	ta := newTestArtifact(t, "5", 3<<20)
	ref := host + "/models/digits:5"
	dig, err := Push(ctx, ref, ta.art, WithLogger(testLogger(t)))
	if err != nil {
		t.Fatalf("Push to docker-registry: %v", err)
	}
	tags, err := crane.ListTags(host + "/models/digits")
	if err != nil || len(tags) != 1 || tags[0] != "5" {
		t.Errorf("crane.ListTags = %v, %v", tags, err)
	}
	res, err := Inspect(ctx, ref)
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	if res.Ref != dig || res.Manifest.ArtifactType != artifact.ArtifactType {
		t.Errorf("Inspect: %s %q", res.Ref, res.Manifest.ArtifactType)
	}

	proxy := newFaultProxy(t, host)
	model := res.Model()
	cut := model.Size / 2
	proxy.setRule(func(r *http.Request, nth int) fault {
		if strings.HasSuffix(r.URL.Path, model.Digest.String()) && nth == 0 {
			return fault{flipAt: -1, cutAfter: cut}
		}
		return noFault
	})
	sink, err := NewDirSink(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	res2, err := Pull(ctx, proxy.host()+"/models/digits:5", sink, fastRetry)
	if err != nil {
		t.Fatalf("Pull through a cut: %v", err)
	}
	want := fmt.Sprintf("bytes=%d-%d", cut, model.Size-1)
	if reqs := proxy.requests(model.Digest.String()); len(reqs) != 2 || !strings.HasSuffix(reqs[1], want) {
		t.Errorf("model requests %q, want a resume with %s", reqs, want)
	}
	for _, l := range res2.Manifest.Layers {
		f, err := sink.Open(l.Digest)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		b.ReadFrom(f)
		f.Close()
		if !bytes.Equal(b.Bytes(), ta.files[artifact.Title(l)]) {
			t.Errorf("layer %q differs", artifact.Title(l))
		}
	}
}

// TestDistributionVariants pushes a variant index to docker-registry, which
// checks that an index's entries exist, and selects a variant from it.
func TestDistributionVariants(t *testing.T) {
	ctx := context.Background()
	host := testenv.Distribution(t)
	ref := host + "/models/digits:6"
	fp32, int8 := randomBytes(t, 30000), randomBytes(t, 9000)
	dig, err := PushVariants(ctx, ref, []Artifact{
		variantArtifact("6", artifact.PrecisionFP32, nil, fp32),
		variantArtifact("6", artifact.PrecisionINT8, nil, int8),
	}, WithLogger(testLogger(t)))
	if err != nil {
		t.Fatalf("PushVariants to docker-registry: %v", err)
	}
	sink := mustDirSink(t)
	res, err := Pull(ctx, ref, sink, WithVariant(Preference{Providers: []string{"cpu"}}))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(sink.Path(res.Model().Digest))
	if err != nil || res.Index.Ref != dig || res.Config.Precision != artifact.PrecisionINT8 || !bytes.Equal(b, int8) {
		t.Fatalf("pulled %s (%s) from %s (%v); want the int8 variant of %s", res.Ref, res.Config.Precision, res.Index.Ref, err, dig)
	}
}
