package sidecar_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/edgefleet/edgefleet/sidecar"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

func defaults() sidecar.Defaults {
	d := sidecar.DefaultDefaults()
	d.Image = "ghcr.io/edgefleet/agent:0.1.0"
	return d
}

// review wraps a pod (JSON) into an AdmissionReview request for a pod
// CREATE, as the API server sends it.
func review(t testing.TB, pod []byte, uid string) []byte {
	t.Helper()
	var meta struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
	}
	if err := json.Unmarshal(pod, &meta); err != nil {
		t.Fatal(err)
	}
	rev := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       types.UID(uid),
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: meta.Metadata.Namespace, Name: meta.Metadata.Name,
			Operation: admissionv1.Create,
			Object:    runtime.RawExtension{Raw: pod},
		},
	}
	b, err := json.Marshal(rev)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// post sends body to the handler and decodes the AdmissionReview answer.
func post(t testing.TB, h http.Handler, body []byte) *admissionv1.AdmissionReview {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, sidecar.MutatePath, bytes.NewReader(body)))
	if rec.Code != http.StatusOK {
		t.Fatalf("HTTP %d: %s", rec.Code, rec.Body)
	}
	var out admissionv1.AdmissionReview
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil {
		t.Fatal(err)
	}
	if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" || out.Response == nil {
		t.Fatalf("answer is not an admission.k8s.io/v1 AdmissionReview response: %+v", out)
	}
	return &out
}

// apply applies the response's JSON Patch to pod and strictly decodes the
// result into a corev1.Pod (an unknown field is an error).
func apply(t testing.TB, pod []byte, resp *admissionv1.AdmissionResponse) (*corev1.Pod, []byte) {
	t.Helper()
	out := pod
	if resp.Patch != nil {
		if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
			t.Fatalf("patchType %v, want JSONPatch", resp.PatchType)
		}
		p, err := jsonpatch.DecodePatch(resp.Patch)
		if err != nil {
			t.Fatalf("patch does not decode: %v\n%s", err, resp.Patch)
		}
		if out, err = p.Apply(pod); err != nil {
			t.Fatalf("patch does not apply: %v\n%s", err, resp.Patch)
		}
	}
	var p corev1.Pod
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("patched pod is not a corev1.Pod: %v\n%s", err, out)
	}
	return &p, out
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *updateGolden {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./sidecar -run %s -update)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func indent(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	if err := json.Indent(&buf, b, "", "  "); err != nil {
		t.Fatal(err)
	}
	buf.WriteByte('\n')
	return buf.Bytes()
}

