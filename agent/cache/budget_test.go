package cache

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestBudgetEviction(t *testing.T) {
	ctx := context.Background()
	const k = 1024
	// Every case starts from the same cache (budget 10 KiB, 9 KiB used):
	//   m/1  3 KiB  imported t0, read at t0+3h
	//   m/2  3 KiB  imported t0+1h
	//   n/1  3 KiB  imported t0+2h, active
	// so the least recently used unpinned version is m/2, then m/1.
	type env struct {
		c     *Cache
		clock *fakeClock
	}
	protect := func(model, version string) func(string, string) bool {
		return func(m, v string) bool { return m == model && v == version }
	}
	tests := []struct {
		name          string
		run           func(t *testing.T, e env) ([]VersionRecord, error)
		wantErr       error
		wantErrText   string
		wantEvicted   []string
		wantRemaining []string
		wantReserved  int64
	}{
		{
			name: "import evicts the least recently used version",
			run: func(t *testing.T, e env) ([]VersionRecord, error) {
				_, err := e.c.ImportModel(ctx, "m", "", randomBytes(10, 3*k), VersionRecord{})
				return nil, err
			},
			wantEvicted:   []string{"m/2"},
			wantRemaining: []string{"m/1", "m/3", "n/1"},
		},
		{
			name: "PutBytes evicts too",
			run: func(t *testing.T, e env) ([]VersionRecord, error) {
				_, err := e.c.PutBytes(ctx, randomBytes(10, 3*k))
				return nil, err
			},
			wantEvicted:   []string{"m/2"},
			wantRemaining: []string{"m/1", "n/1"},
		},
		{
			name: "Put evicts too",
			run: func(t *testing.T, e env) ([]VersionRecord, error) {
				_, _, err := e.c.Put(ctx, bytes.NewReader(randomBytes(10, 3*k)))
				return nil, err
			},
			wantEvicted:   []string{"m/2"},
			wantRemaining: []string{"m/1", "n/1"},
		},
		{
			name: "evicts as many as needed in LRU order",
			run: func(t *testing.T, e env) ([]VersionRecord, error) {
				return e.c.EnsureSpace(ctx, 7*k, nil)
			},
			wantEvicted:   []string{"m/2", "m/1"},
			wantRemaining: []string{"n/1"},
		},
		{
			name: "nothing to do when it fits",
			run: func(t *testing.T, e env) ([]VersionRecord, error) {
				return e.c.EnsureSpace(ctx, 1*k, nil)
			},
			wantRemaining: []string{"m/1", "m/2", "n/1"},
		},
		{
			name: "protect skips a version",
			run: func(t *testing.T, e env) ([]VersionRecord, error) {
				return e.c.EnsureSpace(ctx, 4*k, protect("m", "2"))
			},
			wantEvicted:   []string{"m/1"},
			wantRemaining: []string{"m/2", "n/1"},
		},
		{
			name: "refused when pinned and protected versions leave too little; nothing evicted",
			run: func(t *testing.T, e env) ([]VersionRecord, error) {
				return e.c.EnsureSpace(ctx, 7*k, protect("m", "1"))
			},
			wantErr:       ErrNoSpace,
			wantErrText:   "need 7168 bytes: 9216 of 10240 used, only 3072 evictable",
			wantRemaining: []string{"m/1", "m/2", "n/1"},
		},
		{
			name: "refused import leaves everything",
			run: func(t *testing.T, e env) ([]VersionRecord, error) {
				if err := e.c.SetModelStates(ctx, "m", map[string]string{StateActive: "1", StatePrevious: "2"}); err != nil {
					t.Fatal(err)
				}
				_, err := e.c.ImportModel(ctx, "m", "", randomBytes(10, 2*k), VersionRecord{})
				return nil, err
			},
			wantErr:       ErrNoSpace,
			wantRemaining: []string{"m/1", "m/2", "n/1"},
		},
		{
			name: "more than the whole budget",
			run: func(t *testing.T, e env) ([]VersionRecord, error) {
				return e.c.EnsureSpace(ctx, 11*k, nil)
			},
			wantErr:       ErrNoSpace,
			wantErrText:   "exceed the whole budget",
			wantRemaining: []string{"m/1", "m/2", "n/1"},
		},
		{
			name: "labels and previous pin versions",
			run: func(t *testing.T, e env) ([]VersionRecord, error) {
				if err := e.c.SetModelState(ctx, "m", StateLabelPrefix+"stable", "2"); err != nil {
					t.Fatal(err)
				}
				if _, err := e.c.EnsureSpace(ctx, 4*k, nil); err != nil {
					return nil, err
				}
				// Now m/2 stable, n/1 active: nothing more can go.
				if err := e.c.SetActive(ctx, "n", "1"); err != nil {
					t.Fatal(err)
				}
				_, err := e.c.EnsureSpace(ctx, 5*k, nil)
				return nil, err
			},
			wantErr:       ErrNoSpace,
			wantEvicted:   []string{"m/1"},
			wantRemaining: []string{"m/2", "n/1"},
		},
		{
			name: "a shared blob goes only with all its versions",
			run: func(t *testing.T, e env) ([]VersionRecord, error) {
				m2, err := e.c.Version("m", "2")
				if err != nil {
					t.Fatal(err)
				}
				if _, err := e.c.AddVersion(ctx, "x", "1", VersionRecord{Digest: m2.Digest}); err != nil {
					t.Fatal(err)
				}
				// x/1 protected keeps m/2's blob, so m/1 goes instead.
				if _, err := e.c.EnsureSpace(ctx, 4*k, protect("x", "1")); err != nil {
					return nil, err
				}
				// Unprotected, m/2 and x/1 go together.
				return e.c.EnsureSpace(ctx, 7*k, nil)
			},
			wantEvicted:   []string{"m/1", "m/2", "x/1"},
			wantRemaining: []string{"n/1"},
		},
		{
			name: "partial writes reserve their announced size",
			run: func(t *testing.T, e env) ([]VersionRecord, error) {
				for i := range 3 {
					d := DigestOf([]byte{byte(i)})
					if err := e.c.BeginPartial(ctx, d, 3*k); err != nil {
						return nil, err
					}
				}
				return nil, nil
			},
			wantErr:       ErrNoSpace,
			wantEvicted:   []string{"m/2", "m/1"},
			wantRemaining: []string{"n/1"},
			wantReserved:  6 * k,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			var notified []string
			c := mustOpen(t, tempPath(t), Options{
				Budget: 10 * k, ChunkSize: k, Clock: clock.Now,
				OnEvict: func(r VersionRecord) { notified = append(notified, r.Model+"/"+r.Version) },
			})
			for i, mv := range []struct{ m, v string }{{"m", "1"}, {"m", "2"}, {"n", "1"}} {
				if _, err := c.ImportModel(ctx, mv.m, mv.v, randomBytes(uint64(i+1), 3*k), VersionRecord{}); err != nil {
					t.Fatal(err)
				}
				clock.Advance(time.Hour)
			}
			if err := c.SetActive(ctx, "n", "1"); err != nil {
				t.Fatal(err)
			}
			m1, _ := c.Version("m", "1")
			if _, err := c.ReadBlob(ctx, m1.Digest); err != nil {
				t.Fatal(err)
			}
			clock.Advance(time.Hour)

			returned, err := tt.run(t, env{c, clock})
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), tt.wantErrText) {
				t.Errorf("error %q lacks %q", err, tt.wantErrText)
			}
			if !slices.Equal(notified, tt.wantEvicted) {
				t.Errorf("evicted %q, want %q", notified, tt.wantEvicted)
			}
			if returned != nil && !slices.Equal(versionNames(returned), notified[len(notified)-len(returned):]) {
				t.Errorf("EnsureSpace returned %q, OnEvict saw %q", versionNames(returned), notified)
			}
			var remaining []string
			ms, err := c.Models()
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range ms {
				remaining = append(remaining, versionNames(m.Versions)...)
			}
			if !slices.Equal(remaining, tt.wantRemaining) {
				t.Errorf("remaining %q, want %q", remaining, tt.wantRemaining)
			}
			u, err := c.Usage()
			if err != nil {
				t.Fatal(err)
			}
			if u.Used() > u.Budget {
				t.Errorf("Usage %+v over budget", u)
			}
			if u.Reserved != tt.wantReserved {
				t.Errorf("reserved %d, want %d", u.Reserved, tt.wantReserved)
			}
			// Evicted blobs are gone, not only their versions.
			if u.Blobs != len(remaining) && tt.name != "PutBytes evicts too" && tt.name != "Put evicts too" {
				t.Errorf("%d blobs for %d versions", u.Blobs, len(remaining))
			}
		})
	}
}

