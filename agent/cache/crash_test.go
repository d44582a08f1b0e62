package cache

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Environment of the crash child: the cache file and the child's seed.
const (
	envCrashDB   = "EDGEFLEET_CACHE_CRASH_DB"
	envCrashSeed = "EDGEFLEET_CACHE_CRASH_SEED"
)

// Options the crash child and its checker share.
var crashOpts = Options{Budget: 3 << 20, ChunkSize: 16 << 10, OrphanGrace: time.Nanosecond}

// TestCrashKill9 re-executes the test binary as a child that changes the
// cache in a loop (imports, streamed puts, resumable partial writes and
// commits, activations, removals, evictions), kills it with SIGKILL after a
// random number of operations, and checks that the reopened cache is
// consistent: bbolt's page check, every blob hashes to its digest, every
// version's blob exists and reads back, every partial write holds exactly its
// offset, no interrupted Put is left, the budget holds. Each round continues
// on the previous round's file.
func TestCrashKill9(t *testing.T) {
	if os.Getenv(envCrashDB) != "" {
		t.Skip("inside the crash child")
	}
	rounds := 6
	if testing.Short() {
		rounds = 3
	}
	path := tempPath(t)
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for round := range rounds {
		target := 1 + rnd.IntN(40)
		jitter := time.Duration(rnd.IntN(3000)) * time.Microsecond
		ops, resumed := runCrashChild(t, path, round, target, jitter)
		t.Logf("round %d: killed %v after operation %d of %d; %d resumed partial writes", round, jitter, ops, target, resumed)

		c, err := Open(path, crashOpts)
		if err != nil {
			t.Fatalf("round %d: reopen after kill -9: %v", round, err)
		}
		if err := c.Check(context.Background()); err != nil {
			c.Close()
			t.Fatalf("round %d: inconsistent after kill -9:\n%v", round, err)
		}
		ms, err := c.Models()
		if err != nil {
			c.Close()
			t.Fatalf("round %d: %v", round, err)
		}
		for _, m := range ms {
			for _, v := range m.Versions {
				b, err := c.ReadBlob(context.Background(), v.Digest)
				if err != nil || int64(len(b)) != v.Size {
					t.Errorf("round %d: %s/%s: read %d bytes, %v", round, v.Model, v.Version, len(b), err)
				}
			}
		}
		if u, err := c.Usage(); err != nil || u.Used() > u.Budget {
			t.Errorf("round %d: usage %+v, %v over budget", round, u, err)
		}
		_ = c.view(func(_ *bolt.Tx, s schema) error {
			return s.partials.ForEachBucket(func(k []byte) error {
				if strings.HasPrefix(string(k), stagingPrefix) {
					t.Errorf("round %d: interrupted put %s survived Open", round, k)
				}
				return nil
			})
		})
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// runCrashChild starts the child and SIGKILLs it jitter after it reported
// target completed operations, so the kill lands at varying points of the
// next one. It returns the operations and the partial-write resumptions seen.
func runCrashChild(t *testing.T, path string, seed, target int, jitter time.Duration) (ops, resumed int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), envCrashDB+"="+path, envCrashSeed+"="+strconv.Itoa(seed))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	guard := time.AfterFunc(2*time.Minute, func() { _ = cmd.Process.Kill() })
	defer guard.Stop()
	sc := bufio.NewScanner(out)
	var childErr string
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "crashchild-err ") {
			childErr = line
			break
		}
		if strings.HasPrefix(line, "crashchild-resume ") {
			resumed++
		}
		if strings.HasPrefix(line, "crashchild-op ") {
			ops++
			if ops >= target {
				break
			}
		}
	}
	time.Sleep(jitter) // not a wait for a condition: a random kill point
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if childErr != "" {
		t.Fatalf("child failed: %s\n%s", childErr, stderr.String())
	}
	if ops < target {
		t.Fatalf("child stopped after %d operations, before being killed:\n%s", ops, stderr.String())
	}
	return ops, resumed
}

// TestCrashChild is the child of TestCrashKill9; it runs only when that test
// starts it and loops until killed.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(envCrashDB)
	if path == "" {
		t.Skip("runs only as TestCrashKill9's child")
	}
	seed, _ := strconv.Atoi(os.Getenv(envCrashSeed))
	fail := func(err error) {
		fmt.Printf("crashchild-err %v\n", err)
		os.Exit(1)
	}
	c, err := Open(path, crashOpts)
	if err != nil {
		fail(err)
	}
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(uint64(seed), 2))
	// Downloadable contents for partial writes, so a later child can resume
	// a partial an earlier one began.
	downloads := map[string][]byte{}
	var downloadDigests []string
	for i := range 12 {
		b := randomBytes(uint64(1000+i), 20_000+i*37_000)
		d := DigestOf(b)
		downloads[d] = b
		downloadDigests = append(downloadDigests, d)
	}
	models := []string{"a", "b", "c"}
	tolerate := func(err error, ok ...error) {
		for _, e := range ok {
			if errors.Is(err, e) {
				return
			}
		}
		if err != nil {
			fail(err)
		}
	}
	for i := 0; ; i++ {
		model := models[rnd.IntN(len(models))]
		switch op := rnd.IntN(7); op {
		case 0: // import
			_, err := c.ImportModel(ctx, model, "", randomBytes(rnd.Uint64(), 1+rnd.IntN(300_000)), VersionRecord{Source: "crash"})
			tolerate(err, ErrNoSpace)
		case 1: // streamed put, then catalogue
			d, _, err := c.Put(ctx, bytes.NewReader(randomBytes(rnd.Uint64(), rnd.IntN(200_000))))
			tolerate(err, ErrNoSpace)
			if err == nil {
				_, err = c.AddVersion(ctx, model, "", VersionRecord{Digest: d})
				tolerate(err, ErrNotFound) // evicted as an orphan meanwhile
			}
		case 2: // activate the latest version
			if l, err := c.Latest(model); err == nil {
				tolerate(c.SetActive(ctx, model, l.Version))
			}
		case 3: // remove the oldest version
			if vs, err := c.Versions(model); err == nil && len(vs) > 0 {
				tolerate(c.RemoveVersion(ctx, model, vs[0].Version), ErrInUse)
			}
		case 4: // advance a resumable download, committing when complete
			d := downloadDigests[rnd.IntN(len(downloadDigests))]
			data := downloads[d]
			err := c.BeginPartial(ctx, d, int64(len(data)))
			tolerate(err, ErrExists, ErrNoSpace)
			if err != nil {
				break
			}
			off, err := c.PartialOffset(d)
			tolerate(err)
			if off > 0 {
				fmt.Printf("crashchild-resume %s at %d\n", d, off)
			}
			end := min(int(off)+1+rnd.IntN(len(data)), len(data))
			_, err = c.WritePartialFrom(ctx, d, bytes.NewReader(data[off:end]))
			tolerate(err)
			if end == len(data) {
				tolerate(c.CommitPartial(ctx, d))
				_, err = c.AddVersion(ctx, model, "", VersionRecord{Digest: d, Source: "download"})
				tolerate(err)
			}
		case 5: // make room
			_, err := c.EnsureSpace(ctx, int64(rnd.IntN(1<<20)), nil)
			tolerate(err, ErrNoSpace)
		case 6: // state-machine style multi-key update
			if vs, err := c.Versions(model); err == nil && len(vs) > 1 {
				err := c.SetModelStates(ctx, model, map[string]string{
					StatePending: vs[len(vs)-1].Version, "step": strconv.Itoa(i),
				})
				tolerate(err)
			}
		}
		fmt.Printf("crashchild-op %d\n", i)
	}
}
