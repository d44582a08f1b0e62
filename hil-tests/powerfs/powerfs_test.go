package powerfs

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/edgefleet/edgefleet/deploy/testenv"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func mount(t *testing.T, f *FS, dir string) *Mount {
	t.Helper()
	m, err := f.Mount(dir)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func unmount(t *testing.T, m *Mount) {
	t.Helper()
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
}

func syncPath(t *testing.T, p string) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func TestPowerCutKeepsOnlySyncedState(t *testing.T) {
	testenv.RequireFUSE(t)
	f := New(Options{})
	dir := filepath.Join(t.TempDir(), "mnt")
	m := mount(t, f, dir)
	p := func(s string) string { return filepath.Join(dir, s) }
	write := func(name, data string, sync bool) {
		t.Helper()
		fh, err := os.OpenFile(p(name), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fh.WriteString(data); err != nil {
			t.Fatal(err)
		}
		if sync {
			if err := fh.Sync(); err != nil {
				t.Fatal(err)
			}
		}
		if err := fh.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// Durable name and data.
	write("kept", "v1", true)
	if err := os.Mkdir(p("sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	syncPath(t, dir)
	// Durable name, data synced later overwritten without a sync.
	write("stale", "old", true)
	syncPath(t, dir)
	write("stale", "new-unsynced", false)
	// Synced data, name never synced in its directory.
	write("sub/orphan", "data", true)
	// Rename not synced: the old name must come back.
	write("renamed", "r", true)
	syncPath(t, dir)
	if err := os.Rename(p("renamed"), p("renamed2")); err != nil {
		t.Fatal(err)
	}
	// Unsynced everything.
	write("volatile", "x", false)
	unmount(t, m)
	f.PowerCut()
	m = mount(t, f, dir)
	defer unmount(t, m)

	for name, want := range map[string]string{"kept": "v1", "stale": "old", "renamed": "r"} {
		b, err := os.ReadFile(p(name))
		if err != nil || string(b) != want {
			t.Errorf("%s after the cut: %q, %v; want %q", name, b, err, want)
		}
	}
	for _, name := range []string{"volatile", "renamed2", "sub/orphan"} {
		if _, err := os.Stat(p(name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after the cut: %v, want it gone", name, err)
		}
	}
	if st := f.Stats(); st.PowerCuts != 1 || st.LostEntries == 0 || st.LostBytes == 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestCapacityGivesENOSPC(t *testing.T) {
	testenv.RequireFUSE(t)
	f := New(Options{Capacity: 64 << 10})
	dir := filepath.Join(t.TempDir(), "mnt")
	m := mount(t, f, dir)
	defer unmount(t, m)
	err := os.WriteFile(filepath.Join(dir, "big"), make([]byte, 128<<10), 0o644)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write beyond capacity: %v, want ENOSPC", err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if got := int64(st.Blocks) * st.Bsize; got != 64<<10 {
		t.Errorf("statfs size %d, want %d", got, 64<<10)
	}
	f.SetCapacity(1 << 20)
	if err := os.WriteFile(filepath.Join(dir, "big"), make([]byte, 128<<10), 0o644); err != nil {
		t.Fatalf("after growing the capacity: %v", err)
	}
}

// TestBoltSurvivesPowerCuts kills a process committing bbolt transactions
// on the file system at random moments, cuts the power, and checks that
// the database opens, passes bbolt's consistency check, and holds every
// transaction the process saw committed. The directory is synced once
// after the file is created (bbolt itself does not).
func TestBoltSurvivesPowerCuts(t *testing.T) {
	testenv.RequireFUSE(t)
	if os.Getenv("POWERFS_BOLT_CHILD") != "" {
		t.Skip("child")
	}
	f := New(Options{})
	dir := filepath.Join(t.TempDir(), "mnt")
	for cut := range 5 {
		m := mount(t, f, dir)
		cmd := exec.Command(os.Args[0], "-test.run=^TestBoltChild$")
		cmd.Env = append(os.Environ(), "POWERFS_BOLT_CHILD="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		var committed uint64
		deadline := time.After(time.Duration(200+100*cut) * time.Millisecond)
	read:
		for sc.Scan() {
			n, err := strconv.ParseUint(sc.Text(), 10, 64)
			if err == nil {
				committed = n
			}
			select {
			case <-deadline:
				break read
			default:
			}
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		unmount(t, m)
		f.PowerCut()

		m = mount(t, f, dir)
		// bbolt mmaps its file: a page fault served by this very process
		// can deadlock its garbage collector, so a child reads it.
		check := exec.Command(os.Args[0], "-test.run=^TestBoltChild$")
		check.Env = append(os.Environ(), "POWERFS_BOLT_CHILD="+dir, "POWERFS_BOLT_CHECK=1")
		b, err := check.Output()
		unmount(t, m)
		if err != nil {
			t.Fatalf("cut %d: check after the cut: %v\n%s", cut, err, b)
		}
		got, err := strconv.ParseUint(strings.TrimSpace(lastLine(string(b))), 10, 64)
		if err != nil {
			t.Fatalf("cut %d: check said %q", cut, b)
		}
		if got < committed {
			t.Fatalf("cut %d: %d transactions survived, the process saw %d committed", cut, got, committed)
		}
		t.Logf("cut %d: committed %d, kept %d (stats %+v)", cut, committed, got, f.Stats())
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if _, err := strconv.ParseUint(lines[i], 10, 64); err == nil {
			return lines[i]
		}
	}
	return s
}

// TestBoltChild is the process TestBoltSurvivesPowerCuts kills.
func TestBoltChild(t *testing.T) {
	dir := os.Getenv("POWERFS_BOLT_CHILD")
	if dir == "" {
		t.Skip("run by TestBoltSurvivesPowerCuts")
	}
	path := filepath.Join(dir, "q.db")
	if os.Getenv("POWERFS_BOLT_CHECK") != "" {
		db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
		if err != nil {
			t.Fatalf("open after the cut: %v", err)
		}
		var got uint64
		err = db.View(func(tx *bolt.Tx) error {
			for err := range tx.Check() {
				return err
			}
			if b := tx.Bucket([]byte("b")); b != nil {
				if v := b.Get([]byte("n")); v != nil {
					got = binary.BigEndian.Uint64(v)
				}
			}
			return nil
		})
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Println(got)
		return
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	d.Close()
	for {
		var n uint64
		err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("b"))
			if err != nil {
				return err
			}
			if v := b.Get([]byte("n")); v != nil {
				n = binary.BigEndian.Uint64(v)
			}
			n++
			if err := b.Put(fmt.Appendf(nil, "k%08d", n), make([]byte, 700)); err != nil {
				return err
			}
			return b.Put([]byte("n"), binary.BigEndian.AppendUint64(nil, n))
		})
		if err != nil {
			t.Fatal(err)
		}
		fmt.Println(n)
	}
}
