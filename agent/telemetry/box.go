package telemetry

import (
	"bufio"
	"bytes"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/ota/wire"
)

// boxSampler measures the machine: the agent process's CPU and memory, the
// whole machine's CPU and memory, the data folder's file system and, when
// nvidia-smi is present, the GPUs.
type boxSampler struct {
	dataDir string
	gpu     *gpuWatcher // nil without nvidia-smi

	mu   sync.Mutex // guards last
	last wire.BoxStats

	prevWall    time.Time
	prevProc    time.Duration // process CPU time at prevWall
	prevBusy    uint64        // /proc/stat busy jiffies
	prevTotal   uint64        // /proc/stat total jiffies
	havePrevSys bool
}

func newBoxSampler(dataDir string) *boxSampler {
	return &boxSampler{dataDir: dataDir, gpu: startGPUWatcher("", 0)}
}

func (b *boxSampler) sample(now time.Time) wire.BoxStats {
	st := wire.BoxStats{Cores: runtime.NumCPU()}
	proc := processCPU()
	if !b.prevWall.IsZero() {
		if wall := now.Sub(b.prevWall); wall > 0 && proc >= b.prevProc {
			st.ProcessCPU = round4(float64(proc-b.prevProc) / float64(wall))
		}
	}
	b.prevWall, b.prevProc = now, proc
	if busy, total, ok := systemCPU(); ok {
		if b.havePrevSys && total > b.prevTotal && busy >= b.prevBusy {
			st.SystemCPU = round4(min(float64(busy-b.prevBusy)/float64(total-b.prevTotal), 1))
		}
		b.prevBusy, b.prevTotal, b.havePrevSys = busy, total, true
	}
	st.RSSBytes = rss()
	st.MemTotalBytes, st.MemAvailableBytes = memInfo()
	st.DiskFreeBytes, st.DiskTotalBytes = diskSpace(b.dataDir)
	if b.gpu != nil {
		st.GPUs = b.gpu.latest()
	}
	b.mu.Lock()
	b.last = st
	b.mu.Unlock()
	return st
}

func (b *boxSampler) latest() wire.BoxStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last
}

func (b *boxSampler) close() {
	if b.gpu != nil {
		b.gpu.close()
	}
}

func round4(v float64) float64 { return float64(int64(v*1e4+0.5)) / 1e4 }

// systemCPU reads the machine's busy and total jiffies from /proc/stat.
func systemCPU() (busy, total uint64, ok bool) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil {
		return 0, 0, false
	}
	return parseProcStat(line)
}

// parseProcStat parses the aggregate "cpu" line of /proc/stat: user nice
// system idle iowait irq softirq steal (guest time is already in user).
func parseProcStat(line string) (busy, total uint64, ok bool) {
	fields := strings.Fields(line)
	if len(fields) < 5 || fields[0] != "cpu" {
		return 0, 0, false
	}
	var idle uint64
	for i, f := range fields[1:] {
		if i >= 8 {
			break
		}
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return 0, 0, false
		}
		total += v
		if i == 3 || i == 4 { // idle, iowait
			idle += v
		}
	}
	return total - idle, total, true
}

// rss is the process's resident set from /proc/self/statm.
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * uint64(os.Getpagesize())
}

// memInfo reads MemTotal and MemAvailable from /proc/meminfo.
func memInfo() (total, avail uint64) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, 0
	}
	return parseMemInfo(b)
}

func parseMemInfo(b []byte) (total, avail uint64) {
	for line := range bytes.Lines(b) {
		f := strings.Fields(string(line))
		if len(f) < 2 {
			continue
		}
		v, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			continue
		}
		if len(f) > 2 && f[2] == "kB" {
			v *= 1024
		}
		switch f[0] {
		case "MemTotal:":
			total = v
		case "MemAvailable:":
			avail = v
		}
	}
	return total, avail
}
