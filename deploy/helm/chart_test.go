package helm_test

import (
	"crypto/x509"
	"encoding/pem"
	"maps"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// matrix is the values the chart is linted and rendered with.
var matrix = map[string]map[string]any{
	"defaults":                 {},
	"cert-manager self-signed": {"injector": map[string]any{"certManager": map[string]any{"enabled": true}}},
	"cert-manager issuer, Ignore, excluded namespaces": {"injector": map[string]any{
		"failurePolicy": "Ignore", "excludeNamespaces": []any{"monitoring", "istio-system"},
		"certManager": map[string]any{"enabled": true, "issuerRef": map[string]any{"kind": "ClusterIssuer", "name": "corp-ca"}},
		"agent":       map[string]any{"trustKeysSecret": "signers", "resources": map[string]any{"limits": map[string]any{"memory": "256Mi"}}},
	}},
	"agents on pod network with models": {
		"hub":   map[string]any{"enabled": false},
		"agent": map[string]any{"enabled": true, "hostNetwork": false, "dataHostPath": "", "trustKeysSecret": "signers", "models": map[string]any{"digits": "registry.example:5000/models/digits:3"}},
	},
	"agents enrolled with the hub": {
		"agent": map[string]any{"enabled": true, "tokenSecret": "enroll", "nodeSelector": map[string]any{"node-role.kubernetes.io/edge": "true"}},
		"image": map[string]any{"registry": "ghcr.io", "tag": "1.2.3", "pullSecrets": []any{"ghcr"}},
	},
	"agents only": {
		"hub": map[string]any{"enabled": false}, "injector": map[string]any{"enabled": false},
		"agent": map[string]any{"enabled": true, "hubURL": "https://hub.example:7443", "tokenSecret": "enroll"},
	},
	"nothing": {"hub": map[string]any{"enabled": false}, "injector": map[string]any{"enabled": false}},
}

func get(vals map[string]any, path ...string) any {
	var cur any = vals
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[p]
	}
	return cur
}

func TestChartLint(t *testing.T) {
	for _, name := range slices.Sorted(maps.Keys(matrix)) {
		t.Run(name, func(t *testing.T) {
			l := lint.RunAll(chartDir, matrix[name], namespace)
			for _, m := range l.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("lint: %v", m)
				}
			}
		})
	}
}

func TestChartRender(t *testing.T) {
	for _, name := range slices.Sorted(maps.Keys(matrix)) {
		vals := matrix[name]
		t.Run(name, func(t *testing.T) {
			r, err := render(t, vals)
			if err != nil {
				t.Fatal(err)
			}
			hubOn := get(vals, "hub", "enabled") != false
			injOn := get(vals, "injector", "enabled") != false
			agentOn := get(vals, "agent", "enabled") == true
			if got := len(find[*appsv1.StatefulSet](r)); got != b2i(hubOn) {
				t.Errorf("%d hub StatefulSets, hub.enabled=%v", got, hubOn)
			}
			if got := len(find[*appsv1.Deployment](r)); got != b2i(injOn) {
				t.Errorf("%d injector Deployments, injector.enabled=%v", got, injOn)
			}
			if got := len(find[*admissionregistrationv1.MutatingWebhookConfiguration](r)); got != b2i(injOn) {
				t.Errorf("%d webhook configurations", got)
			}
			if got := len(find[*appsv1.DaemonSet](r)); got != b2i(agentOn) {
				t.Errorf("%d agent DaemonSets, agent.enabled=%v", got, agentOn)
			}
			checkPods(t, r)
			if hubOn {
				checkHub(t, r)
			}
			if injOn {
				checkWebhook(t, r, vals)
			}
			if hubOn || injOn || agentOn {
				if !strings.Contains(r.notes, "edgefleet") {
					t.Errorf("NOTES.txt: %q", r.notes)
				}
			}
			if injOn && !strings.Contains(r.notes, `edgefleet.io/inject: "true"`) {
				t.Error("NOTES.txt does not say how to use the injector")
			}
		})
	}
}

