// Package hubtest runs a real hub in the test process, on loopback, for the
// tests of the hub's packages and of the agent packages that talk to it.
package hubtest

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/hub"
	"github.com/edgefleet/edgefleet/hub/enroll"
)

// Hub is a hub serving in the background. Restart keeps its data folder
// and the addresses its first start picked (agents and refs name them).
type Hub struct {
	*hub.Hub
	// Opts are the options of the next (re)start.
	Opts hub.Options

	t    testing.TB
	mu   sync.Mutex // guards stop
	stop func()
}

// Start runs a hub with opts and stops it when the test ends; an error from
// its Run fails the test. Zero values get test defaults: DataDir a
// temporary folder, APIAddr and MQTTAddr "127.0.0.1:0", RegistryAddr
// hub.Off (pass "127.0.0.1:0" for an embedded registry).
func Start(t testing.TB, opts hub.Options) *Hub {
	t.Helper()
	if opts.DataDir == "" {
		opts.DataDir = t.TempDir()
	}
	if opts.APIAddr == "" {
		opts.APIAddr = "127.0.0.1:0"
	}
	if opts.MQTTAddr == "" {
		opts.MQTTAddr = "127.0.0.1:0"
	}
	if opts.RegistryAddr == "" {
		opts.RegistryAddr = hub.Off
	}
	h := &Hub{Opts: opts, t: t}
	h.start()
	t.Cleanup(h.Stop)
	// Restarts reuse the addresses the first start picked.
	h.Opts.APIAddr = hostPort(h.APIURL())
	if h.Opts.Broker == "" {
		h.Opts.MQTTAddr = hostPort(h.MQTTURL())
	}
	if h.Opts.RegistryAddr != hub.Off {
		h.Opts.RegistryAddr = h.RegistryAddr()
	}
	return h
}

func hostPort(u string) string {
	_, rest, _ := strings.Cut(u, "://")
	return rest
}

func (h *Hub) start() {
	t := h.t
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var (
		hb  *hub.Hub
		err error
	)
	// A restarted hub may find its old ports (TCP, and QUIC's UDP) briefly
	// taken.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		hb, err = hub.New(ctx, h.Opts)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) && !isOpError(err) || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		cancel()
		t.Fatalf("start hub: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- hb.Run(ctx) }()
	var once sync.Once
	h.Hub = hb
	h.mu.Lock()
	h.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("hub Run: %v", err)
			}
		})
	}
	h.mu.Unlock()
}

func isOpError(err error) bool {
	var opErr *net.OpError
	return errors.As(err, &opErr)
}

// Stop stops the hub and waits for Run to return; stopping twice is fine.
func (h *Hub) Stop() {
	h.mu.Lock()
	stop := h.stop
	h.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// Restart stops the hub and starts it again on the same data folder and
// addresses.
func (h *Hub) Restart() {
	h.t.Helper()
	h.Stop()
	h.start()
}

// Token creates a one-time enrollment token.
func (h *Hub) Token(t testing.TB, opts enroll.TokenOptions) string {
	t.Helper()
	tok, _, err := h.CreateToken(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
