package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestOpenLocked(t *testing.T) {
	path := tempPath(t)
	first := mustOpen(t, path, Options{})
	tests := []struct {
		name    string
		timeout time.Duration
	}{
		{"short timeout", 50 * time.Millisecond},
		{"no wait", -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Open(path, Options{LockTimeout: tt.timeout})
			if err == nil {
				c.Close()
				t.Fatal("second Open of a locked cache succeeded")
			}
			if !errors.Is(err, ErrLocked) {
				t.Fatalf("Open = %v, want ErrLocked", err)
			}
			if !strings.Contains(err.Error(), "is an agent running on this data dir?") || !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file and the likely cause", err)
			}
		})
	}
	// Once released, the file opens.
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	mustOpen(t, path, Options{LockTimeout: 50 * time.Millisecond})
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := tempPath(t)
	c, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bkRoot).Bucket(bkMeta).Put(keySchema, []byte("2"))
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = Open(path, Options{})
	if err == nil || !strings.Contains(err.Error(), "newer than this agent supports") {
		t.Fatalf("Open of a newer schema = %v", err)
	}
}

func TestOpenNotABoltFile(t *testing.T) {
	path := tempPath(t)
	if err := os.WriteFile(path, bytes.Repeat([]byte("not bbolt "), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Open(path, Options{})
	if err == nil {
		c.Close()
		t.Fatal("Open of garbage succeeded")
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name the file", err)
	}
}

// TestConcurrentUse runs readers against a writer; its value is under -race
// and in the final consistency check.
func TestConcurrentUse(t *testing.T) {
	ctx := context.Background()
	c := mustOpen(t, tempPath(t), Options{ChunkSize: 4096, Budget: 8 << 20})
	var digests []string
	for i := range 4 {
		rec, err := c.ImportModel(ctx, fmt.Sprintf("m%d", i), "", randomBytes(uint64(i), 50_000+i), VersionRecord{})
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, rec.Digest)
		if err := c.SetActive(ctx, rec.Model, rec.Version); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for r := range 6 {
		wg.Go(func() {
			for i := range 30 {
				d := digests[(r+i)%len(digests)]
				b, err := c.ReadBlob(ctx, d)
				if err != nil {
					errs <- err
					return
				}
				if DigestOf(b) != d {
					errs <- fmt.Errorf("read %s got other bytes", d)
					return
				}
				if _, err := c.Models(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 20 {
			rec, err := c.ImportModel(ctx, "w", "", randomBytes(uint64(100+i), 30_000), VersionRecord{})
			if err != nil {
				errs <- err
				return
			}
			if i%2 == 1 {
				if err := c.RemoveVersion(ctx, "w", rec.Version); err != nil {
					errs <- err
					return
				}
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if vs, err := c.Versions("w"); err != nil || len(vs) != 10 {
		t.Errorf("writer left %d versions, %v; want 10", len(vs), err)
	}
}
