// Package fleetsim simulates a fleet of agents for tests and benchmarks.
// Each simulated device enrolls like a real agent (bootstrap token, its own
// key and certificate request, the hub pinned by the token's CA
// fingerprint), connects to the hub's MQTT broker with mutual TLS, and
// speaks the real protocol: presence with a last will, heartbeats, the
// retained desired state, reported state. It applies desired states at
// once, without downloading anything or running onnxruntime, and reports
// the result as an agent would; a Behavior makes devices fail, and a
// HealthFunc makes them report chosen health figures.
//
// # Basics
//
//	f, err := fleetsim.New(fleetsim.Options{HubURL: url, Count: 1000, Token: tokens})
//	err = f.Enroll(ctx)
//	err = f.Start(ctx) // returns once every device is connected and subscribed
//	defer f.Close()
//
// # Scale
//
// A device costs one TLS connection, one goroutine (its reader) and two
// timers; MQTT is spoken directly with paho's packet codec, with no client
// library per device, so one process holds 10,000 devices. Each device
// needs a file descriptor: raise `ulimit -n` above Count. Options.LocalAddrs
// spreads connections over several source addresses (127.0.0.2, ...) when
// one address runs out of ephemeral ports.
package fleetsim

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgefleet/edgefleet/ota/wire"
)

// AgentVersion is what simulated devices report.
const AgentVersion = "0.0.0-sim"

// Behavior decides how a device reacts to a desired model. It returns the
// model's new reported state and, when the activation failed, an error
// (the returned state should then keep the previous version active).
type Behavior func(dev *Device, name string, want wire.DesiredModel, cur wire.ReportedModel) (wire.ReportedModel, error)

// HealthFunc returns the health a device reports for the active version of
// a model, at every report.
type HealthFunc func(dev *Device, name string, rm wire.ReportedModel) wire.Health

// TokenFunc returns a bootstrap token for a device id.
type TokenFunc func(ctx context.Context, deviceID string) (string, error)

// Options configure a Fleet. HubURL, Count and Token are required.
type Options struct {
	// HubURL is the hub's API ("https://127.0.0.1:7443").
	HubURL string
	// Count is the number of devices.
	Count int
	// IDPrefix names the devices: <prefix><5-digit index> ("sim-" by
	// default).
	IDPrefix string
	// Token gives each device a bootstrap token.
	Token TokenFunc
	// Labels, optional, gives device i its labels.
	Labels func(i int) map[string]string
	// Hardware is reported by every device.
	Hardware wire.Hardware
	// Behavior, optional, decides activations; nil activates at once.
	Behavior Behavior
	// Health, optional, gives the reported health.
	Health HealthFunc
	// HeartbeatInterval defaults to 30 s.
	HeartbeatInterval time.Duration
	// ReportInterval, when positive, makes devices report periodically
	// besides after every apply and (re)connection.
	ReportInterval time.Duration
	// Concurrency bounds parallel enrollments and connection attempts
	// (default 4 × GOMAXPROCS).
	Concurrency int
	// LocalAddrs are source IPs to dial from, spread over the devices;
	// empty lets the system choose.
	LocalAddrs []string
	// MinBackoff and MaxBackoff bound reconnection waits (defaults 100 ms
	// and 5 s).
	MinBackoff, MaxBackoff time.Duration
	// Logger, optional.
	Logger *slog.Logger
}

// Fleet is a set of simulated devices.
type Fleet struct {
	opts    Options
	log     *slog.Logger
	devices []*Device
	roots   *x509.CertPool
	broker  *url.URL

	ctx    context.Context // lives from Start until Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	connected atomic.Int64
	reports   atomic.Int64
	applies   atomic.Int64
}

