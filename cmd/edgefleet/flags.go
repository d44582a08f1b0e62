package main

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"
)

// override copies src into dst when the flag name was given on the command
// line, so flags win over the configuration file and unset flags do not
// clobber it.
func override[T any](fs *pflag.FlagSet, name string, dst *T, src T) {
	if fs.Changed(name) {
		*dst = src
	}
}

// parseLabels parses the KEY=VALUE pairs of a label flag (device labels,
// artifact labels); nil when there are none. flag names the flag in errors.
func parseLabels(flag string, kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--%s %q: want key=value", flag, kv)
		}
		m[k] = v
	}
	return m, nil
}
