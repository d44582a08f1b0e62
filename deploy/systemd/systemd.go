// Package systemd holds edgefleet's systemd units and default configuration
// files, embedded for the .deb packages (deploy/packages) and checked by this
// package's tests with systemd-analyze.
//
//   - edgefleet-agent.service, edgefleet-hub.service: Type=notify units
//     (READY=1 once the models serve, WATCHDOG=1 from the serving loop,
//     STOPPING=1 on drain; client: deploy/systemd/sdnotify) running under
//     DynamicUser= with StateDirectory=, ProtectSystem=strict, an empty
//     capability bounding set, SystemCallFilter=@system-service and
//     RestrictAddressFamilies=; `systemd-analyze security` rates both 1.4.
//   - gpu.conf.example: the drop-in that opens the NVIDIA device nodes for the
//     CUDA/TensorRT providers (installed as documentation).
//   - agent.yaml, hub.yaml: /etc/edgefleet/ defaults.
package systemd

import "embed"

// Files are the units, the GPU drop-in example and the default
// configuration files, by base name.
//
//go:embed *.service gpu.conf.example agent.yaml hub.yaml
var Files embed.FS

// Units are the unit files in Files.
var Units = []string{"edgefleet-agent.service", "edgefleet-hub.service"}
