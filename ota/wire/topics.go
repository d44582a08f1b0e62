package wire

import "strings"

// TopicPrefix is the root of all device topics, versioned with the wire
// format.
const TopicPrefix = "edgefleet/v1/devices"

// Kind names a topic in a device's subtree.
type Kind string

// The topics of a device; see the package documentation for direction,
// QoS and retention.
const (
	KindDesired      Kind = "desired"
	KindReported     Kind = "reported"
	KindHeartbeat    Kind = "heartbeat"
	KindPresence     Kind = "presence"
	KindTelemetry    Kind = "telemetry"
	KindTelemetryAck Kind = "telemetry/ack"
)

// Kinds lists every topic kind.
var Kinds = []Kind{KindDesired, KindReported, KindHeartbeat, KindPresence, KindTelemetry, KindTelemetryAck}

// DeviceMayPublish reports whether a device may publish on its own topic of
// this kind (the device → hub direction). Everything else in its subtree is
// read-only for the device.
func DeviceMayPublish(k Kind) bool {
	switch k {
	case KindReported, KindHeartbeat, KindPresence, KindTelemetry:
		return true
	}
	return false
}

// DeviceRoot is the root of a device's subtree, without a trailing slash.
func DeviceRoot(id string) string { return TopicPrefix + "/" + id }

// Topic is the topic of kind k for device id. The id is not validated.
func Topic(id string, k Kind) string { return TopicPrefix + "/" + id + "/" + string(k) }

// Filter is the subscription filter matching topic kind k of every device,
// e.g. "edgefleet/v1/devices/+/reported".
func Filter(k Kind) string { return TopicPrefix + "/+/" + string(k) }

// DeviceFilter matches every topic of one device.
func DeviceFilter(id string) string { return TopicPrefix + "/" + id + "/#" }

// ParseTopic splits a device topic into its device id and kind. ok is false
// for topics outside TopicPrefix, with an invalid device id or an unknown
// kind.
func ParseTopic(topic string) (id string, k Kind, ok bool) {
	rest, found := strings.CutPrefix(topic, TopicPrefix+"/")
	if !found {
		return "", "", false
	}
	id, kind, found := strings.Cut(rest, "/")
	if !found || ValidateDeviceID(id) != nil {
		return "", "", false
	}
	for _, known := range Kinds {
		if Kind(kind) == known {
			return id, known, true
		}
	}
	return "", "", false
}

// InDeviceTree reports whether a topic or subscription filter stays inside
// device id's subtree: it equals the device root or starts with the root
// and a '/'. Wildcards after the root are fine (they cannot leave it);
// shared-subscription and '$' topics are not in any device tree.
func InDeviceTree(id, topicOrFilter string) bool {
	root := DeviceRoot(id)
	return topicOrFilter == root || strings.HasPrefix(topicOrFilter, root+"/")
}
