package cache

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Model state keys that name versions. Such keys may only name existing
// versions, and the versions they name are pinned: never evicted; the active
// one cannot be removed.
const (
	// StateActive names the version that serves requests.
	StateActive = "active"
	// StatePrevious names the version to roll back to; SetActive maintains it.
	StatePrevious = "previous"
	// StatePending names a version on its way to activation.
	StatePending = "pending"
	// StateLabelPrefix starts keys that map a label to a version, as in
	// "label:stable" = "3".
	StateLabelPrefix = "label:"
)

// isVersionKey reports whether a model state key names a version.
func isVersionKey(k string) bool {
	return k == StateActive || k == StatePrevious || k == StatePending || strings.HasPrefix(k, StateLabelPrefix)
}

// TensorSpec describes a model input or output. DType is an Open Inference
// Protocol data type name ("FP32", "INT64", "BYTES", ...); a dimension of -1
// is dynamic.
type TensorSpec struct {
	Name  string  `json:"name"`
	DType string  `json:"dtype"`
	Shape []int64 `json:"shape"`
}

// VersionRecord is the catalogue entry of one model version, stored as JSON
// at models/<name>/versions/<version>.
type VersionRecord struct {
	// Model and Version are the record's key; set by the cache.
	Model   string `json:"model"`
	Version string `json:"version"`
	// Digest names the blob holding the model bytes.
	Digest string `json:"digest"`
	// Size is the blob's size in bytes; set by the cache.
	Size    int64        `json:"size"`
	Inputs  []TensorSpec `json:"inputs,omitempty"`
	Outputs []TensorSpec `json:"outputs,omitempty"`
	// Source says where the bytes came from: "file:/path", an OCI reference.
	Source string `json:"source,omitempty"`
	// Imported is when the version was added; zero means now.
	Imported time.Time         `json:"imported"`
	Labels   map[string]string `json:"labels,omitempty"`
	// Meta is free-form: precision, quantization, golden vectors, ...
	Meta map[string]string `json:"meta,omitempty"`
	// LastUsed is when the blob was last read or written. It is filled in on
	// reads from the blob's meta and not stored in the record.
	LastUsed time.Time `json:"-"`
}

// ModelRecord is a model with all its versions and its state.
type ModelRecord struct {
	Name    string
	Created time.Time
	// Versions in CompareVersions order, oldest first.
	Versions []VersionRecord
	// State is the model's state map (StateActive, ...); never nil.
	State map[string]string
}

// Active is the active version's name, "" when none is set.
func (m ModelRecord) Active() string { return m.State[StateActive] }

// modelMeta is the JSON value at models/<name>/meta.
type modelMeta struct {
	Created time.Time `json:"created"`
	// Highest is the highest numeric version ever added, so automatic
	// versions are never reused after removals.
	Highest uint64 `json:"highest"`
}

// ValidateName checks a model name or version: 1 to 128 characters of
// letters, digits, '.', '_' and '-', starting with a letter or digit. The
// error wraps ErrInvalid.
func ValidateName(kind, s string) error {
	if s == "" || len(s) > 128 {
		return fmt.Errorf("%s %q: want 1 to 128 characters: %w", kind, s, ErrInvalid)
	}
	for i, r := range s {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
		case i > 0 && (r == '.' || r == '_' || r == '-'):
		default:
			return fmt.Errorf("%s %q: only letters, digits, '.', '_' and '-' (not first) allowed: %w", kind, s, ErrInvalid)
		}
	}
	return nil
}

