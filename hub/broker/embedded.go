package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgefleet/edgefleet/hub/ca"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// CheckFunc tells whether a certificate (device id, serial in lowercase
// hex) may connect now; *registry.Registry's Check fits.
type CheckFunc func(ctx context.Context, id, serial string) error

// EmbeddedOptions configure the embedded broker.
type EmbeddedOptions struct {
	// Addr is the TLS listen address, e.g. "127.0.0.1:8883" (port 0 picks
	// one).
	Addr string
	// Listener, when set, is used instead of listening on Addr (TLS is
	// layered on top).
	Listener net.Listener
	// TLS is the listener's configuration: server certificate, client CAs.
	// ClientAuth is forced to tls.RequireAndVerifyClientCert.
	TLS *tls.Config
	// Check authorizes device certificates at the handshake and at
	// CONNECT. Required.
	Check CheckFunc
	// MaxPacketSize bounds MQTT packets; 0 means wire.MaxPayload plus
	// room for headers.
	MaxPacketSize uint32
	// Logger, optional. The broker's own informational logs are dropped.
	Logger *slog.Logger
}

// Embedded is an in-process MQTT broker.
type Embedded struct {
	srv *mqtt.Server
	ln  net.Listener
	log *slog.Logger
}

// NewEmbedded listens on opts.Addr. Call Start to accept connections.
func NewEmbedded(opts EmbeddedOptions) (*Embedded, error) {
	if opts.TLS == nil || len(opts.TLS.Certificates) == 0 || opts.TLS.ClientCAs == nil {
		return nil, errors.New("broker: TLS configuration with certificate and client CAs required")
	}
	if opts.Check == nil {
		return nil, errors.New("broker: Check required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg := opts.TLS.Clone()
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	prev := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if prev != nil {
			if err := prev(cs); err != nil {
				return err
			}
		}
		return verifyIdentity(opts.Check, &cs)
	}
	raw := opts.Listener
	if raw == nil {
		var err error
		if raw, err = net.Listen("tcp", opts.Addr); err != nil {
			return nil, fmt.Errorf("broker: listen %s: %w", opts.Addr, err)
		}
	}
	ln := tls.NewListener(raw, cfg)
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = opts.MaxPacketSize
	if caps.MaximumPacketSize == 0 {
		caps.MaximumPacketSize = wire.MaxPayload + 64<<10
	}
	// Each client's queue of pending writes is a channel of this many
	// pointers, allocated at connect: mochi's default (8192) costs 64 KiB
	// per device, most of the broker's memory in a large fleet. A device
	// gets a few messages at a time (desired state, acknowledgements).
	caps.MaximumClientWritesPending = 512
	caps.MaximumSessionExpiryInterval = 24 * 60 * 60 // persistent sessions of gone devices expire
	caps.MaximumMessageExpiryInterval = 0            // retained desired states never expire
	srv := mqtt.New(&mqtt.Options{
		InlineClient:           true,
		Capabilities:           caps,
		Logger:                 slog.New(minLevel{log.Handler(), slog.LevelWarn}),
		SysTopicResendInterval: 60,
	})
	if err := srv.AddHook(&authHook{check: opts.Check, log: log}, nil); err != nil {
		ln.Close()
		return nil, fmt.Errorf("broker: %w", err)
	}
	if err := srv.AddListener(listeners.NewNet("tls", ln)); err != nil {
		ln.Close()
		return nil, fmt.Errorf("broker: %w", err)
	}
	return &Embedded{srv: srv, ln: ln, log: log}, nil
}

// Addr is the listener's address.
func (e *Embedded) Addr() net.Addr { return e.ln.Addr() }

// Start accepts connections in the background.
func (e *Embedded) Start() error {
	if err := e.srv.Serve(); err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	return nil
}

// Close disconnects every client and stops listening.
func (e *Embedded) Close() error { return e.srv.Close() }

// Publish publishes as the hub (no authorization checks).
func (e *Embedded) Publish(_ context.Context, topic string, payload []byte, retain bool, qos byte) error {
	if err := e.srv.Publish(topic, payload, retain, qos); err != nil {
		return fmt.Errorf("broker: publish %s: %w", topic, err)
	}
	return nil
}

// Subscribe delivers messages matching filter to h, including retained
// ones at once. Handlers run on the publishing client's goroutine.
func (e *Embedded) Subscribe(_ context.Context, filter string, h Handler) error {
	id := nextSubID()
	err := e.srv.Subscribe(filter, id, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		h(pk.TopicName, pk.Payload)
	})
	if err != nil {
		return fmt.Errorf("broker: subscribe %s: %w", filter, err)
	}
	return nil
}

// Kick disconnects device id's current connection, if any; its last will
// is published.
func (e *Embedded) Kick(id string) bool {
	cl, ok := e.srv.Clients.Get(id)
	if !ok || cl.Closed() {
		return false
	}
	e.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
	return true
}

// Connected reports whether a client with this id is connected.
func (e *Embedded) Connected(id string) bool {
	cl, ok := e.srv.Clients.Get(id)
	return ok && !cl.Closed()
}

// verifyIdentity refuses certificates that are neither the hub's nor a
// current device certificate.
func verifyIdentity(check CheckFunc, cs *tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("broker: client certificate required")
	}
	id := ca.IdentityOf(cs.PeerCertificates[0])
	switch id.Kind {
	case ca.KindHub:
		return nil
	case ca.KindDevice:
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := check(ctx, id.ID, ca.SerialString(id.Serial)); err != nil {
			return fmt.Errorf("broker: %w", err)
		}
		return nil
	}
	return fmt.Errorf("broker: %q: %w", id.ID, ca.ErrNotAllowed)
}

// minLevel drops records below min.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(a), h.min}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.min}
}
