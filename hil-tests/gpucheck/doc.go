// Package gpucheck holds `make gpu-check`: the CUDA execution-provider path
// run end to end on a machine with an NVIDIA GPU (see run.sh). Its test,
// behind the gpu build tag, starts the agent with providers [cuda, cpu] on
// onnxruntime 1.29's CUDA 13 build, checks that the model is served on the
// GPU with the CPU's answers, then injects a GPU run failure and checks that
// requests still succeed on the CPU and that the version reports itself
// degraded in its metadata and /metrics. It is not part of `make test`.
package gpucheck
