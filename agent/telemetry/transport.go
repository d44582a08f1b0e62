package telemetry

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/quic-go/quic-go"

	"github.com/edgefleet/edgefleet/ota/wire"
)

// Transport names for Options.Transport.
const (
	TransportMQTT = "mqtt"
	TransportQUIC = "quic"
)

// Transport delivers one encoded wire.TelemetryReport and returns the
// hub's acknowledgement. Send calls never overlap.
type Transport interface {
	Name() string
	Send(ctx context.Context, report []byte, stream string, last uint64) (wire.TelemetryReportAck, error)
	Close() error
}

// ErrNoUplink means there is no connection to the hub to send on (not
// enrolled, not connected).
var ErrNoUplink = errors.New("telemetry: no connection to the hub")

// DialError is a failure to reach the hub's QUIC listener at all; it
// triggers the fallback to MQTT.
type DialError struct{ Err error }

func (e *DialError) Error() string { return "telemetry: QUIC dial: " + e.Err.Error() }
func (e *DialError) Unwrap() error { return e.Err }

// MQTTClient is what the MQTT transport needs of a paho client; the fleet
// client's connection (fleet.Client.MQTT) fits.
type MQTTClient interface {
	IsConnectionOpen() bool
	Publish(topic string, qos byte, retained bool, payload interface{}) paho.Token
	Subscribe(topic string, qos byte, callback paho.MessageHandler) paho.Token
}

// mqttTransport publishes reports on the device's telemetry topic (QoS 1)
// and waits for the acknowledgement on its telemetry/ack topic.
type mqttTransport struct {
	deviceID   string
	client     func() MQTTClient
	ackTimeout time.Duration
	log        *slog.Logger

	acks chan wire.TelemetryReportAck

	mu         sync.Mutex // guards subscribed, lastAck
	subscribed MQTTClient // the client the ack subscription was made on, nil when none holds
	lastAck    time.Time  // when the last acknowledgement arrived
}

// resubscribeAfter: the fleet client's connection has clean sessions, so
// a reconnection loses the ack subscription without telling us. When no
// acknowledgement arrived for this long the subscription is renewed before
// the next report (one SUBSCRIBE per report at a 10-second interval; none
// while a backlog drains).
const resubscribeAfter = 2 * time.Second

func newMQTTTransport(deviceID string, client func() MQTTClient, ackTimeout time.Duration, log *slog.Logger) *mqttTransport {
	return &mqttTransport{deviceID: deviceID, client: client, ackTimeout: ackTimeout, log: log,
		acks: make(chan wire.TelemetryReportAck, 16)}
}

func (t *mqttTransport) Name() string { return TransportMQTT }

func (t *mqttTransport) Close() error { return nil }

func (t *mqttTransport) onAck(_ paho.Client, m paho.Message) {
	var ack wire.TelemetryReportAck
	if err := wire.Decode(m.Payload(), &ack); err != nil {
		t.log.Warn("malformed telemetry acknowledgement ignored", "err", err)
		return
	}
	select {
	case t.acks <- ack:
	default: // nobody waits for this many: drop the oldest
		select {
		case <-t.acks:
		default:
		}
		t.acks <- ack
	}
}

// subscribe (re)subscribes to the ack topic when the client changed, a
// previous wait timed out or acknowledgements stopped for a while (the
// subscription may have died with a clean session).
func (t *mqttTransport) subscribe(ctx context.Context, c MQTTClient) error {
	t.mu.Lock()
	done := t.subscribed == c && time.Since(t.lastAck) < resubscribeAfter
	t.mu.Unlock()
	if done {
		return nil
	}
	if err := waitToken(ctx, c.Subscribe(wire.Topic(t.deviceID, wire.KindTelemetryAck), 1, t.onAck), t.ackTimeout); err != nil {
		return fmt.Errorf("telemetry: subscribe to acknowledgements: %w", err)
	}
	t.mu.Lock()
	t.subscribed = c
	t.mu.Unlock()
	return nil
}

