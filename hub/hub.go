package hub

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/edgefleet/edgefleet/deploy/systemd/sdnotify"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/hub/api"
	"github.com/edgefleet/edgefleet/hub/broker"
	"github.com/edgefleet/edgefleet/hub/ca"
	"github.com/edgefleet/edgefleet/hub/enroll"
	"github.com/edgefleet/edgefleet/hub/hubdb"
	"github.com/edgefleet/edgefleet/hub/oci"
	"github.com/edgefleet/edgefleet/hub/registry"
	"github.com/edgefleet/edgefleet/hub/rollout"
	"github.com/edgefleet/edgefleet/hub/shadow"
	"github.com/edgefleet/edgefleet/hub/telemetry"
	"github.com/edgefleet/edgefleet/ota"
	"github.com/edgefleet/edgefleet/ota/durable"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// Default listen addresses.
const (
	DefaultAPIAddr      = "127.0.0.1:7443"
	DefaultMQTTAddr     = "127.0.0.1:8883"
	DefaultRegistryAddr = "127.0.0.1:5000"
)

// Off disables a listener (Options.RegistryAddr).
const Off = "off"

// Files in the data folder.
const (
	DBFile  = "hub.db"
	CRLFile = "crl.pem"
)

// crlValidity is how long a written CRL stays valid; the hub rewrites it
// daily and on every change.
const crlValidity = 30 * 24 * time.Hour

// Options configure a hub. Only DataDir is required; every other zero value
// means the documented default.
type Options struct {
	// DataDir holds the hub's state (see the package documentation).
	DataDir string
	// APIAddr is the HTTPS API listen address (DefaultAPIAddr).
	APIAddr string
	// MQTTAddr is the embedded broker's TLS listen address
	// (DefaultMQTTAddr); unused with Broker.
	MQTTAddr string
	// RegistryAddr is the embedded OCI registry's listen address
	// (DefaultRegistryAddr); Off disables it.
	RegistryAddr string
	// Broker is an external MQTT broker, "mqtts://host:port"; the hub then
	// runs no broker of its own and connects with its hub certificate.
	Broker string
	// BrokerSharedGroup makes the hub's subscriptions on an external broker
	// shared ($share/<group>/...), so several hubs split the load.
	BrokerSharedGroup string
	// ExternalRegistry is the OCI registry ("host[:port]") models come
	// from when the embedded one is off.
	ExternalRegistry string
	// AdvertiseAPI, AdvertiseMQTT and AdvertiseRegistry are what agents
	// are told to use; by default they are derived from the listen
	// addresses (a wildcard host becomes this machine's host name).
	AdvertiseAPI      string
	AdvertiseMQTT     string
	AdvertiseRegistry string
	// Hosts are extra DNS names or IPs for the hub's server certificate;
	// loopback, localhost, the host name and the advertised hosts are
	// always included.
	Hosts []string
	// DeviceCertValidity is the lifetime of device certificates
	// (ca.DefaultDeviceValidity).
	DeviceCertValidity time.Duration
	// RolloutClock is the clock of rollout bake times (nil: time.Now);
	// RolloutTick how often rollouts are evaluated besides on device
	// reports (0: 1 s). Tests shorten both.
	RolloutClock func() time.Time
	RolloutTick  time.Duration
	// QUICAddr is the telemetry QUIC listener (UDP); "" means the API's
	// host and port, Off disables it.
	QUICAddr string
	// MetricsAddr is the Prometheus listener (plain HTTP, GET /metrics),
	// e.g. DefaultMetricsAddr; "" or Off: none (Hub.Metrics still has
	// the registry).
	MetricsAddr string
	// DashboardAddr is the web dashboard's listener (plain HTTP,
	// read-only; package dashboard), e.g. DefaultDashboardAddr; "" or
	// Off: none.
	DashboardAddr string
	// TelemetryWindow is how many snapshots per device the hub keeps
	// (telemetry.DefaultWindow); TelemetryMaxSeries bounds the per-device
	// label sets on /metrics (telemetry.DefaultMaxSeries).
	TelemetryWindow    int
	TelemetryMaxSeries int
	// Logger, optional.
	Logger *slog.Logger
}

