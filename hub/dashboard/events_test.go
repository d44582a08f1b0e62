package dashboard

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
)

func TestBrokerCoalesces(t *testing.T) {
	type payload struct {
		Devices   []string `json:"devices"`
		Telemetry []string `json:"telemetry"`
		All       bool     `json:"all"`
		Rollouts  bool     `json:"rollouts"`
	}
	many := func(c *change) {
		for i := range maxIDs + 1 {
			c.addDevice(fmt.Sprintf("d%03d", i))
		}
	}
	tests := []struct {
		name  string
		marks []func(*change)
		want  *payload // nil: no event
	}{
		{"nothing", nil, nil},
		{
			"duplicates merge, ids sorted",
			[]func(*change){
				func(c *change) { c.addDevice("b") }, func(c *change) { c.addDevice("a") },
				func(c *change) { c.addDevice("b") }, func(c *change) { c.addTelemetry("a") },
			},
			&payload{Devices: []string{"a", "b"}, Telemetry: []string{"a"}},
		},
		{"rollouts", []func(*change){func(c *change) { c.Rollouts = true }}, &payload{Rollouts: true}},
		{"many devices become all", []func(*change){many, func(c *change) { c.addTelemetry("x") }}, &payload{All: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBroker()
			ch, ok := b.subscribe()
			if !ok {
				t.Fatal("subscribe refused")
			}
			for _, m := range tt.marks {
				b.mark(m)
			}
			b.flush()
			select {
			case data := <-ch:
				if tt.want == nil {
					t.Fatalf("unexpected event %s", data)
				}
				var got payload
				if err := json.Unmarshal(data, &got); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, *tt.want) {
					t.Errorf("event %s, want %+v", data, *tt.want)
				}
			default:
				if tt.want != nil {
					t.Fatal("no event")
				}
			}
			// The pending change was reset.
			b.flush()
			select {
			case data := <-ch:
				t.Fatalf("second flush sent %s", data)
			default:
			}
		})
	}
}

func TestBrokerWithoutSubscribersAndClosed(t *testing.T) {
	b := newBroker()
	b.mark(func(c *change) { c.addDevice("a") })
	ch, _ := b.subscribe()
	b.flush()
	select {
	case data := <-ch:
		t.Fatalf("a change marked before anyone listened was sent: %s", data)
	default:
	}
	// A slow stream misses events rather than blocking the others.
	b.mark(func(c *change) { c.addDevice("a") })
	b.flush()
	b.mark(func(c *change) { c.addDevice("b") })
	b.flush()
	if n := len(ch); n != 1 {
		t.Fatalf("%d events queued for a stream that did not read, want 1", n)
	}
	b.close()
	if _, ok := <-ch; !ok {
		t.Fatal("queued event lost at close")
	}
	if _, ok := <-ch; ok {
		t.Fatal("stream not closed")
	}
	if _, ok := b.subscribe(); ok {
		t.Fatal("subscribed to a closed broker")
	}
	if b.clients() != 0 {
		t.Fatal("clients after close")
	}
}

func TestHostAllowed(t *testing.T) {
	s, err := New(Config{Registry: nilRegistry{}, Hosts: []string{"hub.example.org"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		host string
		want bool
	}{
		{"127.0.0.1:7080", true},
		{"[::1]:7080", true},
		{"10.1.2.3", true},
		{"localhost:7080", true},
		{"LOCALHOST.", true},
		{"hub.example.org:7080", true},
		{"evil.example:7080", false},
		{"127.0.0.1.evil.example", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := s.hostAllowed(tt.host); got != tt.want {
			t.Errorf("hostAllowed(%q) = %v, want %v", tt.host, got, tt.want)
		}
	}
}

func TestVersionLess(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"2", "10", true},
		{"10", "2", false},
		{"1.5", "1.10", true},
		{"1.10", "1.5", false},
		{"1", "1.1", true},
		{"beta", "gamma", true},
		{"2", "2", false},
	}
	for _, tt := range tests {
		if got := versionLess(tt.a, tt.b); got != tt.want {
			t.Errorf("versionLess(%q, %q) = %v", tt.a, tt.b, got)
		}
	}
}

// nilRegistry satisfies Registry for tests that never read it.
type nilRegistry struct{ Registry }
