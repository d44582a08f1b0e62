package ota

import (
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
)

// Environment variables read by EnvKeychain.
const (
	EnvUsername = "EDGEFLEET_REGISTRY_USERNAME"
	EnvPassword = "EDGEFLEET_REGISTRY_PASSWORD"
	// EnvHosts optionally limits the credentials to a comma-separated list
	// of registry hosts (host[:port]); unset means every registry.
	EnvHosts = "EDGEFLEET_REGISTRY_HOSTS"
)

// EnvKeychain returns a keychain that answers with basic credentials from
// EDGEFLEET_REGISTRY_USERNAME and EDGEFLEET_REGISTRY_PASSWORD, for the
// registries listed in EDGEFLEET_REGISTRY_HOSTS (all when unset). It reads
// the environment on every lookup and answers anonymously when the username
// is unset, so a multi-keychain falls through to the next one.
func EnvKeychain() authn.Keychain { return envKeychain{} }

type envKeychain struct{}

func (envKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	user := os.Getenv(EnvUsername)
	if user == "" {
		return authn.Anonymous, nil
	}
	if hosts := os.Getenv(EnvHosts); hosts != "" {
		match := false
		for _, h := range strings.Split(hosts, ",") {
			if strings.TrimSpace(h) == r.RegistryStr() {
				match = true
				break
			}
		}
		if !match {
			return authn.Anonymous, nil
		}
	}
	return &authn.Basic{Username: user, Password: os.Getenv(EnvPassword)}, nil
}
