package dashboard

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"
)

// maxIDs bounds the device ids a change event names; beyond it the event
// says All instead.
const maxIDs = 50

// change is the payload of a "change" event: what moved since the last
// one. Pages re-read what they show when it concerns them.
type change struct {
	// Devices are devices whose presence or reported state moved;
	// Telemetry devices with new telemetry. All replaces both when many
	// devices moved.
	Devices   []string `json:"devices,omitempty"`
	Telemetry []string `json:"telemetry,omitempty"`
	All       bool     `json:"all,omitempty"`
	// Rollouts is true when a rollout's state or progress moved.
	Rollouts bool `json:"rollouts,omitempty"`

	devices, telemetry map[string]bool
}

func (c *change) addDevice(id string)    { c.devices = addID(c.devices, id, &c.All) }
func (c *change) addTelemetry(id string) { c.telemetry = addID(c.telemetry, id, &c.All) }

func addID(m map[string]bool, id string, all *bool) map[string]bool {
	if *all {
		return m
	}
	if m == nil {
		m = map[string]bool{}
	}
	m[id] = true
	if len(m) > maxIDs {
		*all = true
	}
	return m
}

func (c *change) empty() bool {
	return !c.All && !c.Rollouts && len(c.devices) == 0 && len(c.telemetry) == 0
}

// payload renders the change as an event's data.
func (c *change) payload() []byte {
	if !c.All {
		c.Devices, c.Telemetry = keys(c.devices), keys(c.telemetry)
	}
	b, _ := json.Marshal(c)
	return b
}

func keys(m map[string]bool) []string {
	if len(m) == 0 {
		return nil
	}
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// broker collects changes and hands them to the connected event streams.
type broker struct {
	mu      sync.Mutex // guards pending, subs, closed
	pending change
	subs    map[chan []byte]struct{}
	closed  bool
}

func newBroker() *broker { return &broker{subs: map[chan []byte]struct{}{}} }

// mark records a change, sent at the next flush.
func (b *broker) mark(fn func(*change)) {
	b.mu.Lock()
	if len(b.subs) > 0 {
		fn(&b.pending)
	}
	b.mu.Unlock()
}

// flush sends the pending change to every stream; a stream still busy with
// the previous one misses it (its page re-reads everything on the next).
func (b *broker) flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pending.empty() {
		return
	}
	data := b.pending.payload()
	b.pending = change{}
	for ch := range b.subs {
		select {
		case ch <- data:
		default:
		}
	}
}

func (b *broker) subscribe() (chan []byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, false
	}
	ch := make(chan []byte, 1)
	b.subs[ch] = struct{}{}
	return ch, true
}

func (b *broker) unsubscribe(ch chan []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.subs[ch]; ok {
		delete(b.subs, ch)
		close(ch)
	}
}

func (b *broker) clients() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

// close ends every stream; later subscriptions are refused.
func (b *broker) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for ch := range b.subs {
		delete(b.subs, ch)
		close(ch)
	}
}

// Bounds of the ?max= parameter of /api/events, in seconds.
const (
	minStreamSeconds = 1
	maxStreamSeconds = 3600
)

// stream serves GET /api/events as server-sent events: a "hello" event
// first, then "change" events, and a comment every KeepAlive. With
// ?max=SECONDS the server ends the stream after that long and the browser
// reconnects (after the "retry" time): proxies that cut long responses,
// and headless browsers with a virtual time budget, need streams that end.
func (s *Server) stream(w http.ResponseWriter, r *http.Request) {
	maxS, err := intParam(r, "max", maxStreamSeconds, minStreamSeconds, maxStreamSeconds)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	end := time.NewTimer(time.Duration(maxS) * time.Second)
	defer end.Stop()
	rc := http.NewResponseController(w)
	ch, ok := s.events.subscribe()
	if !ok {
		writeError(w, http.StatusServiceUnavailable, fmt.Errorf("the hub is shutting down"))
		return
	}
	defer s.events.unsubscribe(ch)
	// The stream outlives the server's write timeout, if any.
	rc.SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, "retry: 3000\nevent: hello\ndata: {\"time\":%q}\n\n", s.cfg.Now().UTC().Format(time.RFC3339Nano))
	if err := rc.Flush(); err != nil {
		return
	}
	keep := time.NewTicker(s.cfg.KeepAlive)
	defer keep.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-end.C:
			return
		case data, ok := <-ch:
			if !ok {
				return
			}
			fmt.Fprintf(w, "event: change\ndata: %s\n\n", data)
		case <-keep.C:
			fmt.Fprint(w, ": keep-alive\n\n")
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}
