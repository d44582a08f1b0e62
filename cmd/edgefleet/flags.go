package main

import "github.com/spf13/pflag"

// override copies src into dst when the flag name was given on the command
// line, so flags win over the configuration file and unset flags do not
// clobber it.
func override[T any](fs *pflag.FlagSet, name string, dst *T, src T) {
	if fs.Changed(name) {
		*dst = src
	}
}
