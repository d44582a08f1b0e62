package telemetry

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	"github.com/edgefleet/edgefleet/agent/fleet"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// QueueFile is the queue's file name in the agent's data folder.
const QueueFile = "telemetry.db"

// Defaults for the zero values of Options.
const (
	DefaultInterval      = 10 * time.Second
	DefaultMaxBatch      = 1000
	DefaultMaxBatchBytes = 256 << 10
	DefaultDialTimeout   = 3 * time.Second
	DefaultAckTimeout    = 30 * time.Second
	DefaultFallbackHold  = 5 * time.Minute
	DefaultMaxBackoff    = 30 * time.Second
)

// Options configure Telemetry. Only Dir is required; every zero value
// means the documented default.
type Options struct {
	// Dir is the agent's data folder; the queue is Dir/telemetry.db.
	Dir string
	// Gatherer is the agent's Prometheus registry: the snapshots are
	// computed from the same collectors /metrics serves.
	Gatherer prometheus.Gatherer
	// Interval between snapshots (DefaultInterval).
	Interval time.Duration
	// Budget bounds the queue's bytes on disk (DefaultBudget).
	Budget int64
	// MaxBatch and MaxBatchBytes bound one report (DefaultMaxBatch
	// snapshots, DefaultMaxBatchBytes bytes; at most wire.MaxPayload).
	MaxBatch      int
	MaxBatchBytes int
	// Transport is TransportMQTT (the default) or TransportQUIC; with
	// QUIC, reports go over MQTT while the QUIC listener cannot be
	// reached (NoFallback turns that off).
	Transport  string
	NoFallback bool
	// DialTimeout bounds a QUIC handshake; a hub that does not answer
	// in time is taken as unreachable over UDP (DefaultDialTimeout).
	DialTimeout time.Duration
	// AckTimeout bounds the wait for the hub's acknowledgement
	// (DefaultAckTimeout).
	AckTimeout time.Duration
	// FallbackHold is how long reports go over MQTT after QUIC failed
	// before QUIC is tried again (DefaultFallbackHold).
	FallbackHold time.Duration
	// MinBackoff and MaxBackoff bound the waits between failed sends
	// (1 s and DefaultMaxBackoff).
	MinBackoff, MaxBackoff time.Duration
	// Logger, optional.
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.MaxBatchBytes <= 0 {
		o.MaxBatchBytes = DefaultMaxBatchBytes
	}
	// Room for the envelope within the largest MQTT message.
	o.MaxBatchBytes = min(o.MaxBatchBytes, wire.MaxPayload-4096)
	if o.Transport == "" {
		o.Transport = TransportMQTT
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = DefaultAckTimeout
	}
	if o.FallbackHold <= 0 {
		o.FallbackHold = DefaultFallbackHold
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = time.Second
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(DefaultMaxBackoff, o.MinBackoff)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Uplink is how reports reach the hub.
type Uplink struct {
	// DeviceID is the device's enrolled id.
	DeviceID string
	// MQTT returns the device's MQTT connection, nil while there is none.
	MQTT func() MQTTClient
	// TLS holds the device's certificate and the hub's CA; needed for
	// QUIC.
	TLS *tls.Config
	// QUICAddr is the hub's QUIC listener (host:port, UDP).
	QUICAddr string
}

// Telemetry samples the agent every interval into its durable queue and
// ships the queue to the hub once an Uplink is attached. Create it with
// New, Run it, Close it after Run returns.
type Telemetry struct {
	opts    Options
	log     *slog.Logger
	q       *Queue
	sampler *Sampler

	wake   chan struct{} // a snapshot was queued
	attach chan struct{} // an uplink was attached

	mu        sync.Mutex // guards transport, fb, sent, sendErrs, lastErr
	transport Transport
	fb        *fallback // when Transport is QUIC with fallback
	sent      map[string]uint64
	sendErrs  map[string]uint64
	lastErr   error
}

// New opens the queue. Nothing is sampled until Run.
func New(opts Options) (*Telemetry, error) {
	if opts.Dir == "" {
		return nil, errors.New("telemetry: Dir required")
	}
	switch opts.Transport {
	case "", TransportMQTT, TransportQUIC:
	default:
		return nil, fmt.Errorf("telemetry: transport %q: want %q or %q", opts.Transport, TransportMQTT, TransportQUIC)
	}
	opts.setDefaults()
	q, err := OpenQueue(filepath.Join(opts.Dir, QueueFile), opts.Budget)
	if err != nil {
		return nil, err
	}
	return &Telemetry{opts: opts, log: opts.Logger, q: q, sampler: NewSampler(opts.Gatherer, opts.Dir),
		wake: make(chan struct{}, 1), attach: make(chan struct{}, 1),
		sent: map[string]uint64{}, sendErrs: map[string]uint64{}}, nil
}

// Queue is the durable queue.
func (t *Telemetry) Queue() *Queue { return t.q }

// Attach sets (or replaces) the way to the hub.
func (t *Telemetry) Attach(u Uplink) error {
	if err := wire.ValidateDeviceID(u.DeviceID); err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	var mq *mqttTransport
	if u.MQTT != nil {
		mq = newMQTTTransport(u.DeviceID, u.MQTT, t.opts.AckTimeout, t.log)
	}
	var tr Transport
	var fb *fallback
	switch t.opts.Transport {
	case TransportQUIC:
		if u.TLS == nil || u.QUICAddr == "" {
			return errors.New("telemetry: QUIC needs the device's TLS configuration and the hub's QUIC address")
		}
		qt := newQUICTransport(u.DeviceID, u.QUICAddr, u.TLS, t.opts.DialTimeout, t.opts.AckTimeout)
		if t.opts.NoFallback || mq == nil {
			tr = qt
		} else {
			fb = &fallback{quic: qt, mqtt: mq, hold: t.opts.FallbackHold, now: time.Now, log: t.log}
			tr = fb
		}
	default:
		if mq == nil {
			return errors.New("telemetry: MQTT transport without an MQTT connection")
		}
		tr = mq
	}
	t.mu.Lock()
	old := t.transport
	t.transport, t.fb = tr, fb
	t.mu.Unlock()
	if old != nil {
		old.Close()
	}
	signal(t.attach)
	t.log.Info("telemetry uplink attached", "device", u.DeviceID, "transport", t.opts.Transport, "quic", u.QUICAddr)
	return nil
}

// FleetUplink is the uplink of an enrolled fleet client: its MQTT
// connection, its certificate, and the hub's QUIC listener at quicAddr, or
// when "" at the host and port of the hub's API (UDP).
func FleetUplink(c *fleet.Client, quicAddr string) (Uplink, error) {
	id, ok := c.Identity()
	if !ok {
		return Uplink{}, fmt.Errorf("telemetry: %w", fleet.ErrNotEnrolled)
	}
	cfg, err := c.TLSConfig()
	if err != nil {
		return Uplink{}, fmt.Errorf("telemetry: %w", err)
	}
	if quicAddr == "" {
		quicAddr = DefaultQUICAddr(id.APIURL, id.HubURL)
	}
	return Uplink{
		DeviceID: id.DeviceID,
		MQTT: func() MQTTClient {
			if m := c.MQTT(); m != nil {
				return m
			}
			return nil
		},
		TLS:      cfg,
		QUICAddr: quicAddr,
	}, nil
}

// DefaultQUICAddr is the host:port of the first URL that has one: the hub
// serves QUIC on its API's port, over UDP.
func DefaultQUICAddr(urls ...string) string {
	for _, s := range urls {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			continue
		}
		port := u.Port()
		if port == "" {
			port = "443"
		}
		return net.JoinHostPort(u.Hostname(), port)
	}
	return ""
}

// SampleNow takes a snapshot and queues it.
func (t *Telemetry) SampleNow(now time.Time) (uint64, error) {
	snap, err := t.sampler.Sample(now)
	if err != nil {
		t.log.Warn("telemetry: some metrics could not be gathered", "err", err)
	}
	seqs, err := t.q.Append(snap)
	if err != nil {
		return 0, err
	}
	signal(t.wake)
	return seqs[0], nil
}

// Run samples every interval and ships the queue until ctx ends; a last
// snapshot covers the time since the previous one.
func (t *Telemetry) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { t.shipLoop(ctx) })
	tick := time.NewTicker(t.opts.Interval)
	defer tick.Stop()
	if _, err := t.SampleNow(time.Now()); err != nil {
		t.log.Error("telemetry sample", "err", err)
	}
	for {
		select {
		case <-ctx.Done():
			if _, err := t.SampleNow(time.Now()); err != nil {
				t.log.Error("telemetry sample", "err", err)
			}
			wg.Wait()
			return nil
		case now := <-tick.C:
			if _, err := t.SampleNow(now); err != nil {
				t.log.Error("telemetry sample", "err", err)
			}
		}
	}
}

