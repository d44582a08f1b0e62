package update_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/agent/cache"
	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/update"
	"github.com/edgefleet/edgefleet/deploy/testenv"
	"github.com/edgefleet/edgefleet/ota"
	"github.com/edgefleet/edgefleet/ota/artifact"
	"github.com/edgefleet/edgefleet/ota/signature"
)

func TestUpdateHappyPath(t *testing.T) {
	rs := startRegistry(t)
	ref1 := push(t, rs, "m", "1", fixture(t, "scale2.onnx"), nil)
	push(t, rs, "m", "2", fixture(t, "scale3.onnx"), nil)
	r := startAgent(t, t.TempDir(), nil)
	ctx := context.Background()

	// First install, by digest.
	res := mustUpdate(t, r, "m", ref1, update.UpdateOptions{})
	if res.Version != "1" || res.State != update.ResultActive || res.Previous != "" {
		t.Fatalf("first install: %+v", res)
	}
	if k, ver := r.scaleOf(t, "m"); k != 2 || ver != "1" {
		t.Fatalf("after first install: ×%g from version %s, want ×2 from 1", k, ver)
	}

	// Update by tag through the agent's HTTP API, as `edgefleet agent update` does.
	res, err := r.api.Update(ctx, "m", rs.host+"/models/m:2", update.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != "2" || res.Previous != "1" || res.State != update.ResultActive || !strings.Contains(res.Ref, "@sha256:") {
		t.Fatalf("update: %+v", res)
	}
	if k, ver := r.scaleOf(t, "m"); k != 3 || ver != "2" {
		t.Fatalf("after update: ×%g from version %s, want ×3 from 2", k, ver)
	}
	st, err := r.api.Status(ctx, "m")
	if err != nil {
		t.Fatal(err)
	}
	if st.Active != "2" || st.Previous != "1" || st.AcceptedMax != "2" || st.Pending != nil || st.Last == nil || st.Last.Result != update.ResultActive || st.ActiveRef != res.Ref {
		t.Fatalf("status: %+v (last %+v)", st, st.Last)
	}
	md, err := r.a.Models().ModelMetadata("m", "")
	if err != nil {
		t.Fatal(err)
	}
	if md.Parameters["source"] != res.Ref {
		t.Errorf("metadata source %q, want %q", md.Parameters["source"], res.Ref)
	}

	// The same artifact again is a no-op that downloads nothing.
	_, before := rs.stats()
	res, err = r.api.Update(ctx, "m", rs.host+"/models/m:2", update.UpdateOptions{})
	if err != nil || res.State != update.ResultAlreadyActive {
		t.Fatalf("repeated update: %+v, %v", res, err)
	}
	if _, after := rs.stats(); after-before > 2048 {
		t.Fatalf("repeated update downloaded %d blob bytes; want only the config", after-before)
	}
}

// TestUpdateFromDistribution runs updates against Debian's docker-registry.
func TestUpdateFromDistribution(t *testing.T) {
	rs := &registryServer{host: testenv.Distribution(t)}
	ref1 := push(t, rs, "m", "1", fixture(t, "scale2.onnx"), nil)
	push(t, rs, "m", "2", padModel(fixture(t, "scale3.onnx"), 256<<10), nil)
	r := startAgent(t, t.TempDir(), nil)
	mustUpdate(t, r, "m", ref1, update.UpdateOptions{})
	res := mustUpdate(t, r, "m", rs.host+"/models/m:2", update.UpdateOptions{})
	if res.Version != "2" || res.Previous != "1" {
		t.Fatalf("update: %+v", res)
	}
	if k, ver := r.scaleOf(t, "m"); k != 3 || ver != "2" {
		t.Fatalf("serving ×%g from %s", k, ver)
	}
}

func TestUpdateRefused(t *testing.T) {
	rs := startRegistry(t)
	scale2, scale3 := fixture(t, "scale2.onnx"), fixture(t, "scale3.onnx")
	ref1 := push(t, rs, "m", "1", scale2, nil)
	r := startAgent(t, t.TempDir(), func(c *config.Config) { c.Update.RequireGolden = true })
	mustUpdate(t, r, "m", ref1, update.UpdateOptions{})

	pushAs := func(tag string, model []byte, cfg *artifact.Config) string {
		d, err := ota.Push(context.Background(), rs.host+"/models/m:"+tag, ota.Artifact{Config: *cfg, Model: ota.BytesFile("m.onnx", model)})
		if err != nil {
			t.Fatal(err)
		}
		return d.String()
	}
	describe := func(model []byte, o update.DescribeOptions) *artifact.Config {
		if o.Name == "" {
			o.Name = "m"
		}
		o.Version = "2"
		cfg, err := update.Describe(model, o)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	tests := []struct {
		name   string
		ref    func() string
		reason string // in the error
		reject bool   // recorded as rejected
	}{
		{"golden mismatch", func() string { return pushAs("golden", scale3, describe(scale2, update.DescribeOptions{})) },
			"golden vector mismatch", true},
		{"no golden vector", func() string {
			return pushAs("nogolden", scale3, describe(scale3, update.DescribeOptions{NoGolden: true}))
		},
			"no golden test vector", true},
		{"model does not match config", func() string {
			cfg := describe(scale3, update.DescribeOptions{})
			cfg.Outputs = append(cfg.Outputs, artifact.TensorSpec{Name: "z", Datatype: "FP32", Shape: []int64{-1, 4}})
			return pushAs("specs", scale3, cfg)
		}, `output "z" is declared but the model has no such output`, true},
		{"other model's artifact", func() string { return pushAs("name", scale3, describe(scale3, update.DescribeOptions{Name: "other"})) },
			`the artifact is model "other"`, true},
		{"agent too old", func() string {
			return pushAs("minver", scale3, describe(scale3, update.DescribeOptions{MinAgentVersion: "99.0.0"}))
		}, "needs agent 99.0.0 or newer", true},
		{"not an onnx model", func() string {
			return pushAs("garbage", []byte("definitely not onnx"), describe(scale3, update.DescribeOptions{}))
		}, "not a model onnxruntime can load", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ref := tc.ref()
			_, err := r.api.Update(context.Background(), "m", ref, update.UpdateOptions{})
			var ae *update.APIError
			if !errors.As(err, &ae) || ae.Code != http.StatusUnprocessableEntity || !strings.Contains(ae.Message, tc.reason) {
				t.Fatalf("update: %v; want 422 containing %q", err, tc.reason)
			}
			if !errors.Is(err, update.ErrRefused) {
				t.Fatalf("update over HTTP: %v does not match ErrRefused", err)
			}
			if k, ver := r.scaleOf(t, "m"); k != 2 || ver != "1" {
				t.Fatalf("after refusal: ×%g from version %s; version 1 must keep serving", k, ver)
			}
			st := r.status(t, "m")
			if st.Active != "1" || st.Pending != nil || st.Last.Result != update.ResultRefused {
				t.Fatalf("status after refusal: %+v last %+v", st, st.Last)
			}
			if _, err := r.a.Models().ModelMetadata("m", "2"); err == nil {
				t.Fatal("refused version 2 is loaded")
			}
			if vs := cachedVersions(t, r, "m"); !slices.Equal(vs, []string{"1"}) {
				t.Fatalf("cached versions %v after refusal, want [1]", vs)
			}
			digest := ref[strings.Index(ref, "@")+1:]
			if _, ok := st.Rejected[digest]; ok != tc.reject {
				t.Fatalf("rejected[%s] present = %v, want %v", digest, ok, tc.reject)
			}
			// A rejected artifact is not retried unless forced.
			_, err = r.u.Update(context.Background(), "m", ref, update.UpdateOptions{})
			if !errors.Is(err, update.ErrRefused) || !strings.Contains(err.Error(), "refused or rolled back before") {
				t.Fatalf("second attempt: %v", err)
			}
		})
	}
}

// cachedVersions lists the model's cached versions through the agent's
// repository index.
func cachedVersions(t testing.TB, r *running, model string) []string {
	t.Helper()
	es, err := r.a.RepositoryIndex(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		if e.Name == model {
			out = append(out, e.Version)
		}
	}
	return out
}

func TestRollbackProtection(t *testing.T) {
	rs := startRegistry(t)
	scale2, scale3 := fixture(t, "scale2.onnx"), fixture(t, "scale3.onnx")
	ref1 := push(t, rs, "m", "1", scale2, nil)
	ref2 := push(t, rs, "m", "2", scale3, nil)
	ref3 := push(t, rs, "m", "3", padModel(scale2, 10), nil)
	r := startAgent(t, t.TempDir(), nil)
	ctx := context.Background()
	mustUpdate(t, r, "m", ref3, update.UpdateOptions{})

	_, err := r.u.Update(ctx, "m", ref2, update.UpdateOptions{})
	if !errors.Is(err, update.ErrOlderVersion) {
		t.Fatalf("update 3 → 2: %v, want ErrOlderVersion", err)
	}
	var ae *update.APIError
	if _, err := r.api.Update(ctx, "m", ref1, update.UpdateOptions{}); !errors.As(err, &ae) || ae.Code != http.StatusConflict ||
		!errors.Is(err, update.ErrOlderVersion) || errors.Is(err, update.ErrBusy) {
		t.Fatalf("update 3 → 1 over HTTP: %v, want 409 matching ErrOlderVersion (only)", err)
	}
	if st := r.status(t, "m"); st.Active != "3" || st.Last.Result != update.ResultRefused {
		t.Fatalf("status: %+v", st)
	}
	// Explicit rollback is allowed; the newest accepted version stays 3.
	res := mustUpdate(t, r, "m", ref2, update.UpdateOptions{AllowRollback: true})
	if res.Version != "2" || res.Previous != "3" {
		t.Fatalf("explicit rollback: %+v", res)
	}
	if k, ver := r.scaleOf(t, "m"); k != 3 || ver != "2" {
		t.Fatalf("after explicit rollback: ×%g from %s", k, ver)
	}
	if st := r.status(t, "m"); st.AcceptedMax != "3" {
		t.Fatalf("accepted_max = %q, want 3", st.AcceptedMax)
	}
	if _, err := r.u.Update(ctx, "m", ref1, update.UpdateOptions{}); !errors.Is(err, update.ErrOlderVersion) {
		t.Fatalf("update 2 → 1 without rollback: %v", err)
	}
	// A version number cannot be reused for other bytes.
	ref3b := push(t, rs, "m", "3", scale3, nil)
	if _, err := r.u.Update(ctx, "m", ref3b, update.UpdateOptions{}); !errors.Is(err, update.ErrConflict) {
		t.Fatalf("update to other bytes under version 3: %v, want ErrConflict", err)
	}
}

func TestSignedUpdates(t *testing.T) {
	rs := startRegistry(t)
	dir := t.TempDir()
	trusted, err := signature.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := signature.GenerateKey()
	pub, err := signature.MarshalPublicKeyPEM(&trusted.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "cosign.pub")
	if err := os.WriteFile(keyFile, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	ref1 := push(t, rs, "m", "1", fixture(t, "scale2.onnx"), nil)
	r := startAgent(t, filepath.Join(dir, "data"), func(c *config.Config) { c.Update.TrustKeys = []string{keyFile} })
	ctx := context.Background()

	if _, err := r.u.Update(ctx, "m", ref1, update.UpdateOptions{}); !errors.Is(err, update.ErrRefused) || !errors.Is(err, signature.ErrNoSignature) {
		t.Fatalf("unsigned: %v, want ErrRefused wrapping ErrNoSignature", err)
	}
	if _, err := signature.Sign(ctx, ref1, other); err != nil {
		t.Fatal(err)
	}
	if _, err := r.u.Update(ctx, "m", ref1, update.UpdateOptions{}); !errors.Is(err, update.ErrRefused) || !errors.Is(err, signature.ErrBadSignature) {
		t.Fatalf("signed by an untrusted key: %v, want ErrRefused wrapping ErrBadSignature", err)
	}
	if _, err := r.a.Models().ModelMetadata("m", ""); err == nil {
		t.Fatal("model served although its artifact was refused")
	}
	if _, err := signature.Sign(ctx, ref1, trusted); err != nil {
		t.Fatal(err)
	}
	// By tag: the agent resolves it, verifies the digest's signature and pulls by digest.
	res := mustUpdate(t, r, "m", rs.host+"/models/m:1", update.UpdateOptions{})
	if res.Version != "1" || res.Ref != ref1 {
		t.Fatalf("signed update: %+v, want version 1 from %s", res, ref1)
	}
	if k, _ := r.scaleOf(t, "m"); k != 2 {
		t.Fatalf("serving ×%g", k)
	}
}

func TestResumeCutDownload(t *testing.T) {
	rs := startRegistry(t)
	ref1 := push(t, rs, "m", "1", fixture(t, "scale2.onnx"), nil)
	big := padModel(fixture(t, "scale3.onnx"), 1<<20)
	ref2 := push(t, rs, "m", "2", big, nil)
	r := startAgent(t, t.TempDir(), nil)
	mustUpdate(t, r, "m", ref1, update.UpdateOptions{})

	// The registry answers 503 twice, then drops the model download after
	// 300 KiB: the pull retries and resumes with a range request.
	rs.set(func(rs *registryServer) { rs.cutAfter, rs.unavailble = 300<<10, 2 })
	_, before := rs.stats()
	res := mustUpdate(t, r, "m", ref2, update.UpdateOptions{Registry: []ota.Option{ota.WithChunkSize(64 << 10)}})
	if res.Version != "2" {
		t.Fatalf("%+v", res)
	}
	ranges, after := rs.stats()
	if len(ranges) == 0 || !strings.HasPrefix(ranges[len(ranges)-1], "bytes=") || strings.HasPrefix(ranges[len(ranges)-1], "bytes=0-") {
		t.Fatalf("range requests %q; want a resume from a non-zero offset", ranges)
	}
	if sent := after - before; sent > int64(len(big))+(64<<10)+4096 {
		t.Fatalf("%d blob bytes sent for a %d-byte model: the download restarted instead of resuming", sent, len(big))
	}
	if k, ver := r.scaleOf(t, "m"); k != 3 || ver != "2" {
		t.Fatalf("serving ×%g from %s", k, ver)
	}
}

func TestResumeAfterUpdaterRestart(t *testing.T) {
	rs := startRegistry(t)
	ref1 := push(t, rs, "m", "1", fixture(t, "scale2.onnx"), nil)
	big := padModel(fixture(t, "scale3.onnx"), 1<<20)
	ref2 := push(t, rs, "m", "2", big, nil)
	dir := t.TempDir()
	r := startAgent(t, dir, nil)
	mustUpdate(t, r, "m", ref1, update.UpdateOptions{})

	// Cancel the update after 5 stored chunks of 64 KiB, then stop the agent.
	ctx, cancel := context.WithCancel(context.Background())
	chunks := 0
	r.u.TestOnlySetHook(func(_, step string) {
		if step == "chunk" {
			if chunks++; chunks == 5 {
				cancel()
			}
		}
	})
	_, err := r.u.Update(ctx, "m", ref2, update.UpdateOptions{Registry: []ota.Option{ota.WithChunkSize(64 << 10), fastRetry}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled update: %v", err)
	}
	if st := r.status(t, "m"); st.Active != "1" || st.Pending != nil || st.Last.Result != update.ResultFailed {
		t.Fatalf("status after cancel: %+v last %+v", st, st.Last)
	}
	r.stop()

	r = startAgent(t, dir, nil)
	if k, ver := r.scaleOf(t, "m"); k != 2 || ver != "1" {
		t.Fatalf("after restart: ×%g from %s", k, ver)
	}
	_, before := rs.stats()
	mustUpdate(t, r, "m", ref2, update.UpdateOptions{Registry: []ota.Option{ota.WithChunkSize(64 << 10)}})
	ranges, after := rs.stats()
	if want := "bytes=327680-"; len(ranges) == 0 || !strings.HasPrefix(ranges[len(ranges)-1], want) {
		t.Fatalf("range requests %q, want the last to start with %q", ranges, want)
	}
	if sent := after - before; sent > int64(len(big))-(320<<10)+4096 {
		t.Fatalf("resumed pull sent %d bytes of a %d-byte model; want the missing part only", sent, len(big))
	}
	if k, ver := r.scaleOf(t, "m"); k != 3 || ver != "2" {
		t.Fatalf("after the resumed update: ×%g from %s", k, ver)
	}
}

// TestUpdateBudget refuses a download the cache budget cannot hold before
// fetching a byte of it.
func TestUpdateBudget(t *testing.T) {
	rs := startRegistry(t)
	ref1 := push(t, rs, "m", "1", fixture(t, "scale2.onnx"), nil)
	ref2 := push(t, rs, "m", "2", padModel(fixture(t, "scale3.onnx"), 1<<20), nil)
	r := startAgent(t, t.TempDir(), func(c *config.Config) { c.CacheBudget = 512 << 10 })
	mustUpdate(t, r, "m", ref1, update.UpdateOptions{})
	_, before := rs.stats()
	_, err := r.api.Update(context.Background(), "m", ref2, update.UpdateOptions{})
	var ae *update.APIError
	if !errors.As(err, &ae) || ae.Code != http.StatusInsufficientStorage || !strings.Contains(ae.Message, "budget") || !errors.Is(err, cache.ErrNoSpace) {
		t.Fatalf("update over budget: %v, want HTTP 507 matching cache.ErrNoSpace", err)
	}
	if _, after := rs.stats(); after-before > 4096 {
		t.Fatalf("%d blob bytes fetched before the budget check", after-before)
	}
	if k, ver := r.scaleOf(t, "m"); k != 2 || ver != "1" {
		t.Fatalf("serving ×%g from %s", k, ver)
	}
	if st := r.status(t, "m"); st.Last.Result != update.ResultFailed || st.Pending != nil {
		t.Fatalf("status: %+v", st.Last)
	}
}

func TestManualRollback(t *testing.T) {
	rs := startRegistry(t)
	ref1 := push(t, rs, "m", "1", fixture(t, "scale2.onnx"), nil)
	ref2 := push(t, rs, "m", "2", fixture(t, "scale3.onnx"), nil)
	r := startAgent(t, t.TempDir(), nil)
	ctx := context.Background()
	mustUpdate(t, r, "m", ref1, update.UpdateOptions{})

	var ae *update.APIError
	if _, err := r.api.Rollback(ctx, "m"); !errors.As(err, &ae) || ae.Code != http.StatusConflict || !errors.Is(err, update.ErrNoPrevious) {
		t.Fatalf("rollback without a previous version: %v, want 409 matching ErrNoPrevious", err)
	}
	if _, err := r.api.Rollback(ctx, "nope"); !errors.As(err, &ae) || ae.Code != http.StatusNotFound || !errors.Is(err, models.ErrNotFound) {
		t.Fatalf("rollback of an unknown model: %v, want 404 matching models.ErrNotFound", err)
	}
	mustUpdate(t, r, "m", ref2, update.UpdateOptions{})
	for i, want := range []struct {
		k        float32
		ver, prv string
	}{{2, "1", "2"}, {3, "2", "1"}} {
		res, err := r.api.Rollback(ctx, "m")
		if err != nil {
			t.Fatal(err)
		}
		if res.Version != want.ver || res.Previous != want.prv || res.State != update.ResultRolledBack {
			t.Fatalf("rollback %d: %+v", i, res)
		}
		if k, ver := r.scaleOf(t, "m"); k != want.k || ver != want.ver {
			t.Fatalf("rollback %d: ×%g from %s, want ×%g from %s", i, k, ver, want.k, want.ver)
		}
	}
	// A manual rollback keeps both versions and rejects nothing.
	if st := r.status(t, "m"); len(st.Rejected) != 0 || st.Active != "2" || st.Previous != "1" {
		t.Fatalf("status: %+v", st)
	}
}

func TestUpdateAPIErrors(t *testing.T) {
	r := startAgent(t, t.TempDir(), nil)
	ctx := context.Background()
	tests := []struct {
		name  string
		call  func() error
		code  int
		inMsg string
	}{
		{"bad model name", func() error {
			_, err := r.api.Update(ctx, "../x", "localhost:1/m:1", update.UpdateOptions{})
			return err
		}, http.StatusBadRequest, "model"},
		{"empty ref", func() error { _, err := r.api.Update(ctx, "m", " ", update.UpdateOptions{}); return err }, http.StatusBadRequest, "empty reference"},
		{"bad ref", func() error { _, err := r.api.Update(ctx, "m", "UPPER CASE/x::", update.UpdateOptions{}); return err }, http.StatusBadRequest, "reference"},
		{"unknown model status", func() error { _, err := r.api.Status(ctx, "nope"); return err }, http.StatusNotFound, "nope"},
		{"missing artifact", func() error {
			rs := startRegistry(t)
			_, err := r.api.Update(ctx, "m", rs.host+"/models/m:404", update.UpdateOptions{})
			return err
		}, http.StatusNotFound, "not found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var ae *update.APIError
			if err := tc.call(); !errors.As(err, &ae) || ae.Code != tc.code || !strings.Contains(ae.Message, tc.inMsg) {
				t.Fatalf("got %v; want HTTP %d containing %q", err, tc.code, tc.inMsg)
			}
		})
	}
	resp, err := http.Post("http://"+r.a.Addr("http").String()+"/v1/updates", "application/json", strings.NewReader("{bad json"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("malformed body: HTTP %d, want 400", resp.StatusCode)
	}
}

// Statuses lists every cached model and the cache stays consistent.
func TestStatusesAndCacheCheck(t *testing.T) {
	rs := startRegistry(t)
	ref := push(t, rs, "a", "1", fixture(t, "scale2.onnx"), nil)
	refB := push(t, rs, "b", "4", fixture(t, "scale3.onnx"), nil)
	dir := t.TempDir()
	r := startAgent(t, dir, nil)
	mustUpdate(t, r, "a", ref, update.UpdateOptions{})
	mustUpdate(t, r, "b", refB, update.UpdateOptions{})
	ss, err := r.api.Statuses(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range ss {
		got = append(got, s.Model+"="+s.Active)
	}
	if !slices.Equal(got, []string{"a=1", "b=4"}) {
		t.Fatalf("statuses %v", got)
	}
	r.stop()
	checkCache(t, dir)
}

// checkCache opens the agent's cache and checks it for consistency.
func checkCache(t testing.TB, dir string) map[string]map[string]string {
	t.Helper()
	c, err := cache.Open(filepath.Join(dir, agent.CacheFile), cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Check(context.Background()); err != nil {
		t.Fatalf("cache check: %v", err)
	}
	ms, err := c.Models()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]string{}
	for _, m := range ms {
		out[m.Name] = m.State
	}
	return out
}
