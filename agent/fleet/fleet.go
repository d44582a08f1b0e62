// Package fleet is the agent's hub client: it enrolls the device with a
// bootstrap token (once; the identity is kept in its folder), connects to
// the hub's MQTT broker with mutual TLS, applies the desired state the hub
// publishes through an Applier, and reports state, presence and
// heartbeats, reconnecting with backoff.
//
// # Basics
//
//	c, err := fleet.New(fleet.Options{
//		Dir:     filepath.Join(dataDir, "fleet"),
//		HubURL:  "https://hub.example:7443",
//		Token:   token, // only needed the first time
//		Applier: applier,
//	})
//	err = c.Run(ctx) // until ctx ends
//
// # Desired state
//
// The hub publishes each device's desired state retained, so it arrives
// on every (re)connection. The client applies a state only when its
// revision is newer than both the last one applied and the last one that
// failed: a repeated delivery is a no-op, and a broken update is not
// retried in a loop (a newer revision is needed). Only the newest pending
// state is applied; intermediate ones are skipped.
//
// # Reports
//
// The client publishes the reported state on every connection, after every
// applied (or failed) desired state, every Options.ReportInterval when the
// Applier is a Reporter, and at once after a local change: an Applier that
// implements Notifier (fleetapply's does) signals rollbacks by the
// post-activation watch, failed activations and GPU→CPU fallbacks, and
// ReportNow publishes on demand. The hub's rollout gates act on these
// reports, so a canary's local rollback stops a rollout within
// milliseconds, not at the next periodic report.
//
// # Files (Options.Dir)
//
//	device.key    the device's private key (0600), made before enrolling
//	device.crt    its certificate, signed by the hub's CA
//	ca.crt        the hub's CA
//	identity.json device id and hub endpoints; written last
//	state.json    last applied/failed revision and reported models
package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/ota/durable"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// Applier makes the device match a desired state, typically by pulling and
// activating model artifacts. It returns the state of every model it
// knows, also when it fails (then with LastError set on the models that
// failed). Apply calls never overlap.
type Applier interface {
	Apply(ctx context.Context, desired wire.DesiredState) (map[string]wire.ReportedModel, error)
}

// ErrTransient marks an Apply failure that can pass on its own — a full
// disk, a registry out of reach — as opposed to a refusal (a golden-vector
// mismatch, an older version, an invalid artifact). An Applier wraps it
// (fmt.Errorf("%w: %w", fleet.ErrTransient, err)); the Client then retries
// the revision with backoff (Options.MinBackoff to MaxBackoff) instead of
// recording it as failed, and reports LastError meanwhile. Any other error
// records FailedRevision: that revision is not retried.
var ErrTransient = errors.New("transient failure")

// Reporter is optionally implemented by an Applier to report the current
// model states (health counters move with traffic) every
// Options.ReportInterval.
type Reporter interface {
	Report(ctx context.Context) map[string]wire.ReportedModel
}

// Notifier is optionally implemented by an Applier whose model states
// change on their own, outside Apply (a local rollback by the
// post-activation watch, a GPU→CPU fallback, a quarantine): New calls
// Notify once with a function to call after each such change, and the
// client then reports the new state at once instead of at its next
// periodic report. The function does not block.
type Notifier interface {
	Notify(changed func())
}

// Options configure a Client. Dir and Applier are required; HubURL and
// Token only until the device has enrolled.
type Options struct {
	// Dir holds the identity and state files.
	Dir string
	// HubURL is the hub's API, e.g. "https://hub.example:7443".
	HubURL string
	// Token is the bootstrap token ("<secret>.<ca-fingerprint>").
	Token string
	// DeviceID asks for an id at enrollment; "" lets the hub choose.
	DeviceID string
	// Labels are asked for at enrollment and reported.
	Labels map[string]string
	// Hardware overrides the detected hardware field by field (non-zero
	// fields win); set Providers to the execution providers available.
	Hardware wire.Hardware
	// AgentVersion is reported.
	AgentVersion string
	// Applier applies desired states.
	Applier Applier
	// HeartbeatInterval defaults to 30 s.
	HeartbeatInterval time.Duration
	// ReportInterval is how often a Reporter's state is published
	// (default 60 s).
	ReportInterval time.Duration
	// MinBackoff and MaxBackoff bound the waits between connection and
	// enrollment attempts, and between retries of a desired revision
	// whose Apply failed with ErrTransient (defaults 1 s and 60 s).
	MinBackoff, MaxBackoff time.Duration
	// Logger, optional.
	Logger *slog.Logger
}

// State is the device's persisted sync state.
type State struct {
	AppliedRevision int64                         `json:"applied_revision"`
	FailedRevision  int64                         `json:"failed_revision,omitempty"`
	LastError       string                        `json:"last_error,omitempty"`
	Models          map[string]wire.ReportedModel `json:"models,omitempty"`
	// Applies counts Apply calls made by this process.
	Applies int `json:"-"`
}

