// Package shadow keeps the hub's registry and the devices in step over MQTT
// (the device-shadow pattern): it publishes each device's desired state
// retained on its desired topic, and ingests what devices publish on their
// reported, heartbeat and presence topics into the registry.
//
// # Delivery
//
// Desired states are retained, so a device that was offline for days gets
// the latest one when it subscribes again; revisions make a repeated
// delivery a no-op on the device. When the hub starts it republishes every
// desired state (an external broker may have lost its retained messages),
// and a publish that fails is retried until it succeeds or a newer revision
// replaces it.
//
// # Trust
//
// The device id of an incoming message is taken from its topic, which the
// broker's ACL ties to the sender's certificate; ids in payloads are
// ignored.
package shadow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/hub/registry"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// Bus is the hub's MQTT connection (broker.Embedded or broker.External).
type Bus interface {
	Publish(ctx context.Context, topic string, payload []byte, retain bool, qos byte) error
	Subscribe(ctx context.Context, filter string, h func(topic string, payload []byte)) error
}

// EventKind says what a device told the hub.
type EventKind int

// Event kinds.
const (
	EventReported EventKind = iota + 1
	EventHeartbeat
	EventPresence
)

// Event is a device message the hub ingested.
type Event struct {
	Kind      EventKind
	DeviceID  string
	Reported  *wire.ReportedState // EventReported
	Heartbeat *wire.Heartbeat     // EventHeartbeat
	Presence  *wire.Presence      // EventPresence
}

// Options tune a Service; zero values mean the defaults.
type Options struct {
	// RetryInterval is how often failed desired publishes are retried
	// (default 5 s).
	RetryInterval time.Duration
	// FlushInterval is how often LastSeen times are written (default 10 s).
	FlushInterval time.Duration
	// Logger, optional.
	Logger *slog.Logger
}

// Service syncs desired and reported state. It is safe for concurrent use.
type Service struct {
	bus  Bus
	reg  *registry.Registry
	opts Options
	log  *slog.Logger

	mu sync.Mutex // guards pending, listeners
	// pending holds desired states whose publish failed, by device.
	pending   map[string]wire.DesiredState
	listeners []func(Event)
}

// New returns a Service; call Start before use.
func New(bus Bus, reg *registry.Registry, opts Options) *Service {
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = 5 * time.Second
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = 10 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{bus: bus, reg: reg, opts: opts, log: log, pending: map[string]wire.DesiredState{}}
}

// Listen registers fn to run after each ingested device message. fn runs on
// the ingesting goroutine and must return quickly.
func (s *Service) Listen(fn func(Event)) {
	s.mu.Lock()
	s.listeners = append(s.listeners, fn)
	s.mu.Unlock()
}

// Start subscribes to the devices' topics and republishes every desired
// state.
func (s *Service) Start(ctx context.Context) error {
	subs := []struct {
		kind wire.Kind
		h    func(context.Context, string, []byte) error
	}{
		{wire.KindReported, s.onReported},
		{wire.KindHeartbeat, s.onHeartbeat},
		{wire.KindPresence, s.onPresence},
	}
	for _, sub := range subs {
		kind, h := sub.kind, sub.h
		err := s.bus.Subscribe(ctx, wire.Filter(kind), func(topic string, payload []byte) {
			id, k, ok := wire.ParseTopic(topic)
			if !ok || k != kind {
				return
			}
			if err := h(context.Background(), id, payload); err != nil {
				lvl := slog.LevelWarn
				if errors.Is(err, registry.ErrNotFound) || errors.Is(err, registry.ErrRevoked) {
					lvl = slog.LevelDebug // stale retained messages of removed devices
				}
				s.log.Log(context.Background(), lvl, "device message dropped", "device", id, "topic", kind, "err", err)
			}
		})
		if err != nil {
			return fmt.Errorf("shadow: %w", err)
		}
	}
	n := 0
	err := s.reg.ForEachDesired(ctx, func(ds wire.DesiredState) error {
		n++
		s.publish(ctx, ds)
		return nil
	})
	if err != nil {
		return fmt.Errorf("shadow: republish desired states: %w", err)
	}
	s.log.Info("desired states republished", "devices", n)
	return nil
}

// Run retries failed publishes and flushes LastSeen times until ctx ends,
// then flushes once more.
func (s *Service) Run(ctx context.Context) error {
	retry := time.NewTicker(s.opts.RetryInterval)
	defer retry.Stop()
	flush := time.NewTicker(s.opts.FlushInterval)
	defer flush.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := s.reg.Flush(context.WithoutCancel(ctx)); err != nil {
				s.log.Error("flush last-seen times", "err", err)
			}
			return nil
		case <-retry.C:
			s.retryPending(ctx)
		case <-flush.C:
			if err := s.reg.Flush(ctx); err != nil {
				s.log.Error("flush last-seen times", "err", err)
			}
		}
	}
}

