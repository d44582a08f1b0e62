//go:build !unix

package httpapi

import "time"

func processCPU() time.Duration { return 0 }
