//go:build !linux

package quantize

// threadCPU is unavailable here: Latencies falls back to wall time.
func threadCPU() (int64, bool) { return 0, false }
