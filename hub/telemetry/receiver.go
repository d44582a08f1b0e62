package telemetry

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/edgefleet/edgefleet/hub/ca"
	"github.com/edgefleet/edgefleet/hub/registry"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// Transport names, as the store records them.
const (
	TransportMQTT = "mqtt"
	TransportQUIC = "quic"
)

// Devices authorizes senders; *registry.Registry implements it.
type Devices interface {
	Get(ctx context.Context, id string) (registry.Device, error)
	Check(ctx context.Context, id, serial string) error
}

// Bus is the hub's MQTT connection; the embedded broker and an external
// broker connection (shadow.Bus) fit.
type Bus interface {
	Publish(ctx context.Context, topic string, payload []byte, retain bool, qos byte) error
	Subscribe(ctx context.Context, filter string, h func(topic string, payload []byte)) error
}

// Receiver takes reports from devices over MQTT and QUIC into a Store and
// acknowledges them.
type Receiver struct {
	store   *Store
	devices Devices
	log     *slog.Logger
}

// NewReceiver receives into store; devices decides who may send.
func NewReceiver(store *Store, devices Devices, log *slog.Logger) *Receiver {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Receiver{store: store, devices: devices, log: log}
}

// SubscribeMQTT subscribes to every device's telemetry topic and answers
// each report on the device's telemetry/ack topic (QoS 1). The broker's
// ACL guarantees that a device publishes only on its own topic; reports
// of unknown or revoked devices are dropped unanswered.
func (r *Receiver) SubscribeMQTT(ctx context.Context, bus Bus) error {
	return bus.Subscribe(ctx, wire.Filter(wire.KindTelemetry), func(topic string, payload []byte) {
		r.handleMQTT(ctx, bus, topic, payload)
	})
}

func (r *Receiver) handleMQTT(ctx context.Context, bus Bus, topic string, payload []byte) {
	id, kind, ok := wire.ParseTopic(topic)
	if !ok || kind != wire.KindTelemetry {
		return
	}
	d, err := r.devices.Get(ctx, id)
	if err != nil || d.Revoked {
		r.log.Warn("telemetry of an unknown or revoked device dropped", "device", id, "err", err)
		return
	}
	ack := r.receive(ctx, id, TransportMQTT, payload)
	b, err := wire.Encode(ack)
	if err == nil {
		err = bus.Publish(ctx, wire.Topic(id, wire.KindTelemetryAck), b, false, 1)
	}
	if err != nil && ctx.Err() == nil {
		r.log.Warn("telemetry acknowledgement not sent", "device", id, "err", err)
	}
}

// receive decodes and stores one report; the acknowledgement says what
// happened.
func (r *Receiver) receive(ctx context.Context, id, transport string, payload []byte) wire.TelemetryReportAck {
	var rep wire.TelemetryReport
	if err := wire.Decode(payload, &rep); err != nil {
		r.log.Warn("malformed telemetry report", "device", id, "transport", transport, "err", err)
		r.store.ingestMetrics.observe(transport, IngestResult{}, err, 0)
		return wire.TelemetryReportAck{Stream: rep.Stream, Error: err.Error()}
	}
	ack, err := r.store.Ingest(ctx, id, transport, &rep)
	if err != nil {
		level := slog.LevelError
		if errors.Is(err, wire.ErrInvalid) {
			level = slog.LevelWarn
		}
		r.log.Log(ctx, level, "telemetry report not stored", "device", id, "transport", transport, "err", err)
	}
	return ack
}

// QUICServer serves telemetry over QUIC: one report per bidirectional
// stream (see wire.TelemetryALPN). Clients authenticate with their
// device certificate; revoked and superseded certificates are refused at
// the handshake (also when resuming a session) and before every report.
type QUICServer struct {
	r   *Receiver
	udp *net.UDPConn
	tr  *quic.Transport
	ln  *quic.Listener

	wg sync.WaitGroup

	mu    sync.Mutex // guards conns
	conns map[*quic.Conn]struct{}
}

