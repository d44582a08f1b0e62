package agent

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// systemd integration (sd_notify(3)), for units with Type=notify and
// WatchdogSec= (deploy/systemd): READY=1 once the cached models are loaded
// and the listeners accept, WATCHDOG=1 from Run's serving loop while the
// model manager answers, STOPPING=1 when the drain begins. Without
// $NOTIFY_SOCKET (not under systemd) every call is a no-op.
//
// coreos/go-systemd's daemon package is systemd's own reference client for
// Go: a few dozen lines over a unixgram socket, no dependencies, and it
// handles abstract sockets and $WATCHDOG_PID as systemd documents them.

// notify sends one sd_notify state, logging (not failing) on error: a
// missing notification makes systemd restart the unit, which is louder than
// any log line.
func notify(log *slog.Logger, state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.Warn("sd_notify", "state", state, "err", err)
	}
}

// watchdog returns a channel that ticks at half the unit's WatchdogSec (as
// sd_watchdog_enabled(3) advises), or nil when no watchdog is configured.
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

func readyStatus(n int) string {
	return fmt.Sprintf("%s\nSTATUS=serving %d model versions", daemon.SdNotifyReady, n)
}
