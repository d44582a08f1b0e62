package testenv

// PostgreSQL for tests: Debian's postgresql-15 (the Makefile's APT_PKGS),
// initdb into a temporary folder, listening on a unix socket in that folder
// only. PostgreSQL refuses to run as root, so as root (CI) the server runs
// as the "postgres" system user, created if missing.
//
// One server serves a whole test binary (initdb costs seconds on a loaded
// machine); each caller gets its own database from Postgres.DB. Call
// PostgresMain from TestMain so the server is stopped at the end.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is a running PostgreSQL server.
type Postgres struct {
	bin  string // folder of initdb and postgres
	dir  string // root of the temporary folder (socket and data)
	cred *syscall.Credential

	mu  sync.Mutex // guards cmd
	cmd *exec.Cmd
	n   atomic.Int64
}

var (
	pgShared    *Postgres
	pgSharedErr error
	pgOnce      sync.Once
)

// PostgresMain runs the tests and stops the shared server; use it as
// os.Exit(testenv.PostgresMain(m)) in TestMain.
func PostgresMain(m *testing.M) int {
	code := m.Run()
	if pgShared != nil {
		pgShared.Close()
	}
	return code
}

// SharedPostgres returns the test binary's server, starting it on first
// use. A missing PostgreSQL skips the test (fails it under CI).
func SharedPostgres(t testing.TB) *Postgres {
	t.Helper()
	pgOnce.Do(func() { pgShared, pgSharedErr = StartPostgres() })
	if errors.Is(pgSharedErr, errNoPostgres) {
		Missing(t, "PostgreSQL", "apt-get install postgresql-15 (make deps-apt)")
	}
	if pgSharedErr != nil {
		t.Fatal(pgSharedErr)
	}
	return pgShared
}

var errNoPostgres = errors.New("testenv: PostgreSQL not installed")

// pgBinDir finds the newest /usr/lib/postgresql/<major>/bin with initdb.
func pgBinDir() (string, error) {
	if d := os.Getenv("EDGEFLEET_PG_BIN"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(dirs) == 0 {
		return "", errNoPostgres
	}
	sort.Slice(dirs, func(i, j int) bool {
		a, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(dirs[i]))))
		b, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(dirs[j]))))
		return a > b
	})
	return filepath.Dir(dirs[0]), nil
}

// StartPostgres initialises and starts a new server. Close stops it and removes
// its files.
func StartPostgres() (*Postgres, error) {
	bin, err := pgBinDir()
	if err != nil {
		return nil, err
	}
	s := &Postgres{bin: bin}
	if os.Geteuid() == 0 {
		if s.cred, err = pgSystemUser("postgres"); err != nil {
			return nil, err
		}
	}
	if s.dir, err = os.MkdirTemp("", "edgefleet-pg-"); err != nil {
		return nil, err
	}
	if s.cred != nil {
		if err := os.Chown(s.dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			s.Close()
			return nil, err
		}
	}
	out, err := s.command("initdb", "-D", s.data(), "-A", "trust", "-U", "edgefleet", "--no-sync", "-E", "UTF8",
		"--no-instructions").CombinedOutput()
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("testenv: initdb: %w\n%s", err, out)
	}
	if err := s.Restart(context.Background()); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Postgres) data() string { return filepath.Join(s.dir, "data") }

func (s *Postgres) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	return cmd
}

// Stop stops the server (fast shutdown: sessions are cut), keeping its
// files; Restart starts it again.
func (s *Postgres) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
	s.cmd = nil
}

// Restart starts a stopped server (or stops and starts a running one) and
// waits until it accepts connections.
func (s *Postgres) Restart(ctx context.Context) error {
	s.Stop()
	s.mu.Lock()
	cmd := s.command("postgres", "-D", s.data(), "-k", s.dir, "-c", "listen_addresses=",
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=200", "-c", "shared_buffers=32MB")
	logf, err := os.Create(filepath.Join(s.dir, "postgres.log"))
	if err != nil {
		s.mu.Unlock()
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// A test binary killed outright takes its server along.
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	if err := cmd.Start(); err != nil {
		s.mu.Unlock()
		logf.Close()
		return fmt.Errorf("testenv: start postgres: %w", err)
	}
	logf.Close()
	s.cmd = cmd
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		c, err := pgx.Connect(ctx, s.DSN("postgres"))
		if err == nil {
			c.Close(ctx)
			return nil
		}
		select {
		case <-ctx.Done():
			log, _ := os.ReadFile(filepath.Join(s.dir, "postgres.log"))
			return fmt.Errorf("testenv: postgres not ready: %w\n%s", err, log)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// DSN is the connection string of database db.
func (s *Postgres) DSN(db string) string {
	return fmt.Sprintf("host=%s port=5432 user=edgefleet dbname=%s sslmode=disable", s.dir, db)
}

// DB creates a new, empty database for t and returns its DSN.
func (s *Postgres) DB(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%d", os.Getpid(), s.n.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	return s.DSN(name)
}

// Close stops the server and removes its files.
func (s *Postgres) Close() {
	s.Stop()
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

// pgSystemUser returns the credentials of a system user, creating it (no
// home, no login shell) when missing.
func pgSystemUser(name string) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		if out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
			name).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("testenv: create user %s: %w\n%s", name, err, out)
		}
		if u, err = user.Lookup(name); err != nil {
			return nil, fmt.Errorf("testenv: %w", err)
		}
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("testenv: user %s: uid %q gid %q", name, u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}
