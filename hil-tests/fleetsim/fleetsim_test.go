package fleetsim_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/hil-tests/fleetsim"
	"github.com/edgefleet/edgefleet/hub"
	"github.com/edgefleet/edgefleet/hub/enroll"
	"github.com/edgefleet/edgefleet/ota/wire"
)

func startHub(t *testing.T) *hub.Hub {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h, err := hub.New(ctx, hub.Options{DataDir: t.TempDir(), APIAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0", RegistryAddr: hub.Off})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return h
}

func TestEnrollRefusedToken(t *testing.T) {
	h := startHub(t)
	tok, _, err := h.CreateToken(context.Background(), enroll.TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// One token for two devices: the second enrollment is refused.
	f, err := fleetsim.New(fleetsim.Options{HubURL: h.APIURL(), Count: 2, Concurrency: 1,
		Token: func(context.Context, string) (string, error) { return tok, nil }})
	if err != nil {
		t.Fatal(err)
	}
	err = f.Enroll(context.Background())
	if err == nil || !strings.Contains(err.Error(), "sim-00001") || !strings.Contains(err.Error(), "401") {
		t.Fatalf("Enroll with a used token: %v, want HTTP 401 for sim-00001", err)
	}
	if err := f.Start(context.Background()); err == nil {
		t.Fatal("Start with a device not enrolled succeeded")
	}
}

func TestDesiredStateAppliedOnceAndReported(t *testing.T) {
	h := startHub(t)
	ctx := context.Background()
	applied := make(chan string, 10)
	f, err := fleetsim.New(fleetsim.Options{HubURL: h.APIURL(), Count: 1, HeartbeatInterval: time.Second,
		Token: func(ctx context.Context, id string) (string, error) {
			tok, _, err := h.CreateToken(ctx, enroll.TokenOptions{DeviceID: id})
			return tok, err
		},
		Behavior: func(d *fleetsim.Device, name string, want wire.DesiredModel, cur wire.ReportedModel) (wire.ReportedModel, error) {
			applied <- want.Version
			if want.Version == "bad" {
				return cur, errors.New("golden vector mismatch")
			}
			return fleetsim.Activate(d, name, want, cur)
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Enroll(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Connected() != 1 {
		t.Fatalf("connected %d", f.Connected())
	}
	d := f.Devices()[0]
	tests := []struct {
		version      string
		wantApplied  int64
		wantFailed   int64
		wantActive   string
		wantBehavior bool
	}{
		{"1", 1, 0, "1", true},
		{"1", 1, 0, "1", false}, // same models: no new revision, nothing applied
		{"bad", 1, 2, "1", true},
		{"2", 3, 2, "2", true},
	}
	for _, tt := range tests {
		if _, err := h.SetDesired(ctx, d.ID, map[string]wire.DesiredModel{"m": {Ref: "r/m:" + tt.version, Version: tt.version}}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			dev, err := h.Registry().Get(ctx, d.ID)
			if err == nil && dev.AppliedRevision == tt.wantApplied && dev.FailedRevision == tt.wantFailed &&
				dev.Models["m"].ActiveVersion == tt.wantActive {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("version %s: hub sees %+v, want applied %d failed %d active %s", tt.version, dev, tt.wantApplied, tt.wantFailed, tt.wantActive)
			}
			time.Sleep(10 * time.Millisecond)
		}
		select {
		case v := <-applied:
			if !tt.wantBehavior || v != tt.version {
				t.Fatalf("version %s: behavior called for %q", tt.version, v)
			}
		default:
			if tt.wantBehavior {
				t.Fatalf("version %s: behavior not called", tt.version)
			}
		}
	}
	// Offline: the hub sees the last will; back online, the device reports again.
	d.GoOffline()
	waitOnline(t, h, d.ID, false)
	d.GoOnline()
	waitOnline(t, h, d.ID, true)
	if d.Connects() != 2 {
		t.Fatalf("connects %d, want 2", d.Connects())
	}
}

func waitOnline(t *testing.T, h *hub.Hub, id string, want bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		dev, err := h.Registry().Get(context.Background(), id)
		if err == nil && dev.Online == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("device online=%v, want %v", dev.Online, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
