package cache

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strconv"
	"testing"
)

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"9", "10", -1},
		{"10", "9", 1},
		{"2", "2", 0},
		{"002", "2", -1}, // equal values fall back to string order
		{"abc", "1", -1}, // other versions sort before numeric ones
		{"1", "abc", 1},
		{"beta", "alpha", 1},
		{"99999999999999999999", "1", -1}, // too big for uint64: not numeric
	}
	for _, tt := range tests {
		if got := CompareVersions(tt.a, tt.b); got != tt.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestVersionAutoIncrement(t *testing.T) {
	ctx := context.Background()
	c := mustOpen(t, tempPath(t), Options{ChunkSize: 256})
	for i := 1; i <= 10; i++ {
		rec, err := c.ImportModel(ctx, "digits", "", randomBytes(uint64(i), 100+i), VersionRecord{})
		if err != nil {
			t.Fatal(err)
		}
		if rec.Version != strconv.Itoa(i) {
			t.Fatalf("import %d got version %q", i, rec.Version)
		}
	}
	if _, err := c.ImportModel(ctx, "digits", "canary", randomBytes(99, 10), VersionRecord{}); err != nil {
		t.Fatal(err)
	}
	vs, err := c.Versions("digits")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range vs {
		got = append(got, v.Version)
	}
	want := []string{"canary", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"}
	if !slices.Equal(got, want) {
		t.Fatalf("Versions order = %q, want %q", got, want)
	}
	if l, err := c.Latest("digits"); err != nil || l.Version != "10" {
		t.Errorf("Latest = %q, %v; want 10", l.Version, err)
	}
	// Numbers are never reused, even after the highest version is removed.
	if err := c.RemoveVersion(ctx, "digits", "10"); err != nil {
		t.Fatal(err)
	}
	rec, err := c.ImportModel(ctx, "digits", "", randomBytes(11, 50), VersionRecord{})
	if err != nil || rec.Version != "11" {
		t.Fatalf("after removing 10, next version = %q, %v; want 11", rec.Version, err)
	}
	// An explicit higher number moves the counter.
	if _, err := c.ImportModel(ctx, "digits", "40", randomBytes(12, 50), VersionRecord{}); err != nil {
		t.Fatal(err)
	}
	rec, err = c.ImportModel(ctx, "digits", "", randomBytes(13, 50), VersionRecord{})
	if err != nil || rec.Version != "41" {
		t.Fatalf("after 40, next version = %q, %v; want 41", rec.Version, err)
	}
	// Each model counts on its own.
	rec, err = c.ImportModel(ctx, "other", "", randomBytes(14, 50), VersionRecord{})
	if err != nil || rec.Version != "1" {
		t.Fatalf("first version of another model = %q, %v", rec.Version, err)
	}
}

func TestImportModelRecord(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	path := tempPath(t)
	c, err := Open(path, Options{Clock: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	onnx := randomBytes(1, 4096)
	in := VersionRecord{
		Inputs:  []TensorSpec{{Name: "input", DType: "FP32", Shape: []int64{-1, 1, 8, 8}}},
		Outputs: []TensorSpec{{Name: "logits", DType: "FP32", Shape: []int64{-1, 10}}},
		Source:  "file:/models/digits.onnx",
		Labels:  map[string]string{"task": "digits"},
		Meta:    map[string]string{"precision": "fp32"},
		Digest:  "sha256:ignored", Size: 12345, // computed by ImportModel
	}
	got, err := c.ImportModel(ctx, "digits-cnn", "", onnx, in)
	if err != nil {
		t.Fatal(err)
	}
	want := in
	want.Model, want.Version, want.Digest, want.Size = "digits-cnn", "1", DigestOf(onnx), int64(len(onnx))
	want.Imported, want.LastUsed = clock.Now(), clock.Now()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ImportModel returned\n%+v\nwant\n%+v", got, want)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c = mustOpen(t, path, Options{})
	stored, err := c.Version("digits-cnn", "1")
	if err != nil {
		t.Fatal(err)
	}
	if !stored.Imported.Equal(want.Imported) || !stored.LastUsed.Equal(want.LastUsed) {
		t.Errorf("times after reopen: %v %v, want %v", stored.Imported, stored.LastUsed, want.Imported)
	}
	stored.Imported, stored.LastUsed = want.Imported, want.LastUsed
	if !reflect.DeepEqual(stored, want) {
		t.Errorf("stored record after reopen\n%+v\nwant\n%+v", stored, want)
	}
	ms, err := c.Models()
	if err != nil || len(ms) != 1 || ms[0].Name != "digits-cnn" || len(ms[0].Versions) != 1 || ms[0].Active() != "" {
		t.Errorf("Models = %+v, %v", ms, err)
	}
}

func TestAddVersionErrorsChangeNothing(t *testing.T) {
	ctx := context.Background()
	c := mustOpen(t, tempPath(t), Options{})
	stored, err := c.PutBytes(ctx, []byte("model"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddVersion(ctx, "m", "1", VersionRecord{Digest: stored}); err != nil {
		t.Fatal(err)
	}
	before, err := c.Models()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		run  func() error
		want error
	}{
		{"existing version", func() error {
			_, err := c.AddVersion(ctx, "m", "1", VersionRecord{Digest: stored})
			return err
		}, ErrExists},
		{"existing version via import", func() error {
			_, err := c.ImportModel(ctx, "m", "1", []byte("other bytes"), VersionRecord{})
			return err
		}, ErrExists},
		{"blob not stored", func() error {
			_, err := c.AddVersion(ctx, "m", "2", VersionRecord{Digest: DigestOf([]byte("absent"))})
			return err
		}, ErrNotFound},
		{"malformed digest", func() error {
			_, err := c.AddVersion(ctx, "m", "2", VersionRecord{Digest: "sha256:xyz"})
			return err
		}, ErrInvalid},
		{"size disagrees with blob", func() error {
			_, err := c.AddVersion(ctx, "m", "2", VersionRecord{Digest: stored, Size: 3})
			return err
		}, ErrInvalid},
		{"empty model name", func() error {
			_, err := c.AddVersion(ctx, "", "2", VersionRecord{Digest: stored})
			return err
		}, ErrInvalid},
		{"name with a slash", func() error {
			_, err := c.ImportModel(ctx, "a/b", "", []byte("x"), VersionRecord{})
			return err
		}, ErrInvalid},
		{"version with a space", func() error {
			_, err := c.ImportModel(ctx, "m", "1 2", []byte("x"), VersionRecord{})
			return err
		}, ErrInvalid},
		{"version starting with a dot", func() error {
			_, err := c.ImportModel(ctx, "m", ".1", []byte("x"), VersionRecord{})
			return err
		}, ErrInvalid},
		{"empty model bytes", func() error {
			_, err := c.ImportModel(ctx, "m", "", nil, VersionRecord{})
			return err
		}, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.run(); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			after, err := c.Models()
			if err != nil || !reflect.DeepEqual(after, before) {
				t.Errorf("catalogue changed:\n%+v\nwas\n%+v", after, before)
			}
			if u, _ := c.Usage(); u.Blobs != 1 {
				t.Errorf("%d blobs stored, want 1", u.Blobs)
			}
		})
	}
}

func TestRemoveVersionFreesBlobOnlyWhenUnreferenced(t *testing.T) {
	ctx := context.Background()
	c := mustOpen(t, tempPath(t), Options{})
	shared := randomBytes(1, 1000)
	own := randomBytes(2, 1000)
	for _, step := range []struct{ model, version string }{{"a", "1"}, {"a", "2"}, {"b", "1"}} {
		if _, err := c.ImportModel(ctx, step.model, step.version, shared, VersionRecord{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.ImportModel(ctx, "a", "3", own, VersionRecord{}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		model, version  string
		wantShared      bool
		wantOwn         bool
		wantModels      []string
		wantErr         error
		activateFirstTo string
		wantStateAfter  map[string]string
		checkStateOfA   bool
	}{
		{model: "a", version: "1", wantShared: true, wantOwn: true, wantModels: []string{"a", "b"}},
		{model: "b", version: "1", wantShared: true, wantOwn: true, wantModels: []string{"a"}},
		{model: "a", version: "9", wantShared: true, wantOwn: true, wantModels: []string{"a"}, wantErr: ErrNotFound},
		{model: "zz", version: "1", wantShared: true, wantOwn: true, wantModels: []string{"a"}, wantErr: ErrNotFound},
		{model: "a", version: "3", activateFirstTo: "3", wantShared: true, wantOwn: true, wantModels: []string{"a"}, wantErr: ErrInUse},
		{model: "a", version: "2", wantShared: false, wantOwn: true, wantModels: []string{"a"},
			// 2 was previous (3 became active over it): removing it clears previous.
			activateFirstTo: "2", checkStateOfA: true, wantStateAfter: map[string]string{StateActive: "3"}},
	}
	for i, st := range steps {
		if st.activateFirstTo != "" {
			// Activate st.activateFirstTo, then 3: 3 is active and
			// st.activateFirstTo previous (unless it is 3).
			if err := c.SetActive(ctx, "a", st.activateFirstTo); err != nil {
				t.Fatal(err)
			}
			if err := c.SetActive(ctx, "a", "3"); err != nil {
				t.Fatal(err)
			}
		}
		err := c.RemoveVersion(ctx, st.model, st.version)
		if !errors.Is(err, st.wantErr) || (st.wantErr == nil) != (err == nil) {
			t.Fatalf("step %d: RemoveVersion(%s, %s) = %v, want %v", i, st.model, st.version, err, st.wantErr)
		}
		if got := c.HasBlob(DigestOf(shared)); got != st.wantShared {
			t.Errorf("step %d: shared blob present = %v, want %v", i, got, st.wantShared)
		}
		if got := c.HasBlob(DigestOf(own)); got != st.wantOwn {
			t.Errorf("step %d: own blob present = %v, want %v", i, got, st.wantOwn)
		}
		ms, err := c.Models()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, m := range ms {
			names = append(names, m.Name)
		}
		if !slices.Equal(names, st.wantModels) {
			t.Errorf("step %d: models = %q, want %q", i, names, st.wantModels)
		}
		if st.checkStateOfA {
			if s, err := c.ModelState("a"); err != nil || !reflect.DeepEqual(s, st.wantStateAfter) {
				t.Errorf("step %d: state = %v, %v; want %v", i, s, err, st.wantStateAfter)
			}
		}
	}
	// RemoveModel drops the active version too, and its blobs.
	if err := c.RemoveModel(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if u, _ := c.Usage(); u.Blobs != 0 || u.Bytes != 0 {
		t.Errorf("Usage after RemoveModel = %+v", u)
	}
	if err := c.RemoveModel(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("RemoveModel of a removed model = %v", err)
	}
	if _, err := c.Versions("a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Versions of a removed model = %v", err)
	}
}

func TestModelState(t *testing.T) {
	ctx := context.Background()
	c := mustOpen(t, tempPath(t), Options{})
	for i := 1; i <= 3; i++ {
		if _, err := c.ImportModel(ctx, "m", "", randomBytes(uint64(i), 64), VersionRecord{}); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		name    string
		run     func() error
		want    error
		wantMap map[string]string
	}{
		{"activate 1", func() error { return c.SetActive(ctx, "m", "1") },
			nil, map[string]string{"active": "1"}},
		{"activate 2 keeps 1 as previous", func() error { return c.SetActive(ctx, "m", "2") },
			nil, map[string]string{"active": "2", "previous": "1"}},
		{"activating the active version is a no-op", func() error { return c.SetActive(ctx, "m", "2") },
			nil, map[string]string{"active": "2", "previous": "1"}},
		{"activate a missing version", func() error { return c.SetActive(ctx, "m", "7") },
			ErrNotFound, map[string]string{"active": "2", "previous": "1"}},
		{"activate in a missing model", func() error { return c.SetActive(ctx, "x", "1") },
			ErrNotFound, map[string]string{"active": "2", "previous": "1"}},
		{"pending and a free-form key", func() error {
			return c.SetModelStates(ctx, "m", map[string]string{"pending": "3", "step": "warmed"})
		}, nil, map[string]string{"active": "2", "previous": "1", "pending": "3", "step": "warmed"}},
		{"all or nothing: a label naming a missing version", func() error {
			return c.SetModelStates(ctx, "m", map[string]string{"step": "active", "label:stable": "9"})
		}, ErrNotFound, map[string]string{"active": "2", "previous": "1", "pending": "3", "step": "warmed"}},
		{"empty key", func() error { return c.SetModelState(ctx, "m", "", "x") },
			ErrInvalid, map[string]string{"active": "2", "previous": "1", "pending": "3", "step": "warmed"}},
		{"promote pending atomically", func() error {
			return c.SetModelStates(ctx, "m", map[string]string{"active": "3", "previous": "2", "pending": "", "step": "", "label:stable": "3"})
		}, nil, map[string]string{"active": "3", "previous": "2", "label:stable": "3"}},
		{"state of a missing model", func() error { return c.SetModelState(ctx, "x", "k", "v") },
			ErrNotFound, map[string]string{"active": "3", "previous": "2", "label:stable": "3"}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if err := st.run(); !errors.Is(err, st.want) || (st.want == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, st.want)
			}
			got, err := c.ModelState("m")
			if err != nil || !reflect.DeepEqual(got, st.wantMap) {
				t.Errorf("state = %v, %v; want %v", got, err, st.wantMap)
			}
			if a, _ := c.Active("m"); a != st.wantMap["active"] {
				t.Errorf("Active = %q, want %q", a, st.wantMap["active"])
			}
		})
	}
	if _, err := c.Active("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Active of an unknown model = %v", err)
	}
}
