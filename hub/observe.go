package hub

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/quic-go/quic-go"

	"github.com/edgefleet/edgefleet/hub/telemetry"
	"github.com/edgefleet/edgefleet/ota/durable"
)

// DefaultMetricsAddr is the Prometheus listener's address by default in
// `edgefleet hub` (plain HTTP, GET /metrics).
const DefaultMetricsAddr = "127.0.0.1:7444"

// openTelemetry opens the telemetry store, binds the QUIC listener (by
// default on the API's host and port, over UDP) and the metrics listener.
func (h *Hub) openTelemetry(serverCert tls.Certificate) error {
	o := h.opts
	var err error
	h.telem, err = telemetry.Open(telemetry.Options{DB: h.db, Window: o.TelemetryWindow, MaxSeries: o.TelemetryMaxSeries,
		Logger: h.log.With("component", "telemetry")})
	if err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	h.telemRecv = telemetry.NewReceiver(h.telem, h.reg, h.log.With("component", "telemetry"))
	h.metrics = prometheus.NewRegistry()
	h.metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), h.telem)

	quicAddr := o.QUICAddr
	if quicAddr == "" {
		quicAddr = h.apiLn.Addr().String()
	}
	if quicAddr != Off {
		key, err := quicResetKey(o.DataDir)
		if err != nil {
			return fmt.Errorf("hub: %w", err)
		}
		if h.quic, err = h.telemRecv.ListenQUIC(quicAddr, h.ca.ServerTLS(serverCert, tls.RequireAndVerifyClientCert, nil), key); err != nil {
			return fmt.Errorf("hub: %w", err)
		}
	}
	if metricsAddr := o.MetricsAddr; metricsAddr != "" && metricsAddr != Off {
		if h.metricsLn, err = net.Listen("tcp", metricsAddr); err != nil {
			return fmt.Errorf("hub: metrics listener: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(h.metrics, promhttp.HandlerOpts{Registry: h.metrics}))
		h.metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(h.log.Handler(), slog.LevelDebug)}
	}
	return nil
}

// runTelemetry subscribes to the devices' telemetry topics and serves QUIC
// and /metrics until ctx ends; done is closed when all of it stopped.
func (h *Hub) runTelemetry(ctx context.Context, errc chan<- error) (done <-chan struct{}, err error) {
	if err := h.telemRecv.SubscribeMQTT(ctx, h.bus); err != nil {
		return nil, fmt.Errorf("hub: telemetry: %w", err)
	}
	d := make(chan struct{})
	go func() {
		defer close(d)
		if h.quic == nil {
			<-ctx.Done()
			return
		}
		if err := h.quic.Serve(ctx); err != nil {
			errc <- err
		}
	}()
	if h.metricsSrv != nil {
		go func() { errc <- serve(h.metricsSrv, h.metricsLn) }()
	}
	return d, nil
}

// closeTelemetry stops the QUIC and metrics listeners.
func (h *Hub) closeTelemetry() []error {
	var errs []error
	if h.quic != nil {
		errs = append(errs, ignoreClosed(h.quic.Close()))
	}
	if h.metricsSrv != nil {
		errs = append(errs, ignoreClosed(h.metricsSrv.Close()))
	} else if h.metricsLn != nil {
		errs = append(errs, ignoreClosed(h.metricsLn.Close()))
	}
	return errs
}

// Telemetry is the fleet's telemetry store (dashboard, API, rollout
// gates).
func (h *Hub) Telemetry() *telemetry.Store { return h.telem }

// Metrics is the registry served on /metrics; packages built on the hub
// may register their collectors on it.
func (h *Hub) Metrics() *prometheus.Registry { return h.metrics }

// MetricsURL is the Prometheus endpoint ("http://host:port/metrics"), ""
// when it is off.
func (h *Hub) MetricsURL() string {
	if h.metricsLn == nil {
		return ""
	}
	return "http://" + h.metricsLn.Addr().String() + "/metrics"
}

// QUICAddr is the telemetry QUIC listener's UDP address, "" when off.
func (h *Hub) QUICAddr() string {
	if h.quic == nil {
		return ""
	}
	return h.quic.Addr().String()
}

// quicResetKeyFile holds the telemetry QUIC listener's stateless reset key
// (32 random bytes, 0600), kept across restarts so that agents connected to
// the previous run learn at their next packet that their connection is gone.
const quicResetKeyFile = "quic_reset.key"

func quicResetKey(dir string) (*quic.StatelessResetKey, error) {
	path := filepath.Join(dir, quicResetKeyFile)
	var key quic.StatelessResetKey
	b, err := os.ReadFile(path)
	switch {
	case err == nil && len(b) == len(key):
		copy(key[:], b)
		return &key, nil
	case err == nil:
		return nil, fmt.Errorf("%s: %d bytes, want %d", path, len(b), len(key))
	case !errors.Is(err, os.ErrNotExist):
		return nil, err
	}
	if _, err := rand.Read(key[:]); err != nil {
		return nil, err
	}
	if err := durable.WriteFile(path, key[:], 0o600); err != nil {
		return nil, fmt.Errorf("QUIC reset key: %w", err)
	}
	return &key, nil
}