// Client is a device's connection to its hub. Run it once.
type Client struct {
	opts     Options
	log      *slog.Logger
	hardware wire.Hardware
	started  time.Time

	mu sync.Mutex // guards id, state, latest, mqtt
	id Identity
	// state is what state.json holds.
	state State
	// latest is the newest desired state received and not yet taken by
	// the apply loop.
	latest *wire.DesiredState
	// applied counts finished Apply calls: a Reporter's snapshot taken
	// while one finished is stale and is dropped (refreshModels).
	applied uint64
	mqtt    paho.Client

	// retryWait is the wait before the next retry of a revision that
	// failed with ErrTransient; zero after a success.
	retryWait time.Duration

	wake      chan struct{} // a desired state arrived
	connected chan struct{} // a (re)connection completed
	changed   chan struct{} // a local state change to report (ReportNow)
}

// New checks the options and loads the identity and state, if any.
func New(opts Options) (*Client, error) {
	if opts.Dir == "" {
		return nil, errors.New("fleet: Dir required")
	}
	if opts.Applier == nil {
		return nil, errors.New("fleet: Applier required")
	}
	if opts.DeviceID != "" {
		if err := wire.ValidateDeviceID(opts.DeviceID); err != nil {
			return nil, fmt.Errorf("fleet: %w", err)
		}
	}
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = 30 * time.Second
	}
	if opts.ReportInterval <= 0 {
		opts.ReportInterval = time.Minute
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = time.Second
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(60*time.Second, opts.MinBackoff)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{opts: opts, log: log, hardware: mergeHardware(DetectHardware(), opts.Hardware), started: time.Now(),
		wake: make(chan struct{}, 1), connected: make(chan struct{}, 1), changed: make(chan struct{}, 1)}
	if n, ok := opts.Applier.(Notifier); ok {
		n.Notify(c.ReportNow)
	}
	id, ok, err := loadIdentity(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	if ok {
		c.id = id
		if err := c.loadState(); err != nil {
			return nil, fmt.Errorf("fleet: %w", err)
		}
	}
	return c, nil
}

// ReportNow asks the client to publish the device's reported state at
// once (with the Reporter's current model states), without waiting for
// the next periodic report; requests made while one is pending coalesce.
// It does not block. While the device is disconnected the report is made
// on reconnection, as every connection starts with one.
func (c *Client) ReportNow() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// Identity returns the device's identity; ok is false before enrollment.
func (c *Client) Identity() (Identity, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.id, c.id.DeviceID != ""
}

// State returns the sync state.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.state
	s.Models = maps.Clone(s.Models)
	return s
}

// Enroll enrolls the device unless it already is, retrying transient
// failures with backoff until ctx ends. Refusals (ErrEnrollRefused,
// ErrHubMismatch, ErrNotEnrolled) are returned at once.
func (c *Client) Enroll(ctx context.Context) (Identity, error) {
	if id, ok := c.Identity(); ok {
		return id, nil
	}
	b := c.backoff()
	for {
		id, err := c.enroll(ctx)
		if err == nil {
			c.mu.Lock()
			c.id, c.state = id, State{}
			c.mu.Unlock()
			c.log.Info("enrolled", "device", id.DeviceID, "hub", id.HubURL, "mqtt", id.MQTTURL)
			return id, nil
		}
		if errors.Is(err, ErrEnrollRefused) || errors.Is(err, ErrHubMismatch) || errors.Is(err, ErrNotEnrolled) {
			return Identity{}, fmt.Errorf("fleet: %w", err)
		}
		wait := b.next()
		c.log.Warn("enrollment failed; retrying", "err", err, "in", wait)
		if err := sleep(ctx, wait); err != nil {
			return Identity{}, err
		}
	}
}