// New prepares count devices; nothing is contacted until Enroll.
func New(opts Options) (*Fleet, error) {
	if opts.HubURL == "" || opts.Count <= 0 || opts.Token == nil {
		return nil, errors.New("fleetsim: HubURL, Count and Token are required")
	}
	if opts.IDPrefix == "" {
		opts.IDPrefix = "sim-"
	}
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = 30 * time.Second
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 4 * runtime.GOMAXPROCS(0)
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(5*time.Second, opts.MinBackoff)
	}
	if opts.Behavior == nil {
		opts.Behavior = Activate
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Fleet{opts: opts, log: log}
	for i := range opts.Count {
		d := &Device{f: f, Index: i, ID: fmt.Sprintf("%s%05d", opts.IDPrefix, i), models: map[string]wire.ReportedModel{}}
		if opts.Labels != nil {
			d.labels = opts.Labels(i)
		}
		if len(opts.LocalAddrs) > 0 {
			d.localIP = opts.LocalAddrs[i%len(opts.LocalAddrs)]
		}
		if err := wire.ValidateDeviceID(d.ID); err != nil {
			return nil, fmt.Errorf("fleetsim: %w", err)
		}
		f.devices = append(f.devices, d)
	}
	return f, nil
}

// Activate is the default Behavior: the desired version becomes active at
// once.
func Activate(_ *Device, _ string, want wire.DesiredModel, cur wire.ReportedModel) (wire.ReportedModel, error) {
	if cur.ActiveDigest == want.Digest && cur.ActiveVersion == want.Version && cur.State == wire.StateActive {
		return cur, nil
	}
	out := wire.ReportedModel{ActiveVersion: want.Version, ActiveDigest: want.Digest, State: wire.StateActive, Provider: "cpu"}
	if cur.ActiveVersion != want.Version {
		out.PreviousVersion = cur.ActiveVersion
	}
	return out, nil
}

// Devices returns the devices, in index order.
func (f *Fleet) Devices() []*Device { return f.devices }

// Connected is the number of devices connected now.
func (f *Fleet) Connected() int { return int(f.connected.Load()) }

// Applies is the number of desired states applied (or failed) so far.
func (f *Fleet) Applies() int { return int(f.applies.Load()) }

// Enroll enrolls every device that has no certificate yet, Concurrency at
// a time.
func (f *Fleet) Enroll(ctx context.Context) error {
	var (
		pinMu sync.Mutex
		hc    *http.Client
		pin   string
	)
	client := func(token string) (*http.Client, string, error) {
		_, fp, err := wire.ParseToken(token)
		if err != nil {
			return nil, "", err
		}
		pinMu.Lock()
		defer pinMu.Unlock()
		if hc == nil || pin != fp {
			tr := &http.Transport{TLSClientConfig: pinnedTLS(fp), MaxIdleConnsPerHost: f.opts.Concurrency}
			hc, pin = &http.Client{Timeout: 60 * time.Second, Transport: tr}, fp
		}
		return hc, fp, nil
	}
	return f.parallel(ctx, func(ctx context.Context, d *Device) error {
		if d.cert != nil {
			return nil
		}
		tok, err := f.opts.Token(ctx, d.ID)
		if err != nil {
			return fmt.Errorf("token for %s: %w", d.ID, err)
		}
		hc, fp, err := client(tok)
		if err != nil {
			return err
		}
		return d.enroll(ctx, hc, tok, fp)
	})
}

// parallel runs fn for every device, Concurrency at a time, and returns
// the first error.
func (f *Fleet) parallel(ctx context.Context, fn func(context.Context, *Device) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
		next  atomic.Int64
	)
	for range min(f.opts.Concurrency, len(f.devices)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(f.devices) || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, f.devices[i]); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// Start connects every enrolled device and returns once all are connected