// SetDesired replaces a device's desired models and publishes the new
// state. Setting the same models again keeps the revision and publishes
// nothing new.
func (s *Service) SetDesired(ctx context.Context, id string, models map[string]wire.DesiredModel) (wire.DesiredState, error) {
	ds, changed, err := s.reg.SetDesired(ctx, id, models)
	if err != nil {
		return wire.DesiredState{}, err
	}
	if changed {
		s.publish(ctx, ds)
	}
	return ds, nil
}

// UpdateDesired changes a device's desired models with fn (see
// registry.UpdateDesired) and publishes the result when it changed.
func (s *Service) UpdateDesired(ctx context.Context, id string, fn func(map[string]wire.DesiredModel) error) (wire.DesiredState, error) {
	ds, changed, err := s.reg.UpdateDesired(ctx, id, fn)
	if err != nil {
		return wire.DesiredState{}, err
	}
	if changed {
		s.publish(ctx, ds)
	}
	return ds, nil
}

// Forget clears a device's retained messages (used on revocation), so the
// broker no longer hands its desired state to anyone.
func (s *Service) Forget(ctx context.Context, id string) error {
	s.mu.Lock()
	delete(s.pending, id)
	s.mu.Unlock()
	var errs []error
	for _, k := range []wire.Kind{wire.KindDesired, wire.KindPresence} {
		// An empty retained message deletes the retained one.
		if err := s.bus.Publish(ctx, wire.Topic(id, k), nil, true, 1); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Pending is the number of desired states waiting for a publish retry.
func (s *Service) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

func (s *Service) publish(ctx context.Context, ds wire.DesiredState) {
	b, err := wire.Encode(ds)
	if err == nil {
		err = s.bus.Publish(ctx, wire.Topic(ds.DeviceID, wire.KindDesired), b, true, 1)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if cur, ok := s.pending[ds.DeviceID]; !ok || cur.Revision <= ds.Revision {
			s.pending[ds.DeviceID] = ds
		}
		s.log.Warn("desired state not published; will retry", "device", ds.DeviceID, "revision", ds.Revision, "err", err)
		return
	}
	if cur, ok := s.pending[ds.DeviceID]; ok && cur.Revision <= ds.Revision {
		delete(s.pending, ds.DeviceID)
	}
}

func (s *Service) retryPending(ctx context.Context) {
	s.mu.Lock()
	batch := make([]wire.DesiredState, 0, len(s.pending))
	for _, ds := range s.pending {
		batch = append(batch, ds)
	}
	s.mu.Unlock()
	for _, ds := range batch {
		// Publish the registry's current revision, which may be newer.
		cur, err := s.reg.Desired(ctx, ds.DeviceID)
		if err != nil {
			s.mu.Lock()
			delete(s.pending, ds.DeviceID)
			s.mu.Unlock()
			continue
		}
		s.publish(ctx, cur)
	}
}

func (s *Service) onReported(ctx context.Context, id string, payload []byte) error {
	var rs wire.ReportedState
	if err := wire.Decode(payload, &rs); err != nil {
		return err
	}
	rs.DeviceID = id
	if err := s.reg.Report(ctx, rs); err != nil {
		return err
	}
	s.emit(Event{Kind: EventReported, DeviceID: id, Reported: &rs})
	return nil
}

func (s *Service) onHeartbeat(ctx context.Context, id string, payload []byte) error {
	var hb wire.Heartbeat
	if err := wire.Decode(payload, &hb); err != nil {
		return err
	}
	hb.DeviceID = id
	if err := s.reg.Heartbeat(ctx, id, hb); err != nil {
		return err
	}
	s.emit(Event{Kind: EventHeartbeat, DeviceID: id, Heartbeat: &hb})
	return nil
}

func (s *Service) onPresence(ctx context.Context, id string, payload []byte) error {
	if len(payload) == 0 {
		return nil // a cleared retained message
	}
	var p wire.Presence
	if err := wire.Decode(payload, &p); err != nil {
		return err
	}
	if err := s.reg.SetPresence(ctx, id, p); err != nil {
		return err
	}
	s.emit(Event{Kind: EventPresence, DeviceID: id, Presence: &p})
	return nil
}

func (s *Service) emit(e Event) {
	s.mu.Lock()
	ls := s.listeners
	s.mu.Unlock()
	for _, fn := range ls {
		fn(e)
	}
}
