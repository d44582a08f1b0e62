#!/usr/bin/env bash
# run.sh — `make gpu-check`: the CUDA execution provider end to end on this
# machine's NVIDIA GPU. Fetches onnxruntime 1.29's CUDA 13 build (sha256-pinned
# in deploy/deps/gpu.lock) into .deps/gpu, finds the CUDA 13 and cuDNN 9
# libraries (the machine's, or the nvidia-* Python wheels'), and runs
# TestCUDAServingAndFallback (build tag gpu). Extra arguments go to go test,
# e.g. -args -cpu-dry-run to test this harness on a machine without a GPU.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
deps=${EDGEFLEET_DEPS:-$root/.deps}
dry=0
for a in "$@"; do [ "$a" = -cpu-dry-run ] && dry=1; done

if [ "$dry" = 0 ]; then
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu-check: no NVIDIA GPU here (nvidia-smi not found). Run it on a machine with an NVIDIA GPU," >&2
    echo "its driver, and the CUDA 13 + cuDNN 9 runtime libraries (system or pip nvidia-*-cu13 wheels)." >&2
    exit 1
  fi
  if ! gpus=$(nvidia-smi -L 2>&1) || [ -z "$gpus" ]; then
    echo "gpu-check: nvidia-smi finds no usable NVIDIA GPU: $gpus" >&2
    exit 1
  fi
  echo "$gpus"
fi

"$root/deploy/deps/fetch.sh" "$deps/gpu" "$root/deploy/deps/gpu.lock"
lib="$deps/gpu/onnxruntime/libonnxruntime.so.1"

# CUDA and cuDNN: the system's, plus any nvidia-* wheels of the machine's Pythons.
paths=()
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu; do
  [ -d "$d" ] && paths+=("$d")
done
for py in python3 /usr/bin/python3 /usr/local/bin/python3; do
  command -v "$py" >/dev/null 2>&1 || continue
  while IFS= read -r d; do paths+=("$d"); done < <("$py" - <<'PY' 2>/dev/null || true
import glob, os, site, sys
roots = set(site.getsitepackages() + [site.getusersitepackages()] + sys.path)
for r in roots:
    for d in glob.glob(os.path.join(r, "nvidia", "*", "lib")):
        print(d)
PY
)
done
ldpath=$(IFS=:; echo "${paths[*]:-}")
export LD_LIBRARY_PATH="$deps/gpu/onnxruntime${ldpath:+:$ldpath}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ "$dry" = 0 ] && ! ldconfig -p | grep -q libcudnn && ! ls ${ldpath//:/ } 2>/dev/null | grep -q libcudnn; then
  echo "gpu-check: warning: no cuDNN library found (pip install nvidia-cudnn-cu13, or the system package); the CUDA provider will not load" >&2
fi
cd "$root"
EDGEFLEET_ORT_LIB="$lib" exec go test -tags gpu -count=1 -v -timeout 10m ./hil-tests/gpucheck/ "$@"
