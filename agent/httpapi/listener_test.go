package httpapi

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func startListener(t *testing.T, h http.Handler) (*Listener, string, chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(h, ListenerOptions{})
	done := make(chan error, 1)
	go func() { done <- l.Serve(ln) }()
	return l, "http://" + ln.Addr().String(), done
}

// TestListenerShutdownClosesIdleConnections: keep-alive connections that
// sit idle must not hold up a graceful shutdown.
func TestListenerShutdownClosesIdleConnections(t *testing.T) {
	l, base, done := startListener(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for range 50 {
				resp, err := c.Get(base + "/")
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Shutdown(ctx); err != nil {
		l.mu.Lock()
		for c, i := range l.conns {
			t.Logf("open %v: %v since %v", c.RemoteAddr(), i.state, time.Since(i.since))
		}
		l.mu.Unlock()
		t.Fatalf("Shutdown with idle keep-alive connections: %v", err)
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve returned %v, want http.ErrServerClosed", err)
	}
}

// TestListenerAdaptsHandler: the handler sees the request as net/http
// would give it, and its status, headers and body reach the client.
func TestListenerAdaptsHandler(t *testing.T) {
	l, base, _ := startListener(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Method", r.Method)
		w.Header().Set("X-Path", r.URL.Path)
		w.Header().Set("X-Query", r.URL.Query().Get("q"))
		w.Header().Set("X-Header", r.Header.Get("X-Test"))
		w.WriteHeader(http.StatusTeapot)
		_, _ = w.Write(append([]byte("got:"), b...))
	}))
	defer l.Close()
	req, _ := http.NewRequest(http.MethodPost, base+"/v2/models/a%2Fb/infer?q=1", strings.NewReader("body"))
	req.Header.Set("X-Test", "yes")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTeapot || string(b) != "got:body" ||
		resp.Header.Get("X-Method") != "POST" || resp.Header.Get("X-Path") != "/v2/models/a/b/infer" ||
		resp.Header.Get("X-Query") != "1" || resp.Header.Get("X-Header") != "yes" {
		t.Fatalf("status %d body %q headers %v", resp.StatusCode, b, resp.Header)
	}
}
