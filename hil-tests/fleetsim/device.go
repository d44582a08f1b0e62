package fleetsim

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/edgefleet/edgefleet/ota/wire"
)

// Device is one simulated device.
type Device struct {
	f *Fleet
	// Index is the device's position in the fleet; ID its device id.
	Index   int
	ID      string
	labels  map[string]string
	localIP string

	mu   sync.Mutex // guards the fields below
	cert *tls.Certificate
	conn net.Conn
	// offline is set while the device is held off the network.
	offline          bool
	wake             chan struct{} // GoOnline ends an offline wait
	models           map[string]wire.ReportedModel
	applied, failed  int64
	lastErr          string
	nextID           uint16
	hbTimer, rpTimer *time.Timer
	connects         int

	wmu sync.Mutex // serialises writes to conn
}

// State returns the device's last applied and failed desired revisions and
// its models.
func (d *Device) State() (applied, failed int64, models map[string]wire.ReportedModel) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.applied, d.failed, maps.Clone(d.models)
}

// Connects is how many times the device connected.
func (d *Device) Connects() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.connects
}

// GoOffline drops the device's connection without a goodbye (its last will
// announces it offline) and keeps it off until GoOnline.
func (d *Device) GoOffline() {
	d.mu.Lock()
	d.offline = true
	c := d.conn
	d.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// GoOnline lets a device held offline connect again.
func (d *Device) GoOnline() {
	d.mu.Lock()
	d.offline = false
	w := d.wake
	d.wake = nil
	d.mu.Unlock()
	if w != nil {
		close(w)
	}
}

// loop connects, serves the connection, and reconnects with backoff until
// ctx ends. The first outcome (connected and subscribed, or ctx ended) goes
// to ready.
func (d *Device) loop(ctx context.Context, sem chan struct{}, ready chan<- error) {
	f := d.f
	backoff := f.opts.MinBackoff
	first := true
	signal := func(err error) {
		if first {
			first = false
			ready <- err
		}
	}
	for ctx.Err() == nil {
		d.mu.Lock()
		if d.offline {
			w := make(chan struct{})
			d.wake = w
			d.mu.Unlock()
			signal(nil) // held offline from the start: ready as it is
			select {
			case <-ctx.Done():
				return
			case <-w:
			}
			continue
		}
		d.mu.Unlock()
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		conn, r, err := d.connect(ctx)
		<-sem
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			wait := backoff + time.Duration(rand.Int64N(int64(backoff)))
			backoff = min(2*backoff, f.opts.MaxBackoff)
			f.log.Debug("connect failed; retrying", "device", d.ID, "err", err, "in", wait)
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			continue
		}
		backoff = f.opts.MinBackoff
		subscribed := false
		err = d.serve(ctx, conn, r, func() {
			subscribed = true
			f.connected.Add(1)
			signal(nil)
		})
		if subscribed {
			f.connected.Add(-1)
		}
		d.stopTimers()
		conn.Close()
		if ctx.Err() == nil {
			f.log.Debug("connection lost", "device", d.ID, "err", err)
		}
	}
}

