package main

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/edgefleet/edgefleet/agent/tensor"
)

// sampleRequest is the digits sample (a handwritten 5), loaded by main.
var sampleRequest []byte

// padModel appends an unknown field to a serialized ONNX model (readers
// skip it): different bytes of the same network, a new version, and with
// pad > 0 an artifact of about pad bytes.
func padModel(model []byte, tag byte, pad int) []byte {
	out := append([]byte{}, model...)
	n := max(pad-len(model)-8, 8)
	// field 1000, wire type 2 (length-delimited), varint length
	out = append(out, 0xc2, 0x3e)
	out = binary.AppendUvarint(out, uint64(n))
	// Random bytes: a transport that compresses must not shrink them.
	r := rand.New(rand.NewPCG(uint64(tag), 12))
	for range n {
		out = append(out, byte(r.Uint32()))
	}
	return out
}

// goldenInput is a golden input with its top-left pixel set to 0.5 (the
// NaN model is finite there, so its golden vector passes on the device).
func goldenInput() []tensor.Tensor {
	in := []tensor.Tensor{{Name: "input", DType: tensor.FP32, Shape: []int64{1, 1, 8, 8}, Data: make([]byte, 64*4)}}
	for k := range 64 {
		v := float32((k*5)%8) / 8
		if k == 0 {
			v = 0.5
		}
		binary.LittleEndian.PutUint32(in[0].Data[4*k:], math.Float32bits(v))
	}
	return in
}

// cgroup v1 (memory, cpu) limits for the device agents, where the kernel
// offers them; the report says which applied.
const cgroupRoot = "/sys/fs/cgroup"

func (f *Fleet) limit(id string, pid int) {
	set := func(ctrl, file, val string) bool {
		dir := filepath.Join(cgroupRoot, ctrl, f.cfg.Prefix, id)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return false
		}
		if file != "" {
			if err := os.WriteFile(filepath.Join(dir, file), []byte(val), 0o644); err != nil {
				return false
			}
		}
		return os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644) == nil
	}
	mem := set("memory", "memory.limit_in_bytes", strconv.FormatInt(f.cfg.MemLimit, 10))
	cpu := set("cpu", "cpu.cfs_quota_us", strconv.Itoa(f.cfg.CPUQuotaPct*1000)) // of a 100 ms period
	if f.limits == "" {
		f.limits = fmt.Sprintf("cgroup v1: memory %d MiB (%v), CPU %d%% of a core (%v)", f.cfg.MemLimit>>20, ok(mem), f.cfg.CPUQuotaPct, ok(cpu))
		f.log.Info("device limits", "limits", f.limits)
	}
}

func ok(b bool) string {
	if b {
		return "applied"
	}
	return "not available"
}

func (f *Fleet) unlimitAll() {
	for _, ctrl := range []string{"memory", "cpu"} {
		base := filepath.Join(cgroupRoot, ctrl, f.cfg.Prefix)
		ents, _ := os.ReadDir(base)
		for _, e := range ents {
			if err := os.Remove(filepath.Join(base, e.Name())); err != nil {
				slog.Debug("cgroup", "err", err)
			}
		}
		_ = os.Remove(base)
	}
}

func replaceOnce(s, old, repl string) string {
	return strings.Replace(s, old, repl, 1)
}