// TestChartRefusesUselessAgents: an agent DaemonSet with nothing to serve
// or a hub without a token fails at render time with the reason.
func TestChartRefusesUselessAgents(t *testing.T) {
	for vals, want := range map[*map[string]any]string{
		{"hub": map[string]any{"enabled": false}, "agent": map[string]any{"enabled": true}}: "would serve nothing",
		{"agent": map[string]any{"enabled": true}}:                                          "agent.tokenSecret",
	} {
		_, err := render(t, *vals)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want %q", err, want)
		}
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// podSpecs returns every pod template of r by workload name.
func podSpecs(r *rendered) map[string]corev1.PodSpec {
	out := map[string]corev1.PodSpec{}
	for _, d := range find[*appsv1.Deployment](r) {
		out[d.Name] = d.Spec.Template.Spec
	}
	for _, s := range find[*appsv1.StatefulSet](r) {
		out[s.Name] = s.Spec.Template.Spec
	}
	for _, d := range find[*appsv1.DaemonSet](r) {
		out[d.Name] = d.Spec.Template.Spec
	}
	return out
}

// checkPods: hardened security contexts and probes everywhere; workload
// selectors match their pods; Services select existing pods and name
// existing ports.
func checkPods(t *testing.T, r *rendered) {
	t.Helper()
	for name, ps := range podSpecs(r) {
		if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
			t.Errorf("%s mounts a service account token it does not need", name)
		}
		if psc := ps.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil {
			t.Errorf("%s: pod security context %+v", name, ps.SecurityContext)
		}
		for _, c := range append(slices.Clone(ps.InitContainers), ps.Containers...) {
			sc := c.SecurityContext
			if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil ||
				!slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 || (sc.Privileged != nil && *sc.Privileged) {
				t.Errorf("%s/%s: security context %+v", name, c.Name, sc)
			}
			if c.ReadinessProbe == nil || c.LivenessProbe == nil {
				t.Errorf("%s/%s: no readiness or liveness probe", name, c.Name)
			}
			if c.Resources.Requests == nil {
				t.Errorf("%s/%s: no resource requests", name, c.Name)
			}
		}
	}
	for _, d := range find[*appsv1.DaemonSet](r) {
		c := d.Spec.Template.Spec.Containers[0]
		if c.StartupProbe == nil || c.StartupProbe.HTTPGet.Path != "/v2/health/ready" {
			t.Errorf("agent startup probe %+v", c.StartupProbe)
		}
	}
	for _, s := range find[*corev1.Service](r) {
		matched := false
		for _, ps := range podTemplates(r) {
			if subset(s.Spec.Selector, ps.Labels) {
				matched = true
				for _, p := range s.Spec.Ports {
					if p.TargetPort.StrVal != "" && !hasPort(ps.Spec, p.TargetPort.StrVal) {
						t.Errorf("service %s targets port %s its pods do not name", s.Name, p.TargetPort.StrVal)
					}
				}
			}
		}
		if !matched {
			t.Errorf("service %s selects no pod of the chart", s.Name)
		}
	}
}

func podTemplates(r *rendered) []corev1.PodTemplateSpec {
	var out []corev1.PodTemplateSpec
	for _, d := range find[*appsv1.Deployment](r) {
		if !subset(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
			panic("deployment selector does not match its pods: " + d.Name)
		}
		out = append(out, d.Spec.Template)
	}
	for _, s := range find[*appsv1.StatefulSet](r) {
		out = append(out, s.Spec.Template)
	}
	for _, d := range find[*appsv1.DaemonSet](r) {
		out = append(out, d.Spec.Template)
	}
	return out
}

func subset(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return len(sel) > 0
}

func hasPort(ps corev1.PodSpec, name string) bool {
	for _, c := range ps.Containers {
		for _, p := range c.Ports {
			if p.Name == name {
				return true
			}
		}
	}
	return false
}

func checkHub(t *testing.T, r *rendered) {
	t.Helper()
	ss := find[*appsv1.StatefulSet](r)[0]
	if len(ss.Spec.VolumeClaimTemplates) != 1 {
		t.Error("the hub has no volume")
	}
	var ports []string
	for _, s := range find[*corev1.Service](r) {
		for _, p := range s.Spec.Ports {
			ports = append(ports, p.Name)
		}
	}
	for _, want := range []string{"api", "mqtt", "registry", "metrics", "dashboard"} {
		if !slices.Contains(ports, want) {
			t.Errorf("no Service port %s (%v)", want, ports)
		}
	}
}

