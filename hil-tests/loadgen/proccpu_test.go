package loadgen

import (
	"os"
	"syscall"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	// A command name with spaces and a ')' must not shift the fields.
	line := []byte("4242 (node (worker) 1) S 7 4240 4240 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 11 0 1 2 3\n")
	ppid, pgrp, cpu, ok := parseStat(line)
	if !ok || ppid != 7 || pgrp != 4240 || cpu != 280*clockTick {
		t.Fatalf("parseStat = %d, %d, %v, %v; want 7, 4240, 2.8s, true", ppid, pgrp, cpu, ok)
	}
	if _, _, _, ok := parseStat([]byte("garbage")); ok {
		t.Fatal("parseStat accepted a line without fields")
	}
}

func TestProcessCPU(t *testing.T) {
	// Burn enough CPU for a few clock ticks.
	deadline := time.Now().Add(100 * time.Millisecond)
	x := 0
	for time.Now().Before(deadline) {
		x++
	}
	self := ProcessCPU(os.Getpid())
	if self < clockTick {
		t.Fatalf("ProcessCPU(self) = %v after 100ms of spinning (%d)", self, x)
	}
	if g := GroupCPU(syscall.Getpgrp()); g < self {
		t.Fatalf("GroupCPU(own group) = %v < ProcessCPU(self) = %v", g, self)
	}
	if ProcessCPU(-1) != 0 {
		t.Fatal("ProcessCPU of a missing process is not 0")
	}
}
