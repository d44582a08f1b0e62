package wire

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func validSnapshot(seq uint64) Snapshot {
	return Snapshot{Seq: seq, Time: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), IntervalMs: 10000,
		Box: BoxStats{ProcessCPU: 0.01, SystemCPU: 0.2, RSSBytes: 20 << 20, DiskFreeBytes: 1 << 30},
		Models: []ModelStats{{Model: "digits", Version: "3", Provider: "cpu", Requests: 5, Errors: 1,
			Latency: Histogram{Count: 5, Sum: 0.01, Buckets: []Bucket{{Le: 0.001, N: 0}, {Le: 0.0025, N: 5}}}}}}
}

func TestTelemetryReportValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(r *TelemetryReport)
		ok     bool
	}{
		{"valid", func(r *TelemetryReport) {}, true},
		{"empty snapshots", func(r *TelemetryReport) { r.Snapshots = nil }, true},
		{"bad device", func(r *TelemetryReport) { r.DeviceID = "a/b" }, false},
		{"no stream", func(r *TelemetryReport) { r.Stream = "" }, false},
		{"stream with slash", func(r *TelemetryReport) { r.Stream = "a/b" }, false},
		{"seq not increasing", func(r *TelemetryReport) { r.Snapshots[1].Seq = 1 }, false},
		{"seq zero", func(r *TelemetryReport) { r.Snapshots = r.Snapshots[:1]; r.Snapshots[0].Seq = 0 }, false},
		{"no time", func(r *TelemetryReport) { r.Snapshots[0].Time = time.Time{} }, false},
		{"negative interval", func(r *TelemetryReport) { r.Snapshots[0].IntervalMs = -1 }, false},
		{"NaN CPU", func(r *TelemetryReport) { r.Snapshots[0].Box.SystemCPU = math.NaN() }, false},
		{"bad model name", func(r *TelemetryReport) { r.Snapshots[0].Models[0].Model = "a b" }, false},
		{"version with newline", func(r *TelemetryReport) { r.Snapshots[0].Models[0].Version = "1\n" }, false},
		{"histogram count mismatch", func(r *TelemetryReport) { r.Snapshots[0].Models[0].Latency.Count = 4 }, false},
		{"histogram bounds not increasing", func(r *TelemetryReport) {
			r.Snapshots[0].Models[0].Latency.Buckets = []Bucket{{Le: 0.002, N: 2}, {Le: 0.001, N: 3}}
		}, false},
		{"infinite bound", func(r *TelemetryReport) {
			r.Snapshots[0].Models[0].Latency.Buckets = []Bucket{{Le: math.Inf(1), N: 5}}
		}, false},
		{"too many models", func(r *TelemetryReport) {
			m := r.Snapshots[0].Models[0]
			r.Snapshots[0].Models = make([]ModelStats, MaxSnapshotModels+1)
			for i := range r.Snapshots[0].Models {
				r.Snapshots[0].Models[i] = m
			}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := TelemetryReport{DeviceID: "edge-1", Stream: "s1-abc", Snapshots: []Snapshot{validSnapshot(1), validSnapshot(2)}}
			tt.mutate(&r)
			err := r.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
		})
	}
}

func TestTelemetryRoundTrip(t *testing.T) {
	in := TelemetryReport{DeviceID: "edge-1", Stream: "s1", Snapshots: []Snapshot{validSnapshot(7)}, Dropped: 3}
	b, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	var out TelemetryReport
	if err := Decode(b, &out); err != nil {
		t.Fatal(err)
	}
	if err := out.Validate(); err != nil {
		t.Fatal(err)
	}
	m := out.Snapshots[0].Models[0]
	if out.Dropped != 3 || out.Snapshots[0].Seq != 7 || m.Latency.Buckets[1] != (Bucket{Le: 0.0025, N: 5}) || m.Provider != "cpu" {
		t.Fatalf("round trip lost data: %+v", out)
	}
	ab, _ := Encode(TelemetryReportAck{Stream: "s1", Seq: 9})
	var ack TelemetryReportAck
	if err := Decode(ab, &ack); err != nil || ack.Seq != 9 || ack.Stream != "s1" {
		t.Fatalf("TelemetryReportAck round trip: %+v %v", ack, err)
	}
	if strings.Contains(string(ab), "error") {
		t.Fatalf("empty error encoded: %s", ab)
	}
}

func TestHistogramAddQuantile(t *testing.T) {
	a := Histogram{Count: 10, Sum: 1, Buckets: []Bucket{{Le: 0.1, N: 10}}}
	b := Histogram{Count: 10, Sum: 3, Buckets: []Bucket{{Le: 0.1, N: 0}, {Le: 0.2, N: 5}, {Le: 0.4, N: 5}}}
	var h Histogram
	h.Add(a)
	h.Add(b)
	want := []Bucket{{Le: 0.1, N: 10}, {Le: 0.2, N: 5}, {Le: 0.4, N: 5}}
	if h.Count != 20 || h.Sum != 4 || len(h.Buckets) != 3 {
		t.Fatalf("merged %+v", h)
	}
	for i := range want {
		if h.Buckets[i] != want[i] {
			t.Fatalf("bucket %d = %+v, want %+v", i, h.Buckets[i], want[i])
		}
	}
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	// Adding to h must not change a or b (no shared buckets written).
	h.Add(Histogram{Count: 1, Buckets: []Bucket{{Le: 0.1, N: 1}}})
	if a.Buckets[0].N != 10 || b.Buckets[0].N != 0 {
		t.Fatalf("Add wrote into its argument: %+v %+v", a, b)
	}
	// h: 11 observations in (0, 0.1], 5 in (0.1, 0.2], 5 in (0.2, 0.4].
	tests := []struct {
		q, want float64
	}{
		{0.25, 0.1 * (0.25 * 21 / 11)},
		{0.5, 0.1 * (0.5 * 21 / 11)},
		{0.6, 0.1 + 0.1*(0.6*21-11)/5},
		{0.99, 0.2 + 0.2*(0.99*21-16)/5},
		{1, 0.4},
	}
	for _, tt := range tests {
		if got := h.Quantile(tt.q); math.Abs(got-tt.want) > 1e-12 {
			t.Errorf("Quantile(%v) = %v, want %v", tt.q, got, tt.want)
		}
	}
	if (&Histogram{}).Quantile(0.99) != 0 || (&Histogram{}).Mean() != 0 {
		t.Fatal("empty histogram quantile or mean not 0")
	}
	// Observations above the largest bound count as that bound.
	over := Histogram{Count: 2, Buckets: []Bucket{{Le: 1, N: 1}}, Inf: 1}
	if got := over.Quantile(0.99); got != 1 {
		t.Fatalf("quantile in +Inf = %v, want the largest bound", got)
	}
}
