package netns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// relayMark marks the relay's own upstream packets, which the redirect
// rules let through.
const relayMark = 0x4849

// relayOffset is added to a target port to get the relay's local port.
const relayOffset = 10000

// Relay delays a host's TCP and UDP traffic to one target address: an
// nftables nat rule in the host's namespace redirects the connections to
// the relay, which listens in the same namespace and forwards every chunk
// (TCP) or datagram (UDP) after the delay, from sockets marked to bypass
// the redirect. It is the fallback for kernels without netem.
type Relay struct {
	h      *Host
	target string
	delay  atomic.Int64 // nanoseconds, each direction
	bytes  atomic.Int64 // forwarded, both directions
	closed chan struct{}
	mu     sync.Mutex // guards closers
	closer []io.Closer
}

// StartRelay starts the host's relay for target (an IP) on the given TCP
// and UDP ports, with no delay until Shape (or SetDelay) sets one.
func (h *Host) StartRelay(ctx context.Context, target string, tcpPorts, udpPorts []int) (*Relay, error) {
	r := &Relay{h: h, target: target, closed: make(chan struct{})}
	var rules []string
	for _, p := range tcpPorts {
		rules = append(rules, fmt.Sprintf("ip daddr %s tcp dport %d redirect to :%d", target, p, p+relayOffset))
		var ln net.Listener
		if err := h.Do(func() (err error) { ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+relayOffset)); return }); err != nil {
			r.Close()
			return nil, fmt.Errorf("netns: relay on %s: %w", h.Name, err)
		}
		r.track(ln)
		go r.serveTCP(ln, net.JoinHostPort(target, fmt.Sprint(p)))
	}
	for _, p := range udpPorts {
		rules = append(rules, fmt.Sprintf("ip daddr %s udp dport %d redirect to :%d", target, p, p+relayOffset))
		var pc net.PacketConn
		if err := h.Do(func() (err error) {
			pc, err = net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p+relayOffset))
			return
		}); err != nil {
			r.Close()
			return nil, fmt.Errorf("netns: relay on %s: %w", h.Name, err)
		}
		r.track(pc)
		go r.serveUDP(pc, net.JoinHostPort(target, fmt.Sprint(p)))
	}
	nat := fmt.Sprintf(`table ip hilnat
delete table ip hilnat
table ip hilnat {
	chain out {
		type nat hook output priority -100; policy accept;
		meta mark 0x%x return
		%s
	}
}
`, relayMark, strings.Join(rules, "\n\t\t"))
	if err := h.nft(ctx, nat); err != nil {
		r.Close()
		return nil, err
	}
	h.relay = r
	return r, nil
}

// SetDelay sets the one-way delay.
func (r *Relay) SetDelay(d time.Duration) { r.delay.Store(int64(d)) }

// Bytes returns the bytes forwarded so far.
func (r *Relay) Bytes() int64 { return r.bytes.Load() }

// Close stops the relay (the redirect rules stay; call Shape or remove
// the namespace).
func (r *Relay) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.closed:
	default:
		close(r.closed)
	}
	for _, c := range r.closer {
		c.Close()
	}
	r.closer = nil
}

func (r *Relay) track(c io.Closer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closer = append(r.closer, c)
}

// dial connects to addr from the host's namespace with the relay's mark.
func (r *Relay) dial(network, addr string) (net.Conn, error) {
	var c net.Conn
	err := r.h.Do(func() (err error) {
		d := net.Dialer{Timeout: 10 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_MARK, relayMark)
			}); err != nil {
				return err
			}
			return serr
		}}
		c, err = d.Dial(network, addr)
		return err
	})
	return c, err
}

func (r *Relay) serveTCP(ln net.Listener, target string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			up, err := r.dial("tcp", target)
			if err != nil {
				c.Close()
				return
			}
			r.track(c)
			r.track(up)
			var wg sync.WaitGroup
			wg.Go(func() { r.pipe(up, c) })
			wg.Go(func() { r.pipe(c, up) })
			wg.Wait()
			c.Close()
			up.Close()
		}()
	}
}

type chunk struct {
	at time.Time
	b  []byte
}

// pipe copies src to dst, each chunk delivered the delay after it was read.
func (r *Relay) pipe(dst, src net.Conn) {
	ch := make(chan chunk, 4096)
	go func() {
		defer close(ch)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				ch <- chunk{time.Now().Add(time.Duration(r.delay.Load())), buf[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range ch {
		if d := time.Until(c.at); d > 0 {
			select {
			case <-time.After(d):
			case <-r.closed:
				return
			}
		}
		if _, err := dst.Write(c.b); err != nil {
			src.Close()
			for range ch {
			}
			return
		}
		r.bytes.Add(int64(len(c.b)))
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

func (r *Relay) serveUDP(pc net.PacketConn, target string) {
	var mu sync.Mutex
	peers := map[string]net.Conn{}
	buf := make([]byte, 64<<10)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		mu.Lock()
		up := peers[from.String()]
		if up == nil {
			if up, err = r.dial("udp", target); err != nil {
				mu.Unlock()
				continue
			}
			peers[from.String()] = up
			r.track(up)
			go func(up net.Conn, from net.Addr) {
				b := make([]byte, 64<<10)
				for {
					_ = up.SetReadDeadline(time.Now().Add(5 * time.Minute))
					k, err := up.Read(b)
					if err != nil {
						mu.Lock()
						delete(peers, from.String())
						mu.Unlock()
						up.Close()
						return
					}
					p := append([]byte(nil), b[:k]...)
					time.AfterFunc(time.Duration(r.delay.Load()), func() {
						if _, err := pc.WriteTo(p, from); err == nil {
							r.bytes.Add(int64(len(p)))
						}
					})
				}
			}(up, from)
		}
		mu.Unlock()
		p := append([]byte(nil), buf[:n]...)
		time.AfterFunc(time.Duration(r.delay.Load()), func() {
			if _, err := up.Write(p); err == nil {
				r.bytes.Add(int64(len(p)))
			}
		})
	}
}

// Forward listens on a loopback port of the caller's namespace and
// forwards every connection to target inside namespace ns: how the
// runner reaches the hub's API without an address outside the suite's
// namespaces.
func Forward(ns, target string) (string, io.Closer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var up net.Conn
				if err := Do(ns, func() (err error) { up, err = net.DialTimeout("tcp", target, 10*time.Second); return }); err != nil {
					return
				}
				defer up.Close()
				go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite() }()
				io.Copy(c, up)
			}()
		}
	}()
	return ln.Addr().String(), ln, nil
}
