package hub_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/deploy/testenv"
	"github.com/edgefleet/edgefleet/hub"
	"github.com/edgefleet/edgefleet/hub/api"
	"github.com/edgefleet/edgefleet/hub/ca"
	"github.com/edgefleet/edgefleet/hub/hubtest"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// running is a hub serving in the background.
type running struct {
	*hubtest.Hub
	dir string
}

// startHub runs a hub on dir with an embedded registry (mod changes the
// options) and waits until its API answers.
func startHub(t *testing.T, dir string, mod func(*hub.Options)) *running {
	t.Helper()
	opts := hub.Options{DataDir: dir, RegistryAddr: "127.0.0.1:0"}
	if mod != nil {
		mod(&opts)
	}
	r := &running{Hub: hubtest.Start(t, opts), dir: dir}
	c := r.admin(t)
	var err error
	testenv.Eventually(t, "a healthy hub", 10*time.Second, func() bool {
		err = c.Health(context.Background())
		return err == nil
	})
	return r
}

func (r *running) admin(t *testing.T) *api.Client {
	t.Helper()
	base, cfg, err := api.AdminCredentials(r.dir, "")
	if err != nil {
		t.Fatal(err)
	}
	return api.NewClient(base, cfg)
}

func (r *running) roots(t *testing.T) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(b)
	return p
}

// device is an enrolled device as the test drives it.
type device struct {
	id   string
	cert tls.Certificate
	resp wire.EnrollResponse
}

// enrollDevice enrolls over the real HTTPS endpoint.
func enrollDevice(t *testing.T, r *running, id string, labels map[string]string) (device, error) {
	t.Helper()
	tok, err := r.admin(t).CreateToken(context.Background(), api.TokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return enrollWith(t, r, tok.Token, id, labels)
}

func enrollWith(t *testing.T, r *running, token, id string, labels map[string]string) (device, error) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	body, _ := json.Marshal(wire.EnrollRequest{Token: token, DeviceID: id, Labels: labels,
		CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))})
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: r.roots(t)}}}
	resp, err := hc.Post(r.APIURL()+wire.EnrollPath, "application/json", bytes.NewReader(body))
	if err != nil {
		return device{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e wire.Error
		json.NewDecoder(resp.Body).Decode(&e)
		return device{}, &api.StatusError{Code: resp.StatusCode, Message: e.Error}
	}
	var out wire.EnrollResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.ParseCertPEM([]byte(out.Certificate))
	if err != nil {
		t.Fatal(err)
	}
	return device{id: out.DeviceID, resp: out, cert: tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}}, nil
}