// Run enrolls if needed, connects, and keeps the device in step with the
// hub until ctx ends. It returns nil when ctx ends and an error when the
// device cannot enroll.
func (c *Client) Run(ctx context.Context) error {
	id, err := c.Enroll(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	tlsCfg, err := tlsConfig(c.opts.Dir)
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	will, _ := wire.Encode(wire.Presence{Online: false})
	po := paho.NewClientOptions().
		AddBroker(id.MQTTURL).
		SetClientID(id.DeviceID).
		SetTLSConfig(tlsCfg).
		SetCleanSession(true).
		SetOrderMatters(false).
		SetAutoReconnect(true).
		SetConnectRetry(false).
		SetMaxReconnectInterval(c.opts.MaxBackoff).
		SetKeepAlive(30*time.Second).
		SetConnectTimeout(15*time.Second).
		SetBinaryWill(wire.Topic(id.DeviceID, wire.KindPresence), will, 1, true).
		SetOnConnectHandler(func(paho.Client) {
			select {
			case c.connected <- struct{}{}:
			default:
			}
		}).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			c.log.Warn("hub connection lost; reconnecting", "err", err)
		})
	mc := paho.NewClient(po)
	c.mu.Lock()
	c.mqtt = mc
	c.mu.Unlock()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.applyLoop(ctx) }()
	go func() { defer wg.Done(); c.sessionLoop(ctx, mc) }()

	// First connection: our own backoff; paho reconnects after that.
	b := c.backoff()
	for {
		tok := mc.Connect()
		err := waitToken(ctx, tok)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			mc.Disconnect(0)
			wg.Wait()
			return nil
		}
		wait := b.next()
		c.log.Warn("cannot connect to the hub's broker; retrying", "broker", id.MQTTURL, "err", err, "in", wait)
		if sleep(ctx, wait) != nil {
			mc.Disconnect(0)
			wg.Wait()
			return nil
		}
	}
	<-ctx.Done()
	// Announce a clean departure; a clean DISCONNECT suppresses the will.
	if mc.IsConnectionOpen() {
		off, _ := wire.Encode(wire.Presence{Online: false, Time: time.Now().UTC()})
		pubCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		waitToken(pubCtx, mc.Publish(wire.Topic(id.DeviceID, wire.KindPresence), 1, true, off))
		cancel()
	}
	mc.Disconnect(250)
	wg.Wait()
	return nil
}

// sessionLoop runs the per-connection work: subscribe, announce presence,
// report; and the heartbeats and periodic reports.
func (c *Client) sessionLoop(ctx context.Context, mc paho.Client) {
	id, _ := c.Identity()
	hb := time.NewTicker(c.opts.HeartbeatInterval)
	defer hb.Stop()
	var reportC <-chan time.Time
	if _, ok := c.opts.Applier.(Reporter); ok {
		t := time.NewTicker(c.opts.ReportInterval)
		defer t.Stop()
		reportC = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.connected:
			c.log.Info("connected to the hub", "broker", id.MQTTURL, "device", id.DeviceID)
			if err := waitToken(ctx, mc.Subscribe(wire.Topic(id.DeviceID, wire.KindDesired), 1, c.onDesired)); err != nil {
				c.log.Warn("subscribe to desired state", "err", err)
			}
			on, _ := wire.Encode(wire.Presence{Online: true, Time: time.Now().UTC()})
			c.publish(ctx, mc, wire.KindPresence, on, true)
			c.heartbeat(ctx, mc)
			c.report(ctx, mc)
		case <-hb.C:
			if mc.IsConnectionOpen() {
				c.heartbeat(ctx, mc)
			}
		case <-reportC:
			if mc.IsConnectionOpen() {
				c.refreshModels(ctx)
				c.report(ctx, mc)
			}
		case <-c.changed:
			if mc.IsConnectionOpen() {
				c.refreshModels(ctx)
				c.report(ctx, mc)
				c.log.Debug("reported a local state change")
			}
		}
	}
}

// onDesired runs on paho's goroutine: it only records the newest state.
func (c *Client) onDesired(_ paho.Client, m paho.Message) {
	if len(m.Payload()) == 0 {
		return // retained state cleared
	}
	var ds wire.DesiredState
	if err := wire.Decode(m.Payload(), &ds); err != nil {
		c.log.Warn("malformed desired state ignored", "err", err)
		return
	}
	id, _ := c.Identity()
	if ds.DeviceID != id.DeviceID {
		c.log.Warn("desired state for another device ignored", "for", ds.DeviceID)
		return
	}
	if err := ds.Validate(); err != nil {
		c.log.Warn("invalid desired state ignored", "err", err)
		return
	}
	c.mu.Lock()
	if c.latest == nil || ds.Revision > c.latest.Revision {
		c.latest = &ds
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// applyLoop applies the newest desired state whenever one arrives.
func (c *Client) applyLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		}
		c.mu.Lock()
		ds := c.latest
		c.latest = nil
		st := c.state
		mc := c.mqtt
		c.mu.Unlock()
		if ds == nil || ds.Revision <= st.AppliedRevision || ds.Revision <= st.FailedRevision {
			continue // already applied, or already failed: a no-op
		}
		c.log.Info("applying desired state", "revision", ds.Revision, "models", len(ds.Models))
		models, err := c.opts.Applier.Apply(ctx, *ds)
		if err != nil && ctx.Err() != nil {
			return // interrupted by shutdown: try again next start
		}
		c.mu.Lock()
		c.state.Applies++
		c.applied++
		if models != nil {
			c.state.Models = models
		}
		switch {
		case errors.Is(err, ErrTransient):
			c.state.LastError = err.Error()
			c.retryWait = min(max(2*c.retryWait, c.opts.MinBackoff), c.opts.MaxBackoff)
			c.log.Warn("desired state not applied; retrying", "revision", ds.Revision, "in", c.retryWait, "err", err)
			c.retryLater(ctx, ds, c.retryWait)
		case err != nil:
			c.state.FailedRevision, c.state.LastError = ds.Revision, err.Error()
			c.retryWait = 0
			c.log.Error("desired state failed", "revision", ds.Revision, "err", err)
		default:
			c.state.AppliedRevision, c.state.LastError = ds.Revision, ""
			c.retryWait = 0
			c.log.Info("desired state applied", "revision", ds.Revision)
		}
		serr := c.saveStateLocked()
		c.mu.Unlock()
		if serr != nil {
			c.log.Error("save fleet state", "err", serr)
		}
		if mc.IsConnectionOpen() {
			c.report(ctx, mc)
		}
	}
}