// connect dials the broker, sends CONNECT with the last will, and
// subscribes to the desired state.
func (d *Device) connect(ctx context.Context) (net.Conn, *bufio.Reader, error) {
	f := d.f
	d.mu.Lock()
	cert := d.cert
	d.mu.Unlock()
	dialer := &net.Dialer{Timeout: 15 * time.Second}
	if d.localIP != "" {
		dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(d.localIP)}
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: f.roots, Certificates: []tls.Certificate{*cert},
		ServerName: f.broker.Hostname()}
	td := &tls.Dialer{NetDialer: dialer, Config: cfg}
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	c, err := td.DialContext(dctx, "tcp", f.broker.Host)
	if err != nil {
		return nil, nil, err
	}
	fail := func(err error) (net.Conn, *bufio.Reader, error) {
		c.Close()
		return nil, nil, err
	}
	will, _ := wire.Encode(wire.Presence{Online: false})
	cp := packets.NewControlPacket(packets.Connect).(*packets.ConnectPacket)
	cp.ProtocolName, cp.ProtocolVersion = "MQTT", 4
	cp.CleanSession = true
	cp.ClientIdentifier = d.ID
	cp.Keepalive = uint16(max(60, 3*int(f.opts.HeartbeatInterval/time.Second)))
	cp.WillFlag, cp.WillQos, cp.WillRetain = true, 1, true
	cp.WillTopic, cp.WillMessage = wire.Topic(d.ID, wire.KindPresence), will
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if err := cp.Write(c); err != nil {
		return fail(err)
	}
	r := bufio.NewReaderSize(c, 2048)
	pk, err := packets.ReadPacket(r)
	if err != nil {
		return fail(fmt.Errorf("CONNACK: %w", err))
	}
	ack, ok := pk.(*packets.ConnackPacket)
	if !ok || ack.ReturnCode != packets.Accepted {
		return fail(fmt.Errorf("broker refused the connection: %v", pk))
	}
	sp := packets.NewControlPacket(packets.Subscribe).(*packets.SubscribePacket)
	sp.MessageID = 1
	sp.Topics, sp.Qoss = []string{wire.Topic(d.ID, wire.KindDesired)}, []byte{1}
	if err := sp.Write(c); err != nil {
		return fail(err)
	}
	c.SetDeadline(time.Time{})
	d.mu.Lock()
	d.conn = c
	d.connects++
	d.mu.Unlock()
	return c, r, nil
}

// serve reads packets until the connection ends. Once subscribed it
// announces the device and calls up.
func (d *Device) serve(ctx context.Context, c net.Conn, r *bufio.Reader, up func()) error {
	f := d.f
	for {
		pk, err := packets.ReadPacket(r)
		if err != nil {
			return err
		}
		switch p := pk.(type) {
		case *packets.SubackPacket:
			if len(p.ReturnCodes) == 0 || p.ReturnCodes[0] > 2 {
				return errors.New("desired-state subscription refused")
			}
			on, _ := wire.Encode(wire.Presence{Online: true, Time: time.Now().UTC()})
			d.publish(wire.KindPresence, on, true, 1)
			d.heartbeat()
			d.report()
			d.armTimers()
			up()
		case *packets.PublishPacket:
			if p.Qos == 1 {
				ack := packets.NewControlPacket(packets.Puback).(*packets.PubackPacket)
				ack.MessageID = p.MessageID
				d.write(ack)
			}
			if id, k, ok := wire.ParseTopic(p.TopicName); ok && id == d.ID && k == wire.KindDesired {
				d.onDesired(p.Payload)
			}
		case *packets.PubackPacket, *packets.PingrespPacket:
		default:
			f.log.Debug("unexpected packet", "device", d.ID, "packet", pk.String())
		}
	}
}

