#!/usr/bin/env bash
# Builds kube-apiserver from the Go module proxy (k8s.io/kubernetes pinned by
# deploy/k8s/tools/go.mod, sha256-checked by its go.sum) into $1 (default
# .deps/k8s/<version>). No prebuilt binary is downloaded. Cold build: see
# the README's "Kubernetes sidecar" section for the measured time (~1300 CPU-s).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=$(awk '$1=="require" && $2=="k8s.io/kubernetes" {print $3}' "$here/tools/go.mod")
out=${1:-$here/../../.deps/k8s/$version}
mkdir -p "$out"
if [ -x "$out/kube-apiserver" ] && [ "$out/kube-apiserver" -nt "$here/tools/go.sum" ]; then
  exit 0
fi
cd "$here/tools"
start=$(date +%s)
# -mod=readonly: go.sum must already pin every module (no silent upgrades).
CGO_ENABLED=0 GOFLAGS=-mod=readonly nice -n "${NICE:-15}" go build -trimpath \
  -o "$out/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
mv "$out/kube-apiserver.tmp" "$out/kube-apiserver"
echo "kube-apiserver $version built in $(( $(date +%s) - start ))s -> $out/kube-apiserver"
