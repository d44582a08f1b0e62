package netns

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Link is a host's link quality; the zero value is a clean link.
type Link struct {
	// Down drops every packet in both directions (a partition).
	Down bool
	// LossPct drops this percentage of packets in each direction.
	LossPct float64
	// RateKbit limits each direction (0: unlimited).
	RateKbit int
	// Delay is added in each direction (RTT grows by twice this).
	Delay time.Duration
}

// String describes the link.
func (l Link) String() string {
	if l.Down {
		return "down"
	}
	var p []string
	if l.Delay > 0 {
		p = append(p, fmt.Sprintf("%v RTT", 2*l.Delay))
	}
	if l.LossPct > 0 {
		p = append(p, fmt.Sprintf("%g%% loss", l.LossPct))
	}
	if l.RateKbit > 0 {
		p = append(p, fmt.Sprintf("%d kbit/s", l.RateKbit))
	}
	if len(p) == 0 {
		return "clean"
	}
	return strings.Join(p, ", ")
}

// Mechanisms names the tool used for each kind of fault.
type Mechanisms struct {
	Loss, Partition, Rate, Delay string
}

var (
	probeOnce sync.Once
	haveNetem bool
)

// HasNetem reports whether the kernel has the netem qdisc (probed once
// on a scratch namespace).
func HasNetem(ctx context.Context) bool {
	probeOnce.Do(func() {
		ns := fmt.Sprintf("efh-probe-%d", time.Now().UnixNano()%100000)
		if _, err := Run(ctx, "ip", "netns", "add", ns); err != nil {
			return
		}
		defer Run(ctx, "ip", "netns", "del", ns)
		_, err := Run(ctx, "ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms")
		haveNetem = err == nil
	})
	return haveNetem
}

// Current mechanisms: netem when the kernel has it, else nftables, tbf
// and the relay.
func CurrentMechanisms(ctx context.Context) Mechanisms {
	if HasNetem(ctx) {
		return Mechanisms{Loss: "tc netem loss", Partition: "nftables drop", Rate: "tc tbf", Delay: "tc netem delay"}
	}
	return Mechanisms{Loss: "nftables numgen random drop", Partition: "nftables drop", Rate: "tc tbf",
		Delay: "user-space TCP/UDP relay (nftables redirect)"}
}

// Shape applies l to the host's link: nftables rules in the host's
// namespace for loss and partitions, tbf on both ends of its veth for
// the rate, netem or the host's relay (SetDelay) for delay.
func (h *Host) Shape(ctx context.Context, l Link) error {
	var in, out []string
	if l.Down {
		in = append(in, `iifname "eth0" drop`)
		out = append(out, `oifname "eth0" drop`)
	}
	netem := HasNetem(ctx)
	if l.LossPct > 0 && !netem {
		r := fmt.Sprintf("numgen random mod 10000 < %d drop", int(l.LossPct*100))
		in = append(in, `iifname "eth0" `+r)
		out = append(out, `oifname "eth0" `+r)
	}
	rules := fmt.Sprintf(`table inet hil
delete table inet hil
table inet hil {
	chain in {
		type filter hook input priority -10; policy accept;
		%s
	}
	chain out {
		type filter hook output priority -10; policy accept;
		%s
	}
}
`, strings.Join(in, "\n\t\t"), strings.Join(out, "\n\t\t"))
	if err := h.nft(ctx, rules); err != nil {
		return err
	}
	// Rate (and netem's delay/loss) on both ends of the veth.
	for _, side := range []struct{ ns, dev string }{{h.NS, "eth0"}, {h.Net.Switch(), h.Peer}} {
		_, _ = Run(ctx, "ip", "netns", "exec", side.ns, "tc", "qdisc", "del", "dev", side.dev, "root")
		args := []string{"netns", "exec", side.ns, "tc", "qdisc", "add", "dev", side.dev, "root"}
		switch {
		case netem && (l.Delay > 0 || l.LossPct > 0):
			args = append(args, "netem")
			if l.Delay > 0 {
				args = append(args, "delay", fmt.Sprintf("%dms", l.Delay.Milliseconds()))
			}
			if l.LossPct > 0 {
				args = append(args, "loss", fmt.Sprintf("%g%%", l.LossPct))
			}
			if l.RateKbit > 0 {
				args = append(args, "rate", fmt.Sprintf("%dkbit", l.RateKbit))
			}
		case l.RateKbit > 0:
			// A bucket of about 20 ms of traffic (at least 2 MTUs), and
			// a queue of about 300 ms.
			burst := max(l.RateKbit*1000/8/50, 3200)
			args = append(args, "tbf", "rate", fmt.Sprintf("%dkbit", l.RateKbit), "burst", fmt.Sprint(burst), "latency", "300ms")
		default:
			continue
		}
		if _, err := Run(ctx, "ip", args...); err != nil {
			return fmt.Errorf("netns: shape %s: %w", h.Name, err)
		}
	}
	if !netem {
		if h.relay != nil {
			h.relay.SetDelay(l.Delay)
		} else if l.Delay > 0 {
			return fmt.Errorf("netns: %s: delay needs a relay (StartRelay)", h.Name)
		}
	}
	return nil
}

func (h *Host) nft(ctx context.Context, rules string) error {
	cmd := h.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("netns: nft on %s: %w: %s", h.Name, err, out)
	}
	return nil
}
