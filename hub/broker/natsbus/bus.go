package natsbus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgefleet/edgefleet/hub/broker"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// BusOptions configure a hub's connection to the NATS cluster.
type BusOptions struct {
	// NATS are the nodes' client URLs ("tls://host:port"); the client
	// fails over between them.
	NATS []string
	// MQTT is one node's MQTT listener ("mqtts://host:port"), for
	// publishing (retained) messages to devices.
	MQTT string
	// TLS holds the hub's client certificate and the hub CA as roots.
	TLS *tls.Config
	// Replicas of the stream (1; 3 for a three-node cluster).
	Replicas int
	// AckWait is how long a message handed to a replica that then dies
	// waits before another replica gets it (30 s).
	AckWait time.Duration
	// MaxAge bounds how long the stream keeps messages (1 h).
	MaxAge time.Duration
	// Logger, optional.
	Logger *slog.Logger
}

// Bus is a hub replica's messaging in cluster mode; it implements
// shadow.Bus and telemetry's bus.
type Bus struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	mqtt *broker.External
	opts BusOptions
	log  *slog.Logger

	mu       sync.Mutex // guards consumes
	consumes []jetstream.ConsumeContext
}

// DeviceSubjects are the subjects of the device → hub messages (the
// stream's subjects).
func DeviceSubjects() []string {
	var out []string
	for _, k := range wire.Kinds {
		if wire.DeviceMayPublish(k) {
			out = append(out, Subject(wire.Filter(k)))
		}
	}
	return out
}

// Dial connects to the cluster, creates or updates the stream, and
// connects to the MQTT listener.
func Dial(ctx context.Context, o BusOptions) (*Bus, error) {
	if len(o.NATS) == 0 || o.MQTT == "" || o.TLS == nil {
		return nil, errors.New("natsbus: NATS URLs, MQTT URL and TLS required")
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.AckWait <= 0 {
		o.AckWait = 30 * time.Second
	}
	if o.MaxAge <= 0 {
		o.MaxAge = time.Hour
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	nc, err := nats.Connect(strings.Join(o.NATS, ","), nats.Secure(o.TLS), nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond), nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats: disconnected", "err", err)
			}
		}))
	if err != nil {
		return nil, fmt.Errorf("natsbus: connect: %w", err)
	}
	b := &Bus{nc: nc, opts: o, log: log}
	if b.js, err = jetstream.New(nc); err != nil {
		nc.Close()
		return nil, fmt.Errorf("natsbus: %w", err)
	}
	cfg := jetstream.StreamConfig{Name: Stream, Subjects: DeviceSubjects(), Replicas: o.Replicas,
		MaxAge: o.MaxAge, Storage: jetstream.FileStorage, Retention: jetstream.LimitsPolicy}
	// The cluster may still be electing its meta leader.
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = b.js.CreateOrUpdateStream(actx, cfg)
		cancel()
		if err == nil {
			break
		}
		log.Debug("nats: stream not ready", "err", err)
		select {
		case <-ctx.Done():
			nc.Close()
			return nil, fmt.Errorf("natsbus: stream %s: %w (%w)", Stream, ctx.Err(), err)
		case <-time.After(250 * time.Millisecond):
		}
	}
	if b.mqtt, err = broker.DialExternal(ctx, broker.ExternalOptions{URL: o.MQTT, TLS: o.TLS, Logger: log}); err != nil {
		nc.Close()
		return nil, err
	}
	return b, nil
}

// Publish sends a message to devices over MQTT (retained when asked).
func (b *Bus) Publish(ctx context.Context, topic string, payload []byte, retain bool, qos byte) error {
	return b.mqtt.Publish(ctx, topic, payload, retain, qos)
}

// ConsumerName is the durable consumer every replica shares for a filter.
func ConsumerName(filter string) string {
	r := strings.NewReplacer(".", "_", "*", "any", ">", "all", "/", "_")
	return "hub_" + r.Replace(Subject(filter))
}

// Subscribe hands h every stored message matching the MQTT filter, through
// the durable consumer ConsumerName(filter) that every replica shares: each
// message goes to one replica, and to another if it is not acknowledged
// within AckWait (the first died). h runs one message at a time per
// replica and the message is acknowledged when h returns.
func (b *Bus) Subscribe(ctx context.Context, filter string, h func(topic string, payload []byte)) error {
	subj := Subject(filter)
	var cons jetstream.Consumer
	var err error
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		cons, err = b.js.CreateOrUpdateConsumer(actx, Stream, jetstream.ConsumerConfig{
			Durable: ConsumerName(filter), FilterSubject: subj, AckPolicy: jetstream.AckExplicitPolicy,
			AckWait: b.opts.AckWait, MaxAckPending: 20000, DeliverPolicy: jetstream.DeliverAllPolicy,
			Replicas: b.opts.Replicas,
		})
		cancel()
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("natsbus: consumer for %s: %w", filter, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		h(Topic(m.Subject()), m.Data())
		if err := m.Ack(); err != nil {
			b.log.Debug("nats: ack", "subject", m.Subject(), "err", err)
		}
	}, jetstream.PullMaxMessages(500))
	if err != nil {
		return fmt.Errorf("natsbus: consume %s: %w", filter, err)
	}
	b.mu.Lock()
	b.consumes = append(b.consumes, cc)
	b.mu.Unlock()
	return nil
}

// Close stops consuming and disconnects.
func (b *Bus) Close() error {
	b.mu.Lock()
	for _, cc := range b.consumes {
		cc.Stop()
	}
	b.consumes = nil
	b.mu.Unlock()
	b.mqtt.Close()
	b.nc.Close()
	return nil
}