// Hub is a running control plane. Create it with New, then Run it.
type Hub struct {
	opts Options
	log  *slog.Logger

	db       *bolt.DB
	ca       *ca.CA
	reg      *registry.Registry
	tokens   *enroll.Tokens
	shadow   *shadow.Service
	rollouts *rollout.Manager

	// Telemetry and metrics (observe.go).
	telem      *telemetry.Store
	telemRecv  *telemetry.Receiver
	quic       *telemetry.QUICServer // nil when off
	metrics    *prometheus.Registry
	metricsLn  net.Listener // nil when off
	metricsSrv *http.Server
	ui         *ui // the dashboard (ui.go), nil when off

	embedded *broker.Embedded // nil with an external broker
	external *broker.External // nil with the embedded broker
	bus      shadow.Bus

	apiLn, regLn net.Listener
	apiSrv       *http.Server
	regSrv       *http.Server // nil when the embedded registry is off

	advAPI, advMQTT, advRegistry string

	crlMu sync.Mutex // serialises CRL writes

	closeOnce sync.Once
	closeErr  error
}

// New opens the data folder, creates what is missing (CA, admin
// credentials) and binds every listener, so addresses with port 0 are
// known when it returns. With an external broker it also connects to it,
// retrying until ctx ends.
func New(ctx context.Context, opts Options) (*Hub, error) {
	if opts.DataDir == "" {
		return nil, errors.New("hub: data folder required")
	}
	if opts.APIAddr == "" {
		opts.APIAddr = DefaultAPIAddr
	}
	if opts.MQTTAddr == "" {
		opts.MQTTAddr = DefaultMQTTAddr
	}
	if opts.RegistryAddr == "" {
		opts.RegistryAddr = DefaultRegistryAddr
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Hub{opts: opts, log: log}
	if err := h.open(ctx); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

func (h *Hub) open(ctx context.Context) error {
	o := h.opts
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	var err error
	h.db, err = hubdb.Open(filepath.Join(o.DataDir, DBFile), &bolt.Options{Timeout: time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return fmt.Errorf("hub: %s is in use by another hub process", filepath.Join(o.DataDir, DBFile))
		}
		return fmt.Errorf("hub: %w", err)
	}
	if h.ca, err = ca.LoadOrCreate(o.DataDir, ""); err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	if h.reg, err = registry.New(h.db); err != nil {
		return err
	}
	if h.tokens, err = enroll.NewTokens(h.db); err != nil {
		return err
	}

	// Listeners first: their real addresses feed the advertised URLs and
	// the server certificate.
	if h.apiLn, err = net.Listen("tcp", o.APIAddr); err != nil {
		return fmt.Errorf("hub: API listener: %w", err)
	}
	if o.RegistryAddr != Off {
		if h.regLn, err = net.Listen("tcp", o.RegistryAddr); err != nil {
			return fmt.Errorf("hub: registry listener: %w", err)
		}
	}
	var mqttLn net.Listener
	if o.Broker == "" {
		// The broker layers TLS on this listener below, once the
		// certificate exists.
		if mqttLn, err = net.Listen("tcp", o.MQTTAddr); err != nil {
			return fmt.Errorf("hub: MQTT listener: %w", err)
		}
	}
	h.advAPI = advertise(o.AdvertiseAPI, "https", h.apiLn.Addr())
	switch {
	case o.AdvertiseMQTT != "":
		h.advMQTT = o.AdvertiseMQTT
	case o.Broker != "":
		h.advMQTT = o.Broker
	default:
		h.advMQTT = advertise("", "mqtts", mqttLn.Addr())
	}
	switch {
	case o.AdvertiseRegistry != "":
		h.advRegistry = o.AdvertiseRegistry
	case h.regLn != nil:
		h.advRegistry = strings.TrimPrefix(advertise("", "http", h.regLn.Addr()), "http://")
	default:
		h.advRegistry = o.ExternalRegistry
	}
	hosts := append([]string{"127.0.0.1", "::1", "localhost"}, o.Hosts...)
	if hn, err := os.Hostname(); err == nil {
		hosts = append(hosts, hn)
	}
	for _, u := range []string{h.advAPI, h.advMQTT} {
		if pu, err := url.Parse(u); err == nil && pu.Hostname() != "" {
			hosts = append(hosts, pu.Hostname())
		}
	}
	serverCert, err := h.ca.IssueServer(hosts, 0)
	if err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	if err := h.writeAdminFiles(); err != nil {
		return err
	}

	// MQTT.
	if o.Broker == "" {
		h.embedded, err = broker.NewEmbedded(broker.EmbeddedOptions{
			Listener: mqttLn,
			TLS:      h.ca.ServerTLS(serverCert, tls.RequireAndVerifyClientCert, nil),
			Check:    h.reg.Check,
			Logger:   h.log.With("component", "broker"),
		})
		if err != nil {
			mqttLn.Close()
			return fmt.Errorf("hub: %w", err)
		}
		h.bus = h.embedded
	} else {
		hubCert, err := h.ca.IssueClient(ca.HubIdentity, 0)
		if err != nil {
			return fmt.Errorf("hub: %w", err)
		}
		h.external, err = broker.DialExternal(ctx, broker.ExternalOptions{
			URL:         o.Broker,
			TLS:         h.ca.ClientTLS(&hubCert),
			SharedGroup: o.BrokerSharedGroup,
			Logger:      h.log.With("component", "broker"),
		})
		if err != nil {
			return fmt.Errorf("hub: %w", err)
		}
		h.bus = h.external
	}
	h.shadow = shadow.New(h.bus, h.reg, shadow.Options{Logger: h.log.With("component", "shadow")})
	if err := h.openTelemetry(serverCert); err != nil {
		return err
	}
	h.rollouts, err = rollout.New(rollout.Options{DB: h.db, Registry: h.reg, Shadow: h.shadow, Resolve: resolveArtifact,
		Now: o.RolloutClock, Tick: o.RolloutTick, Logger: h.log.With("component", "rollout")})
	if err != nil {
		return err
	}

	if err := h.openDashboard(); err != nil {
		return err
	}

	// API.
	svc := &enroll.Service{
		CA:       h.ca,
		Registry: h.reg,
		Tokens:   h.tokens,
		Validity: o.DeviceCertValidity,
		Endpoints: func() enroll.Endpoints {
			return enroll.Endpoints{MQTTURL: h.advMQTT, APIURL: h.advAPI, Registry: h.advRegistry}
		},
		OnEnrolled: func(ctx context.Context, d registry.Device) { h.writeCRL(ctx) },
		Logger:     h.log.With("component", "enroll"),
	}
	apiHandler := api.New(api.Config{
		Registry:      h.reg,
		Fleet:         h,
		Tokens:        h.tokens,
		Rollouts:      h.rollouts,
		Telemetry:     h.telem,
		Enroll:        svc,
		CAFingerprint: h.ca.Fingerprint(),
		Logger:        h.log.With("component", "api"),
	})
	tlsCfg := h.ca.ServerTLS(serverCert, tls.VerifyClientCertIfGiven, h.verifyAPIClient)
	h.apiSrv = &http.Server{
		Handler:           apiHandler,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(h.log.Handler(), slog.LevelDebug),
	}
	h.apiLn = tls.NewListener(h.apiLn, tlsCfg)

	// OCI registry.
	if h.regLn != nil {
		reg, err := oci.New(h.db, filepath.Join(o.DataDir, "blobs"), h.log.With("component", "oci"))
		if err != nil {
			return err
		}
		h.regSrv = &http.Server{Handler: reg, ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(h.log.Handler(), slog.LevelDebug)}
		if ip := tcpIP(h.regLn.Addr()); ip != nil && !ip.IsLoopback() {
			h.log.Warn("the embedded OCI registry has no authentication; it listens beyond loopback", "addr", h.regLn.Addr())
		}
	}
	h.writeCRL(ctx)
	return nil
}

// verifyAPIClient refuses, at the TLS handshake, device certificates that
// are revoked or superseded; other identities are sorted out per endpoint.
func (h *Hub) verifyAPIClient(id ca.Identity) error {
	if id.Kind != ca.KindDevice {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return h.reg.Check(ctx, id.ID, ca.SerialString(id.Serial))
}

// writeAdminFiles writes the admin certificate (once), the CA certificate
// and the API URL for the CLI.
func (h *Hub) writeAdminFiles() error {
	dir := h.opts.DataDir
	certPath, keyPath := filepath.Join(dir, api.AdminCertFile), filepath.Join(dir, api.AdminKeyFile)
	if _, err := tls.LoadX509KeyPair(certPath, keyPath); err != nil {
		admin, err := h.ca.IssueClient(ca.AdminIdentity, ca.DefaultCAValidity)
		if err != nil {
			return fmt.Errorf("hub: %w", err)
		}
		key, err := ca.EncodeKey(admin.PrivateKey)
		if err != nil {
			return fmt.Errorf("hub: %w", err)
		}
		if err := durable.WriteFile(keyPath, key, 0o600); err != nil {
			return fmt.Errorf("hub: %w", err)
		}
		if err := durable.WriteFile(certPath, ca.EncodeCert(admin.Leaf), 0o644); err != nil {
			return fmt.Errorf("hub: %w", err)
		}
	}
	if err := durable.WriteFile(filepath.Join(dir, api.APIURLFile), []byte(h.advAPI+"\n"), 0o644); err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	return nil
}

// writeCRL rewrites crl.pem from the registry's revoked certificates.
func (h *Hub) writeCRL(ctx context.Context) {
	h.crlMu.Lock()
	defer h.crlMu.Unlock()
	revoked, err := h.reg.RevokedCerts(ctx)
	if err != nil {
		h.log.Error("CRL: list revoked certificates", "err", err)
		return
	}
	entries := make([]ca.Revoked, 0, len(revoked))
	for _, r := range revoked {
		n, ok := new(big.Int).SetString(r.Serial, 16)
		if !ok {
			continue
		}
		entries = append(entries, ca.Revoked{Serial: n, At: r.At})
	}
	crl, err := h.ca.CRL(entries, time.Now().Unix(), crlValidity)
	if err == nil {
		err = durable.WriteFile(filepath.Join(h.opts.DataDir, CRLFile), crl, 0o644)
	}
	if err != nil {
		h.log.Error("CRL: write", "err", err)
	}
}

// Run serves until ctx ends, then shuts down and closes the hub.
func (h *Hub) Run(ctx context.Context) error {
	defer h.Close()
	if err := h.shadow.Start(ctx); err != nil {
		return err
	}
	if h.embedded != nil {
		if err := h.embedded.Start(); err != nil {
			return err
		}
	}
	errc := make(chan error, 6)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	telemDone, err := h.runTelemetry(runCtx, errc)
	if err != nil {
		return err
	}
	dashDone := h.runDashboard(runCtx, errc)
	go func() { errc <- serve(h.apiSrv, h.apiLn) }()
	if h.regSrv != nil {
		go func() { errc <- serve(h.regSrv, h.regLn) }()
	}
	shadowDone, rolloutsDone := make(chan struct{}), make(chan struct{})
	go func() { h.shadow.Run(runCtx); close(shadowDone) }()
	go func() { h.rollouts.Run(runCtx); close(rolloutsDone) }()
	go func() {
		t := time.NewTicker(24 * time.Hour)
		defer t.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
				h.writeCRL(runCtx)
			}
		}
	}()
	h.log.Info("hub running", "api", h.advAPI, "mqtt", h.advMQTT, "registry", h.advRegistry,
		"ca_fingerprint", h.ca.Fingerprint(), "data", h.opts.DataDir)

	sdnotify.Notify(h.log, sdnotify.Ready+"\nSTATUS=hub running, API "+h.advAPI)
	wdog, stopWdog := sdnotify.WatchdogTicker(h.log)
	defer stopWdog()
serve:
	for {
		select {
		case <-ctx.Done():
			break serve
		case err = <-errc:
			break serve
		case <-wdog:
			if alive(h.db) {
				sdnotify.Notify(h.log, sdnotify.Watchdog)
			}
		}
	}
	sdnotify.Notify(h.log, sdnotify.Stopping)
	stop()
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	h.apiSrv.Shutdown(shutdownCtx)
	if h.regSrv != nil {
		h.regSrv.Shutdown(shutdownCtx)
	}
	<-shadowDone
	<-rolloutsDone
	<-telemDone
	<-dashDone
	return err
}

func serve(srv *http.Server, ln net.Listener) error {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("hub: %w", err)
	}
	return nil
}

