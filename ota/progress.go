package ota

import (
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Progress receives transfer events, for progress bars or log lines. Update
// is called from the transferring goroutine and must not block for long.
type Progress interface {
	Update(Event)
}

// ProgressFunc adapts a function to Progress.
type ProgressFunc func(Event)

// Update calls f(e).
func (f ProgressFunc) Update(e Event) { f(e) }

// EventKind says what happened to a blob.
type EventKind int

// Event kinds, in the order a transfer produces them.
const (
	// EventStart: the transfer of a blob begins (Done is the resume offset).
	EventStart EventKind = iota + 1
	// EventAdvance: more bytes moved; Done is the running total.
	EventAdvance
	// EventRetry: an attempt failed (Err) and will be retried from Done.
	EventRetry
	// EventRestart: the registry ignored a range request or the persisted
	// partial was unusable; the blob restarts from 0.
	EventRestart
	// EventSkip: the blob is already present (in the sink or the registry).
	EventSkip
	// EventDone: the blob is complete and verified.
	EventDone
	// EventFail: the transfer failed for good (Err).
	EventFail
)

func (k EventKind) String() string {
	switch k {
	case EventStart:
		return "start"
	case EventAdvance:
		return "advance"
	case EventRetry:
		return "retry"
	case EventRestart:
		return "restart"
	case EventSkip:
		return "skip"
	case EventDone:
		return "done"
	case EventFail:
		return "fail"
	}
	return "unknown"
}

// Event describes progress on one blob.
type Event struct {
	Kind EventKind
	// Push is true for uploads, false for downloads.
	Push bool
	// Title is the file name of a layer ("" for configs and manifests).
	Title  string
	Digest v1.Hash
	// Done and Total are byte counts.
	Done, Total int64
	Err         error
}