func agentOf(t testing.TB, p *corev1.Pod) corev1.Container {
	t.Helper()
	var found []corev1.Container
	for _, c := range append(slices.Clone(p.Spec.InitContainers), p.Spec.Containers...) {
		if c.Name == sidecar.ContainerName {
			found = append(found, c)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d agent containers, want 1", len(found))
	}
	return found[0]
}

func envOf(c corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

// TestFixtures runs every pod in testdata/pods through the HTTP handler,
// applies the returned patch and compares the pod with its golden file;
// then reviews the patched pod again (a reinvoked webhook) and expects no
// change.
func TestFixtures(t *testing.T) {
	files, _ := filepath.Glob("testdata/pods/*.json")
	if len(files) == 0 {
		t.Fatal("no fixtures")
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		t.Run(name, func(t *testing.T) {
			pod, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			inj := sidecar.NewInjector(defaults(), nil, nil)
			uid := "uid-" + name
			out := post(t, inj, review(t, pod, uid))
			if string(out.Response.UID) != uid {
				t.Fatalf("uid %q not echoed (%q)", uid, out.Response.UID)
			}
			if !out.Response.Allowed {
				t.Fatalf("denied: %v", out.Response.Result)
			}
			p, patched := apply(t, pod, out.Response)
			golden(t, name+".json", indent(t, patched))
			if p.Labels[sidecar.InjectLabel] != "true" {
				if out.Response.Patch != nil {
					t.Fatal("a pod without the inject label was patched")
				}
				return
			}
			agent := agentOf(t, p)
			if p.Spec.InitContainers[0].Name != sidecar.ContainerName {
				t.Error("the agent is not the first init container")
			}
			if agent.RestartPolicy == nil || *agent.RestartPolicy != corev1.ContainerRestartPolicyAlways {
				t.Error("the agent is not a native sidecar (restartPolicy Always)")
			}
			if agent.StartupProbe == nil || agent.StartupProbe.HTTPGet == nil || agent.StartupProbe.HTTPGet.Path != "/v2/health/ready" {
				t.Errorf("startup probe %+v", agent.StartupProbe)
			}
			for _, c := range p.Spec.Containers {
				if _, ok := envOf(c, sidecar.EnvURL); !ok {
					t.Errorf("container %s has no %s", c.Name, sidecar.EnvURL)
				}
			}
			if p.Annotations[sidecar.AnnotationInjected] != "true" {
				t.Error("no injected annotation")
			}
			// Reinvocation: the patched pod comes back unchanged.
			again := post(t, inj, review(t, patched, uid+"-again"))
			if !again.Response.Allowed || again.Response.Patch != nil {
				t.Fatalf("a reinvoked webhook changed the pod again: %s", again.Response.Patch)
			}
		})
	}
}

// TestAnnotationsReachTheAgent checks what each annotation turns into.
func TestAnnotationsReachTheAgent(t *testing.T) {
	pod, _ := os.ReadFile("testdata/pods/job.json")
	out := post(t, sidecar.NewInjector(defaults(), nil, nil), review(t, pod, "u"))
	p, _ := apply(t, pod, out.Response)
	a := agentOf(t, p)
	args := strings.Join(a.Args, " ")
	for _, want := range []string{"--model ocr=registry.batch.svc:5000/models/ocr:12", "--http 127.0.0.1:9080",
		"--grpc 127.0.0.1:9081", "--providers cuda,cpu", "--unix " + sidecar.SocketPath, "--trust-key " + sidecar.TrustKeysDir} {
		if !strings.Contains(args, want) {
			t.Errorf("args %q lack %q", args, want)
		}
	}
	if a.Image != "registry.batch.svc:5000/edgefleet/agent:0.2.0" {
		t.Errorf("image %s", a.Image)
	}
	if got := a.Resources.Limits.Memory().String(); got != "1Gi" {
		t.Errorf("memory limit %s", got)
	}
	if got := a.Resources.Requests.Cpu().String(); got != "250m" {
		t.Errorf("cpu request %s", got)
	}
	sc := a.SecurityContext
	if sc == nil || !*sc.RunAsNonRoot || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation || len(sc.Capabilities.Drop) != 1 {
		t.Errorf("security context %+v", sc)
	}
	// The app's own EDGEFLEET_URL wins; the others get the annotated port.
	for _, c := range p.Spec.Containers {
		url, _ := envOf(c, sidecar.EnvURL)
		sock, _ := envOf(c, sidecar.EnvSocket)
		want := "http://127.0.0.1:9080"
		if c.Name == "report" {
			want = "http://127.0.0.1:7000"
		}
		if url != want || sock != sidecar.SocketPath {
			t.Errorf("container %s: %s=%q %s=%q", c.Name, sidecar.EnvURL, url, sidecar.EnvSocket, sock)
		}
		if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == sidecar.SocketVolume }) {
			t.Errorf("container %s does not mount the socket volume", c.Name)
		}
	}
	// The existing init container now runs after the agent, with the env.
	if p.Spec.InitContainers[1].Name != "fetch-input" {
		t.Fatalf("init containers %v", p.Spec.InitContainers)
	}
	if _, ok := envOf(p.Spec.InitContainers[1], sidecar.EnvURL); !ok {
		t.Error("the later init container has no EDGEFLEET_URL")
	}
}