// Close releases everything; Run calls it when it returns. It is safe to
// call more than once.
func (h *Hub) Close() error {
	h.closeOnce.Do(func() {
		var errs []error
		if h.embedded != nil {
			errs = append(errs, h.embedded.Close())
		}
		if h.external != nil {
			errs = append(errs, h.external.Close())
		}
		if h.apiSrv != nil {
			errs = append(errs, ignoreClosed(h.apiSrv.Close()))
		} else if h.apiLn != nil {
			errs = append(errs, ignoreClosed(h.apiLn.Close()))
		}
		errs = append(errs, h.closeTelemetry()...)
		errs = append(errs, h.closeDashboard())
		if h.regSrv != nil {
			errs = append(errs, ignoreClosed(h.regSrv.Close()))
		} else if h.regLn != nil {
			errs = append(errs, ignoreClosed(h.regLn.Close()))
		}
		if h.reg != nil {
			errs = append(errs, h.reg.Flush(context.Background()))
		}
		if h.db != nil {
			errs = append(errs, h.db.Close())
		}
		h.closeErr = errors.Join(errs...)
	})
	return h.closeErr
}

func ignoreClosed(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// SetDesired replaces a device's desired models and publishes them.
func (h *Hub) SetDesired(ctx context.Context, id string, models map[string]wire.DesiredModel) (wire.DesiredState, error) {
	return h.shadow.SetDesired(ctx, id, models)
}

// Revoke revokes a device: its certificate is refused from the next
// connection on (embedded broker, API, and external brokers through the
// CRL), its current embedded-broker connection is cut and its retained
// messages are cleared.
func (h *Hub) Revoke(ctx context.Context, id string) (registry.Device, error) {
	d, err := h.reg.Revoke(ctx, id)
	if err != nil {
		return registry.Device{}, err
	}
	h.writeCRL(ctx)
	if h.embedded != nil && h.embedded.Kick(id) {
		h.log.Info("revoked device disconnected", "device", id)
	}
	if err := h.shadow.Forget(ctx, id); err != nil {
		h.log.Warn("clear retained messages of a revoked device", "device", id, "err", err)
	}
	h.log.Info("device revoked", "device", id)
	return d, nil
}

// CreateToken makes a bootstrap token ("<secret>.<ca-fingerprint>").
func (h *Hub) CreateToken(ctx context.Context, opts enroll.TokenOptions) (string, enroll.Token, error) {
	secret, tok, err := h.tokens.Create(ctx, opts)
	if err != nil {
		return "", enroll.Token{}, err
	}
	return wire.FormatToken(secret, h.ca.Fingerprint()), tok, nil
}

// APIURL is the API's advertised URL.
func (h *Hub) APIURL() string { return h.advAPI }

// MQTTURL is the broker URL agents are told.
func (h *Hub) MQTTURL() string { return h.advMQTT }

// RegistryAddr is the OCI registry ("host:port") agents are told; "" when
// none.
func (h *Hub) RegistryAddr() string { return h.advRegistry }

// CAFingerprint is the SHA-256 fingerprint of the hub's CA certificate.
func (h *Hub) CAFingerprint() string { return h.ca.Fingerprint() }

// Registry is the device registry, for packages built on the hub
// (rollouts, telemetry).
func (h *Hub) Registry() *registry.Registry { return h.reg }

// Shadow is the desired/reported state service.
func (h *Hub) Shadow() *shadow.Service { return h.shadow }

// Rollouts is the rollout manager.
func (h *Hub) Rollouts() *rollout.Manager { return h.rollouts }

// resolveArtifact resolves a model artifact reference for a new rollout.
func resolveArtifact(ctx context.Context, ref string) (rollout.Artifact, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := ota.Inspect(ctx, ref)
	if errors.Is(err, ota.ErrIndex) {
		// Precision variants: devices pick theirs; the rollout tracks the index digest.
		ix, err := ota.InspectIndex(ctx, ref)
		if err != nil {
			return rollout.Artifact{}, err
		}
		name, version := ix.Model()
		return rollout.Artifact{Digest: ix.Ref.DigestStr(), Name: name, Version: version}, nil
	}
	if err != nil {
		return rollout.Artifact{}, err
	}
	return rollout.Artifact{Digest: res.Ref.DigestStr(), Name: res.Config.Name, Version: res.Config.Version}, nil
}

// DB is the hub's bbolt database, for packages that keep their own
// buckets in it.
func (h *Hub) DB() *bolt.DB { return h.db }

// advertise returns explicit, or scheme://addr with a wildcard host
// replaced by the host name.
func advertise(explicit, scheme string, addr net.Addr) string {
	if explicit != "" {
		return explicit
	}
	host, port, _ := net.SplitHostPort(addr.String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		if hn, err := os.Hostname(); err == nil {
			host = hn
		} else {
			host = "127.0.0.1"
		}
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

func tcpIP(a net.Addr) net.IP {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.IP
	}
	return nil
}

var _ api.Fleet = (*Hub)(nil)
