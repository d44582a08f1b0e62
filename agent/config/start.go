package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/edgefleet/edgefleet/agent/cache"
)

// StartModel is a model the agent installs over the air when it starts
// (`edgefleet agent --model NAME=REF`): the artifact REF (an OCI reference by
// tag or digest) becomes the active version of NAME through the verified,
// resumable update path, and the agent reports ready only once every start
// model is warm.
type StartModel struct {
	Name string `yaml:"name"`
	Ref  string `yaml:"ref"`
}

// ParseStartModel parses "NAME=REF".
func ParseStartModel(s string) (StartModel, error) {
	name, ref, ok := strings.Cut(s, "=")
	name, ref = strings.TrimSpace(name), strings.TrimSpace(ref)
	if !ok || name == "" || ref == "" {
		return StartModel{}, fmt.Errorf("model %q: want NAME=REF (an OCI reference)", s)
	}
	m := StartModel{Name: name, Ref: ref}
	return m, m.Validate()
}

// String formats m as NAME=REF.
func (m StartModel) String() string { return m.Name + "=" + m.Ref }

// Validate checks the model name; the reference is checked when it is resolved.
func (m StartModel) Validate() error {
	if err := cache.ValidateName("model", m.Name); err != nil {
		return err
	}
	if strings.TrimSpace(m.Ref) == "" {
		return fmt.Errorf("model %q: empty reference", m.Name)
	}
	return nil
}

// validateStart checks the start models (no name twice).
func validateStart(ms []StartModel) error {
	var errs []error
	seen := map[string]bool{}
	for _, m := range ms {
		if err := m.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("start_models: %w", err))
		}
		if seen[m.Name] {
			errs = append(errs, fmt.Errorf("start_models: model %q named twice", m.Name))
		}
		seen[m.Name] = true
	}
	return errors.Join(errs...)
}

// ExpandKeyPaths replaces every directory among paths by the files it holds
// (entries whose names start with "." are skipped: a mounted Kubernetes
// Secret keeps its bookkeeping there), so a Secret of PEM public keys can be
// mounted as a folder and named once.
func ExpandKeyPaths(paths []string) ([]string, error) {
	var out []string
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil || !fi.IsDir() {
			out = append(out, p) // a missing file is reported when the keys load
			continue
		}
		ents, err := os.ReadDir(p)
		if err != nil {
			return nil, fmt.Errorf("trust keys: %w", err)
		}
		n := 0
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".") {
				continue
			}
			f := filepath.Join(p, e.Name())
			if st, err := os.Stat(f); err == nil && st.Mode().IsRegular() {
				out = append(out, f)
				n++
			}
		}
		if n == 0 {
			return nil, fmt.Errorf("trust keys: folder %s holds no key files", p)
		}
	}
	return out, nil
}
