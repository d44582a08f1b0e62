package fleet

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/edgefleet/edgefleet/ota/wire"
)

// DetectHardware describes this machine: CPU model, logical CPUs, memory,
// OS and architecture (from /proc on Linux). GPU and execution providers
// are the runtime's to tell.
func DetectHardware() wire.Hardware {
	hw := wire.Hardware{Cores: runtime.NumCPU(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if ok && strings.TrimSpace(k) == "model name" {
				hw.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) >= 2 && fields[0] == "MemTotal:" {
				if kb, err := strconv.ParseInt(fields[1], 10, 64); err == nil {
					hw.MemBytes = kb << 10
				}
				break
			}
		}
		f.Close()
	}
	return hw
}

// mergeHardware returns base with every non-zero field of over applied.
func mergeHardware(base, over wire.Hardware) wire.Hardware {
	if over.CPU != "" {
		base.CPU = over.CPU
	}
	if over.Cores != 0 {
		base.Cores = over.Cores
	}
	if over.MemBytes != 0 {
		base.MemBytes = over.MemBytes
	}
	if over.GPU != "" {
		base.GPU = over.GPU
	}
	if len(over.Providers) > 0 {
		base.Providers = over.Providers
	}
	if over.OS != "" {
		base.OS = over.OS
	}
	if over.Arch != "" {
		base.Arch = over.Arch
	}
	return base
}
