package update_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/agent/internal/testenv"
	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/update"
	"github.com/edgefleet/edgefleet/ota"
	"github.com/edgefleet/edgefleet/ota/artifact"
	"github.com/edgefleet/edgefleet/ota/signature"
	"github.com/edgefleet/edgefleet/quantize"
)

// TestVariantUpdates pushes the digits CNN as an FP32 and an INT8 variant
// (quantized here) behind one signed variant index; an agent serving on the
// CPU installs INT8, one configured for [cuda, cpu] installs FP32 (the CUDA
// session falls back to the CPU on a machine without a GPU; the selection
// is what counts). Only a signature over the index is accepted.
func TestVariantUpdates(t *testing.T) {
	testenv.InitORT(t)
	ctx := context.Background()
	rs := startRegistry(t)
	fp32 := testenv.Fixture(t, "digits/cnn.onnx")
	int8, rep, err := quantize.Dynamic(ctx, fp32, quantize.Options{})
	if err != nil {
		t.Fatalf("quantize: %v", err)
	}
	variant := func(model []byte, p artifact.Precision, q *artifact.Quantization) ota.Artifact {
		cfg, err := update.Describe(model, update.DescribeOptions{Name: "digits", Version: "1", Precision: p, Seed: 7})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Quantization = q
		return ota.Artifact{Config: *cfg, Model: ota.BytesFile("digits.onnx", model)}
	}
	tag := rs.host + "/models/digits:1"
	index, err := ota.PushVariants(ctx, tag, []ota.Artifact{
		variant(fp32, artifact.PrecisionFP32, nil),
		variant(int8, rep.ArtifactPrecision(), rep.ArtifactQuantization()),
	})
	if err != nil {
		t.Fatalf("push variants: %v", err)
	}
	ix, err := ota.InspectIndex(ctx, tag)
	if err != nil {
		t.Fatal(err)
	}
	digestOf := func(b []byte) string { h := sha256.Sum256(b); return "sha256:" + hex.EncodeToString(h[:]) }
	variantOf := map[artifact.Precision]string{} // precision → variant manifest digest
	for _, v := range ix.Variants {
		variantOf[v.Precision] = v.Ref.DigestStr()
	}

	dir := t.TempDir()
	key, err := signature.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := signature.MarshalPublicKeyPEM(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "cosign.pub")
	if err := os.WriteFile(keyFile, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	// A signature over a variant does not vouch for the index.
	if _, err := signature.Sign(ctx, ix.Variants[1].Ref.String(), key); err != nil {
		t.Fatal(err)
	}
	cpuAgent := startAgent(t, filepath.Join(dir, "cpu"), func(c *config.Config) { c.Update.TrustKeys = []string{keyFile} })
	if _, err := cpuAgent.u.Update(ctx, "digits", tag, update.UpdateOptions{}); !errors.Is(err, update.ErrRefused) || !errors.Is(err, signature.ErrNoSignature) {
		t.Fatalf("index without its own signature: %v, want ErrRefused wrapping ErrNoSignature", err)
	}
	// cosign signs what the tag points to: the index.
	if v, err := signature.Sign(ctx, tag, key); err != nil || v.Ref != index {
		t.Fatalf("sign %s: signed %v (%v), want the index %s", tag, v, err, index)
	}

	gpuAgent := startAgent(t, filepath.Join(dir, "gpu"), func(c *config.Config) {
		c.Update.TrustKeys = []string{keyFile}
		c.Models = map[string]models.Settings{"digits": {Providers: []string{"cuda", "cpu"}}}
	})
	tests := []struct {
		name  string
		r     *running
		want  artifact.Precision
		model []byte
	}{
		{"cpu", cpuAgent, artifact.PrecisionINT8, int8},
		{"cuda,cpu", gpuAgent, artifact.PrecisionFP32, fp32},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := mustUpdate(t, tc.r, "digits", tag, update.UpdateOptions{})
			if res.Version != "1" || res.Ref != index.String() || res.Digest != index.DigestStr() {
				t.Fatalf("result %+v: want version 1 from the index %s", res, index)
			}
			if res.Precision != string(tc.want) || res.Variant != variantOf[tc.want] {
				t.Fatalf("installed %s variant %s, want %s variant %s", res.Precision, res.Variant, tc.want, variantOf[tc.want])
			}
			st := tc.r.status(t, "digits")
			if st.Active != "1" || st.ActivePrecision != string(tc.want) || st.ActiveVariant != variantOf[tc.want] || st.ActiveRef != index.String() {
				t.Fatalf("status %+v", st)
			}
			md, err := tc.r.a.Models().ModelMetadata("digits", "")
			if err != nil {
				t.Fatal(err)
			}
			if md.Parameters["precision"] != string(tc.want) || md.Parameters["digest"] != digestOf(tc.model) {
				t.Fatalf("served parameters %v: want precision %s and the %s model's digest", md.Parameters, tc.want, tc.want)
			}
			// Asking again is a no-op that still reports the variant.
			again := mustUpdate(t, tc.r, "digits", tag, update.UpdateOptions{})
			if again.State != update.ResultAlreadyActive || again.Precision != string(tc.want) || again.Variant != variantOf[tc.want] {
				t.Fatalf("second update: %+v", again)
			}
		})
	}
}
