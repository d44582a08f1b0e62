//go:build tools

// Package tools records the kube-apiserver build dependency of the sidecar's
// API-server test; see build-apiserver.sh.
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