func mustEnroll(t *testing.T, r *running, id string) device {
	t.Helper()
	d, err := enrollDevice(t, r, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// connect connects the device to the MQTT URL it was given at enrollment,
// with its presence will.
func connect(t *testing.T, d device, roots *x509.CertPool, onLost func(error)) (paho.Client, error) {
	t.Helper()
	po := paho.NewClientOptions().AddBroker(d.resp.MQTTURL).SetClientID(d.id).
		SetTLSConfig(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{d.cert}}).
		SetAutoReconnect(false).SetConnectRetry(false).SetOrderMatters(true).SetConnectTimeout(5*time.Second).
		SetWill(wire.Topic(d.id, wire.KindPresence), `{"online":false}`, 1, true)
	if onLost != nil {
		po.SetConnectionLostHandler(func(_ paho.Client, err error) { onLost(err) })
	}
	c := paho.NewClient(po)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

func pub(t *testing.T, c paho.Client, topic string, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	if tok := c.Publish(topic, 1, false, b); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

func desiredCh(t *testing.T, c paho.Client, id string) <-chan wire.DesiredState {
	t.Helper()
	ch := make(chan wire.DesiredState, 10)
	tok := c.Subscribe(wire.Topic(id, wire.KindDesired), 1, func(_ paho.Client, m paho.Message) {
		var ds wire.DesiredState
		if len(m.Payload()) > 0 {
			json.Unmarshal(m.Payload(), &ds)
			ch <- ds
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	return ch
}

func recv(t *testing.T, ch <-chan wire.DesiredState) wire.DesiredState {
	t.Helper()
	select {
	case ds := <-ch:
		return ds
	case <-time.After(10 * time.Second):
		t.Fatal("no desired state received")
		return wire.DesiredState{}
	}
}

var digits = map[string]wire.DesiredModel{"digits": {Ref: "127.0.0.1:5000/models/digits:1", Version: "1"}}

func TestEnrollConnectReport(t *testing.T) {
	ctx := context.Background()
	r := startHub(t, t.TempDir(), nil)
	d, err := enrollDevice(t, r, "edge-1", map[string]string{"site": "berlin"})
	if err != nil {
		t.Fatal(err)
	}
	if d.resp.MQTTURL != r.MQTTURL() || d.resp.APIURL != r.APIURL() || d.resp.Registry != r.RegistryAddr() ||
		d.resp.CAFingerprint != r.CAFingerprint() {
		t.Fatalf("enrollment answer %+v", d.resp)
	}
	c, err := connect(t, d, r.roots(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	pub(t, c, wire.Topic("edge-1", wire.KindPresence), wire.Presence{Online: true})
	pub(t, c, wire.Topic("edge-1", wire.KindReported), wire.ReportedState{AgentVersion: "0.9.0", AppliedRevision: 0,
		Hardware: wire.Hardware{Cores: 8, Providers: []string{"cpu"}},
		Models:   map[string]wire.ReportedModel{"digits": {ActiveVersion: "1", ActiveDigest: "sha256:" + string(bytes.Repeat([]byte("a"), 64)), State: wire.StateActive}}})
	admin := r.admin(t)
	testenv.Eventually(t, "reported state in the registry", 10*time.Second, func() bool {
		det, err := admin.Device(ctx, "edge-1")
		return err == nil && det.Reported != nil && det.Device.Online && det.Device.AgentVersion == "0.9.0"
	})
	det, _ := admin.Device(ctx, "edge-1")
	if det.Device.Labels["site"] != "berlin" || det.Device.Hardware.Cores != 8 || det.Device.Models["digits"].ActiveVersion != "1" {
		t.Fatalf("device detail %+v", det.Device)
	}
	devs, err := admin.Devices(ctx, "site=berlin")
	if err != nil || len(devs) != 1 || devs[0].ID != "edge-1" {
		t.Fatalf("Devices(site=berlin) = %+v, %v", devs, err)
	}
	if devs, _ := admin.Devices(ctx, "site=paris"); len(devs) != 0 {
		t.Fatalf("selector ignored: %+v", devs)
	}
	// Desired state through the API reaches the connected device.
	ch := desiredCh(t, c, "edge-1")
	ds, err := admin.SetDesired(ctx, "edge-1", digits)
	if err != nil || ds.Revision != 1 {
		t.Fatalf("SetDesired = %+v, %v", ds, err)
	}
	if got := recv(t, ch); got.Revision != 1 || got.Models["digits"] != digits["digits"] {
		t.Fatalf("device received %+v", got)
	}
	// Going offline: the last will flips presence.
	c.Disconnect(0) // clean: no will; the agent announces offline itself
	pubOffline, err := connect(t, d, r.roots(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	pub(t, pubOffline, wire.Topic("edge-1", wire.KindPresence), wire.Presence{Online: false})
	testenv.Eventually(t, "offline", 10*time.Second, func() bool { det, _ := admin.Device(ctx, "edge-1"); return !det.Device.Online })
}

func TestAPIAuthorization(t *testing.T) {
	r := startHub(t, t.TempDir(), nil)
	d := mustEnroll(t, r, "edge-1")
	roots := r.roots(t)
	as := func(cert *tls.Certificate) *http.Client {
		cfg := &tls.Config{RootCAs: roots}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	adminCert, err := tls.LoadX509KeyPair(filepath.Join(r.dir, api.AdminCertFile), filepath.Join(r.dir, api.AdminKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		client *http.Client
		method string
		path   string
		body   string
		status int
	}{
		{"health without certificate", as(nil), "GET", "/v1/health", "", 200},
		{"devices without certificate", as(nil), "GET", "/v1/devices", "", 401},
		{"devices as a device", as(&d.cert), "GET", "/v1/devices", "", 403},
		{"tokens as a device", as(&d.cert), "POST", "/v1/tokens", "{}", 403},
		{"devices as admin", as(&adminCert), "GET", "/v1/devices", "", 200},
		{"self as a device", as(&d.cert), "GET", "/v1/self", "", 200},
		{"self desired as a device", as(&d.cert), "GET", "/v1/self/desired", "", 200},
		{"self as admin", as(&adminCert), "GET", "/v1/self", "", 403},
		{"self without certificate", as(nil), "GET", "/v1/self", "", 401},
		{"unknown device", as(&adminCert), "GET", "/v1/devices/nope", "", 404},
		{"bad selector", as(&adminCert), "GET", "/v1/devices?selector=a%20b", "", 400},
		{"malformed labels", as(&adminCert), "PUT", "/v1/devices/edge-1/labels", "{", 400},
		{"unknown field", as(&adminCert), "PUT", "/v1/devices/edge-1/labels", `{"labelz":{}}`, 400},
		{"invalid label", as(&adminCert), "PUT", "/v1/devices/edge-1/labels", `{"labels":{"a b":"c"}}`, 400},
		{"invalid desired", as(&adminCert), "PUT", "/v1/devices/edge-1/desired", `{"models":{"m":{"ref":""}}}`, 400},
		{"desired for unknown device", as(&adminCert), "PUT", "/v1/devices/nope/desired", `{"models":{}}`, 404},
		{"bad token ttl", as(&adminCert), "POST", "/v1/tokens", `{"ttl":"soon"}`, 400},
		{"token for bad id", as(&adminCert), "POST", "/v1/tokens", `{"device_id":"a/b"}`, 400},
		{"token", as(&adminCert), "POST", "/v1/tokens", `{"ttl":"1h","labels":{"site":"x"}}`, 201},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, r.APIURL()+tt.path, bytes.NewBufferString(tt.body))
			resp, err := tt.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.status {
				var e wire.Error
				json.NewDecoder(resp.Body).Decode(&e)
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tt.status, e.Error)
			}
		})
	}
	// Bad input lost nothing.
	det, err := r.admin(t).Device(context.Background(), "edge-1")
	if err != nil || det.Desired.Revision != 0 || len(det.Device.Labels) != 0 {
		t.Fatalf("refused requests changed the device: %+v, %v", det, err)
	}
}

func TestLabels(t *testing.T) {
	ctx := context.Background()
	r := startHub(t, t.TempDir(), nil)
	mustEnroll(t, r, "edge-1")
	admin := r.admin(t)
	d, err := admin.SetLabels(ctx, "edge-1", map[string]string{"site": "paris", "gpu": "true"})
	if err != nil || d.Labels["site"] != "paris" {
		t.Fatalf("SetLabels = %+v, %v", d, err)
	}
	if devs, _ := admin.Devices(ctx, "gpu=true,site=paris"); len(devs) != 1 {
		t.Fatalf("relabelled device not selected: %+v", devs)
	}
}

func TestRevocation(t *testing.T) {
	ctx := context.Background()
	r := startHub(t, t.TempDir(), nil)
	d := mustEnroll(t, r, "edge-r")
	other := mustEnroll(t, r, "edge-ok")
	roots := r.roots(t)
	lost := make(chan error, 1)
	c, err := connect(t, d, roots, func(err error) { lost <- err })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.admin(t).SetDesired(ctx, "edge-r", digits); err != nil {
		t.Fatal(err)
	}
	pub(t, c, wire.Topic("edge-r", wire.KindPresence), wire.Presence{Online: true})
	v, err := r.admin(t).Revoke(ctx, "edge-r")
	if err != nil || !v.Revoked || v.Online {
		t.Fatalf("Revoke = %+v, %v", v, err)
	}
	// The current connection is cut...
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("revoked device still connected")
	}
	// ...and the next ones are refused: MQTT and HTTPS.
	if _, err := connect(t, d, roots, nil); err == nil {
		t.Fatal("revoked device reconnected to MQTT")
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{d.cert}}}}
	if resp, err := hc.Get(r.APIURL() + "/v1/self"); err == nil {
		resp.Body.Close()
		t.Fatalf("revoked device reached the API: %d", resp.StatusCode)
	}
	// Other devices are unaffected.
	if _, err := connect(t, other, roots, nil); err != nil {
		t.Fatalf("other device refused: %v", err)
	}
	// The revoked device cannot be given models, nor re-enroll.
	if _, err := r.admin(t).SetDesired(ctx, "edge-r", digits); !api.IsStatus(err, http.StatusConflict) {
		t.Fatalf("SetDesired on a revoked device: %v", err)
	}
	if _, err := enrollDevice(t, r, "edge-r", nil); !api.IsStatus(err, http.StatusForbidden) {
		t.Fatalf("re-enrollment of a revoked id with an unbound token: %v", err)
	}
	// The CRL for external brokers lists its certificate.
	raw, err := os.ReadFile(filepath.Join(r.dir, hub.CRLFile))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(raw)
	crl, err := x509.ParseRevocationList(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range crl.RevokedCertificateEntries {
		found = found || e.SerialNumber.Cmp(d.cert.Leaf.SerialNumber) == 0
	}
	if !found {
		t.Fatal("revoked certificate missing from crl.pem")
	}
}

func TestRestartKeepsState(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	r := startHub(t, dir, nil)
	fp := r.CAFingerprint()
	d := mustEnroll(t, r, "edge-1")
	if _, err := r.admin(t).SetDesired(ctx, "edge-1", digits); err != nil {
		t.Fatal(err)
	}
	tok, err := r.admin(t).CreateToken(ctx, api.TokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	r.Stop()

	r = startHub(t, dir, nil)
	if r.CAFingerprint() != fp {
		t.Fatal("CA changed across a restart")
	}
	det, err := r.admin(t).Device(ctx, "edge-1")
	if err != nil || det.Desired.Revision != 1 {
		t.Fatalf("device after restart: %+v, %v", det, err)
	}
	// The device's certificate still works against the new listeners
	// (new ports: the device is told them again in this test only).
	d.resp.MQTTURL = r.MQTTURL()
	c, err := connect(t, d, r.roots(t), nil)
	if err != nil {
		t.Fatalf("enrolled device refused after restart: %v", err)
	}
	// The embedded broker lost its retained messages; the hub republished.
	if ds := recv(t, desiredCh(t, c, "edge-1")); ds.Revision != 1 {
		t.Fatalf("desired after restart: %+v", ds)
	}
	// A token made before the restart still works, once.
	if _, err := enrollWith(t, r, tok.Token, "edge-2", nil); err != nil {
		t.Fatalf("enrollment after restart: %v", err)
	}
	if _, err := enrollWith(t, r, tok.Token, "edge-3", nil); !api.IsStatus(err, http.StatusUnauthorized) {
		t.Fatalf("token reused after restart: %v", err)
	}
}

func TestDataDirLocked(t *testing.T) {
	dir := t.TempDir()
	startHub(t, dir, nil)
	_, err := hub.New(context.Background(), hub.Options{DataDir: dir, APIAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0", RegistryAddr: hub.Off})
	if err == nil {
		t.Fatal("second hub on the same data folder started")
	}
}

func TestExternalMosquitto(t *testing.T) {
	testenv.RequireMosquitto(t)
	ctx := context.Background()
	dir := t.TempDir()
	// The hub's CA must exist before Mosquitto can trust it.
	c, err := ca.LoadOrCreate(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	m := testenv.StartMosquitto(t, c, nil)
	r := startHub(t, dir, func(o *hub.Options) { o.Broker = m.URL; o.RegistryAddr = hub.Off })
	if r.MQTTURL() != m.URL {
		t.Fatalf("agents told %q, want the external broker %q", r.MQTTURL(), m.URL)
	}
	d := mustEnroll(t, r, "edge-m")
	if d.resp.MQTTURL != m.URL {
		t.Fatalf("enrollment MQTT URL %q", d.resp.MQTTURL)
	}
	// Desired state set while the device is offline waits retained in
	// Mosquitto.
	if _, err := r.admin(t).SetDesired(ctx, "edge-m", digits); err != nil {
		t.Fatal(err)
	}
	cl, err := connect(t, d, r.roots(t), nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, m.Log())
	}
	if ds := recv(t, desiredCh(t, cl, "edge-m")); ds.Revision != 1 {
		t.Fatalf("desired via Mosquitto: %+v", ds)
	}
	pub(t, cl, wire.Topic("edge-m", wire.KindReported), wire.ReportedState{AgentVersion: "via-mosquitto", AppliedRevision: 1})
	testenv.Eventually(t, "report through Mosquitto", 10*time.Second, func() bool {
		det, err := r.admin(t).Device(ctx, "edge-m")
		return err == nil && det.Device.AgentVersion == "via-mosquitto" && det.Device.AppliedRevision == 1
	})
}
