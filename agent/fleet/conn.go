package fleet

import (
	"crypto/tls"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// MQTT returns the device's MQTT client once Run has created it (nil
// before). Other agent packages (telemetry) publish through it: a broker
// holds one session per device id, so the device has one connection.
// Subscriptions made through it do not survive a reconnection (clean
// sessions); their owner renews them.
func (c *Client) MQTT() paho.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mqtt
}

// TLSConfig returns a fresh mutual-TLS configuration with the device's
// certificate, trusting only the hub's CA, for other connections to the
// hub (telemetry over QUIC). It fails before enrollment.
func (c *Client) TLSConfig() (*tls.Config, error) {
	return tlsConfig(c.opts.Dir)
}