func TestHubAnnotation(t *testing.T) {
	pod, _ := os.ReadFile("testdata/pods/hub.json")
	out := post(t, sidecar.NewInjector(defaults(), nil, nil), review(t, pod, "u"))
	p, _ := apply(t, pod, out.Response)
	a := agentOf(t, p)
	if !strings.Contains(strings.Join(a.Args, " "), "--hub https://edgefleet-hub.edgefleet.svc:7443 --token $(EDGEFLEET_HUB_TOKEN)") {
		t.Errorf("args %v", a.Args)
	}
	if len(a.Env) == 0 || a.Env[0].ValueFrom == nil || a.Env[0].ValueFrom.SecretKeyRef.Name != "kiosk-enrollment" {
		t.Errorf("env %+v", a.Env)
	}
	// The other annotation with '/' and '~' in its key survived the patch
	// (JSON Pointer escaping).
	if p.Annotations["team/owner~notes"] == "" || !strings.Contains(string(out.Response.Patch), `edgefleet.io~1injected`) {
		t.Errorf("annotations %v, patch %s", p.Annotations, out.Response.Patch)
	}
}

// TestDenials: every invalid annotation is refused with allowed: false and a
// reason that names it; no patch comes along.
func TestDenials(t *testing.T) {
	base := func() map[string]string {
		return map[string]string{sidecar.AnnotationModels: "digits=registry.example:5000/m/digits:1"}
	}
	cases := []struct {
		name string
		ann  func(map[string]string)
		pod  func(*corev1.Pod)
		want string
	}{
		{"unknown key", func(a map[string]string) { a["edgefleet.io/modles"] = "x" }, nil, "edgefleet.io/modles: unknown key"},
		{"bad reference", func(a map[string]string) { a[sidecar.AnnotationModels] = "digits=registry.example:5000/UPPER:1" }, nil, "bad OCI reference"},
		{"reference without registry", func(a map[string]string) { a[sidecar.AnnotationModels] = "digits=digits:1" }, nil, "bad OCI reference"},
		{"no name", func(a map[string]string) { a[sidecar.AnnotationModels] = "registry.example:5000/m/digits:1" }, nil, "want name=REF"},
		{"bad model name", func(a map[string]string) { a[sidecar.AnnotationModels] = "../x=registry.example:5000/m/x:1" }, nil, "model \"../x\""},
		{"model twice", func(a map[string]string) {
			a[sidecar.AnnotationModels] = "d=registry.example:5000/m/d:1,d=registry.example:5000/m/d:2"
		}, nil, "named twice"},
		{"bad quantity", func(a map[string]string) { a[sidecar.AnnotationMemoryLimit] = "lots" }, nil, "edgefleet.io/memory-limit: \"lots\""},
		{"negative quantity", func(a map[string]string) { a[sidecar.AnnotationCPURequest] = "-1" }, nil, "edgefleet.io/cpu-request"},
		{"request over limit", func(a map[string]string) {
			a[sidecar.AnnotationMemoryRequest] = "2Gi"
			a[sidecar.AnnotationMemoryLimit] = "1Gi"
		}, nil, "exceeds the limit"},
		{"bad port", func(a map[string]string) { a[sidecar.AnnotationHTTPPort] = "70000" }, nil, "edgefleet.io/http-port"},
		{"same ports", func(a map[string]string) { a[sidecar.AnnotationGRPCPort] = "8080" }, nil, "both 8080"},
		{"bad socket", func(a map[string]string) { a[sidecar.AnnotationSocket] = "yes please" }, nil, "edgefleet.io/socket"},
		{"bad provider", func(a map[string]string) { a[sidecar.AnnotationProviders] = "cuda,npu" }, nil, "\"npu\""},
		{"hub without token", func(a map[string]string) {
			delete(a, sidecar.AnnotationModels)
			a[sidecar.AnnotationHub] = "https://hub.example:7443"
		}, nil, "needs edgefleet.io/token-secret"},
		{"plain http hub", func(a map[string]string) {
			a[sidecar.AnnotationHub] = "http://hub.example:7443"
			a[sidecar.AnnotationTokenSecret] = "t"
		}, nil, "https://host:port"},
		{"bad secret name", func(a map[string]string) { a[sidecar.AnnotationTrustKeysSecret] = "Not_A_Name" }, nil, "not a Secret name"},
		{"bad image", func(a map[string]string) { a[sidecar.AnnotationImage] = "UPPER CASE" }, nil, "edgefleet.io/image"},
		{"nothing to serve", func(a map[string]string) { delete(a, sidecar.AnnotationModels) }, nil, "would serve nothing"},
		{"port taken by the app", nil, func(p *corev1.Pod) { p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 8080}} }, "uses port 8080"},
		{"volume name taken", nil, func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: sidecar.DataVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		}, "already has a volume named edgefleet-data"},
		{"host network", nil, func(p *corev1.Pod) { p.Spec.HostNetwork = true }, "hostNetwork"},
	}
	reg := prometheus.NewRegistry()
	inj := sidecar.NewInjector(defaults(), reg, nil)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ann := base()
			if c.ann != nil {
				c.ann(ann)
			}
			p := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", Labels: map[string]string{sidecar.InjectLabel: "true"}, Annotations: ann},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
			}
			if c.pod != nil {
				c.pod(p)
			}
			raw, _ := json.Marshal(p)
			out := post(t, inj, review(t, raw, "uid-"+c.name))
			r := out.Response
			if r.Allowed || r.Patch != nil || r.PatchType != nil {
				t.Fatalf("allowed=%v patch=%s", r.Allowed, r.Patch)
			}
			if string(r.UID) != "uid-"+c.name || r.Result == nil || !strings.Contains(r.Result.Message, c.want) {
				t.Fatalf("uid %q, reason %+v; want it to contain %q", r.UID, r.Result, c.want)
			}
		})
	}
	if got := countOf(t, reg, sidecar.OutcomeDenied); got != float64(len(cases)) {
		t.Errorf("denied reviews counted %v, want %d", got, len(cases))
	}
}

