// Package natsbus is the hub's messaging on NATS with JetStream, for
// cluster mode: devices keep speaking MQTT 3.1.1 — to the NATS servers'
// MQTT listener — and hub replicas consume what devices send through
// shared durable JetStream consumers, so the work spreads over replicas
// and nothing is lost when one dies.
//
// # Nodes
//
// StartNode runs a nats-server (github.com/nats-io/nats-server/v2, in this
// process) with JetStream, cluster routes, a TLS client port for hubs and
// a TLS MQTT listener for devices. Both listeners require client
// certificates from the hub CA, and the node authenticates every client
// with Authenticator: the hub's identity gets every permission, a device's
// certificate must pass the registry's check (not revoked, not
// superseded) and gets permissions confined to its own topics, enforced
// by NATS itself:
//
//	publish    edgefleet.v1.devices.<id>.<kind>  for the device → hub kinds
//	subscribe  edgefleet.v1.devices.<id>.>
//
// (MQTT topic levels become NATS subject tokens: '/' ↔ '.', and a '.'
// inside a level becomes "//".)
//
// # Bus
//
// Bus implements the hub's shadow.Bus: Publish goes out over MQTT (to the
// same listener the devices use, with the hub certificate), so retained
// desired states reach MQTT subscribers as MQTT retained messages;
// Subscribe reads the stream Stream through a durable consumer named after
// the filter, shared by every hub replica.
package natsbus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/edgefleet/edgefleet/hub/ca"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// Stream is the JetStream stream of device → hub messages.
const Stream = "EDGEFLEET_DEVICES"

// CheckFunc tells whether a certificate serial may act as a device (the
// registry's Check).
type CheckFunc func(ctx context.Context, id, serial string) error

// Authenticator is the nodes' client authentication (nats-server's
// CustomClientAuthentication): certificate identity from the hub CA, the
// registry's check, per-device permissions.
type Authenticator struct {
	Registry CheckFunc
	Log      *slog.Logger
}

var _ server.Authentication = (*Authenticator)(nil)

// Check authenticates one client connection and sets its permissions.
func (a *Authenticator) Check(c server.ClientAuthentication) bool {
	st := c.GetTLSConnectionState()
	if st == nil {
		return false
	}
	id, ok := ca.PeerIdentity(st)
	if !ok {
		return false
	}
	switch id.Kind {
	case ca.KindHub:
		c.RegisterUser(&server.User{Username: ca.HubIdentity})
		return true
	case ca.KindDevice:
	default:
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Registry(ctx, id.ID, ca.SerialString(id.Serial)); err != nil {
		if a.Log != nil {
			a.Log.Warn("nats: device refused", "device", id.ID, "remote", c.RemoteAddress(), "err", err)
		}
		return false
	}
	// An MQTT client id is a session: a device using another's would
	// take that device's session over (and cut its connection).
	if cid, isMQTT, ok := mqttClientID(c); !ok || (isMQTT && cid != id.ID) {
		if a.Log != nil {
			a.Log.Warn("nats: device refused: MQTT client id must equal the device id", "device", id.ID, "client_id", cid)
		}
		return false
	}
	c.RegisterUser(&server.User{Username: id.ID, Permissions: DevicePermissions(id.ID)})
	return true
}

// mqttClientID reads the MQTT client id of a connection being
// authenticated. nats-server's Authentication interface does not expose
// it, so it is read from the server's client struct (client.mqtt.cid,
// parsed from CONNECT before authentication); ok is false when that
// layout is not found, and the device is then refused (fail closed; the
// nats tests of package broker catch a server upgrade that moves it).
func mqttClientID(c server.ClientAuthentication) (cid string, isMQTT, ok bool) {
	v := reflect.ValueOf(c)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return "", false, false
	}
	m := v.Elem().FieldByName("mqtt")
	if !m.IsValid() || m.Kind() != reflect.Pointer {
		return "", false, false
	}
	if m.IsNil() {
		return "", false, true // a NATS client, not MQTT
	}
	f := m.Elem().FieldByName("cid")
	if !f.IsValid() || f.Kind() != reflect.String {
		return "", true, false
	}
	return f.String(), true, true
}

// DevicePermissions confines a device to its own subjects: publish on the
// device → hub kinds, subscribe to its subtree.
func DevicePermissions(id string) *server.Permissions {
	var pub []string
	for _, k := range wire.Kinds {
		if wire.DeviceMayPublish(k) {
			pub = append(pub, Subject(wire.Topic(id, k)))
		}
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: []string{Subject(wire.DeviceRoot(id)) + ".>"}},
	}
}

