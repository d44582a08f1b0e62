package hub

import (
	bolt "go.etcd.io/bbolt"
)

// systemd integration (sd_notify(3)) for the Type=notify unit in
// deploy/systemd: READY=1 once every listener serves, WATCHDOG=1 from Run's
// loop while the database answers, STOPPING=1 when the shutdown begins. A
// no-op without $NOTIFY_SOCKET. The client is deploy/systemd/sdnotify,
// shared with the agent.

// alive reports whether the hub's database answers a read.
func alive(db *bolt.DB) bool {
	return db.View(func(*bolt.Tx) error { return nil }) == nil
}
