package broker

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/hub/ca"
)

// ExternalOptions configure the connection to an external broker.
type ExternalOptions struct {
	// URL is the broker, "mqtts://host:port" (or ssl://, tls://).
	URL string
	// TLS holds the hub's client certificate (common name ca.HubIdentity)
	// and the roots that verify the broker.
	TLS *tls.Config
	// ClientID, optional; brokers that derive the client id from the
	// certificate (Mosquitto's use_username_as_clientid) ignore it.
	ClientID string
	// SharedGroup, when set, turns every Subscribe into a shared
	// subscription ($share/<group>/<filter>) so several hubs split the
	// devices' messages.
	SharedGroup string
	// Ordered delivers messages to handlers one at a time in arrival
	// order; by default handlers run concurrently.
	Ordered bool
	// Logger, optional.
	Logger *slog.Logger
}

// External is the hub's connection to an external broker. It reconnects
// by itself and restores its subscriptions.
type External struct {
	client paho.Client
	group  string
	log    *slog.Logger

	mu   sync.Mutex // guards subs
	subs map[string]paho.MessageHandler
}

// DialExternal connects to the broker, retrying until ctx ends.
func DialExternal(ctx context.Context, opts ExternalOptions) (*External, error) {
	u, err := url.Parse(opts.URL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("broker: external broker URL %q: want mqtts://host:port", opts.URL)
	}
	switch u.Scheme {
	case "mqtts", "ssl", "tls":
	default:
		return nil, fmt.Errorf("broker: external broker URL %q: only TLS (mqtts://) is supported", opts.URL)
	}
	if opts.TLS == nil {
		return nil, errors.New("broker: external broker needs a TLS configuration with the hub's certificate")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &External{group: opts.SharedGroup, log: log, subs: map[string]paho.MessageHandler{}}
	id := opts.ClientID
	if id == "" {
		var b [4]byte
		rand.Read(b[:])
		id = ca.HubIdentity + "-" + hex.EncodeToString(b[:])
	}
	po := paho.NewClientOptions().
		AddBroker("mqtts://" + u.Host).
		SetClientID(id).
		SetTLSConfig(opts.TLS).
		SetCleanSession(true).
		SetOrderMatters(opts.Ordered).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(30 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetConnectTimeout(10 * time.Second).
		SetOnConnectHandler(e.onConnect).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			log.Warn("external broker connection lost", "broker", u.Host, "err", err)
		})
	e.client = paho.NewClient(po)
	tok := e.client.Connect()
	if err := wait(ctx, tok); err != nil {
		e.client.Disconnect(0)
		return nil, fmt.Errorf("broker: connect %s: %w", u.Host, err)
	}
	log.Info("connected to external broker", "broker", u.Host)
	return e, nil
}

func (e *External) onConnect(c paho.Client) {
	e.mu.Lock()
	handlers := make(map[string]paho.MessageHandler, len(e.subs))
	for f, h := range e.subs {
		handlers[f] = h
	}
	e.mu.Unlock()
	for f, h := range handlers {
		tok := c.Subscribe(f, 1, h)
		go func() {
			if tok.WaitTimeout(30*time.Second) && tok.Error() != nil {
				e.log.Error("resubscribe failed", "filter", f, "err", tok.Error())
			}
		}()
	}
}

// Publish publishes with the hub's identity.
func (e *External) Publish(ctx context.Context, topic string, payload []byte, retain bool, qos byte) error {
	if err := wait(ctx, e.client.Publish(topic, qos, retain, payload)); err != nil {
		return fmt.Errorf("broker: publish %s: %w", topic, err)
	}
	return nil
}

// Subscribe delivers messages matching filter to h (QoS 1), and keeps the
// subscription across reconnects. The broker may refuse it (suback
// failure), which is an error.
func (e *External) Subscribe(ctx context.Context, filter string, h Handler) error {
	full := filter
	if e.group != "" {
		full = "$share/" + e.group + "/" + filter
	}
	ph := func(_ paho.Client, m paho.Message) { h(m.Topic(), m.Payload()) }
	e.mu.Lock()
	e.subs[full] = ph
	e.mu.Unlock()
	tok := e.client.Subscribe(full, 1, ph)
	if err := wait(ctx, tok); err != nil {
		return fmt.Errorf("broker: subscribe %s: %w", full, err)
	}
	if st, ok := tok.(*paho.SubscribeToken); ok {
		if code := st.Result()[full]; code >= 0x80 {
			return fmt.Errorf("broker: subscribe %s: refused by the broker (code %#x)", full, code)
		}
	}
	return nil
}

// Close disconnects.
func (e *External) Close() error {
	e.client.Disconnect(250)
	return nil
}

// wait waits for a paho token or ctx.
func wait(ctx context.Context, tok paho.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}