// Ship sends queued snapshots until the queue is empty, ctx ends or a
// send fails.
func (t *Telemetry) Ship(ctx context.Context) error {
	for {
		n, err := t.shipOne(ctx)
		if err != nil || n == 0 {
			return err
		}
	}
}

// shipOne sends the oldest batch; it returns how many snapshots the hub
// acknowledged (0 when the queue is empty).
func (t *Telemetry) shipOne(ctx context.Context) (int, error) {
	t.mu.Lock()
	tr := t.transport
	t.mu.Unlock()
	if tr == nil {
		return 0, ErrNoUplink
	}
	b, err := t.q.Peek(t.opts.MaxBatch, t.opts.MaxBatchBytes)
	if err != nil || b.Len() == 0 {
		return 0, err
	}
	payload := encodeReport(t.deviceID(tr), b)
	ack, err := tr.Send(ctx, payload, b.Stream, b.Last)
	name := tr.Name()
	if err != nil {
		t.mu.Lock()
		t.sendErrs[name]++
		t.lastErr = err
		t.mu.Unlock()
		return 0, err
	}
	n, aerr := t.q.Ack(ack.Stream, ack.Seq)
	t.mu.Lock()
	t.sent[name] += uint64(n)
	t.mu.Unlock()
	if aerr != nil {
		return n, aerr
	}
	if ack.Error != "" {
		return n, fmt.Errorf("telemetry: hub refused report %d..%d: %s", b.First, b.Last, ack.Error)
	}
	if ack.Rejected > 0 {
		t.log.Warn("hub discarded invalid telemetry snapshots", "count", ack.Rejected)
	}
	if n == 0 {
		return 0, fmt.Errorf("telemetry: hub acknowledged seq %d, below the queued %d..%d", ack.Seq, b.First, b.Last)
	}
	return n, nil
}

