package hub

import (
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	bolt "go.etcd.io/bbolt"
)

// systemd integration (sd_notify(3)) for the Type=notify unit in
// deploy/systemd: READY=1 once every listener serves, WATCHDOG=1 from Run's
// loop while the database answers, STOPPING=1 when the shutdown begins. A
// no-op without $NOTIFY_SOCKET. coreos/go-systemd's daemon package is
// systemd's reference Go client (tiny, no dependencies); the agent uses the
// same calls (agent/notify.go).

func notify(log *slog.Logger, state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.Warn("sd_notify", "state", state, "err", err)
	}
}

// watchdog ticks at half the unit's WatchdogSec, or never without one.
func watchdog(log *slog.Logger) (<-chan time.Time, func()) {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("systemd watchdog", "err", err)
	}
	if d <= 0 {
		return nil, func() {}
	}
	t := time.NewTicker(d / 2)
	return t.C, t.Stop
}

// alive reports whether the hub's database answers a read.
func alive(db *bolt.DB) bool {
	return db.View(func(*bolt.Tx) error { return nil }) == nil
}