func (t *mqttTransport) Send(ctx context.Context, report []byte, stream string, last uint64) (wire.TelemetryReportAck, error) {
	var c MQTTClient
	if t.client != nil {
		c = t.client()
	}
	if c == nil || !c.IsConnectionOpen() {
		t.mu.Lock()
		t.subscribed = nil
		t.mu.Unlock()
		return wire.TelemetryReportAck{}, ErrNoUplink
	}
	if err := t.subscribe(ctx, c); err != nil {
		return wire.TelemetryReportAck{}, err
	}
	// Forget acknowledgements of earlier attempts.
	for len(t.acks) > 0 {
		<-t.acks
	}
	if err := waitToken(ctx, c.Publish(wire.Topic(t.deviceID, wire.KindTelemetry), 1, false, report), t.ackTimeout); err != nil {
		return wire.TelemetryReportAck{}, fmt.Errorf("telemetry: publish: %w", err)
	}
	timer := time.NewTimer(t.ackTimeout)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return wire.TelemetryReportAck{}, ctx.Err()
		case <-timer.C:
			t.mu.Lock()
			t.subscribed = nil
			t.mu.Unlock()
			return wire.TelemetryReportAck{}, fmt.Errorf("telemetry: no acknowledgement within %v", t.ackTimeout)
		case ack := <-t.acks:
			if ack.Stream == stream && (ack.Seq >= last || ack.Error != "") {
				t.mu.Lock()
				t.lastAck = time.Now()
				t.mu.Unlock()
				return ack, nil
			}
			// An acknowledgement of an earlier report: keep waiting.
		}
	}
}

func waitToken(ctx context.Context, tok paho.Token, timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return fmt.Errorf("no answer within %v", timeout)
	}
}

// quicTransport sends each report on a new stream of one long-lived QUIC
// connection, re-dialled when it breaks. TLS session tickets are cached so
// that a re-dial resumes the session.
type quicTransport struct {
	deviceID    string
	addr        string
	tls         *tls.Config
	dialTimeout time.Duration
	ackTimeout  time.Duration

	mu   sync.Mutex // guards conn
	conn *quic.Conn

	// dials counts connections made; stale counts reports that failed on
	// a connection that had died unnoticed (resent on a new one), and
	// ackTimeouts the waits for an acknowledgement that ran out.
	dials, stale, ackTimeouts atomic.Int64
}

// Client-side QUIC timeouts. A hub that restarts answers packets of the
// connections it forgot with a stateless reset (its reset key is kept in
// its data folder), so a dead connection ends within a round trip; the
// keep-alive finds one while no report is due, and the idle timeout bounds
// the rest (a hub that vanished for good).
const (
	quicKeepAlive   = 5 * time.Second
	quicIdleTimeout = 15 * time.Second
)

// newQUICTransport prepares the client configuration: the device's
// certificate and the hub's CA from base, the telemetry ALPN and a
// session cache.
func newQUICTransport(deviceID, addr string, base *tls.Config, dialTimeout, ackTimeout time.Duration) *quicTransport {
	cfg := base.Clone()
	cfg.NextProtos = []string{wire.TelemetryALPN}
	cfg.MinVersion = tls.VersionTLS13
	if cfg.ClientSessionCache == nil {
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	}
	return &quicTransport{deviceID: deviceID, addr: addr, tls: cfg, dialTimeout: dialTimeout, ackTimeout: ackTimeout}
}

func (t *quicTransport) Name() string { return TransportQUIC }

// connect returns the open connection or dials a new one.
func (t *quicTransport) connect(ctx context.Context) (*quic.Conn, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conn != nil && t.conn.Context().Err() == nil {
		return t.conn, nil
	}
	dctx, cancel := context.WithTimeout(ctx, t.dialTimeout)
	defer cancel()
	conn, err := quic.DialAddr(dctx, t.addr, t.tls, &quic.Config{
		HandshakeIdleTimeout: t.dialTimeout,
		MaxIdleTimeout:       quicIdleTimeout,
		KeepAlivePeriod:      quicKeepAlive,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &DialError{Err: err}
	}
	t.dials.Add(1)
	t.conn = conn
	return conn, nil
}

// Resumed reports whether the current connection resumed a TLS session.
func (t *quicTransport) Resumed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.conn != nil && t.conn.ConnectionState().TLS.DidResume
}

func (t *quicTransport) drop(conn *quic.Conn, why string) {
	conn.CloseWithError(0, why)
	t.mu.Lock()
	if t.conn == conn {
		t.conn = nil
	}
	t.mu.Unlock()
}