// and subscribed to their desired state; they keep reconnecting until
// Close. A device set offline with GoOffline stays offline.
func (f *Fleet) Start(ctx context.Context) error {
	if f.ctx != nil {
		return errors.New("fleetsim: started twice")
	}
	for _, d := range f.devices {
		if d.cert == nil {
			return fmt.Errorf("fleetsim: %s is not enrolled", d.ID)
		}
	}
	f.ctx, f.cancel = context.WithCancel(context.WithoutCancel(ctx))
	sem := make(chan struct{}, f.opts.Concurrency)
	ready := make(chan error, len(f.devices))
	for _, d := range f.devices {
		f.wg.Go(func() { d.loop(f.ctx, sem, ready) })
	}
	for range f.devices {
		select {
		case err := <-ready:
			if err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Close disconnects every device cleanly (offline presence, then
// DISCONNECT, so no last will fires) and waits for them.
func (f *Fleet) Close() {
	if f.cancel == nil {
		return
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, d := range f.devices {
		sem <- struct{}{}
		wg.Go(func() { defer func() { <-sem }(); d.goodbye() })
	}
	wg.Wait()
	f.cancel()
	for _, d := range f.devices {
		d.closeConn()
	}
	f.wg.Wait()
}

// pinnedTLS trusts a hub whose chain holds a CA with this fingerprint
// prefix, as the agent does at enrollment.
func pinnedTLS(fp string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // replaced by the pin check below
		VerifyConnection: func(cs tls.ConnectionState) error {
			roots, inter := x509.NewCertPool(), x509.NewCertPool()
			found := false
			for _, c := range cs.PeerCertificates[min(1, len(cs.PeerCertificates)):] {
				sum := sha256.Sum256(c.Raw)
				if c.IsCA && strings.HasPrefix(hex.EncodeToString(sum[:]), fp) {
					roots.AddCert(c)
					found = true
				} else {
					inter.AddCert(c)
				}
			}
			if !found {
				return errors.New("fleetsim: hub CA does not match the token's fingerprint")
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			return err
		},
	}
}

// enroll trades a token for the device's certificate.
func (d *Device) enroll(ctx context.Context, hc *http.Client, token, fp string) error {
	f := d.f
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return err
	}
	body, err := json.Marshal(wire.EnrollRequest{Token: token, DeviceID: d.ID,
		CSR:    string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})),
		Labels: d.labels, Hardware: f.opts.Hardware, AgentVersion: AgentVersion})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(f.opts.HubURL, "/")+wire.EnrollPath, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("enroll %s: %w", d.ID, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("enroll %s: %w", d.ID, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("enroll %s: hub answered HTTP %d: %s", d.ID, resp.StatusCode, bytes.TrimSpace(raw))
	}
	var er wire.EnrollResponse
	if err := json.Unmarshal(raw, &er); err != nil {
		return fmt.Errorf("enroll %s: %w", d.ID, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	cert, err := tls.X509KeyPair([]byte(er.Certificate), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		return fmt.Errorf("enroll %s: certificate: %w", d.ID, err)
	}
	if err := f.setHub(er, fp); err != nil {
		return err
	}
	d.mu.Lock()
	d.cert = &cert
	d.mu.Unlock()
	return nil
}

var errHubChanged = errors.New("fleetsim: devices enrolled with different hubs")

// setHub records the broker and CA of the first enrollment.
func (f *Fleet) setHub(er wire.EnrollResponse, fp string) error {
	u, err := url.Parse(er.MQTTURL)
	if err != nil || u.Host == "" {
		return fmt.Errorf("fleetsim: MQTT URL %q: %v", er.MQTTURL, err)
	}
	blk, _ := pem.Decode([]byte(er.CA))
	if blk == nil {
		return errors.New("fleetsim: no CA in the enrollment answer")
	}
	caCert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return fmt.Errorf("fleetsim: CA: %w", err)
	}
	sum := sha256.Sum256(caCert.Raw)
	if !strings.HasPrefix(hex.EncodeToString(sum[:]), fp) {
		return errors.New("fleetsim: the hub's CA does not match the token")
	}
	hubMu.Lock()
	defer hubMu.Unlock()
	if f.broker == nil {
		f.broker = u
		f.roots = x509.NewCertPool()
		f.roots.AddCert(caCert)
		return nil
	}
	if f.broker.Host != u.Host {
		return errHubChanged
	}
	return nil
}

var hubMu sync.Mutex // guards Fleet.broker and Fleet.roots while enrolling
