package netns

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"
)

func needRoot(t *testing.T) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root for network namespaces"
	} else if _, err := exec.LookPath("nft"); err != nil {
		why = "needs nft (Debian nftables)"
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip(why)
}

// TestShapedLink checks the relay's delay, a partition, and that a clean
// link comes back, between two namespaces on the bridge.
func TestShapedLink(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	n, err := New(ctx, "eft", "10.231.250")
	if err != nil {
		t.Fatal(err)
	}
	defer n.Cleanup(ctx)
	srv, err := n.AddHost(ctx, "srv", 1)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := n.AddHost(ctx, "cli", 2)
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	if err := srv.Do(func() (err error) { ln, err = net.Listen("tcp", srv.IP+":7000"); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	r, err := cli.StartRelay(ctx, srv.IP, []int{7000}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rtt := func() (time.Duration, error) {
		var c net.Conn
		err := cli.Do(func() (err error) { c, err = net.DialTimeout("tcp", srv.IP+":7000", 2*time.Second); return })
		if err != nil {
			return 0, err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		start := time.Now()
		if _, err := c.Write([]byte("ping")); err != nil {
			return 0, err
		}
		b := make([]byte, 4)
		if _, err := io.ReadFull(c, b); err != nil {
			return 0, err
		}
		return time.Since(start), nil
	}
	if err := cli.Shape(ctx, Link{Delay: 100 * time.Millisecond, RateKbit: 1000, LossPct: 1}); err != nil {
		t.Fatal(err)
	}
	d, err := rtt()
	if err != nil {
		t.Fatal(err)
	}
	if d < 200*time.Millisecond {
		t.Errorf("RTT %v through a 100 ms relay, want at least 200 ms", d)
	}
	if err := cli.Shape(ctx, Link{Down: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := rtt(); err == nil {
		t.Error("the partitioned host still reaches the server")
	}
	if err := cli.Shape(ctx, Link{}); err != nil {
		t.Fatal(err)
	}
	if _, err := rtt(); err != nil {
		t.Errorf("after the link came back: %v", err)
	}
	t.Logf("mechanisms %+v, relay moved %d bytes", CurrentMechanisms(ctx), r.Bytes())
}
