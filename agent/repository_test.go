package agent_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strings"
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

func TestRepositoryOverREST(t *testing.T) {
	r := startAgent(t, config.Config{}, map[string][]byte{"silero": testenv.Model(t, "silero_vad_op18_ifless.onnx")})
	base := r.rest.Base
	post := func(path, ctype string, body []byte) (int, string) {
		t.Helper()
		resp, err := http.Post(base+path, ctype, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	id := testenv.Fixture(t, "dtypes/identity_all.onnx")
	// The ONNX file as the body (what `edgefleet model import --agent` sends).
	if code, body := post("/v2/repository/models/id/load?version=3", "application/octet-stream", id); code != 200 {
		t.Fatalf("load octet-stream: %d %s", code, body)
	}
	// Triton's JSON form with base64 file content.
	tj := fmt.Sprintf(`{"parameters":{"file:5/model.onnx":%q}}`, base64.StdEncoding.EncodeToString(id))
	if code, body := post("/v2/repository/models/id/load", "application/json", []byte(tj)); code != 200 {
		t.Fatalf("load JSON: %d %s", code, body)
	}
	code, body := post("/v2/repository/index", "application/json", []byte(`{}`))
	if code != 200 || !strings.Contains(body, `{"name":"id","version":"5","state":"READY"}`) ||
		!strings.Contains(body, `"name":"id","version":"3","state":"UNAVAILABLE"`) {
		t.Fatalf("index: %d %s", code, body)
	}
	if code, body := post("/v2/repository/models/id/unload", "", nil); code != 200 {
		t.Fatalf("unload: %d %s", code, body)
	}
	code, body = post("/v2/repository/index", "application/json", []byte(`{"ready":true}`))
	if code != 200 || strings.Contains(body, `"id"`) || !strings.Contains(body, `"silero"`) {
		t.Fatalf("ready index after unload: %d %s", code, body)
	}
	for _, tc := range []struct {
		path, ctype, body string
		want              int
	}{
		{"/v2/repository/models/nope/load", "", "", 404},
		{"/v2/repository/models/x/load", "application/octet-stream", "garbage", 400},
		{"/v2/repository/models/x/load", "application/json", `{"parameters":{"file:1/model.onnx":"%%%"}}`, 400},
		{"/v2/repository/models/x/load", "application/json", `{`, 400},
		{"/v2/repository/models/nope/unload", "", "", 404},
	} {
		if code, body := post(tc.path, tc.ctype, []byte(tc.body)); code != tc.want || !strings.Contains(body, `"error"`) {
			t.Errorf("POST %s %q: %d %s, want %d with an error", tc.path, tc.body, code, body, tc.want)
		}
	}
}
