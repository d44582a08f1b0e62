package pgstore

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
)

// Leader elections: the replica holding a session-level advisory lock on
// its own connection is the leader. When that replica dies (kill -9, a
// crash, a lost network), the server ends its session and frees the lock;
// the next replica's poll takes it, within Poll. The leader checks its
// connection every Poll and steps down (cancels the leader context) when
// the check fails, before the server can have given the lock away only if
// the server notices the dead session later than the leader notices the
// failed check; set the server's tcp_keepalives_* (and the hubs' Poll) so
// that holds, or fence writes with IsLeader.

// LeaderOptions configure RunLeader.
type LeaderOptions struct {
	// DSN is the database (a dedicated connection is opened).
	DSN string
	// Key names the lock (one per kind of decision, e.g. rollouts).
	Key int64
	// Poll is how often a follower tries the lock and a leader checks its
	// connection (500 ms).
	Poll time.Duration
	// Logger, optional.
	Logger *slog.Logger
}

// RunLeader campaigns for leadership until ctx ends: whenever this replica
// holds the lock it calls lead with a context that ends when leadership is
// lost (or ctx ends), and campaigns again after lead returns. It returns
// ctx's error.
func RunLeader(ctx context.Context, opts LeaderOptions, lead func(ctx context.Context)) error {
	if opts.Poll <= 0 {
		opts.Poll = 500 * time.Millisecond
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for ctx.Err() == nil {
		err := campaign(ctx, opts, log, lead)
		if err != nil && ctx.Err() == nil {
			log.Warn("leader election", "key", opts.Key, "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(opts.Poll):
		}
	}
	return ctx.Err()
}

// campaign connects, waits for the lock, leads while it holds, and
// returns when the connection fails or lead returns.
func campaign(ctx context.Context, opts LeaderOptions, log *slog.Logger, lead func(context.Context)) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := pgx.Connect(cctx, opts.DSN)
	cancel()
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for {
		var got bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", opts.Key).Scan(&got); err != nil {
			return fmt.Errorf("try lock: %w", err)
		}
		if got {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(opts.Poll):
		}
	}
	log.Info("leader: took the lease", "key", opts.Key)
	lctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); lead(lctx) }()
	defer func() {
		stop()
		<-done
		log.Info("leader: stepped down", "key", opts.Key)
	}()
	t := time.NewTicker(opts.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-done:
			return nil
		case <-t.C:
			// A slow answer is not a lost lease: only a failed or very
			// late ping steps down (a leader that flaps on load costs a
			// reload of every rollout).
			pctx, cancel := context.WithTimeout(ctx, max(10*opts.Poll, 2*time.Second))
			err := conn.Ping(pctx)
			cancel()
			if err != nil {
				return fmt.Errorf("lost the lease's connection: %w", err)
			}
		}
	}
}
