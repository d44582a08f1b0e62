package broker

import (
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgefleet/edgefleet/hub/ca"
	"github.com/edgefleet/edgefleet/ota/wire"
)

var subIDs atomic.Int64

func nextSubID() int { return int(subIDs.Add(1)) }

// authHook authenticates clients by certificate and confines devices to
// their own topics.
type authHook struct {
	mqtt.HookBase
	check CheckFunc
	log   *slog.Logger
}

func (h *authHook) ID() string { return "edgefleet-auth" }

func (h *authHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

// identity returns the verified certificate identity of a client.
func identity(cl *mqtt.Client) (ca.Identity, bool) {
	conn, ok := cl.Net.Conn.(*tls.Conn)
	if !ok {
		return ca.Identity{}, false
	}
	cs := conn.ConnectionState()
	return ca.PeerIdentity(&cs)
}

func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if cl.Net.Inline {
		return true
	}
	id, ok := identity(cl)
	refuse := func(reason string) bool {
		h.log.Warn("mqtt connection refused", "client", cl.ID, "identity", id.ID, "remote", cl.Net.Remote, "reason", reason)
		return false
	}
	if !ok {
		return refuse("no verified client certificate")
	}
	switch id.Kind {
	case ca.KindHub:
		return true
	case ca.KindDevice:
	default:
		return refuse("identity not allowed on the broker")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.check(ctx, id.ID, ca.SerialString(id.Serial)); err != nil {
		return refuse(err.Error())
	}
	if cl.ID != id.ID {
		return refuse("client id must equal the device id")
	}
	if u := pk.Connect.Username; len(u) > 0 && !bytes.Equal(u, []byte(id.ID)) {
		return refuse("username must be empty or the device id")
	}
	if pk.Connect.WillFlag && pk.Connect.WillTopic != wire.Topic(id.ID, wire.KindPresence) {
		return refuse("last will must be on the device's presence topic")
	}
	return true
}

func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	id, ok := identity(cl)
	if !ok {
		return false
	}
	switch id.Kind {
	case ca.KindHub:
		return true
	case ca.KindDevice:
		return deviceMay(id.ID, topic, write)
	}
	return false
}

// deviceMay is the device ACL: read anything in the own subtree, write
// only the device → hub topics.
func deviceMay(id, topic string, write bool) bool {
	if !wire.InDeviceTree(id, topic) {
		return false
	}
	if !write {
		return true
	}
	tid, kind, ok := wire.ParseTopic(topic)
	return ok && tid == id && wire.DeviceMayPublish(kind)
}
