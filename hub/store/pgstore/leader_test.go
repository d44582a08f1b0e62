package pgstore_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edgefleet/edgefleet/deploy/testenv"
	"github.com/edgefleet/edgefleet/hub/store/pgstore"
)

const leaderKey = 42

// TestLeaderHelper is the replica TestLeaderFailover kills: it leads until
// it is killed and says so on stdout.
func TestLeaderHelper(t *testing.T) {
	dsn := os.Getenv("EDGEFLEET_LEADER_DSN")
	if dsn == "" {
		t.Skip("helper process for TestLeaderFailover")
	}
	pgstore.RunLeader(context.Background(), pgstore.LeaderOptions{DSN: dsn, Key: leaderKey, Poll: 100 * time.Millisecond},
		func(ctx context.Context) {
			fmt.Println("LEADER")
			<-ctx.Done()
		})
}

// TestLeaderFailover kills -9 the process that holds the lease: a replica
// in this process takes over, and not before.
func TestLeaderFailover(t *testing.T) {
	srv := testenv.SharedPostgres(t)
	dsn := srv.DB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestLeaderHelper$")
	cmd.Env = append(os.Environ(), "EDGEFLEET_LEADER_DSN="+dsn)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(out)
	for sc.Scan() && !strings.Contains(sc.Text(), "LEADER") {
	}
	go func() {
		for sc.Scan() {
		}
	}()

	var (
		killed atomic.Bool
		early  atomic.Bool
		took   = make(chan time.Time, 1)
	)
	go pgstore.RunLeader(ctx, pgstore.LeaderOptions{DSN: dsn, Key: leaderKey, Poll: 100 * time.Millisecond},
		func(lctx context.Context) {
			if !killed.Load() {
				early.Store(true)
			}
			select {
			case took <- time.Now():
			default:
			}
			<-lctx.Done()
		})
	// This replica has tried the lock against the live leader (its session
	// sits idle after a refused pg_try_advisory_lock) before the kill.
	watch, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close(ctx)
	testenv.Eventually(t, "the second replica campaigning", 30*time.Second, func() bool {
		var n int
		watch.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND query LIKE 'SELECT pg_try_advisory_lock%' AND pid <> pg_backend_pid()`).Scan(&n)
		return n >= 1
	})
	killed.Store(true)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	cmd.Wait()
	select {
	case at := <-took:
		t.Logf("takeover %v after kill -9", at.Sub(killedAt).Round(time.Millisecond))
	case <-time.After(30 * time.Second):
		t.Fatal("no takeover within 30 s of kill -9 of the leader")
	}
	if early.Load() {
		t.Error("this replica led while the other process still held the lease")
	}
}

// TestLeaderHandover steps three replicas down one after the other: one
// leads at a time, and each step-down hands over.
func TestLeaderHandover(t *testing.T) {
	srv := testenv.SharedPostgres(t)
	dsn := srv.DB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var (
		mu      sync.Mutex
		leading int
		most    int
		leaders = make(chan int, 3)
	)
	cancels := make([]context.CancelFunc, 3)
	var wg sync.WaitGroup
	for i := range 3 {
		rctx, rcancel := context.WithCancel(ctx)
		cancels[i] = rcancel
		wg.Go(func() {
			pgstore.RunLeader(rctx, pgstore.LeaderOptions{DSN: dsn, Key: leaderKey, Poll: 100 * time.Millisecond},
				func(lctx context.Context) {
					mu.Lock()
					leading++
					most = max(most, leading)
					mu.Unlock()
					leaders <- i
					<-lctx.Done()
					mu.Lock()
					leading--
					mu.Unlock()
				})
		})
	}
	seen := map[int]bool{}
	for range 3 {
		select {
		case i := <-leaders:
			if seen[i] {
				t.Fatalf("replica %d led twice", i)
			}
			seen[i] = true
			cancels[i]() // step down: the next one takes over
		case <-time.After(30 * time.Second):
			t.Fatalf("no leader after %d handovers", len(seen))
		}
	}
	cancel()
	wg.Wait()
	if most != 1 {
		t.Errorf("%d replicas led at once", most)
	}
}