// retryLater hands ds back to the apply loop after d, unless a newer
// desired state arrived meanwhile or ctx ended. c.mu is held.
func (c *Client) retryLater(ctx context.Context, ds *wire.DesiredState, d time.Duration) {
	time.AfterFunc(d, func() {
		if ctx.Err() != nil {
			return
		}
		c.mu.Lock()
		if c.latest == nil || c.latest.Revision < ds.Revision {
			c.latest = ds
		}
		c.mu.Unlock()
		select {
		case c.wake <- struct{}{}:
		default:
		}
	})
}

func (c *Client) refreshModels(ctx context.Context) {
	r, ok := c.opts.Applier.(Reporter)
	if !ok {
		return
	}
	c.mu.Lock()
	gen := c.applied
	c.mu.Unlock()
	models := r.Report(ctx)
	c.mu.Lock()
	// An Apply that finished meanwhile stored newer model states, with the
	// revision they belong to: keep those.
	if c.applied == gen {
		c.state.Models = models
	}
	c.mu.Unlock()
}

func (c *Client) reported() wire.ReportedState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return wire.ReportedState{
		DeviceID:        c.id.DeviceID,
		AgentVersion:    c.opts.AgentVersion,
		Hardware:        c.hardware,
		Labels:          c.opts.Labels,
		Models:          maps.Clone(c.state.Models),
		AppliedRevision: c.state.AppliedRevision,
		FailedRevision:  c.state.FailedRevision,
		LastError:       c.state.LastError,
		Time:            time.Now().UTC(),
	}
}

func (c *Client) report(ctx context.Context, mc paho.Client) {
	b, err := wire.Encode(c.reported())
	if err != nil {
		c.log.Error("encode reported state", "err", err)
		return
	}
	c.publish(ctx, mc, wire.KindReported, b, false)
}

func (c *Client) heartbeat(ctx context.Context, mc paho.Client) {
	st := c.State()
	id, _ := c.Identity()
	b, _ := wire.Encode(wire.Heartbeat{DeviceID: id.DeviceID, Time: time.Now().UTC(),
		UptimeSeconds: int64(time.Since(c.started) / time.Second), AppliedRevision: st.AppliedRevision,
		IntervalSeconds: int64(c.opts.HeartbeatInterval / time.Second)})
	tok := mc.Publish(wire.Topic(id.DeviceID, wire.KindHeartbeat), 0, false, b)
	if err := waitToken(ctx, tok); err != nil && ctx.Err() == nil {
		c.log.Debug("heartbeat not sent", "err", err)
	}
}

func (c *Client) publish(ctx context.Context, mc paho.Client, k wire.Kind, payload []byte, retain bool) {
	id, _ := c.Identity()
	if err := waitToken(ctx, mc.Publish(wire.Topic(id.DeviceID, k), 1, retain, payload)); err != nil && ctx.Err() == nil {
		c.log.Warn("publish failed", "topic", k, "err", err)
	}
}

func (c *Client) loadState() error {
	b, err := os.ReadFile(filepath.Join(c.opts.Dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &c.state); err != nil {
		return fmt.Errorf("%s: %w", stateFile, err)
	}
	return nil
}

func (c *Client) saveStateLocked() error {
	b, err := json.MarshalIndent(c.state, "", "  ")
	if err != nil {
		return err
	}
	return durable.WriteFile(filepath.Join(c.opts.Dir, stateFile), b, 0o644)
}

// backoff yields exponentially growing, jittered waits.
type backoff struct {
	cur, max time.Duration
}

func (c *Client) backoff() *backoff { return &backoff{cur: c.opts.MinBackoff, max: c.opts.MaxBackoff} }

func (b *backoff) next() time.Duration {
	d := b.cur
	b.cur = min(b.cur*2, b.max)
	// ±20 % jitter so a fleet does not reconnect in lockstep.
	return d + time.Duration((rand.Float64()*0.4-0.2)*float64(d))
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func waitToken(ctx context.Context, tok paho.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}
