package loadgen

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// clockTick is the unit of utime and stime in /proc/<pid>/stat (USER_HZ,
// 100 on every Linux architecture Go supports).
const clockTick = 10 * time.Millisecond

// ProcessCPU returns the CPU time (user + system, all threads, including
// exited ones) that process pid has used so far, read from /proc/<pid>/stat;
// 0 when it cannot be read.
func ProcessCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	_, _, cpu, ok := parseStat(b)
	if !ok {
		return 0
	}
	return cpu
}

// GroupCPU returns the CPU time of every live process in process group pgid
// (a Node.js cluster: the primary and its workers).
func GroupCPU(pgid int) time.Duration {
	dirs, _ := filepath.Glob("/proc/[0-9]*/stat")
	var total time.Duration
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		if _, pg, cpu, ok := parseStat(b); ok && pg == pgid {
			total += cpu
		}
	}
	return total
}

// parseStat reads the parent pid, process group and utime+stime of a
// /proc/<pid>/stat line. The command name in parentheses may hold spaces, so
// fields are counted from the last ')'.
func parseStat(b []byte) (ppid, pgrp int, cpu time.Duration, ok bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, 0, false
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state): ppid is field 4, pgrp 5, utime 14, stime 15.
	if len(f) < 13 {
		return 0, 0, 0, false
	}
	ppid, _ = strconv.Atoi(string(f[1]))
	pgrp, _ = strconv.Atoi(string(f[2]))
	ut, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	st, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, 0, false
	}
	return ppid, pgrp, time.Duration(ut+st) * clockTick, true
}
