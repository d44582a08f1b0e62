// Package dashboard is the hub's live web dashboard: a single page (plain
// HTML, CSS and JavaScript embedded in the binary, no CDN, no build step,
// charts drawn by hand in SVG) with read-only JSON endpoints behind it and
// a server-sent event stream that tells open pages when to refresh.
//
// # Pages
//
//   - #/ fleet overview: devices online and offline, versions per model,
//     execution providers in use and available, active rollouts, the
//     device list;
//   - #/rollouts: every rollout's waves (progress against target) and gates
//     (value against limit, judged or not), state and halt reason;
//   - #/models: p50/p99 latency and throughput per model version over time,
//     from the telemetry roll-ups;
//   - #/devices/{id}: a device's labels, hardware, models with active,
//     desired and previous versions, presence, last seen and its recent
//     telemetry window.
//
// # Endpoints (all GET, JSON unless noted)
//
//	/                          the page
//	/assets/{file}             its script and style sheet
//	/api/overview              fleet summary
//	/api/devices               device rows (?q= filter, ?limit=, ?offset=)
//	/api/devices/{id}          one device, with ?window=N telemetry snapshots
//	/api/rollouts              rollouts with waves and gates, newest first
//	/api/rollouts/{id}         one rollout with its devices
//	/api/models                series per model version (?minutes=, default 30)
//	/api/events                text/event-stream: "change" events
//
// # Access
//
// The hub's API demands mutual TLS with the admin certificate, which a
// browser does not have. The dashboard therefore listens on its own plain
// HTTP listener (hub.Options.DashboardAddr, `edgefleet hub --dashboard`,
// 127.0.0.1:7080 by default) and is strictly read-only: it changes nothing,
// shows no secrets (no tokens, keys or certificates) and answers only GET
// and HEAD. Keep it on loopback and reach it from elsewhere through an SSH
// tunnel (`ssh -L 7080:127.0.0.1:7080 hub-host`) or an authenticating
// reverse proxy. Requests whose Host header is not an IP address,
// localhost, or one of Config.Hosts are refused, which defeats DNS
// rebinding against a loopback dashboard; responses carry a strict
// Content-Security-Policy.
//
// # Live updates
//
// The server watches the telemetry store (Store.Watch), device messages
// (presence and reported state; heartbeats only move last-seen times) and
// the rollouts (polled every Config.RolloutPoll while a page is connected,
// compared by progress), and sends coalesced "change" events at most every
// Config.Coalesce. A page re-reads what it shows when an event concerns it,
// at most every two seconds; when the event stream is not available it
// polls every five seconds instead (?live=poll forces that, ?live=off
// turns updates off). ?stream=SECONDS makes the server end each event
// stream after that long (the browser reconnects and re-reads), for
// proxies that cut long responses and for headless browsers.
//
// # Caveats
//
// The device list is read from the registry on each request; with very
// large fleets use ?q= and ?limit= (the page shows at most 200 rows).
// Latency and throughput charts cover the telemetry roll-up span (an hour
// by default) at the roll-up step.
package dashboard
