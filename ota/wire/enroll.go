package wire

import (
	"fmt"
	"strings"
)

// EnrollPath is the hub's enrollment endpoint (HTTPS, POST, JSON).
const EnrollPath = "/v1/enroll"

// FingerprintPrefixLen is how many hex digits of the CA's SHA-256
// fingerprint a bootstrap token carries (128 bits).
const FingerprintPrefixLen = 32

// EnrollRequest is the body of POST /v1/enroll.
type EnrollRequest struct {
	// Token is the bootstrap token's secret part (the whole token is
	// accepted too).
	Token string `json:"token"`
	// DeviceID asks for an id; "" lets the hub choose (or use the id the
	// token was made for).
	DeviceID string `json:"device_id,omitempty"`
	// CSR is a PEM certificate request signed by the device's new key;
	// its subject is ignored.
	CSR          string            `json:"csr"`
	Labels       map[string]string `json:"labels,omitempty"`
	Hardware     Hardware          `json:"hardware"`
	AgentVersion string            `json:"agent_version,omitempty"`
}

// EnrollResponse is the answer to a successful enrollment.
type EnrollResponse struct {
	DeviceID string `json:"device_id"`
	// Certificate is the device's client certificate (PEM).
	Certificate string `json:"certificate"`
	// CA is the hub's CA certificate (PEM): the root for MQTT, HTTPS and
	// QUIC from now on.
	CA            string `json:"ca"`
	CAFingerprint string `json:"ca_fingerprint"`
	// MQTTURL is the broker, e.g. "mqtts://hub.example:8883".
	MQTTURL string `json:"mqtt_url"`
	// APIURL is the hub's HTTPS API.
	APIURL string `json:"api_url"`
	// Registry is the OCI registry models come from ("host:port"), when
	// the hub knows one.
	Registry string `json:"registry,omitempty"`
}

// Error is the JSON body of every hub API error.
type Error struct {
	Error string `json:"error"`
}

// FormatToken joins a bootstrap token's secret and the CA fingerprint
// prefix that lets the agent authenticate the hub: "<secret>.<fp-prefix>".
func FormatToken(secret, caFingerprint string) string {
	fp := caFingerprint
	if len(fp) > FingerprintPrefixLen {
		fp = fp[:FingerprintPrefixLen]
	}
	return secret + "." + strings.ToLower(fp)
}

// ParseToken splits a bootstrap token into its secret and CA fingerprint
// prefix. The error wraps ErrInvalid.
func ParseToken(token string) (secret, caFingerprint string, err error) {
	token = strings.TrimSpace(token)
	i := strings.LastIndexByte(token, '.')
	if i <= 0 {
		return "", "", fmt.Errorf("bootstrap token: want <secret>.<ca-fingerprint>: %w", ErrInvalid)
	}
	secret, fp := token[:i], strings.ToLower(token[i+1:])
	if len(fp) < FingerprintPrefixLen || strings.Trim(fp, "0123456789abcdef") != "" {
		return "", "", fmt.Errorf("bootstrap token: CA fingerprint %q: want at least %d hex digits: %w", fp, FingerprintPrefixLen, ErrInvalid)
	}
	if len(secret) < 16 || strings.ContainsAny(secret, " \t\r\n.") {
		return "", "", fmt.Errorf("bootstrap token: malformed secret: %w", ErrInvalid)
	}
	return secret, fp, nil
}
