package telemetry

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/ota/wire"
)

// snap is a small valid snapshot whose RSS carries a marker.
func snap(marker uint64) wire.Snapshot {
	return wire.Snapshot{Time: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(marker) * time.Second),
		IntervalMs: 1000, Box: wire.BoxStats{RSSBytes: marker, Cores: 2}}
}

func openQueue(t *testing.T, dir string, budget int64) *Queue {
	t.Helper()
	q, err := OpenQueue(filepath.Join(dir, QueueFile), budget)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func decodeBatch(t *testing.T, b Batch) []wire.Snapshot {
	t.Helper()
	out := make([]wire.Snapshot, len(b.Snapshots))
	for i, raw := range b.Snapshots {
		if err := json.Unmarshal(raw, &out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestQueueAppendPeekAck(t *testing.T) {
	q := openQueue(t, t.TempDir(), 0)
	for i := uint64(1); i <= 5; i++ {
		seqs, err := q.Append(snap(i))
		if err != nil || len(seqs) != 1 || seqs[0] != i {
			t.Fatalf("Append #%d = %v, %v", i, seqs, err)
		}
	}
	b, err := q.Peek(3, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	got := decodeBatch(t, b)
	if b.First != 1 || b.Last != 3 || len(got) != 3 || got[2].Seq != 3 || got[2].Box.RSSBytes != 3 {
		t.Fatalf("Peek(3) = %d..%d %+v", b.First, b.Last, got)
	}
	// Peeking does not remove.
	if again, _ := q.Peek(10, 1<<20); again.First != 1 || again.Len() != 5 {
		t.Fatalf("second Peek = %d..%d (%d)", again.First, again.Last, again.Len())
	}
	// Acks of another stream are ignored.
	if n, err := q.Ack("other-stream", 5); err != nil || n != 0 {
		t.Fatalf("Ack(other) = %d, %v", n, err)
	}
	st := q.Stats()
	if n, err := q.Ack(st.Stream, 3); err != nil || n != 3 {
		t.Fatalf("Ack(3) = %d, %v", n, err)
	}
	b, _ = q.Peek(10, 1<<20)
	if b.First != 4 || b.Last != 5 {
		t.Fatalf("after Ack(3): %d..%d", b.First, b.Last)
	}
	st = q.Stats()
	if st.Snapshots != 2 || st.Acked != 3 || st.Next != 6 || st.Bytes <= 0 {
		t.Fatalf("stats %+v", st)
	}
	// A repeated (stale) ack deletes nothing.
	if n, _ := q.Ack(st.Stream, 2); n != 0 {
		t.Fatalf("stale ack deleted %d", n)
	}
	if n, _ := q.Ack(st.Stream, 5); n != 2 || q.Stats().Bytes != 0 || q.Stats().Snapshots != 0 {
		t.Fatalf("Ack(5) = %d, stats %+v", n, q.Stats())
	}
	if b, _ := q.Peek(10, 1<<20); b.Len() != 0 {
		t.Fatalf("empty queue peeked %d", b.Len())
	}
}

func TestQueuePeekByteLimit(t *testing.T) {
	q := openQueue(t, t.TempDir(), 0)
	for i := uint64(1); i <= 10; i++ {
		if _, err := q.Append(snap(i)); err != nil {
			t.Fatal(err)
		}
	}
	one, _ := q.Peek(1, 1<<20)
	size := one.Bytes
	b, _ := q.Peek(100, 3*size+size/2)
	if b.Len() != 3 {
		t.Fatalf("Peek within %d bytes took %d snapshots of ~%d bytes", 3*size+size/2, b.Len(), size)
	}
	// At least one, even when it alone exceeds the limit.
	if b, _ := q.Peek(100, 1); b.Len() != 1 {
		t.Fatalf("Peek with a tiny limit took %d", b.Len())
	}
}

func TestQueuePersistsAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	q, err := OpenQueue(filepath.Join(dir, QueueFile), 0)
	if err != nil {
		t.Fatal(err)
	}
	q.Append(snap(1), snap(2), snap(3))
	stream := q.Stats().Stream
	q.Ack(stream, 1)
	q.Close()

	q = openQueue(t, dir, 0)
	st := q.Stats()
	if st.Stream != stream || st.Next != 4 || st.Snapshots != 2 || st.Acked != 1 {
		t.Fatalf("reopened stats %+v (stream was %s)", st, stream)
	}
	seqs, _ := q.Append(snap(4))
	if seqs[0] != 4 {
		t.Fatalf("sequence restarted: %v", seqs)
	}
	// A new file is a new stream starting at 1.
	q2 := openQueue(t, t.TempDir(), 0)
	if s := q2.Stats(); s.Stream == stream || s.Next != 1 || !strings.Contains(s.Stream, "-") {
		t.Fatalf("new queue %+v", s)
	}
}

func TestQueueBudgetDropsOldest(t *testing.T) {
	dir := t.TempDir()
	sized := snap(100)
	sized.Seq = 10 // the kept snapshots have two-digit sequence numbers
	one, _ := json.Marshal(sized)
	per := int64(len(one)) + entryOverhead
	budget := 10 * per
	q := openQueue(t, dir, budget)
	const n = 35
	for i := uint64(100); i < 100+n; i++ {
		if _, err := q.Append(snap(i)); err != nil {
			t.Fatal(err)
		}
		if st := q.Stats(); st.Bytes > budget {
			t.Fatalf("after %d appends %d bytes queued, budget %d", i-99, st.Bytes, budget)
		}
	}
	st := q.Stats()
	if st.Snapshots != 10 || st.Dropped != n-10 {
		t.Fatalf("stats %+v, want 10 queued and %d dropped", st, n-10)
	}
	b, _ := q.Peek(100, 1<<20)
	got := decodeBatch(t, b)
	if got[0].Seq != n-9 || got[len(got)-1].Seq != n || b.Dropped != n-10 {
		t.Fatalf("kept %d..%d (dropped %d), want the newest 10", got[0].Seq, got[len(got)-1].Seq, b.Dropped)
	}
	// A batch append larger than the budget keeps its newest part.
	many := make([]wire.Snapshot, 15)
	for i := range many {
		many[i] = snap(uint64(200 + i))
	}
	if _, err := q.Append(many...); err != nil {
		t.Fatal(err)
	}
	if st := q.Stats(); st.Snapshots != 10 || st.Dropped != n-10+15 || st.Bytes > budget {
		t.Fatalf("after a 15-snapshot append: %+v", st)
	}
	// Reopening with a smaller budget trims at once.
	q.Close()
	q = openQueue(t, dir, 4*per)
	if st := q.Stats(); st.Snapshots != 4 || st.Dropped != n-10+15+6 || st.Bytes > 4*per {
		t.Fatalf("reopened with a smaller budget: %+v", st)
	}
	fi, err := os.Stat(filepath.Join(dir, QueueFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > 1<<20 {
		t.Fatalf("queue file %d bytes for a %d-byte budget", fi.Size(), budget)
	}
}

func TestQueueRejects(t *testing.T) {
	q := openQueue(t, t.TempDir(), 4096)
	bad := snap(1)
	bad.Time = time.Time{}
	big := snap(2)
	big.Models = []wire.ModelStats{{Model: "m", Version: strings.Repeat("v", 100), Provider: "cpu"}}
	for i := 0; i < 60; i++ {
		big.Models = append(big.Models, big.Models[0])
	}
	tests := []struct {
		name  string
		snaps []wire.Snapshot
		isErr error
	}{
		{"invalid snapshot", []wire.Snapshot{snap(1), bad}, wire.ErrInvalid},
		{"larger than the budget", []wire.Snapshot{big}, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := q.Stats()
			_, err := q.Append(tt.snaps...)
			if !errors.Is(err, tt.isErr) {
				t.Fatalf("Append = %v, want %v", err, tt.isErr)
			}
			if after := q.Stats(); after != before {
				t.Fatalf("a refused append changed the queue: %+v → %+v", before, after)
			}
		})
	}
}