// TestBadRequests: what is not an AdmissionReview gets HTTP 400 (the API
// server then applies the failurePolicy), counted as an error.
func TestBadRequests(t *testing.T) {
	reg := prometheus.NewRegistry()
	inj := sidecar.NewInjector(defaults(), reg, nil)
	for _, body := range []string{
		``, `{`, `[]`, `{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x"}}`,
		`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`,
		`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}`,
	} {
		rec := httptest.NewRecorder()
		inj.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/mutate", strings.NewReader(body)))
		if rec.Code != http.StatusBadRequest {
			t.Errorf("%q: HTTP %d, want 400", body, rec.Code)
		}
	}
	rec := httptest.NewRecorder()
	inj.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/mutate", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET: HTTP %d", rec.Code)
	}
	if got := countOf(t, reg, sidecar.OutcomeError); got != 7 {
		t.Errorf("errors counted %v, want 7", got)
	}
	n, err := testutil.GatherAndCount(reg, "edgefleet_injector_review_duration_seconds")
	if err != nil || n == 0 {
		t.Errorf("latency histogram: %d series, %v", n, err)
	}
}

// TestNotAPodCreation: other kinds and operations pass untouched.
func TestNotAPodCreation(t *testing.T) {
	pod, _ := os.ReadFile("testdata/pods/deployment.json")
	inj := sidecar.NewInjector(defaults(), nil, nil)
	var rev admissionv1.AdmissionReview
	_ = json.Unmarshal(review(t, pod, "u"), &rev)
	for _, mutate := range []func(*admissionv1.AdmissionRequest){
		func(r *admissionv1.AdmissionRequest) { r.Operation = admissionv1.Update },
		func(r *admissionv1.AdmissionRequest) { r.Kind.Kind = "Deployment"; r.Kind.Group = "apps" },
		func(r *admissionv1.AdmissionRequest) { r.SubResource = "ephemeralcontainers" },
	} {
		r := *rev.Request
		mutate(&r)
		resp, outcome := inj.Review(&r)
		if !resp.Allowed || resp.Patch != nil || outcome != sidecar.OutcomeSkipped {
			t.Errorf("%+v: allowed=%v patch=%s outcome=%s", r.Kind, resp.Allowed, resp.Patch, outcome)
		}
	}
}

