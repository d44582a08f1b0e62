//go:build k8s

package helm_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/edgefleet/edgefleet/deploy/testenv"
	"github.com/edgefleet/edgefleet/sidecar"
)

// apiServer is a kube-apiserver with etcd, no kubelet or controllers.
type apiServer struct {
	url string
	hc  *http.Client
}

func (a *apiServer) do(t *testing.T, method, path, ctype string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, a.url+path, rd)
	req.Header.Set("Authorization", "Bearer test-token")
	req.Header.Set("Content-Type", ctype)
	resp, err := a.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (a *apiServer) create(t *testing.T, path string, obj any) []byte {
	t.Helper()
	code, b := a.do(t, http.MethodPost, path, "application/json", obj)
	if code != http.StatusCreated {
		t.Fatalf("POST %s: HTTP %d %s", path, code, b)
	}
	return b
}

// startAPIServer starts etcd (Debian etcd-server) and kube-apiserver (built
// from the module proxy by deploy/k8s/build-apiserver.sh) on loopback. The
// service CIDR is on loopback too, so the API server's ClusterIP resolver
// calls a webhook Service at an address this test listens on.
func startAPIServer(t *testing.T) *apiServer {
	t.Helper()
	etcd, err := exec.LookPath("etcd")
	if err != nil {
		testenv.Missing(t, "etcd", "apt-get install etcd-server; make deps-apt")
	}
	root := testenv.RepoRoot()
	build := exec.Command(filepath.Join(root, "deploy/k8s/build-apiserver.sh"))
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building kube-apiserver: %v\n%s", err, out)
	}
	bins, _ := filepath.Glob(filepath.Join(testenv.DepsDir(), "k8s", "*", "kube-apiserver"))
	if len(bins) == 0 {
		t.Fatal("no kube-apiserver under .deps/k8s")
	}
	dir := t.TempDir()
	etcdClient, etcdPeer := testenv.FreeAddr(t), testenv.FreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var logs bytes.Buffer
	e := exec.CommandContext(ctx, etcd, "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", "http://"+etcdClient, "--advertise-client-urls", "http://"+etcdClient,
		"--listen-peer-urls", "http://"+etcdPeer, "--initial-advertise-peer-urls", "http://"+etcdPeer,
		"--initial-cluster", "default=http://"+etcdPeer)
	e.Stdout, e.Stderr = io.Discard, io.Discard
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	key, pub := filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	for _, c := range [][]string{{"openssl", "ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", key},
		{"openssl", "ec", "-in", key, "-pubout", "-out", pub}} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", c, err, out)
		}
	}
	_ = os.WriteFile(filepath.Join(dir, "tokens.csv"), []byte("test-token,admin,1,system:masters\n"), 0o600)
	apiAddr := testenv.FreeAddr(t)
	host, port, _ := net.SplitHostPort(apiAddr)
	k := exec.CommandContext(ctx, bins[0], "--etcd-servers", "http://"+etcdClient,
		"--bind-address", host, "--secure-port", port, "--cert-dir", filepath.Join(dir, "certs"),
		"--service-account-issuer", "https://kubernetes.default.svc", "--service-account-key-file", pub,
		"--service-account-signing-key-file", key, "--token-auth-file", filepath.Join(dir, "tokens.csv"),
		"--authorization-mode", "AlwaysAllow", "--service-cluster-ip-range", "127.0.10.0/24")
	k.Stdout, k.Stderr = &logs, &logs
	if err := k.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = k.Wait()
		_ = e.Wait()
		if t.Failed() {
			t.Logf("kube-apiserver log (tail):\n%s", tail(logs.String(), 4000))
		}
	})
	a := &apiServer{url: "https://" + apiAddr, hc: &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}} // its self-signed cert, on loopback
	testenv.Eventually(t, "kube-apiserver /readyz", 3*time.Minute, func() bool {
		req, _ := http.NewRequest(http.MethodGet, a.url+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer test-token")
		resp, err := a.hc.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return a
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestWebhookWithAPIServer registers the chart's rendered webhook with a
// real kube-apiserver, creates a Deployment's pod and a Job's pod through
// the API and reads back the mutated pods; then takes the injector down
// under each failurePolicy.
func TestWebhookWithAPIServer(t *testing.T) {
	r, err := render(t, map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	mwc := find[*admissionregistrationv1.MutatingWebhookConfiguration](r)[0]
	var caSecret *corev1.Secret
	var svc *corev1.Service
	for _, s := range find[*corev1.Secret](r) {
		caSecret = s
	}
	for _, s := range find[*corev1.Service](r) {
		if s.Name == mwc.Webhooks[0].ClientConfig.Service.Name {
			svc = s
		}
	}
	a := startAPIServer(t)

	// The injector, as the chart runs it, at the Service's ClusterIP.
	dir := t.TempDir()
	caCrt, caKey := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	_ = os.WriteFile(caCrt, caSecret.Data["ca.crt"], 0o600)
	_ = os.WriteFile(caKey, caSecret.Data["ca.key"], 0o600)
	certs, err := sidecar.IssuedCerts(caCrt, caKey, sidecar.DNSNames(svc.Name, namespace), time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := sidecar.DefaultDefaults()
	d.Image = "docker.io/edgefleet/agent:0.1.0"
	srv := sidecar.NewServer(sidecar.NewInjector(d, nil, nil), certs)
	const clusterIP = "127.0.10.10"
	ln, err := net.Listen("tcp", fmt.Sprintf("%s:%d", clusterIP, *mwc.Webhooks[0].ClientConfig.Service.Port))
	if err != nil {
		t.Fatalf("listening at the Service's ClusterIP (needs root for port 443): %v", err)
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })

	for _, ns := range []string{namespace, "shop"} {
		a.create(t, "/api/v1/namespaces", map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}})
		// No controller-manager: the ServiceAccount admission needs it.
		a.create(t, "/api/v1/namespaces/"+ns+"/serviceaccounts", map[string]any{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": "default"}})
	}
	svc.Spec.ClusterIP, svc.Spec.ClusterIPs = clusterIP, nil
	svc.ResourceVersion = ""
	a.create(t, "/api/v1/namespaces/"+namespace+"/services", svc)
	a.create(t, "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations", mwc)

	pod := func(kind, restart string) map[string]any {
		return map[string]any{"apiVersion": "v1", "kind": "Pod",
			"metadata": map[string]any{"generateName": kind + "-", "labels": map[string]any{"edgefleet.io/inject": "true", "app": kind},
				"annotations": map[string]any{"edgefleet.io/models": "digits=registry.example:5000/models/digits:3"}},
			"spec": map[string]any{"restartPolicy": restart, "containers": []any{map[string]any{"name": kind, "image": kind + ":1"}}}}
	}
	readBack := func(created []byte) *corev1.Pod {
		var p corev1.Pod
		if err := json.Unmarshal(created, &p); err != nil {
			t.Fatal(err)
		}
		code, b := a.do(t, http.MethodGet, "/api/v1/namespaces/shop/pods/"+p.Name, "application/json", nil)
		if code != 200 {
			t.Fatalf("GET pod %s: %d", p.Name, code)
		}
		var got corev1.Pod
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		return &got
	}
	// Webhooks may take a moment to be picked up by the API server.
	var dep *corev1.Pod
	testenv.Eventually(t, "the webhook registered", time.Minute, func() bool {
		dep = readBack(a.create(t, "/api/v1/namespaces/shop/pods", pod("deployment", "Always")))
		return sidecar.Injected(dep)
	})
	job := readBack(a.create(t, "/api/v1/namespaces/shop/pods", pod("job", "Never")))
	for _, p := range []*corev1.Pod{dep, job} {
		if len(p.Spec.InitContainers) == 0 || p.Spec.InitContainers[0].Name != sidecar.ContainerName ||
			p.Spec.InitContainers[0].RestartPolicy == nil || *p.Spec.InitContainers[0].RestartPolicy != corev1.ContainerRestartPolicyAlways ||
			p.Annotations[sidecar.AnnotationInjected] != "true" {
			t.Errorf("pod %s not injected as a native sidecar: %+v", p.Name, p.Spec.InitContainers)
		}
	}
	// Invalid annotations: refused with the reason.
	bad := pod("bad", "Always")
	bad["metadata"].(map[string]any)["annotations"] = map[string]any{"edgefleet.io/modles": "x"}
	code, b := a.do(t, http.MethodPost, "/api/v1/namespaces/shop/pods", "application/json", bad)
	if code != http.StatusForbidden || !strings.Contains(string(b), "edgefleet.io/modles: unknown key") {
		t.Errorf("invalid annotation: HTTP %d %s", code, b)
	}

	// The injector down: Fail refuses labelled pods, Ignore lets them in
	// without the agent.
	_ = srv.Close()
	code, b = a.do(t, http.MethodPost, "/api/v1/namespaces/shop/pods", "application/json", pod("down", "Always"))
	if code < 500 || !strings.Contains(string(b), "failed calling webhook") {
		t.Errorf("injector down, failurePolicy Fail: HTTP %d %s", code, b)
	}
	patch := []map[string]any{{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Ignore"}}
	if code, b := a.do(t, http.MethodPatch, "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/"+mwc.Name,
		"application/json-patch+json", patch); code != 200 {
		t.Fatalf("patch failurePolicy: %d %s", code, b)
	}
	testenv.Eventually(t, "failurePolicy Ignore in effect", time.Minute, func() bool {
		code, b := a.do(t, http.MethodPost, "/api/v1/namespaces/shop/pods", "application/json", pod("ignored", "Always"))
		if code != http.StatusCreated {
			return false
		}
		var p corev1.Pod
		_ = json.Unmarshal(b, &p)
		if sidecar.Injected(&p) {
			t.Fatal("a pod got the agent while the injector was down")
		}
		return true
	})
}
