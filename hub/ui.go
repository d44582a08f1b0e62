package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/edgefleet/edgefleet/hub/dashboard"
)

// DefaultDashboardAddr is the dashboard listener's address by default in
// `edgefleet hub` (plain HTTP, read-only; see package dashboard).
const DefaultDashboardAddr = "127.0.0.1:7080"

// ui is the dashboard's listener and server; nil when it is off.
type ui struct {
	ln  net.Listener
	srv *http.Server
	d   *dashboard.Server
}

// openDashboard binds the dashboard listener (Options.DashboardAddr).
func (h *Hub) openDashboard() error {
	addr := h.opts.DashboardAddr
	if addr == "" || addr == Off {
		return nil
	}
	d, err := dashboard.New(dashboard.Config{Registry: h.reg, Rollouts: h.rollouts, Telemetry: h.telem,
		Events: h.shadow, Hosts: h.opts.Hosts, Logger: h.log.With("component", "dashboard")})
	if err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("hub: dashboard listener: %w", err)
	}
	if ip := tcpIP(ln.Addr()); ip != nil && !ip.IsLoopback() {
		h.log.Warn("the dashboard has no authentication; it listens beyond loopback (read-only fleet data)", "addr", ln.Addr())
	}
	h.ui = &ui{ln: ln, d: d, srv: &http.Server{Handler: d, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(h.log.Handler(), slog.LevelDebug)}}
	return nil
}

// runDashboard serves the dashboard until ctx ends; done is closed when
// its live updates stopped.
func (h *Hub) runDashboard(ctx context.Context, errc chan<- error) (done <-chan struct{}) {
	d := make(chan struct{})
	if h.ui == nil {
		close(d)
		return d
	}
	go func() { errc <- serve(h.ui.srv, h.ui.ln) }()
	go func() { h.ui.d.Run(ctx); close(d) }()
	return d
}

// closeDashboard stops the dashboard listener.
func (h *Hub) closeDashboard() error {
	if h.ui == nil {
		return nil
	}
	// Close the listener too: it is not the server's before Serve.
	return errors.Join(ignoreClosed(h.ui.srv.Close()), ignoreClosed(h.ui.ln.Close()))
}

// DashboardURL is the dashboard's address ("http://127.0.0.1:7080/"), ""
// when it is off.
func (h *Hub) DashboardURL() string {
	if h.ui == nil {
		return ""
	}
	return "http://" + h.ui.ln.Addr().String() + "/"
}
