// Package netns builds the HIL suite's network: one switch namespace with
// a Linux bridge, and hosts (the hub, each device) in namespaces of their
// own, each joined to the bridge by a veth pair, all on a private /24 that
// exists only inside these namespaces. It shapes each host's link with
// the tools the kernel offers: tc netem when present, otherwise nftables
// (loss, partitions), tc tbf (rate) and a user-space relay (delay, see
// Relay).
//
// Everything shells out to iproute2 (ip, tc) and nftables (nft), the
// same tools an operator uses on a real board.
package netns

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Net is the switch namespace with its bridge and the hosts on it.
type Net struct {
	// Prefix starts every namespace and link name (e.g. "efh").
	Prefix string
	// Subnet is the first three octets of the /24 (e.g. "10.231.7").
	Subnet string

	mu    sync.Mutex // guards hosts
	hosts []*Host
}

// Host is a namespace on the bridge.
type Host struct {
	Net  *Net
	Name string // short name (hub, d1, …)
	NS   string // namespace name
	IP   string
	// Peer is the switch-side veth (its egress is the host's downlink).
	Peer string

	relay *Relay
}

// Switch returns the switch namespace's name.
func (n *Net) Switch() string { return n.Prefix + "-sw" }

// Run runs a command and returns its combined output in the error.
func Run(ctx context.Context, name string, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// New creates the switch namespace and its bridge, removing leftovers of
// an earlier run with the same prefix first.
func New(ctx context.Context, prefix, subnet string) (*Net, error) {
	for _, tool := range []string{"ip", "tc", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("netns: %s not found (Debian packages iproute2, nftables): %w", tool, err)
		}
	}
	n := &Net{Prefix: prefix, Subnet: subnet}
	n.Cleanup(ctx)
	steps := [][]string{
		{"ip", "netns", "add", n.Switch()},
		{"ip", "-n", n.Switch(), "link", "set", "lo", "up"},
		{"ip", "-n", n.Switch(), "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", n.Switch(), "link", "set", "br0", "up"},
	}
	for _, s := range steps {
		if _, err := Run(ctx, s[0], s[1:]...); err != nil {
			n.Cleanup(ctx)
			return nil, fmt.Errorf("netns: %w", err)
		}
	}
	return n, nil
}

// Cleanup deletes every namespace whose name starts with the prefix.
func (n *Net) Cleanup(ctx context.Context) {
	out, _ := Run(ctx, "ip", "netns", "list")
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], n.Prefix+"-") {
			_, _ = Run(ctx, "ip", "netns", "del", f[0])
		}
	}
}

// AddHost creates namespace prefix-name with address subnet.octet on the
// bridge.
func (n *Net) AddHost(ctx context.Context, name string, octet int) (*Host, error) {
	h := &Host{Net: n, Name: name, NS: n.Prefix + "-" + name, IP: fmt.Sprintf("%s.%d", n.Subnet, octet), Peer: "v" + name}
	steps := [][]string{
		{"ip", "netns", "add", h.NS},
		{"ip", "-n", h.NS, "link", "set", "lo", "up"},
		{"ip", "-n", n.Switch(), "link", "add", h.Peer, "type", "veth", "peer", "name", "eth0", "netns", h.NS},
		{"ip", "-n", n.Switch(), "link", "set", h.Peer, "master", "br0"},
		{"ip", "-n", n.Switch(), "link", "set", h.Peer, "up"},
		{"ip", "-n", h.NS, "addr", "add", h.IP + "/24", "dev", "eth0"},
		{"ip", "-n", h.NS, "link", "set", "eth0", "up"},
	}
	for _, s := range steps {
		if _, err := Run(ctx, s[0], s[1:]...); err != nil {
			return nil, fmt.Errorf("netns: host %s: %w", name, err)
		}
	}
	// Bytes accepted on eth0, after the fault rules (which run at a lower
	// priority): the link counters also count packets the faults drop,
	// such as a sender's retransmissions into a partition.
	if err := h.nft(ctx, `table inet hilcount {
	chain in {
		type filter hook input priority 10; policy accept;
		iifname "eth0" counter
	}
}
`); err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.hosts = append(n.hosts, h)
	n.mu.Unlock()
	return h, nil
}

// Command returns cmd to run name with args inside the host's network
// namespace. It uses nsenter, which enters only the network namespace and
// execs the program (same pid): ip netns exec would also give it a mount
// namespace of its own, holding copies of the FUSE mounts of the moment
// (which then outlive their unmount), and would fork.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=/var/run/netns/" + h.NS, "--", name}, args...)...)
}

// Do runs fn on an OS thread that has entered the host's namespace;
// sockets fn creates live there. The thread is discarded afterwards.
func (h *Host) Do(fn func() error) error {
	return Do(h.NS, fn)
}

// Do runs fn on an OS thread inside network namespace ns.
func Do(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread, now in another namespace,
		// exits with the goroutine.
		f, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			errc <- fmt.Errorf("netns: %w", err)
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("netns: setns %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Accepted returns the bytes the host accepted on eth0 after the fault
// rules: what actually reached its programs.
func (h *Host) Accepted(ctx context.Context) (uint64, error) {
	out, err := h.Command(ctx, "nft", "-j", "list", "table", "inet", "hilcount").Output()
	if err != nil {
		return 0, fmt.Errorf("netns: counter on %s: %w", h.Name, err)
	}
	var doc struct {
		Nftables []struct {
			Rule *struct {
				Expr []struct {
					Counter *struct {
						Bytes uint64 `json:"bytes"`
					} `json:"counter"`
				} `json:"expr"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return 0, fmt.Errorf("netns: counter on %s: %w", h.Name, err)
	}
	for _, o := range doc.Nftables {
		if o.Rule == nil {
			continue
		}
		for _, e := range o.Rule.Expr {
			if e.Counter != nil {
				return e.Counter.Bytes, nil
			}
		}
	}
	return 0, fmt.Errorf("netns: no counter on %s", h.Name)
}

// Counters returns the bytes the host received and sent on eth0.
func (h *Host) Counters(ctx context.Context) (rx, tx uint64, err error) {
	out, err := Run(ctx, "ip", "-n", h.NS, "-s", "-j", "link", "show", "eth0")
	if err != nil {
		return 0, 0, err
	}
	var links []struct {
		Stats64 struct {
			RX struct{ Bytes uint64 } `json:"rx"`
			TX struct{ Bytes uint64 } `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) == 0 {
		return 0, 0, errors.Join(errors.New("netns: cannot read link counters"), err)
	}
	return links[0].Stats64.RX.Bytes, links[0].Stats64.TX.Bytes, nil
}
