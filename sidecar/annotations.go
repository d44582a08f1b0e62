package sidecar

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/edgefleet/edgefleet/agent/cache"
)

// Prefix is the prefix of every edgefleet pod annotation and label.
const Prefix = "edgefleet.io/"

// InjectLabel is the pod label that asks for the agent (value "true"); the
// webhook's objectSelector matches it.
const InjectLabel = Prefix + "inject"

// Annotation keys. README.md documents them in one table.
const (
	AnnotationModels          = Prefix + "models"            // "name=REF[,name=REF]"
	AnnotationHub             = Prefix + "hub"               // hub API URL, https://…
	AnnotationTokenSecret     = Prefix + "token-secret"      // Secret with key "token" (needed with hub)
	AnnotationTrustKeysSecret = Prefix + "trust-keys-secret" // Secret of PEM public keys
	AnnotationHTTPPort        = Prefix + "http-port"         // REST port on 127.0.0.1
	AnnotationGRPCPort        = Prefix + "grpc-port"         // gRPC port on 127.0.0.1
	AnnotationSocket          = Prefix + "socket"            // "true": REST on a unix socket in a shared emptyDir
	AnnotationProviders       = Prefix + "providers"         // execution providers, "cuda,cpu"
	AnnotationCPURequest      = Prefix + "cpu-request"
	AnnotationCPULimit        = Prefix + "cpu-limit"
	AnnotationMemoryRequest   = Prefix + "memory-request"
	AnnotationMemoryLimit     = Prefix + "memory-limit"
	AnnotationImage           = Prefix + "image" // agent image
	// AnnotationInjected is set by the injector on the pods it changed.
	AnnotationInjected = Prefix + "injected"
)

// knownAnnotations are the keys a pod may carry; any other edgefleet.io/
// annotation is refused as a likely typo.
var knownAnnotations = []string{
	AnnotationModels, AnnotationHub, AnnotationTokenSecret, AnnotationTrustKeysSecret,
	AnnotationHTTPPort, AnnotationGRPCPort, AnnotationSocket, AnnotationProviders,
	AnnotationCPURequest, AnnotationCPULimit, AnnotationMemoryRequest, AnnotationMemoryLimit,
	AnnotationImage, AnnotationInjected,
}

// providers are the execution providers the agent knows (agent/runtime).
var providers = []string{"cpu", "cuda", "tensorrt"}

// Model is one model the agent installs at start.
type Model struct {
	Name string // model name the app calls
	Ref  string // OCI reference, by tag or digest
}

// Spec is what a pod's annotations ask of its agent, with the injector's
// defaults filled in.
type Spec struct {
	Models          []Model
	Hub             string
	TokenSecret     string
	TrustKeysSecret string
	HTTPPort        int32
	GRPCPort        int32
	Socket          bool
	Providers       []string
	Resources       corev1.ResourceRequirements
	Image           string
}