func TestBudgetOrphanGrace(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	c := mustOpen(t, tempPath(t), Options{Budget: 4096, Clock: clock.Now, OrphanGrace: time.Hour})
	orphan, err := c.PutBytes(ctx, randomBytes(1, 3000))
	if err != nil {
		t.Fatal(err)
	}
	// A fresh unreferenced blob may be a download about to be catalogued.
	if _, err := c.EnsureSpace(ctx, 2000, nil); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("EnsureSpace within the grace = %v, want ErrNoSpace", err)
	}
	if !c.HasBlob(orphan) {
		t.Fatal("young orphan evicted")
	}
	clock.Advance(time.Hour)
	ev, err := c.EnsureSpace(ctx, 2000, nil)
	if err != nil || len(ev) != 0 {
		t.Fatalf("EnsureSpace after the grace = %v, %v", ev, err)
	}
	if c.HasBlob(orphan) {
		t.Error("old orphan kept")
	}
}

func TestUnlimitedBudget(t *testing.T) {
	ctx := context.Background()
	c := mustOpen(t, tempPath(t), Options{})
	for i := range 5 {
		if _, err := c.ImportModel(ctx, "m", "", randomBytes(uint64(i), 100_000), VersionRecord{}); err != nil {
			t.Fatal(err)
		}
	}
	ev, err := c.EnsureSpace(ctx, 1<<50, nil)
	if err != nil || len(ev) != 0 {
		t.Fatalf("EnsureSpace with no budget = %v, %v", ev, err)
	}
	if vs, _ := c.Versions("m"); len(vs) != 5 {
		t.Errorf("%d versions left, want 5", len(vs))
	}
	if _, err := c.EnsureSpace(ctx, -1, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("negative need = %v, want ErrInvalid", err)
	}
}

func TestOpenOptions(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want error
	}{
		{"negative budget", Options{Budget: -1}, ErrInvalid},
		{"negative chunk", Options{ChunkSize: -1}, ErrInvalid},
		{"huge chunk", Options{ChunkSize: MaxChunkSize + 1}, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Open(tempPath(t), tt.opts)
			if !errors.Is(err, tt.want) {
				if c != nil {
					c.Close()
				}
				t.Fatalf("Open = %v, want %v", err, tt.want)
			}
		})
	}
}
