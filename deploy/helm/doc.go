// Package helm holds the tests of the Helm chart in edgefleet/ (lint and
// render through the Helm SDK over a matrix of values, every document
// strictly decoded into its Kubernetes type; with -tags k8s, the chart's
// webhook registered with a real kube-apiserver). The package has no code.
package helm