// ParseAnnotations reads the edgefleet.io/ annotations of a pod over the
// defaults d. Every problem is reported, joined in one error; a key outside
// the table is an error too.
func ParseAnnotations(ann map[string]string, d Defaults) (Spec, error) {
	s := Spec{
		HTTPPort: d.HTTPPort, GRPCPort: d.GRPCPort, Image: d.Image,
		TrustKeysSecret: d.TrustKeysSecret, Providers: []string{"cpu"},
		Resources: *d.Resources.DeepCopy(),
	}
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("annotation %s: %s", key, fmt.Sprintf(format, args...)))
	}
	keys := make([]string, 0, len(ann))
	for k := range ann {
		keys = append(keys, k)
	}
	slices.Sort(keys) // deterministic messages
	for _, k := range keys {
		if strings.HasPrefix(k, Prefix) && !slices.Contains(knownAnnotations, k) {
			bad(k, "unknown key (known: %s)", strings.Join(knownAnnotations, ", "))
		}
	}
	if v, ok := ann[AnnotationModels]; ok {
		seen := map[string]bool{}
		for item := range strings.SplitSeq(v, ",") {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			n, ref, found := strings.Cut(item, "=")
			n, ref = strings.TrimSpace(n), strings.TrimSpace(ref)
			if !found || n == "" || ref == "" {
				bad(AnnotationModels, "%q: want name=REF", item)
				continue
			}
			if err := cache.ValidateName("model", n); err != nil {
				bad(AnnotationModels, "%v", err)
				continue
			}
			if _, err := name.ParseReference(ref, name.StrictValidation); err != nil {
				bad(AnnotationModels, "model %s: bad OCI reference %q: %v", n, ref, err)
				continue
			}
			if seen[n] {
				bad(AnnotationModels, "model %s named twice", n)
				continue
			}
			seen[n] = true
			s.Models = append(s.Models, Model{Name: n, Ref: ref})
		}
		if len(s.Models) == 0 && len(errs) == 0 {
			bad(AnnotationModels, "no model named")
		}
	}
	if v, ok := ann[AnnotationHub]; ok {
		u, err := url.Parse(v)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			bad(AnnotationHub, "%q: want the hub API URL, https://host:port", v)
		}
		s.Hub = v
		if ann[AnnotationTokenSecret] == "" {
			bad(AnnotationHub, "needs %s (a Secret whose key \"token\" holds an enrollment token)", AnnotationTokenSecret)
		}
	}
	secret := func(key string, dst *string) {
		if v, ok := ann[key]; ok {
			if msgs := validation.IsDNS1123Subdomain(v); len(msgs) > 0 {
				bad(key, "%q is not a Secret name: %s", v, strings.Join(msgs, "; "))
			}
			*dst = v
		}
	}
	secret(AnnotationTokenSecret, &s.TokenSecret)
	secret(AnnotationTrustKeysSecret, &s.TrustKeysSecret)
	if s.TokenSecret != "" && s.Hub == "" {
		bad(AnnotationTokenSecret, "only meaningful with %s", AnnotationHub)
	}
	port := func(key string, dst *int32) {
		if v, ok := ann[key]; ok {
			p, err := strconv.ParseUint(v, 10, 16)
			if err != nil || p == 0 {
				bad(key, "%q: want a port, 1 to 65535", v)
				return
			}
			*dst = int32(p)
		}
	}
	port(AnnotationHTTPPort, &s.HTTPPort)
	port(AnnotationGRPCPort, &s.GRPCPort)
	if s.HTTPPort == s.GRPCPort {
		bad(AnnotationGRPCPort, "the REST and gRPC ports are both %d", s.HTTPPort)
	}
	if d.HealthPort == s.HTTPPort || d.HealthPort == s.GRPCPort {
		bad(AnnotationHTTPPort, "port %d is the agent's health port", d.HealthPort)
	}
	if v, ok := ann[AnnotationSocket]; ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			bad(AnnotationSocket, "%q: want true or false", v)
		}
		s.Socket = b
	}
	if v, ok := ann[AnnotationProviders]; ok {
		s.Providers = nil
		for p := range strings.SplitSeq(v, ",") {
			p = strings.ToLower(strings.TrimSpace(p))
			if !slices.Contains(providers, p) {
				bad(AnnotationProviders, "%q: want a list of %s", p, strings.Join(providers, ", "))
				continue
			}
			if !slices.Contains(s.Providers, p) {
				s.Providers = append(s.Providers, p)
			}
		}
	}
	quantity := func(key string, list *corev1.ResourceList, res corev1.ResourceName) {
		v, ok := ann[key]
		if !ok {
			return
		}
		q, err := resource.ParseQuantity(v)
		if err != nil || q.Sign() <= 0 {
			bad(key, "%q: want a positive quantity such as 100m, 256Mi", v)
			return
		}
		if *list == nil {
			*list = corev1.ResourceList{}
		}
		(*list)[res] = q
	}
	quantity(AnnotationCPURequest, &s.Resources.Requests, corev1.ResourceCPU)
	quantity(AnnotationCPULimit, &s.Resources.Limits, corev1.ResourceCPU)
	quantity(AnnotationMemoryRequest, &s.Resources.Requests, corev1.ResourceMemory)
	quantity(AnnotationMemoryLimit, &s.Resources.Limits, corev1.ResourceMemory)
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, hasReq := s.Resources.Requests[res]
		lim, hasLim := s.Resources.Limits[res]
		if hasReq && hasLim && req.Cmp(lim) > 0 {
			bad(Prefix+string(res)+"-request", "request %s exceeds the limit %s", req.String(), lim.String())
		}
	}
	if v, ok := ann[AnnotationImage]; ok {
		if _, err := name.ParseReference(v, name.WeakValidation); err != nil {
			bad(AnnotationImage, "%q: %v", v, err)
		}
		s.Image = v
	}
	if s.Image == "" {
		errs = append(errs, errors.New("no agent image: set the injector's default image or "+AnnotationImage))
	}
	if len(s.Models) == 0 && s.Hub == "" && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("the agent would serve nothing: set %s or %s", AnnotationModels, AnnotationHub))
	}
	return s, errors.Join(errs...)
}
