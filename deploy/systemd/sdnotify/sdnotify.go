// Package sdnotify is the sd_notify(3) client the agent and the hub share for
// their Type=notify units (deploy/systemd): Notify sends READY=1, WATCHDOG=1,
// STOPPING=1 or STATUS=…, and Watchdog ticks at half the unit's WatchdogSec.
// Without $NOTIFY_SOCKET every call is a no-op.
//
// coreos/go-systemd's daemon package is systemd's own reference client for
// Go: a few dozen lines over a unixgram socket, no dependencies, and it
// handles abstract sockets and $WATCHDOG_PID as systemd documents them.
package sdnotify

import (
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// The states a service sends, as sd_notify(3) names them.
const (
	Ready    = daemon.SdNotifyReady
	Watchdog = daemon.SdNotifyWatchdog
	Stopping = daemon.SdNotifyStopping
)

// Notify sends one state, logging (not failing) on error: a missing
// notification makes systemd restart the unit, which is louder than any log
// line.
func Notify(log *slog.Logger, state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.Warn("sd_notify", "state", state, "err", err)
	}
}

// WatchdogTicker returns a channel that ticks at half the unit's WatchdogSec
// (as sd_watchdog_enabled(3) advises) and its stop function, or a nil
// channel (never ready) when no watchdog is configured.
func WatchdogTicker(log *slog.Logger) (<-chan time.Time, func()) {
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