// Subject converts an MQTT topic or filter to the NATS subject the MQTT
// listener uses for it.
func Subject(topic string) string {
	levels := strings.Split(topic, "/")
	for i, l := range levels {
		switch l {
		case "+":
			levels[i] = "*"
		case "#":
			levels[i] = ">"
		default:
			levels[i] = strings.ReplaceAll(l, ".", "//")
		}
	}
	return strings.Join(levels, ".")
}

// Topic converts a NATS subject back to its MQTT topic.
func Topic(subject string) string {
	const sep = "\x00"
	s := strings.ReplaceAll(subject, "//", sep)
	s = strings.ReplaceAll(s, ".", "/")
	return strings.ReplaceAll(s, sep, ".")
}

// NodeOptions configure one NATS node.
type NodeOptions struct {
	// Name is the node's unique server name.
	Name string
	// Cluster names the cluster every node shares ("edgefleet").
	Cluster string
	// Dir holds the node's JetStream files.
	Dir string
	// Host is the listen host ("127.0.0.1"); Port, ClusterPort and
	// MQTTPort the ports (-1: any free one).
	Host                        string
	Port, ClusterPort, MQTTPort int
	// Routes are the other nodes' cluster URLs ("nats://host:port").
	Routes []string
	// TLS is the server certificate with the hub CA as ClientCAs;
	// client certificates are required on both client listeners.
	TLS *tls.Config
	// Auth authenticates clients.
	Auth *Authenticator
	// Logger, optional: the server's own log at debug level.
	Logger *slog.Logger
}

// Node is a running NATS node.
type Node struct {
	*server.Server
	// MQTTURL is its MQTT listener, "mqtts://host:port".
	MQTTURL string
}

// StartNode starts a node and waits until it accepts connections.
func StartNode(o NodeOptions) (*Node, error) {
	if o.Cluster == "" {
		o.Cluster = "edgefleet"
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.TLS == nil || o.Auth == nil {
		return nil, errors.New("natsbus: TLS and Auth required")
	}
	if o.MQTTPort <= 0 {
		// The server does not tell the port it picked.
		ln, err := net.Listen("tcp", net.JoinHostPort(o.Host, "0"))
		if err != nil {
			return nil, fmt.Errorf("natsbus: %w", err)
		}
		o.MQTTPort = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	}
	tlsCfg := o.TLS.Clone()
	tlsCfg.ClientAuth = tls.RequireAndVerifyClientCert
	opts := &server.Options{
		ServerName:                 o.Name,
		Host:                       o.Host,
		Port:                       o.Port,
		JetStream:                  true,
		StoreDir:                   o.Dir,
		TLSConfig:                  tlsCfg,
		TLSVerify:                  true,
		TLSTimeout:                 5,
		CustomClientAuthentication: o.Auth,
		NoSigs:                     true,
		MQTT: server.MQTTOpts{
			Host:       o.Host,
			Port:       o.MQTTPort,
			TLSConfig:  tlsCfg,
			TLSTimeout: 5,
		},
	}
	if o.ClusterPort != 0 {
		opts.Cluster = server.ClusterOpts{Name: o.Cluster, Host: o.Host, Port: o.ClusterPort}
		if len(o.Routes) > 0 {
			opts.Routes = server.RoutesFromStr(strings.Join(o.Routes, ","))
		}
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsbus: %w", err)
	}
	if o.Logger != nil {
		s.SetLoggerV2(&slogLogger{o.Logger.With("nats", o.Name)}, false, false, false)
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("natsbus: node %s not ready", o.Name)
	}
	return &Node{Server: s, MQTTURL: "mqtts://" + net.JoinHostPort(o.Host, strconv.Itoa(o.MQTTPort))}, nil
}

// Kick disconnects every connection of a device on the node (after a
// revocation; new connections are refused by the registry check).
func (s *Node) Kick(id string) int {
	cz, err := s.Connz(&server.ConnzOptions{Username: true, User: id, Limit: 1 << 16})
	if err != nil {
		return 0
	}
	n := 0
	for _, c := range cz.Conns {
		if s.DisconnectClientByID(c.Cid) == nil {
			n++
		}
	}
	return n
}

type slogLogger struct{ l *slog.Logger }

func (s *slogLogger) Noticef(f string, v ...any) { s.l.Debug(fmt.Sprintf(f, v...)) }
func (s *slogLogger) Warnf(f string, v ...any)   { s.l.Debug(fmt.Sprintf(f, v...)) }
func (s *slogLogger) Fatalf(f string, v ...any)  { s.l.Error(fmt.Sprintf(f, v...)) }
func (s *slogLogger) Errorf(f string, v ...any)  { s.l.Debug(fmt.Sprintf(f, v...)) }
func (s *slogLogger) Debugf(f string, v ...any)  { s.l.Debug(fmt.Sprintf(f, v...)) }
func (s *slogLogger) Tracef(f string, v ...any)  { s.l.Debug(fmt.Sprintf(f, v...)) }
