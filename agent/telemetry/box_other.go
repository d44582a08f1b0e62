//go:build !unix

package telemetry

import "time"

func processCPU() time.Duration { return 0 }

func diskSpace(string) (free, total uint64) { return 0, 0 }