// checkWebhook asserts the webhook's invariants.
func checkWebhook(t *testing.T, r *rendered, vals map[string]any) {
	t.Helper()
	mwc := find[*admissionregistrationv1.MutatingWebhookConfiguration](r)[0]
	if len(mwc.Webhooks) != 1 {
		t.Fatalf("%d webhooks", len(mwc.Webhooks))
	}
	w := mwc.Webhooks[0]
	if w.SideEffects == nil || *w.SideEffects != admissionregistrationv1.SideEffectClassNone {
		t.Error("sideEffects is not None")
	}
	if !slices.Equal(w.AdmissionReviewVersions, []string{"v1"}) {
		t.Errorf("admissionReviewVersions %v", w.AdmissionReviewVersions)
	}
	wantPolicy := "Fail"
	if p, ok := get(vals, "injector", "failurePolicy").(string); ok {
		wantPolicy = p
	}
	if w.FailurePolicy == nil || string(*w.FailurePolicy) != wantPolicy {
		t.Errorf("failurePolicy %v, want %s", w.FailurePolicy, wantPolicy)
	}
	if w.ReinvocationPolicy == nil || *w.ReinvocationPolicy != admissionregistrationv1.IfNeededReinvocationPolicy {
		t.Error("reinvocationPolicy is not IfNeeded")
	}
	if w.ObjectSelector == nil || w.ObjectSelector.MatchLabels["edgefleet.io/inject"] != "true" {
		t.Errorf("objectSelector %+v", w.ObjectSelector)
	}
	var excluded []string
	if w.NamespaceSelector != nil {
		for _, e := range w.NamespaceSelector.MatchExpressions {
			if e.Key == "kubernetes.io/metadata.name" && e.Operator == "NotIn" {
				excluded = e.Values
			}
		}
	}
	want := []string{"kube-system", namespace}
	if ex, ok := get(vals, "injector", "excludeNamespaces").([]any); ok {
		for _, e := range ex {
			want = append(want, e.(string))
		}
	}
	for _, ns := range want {
		if !slices.Contains(excluded, ns) {
			t.Errorf("namespace %s is not excluded (%v)", ns, excluded)
		}
	}
	if len(w.Rules) != 1 || !slices.Equal(w.Rules[0].Resources, []string{"pods"}) ||
		!slices.Equal(w.Rules[0].Operations, []admissionregistrationv1.OperationType{admissionregistrationv1.Create}) {
		t.Errorf("rules %+v", w.Rules)
	}
	svc := w.ClientConfig.Service
	if svc == nil || svc.Namespace != namespace || svc.Path == nil || *svc.Path != "/mutate" || svc.Port == nil {
		t.Fatalf("clientConfig %+v", w.ClientConfig)
	}
	found := false
	for _, s := range find[*corev1.Service](r) {
		if s.Name == svc.Name {
			found = slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == *svc.Port })
		}
	}
	if !found {
		t.Errorf("no Service %s with port %d", svc.Name, *svc.Port)
	}
	dep := find[*appsv1.Deployment](r)[0]
	args := strings.Join(dep.Spec.Template.Spec.Containers[0].Args, " ")
	if get(vals, "injector", "certManager", "enabled") == true {
		if mwc.Annotations["cert-manager.io/inject-ca-from"] != namespace+"/"+svc.Name {
			t.Errorf("no cert-manager CA injection annotation: %v", mwc.Annotations)
		}
		if len(w.ClientConfig.CABundle) != 0 {
			t.Error("caBundle set although cert-manager injects it")
		}
		certs := findUnstructured(r, "Certificate")
		if len(certs) != 1 {
			t.Fatalf("%d Certificates", len(certs))
		}
		dns, _, _ := unstructuredStrings(certs[0].Object, "spec", "dnsNames")
		if !slices.Contains(dns, svc.Name+"."+namespace+".svc") {
			t.Errorf("Certificate dnsNames %v", dns)
		}
		if !strings.Contains(args, "--tls-cert=/tls/tls.crt") {
			t.Errorf("injector args %s", args)
		}
		return
	}
	// The chart's CA: the caBundle is a CA certificate, the injector gets
	// the same CA to issue from and the names of its Service.
	blk, _ := pem.Decode(w.ClientConfig.CABundle)
	if blk == nil {
		t.Fatal("caBundle is not PEM")
	}
	ca, err := x509.ParseCertificate(blk.Bytes)
	if err != nil || !ca.IsCA {
		t.Fatalf("caBundle: %v (CA %v)", err, ca != nil && ca.IsCA)
	}
	var secret *corev1.Secret
	for _, s := range find[*corev1.Secret](r) {
		if s.Name == svc.Name+"-ca" {
			secret = s
		}
	}
	if secret == nil || string(secret.Data["ca.crt"]) != string(w.ClientConfig.CABundle) || len(secret.Data["ca.key"]) == 0 {
		t.Fatal("the CA Secret does not hold the caBundle's CA and key")
	}
	for _, want := range []string{"--tls-ca-cert=/tls/ca.crt", "--service=" + svc.Name, "--namespace=" + namespace} {
		if !strings.Contains(args, want) {
			t.Errorf("injector args %s lack %s", args, want)
		}
	}
}

func unstructuredStrings(obj map[string]any, path ...string) ([]string, bool, error) {
	var cur any = obj
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false, nil
		}
		cur = m[p]
	}
	l, ok := cur.([]any)
	var out []string
	for _, v := range l {
		s, _ := v.(string)
		out = append(out, s)
	}
	return out, ok, nil
}
