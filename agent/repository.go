package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/edgefleet/edgefleet/agent/cache"
	"github.com/edgefleet/edgefleet/agent/grpcapi"
	"github.com/edgefleet/edgefleet/agent/httpapi"
	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/update"
)

// Model repository states reported by RepositoryIndex (Triton's names).
const (
	StateReady       = "READY"
	StateUnavailable = "UNAVAILABLE"
)

// RepositoryEntry is one cached model version and whether it is served.
type RepositoryEntry = models.RepositoryEntry

// RepositoryIndex lists every cached model version: READY when loaded,
// UNAVAILABLE (with the reason) otherwise. readyOnly keeps the READY ones.
func (a *Agent) RepositoryIndex(ctx context.Context, readyOnly bool) ([]RepositoryEntry, error) {
	recs, err := a.cache.Models()
	if err != nil {
		return nil, err
	}
	loaded := map[string]bool{}
	for _, e := range a.models.Index() {
		loaded[e.Name+"\x00"+e.Version] = true
	}
	var out []RepositoryEntry
	for _, r := range recs {
		for _, v := range r.Versions {
			e := RepositoryEntry{Name: r.Name, Version: v.Version, State: StateReady}
			if !loaded[r.Name+"\x00"+v.Version] {
				e.State, e.Reason = StateUnavailable, "not selected by the version policy"
				a.mu.Lock()
				if why := a.loadErrs[r.Name+"\x00"+v.Version]; why != "" {
					e.Reason = why
				}
				a.mu.Unlock()
			}
			if readyOnly && e.State != StateReady {
				continue
			}
			out = append(out, e)
		}
	}
	return out, nil
}

// LoadOptions modify RepositoryLoad.
type LoadOptions struct {
	// Model, when set, is imported into the cache first as Version ("" =
	// the next integer), as Triton's load with file content does.
	Model []byte
	// Version names the version that Model is stored as.
	Version string
	// Source records where Model came from.
	Source string
}

// RepositoryLoad (re)loads a model: it imports opts.Model into the cache if
// given, then serves the versions that the model's version policy selects
// (plus the active one), loading new versions before unloading the ones no
// longer selected, so requests never find the model missing.
func (a *Agent) RepositoryLoad(ctx context.Context, name string, opts LoadOptions) error {
	if err := cache.ValidateName("model", name); err != nil {
		return fmt.Errorf("%w: %w", models.ErrInvalidInput, err)
	}
	a.repoMu.Lock()
	defer a.repoMu.Unlock()
	if opts.Model != nil {
		if err := a.initRuntime(); err != nil {
			return err
		}
		ins, outs, err := runtime.Inspect(opts.Model)
		if err != nil {
			return fmt.Errorf("%w: not a model onnxruntime can load: %w", models.ErrInvalidInput, err)
		}
		src := opts.Source
		if src == "" {
			src = "repository-api"
		}
		rec, err := a.cache.ImportModel(ctx, name, opts.Version, opts.Model, cache.VersionRecord{
			Inputs: cacheSpecs(ins), Outputs: cacheSpecs(outs), Source: src})
		if err != nil {
			if errors.Is(err, cache.ErrExists) || errors.Is(err, cache.ErrInvalid) {
				return fmt.Errorf("%w: %w", models.ErrInvalidInput, err)
			}
			return err
		}
		a.log.Info("model imported", "model", name, "version", rec.Version, "digest", rec.Digest)
		a.updateCacheMetrics()
	}
	return a.applyPolicy(ctx, name)
}

// RepositoryUnload stops serving a model (every version when version is "");
// the cache keeps it.
func (a *Agent) RepositoryUnload(ctx context.Context, name, version string) error {
	a.repoMu.Lock()
	defer a.repoMu.Unlock()
	return a.models.Unload(name, version)
}

// applyPolicy makes the loaded versions of name match its version policy.
func (a *Agent) applyPolicy(ctx context.Context, name string) error {
	rec, err := a.cache.Model(name)
	if err != nil {
		if errors.Is(err, cache.ErrNotFound) {
			return fmt.Errorf("model %q is not in the cache: %w", name, models.ErrNotFound)
		}
		return err
	}
	settings := a.cfg.ModelSettings(name)
	var cached []string
	for _, v := range rec.Versions {
		cached = append(cached, v.Version)
	}
	serve, missing := settings.VersionPolicy.Select(cached)
	// A version on its way in over the air is served only once activated
	// (agent/update); a rejected one (rolled back by the watch or the hub,
	// kept only because a label names it) is never served.
	rejected := update.RejectedVersions(rec)
	if p := rec.State[cache.StatePending]; p != "" && p != rec.Active() {
		rejected[p] = true
	}
	serve = slices.DeleteFunc(serve, func(v string) bool { return rejected[v] && v != rec.Active() })
	if len(missing) > 0 {
		a.log.Warn("versions named by the policy are not cached", "model", name, "missing", missing)
	}
	if act := rec.Active(); act != "" {
		if !slices.Contains(serve, act) {
			serve = append(serve, act)
		}
		if settings.DefaultVersion == "" {
			settings.DefaultVersion = act
		}
	}
	loaded := map[string]bool{}
	for _, e := range a.models.Index() {
		if e.Name == name {
			loaded[e.Version] = true
		}
	}
	var errs []error
	for _, v := range serve {
		if loaded[v] {
			continue
		}
		if err := a.loadVersionWith(ctx, name, v, settings); err != nil {
			a.setLoadErr(name, v, err.Error())
			errs = append(errs, err)
			continue
		}
		a.setLoadErr(name, v, "")
	}
	if len(errs) > 0 {
		// Keep serving what was there rather than unloading into nothing.
		return errors.Join(errs...)
	}
	for v := range loaded {
		if !slices.Contains(serve, v) {
			if err := a.models.Unload(name, v); err != nil && !errors.Is(err, models.ErrNotFound) {
				errs = append(errs, err)
			}
		}
	}
	for k, v := range rec.State {
		if label, ok := strings.CutPrefix(k, cache.StateLabelPrefix); ok {
			_ = a.models.SetLabel(name, label, v)
		}
	}
	return errors.Join(errs...)
}

func (a *Agent) setLoadErr(name, ver, why string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if why == "" {
		delete(a.loadErrs, name+"\x00"+ver)
	} else {
		a.loadErrs[name+"\x00"+ver] = why
	}
}

func cacheSpecs(in []runtime.IOSpec) []cache.TensorSpec {
	out := make([]cache.TensorSpec, len(in))
	for i, s := range in {
		out[i] = cache.TensorSpec{Name: s.Name, DType: s.DType.String(), Shape: s.Shape}
	}
	return out
}

// apiRepository adapts the agent's repository to the front ends'
// Repository interfaces (grpcapi and httpapi).
type apiRepository struct{ a *Agent }

func (r apiRepository) Index(ctx context.Context, readyOnly bool) ([]models.RepositoryEntry, error) {
	return r.a.RepositoryIndex(ctx, readyOnly)
}

func (r apiRepository) Load(ctx context.Context, name, version string, model []byte) error {
	return r.a.RepositoryLoad(ctx, name, LoadOptions{Model: model, Version: version, Source: "repository-api"})
}

func (r apiRepository) Unload(ctx context.Context, name, version string) error {
	return r.a.RepositoryUnload(ctx, name, version)
}

var (
	_ grpcapi.Repository = apiRepository{}
	_ httpapi.Repository = apiRepository{}
)
