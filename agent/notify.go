package agent

import (
	"fmt"

	"github.com/edgefleet/edgefleet/deploy/systemd/sdnotify"
)

// systemd integration (sd_notify(3)), for units with Type=notify and
// WatchdogSec= (deploy/systemd): READY=1 once the cached models are loaded
// and the listeners accept, WATCHDOG=1 from Run's serving loop while the
// model manager answers, STOPPING=1 when the drain begins. Without
// $NOTIFY_SOCKET (not under systemd) every call is a no-op. The client is
// deploy/systemd/sdnotify, shared with the hub.

// readyStatus is the READY=1 message with a STATUS= line for systemctl.
func readyStatus(n int) string {
	return fmt.Sprintf("%s\nSTATUS=serving %d model versions", sdnotify.Ready, n)
}
