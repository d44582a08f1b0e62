package helm_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

const (
	chartDir  = "edgefleet"
	release   = "ef"
	namespace = "edgefleet"
)

// rendered is one release of the chart: its documents decoded into their
// Kubernetes types, and NOTES.txt.
type rendered struct {
	objects []any // *appsv1.Deployment, *corev1.Service, …; cert-manager kinds as *unstructured.Unstructured
	notes   string
}

// render renders the chart with vals through the Helm SDK (as `helm install`
// would, without a cluster) and strictly decodes every document: a field
// its type does not have is an error.
func render(t testing.TB, vals map[string]any) (*rendered, error) {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	caps := *common.DefaultCapabilities
	kv, err := common.ParseKubeVersion("v1.33.0")
	if err != nil {
		t.Fatal(err)
	}
	caps.KubeVersion = *kv
	rv, err := util.ToRenderValues(ch, vals, common.ReleaseOptions{Name: release, Namespace: namespace, IsInstall: true}, &caps)
	if err != nil {
		return nil, err
	}
	files, err := engine.Render(ch, rv)
	if err != nil {
		return nil, err
	}
	out := &rendered{}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		body := files[name]
		if strings.HasSuffix(name, "NOTES.txt") {
			out.notes = body
			continue
		}
		if !strings.HasSuffix(name, ".yaml") {
			continue
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(body)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			obj, err := decodeStrict(doc)
			if err != nil {
				t.Fatalf("%s: %v\n%s", name, err, doc)
			}
			out.objects = append(out.objects, obj)
		}
	}
	return out, nil
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for l := range strings.SplitSeq(string(doc), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.Bytes()
}

// decodeStrict decodes one YAML document into its k8s.io/api type by
// apiVersion and kind, refusing unknown and duplicate fields.
func decodeStrict(doc []byte) (any, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, err
	}
	var obj any
	switch tm.APIVersion + "/" + tm.Kind {
	case "v1/Service":
		obj = &corev1.Service{}
	case "v1/Secret":
		obj = &corev1.Secret{}
	case "apps/v1/Deployment":
		obj = &appsv1.Deployment{}
	case "apps/v1/StatefulSet":
		obj = &appsv1.StatefulSet{}
	case "apps/v1/DaemonSet":
		obj = &appsv1.DaemonSet{}
	case "admissionregistration.k8s.io/v1/MutatingWebhookConfiguration":
		obj = &admissionregistrationv1.MutatingWebhookConfiguration{}
	case "cert-manager.io/v1/Certificate", "cert-manager.io/v1/Issuer":
		// No Go types here: decoded generically, checked field by field.
		u := &unstructured.Unstructured{}
		if err := yaml.UnmarshalStrict(doc, &u.Object); err != nil {
			return nil, err
		}
		return u, nil
	default:
		return nil, fmt.Errorf("unexpected kind %s %s", tm.APIVersion, tm.Kind)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	return obj, nil
}

func find[T any](r *rendered) []T {
	var out []T
	for _, o := range r.objects {
		if v, ok := o.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

func findUnstructured(r *rendered, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, u := range find[*unstructured.Unstructured](r) {
		if u.GetKind() == kind {
			out = append(out, u)
		}
	}
	return out
}
