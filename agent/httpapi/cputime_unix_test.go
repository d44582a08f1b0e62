//go:build unix

package httpapi

import (
	"syscall"
	"time"
)

// processCPU returns the CPU time (user+system) this process has used. On a
// shared machine it measures work done, where wall time also counts waiting.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