// Send sends the report on the open connection, or a new one. When the
// open connection turns out dead (the hub restarted and reset it, or it
// timed out) the report is sent again at once on a new connection, not
// after the ship loop's backoff.
func (t *quicTransport) Send(ctx context.Context, report []byte, stream string, last uint64) (wire.TelemetryReportAck, error) {
	t.mu.Lock()
	reused := t.conn != nil && t.conn.Context().Err() == nil
	t.mu.Unlock()
	ack, err := t.send(ctx, report, stream)
	var de *DialError
	if err == nil || !reused || ctx.Err() != nil || errors.As(err, &de) || errors.Is(err, errBadAck) {
		return ack, err
	}
	t.stale.Add(1)
	return t.send(ctx, report, stream)
}

// errBadAck: the hub answered, but not with a valid acknowledgement of the
// report; a new connection would not help.
var errBadAck = errors.New("telemetry: bad QUIC acknowledgement")

func (t *quicTransport) send(ctx context.Context, report []byte, stream string) (wire.TelemetryReportAck, error) {
	conn, err := t.connect(ctx)
	if err != nil {
		return wire.TelemetryReportAck{}, err
	}
	sctx, cancel := context.WithTimeout(ctx, t.ackTimeout)
	defer cancel()
	str, err := conn.OpenStreamSync(sctx)
	if err != nil {
		t.drop(conn, "open stream failed")
		return wire.TelemetryReportAck{}, fmt.Errorf("telemetry: QUIC stream: %w", err)
	}
	deadline := time.Now().Add(t.ackTimeout)
	str.SetDeadline(deadline)
	if _, err := str.Write(report); err != nil {
		str.CancelRead(0)
		t.drop(conn, "write failed")
		return wire.TelemetryReportAck{}, fmt.Errorf("telemetry: QUIC write: %w", err)
	}
	str.Close() // our side is done; the hub answers and closes its side
	raw, err := io.ReadAll(io.LimitReader(str, 64<<10))
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.ackTimeouts.Add(1)
		}
		t.drop(conn, "read failed")
		return wire.TelemetryReportAck{}, fmt.Errorf("telemetry: QUIC acknowledgement: %w", err)
	}
	var ack wire.TelemetryReportAck
	if err := wire.Decode(raw, &ack); err != nil {
		return wire.TelemetryReportAck{}, fmt.Errorf("%w: %w", errBadAck, err)
	}
	if ack.Stream != stream && ack.Error == "" {
		return wire.TelemetryReportAck{}, fmt.Errorf("%w: for stream %q, sent %q", errBadAck, ack.Stream, stream)
	}
	return ack, nil
}

func (t *quicTransport) Close() error {
	t.mu.Lock()
	conn := t.conn
	t.conn = nil
	t.mu.Unlock()
	if conn != nil {
		return conn.CloseWithError(0, "closing")
	}
	return nil
}

// fallback sends over QUIC while the hub is reachable over UDP; when a
// QUIC dial fails it sends over MQTT instead and keeps to MQTT for hold
// before trying QUIC again.
type fallback struct {
	quic *quicTransport
	mqtt *mqttTransport
	hold time.Duration
	now  func() time.Time
	log  *slog.Logger

	mu    sync.Mutex // guards until, used
	until time.Time  // MQTT until then
	used  string     // transport of the last Send
	falls int        // fallbacks so far
}

func (f *fallback) Name() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.used == "" {
		return TransportQUIC
	}
	return f.used
}

func (f *fallback) Send(ctx context.Context, report []byte, stream string, last uint64) (wire.TelemetryReportAck, error) {
	f.mu.Lock()
	useMQTT := f.mqtt != nil && f.now().Before(f.until)
	f.mu.Unlock()
	if !useMQTT {
		ack, err := f.quic.Send(ctx, report, stream, last)
		var de *DialError
		if err == nil || f.mqtt == nil || !errors.As(err, &de) {
			f.setUsed(TransportQUIC)
			return ack, err
		}
		f.mu.Lock()
		f.until = f.now().Add(f.hold)
		f.falls++
		f.mu.Unlock()
		f.log.Warn("hub unreachable over QUIC (UDP blocked?); sending telemetry over MQTT", "err", err, "retry_quic_in", f.hold)
	}
	f.setUsed(TransportMQTT)
	return f.mqtt.Send(ctx, report, stream, last)
}

func (f *fallback) setUsed(name string) {
	f.mu.Lock()
	f.used = name
	f.mu.Unlock()
}

// Fallbacks counts the switches from QUIC to MQTT.
func (f *fallback) Fallbacks() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.falls
}

func (f *fallback) Close() error { return f.quic.Close() }

var (
	_ Transport = (*mqttTransport)(nil)
	_ Transport = (*quicTransport)(nil)
	_ Transport = (*fallback)(nil)
)
