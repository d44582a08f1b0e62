package update_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/edgefleet/edgefleet/deploy/testenv"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/agent/cache"
	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/agent/update"
	"github.com/edgefleet/edgefleet/ota"
)

// childEnv makes the test binary run runChild instead of the tests.
const childEnv = "EDGEFLEET_UPDATE_TEST_CHILD"

// runChild is the agent process the kill test kills: it runs a real agent on
// $EF_DIR and updates model "m" to $EF_REF, printing "ready" first. At the
// update step $EF_KILL_AT ("activated", "chunk:3", ...) it kills itself
// with SIGKILL.
func runChild() int {
	dir, ref, killAt := os.Getenv("EF_DIR"), os.Getenv("EF_REF"), os.Getenv("EF_KILL_AT")
	cfg := config.Config{Data: dir, HTTP: "off", GRPC: "off"}
	cfg.Update.Watch.Window = -1
	a, err := agent.New(cfg, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		return 2
	}
	ctx := context.Background()
	go func() { _ = a.Run(ctx) }()
	<-a.Ready()
	chunks := 0
	a.Updater().TestOnlySetHook(func(_, step string) {
		if step == "chunk" {
			chunks++
			step = fmt.Sprintf("chunk:%d", chunks)
		}
		fmt.Fprintln(os.Stderr, "step", step)
		if step == killAt {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	})
	fmt.Println("ready")
	_, err = a.Updater().Update(ctx, "m", ref, update.UpdateOptions{Registry: []ota.Option{ota.WithChunkSize(64 << 10), fastRetry}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "update:", err)
		return 3
	}
	return 0
}

// TestKillDuringUpdate kills an agent process with SIGKILL at every step of
// an update (and at random moments), restarts an agent on its data folder
// and checks that exactly one healthy version is active and serves: the old
// one when the kill came before the activation commit (and the update is not
// resumed), the new one otherwise.
func TestKillDuringUpdate(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns agent processes")
	}
	rs := startRegistry(t)
	ref1 := push(t, rs, "m", "1", fixture(t, "scale2.onnx"), nil)
	ref2 := push(t, rs, "m", "2", padModel(fixture(t, "scale3.onnx"), 1<<20), nil)
	seed := t.TempDir()
	r := startAgent(t, seed, nil)
	mustUpdate(t, r, "m", ref1, update.UpdateOptions{})
	r.stop()
	seedDB, err := os.ReadFile(filepath.Join(seed, agent.CacheFile))
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}

	type run struct {
		name   string
		killAt string        // step; "" for a kill after delay
		delay  time.Duration // random kill time after "ready"
		resume bool
	}
	steps := []string{"resolved", "downloading", "chunk:3", "downloaded", "catalogued", "verified", "warmed",
		"activating", "activated", "switched", "done"}
	committed := map[string]bool{"activated": true, "switched": true, "done": true}
	var runs []run
	for _, s := range steps {
		for _, resume := range []bool{false, true} {
			runs = append(runs, run{name: fmt.Sprintf("%s/resume=%v", s, resume), killAt: s, resume: resume})
		}
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for i := range 8 {
		d := time.Duration(rng.IntN(500)) * time.Millisecond
		runs = append(runs, run{name: fmt.Sprintf("random-%d-%v/resume=%v", i, d, i%2 == 1), delay: d, resume: i%2 == 1})
	}
	for _, rn := range runs {
		t.Run(rn.name, func(t *testing.T) {
			// Random kills land anywhere in a download slowed to ~0.2 s.
			rs.set(func(rs *registryServer) {
				rs.delay = 0
				if rn.killAt == "" {
					rs.delay = 3 * time.Millisecond
				}
			})
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, agent.CacheFile), seedDB, 0o600); err != nil {
				t.Fatal(err)
			}
			killed, log := runKilled(t, exe, dir, ref2, rn.killAt, rn.delay)
			if rn.killAt != "" && !killed {
				t.Fatalf("the agent was not killed at %s:\n%s", rn.killAt, log)
			}

			r := startAgent(t, dir, func(c *config.Config) { c.Update.NoResume = !rn.resume })
			testenv.Eventually(t, "recovery to finish", 30*time.Second, func() bool {
				s := r.status(t, "m")
				return !s.Updating && s.Pending == nil
			})
			s := r.status(t, "m")
			t.Logf("killed=%v active=%s last=%+v", killed, s.Active, s.Last)
			var want []string
			// The update's intent is persisted before the "resolved" step:
			// from then on a resuming agent finishes it.
			intent := rn.killAt != "" || strings.Contains(log, "step resolved")
			switch {
			case rn.resume && intent || committed[rn.killAt]:
				want = []string{"2"}
			case rn.killAt == "":
				want = []string{"1", "2"} // the kill may have come after the commit
			default:
				want = []string{"1"}
			}
			if !slices.Contains(want, s.Active) {
				t.Fatalf("active version %q after restart, want one of %v (last %+v)\nkilled agent:\n%s", s.Active, want, s.Last, log)
			}
			k, ver := r.scaleOf(t, "m")
			if ver != s.Active || (ver == "1" && k != 2) || (ver == "2" && k != 3) {
				t.Fatalf("serving ×%g from version %s; active is %s", k, ver, s.Active)
			}
			wantCached := []string{"1"}
			if s.Active == "2" {
				wantCached = []string{"1", "2"}
				if s.Previous != "1" {
					t.Fatalf("previous = %q, want 1", s.Previous)
				}
			}
			if got := cachedVersions(t, r, "m"); !slices.Equal(got, wantCached) {
				t.Fatalf("cached versions %v, want %v", got, wantCached)
			}
			r.stop()
			st := checkCache(t, dir)["m"]
			for k := range st {
				if k == cache.StatePending || len(k) > 8 && k[:8] == "pending_" {
					t.Fatalf("state key %s=%q left after recovery", k, st[k])
				}
			}
		})
	}
}

// runKilled runs the child agent and kills it at killAt (by itself) or after
// delay (by the test). It reports whether the process died by SIGKILL and
// returns its log.
func runKilled(t *testing.T, exe, dir, ref, killAt string, delay time.Duration) (bool, string) {
	t.Helper()
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", "EF_DIR="+dir, "EF_REF="+ref, "EF_KILL_AT="+killAt)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "ready" {
				close(ready)
			}
		}
	}()
	if killAt == "" {
		select {
		case <-ready:
			time.Sleep(delay)
			_ = cmd.Process.Signal(syscall.SIGKILL)
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
		}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		err = <-done
		t.Fatalf("child did not finish:\n%s", stderr.String())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return true, stderr.String()
		}
		if killAt != "" {
			t.Fatalf("child exited with %v:\n%s", err, stderr.String())
		}
	}
	return false, stderr.String()
}
