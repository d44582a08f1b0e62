package agent_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/agent/grpcapi/inferencepb"
	"github.com/edgefleet/edgefleet/agent/internal/testenv"
	"github.com/edgefleet/edgefleet/agent/models"
)

func index(t *testing.T, r *running) map[string]string {
	t.Helper()
	resp, err := r.grpc.Client.RepositoryIndex(context.Background(), &inferencepb.RepositoryIndexRequest{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, m := range resp.GetModels() {
		out[m.GetName()+"/"+m.GetVersion()] = m.GetState()
	}
	return out
}

func fileParam(version string, b []byte) map[string]*inferencepb.ModelRepositoryParameter {
	key := "file:model.onnx"
	if version != "" {
		key = "file:" + version + "/model.onnx"
	}
	return map[string]*inferencepb.ModelRepositoryParameter{key: {ParameterChoice: &inferencepb.ModelRepositoryParameter_BytesParam{BytesParam: b}}}
}

func TestRepositoryOverGRPC(t *testing.T) {
	silero := testenv.Model(t, "silero_vad_op18_ifless.onnx")
	r := startAgent(t, config.Config{}, map[string][]byte{"silero": silero})
	ctx := context.Background()
	if got := index(t, r); got["silero/1"] != "READY" || len(got) != 1 {
		t.Fatalf("index = %v", got)
	}
	// Load a new model with its bytes in the request, as Triton clients do.
	id := testenv.Fixture(t, "dtypes/identity_all.onnx")
	if _, err := r.grpc.Client.RepositoryModelLoad(ctx, &inferencepb.RepositoryModelLoadRequest{
		ModelName: "id", Parameters: fileParam("7", id)}); err != nil {
		t.Fatal(err)
	}
	if got := index(t, r); got["id/7"] != "READY" {
		t.Fatalf("index after load = %v", got)
	}
	if ok, err := r.a.Models().ModelReady("id", "7"); !ok || err != nil {
		t.Fatalf("id/7 not ready: %v", err)
	}
	// A second version replaces the first under the default latest-1 policy.
	if _, err := r.grpc.Client.RepositoryModelLoad(ctx, &inferencepb.RepositoryModelLoadRequest{
		ModelName: "id", Parameters: fileParam("", id)}); err != nil {
		t.Fatal(err)
	}
	if got := index(t, r); got["id/8"] != "READY" || got["id/7"] != "UNAVAILABLE" {
		t.Fatalf("index after second load = %v", got)
	}
	// Unload keeps the cache: the index lists the version as UNAVAILABLE.
	if _, err := r.grpc.Client.RepositoryModelUnload(ctx, &inferencepb.RepositoryModelUnloadRequest{ModelName: "silero"}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.infer(ctx, "grpc-raw", "silero", "", sileroRequest(1)); status.Code(err) != codes.NotFound {
		t.Fatalf("infer after unload: %v", err)
	}
	if got := index(t, r); got["silero/1"] != "UNAVAILABLE" {
		t.Fatalf("index after unload = %v", got)
	}
	ready, err := r.grpc.Client.RepositoryIndex(ctx, &inferencepb.RepositoryIndexRequest{Ready: true})
	if err != nil || len(ready.GetModels()) != 1 {
		t.Fatalf("ready-only index = %v, %v", ready, err)
	}
	// Reload from the cache without bytes.
	if _, err := r.grpc.Client.RepositoryModelLoad(ctx, &inferencepb.RepositoryModelLoadRequest{ModelName: "silero"}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.infer(ctx, "grpc-raw", "silero", "", sileroRequest(1)); err != nil {
		t.Fatalf("infer after reload: %v", err)
	}
	// Bad loads are client errors and change nothing.
	for _, tc := range []struct {
		req  *inferencepb.RepositoryModelLoadRequest
		code codes.Code
	}{
		{&inferencepb.RepositoryModelLoadRequest{ModelName: "nope"}, codes.NotFound},
		{&inferencepb.RepositoryModelLoadRequest{ModelName: "bad", Parameters: fileParam("", []byte("not onnx"))}, codes.InvalidArgument},
		{&inferencepb.RepositoryModelLoadRequest{ModelName: "id", Parameters: fileParam("8", id)}, codes.InvalidArgument},
		{&inferencepb.RepositoryModelLoadRequest{ModelName: "../x", Parameters: fileParam("", id)}, codes.InvalidArgument},
	} {
		if _, err := r.grpc.Client.RepositoryModelLoad(ctx, tc.req); status.Code(err) != tc.code {
			t.Errorf("load %s: %v, want %v", tc.req.GetModelName(), err, tc.code)
		}
	}
}

// TestHotSwapUnderLoad loads new versions while requests flow: none fails,
// and requests move to the new version.
func TestHotSwapUnderLoad(t *testing.T) {
	cnn := testenv.Fixture(t, "digits/cnn.onnx")
	test := loadDigits(t, "test.csv")
	r := startAgent(t, config.Config{Defaults: models.Settings{Instances: 2}}, map[string][]byte{"digits-cnn": cnn})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	var newest atomic.Int64
	for w := range 4 {
		proto := protocols[w%len(protocols)]
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				got, err := r.infer(context.Background(), proto, "digits-cnn", "", test.batch(i%len(test.labels), 1))
				if err != nil {
					failed.Add(1)
					t.Errorf("%s: request failed during swap: %v", proto, err)
					return
				}
				ok.Add(1)
				if got.ModelVersion == "4" {
					newest.Add(1)
				}
			}
		})
	}
	for range 3 {
		if _, err := r.grpc.Client.RepositoryModelLoad(context.Background(), &inferencepb.RepositoryModelLoadRequest{
			ModelName: "digits-cnn", Parameters: fileParam("", cnn)}); err != nil {
			t.Fatal(err)
		}
	}
	// Let some requests reach the last version, then stop.
	for newest.Load() < 20 && failed.Load() == 0 {
		if _, err := r.infer(context.Background(), "grpc-raw", "digits-cnn", "", test.batch(0, 1)); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	wg.Wait()
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Fatalf("ok=%d failed=%d", ok.Load(), failed.Load())
	}
	if got := index(t, r); got["digits-cnn/4"] != "READY" || got["digits-cnn/1"] != "UNAVAILABLE" {
		t.Fatalf("index = %v", got)
	}
	t.Logf("%d requests, none failed, across 3 swaps", ok.Load())
}