// numeric parses a version made only of decimal digits.
func numeric(v string) (uint64, bool) {
	if v == "" || len(v) > 19 {
		return 0, false
	}
	for _, r := range v {
		if r < '0' || r > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(v, 10, 64)
	return n, err == nil
}

// CompareVersions orders versions: other versions first, as strings, then
// numeric versions by value ("9" < "10"), so the last in this order is the
// highest numeric version when there is one. It returns -1, 0 or +1.
func CompareVersions(a, b string) int {
	na, aok := numeric(a)
	nb, bok := numeric(b)
	switch {
	case aok && bok:
		if c := cmp.Compare(na, nb); c != 0 {
			return c
		}
	case aok:
		return 1
	case bok:
		return -1
	}
	return strings.Compare(a, b)
}

// modelBuckets returns a model's buckets; ErrNotFound when absent.
func modelBuckets(s schema, name string) (m, versions, state *bolt.Bucket, err error) {
	m = s.models.Bucket([]byte(name))
	if m == nil {
		return nil, nil, nil, fmt.Errorf("model %q: %w", name, ErrNotFound)
	}
	versions, state = m.Bucket(bkVersions), m.Bucket(bkState)
	if versions == nil || state == nil {
		return nil, nil, nil, fmt.Errorf("model %q: buckets missing: %w", name, ErrCorrupt)
	}
	return m, versions, state, nil
}

func readVersion(s schema, versions *bolt.Bucket, name, version string) (VersionRecord, error) {
	var rec VersionRecord
	if versions.Get([]byte(version)) == nil {
		return rec, fmt.Errorf("model %q version %q: %w", name, version, ErrNotFound)
	}
	if err := getJSON(versions, []byte(version), &rec, fmt.Sprintf("model %q version %q", name, version)); err != nil {
		return rec, err
	}
	if blob := s.blobs.Bucket([]byte(rec.Digest)); blob != nil {
		var meta blobMeta
		if getJSON(blob, keyMeta, &meta, "blob meta") == nil {
			rec.LastUsed = meta.LastUsed
		}
	}
	return rec, nil
}

func readModel(s schema, name string) (ModelRecord, error) {
	m, versions, state, err := modelBuckets(s, name)
	if err != nil {
		return ModelRecord{}, err
	}
	var meta modelMeta
	if err := getJSON(m, keyMeta, &meta, fmt.Sprintf("model %q meta", name)); err != nil {
		return ModelRecord{}, err
	}
	rec := ModelRecord{Name: name, Created: meta.Created, State: map[string]string{}}
	err = versions.ForEach(func(k, _ []byte) error {
		v, err := readVersion(s, versions, name, string(k))
		rec.Versions = append(rec.Versions, v)
		return err
	})
	if err != nil {
		return ModelRecord{}, err
	}
	slices.SortFunc(rec.Versions, func(a, b VersionRecord) int { return CompareVersions(a.Version, b.Version) })
	err = state.ForEach(func(k, v []byte) error {
		rec.State[string(k)] = string(v)
		return nil
	})
	return rec, err
}

// AddVersion catalogues the stored blob rec.Digest as version of model name,
// creating the model if needed, and returns the stored record. version ""
// picks the next integer: one more than the highest numeric version the model
// ever had, starting at "1". An existing version fails with ErrExists, a
// missing blob with ErrNotFound.
func (c *Cache) AddVersion(ctx context.Context, name, version string, rec VersionRecord) (VersionRecord, error) {
	if err := ValidateDigest(rec.Digest); err != nil {
		return VersionRecord{}, fmt.Errorf("add version: %w", err)
	}
	var out VersionRecord
	err := c.update(ctx, func(_ *bolt.Tx, s schema) error {
		var err error
		out, err = c.addVersion(s, name, version, rec)
		return err
	})
	if err != nil {
		return VersionRecord{}, fmt.Errorf("add version: %w", err)
	}
	return out, nil
}

// addVersion does AddVersion's work inside a write transaction.
func (c *Cache) addVersion(s schema, name, version string, rec VersionRecord) (VersionRecord, error) {
	if err := ValidateName("model name", name); err != nil {
		return rec, err
	}
	if version != "" {
		if err := ValidateName("version", version); err != nil {
			return rec, err
		}
	}
	blob := s.blobs.Bucket([]byte(rec.Digest))
	if blob == nil {
		return rec, fmt.Errorf("blob %s: %w", rec.Digest, ErrNotFound)
	}
	var bm blobMeta
	if err := getJSON(blob, keyMeta, &bm, "blob "+rec.Digest+" meta"); err != nil {
		return rec, err
	}
	if rec.Size != 0 && rec.Size != bm.Size {
		return rec, fmt.Errorf("record says %d bytes, blob %s has %d: %w", rec.Size, rec.Digest, bm.Size, ErrInvalid)
	}
	now := c.now()
	m := s.models.Bucket([]byte(name))
	var meta modelMeta
	if m == nil {
		var err error
		if m, err = s.models.CreateBucket([]byte(name)); err != nil {
			return rec, err
		}
		for _, b := range [][]byte{bkVersions, bkState} {
			if _, err := m.CreateBucket(b); err != nil {
				return rec, err
			}
		}
		meta.Created = now
	} else if err := getJSON(m, keyMeta, &meta, fmt.Sprintf("model %q meta", name)); err != nil {
		return rec, err
	}
	versions := m.Bucket(bkVersions)
	if versions == nil {
		return rec, fmt.Errorf("model %q: versions bucket missing: %w", name, ErrCorrupt)
	}
	if version == "" {
		next := meta.Highest
		if err := versions.ForEach(func(k, _ []byte) error {
			if n, ok := numeric(string(k)); ok && n > next {
				next = n
			}
			return nil
		}); err != nil {
			return rec, err
		}
		version = strconv.FormatUint(next+1, 10)
	}
	if versions.Get([]byte(version)) != nil {
		return rec, fmt.Errorf("model %q version %q: %w", name, version, ErrExists)
	}
	if n, ok := numeric(version); ok && n > meta.Highest {
		meta.Highest = n
	}
	if err := putJSON(m, keyMeta, meta); err != nil {
		return rec, err
	}
	rec.Model, rec.Version, rec.Size = name, version, bm.Size
	if rec.Imported.IsZero() {
		rec.Imported = now
	}
	if err := putJSON(versions, []byte(version), rec); err != nil {
		return rec, err
	}
	rec.LastUsed = bm.LastUsed
	return rec, nil
}

// ImportModel stores model bytes and catalogues them as version of model name
// (see AddVersion for version ""), both in one transaction: after a crash
// either both or neither exist. rec supplies the descriptive fields; Digest
// and Size are computed. Empty bytes fail with ErrInvalid. The budget is
// enforced as in PutBytes.
func (c *Cache) ImportModel(ctx context.Context, name, version string, onnx []byte, rec VersionRecord) (VersionRecord, error) {
	if len(onnx) == 0 {
		return VersionRecord{}, fmt.Errorf("import model %q: no bytes: %w", name, ErrInvalid)
	}
	rec.Digest, rec.Size = DigestOf(onnx), 0
	var out VersionRecord
	var evicted []VersionRecord
	err := c.update(ctx, func(_ *bolt.Tx, s schema) error {
		// Validate before storing so bad names do not cost an eviction.
		if err := ValidateName("model name", name); err != nil {
			return err
		}
		if version != "" {
			if err := ValidateName("version", version); err != nil {
				return err
			}
		}
		var err error
		if evicted, err = c.storeBlob(s, rec.Digest, onnx); err != nil {
			return err
		}
		out, err = c.addVersion(s, name, version, rec)
		return err
	})
	if err != nil {
		return VersionRecord{}, fmt.Errorf("import model %q: %w", name, err)
	}
	c.notifyEvicted(evicted)
	return out, nil
}

// Models lists every model with its versions and state, sorted by name.
func (c *Cache) Models() ([]ModelRecord, error) {
	var out []ModelRecord
	err := c.view(func(_ *bolt.Tx, s schema) error {
		return s.models.ForEachBucket(func(k []byte) error {
			m, err := readModel(s, string(k))
			out = append(out, m)
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list models: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Model returns one model with its versions and state.
func (c *Cache) Model(name string) (ModelRecord, error) {
	var out ModelRecord
	err := c.view(func(_ *bolt.Tx, s schema) error {
		var err error
		out, err = readModel(s, name)
		return err
	})
	return out, err
}

// Versions lists a model's versions in CompareVersions order. ErrNotFound for
// an unknown model.
func (c *Cache) Versions(name string) ([]VersionRecord, error) {
	m, err := c.Model(name)
	return m.Versions, err
}

// Version returns one version's record.
func (c *Cache) Version(name, version string) (VersionRecord, error) {
	var out VersionRecord
	err := c.view(func(_ *bolt.Tx, s schema) error {
		_, versions, _, err := modelBuckets(s, name)
		if err != nil {
			return err
		}
		out, err = readVersion(s, versions, name, version)
		return err
	})
	return out, err
}

// Latest returns the last version in CompareVersions order: the highest
// numeric version if the model has one.
func (c *Cache) Latest(name string) (VersionRecord, error) {
	vs, err := c.Versions(name)
	if err != nil {
		return VersionRecord{}, err
	}
	if len(vs) == 0 {
		return VersionRecord{}, fmt.Errorf("model %q has no versions: %w", name, ErrNotFound)
	}
	return vs[len(vs)-1], nil
}

// versionRef names one catalogued version.
type versionRef struct{ model, version string }

// allRefs maps each digest to the versions that name it.
func allRefs(s schema) map[string][]versionRef {
	refs := map[string][]versionRef{}
	_ = s.models.ForEachBucket(func(name []byte) error {
		versions := s.models.Bucket(name).Bucket(bkVersions)
		if versions == nil {
			return nil
		}
		return versions.ForEach(func(k, v []byte) error {
			var rec VersionRecord
			if getJSON(versions, k, &rec, "") == nil {
				refs[rec.Digest] = append(refs[rec.Digest], versionRef{string(name), string(k)})
			}
			return nil
		})
	})
	return refs
}

func blobRefs(s schema, digest string) []versionRef { return allRefs(s)[digest] }

// removeVersion deletes a version and, when no other version names its blob,
// the blob; clears state keys that name it; and deletes the model when it has
// no versions left. Without force the active version is refused.
func removeVersion(s schema, name, version string, force bool) (VersionRecord, error) {
	_, versions, state, err := modelBuckets(s, name)
	if err != nil {
		return VersionRecord{}, err
	}
	rec, err := readVersion(s, versions, name, version)
	switch {
	case errors.Is(err, ErrCorrupt):
		// An unreadable record names no blob we could trust; drop just it.
		rec = VersionRecord{Model: name, Version: version}
	case err != nil:
		return rec, err
	}
	if !force && string(state.Get([]byte(StateActive))) == version {
		return rec, fmt.Errorf("model %q version %q is active; activate another version first: %w", name, version, ErrInUse)
	}
	var stale [][]byte
	if err := state.ForEach(func(k, v []byte) error {
		if isVersionKey(string(k)) && string(v) == version {
			stale = append(stale, k)
		}
		return nil
	}); err != nil {
		return rec, err
	}
	for _, k := range stale {
		if err := state.Delete(k); err != nil {
			return rec, err
		}
	}
	if err := versions.Delete([]byte(version)); err != nil {
		return rec, err
	}
	if rec.Digest != "" && len(blobRefs(s, rec.Digest)) == 0 && s.blobs.Bucket([]byte(rec.Digest)) != nil {
		if err := s.blobs.DeleteBucket([]byte(rec.Digest)); err != nil {
			return rec, err
		}
	}
	if k, _ := versions.Cursor().First(); k == nil {
		return rec, s.models.DeleteBucket([]byte(name))
	}
	return rec, nil
}

// RemoveVersion removes a version in one transaction, and its blob when no
// other version names it. State keys naming the version are cleared; the
// active version is refused with ErrInUse. Removing a model's last version
// removes the model.
func (c *Cache) RemoveVersion(ctx context.Context, name, version string) error {
	err := c.update(ctx, func(_ *bolt.Tx, s schema) error {
		_, err := removeVersion(s, name, version, false)
		return err
	})
	if err != nil {
		return fmt.Errorf("remove version: %w", err)
	}
	return nil
}

// RemoveModel removes a model, all its versions and state, and the blobs no
// other model's versions name, in one transaction.
func (c *Cache) RemoveModel(ctx context.Context, name string) error {
	err := c.update(ctx, func(_ *bolt.Tx, s schema) error {
		_, versions, _, err := modelBuckets(s, name)
		if err != nil {
			return err
		}
		var vs []string
		if err := versions.ForEach(func(k, _ []byte) error {
			vs = append(vs, string(k))
			return nil
		}); err != nil {
			return err
		}
		for _, v := range vs {
			if _, err := removeVersion(s, name, v, true); err != nil {
				return err
			}
		}
		if s.models.Bucket([]byte(name)) != nil { // a model without versions
			return s.models.DeleteBucket([]byte(name))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("remove model: %w", err)
	}
	return nil
}

// SetActive makes version the model's active version and, in the same
// transaction, the formerly active one StatePrevious. The version must exist.
func (c *Cache) SetActive(ctx context.Context, name, version string) error {
	err := c.update(ctx, func(_ *bolt.Tx, s schema) error {
		_, versions, state, err := modelBuckets(s, name)
		if err != nil {
			return err
		}
		if versions.Get([]byte(version)) == nil {
			return fmt.Errorf("model %q version %q: %w", name, version, ErrNotFound)
		}
		old := string(state.Get([]byte(StateActive)))
		if old == version {
			return nil
		}
		if old != "" {
			if err := state.Put([]byte(StatePrevious), []byte(old)); err != nil {
				return err
			}
		}
		return state.Put([]byte(StateActive), []byte(version))
	})
	if err != nil {
		return fmt.Errorf("set active: %w", err)
	}
	return nil
}

// Active returns the model's active version, "" when none is set.
func (c *Cache) Active(name string) (string, error) {
	st, err := c.ModelState(name)
	return st[StateActive], err
}

// ModelState returns a copy of the model's state map.
func (c *Cache) ModelState(name string) (map[string]string, error) {
	out := map[string]string{}
	err := c.view(func(_ *bolt.Tx, s schema) error {
		_, _, state, err := modelBuckets(s, name)
		if err != nil {
			return err
		}
		return state.ForEach(func(k, v []byte) error {
			out[string(k)] = string(v)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// SetModelState sets one key of the model's state map; see SetModelStates.
func (c *Cache) SetModelState(ctx context.Context, name, key, value string) error {
	return c.SetModelStates(ctx, name, map[string]string{key: value})
}

// SetModelStates sets several keys of an existing model's state map in one
// transaction; an empty value deletes the key. Keys that name versions
// (StateActive, StatePrevious, StatePending, StateLabelPrefix...) must name
// existing versions, or nothing is changed and the error wraps ErrNotFound.
func (c *Cache) SetModelStates(ctx context.Context, name string, kv map[string]string) error {
	err := c.update(ctx, func(_ *bolt.Tx, s schema) error {
		_, versions, state, err := modelBuckets(s, name)
		if err != nil {
			return err
		}
		keys := make([]string, 0, len(kv))
		for k := range kv {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			v := kv[k]
			if k == "" || len(k) > 256 {
				return fmt.Errorf("state key %q: want 1 to 256 bytes: %w", k, ErrInvalid)
			}
			if v == "" {
				if err := state.Delete([]byte(k)); err != nil {
					return err
				}
				continue
			}
			if isVersionKey(k) && versions.Get([]byte(v)) == nil {
				return fmt.Errorf("state %s=%q: model %q version %q: %w", k, v, name, v, ErrNotFound)
			}
			if err := state.Put([]byte(k), []byte(v)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set model state: %w", err)
	}
	return nil
}