func (t *Telemetry) deviceID(tr Transport) string {
	switch v := tr.(type) {
	case *mqttTransport:
		return v.deviceID
	case *fallback:
		return v.quic.deviceID
	case *quicTransport:
		return v.deviceID
	}
	return ""
}

func (t *Telemetry) shipLoop(ctx context.Context) {
	wait := t.opts.MinBackoff
	for {
		n, err := t.shipOne(ctx)
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil && n > 0:
			wait = t.opts.MinBackoff
			continue
		case err == nil: // queue empty
			select {
			case <-ctx.Done():
				return
			case <-t.wake:
			case <-t.attach:
			}
			continue
		case errors.Is(err, ErrNoUplink):
			// Nothing goes over the network: look again soon.
			if !t.sleep(ctx, min(wait, time.Second)) {
				return
			}
			continue
		case isDialError(err):
			// The hub is not reachable over QUIC (down, restarting): the
			// next dial is the probe, as an MQTT client's reconnection is;
			// a growing backoff would leave the backlog waiting long after
			// the hub is back.
			t.log.Debug("telemetry not shipped: hub unreachable over QUIC; dialling again", "err", err)
			if !t.sleep(ctx, jitter(min(wait, time.Second))) {
				return
			}
			wait = min(wait*2, t.opts.MaxBackoff)
			continue
		}
		t.log.Warn("telemetry not shipped; retrying", "err", err, "in", wait)
		if !t.sleep(ctx, jitter(wait)) {
			return
		}
		wait = min(wait*2, t.opts.MaxBackoff)
	}
}

// isDialError reports whether err is a QUIC dial that got no answer (the
// hub down or restarting), not one the hub refused (a TLS alert for a
// revoked certificate, a closed connection), which keeps the backoff.
func isDialError(err error) bool {
	var (
		de *DialError
		te *quic.TransportError
		ae *quic.ApplicationError
	)
	return errors.As(err, &de) && !errors.As(err, &te) && !errors.As(err, &ae)
}

// sleep waits d, less when an uplink is attached; false when ctx ended.
func (t *Telemetry) sleep(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.attach:
	case <-timer.C:
	}
	return true
}

func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.4-0.2)*float64(d))
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// encodeReport writes a wire.TelemetryReport around already encoded
// snapshots, without decoding them again.
func encodeReport(deviceID string, b Batch) []byte {
	var buf bytes.Buffer
	buf.Grow(b.Bytes + len(b.Snapshots) + 128)
	buf.WriteString(`{"device_id":`)
	buf.WriteString(strconv.Quote(deviceID)) // validated ids need no JSON-specific escaping
	buf.WriteString(`,"stream":`)
	buf.WriteString(strconv.Quote(b.Stream))
	buf.WriteString(`,"snapshots":[`)
	for i, s := range b.Snapshots {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(s)
	}
	buf.WriteString(`],"dropped":`)
	buf.WriteString(strconv.FormatUint(b.Dropped, 10))
	buf.WriteByte('}')
	return buf.Bytes()
}

// Status describes the shipping side.
type Status struct {
	Queue QueueStats
	// Transport is the transport of the last send ("" before one).
	Transport string
	// Sent counts acknowledged snapshots per transport since start.
	Sent map[string]uint64
	// SendErrors counts failed sends per transport since start.
	SendErrors map[string]uint64
	// Fallbacks counts switches from QUIC to MQTT.
	Fallbacks int
	// LastError is the last send error.
	LastError string
}

// Status returns the queue's and the shipper's counters.
func (t *Telemetry) Status() Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := Status{Queue: t.q.Stats(), Sent: map[string]uint64{}, SendErrors: map[string]uint64{}}
	for k, v := range t.sent {
		st.Sent[k] = v
	}
	for k, v := range t.sendErrs {
		st.SendErrors[k] = v
	}
	if t.transport != nil {
		st.Transport = t.transport.Name()
	}
	if t.fb != nil {
		st.Fallbacks = t.fb.Fallbacks()
	}
	if t.lastErr != nil {
		st.LastError = t.lastErr.Error()
	}
	return st
}

// Close stops the GPU watcher and the transport and closes the queue.
// Call it after Run returned.
func (t *Telemetry) Close() error {
	t.sampler.Close()
	t.mu.Lock()
	tr := t.transport
	t.transport = nil
	t.mu.Unlock()
	if tr != nil {
		tr.Close()
	}
	return t.q.Close()
}