// ListenQUIC listens on addr (UDP) with the hub's server certificate and
// client CAs from base. resetKey, when not nil, is the stateless reset key:
// a hub restarted with the same key answers the packets of connections it
// no longer knows with a stateless reset, so agents open a new connection
// at once instead of waiting for an acknowledgement that cannot come. Keep
// it secret and stable across restarts (the hub keeps it in its data
// folder).
func (r *Receiver) ListenQUIC(addr string, base *tls.Config, resetKey *quic.StatelessResetKey) (*QUICServer, error) {
	cfg := base.Clone()
	cfg.MinVersion = tls.VersionTLS13
	cfg.NextProtos = []string{wire.TelemetryALPN}
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	prev := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if prev != nil {
			if err := prev(cs); err != nil {
				return err
			}
		}
		return r.checkPeer(&cs)
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("telemetry: QUIC listener on %s: %w", addr, err)
	}
	udp, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("telemetry: QUIC listener on %s: %w", addr, err)
	}
	tr := &quic.Transport{Conn: udp, StatelessResetKey: resetKey}
	ln, err := tr.Listen(cfg, &quic.Config{
		HandshakeIdleTimeout: 10 * time.Second,
		MaxIdleTimeout:       2 * time.Minute,
		MaxIncomingStreams:   16,
	})
	if err != nil {
		tr.Close()
		udp.Close()
		return nil, fmt.Errorf("telemetry: QUIC listener on %s: %w", addr, err)
	}
	return &QUICServer{r: r, udp: udp, tr: tr, ln: ln, conns: map[*quic.Conn]struct{}{}}, nil
}

// checkPeer admits a current, not revoked device certificate.
func (r *Receiver) checkPeer(cs *tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("telemetry: client certificate required")
	}
	id := ca.IdentityOf(cs.PeerCertificates[0])
	if id.Kind != ca.KindDevice {
		return fmt.Errorf("telemetry: %q: %w", id.ID, ca.ErrNotAllowed)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return r.devices.Check(ctx, id.ID, ca.SerialString(id.Serial))
}

// Addr is the UDP address the server listens on.
func (q *QUICServer) Addr() net.Addr { return q.ln.Addr() }

// Serve accepts connections until ctx ends or Close, then waits for the
// streams in progress.
func (q *QUICServer) Serve(ctx context.Context) error {
	defer q.wg.Wait()
	go func() {
		<-ctx.Done()
		q.Close()
	}()
	for {
		conn, err := q.ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, quic.ErrServerClosed) {
				return nil
			}
			return fmt.Errorf("telemetry: QUIC accept: %w", err)
		}
		q.wg.Go(func() { q.serveConn(ctx, conn) })
	}
}

// Close stops listening and closes the connections, telling the agents
// (CONNECTION_CLOSE) so they reconnect to the next hub at once.
func (q *QUICServer) Close() error {
	err := q.ln.Close()
	q.mu.Lock()
	for c := range q.conns {
		c.CloseWithError(0, "hub shutting down")
	}
	clear(q.conns)
	q.mu.Unlock()
	if terr := q.tr.Close(); err == nil && !errors.Is(terr, quic.ErrTransportClosed) {
		err = terr
	}
	// The transport does not own a socket it was given.
	if uerr := q.udp.Close(); err == nil && !errors.Is(uerr, net.ErrClosed) {
		err = uerr
	}
	return err
}

func (q *QUICServer) serveConn(ctx context.Context, conn *quic.Conn) {
	q.mu.Lock()
	q.conns[conn] = struct{}{}
	q.mu.Unlock()
	defer func() {
		q.mu.Lock()
		delete(q.conns, conn)
		q.mu.Unlock()
	}()
	cs := conn.ConnectionState().TLS
	if len(cs.PeerCertificates) == 0 {
		conn.CloseWithError(1, "client certificate required")
		return
	}
	id := ca.IdentityOf(cs.PeerCertificates[0])
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		str, err := conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		wg.Go(func() { q.serveStream(ctx, conn, id, str) })
	}
}

func (q *QUICServer) serveStream(ctx context.Context, conn *quic.Conn, id ca.Identity, str *quic.Stream) {
	defer str.Close()
	str.SetDeadline(time.Now().Add(time.Minute))
	// A certificate revoked since the handshake sends no more.
	if err := q.r.devices.Check(ctx, id.ID, ca.SerialString(id.Serial)); err != nil {
		q.r.log.Warn("QUIC telemetry of a refused device", "device", id.ID, "err", err)
		conn.CloseWithError(2, "certificate refused")
		return
	}
	raw, err := io.ReadAll(io.LimitReader(str, wire.MaxPayload+1))
	var ack wire.TelemetryReportAck
	switch {
	case err != nil:
		str.CancelWrite(0)
		return
	case len(raw) > wire.MaxPayload:
		str.CancelRead(0)
		ack.Error = fmt.Sprintf("report larger than %d bytes", wire.MaxPayload)
	default:
		ack = q.r.receive(ctx, id.ID, TransportQUIC, raw)
	}
	b, err := wire.Encode(ack)
	if err == nil {
		_, err = str.Write(b)
	}
	if err != nil && ctx.Err() == nil {
		q.r.log.Warn("QUIC telemetry acknowledgement not sent", "device", id.ID, "err", err)
	}
}
