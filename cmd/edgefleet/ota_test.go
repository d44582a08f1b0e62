//go:build !agentonly

package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/spf13/cobra"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/agent/cache"
	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/agent/update"
	"github.com/edgefleet/edgefleet/ota/artifact"
	"github.com/edgefleet/edgefleet/quantize"
)

func otaFixture(name string) string {
	return filepath.Join("..", "..", "agent", "testdata", "update", name)
}

func startTestRegistry(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.WithBlobHandler(registry.NewDiskBlobHandler(t.TempDir())),
		registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// runCLI runs the OTA commands as `edgefleet model …` / `edgefleet agent …`
// and returns what they printed.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	g := &globalFlags{logLevel: "error"}
	root := &cobra.Command{Use: "edgefleet", SilenceUsage: true, SilenceErrors: true}
	model := &cobra.Command{Use: "model"}
	model.AddCommand(newOTAModelCmds(g)...)
	ag := &cobra.Command{Use: "agent"}
	ag.AddCommand(newAgentUpdateCmds(g)...)
	root.AddCommand(model, ag)
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runCLI(t, args...)
	if err != nil {
		t.Fatalf("edgefleet %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func TestModelPushInspectPull(t *testing.T) {
	initORT(t)
	host := startTestRegistry(t)
	dir := t.TempDir()
	labels := filepath.Join(dir, "labels.txt")
	if err := os.WriteFile(labels, []byte("two\nthree\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ref := host + "/models/scale:1"
	out := mustCLI(t, "model", "push", "--name", "scale", "--file", labels, "--label", "team=edge", otaFixture("scale2.onnx"), ref)
	if !strings.Contains(out, "pushed scale version 1") || !strings.Contains(out, "@sha256:") {
		t.Fatalf("push output:\n%s", out)
	}
	digestRef := strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:])

	out = mustCLI(t, "model", "inspect", ref)
	for _, want := range []string{"scale version 1 (fp32)", "Input:", "x FP32 [-1 4]", "Golden vector:  1 inputs, 1 outputs",
		"scale2.onnx", "labels.txt", "team=edge", digestRef} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
	out = mustCLI(t, "model", "inspect", "--json", ref)
	var doc struct {
		Ref      string
		Manifest struct{ ArtifactType string }
		Config   artifact.Config
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Ref != digestRef || doc.Manifest.ArtifactType != artifact.ArtifactType || doc.Config.Golden == nil {
		t.Fatalf("inspect --json: %+v", doc)
	}

	// go-containerregistry's crane lists and pulls what edgefleet pushed.
	tags, err := crane.ListTags(host+"/models/scale", crane.Insecure)
	if err != nil || !slices.Contains(tags, "1") {
		t.Fatalf("crane.ListTags = %v, %v", tags, err)
	}
	raw, err := crane.Manifest(ref, crane.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	m, err := artifact.ParseManifest(raw)
	if err != nil {
		t.Fatal(err)
	}
	onnx, _ := os.ReadFile(otaFixture("scale2.onnx"))
	l, err := crane.PullLayer(host+"/models/scale@"+m.Layers[0].Digest.String(), crane.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, onnx) || artifact.Title(m.Layers[0]) != "scale2.onnx" {
		t.Fatalf("crane pulled %d bytes titled %q; want the pushed model", len(got), artifact.Title(m.Layers[0]))
	}

	// ORAS-style pull: every file under its title.
	outDir := filepath.Join(dir, "out")
	mustCLI(t, "model", "pull", "--blob-cache", filepath.Join(dir, "blobs"), "--out", outDir, ref)
	for name, want := range map[string][]byte{"scale2.onnx": onnx, "labels.txt": []byte("two\nthree\n")} {
		if b, err := os.ReadFile(filepath.Join(outDir, name)); err != nil || !bytes.Equal(b, want) {
			t.Errorf("pulled %s: %v (%d bytes)", name, err, len(b))
		}
	}
	if b, err := os.ReadFile(filepath.Join(outDir, "config.json")); err != nil || !json.Valid(b) {
		t.Errorf("pulled config.json: %v", err)
	}

	// Into an agent's cache, not activated.
	data := filepath.Join(dir, "data")
	out = mustCLI(t, "model", "pull", "--data", data, ref)
	if !strings.Contains(out, "cached scale version 1") {
		t.Fatalf("pull --data output:\n%s", out)
	}
	c, err := cache.Open(filepath.Join(data, agent.CacheFile), cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := c.Version("scale", "1")
	act, _ := c.Active("scale")
	c.Close()
	if err != nil || rec.Digest != cache.DigestOf(onnx) || act != "" {
		t.Fatalf("cached version: %+v, %v, active %q", rec, err, act)
	}
}

func TestModelPushGoldenInput(t *testing.T) {
	initORT(t)
	host := startTestRegistry(t)
	in := filepath.Join(t.TempDir(), "in.json")
	if err := os.WriteFile(in, []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[2,4],"data":[[1,2,3,4],[5,6,7,8]]}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	ref := host + "/models/m:latest"
	mustCLI(t, "model", "push", "--name", "m", "--version", "3", "--golden-input", in, "--tolerance", "abs=0.5,rel=0", otaFixture("scale3.onnx"), ref)
	out := mustCLI(t, "model", "inspect", "--json", ref)
	var doc struct{ Config artifact.Config }
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	g := doc.Config.Golden
	if doc.Config.Version != "3" || g == nil || g.Tolerance != (artifact.Tolerance{Abs: 0.5}) || !slices.Equal(g.Outputs[0].Shape, []int64{2, 4}) {
		t.Fatalf("config: %+v golden %+v", doc.Config, g)
	}
	want := &artifact.GoldenTensor{Name: "y", Datatype: "FP32", Shape: []int64{2, 4}, Data: f32le(3, 6, 9, 12, 15, 18, 21, 24)}
	if err := (artifact.Tolerance{}).Compare(want, g.Outputs[0].Data); err != nil {
		t.Fatalf("golden output is not 3x: %v", err)
	}
}

// TestModelPushTolerance: both zero means an exact match (ota/SPEC.md
// section 3.1), an unset flag the default; what was asked for is what the
// artifact carries.
func TestModelPushTolerance(t *testing.T) {
	initORT(t)
	host := startTestRegistry(t)
	tests := []struct {
		flag []string
		want artifact.Tolerance
	}{
		{[]string{"--tolerance", "abs=0,rel=0"}, artifact.Tolerance{}},
		{[]string{"--tolerance", "0"}, artifact.Tolerance{}},
		{nil, update.DefaultTolerance},
		{[]string{"--tolerance", "abs=1e-3,rel=0.01"}, artifact.Tolerance{Abs: 1e-3, Rel: 0.01}},
	}
	for i, tt := range tests {
		t.Run(strings.Join(append([]string{"flag"}, tt.flag...), " "), func(t *testing.T) {
			ref := fmt.Sprintf("%s/models/tol:%d", host, i+1)
			mustCLI(t, append(append([]string{"model", "push", "--name", "tol"}, tt.flag...), otaFixture("scale3.onnx"), ref)...)
			var doc struct{ Config artifact.Config }
			if err := json.Unmarshal([]byte(mustCLI(t, "model", "inspect", "--json", ref)), &doc); err != nil {
				t.Fatal(err)
			}
			if g := doc.Config.Golden; g == nil || g.Tolerance != tt.want {
				t.Fatalf("golden %+v: want tolerance %+v", g, tt.want)
			}
		})
	}
}

func f32le(vs ...float32) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

func TestModelSignVerify(t *testing.T) {
	initORT(t)
	host := startTestRegistry(t)
	dir := t.TempDir()
	ref := host + "/models/m:1"
	mustCLI(t, "model", "push", "--name", "m", otaFixture("scale2.onnx"), ref)
	mustCLI(t, "model", "keygen", "--out", filepath.Join(dir, "a"))
	mustCLI(t, "model", "keygen", "--out", filepath.Join(dir, "b"))
	if _, err := runCLI(t, "model", "keygen", "--out", filepath.Join(dir, "a")); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("keygen over existing files: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "a.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key file: %v %v", fi.Mode(), err)
	}
	if _, err := runCLI(t, "model", "verify", ref, "--key", filepath.Join(dir, "a.pub")); err == nil || !strings.Contains(err.Error(), "no signature") {
		t.Fatalf("verify unsigned: %v", err)
	}
	out := mustCLI(t, "model", "sign", ref, "--key", filepath.Join(dir, "a.key"))
	if !strings.Contains(out, "signed ") || !strings.Contains(out, ".sig") {
		t.Fatalf("sign output:\n%s", out)
	}
	out = mustCLI(t, "model", "verify", ref, "--key", filepath.Join(dir, "b.pub"), "--key", filepath.Join(dir, "a.pub"))
	if !strings.Contains(out, "verified "+host+"/models/m@sha256:") {
		t.Fatalf("verify output:\n%s", out)
	}
	if _, err := runCLI(t, "model", "verify", ref, "--key", filepath.Join(dir, "b.pub")); err == nil || !strings.Contains(err.Error(), "no valid signature") {
		t.Fatalf("verify with the wrong key: %v", err)
	}
}

func TestOTACommandErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"push without version", []string{"model", "push", otaFixture("scale2.onnx"), "localhost:1/m:latest"}, "--version is required"},
		{"push bad tolerance", []string{"model", "push", "--version", "1", "--tolerance", "abs=x", otaFixture("scale2.onnx"), "localhost:1/m:1"}, "--tolerance"},
		{"push bad label", []string{"model", "push", "--version", "1", "--label", "nokey", otaFixture("scale2.onnx"), "localhost:1/m:1"}, "want key=value"},
		{"push bad reference", []string{"model", "push", otaFixture("scale2.onnx"), "Not A Ref"}, "reference"},
		{"pull without destination", []string{"model", "pull", "localhost:1/m:1"}, "exactly one of --out"},
		{"sign without key", []string{"model", "sign", "localhost:1/m:1"}, "--key is required"},
		{"verify without key", []string{"model", "verify", "localhost:1/m:1"}, "--key is required"},
		{"update needs two args", []string{"agent", "update", "m"}, "accepts 2 arg"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := runCLI(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestAgentUpdateCommands(t *testing.T) {
	initORT(t)
	host := startTestRegistry(t)
	mustCLI(t, "model", "push", "--name", "m", otaFixture("scale2.onnx"), host+"/models/m:1")
	mustCLI(t, "model", "push", "--name", "m", otaFixture("scale3.onnx"), host+"/models/m:2")
	cfg := config.Config{Data: t.TempDir(), HTTP: "127.0.0.1:0", GRPC: "off"}
	cfg.Update.Watch.Window = -1
	a, err := agent.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-a.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("agent not ready")
	}
	addr := "http://" + a.Addr("http").String()

	out := mustCLI(t, "agent", "update", "--agent", addr, "m", host+"/models/m:1")
	if !strings.Contains(out, "m version 1 is active") {
		t.Fatalf("update output:\n%s", out)
	}
	if _, err := runCLI(t, "agent", "rollback", "--agent", addr, "m"); err == nil || !strings.Contains(err.Error(), "no previous version") {
		t.Fatalf("rollback without previous: %v", err)
	}
	out = mustCLI(t, "agent", "update", "--agent", addr, "m", host+"/models/m:2")
	if !strings.Contains(out, "m version 2 is active") || !strings.Contains(out, "previous version 1") {
		t.Fatalf("update output:\n%s", out)
	}
	if _, err := runCLI(t, "agent", "update", "--agent", addr, "m", host+"/models/m:1"); err == nil || !strings.Contains(err.Error(), "HTTP 409") {
		t.Fatalf("downgrade without --allow-rollback: %v", err)
	}
	out = mustCLI(t, "agent", "rollback", "--agent", addr, "m")
	if !strings.Contains(out, "m version 1 is active; version 2 is the previous one") {
		t.Fatalf("rollback output:\n%s", out)
	}
	out = mustCLI(t, "agent", "update-status", "--agent", addr)
	if !strings.Contains(out, "MODEL") || !strings.Contains(out, "rolled-back 2") {
		t.Fatalf("update-status output:\n%s", out)
	}
	out = mustCLI(t, "agent", "update-status", "--agent", addr, "--json", "m")
	if !strings.Contains(out, `"active": "1"`) {
		t.Fatalf("update-status --json:\n%s", out)
	}
}

func TestModelPushVariants(t *testing.T) {
	initORT(t)
	host := startTestRegistry(t)
	dir := t.TempDir()
	fp32File := filepath.Join("..", "..", "agent", "testdata", "digits", "cnn.onnx")
	fp32, err := os.ReadFile(fp32File)
	if err != nil {
		t.Fatal(err)
	}
	// An INT8 variant and the report edgefleet quantize --report writes.
	int8, rep, err := quantize.Dynamic(context.Background(), fp32, quantize.Options{})
	if err != nil {
		t.Fatal(err)
	}
	int8File, reportFile := filepath.Join(dir, "cnn.int8.onnx"), filepath.Join(dir, "int8.report.json")
	report, _ := json.Marshal(quantizeResult{Report: rep, Precision: rep.ArtifactPrecision(), Quantization: rep.ArtifactQuantization()})
	if err := os.WriteFile(int8File, int8, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(reportFile, report, 0o644); err != nil {
		t.Fatal(err)
	}
	ref := host + "/models/digits:4"
	out := mustCLI(t, "model", "push", "--name", "digits", "--variant", fp32File+":fp32", "--variant", int8File+":"+reportFile, ref)
	for _, want := range []string{"pushed digits version 4: 2 variants", "fp32       cuda,tensorrt,cpu", "int8       cpu", "@sha256:"} {
		if !strings.Contains(out, want) {
			t.Errorf("push output lacks %q:\n%s", want, out)
		}
	}
	out = mustCLI(t, "model", "inspect", ref)
	if !strings.Contains(out, "digits version 4, 2 variants") || !strings.Contains(out, "int8       cpu") {
		t.Errorf("inspect of the index:\n%s", out)
	}

	tests := []struct {
		providers string
		want      artifact.Precision
		method    string
		model     []byte
	}{
		{"cpu", artifact.PrecisionINT8, "dynamic", int8},
		{"cuda,cpu", artifact.PrecisionFP32, "", fp32},
	}
	for _, tc := range tests {
		t.Run(tc.providers, func(t *testing.T) {
			out := mustCLI(t, "model", "inspect", "--json", "--providers", tc.providers, ref)
			var doc struct{ Config artifact.Config }
			if err := json.Unmarshal([]byte(out), &doc); err != nil {
				t.Fatal(err)
			}
			method := ""
			if q := doc.Config.Quantization; q != nil {
				method = q.Method
			}
			if doc.Config.Precision != tc.want || method != tc.method || doc.Config.Golden == nil {
				t.Fatalf("variant for %s: precision %s, quantization %q; want %s, %q", tc.providers, doc.Config.Precision, method, tc.want, tc.method)
			}
			outDir := filepath.Join(dir, "out-"+tc.providers)
			mustCLI(t, "model", "pull", "--providers", tc.providers, "--blob-cache", filepath.Join(dir, "blobs"), "--out", outDir, ref)
			title := "cnn.onnx"
			if tc.want == artifact.PrecisionINT8 {
				title = "cnn.int8.onnx"
			}
			if b, err := os.ReadFile(filepath.Join(outDir, title)); err != nil || !bytes.Equal(b, tc.model) {
				t.Fatalf("pulled %s: %v (%d bytes)", title, err, len(b))
			}
		})
	}

	bad := []struct {
		name string
		args []string
		want string
	}{
		{"unknown precision", []string{"model", "push", "--name", "d", "--variant", fp32File + ":int4", ref}, "neither a precision"},
		{"not a report", []string{"model", "push", "--name", "d", "--variant", fp32File + ":" + fp32File + ".json", ref}, "no such file"},
		{"file and variants", []string{"model", "push", "--variant", fp32File, fp32File, ref}, "accepts 1 arg"},
		{"same precision twice", []string{"model", "push", "--name", "d", "--variant", fp32File, "--variant", fp32File, ref}, "both fp32"},
		{"index without a preference", []string{"model", "pull", "--out", filepath.Join(dir, "x"), ref}, "variant index"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runCLI(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error mentioning %q\n%s", err, tc.want, out)
			}
		})
	}
}