// FuzzDecodeReview: no input makes the handler panic; an allowed answer's
// patch applies and yields a pod with exactly one agent.
func FuzzDecodeReview(f *testing.F) {
	files, _ := filepath.Glob("testdata/pods/*.json")
	for _, file := range files {
		pod, _ := os.ReadFile(file)
		f.Add(review(f, pod, "seed"))
	}
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","object":{"metadata":{"labels":{"edgefleet.io/inject":"true"}}}}}`))
	inj := sidecar.NewInjector(defaults(), nil, slog.New(slog.DiscardHandler))
	f.Fuzz(func(t *testing.T, body []byte) {
		rev, err := sidecar.DecodeReview(bytes.NewReader(body))
		if err != nil {
			return
		}
		resp, _ := inj.Review(rev.Request)
		if resp.UID != rev.Request.UID {
			t.Fatal("uid not echoed")
		}
		if !resp.Allowed || resp.Patch == nil {
			return
		}
		var pod map[string]any
		if json.Unmarshal(rev.Request.Object.Raw, &pod) != nil {
			t.Fatal("patched a pod that does not decode")
		}
		p, err := jsonpatch.DecodePatch(resp.Patch)
		if err != nil {
			t.Fatal(err)
		}
		out, err := p.Apply(rev.Request.Object.Raw)
		if err != nil {
			t.Fatalf("patch does not apply: %v", err)
		}
		var got corev1.Pod
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatal(err)
		}
		if !sidecar.Injected(&got) {
			t.Fatal("no agent after the patch")
		}
	})
}

// FuzzParseAnnotations: any annotation values give a spec or an error,
// never a panic; a spec without error has an image and something to serve.
func FuzzParseAnnotations(f *testing.F) {
	f.Add("digits=r.example:5000/m/d:1", "", "8080", "8081", "true", "cpu", "100m", "1Gi", "")
	f.Add("a=r.example/x@sha256:4e07408562bedb8b60ce05c1decfe3ad16b72230967de01f640b7e4729b49fce,b=r/x:1", "https://h:1", "1", "65535", "false", "cuda,cpu", "-1", "1e3", "x")
	d := defaults()
	f.Fuzz(func(t *testing.T, models, hub, httpPort, grpcPort, socket, providers, cpu, mem, image string) {
		ann := map[string]string{sidecar.AnnotationModels: models, sidecar.AnnotationHTTPPort: httpPort,
			sidecar.AnnotationGRPCPort: grpcPort, sidecar.AnnotationSocket: socket, sidecar.AnnotationProviders: providers,
			sidecar.AnnotationCPURequest: cpu, sidecar.AnnotationMemoryLimit: mem}
		if hub != "" {
			ann[sidecar.AnnotationHub], ann[sidecar.AnnotationTokenSecret] = hub, "token"
		}
		if image != "" {
			ann[sidecar.AnnotationImage] = image
		}
		s, err := sidecar.ParseAnnotations(ann, d)
		if err != nil {
			return
		}
		if s.Image == "" || (len(s.Models) == 0 && s.Hub == "") || s.HTTPPort == s.GRPCPort {
			t.Fatalf("accepted an unusable spec: %+v", s)
		}
		c := sidecar.Container(s, d)
		if c.Name != sidecar.ContainerName || len(c.Args) == 0 {
			t.Fatalf("container %+v", c)
		}
		_ = fmt.Sprint(c.Resources.Limits.Memory())
	})
}

// countOf reads edgefleet_injector_reviews_total{outcome} from reg.
func countOf(t testing.TB, reg *prometheus.Registry, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "edgefleet_injector_reviews_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == outcome {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no reviews counter for %s", outcome)
	return 0
}