// onDesired applies a desired state as the agent's fleet client does: only
// a revision newer than the last applied and the last failed one.
func (d *Device) onDesired(payload []byte) {
	if len(payload) == 0 {
		return
	}
	var ds wire.DesiredState
	if err := wire.Decode(payload, &ds); err != nil || ds.DeviceID != d.ID || ds.Validate() != nil {
		return
	}
	d.mu.Lock()
	if ds.Revision <= d.applied || ds.Revision <= d.failed {
		d.mu.Unlock()
		return
	}
	models := maps.Clone(d.models)
	d.mu.Unlock()
	var errs []error
	for name, want := range ds.Models {
		rm, err := d.f.opts.Behavior(d, name, want, models[name])
		if err != nil {
			rm.State, rm.LastError = wire.StateFailed, err.Error()
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
		models[name] = rm
	}
	err := errors.Join(errs...)
	d.mu.Lock()
	d.models = models
	if err != nil {
		d.failed, d.lastErr = ds.Revision, err.Error()
	} else {
		d.applied, d.lastErr = ds.Revision, ""
	}
	d.mu.Unlock()
	d.f.applies.Add(1)
	d.report()
}

// report publishes the reported state.
func (d *Device) report() {
	f := d.f
	d.mu.Lock()
	rs := wire.ReportedState{DeviceID: d.ID, AgentVersion: AgentVersion, Hardware: f.opts.Hardware, Labels: d.labels,
		Models: maps.Clone(d.models), AppliedRevision: d.applied, FailedRevision: d.failed, LastError: d.lastErr,
		Time: time.Now().UTC()}
	d.mu.Unlock()
	if f.opts.Health != nil {
		for name, rm := range rs.Models {
			rm.Health = f.opts.Health(d, name, rm)
			rs.Models[name] = rm
		}
	}
	b, err := wire.Encode(rs)
	if err != nil {
		return
	}
	if d.publish(wire.KindReported, b, false, 1) == nil {
		f.reports.Add(1)
	}
}

func (d *Device) heartbeat() {
	d.mu.Lock()
	hb := wire.Heartbeat{DeviceID: d.ID, Time: time.Now().UTC(), AppliedRevision: d.applied,
		IntervalSeconds: int64(d.f.opts.HeartbeatInterval / time.Second)}
	d.mu.Unlock()
	b, _ := wire.Encode(hb)
	d.publish(wire.KindHeartbeat, b, false, 0)
}

// armTimers starts the heartbeat and report timers of a connection, with a
// random phase so a fleet does not beat in lockstep.
func (d *Device) armTimers() {
	f := d.f
	d.mu.Lock()
	defer d.mu.Unlock()
	hbEvery := f.opts.HeartbeatInterval
	var hb func()
	hb = func() {
		d.heartbeat()
		d.mu.Lock()
		if d.hbTimer != nil {
			d.hbTimer.Reset(hbEvery)
		}
		d.mu.Unlock()
	}
	d.hbTimer = time.AfterFunc(hbEvery/2+time.Duration(rand.Int64N(int64(hbEvery/2)+1)), hb)
	if every := f.opts.ReportInterval; every > 0 {
		var rp func()
		rp = func() {
			d.report()
			d.mu.Lock()
			if d.rpTimer != nil {
				d.rpTimer.Reset(every)
			}
			d.mu.Unlock()
		}
		d.rpTimer = time.AfterFunc(time.Duration(rand.Int64N(int64(every)+1)), rp)
	}
}

func (d *Device) stopTimers() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.hbTimer != nil {
		d.hbTimer.Stop()
		d.hbTimer = nil
	}
	if d.rpTimer != nil {
		d.rpTimer.Stop()
		d.rpTimer = nil
	}
	d.conn = nil
}

// publish sends a PUBLISH on one of the device's topics; QoS 1 messages
// are not waited for (the reader drops the PUBACK).
func (d *Device) publish(k wire.Kind, payload []byte, retain bool, qos byte) error {
	p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	p.TopicName, p.Payload, p.Retain, p.Qos = wire.Topic(d.ID, k), payload, retain, qos
	if qos > 0 {
		d.mu.Lock()
		d.nextID++
		if d.nextID == 0 {
			d.nextID = 2
		}
		p.MessageID = d.nextID
		d.mu.Unlock()
	}
	return d.write(p)
}

// write sends one packet, in one write, with a deadline.
func (d *Device) write(p packets.ControlPacket) error {
	d.mu.Lock()
	c := d.conn
	d.mu.Unlock()
	if c == nil {
		return net.ErrClosed
	}
	var buf bytes.Buffer
	if err := p.Write(&buf); err != nil {
		return err
	}
	d.wmu.Lock()
	defer d.wmu.Unlock()
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := c.Write(buf.Bytes())
	return err
}

// goodbye announces the device offline and disconnects cleanly.
func (d *Device) goodbye() {
	d.mu.Lock()
	c := d.conn
	d.mu.Unlock()
	if c == nil {
		return
	}
	off, _ := wire.Encode(wire.Presence{Online: false, Time: time.Now().UTC()})
	d.publish(wire.KindPresence, off, true, 1)
	d.write(packets.NewControlPacket(packets.Disconnect))
}

func (d *Device) closeConn() {
	d.mu.Lock()
	c := d.conn
	w := d.wake
	d.wake = nil
	d.mu.Unlock()
	if c != nil {
		c.Close()
	}
	if w != nil {
		close(w)
	}
}
