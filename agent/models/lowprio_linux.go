package models

import (
	"runtime"
	"syscall"
)

// lowPriority runs fn on a dedicated OS thread with nice 10, so model loads
// (graph optimisation, warm-up runs, and the onnxruntime threads they spawn,
// which inherit the niceness) yield the CPU to inference on other models.
// The thread is discarded afterwards.
func lowPriority(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		// Not unlocked: the goroutine's exit ends the thread with its niceness.
		_ = syscall.Setpriority(syscall.PRIO_PROCESS, syscall.Gettid(), 10)
		fn()
	}()
	<-done
}
