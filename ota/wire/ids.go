package wire

import (
	"errors"
	"fmt"
)

// ErrInvalid is wrapped by every validation error of this package.
var ErrInvalid = errors.New("invalid")

// MaxIDLen is the longest device id: an X.509 common name holds at most 64
// characters, and the device id is the certificate's common name.
const MaxIDLen = 64

// ValidateDeviceID checks a device id: 1 to 64 letters, digits, '.', '_'
// and '-', starting with a letter or digit. Such ids are safe as an MQTT
// topic level (no '/', '+', '#' or '$'), as a certificate common name and
// in Mosquitto's %u ACL patterns. The error wraps ErrInvalid.
func ValidateDeviceID(id string) error {
	return validateName("device id", id, MaxIDLen)
}

// ValidateModelName checks a model name with the rules the agent's cache
// applies: 1 to 128 letters, digits, '.', '_' and '-', starting with a
// letter or digit. The error wraps ErrInvalid.
func ValidateModelName(name string) error {
	return validateName("model name", name, 128)
}

func validateName(kind, s string, max int) error {
	if s == "" || len(s) > max {
		return fmt.Errorf("%s %q: want 1 to %d characters: %w", kind, s, max, ErrInvalid)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return fmt.Errorf("%s %q: only letters, digits, '.', '_' and '-' (not first) allowed: %w", kind, s, ErrInvalid)
		}
	}
	return nil
}
