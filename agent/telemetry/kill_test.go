package telemetry

import (
	"bufio"
	"context"
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

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgefleet/edgefleet/agent/fleet"
	"github.com/edgefleet/edgefleet/agent/metrics"
)

// childEnv makes the test binary a telemetry producer (see runChild).
const childEnv = "EDGEFLEET_TELEMETRY_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	if dir := os.Getenv(hubChildEnv); dir != "" {
		os.Exit(runHubChild(dir))
	}
	os.Exit(m.Run())
}

// runChild is an agent's telemetry in a process of its own: it ships what
// is queued in $DIR and takes a snapshot every 2 ms until sequence number
// $TOTAL exists, printing "seq N" after each, then "produced", and
// "drained" whenever the queue is empty afterwards. It runs until killed.
func runChild() int {
	dir := os.Getenv("DIR")
	total, _ := strconv.ParseUint(os.Getenv("TOTAL"), 10, 64)
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	fc, err := fleet.New(fleet.Options{Dir: filepath.Join(dir, "fleet"), Applier: nopApplier{},
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	tl, err := New(Options{Dir: dir, Gatherer: reg, Transport: os.Getenv("TRANSPORT"), NoFallback: true, MaxBatch: 10,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, AckTimeout: 2 * time.Second, DialTimeout: time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	up, err := FleetUplink(fc, "")
	if err == nil {
		err = tl.Attach(up)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx := context.Background()
	go fc.Run(ctx)
	go tl.shipLoop(ctx)
	for tl.Queue().Stats().Next <= total {
		m.ObserveRequest("digits", "1", "rest", metrics.OutcomeSuccess, time.Millisecond)
		seq, err := tl.SampleNow(time.Now())
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		fmt.Printf("seq %d\n", seq)
		time.Sleep(2 * time.Millisecond)
	}
	fmt.Println("produced")
	for {
		if tl.Queue().Stats().Snapshots == 0 {
			fmt.Println("drained")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// child is a running producer process.
type child struct {
	cmd   *exec.Cmd
	lines chan string
}

func startChild(t *testing.T, dir string, total int, transport string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", "DIR="+dir, "TOTAL="+strconv.Itoa(total), "TRANSPORT="+transport)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, lines: make(chan string, 1024)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case c.lines <- sc.Text():
			default: // nobody reads: the test has what it needs
			}
		}
		close(c.lines)
	}()
	t.Cleanup(c.kill)
	return c
}

// waitFor reads lines until one satisfies ok.
func (c *child) waitFor(t *testing.T, what string, ok func(line string) bool) {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case line, open := <-c.lines:
			if !open {
				t.Fatalf("producer exited before %s", what)
			}
			if ok(line) {
				return
			}
		case <-timeout:
			t.Fatalf("timed out waiting for the producer: %s", what)
		}
	}
}

// kill sends SIGKILL: no deferred function, no flush, no clean close.
func (c *child) kill() {
	if c.cmd.ProcessState == nil {
		c.cmd.Process.Signal(syscall.SIGKILL)
		c.cmd.Wait()
	}
}

func seqAtLeast(n uint64) func(string) bool {
	return func(line string) bool {
		v, ok := strings.CutPrefix(line, "seq ")
		if !ok {
			return false
		}
		s, _ := strconv.ParseUint(v, 10, 64)
		return s >= n
	}
}

// TestKill9 kills the producing agent with SIGKILL while the hub is down
// (mid-production) and again while it drains its backlog to the returned
// hub; after a third start every snapshot has arrived exactly once, in
// order.
func TestKill9(t *testing.T) {
	for _, transport := range []string{TransportMQTT, TransportQUIC} {
		t.Run(transport, func(t *testing.T) {
			p := startHub(t, nil)
			dir := t.TempDir()
			enrollDevice(t, p, dir, "edge-k")
			p.stop()
			const total = 300

			c := startChild(t, dir, total, transport)
			c.waitFor(t, "100 snapshots", seqAtLeast(100))
			c.kill()

			c = startChild(t, dir, total, transport)
			c.waitFor(t, "all snapshots taken", func(l string) bool { return l == "produced" })
			p.start()
			testenv.Eventually(t, "the drain to start", 60*time.Second, func() bool {
				d, _ := p.store().Device("edge-k")
				return d.Stored >= 40
			})
			c.kill()
			midDrain, _ := p.store().Device("edge-k")

			c = startChild(t, dir, total, transport)
			c.waitFor(t, "the queue to drain", func(l string) bool { return l == "drained" })
			c.kill()
			checkExactlyOnce(t, p.store(), "edge-k", 1, total, transport)
			final, _ := p.store().Device("edge-k")
			t.Logf("killed mid-drain after %d of %d stored; %d duplicates recognised", midDrain.Stored, total, final.Duplicates)

			q, err := OpenQueue(filepath.Join(dir, QueueFile), 0)
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			if st := q.Stats(); st.Snapshots != 0 || st.Next != total+1 || st.Acked != total || st.Dropped != 0 {
				t.Fatalf("queue after the drain: %+v", st)
			}
		})
	}
}
