// Package sidecar puts the edgefleet agent next to an application in a
// Kubernetes pod: a mutating admission webhook (the injector) adds the agent
// as a native sidecar — an init container with restartPolicy Always and a
// startup probe on /v2/health/ready — to every pod labelled
// edgefleet.io/inject: "true", so the application's containers start only
// once the agent serves the models the pod's annotations name, and a Job's
// pod still completes (Kubernetes ≥ 1.29, where native sidecars are beta and
// on by default; 1.33 made them GA).
//
// The injector answers admission.k8s.io/v1 AdmissionReviews with a JSON
// Patch. It is idempotent (a pod that already has the agent is left alone, so
// a reinvoked webhook never adds a second one) and all-or-nothing: an
// annotation it cannot honour denies the pod with the reason, never a
// half-patched pod. See Annotations for the keys and README.md ("Kubernetes
// sidecar") for the walk-through; deploy/helm/edgefleet installs it.
//
// TLS: with a CA (Options.CA) the injector issues its own serving
// certificate (SAN <service>.<namespace>.svc) and renews it long before it
// expires; with certificate files (cert-manager) it reloads them when they
// change. Either way the certificate is picked per handshake
// (tls.Config.GetCertificate), so a renewal needs no restart.
package sidecar
