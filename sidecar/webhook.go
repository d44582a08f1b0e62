package sidecar

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	kjson "sigs.k8s.io/json"
)

// MaxReviewBytes bounds an AdmissionReview body (the API server's objects
// are at most ~3 MiB in etcd; a review carries the object twice at most).
const MaxReviewBytes = 8 << 20

// Outcomes of a review, the "outcome" label of the review metrics.
const (
	OutcomeInjected = "injected" // the pod got the agent
	OutcomeSkipped  = "skipped"  // nothing to do (not labelled, already injected, not a pod creation)
	OutcomeDenied   = "denied"   // allowed: false, with the reason
	OutcomeError    = "error"    // the request was not a usable AdmissionReview (HTTP 400)
)

var errBadReview = errors.New("bad admission review")

// Injector is the admission webhook's HTTP handler. Create it with
// NewInjector.
type Injector struct {
	defaults Defaults
	log      *slog.Logger
	reviews  *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// NewInjector returns an injector with the defaults d, registering its
// metrics on reg (nil: not registered).
func NewInjector(d Defaults, reg prometheus.Registerer, log *slog.Logger) *Injector {
	if log == nil {
		log = slog.Default()
	}
	inj := &Injector{defaults: d, log: log,
		reviews: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgefleet_injector_reviews_total",
			Help: "Admission reviews answered, by outcome (injected, skipped, denied, error).",
		}, []string{"outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "edgefleet_injector_review_duration_seconds",
			Help:    "Time to answer an admission review (decode, decide, encode), by outcome.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
		}, []string{"outcome"}),
	}
	for _, o := range []string{OutcomeInjected, OutcomeSkipped, OutcomeDenied, OutcomeError} {
		inj.reviews.WithLabelValues(o)
	}
	if reg != nil {
		reg.MustRegister(inj.reviews, inj.latency)
	}
	return inj
}

// DecodeReview reads an admission.k8s.io/v1 AdmissionReview request.
func DecodeReview(r io.Reader) (*admissionv1.AdmissionReview, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxReviewBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading: %w", errBadReview, err)
	}
	if len(b) > MaxReviewBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", errBadReview, MaxReviewBytes)
	}
	var rev admissionv1.AdmissionReview
	if err := json.Unmarshal(b, &rev); err != nil {
		return nil, fmt.Errorf("%w: %w", errBadReview, err)
	}
	if rev.APIVersion != admissionv1.SchemeGroupVersion.String() || rev.Kind != "AdmissionReview" {
		return nil, fmt.Errorf("%w: want apiVersion %s kind AdmissionReview, got %q %q",
			errBadReview, admissionv1.SchemeGroupVersion, rev.APIVersion, rev.Kind)
	}
	if rev.Request == nil || rev.Request.UID == "" {
		return nil, fmt.Errorf("%w: no request or no request uid", errBadReview)
	}
	return &rev, nil
}

// ServeHTTP answers one AdmissionReview (POST, application/json).
func (inj *Injector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	outcome := OutcomeError
	defer func() {
		inj.reviews.WithLabelValues(outcome).Inc()
		inj.latency.WithLabelValues(outcome).Observe(time.Since(start).Seconds())
	}()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST an AdmissionReview", http.StatusMethodNotAllowed)
		return
	}
	rev, err := DecodeReview(r.Body)
	if err != nil {
		inj.log.Warn("bad admission review", "err", err, "remote", r.RemoteAddr)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var resp *admissionv1.AdmissionResponse
	resp, outcome = inj.Review(rev.Request)
	out := admissionv1.AdmissionReview{TypeMeta: rev.TypeMeta, Response: resp}
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(out); err != nil {
		outcome = OutcomeError
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(buf.Bytes())
}

// Review decides on one admission request: the response (uid echoed) and
// the outcome. It never panics on bad input and either patches the whole
// agent in or nothing.
func (inj *Injector) Review(req *admissionv1.AdmissionRequest) (resp *admissionv1.AdmissionResponse, outcome string) {
	resp = &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	if req.Kind.Group != "" || req.Kind.Kind != "Pod" || req.Operation != admissionv1.Create || req.SubResource != "" {
		return resp, OutcomeSkipped
	}
	// Case-sensitive, as the API server decodes: the patch's paths must
	// name the keys the object really has.
	var pod corev1.Pod
	if err := kjson.UnmarshalCaseSensitivePreserveInts(req.Object.Raw, &pod); err != nil {
		return deny(resp, fmt.Sprintf("edgefleet injector: cannot decode the pod: %v", err)), OutcomeDenied
	}
	log := inj.log.With("namespace", req.Namespace, "pod", podName(&pod), "uid", string(req.UID))
	if pod.Labels[InjectLabel] != "true" || Injected(&pod) {
		return resp, OutcomeSkipped
	}
	spec, err := ParseAnnotations(pod.Annotations, inj.defaults)
	if err == nil {
		var ops []Operation
		if ops, err = Patch(&pod, spec, inj.defaults); err == nil {
			patch, err := json.Marshal(ops)
			if err != nil {
				return deny(resp, fmt.Sprintf("edgefleet injector: %v", err)), OutcomeDenied
			}
			resp.Patch = patch
			resp.PatchType = new(admissionv1.PatchTypeJSONPatch)
			log.Info("agent injected", "models", len(spec.Models), "hub", spec.Hub != "")
			return resp, OutcomeInjected
		}
	}
	log.Info("pod denied", "err", err)
	return deny(resp, "edgefleet injector: "+err.Error()), OutcomeDenied
}

func deny(resp *admissionv1.AdmissionResponse, msg string) *admissionv1.AdmissionResponse {
	resp.Allowed = false
	resp.Patch, resp.PatchType = nil, nil
	resp.Result = &metav1.Status{Status: metav1.StatusFailure, Code: http.StatusForbidden,
		Reason: metav1.StatusReasonInvalid, Message: msg}
	return resp
}

func podName(p *corev1.Pod) string {
	if p.Name != "" {
		return p.Name
	}
	return p.GenerateName + "…"
}

func intOrString(p int32) intstr.IntOrString { return intstr.FromInt32(p) }
