package fleetapply

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"testing"

	"github.com/edgefleet/edgefleet/agent/cache"
	"github.com/edgefleet/edgefleet/agent/update"
	"github.com/edgefleet/edgefleet/ota/artifact"
)

func TestTransientClassification(t *testing.T) {
	full := &os.PathError{Op: "truncate", Path: "cache.db", Err: syscall.ENOSPC}
	for _, tc := range []struct {
		name string
		errs []error
		want bool
	}{
		{"disk full", []error{fmt.Errorf("sink append: %w", full)}, true},
		{"cache budget", []error{fmt.Errorf("pull: %w", cache.ErrNoSpace)}, true},
		{"registry refused connection", []error{fmt.Errorf("fetch: %w", syscall.ECONNREFUSED)}, true},
		{"cut mid-body", []error{fmt.Errorf("read blob: %w", io.ErrUnexpectedEOF)}, true},
		{"golden vector", []error{fmt.Errorf("%w: golden vector mismatch", update.ErrRefused)}, false},
		{"older version", []error{update.ErrOlderVersion}, false},
		{"bad artifact", []error{fmt.Errorf("%w: no model layer", artifact.ErrInvalid)}, false},
		{"refusal that mentions a full disk is still a refusal", []error{fmt.Errorf("%w: %w", update.ErrRefused, full)}, false},
		{"one transient, one refused", []error{full, update.ErrRefused}, false},
		{"unknown error", []error{errors.New("something else")}, false},
		{"none", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := allTransient(tc.errs); got != tc.want {
				t.Fatalf("allTransient(%v) = %v, want %v", tc.errs, got, tc.want)
			}
		})
	}
}
