package registry

import (
	"fmt"
	"sort"
	"strings"
)

// ValidateLabels checks label keys and values. Keys are 1 to 63 letters,
// digits, '.', '_', '-' and '/', starting with a letter or digit; values
// are at most 63 letters, digits, '.', '_' and '-'. The error wraps
// ErrInvalid.
func ValidateLabels(labels map[string]string) error {
	for k, v := range labels {
		if err := validateLabelKey(k); err != nil {
			return err
		}
		if err := validateLabelValue(k, v); err != nil {
			return err
		}
	}
	return nil
}

func validateLabelKey(k string) error {
	if k == "" || len(k) > 63 {
		return fmt.Errorf("label key %q: want 1 to 63 characters: %w", k, ErrInvalid)
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !alnum(c) && (i == 0 || (c != '.' && c != '_' && c != '-' && c != '/')) {
			return fmt.Errorf("label key %q: only letters, digits, '.', '_', '-' and '/' (not first) allowed: %w", k, ErrInvalid)
		}
	}
	return nil
}

func validateLabelValue(k, v string) error {
	if len(v) > 63 {
		return fmt.Errorf("label %q: value longer than 63 characters: %w", k, ErrInvalid)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !alnum(c) && c != '.' && c != '_' && c != '-' {
			return fmt.Errorf("label %q: value %q: only letters, digits, '.', '_' and '-' allowed: %w", k, v, ErrInvalid)
		}
	}
	return nil
}

func alnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// Selector matches device labels. The zero Selector matches every device.
type Selector struct {
	terms []term
}

type op int

const (
	opEq op = iota
	opNe
	opExists
	opAbsent
)

type term struct {
	op    op
	key   string
	value string
}

// ParseSelector parses a comma-separated label selector: "k=v" (or "k==v")
// requires the value, "k!=v" excludes it (devices without k match),
// "k" requires the key and "!k" its absence. All terms must hold. An empty
// string matches every device. The error wraps ErrInvalid.
func ParseSelector(s string) (Selector, error) {
	var sel Selector
	if strings.TrimSpace(s) == "" {
		return sel, nil
	}
	for _, raw := range strings.Split(s, ",") {
		t := strings.TrimSpace(raw)
		var tm term
		switch {
		case strings.Contains(t, "!="):
			k, v, _ := strings.Cut(t, "!=")
			tm = term{op: opNe, key: strings.TrimSpace(k), value: strings.TrimSpace(v)}
		case strings.Contains(t, "="):
			k, v, _ := strings.Cut(t, "=")
			v = strings.TrimPrefix(v, "=")
			tm = term{op: opEq, key: strings.TrimSpace(k), value: strings.TrimSpace(v)}
		case strings.HasPrefix(t, "!"):
			tm = term{op: opAbsent, key: strings.TrimSpace(t[1:])}
		default:
			tm = term{op: opExists, key: t}
		}
		if err := validateLabelKey(tm.key); err != nil {
			return Selector{}, fmt.Errorf("selector %q: %w", s, err)
		}
		if err := validateLabelValue(tm.key, tm.value); err != nil {
			return Selector{}, fmt.Errorf("selector %q: %w", s, err)
		}
		sel.terms = append(sel.terms, tm)
	}
	return sel, nil
}

// Matches reports whether labels satisfy every term.
func (s Selector) Matches(labels map[string]string) bool {
	for _, t := range s.terms {
		v, ok := labels[t.key]
		switch t.op {
		case opEq:
			if !ok || v != t.value {
				return false
			}
		case opNe:
			if ok && v == t.value {
				return false
			}
		case opExists:
			if !ok {
				return false
			}
		case opAbsent:
			if ok {
				return false
			}
		}
	}
	return true
}

// String formats the selector in canonical form (terms sorted).
func (s Selector) String() string {
	parts := make([]string, 0, len(s.terms))
	for _, t := range s.terms {
		switch t.op {
		case opEq:
			parts = append(parts, t.key+"="+t.value)
		case opNe:
			parts = append(parts, t.key+"!="+t.value)
		case opExists:
			parts = append(parts, t.key)
		case opAbsent:
			parts = append(parts, "!"+t.key)
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}
