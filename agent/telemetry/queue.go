package telemetry

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/ota/wire"

	"github.com/edgefleet/edgefleet/ota/durable"
)

// DefaultBudget bounds the queue's snapshots on disk: a week of 10-second
// snapshots of a few model versions fits.
const DefaultBudget = 64 << 20

// entryOverhead is what the queue charges per snapshot beyond its bytes:
// the key and bbolt's per-element header.
const entryOverhead = 8 + 16

var (
	bucketMeta  = []byte("meta")
	bucketQueue = []byte("queue")

	keyStream  = []byte("stream")
	keyNext    = []byte("next")
	keyBytes   = []byte("bytes")
	keyCount   = []byte("count")
	keyDropped = []byte("dropped")
	keyAcked   = []byte("acked")
)

// ErrTooLarge is returned for a snapshot larger than wire.MaxSnapshotBytes
// or the queue's whole budget.
var ErrTooLarge = errors.New("telemetry snapshot too large")

// Queue is the durable store-and-forward queue of snapshots, kept in its
// own bbolt file. Every change is one transaction, so a crash at any point
// leaves either the state before or after it. It is safe for concurrent
// use.
//
// Schema:
//
//	meta/stream   random stream id, made when the file is created
//	meta/next     next sequence number (uint64, big endian)
//	meta/bytes    bytes charged for the queued snapshots
//	meta/count    queued snapshots
//	meta/dropped  snapshots discarded unsent since the stream began
//	meta/acked    highest sequence number the hub acknowledged
//	queue/<seq>   JSON wire.Snapshot, seq as 8 bytes big endian
type Queue struct {
	db     *bolt.DB
	budget int64

	mu sync.Mutex // guards st (a copy of meta, kept in step after each commit)
	st QueueStats
}

// QueueStats describes a queue.
type QueueStats struct {
	// Stream is the queue's stream id.
	Stream string
	// Next is the sequence number the next snapshot gets.
	Next uint64
	// Snapshots and Bytes are what is queued; Bytes counts encoded
	// snapshots plus a fixed per-entry overhead and never exceeds
	// Budget.
	Snapshots int
	Bytes     int64
	Budget    int64
	// Dropped counts snapshots discarded unsent since the stream began.
	Dropped uint64
	// Acked is the highest sequence number the hub acknowledged.
	Acked uint64
}

// Batch is the oldest part of the queue, ready to ship.
type Batch struct {
	Stream string
	// First and Last are the sequence numbers of the first and the last
	// snapshot.
	First, Last uint64
	// Snapshots are the encoded snapshots (JSON), in order.
	Snapshots []json.RawMessage
	// Bytes is the sum of the encoded snapshots' lengths.
	Bytes int
	// Dropped is QueueStats.Dropped when the batch was taken.
	Dropped uint64
}

// Len is the number of snapshots in the batch.
func (b Batch) Len() int { return len(b.Snapshots) }

// OpenQueue opens or creates the queue file at path with a byte budget
// (DefaultBudget when budget <= 0).
func OpenQueue(path string, budget int64) (*Queue, error) {
	if budget <= 0 {
		budget = DefaultBudget
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, FreelistType: bolt.FreelistMapType})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("telemetry: %s is in use by another agent", path)
		}
		return nil, fmt.Errorf("telemetry: open queue: %w", err)
	}
	// bbolt syncs the file but not its name in the folder.
	if err := durable.SyncParent(path); err != nil {
		db.Close()
		return nil, fmt.Errorf("telemetry: open queue: %w", err)
	}
	q := &Queue{db: db, budget: budget}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketQueue); err != nil {
			return err
		}
		if meta.Get(keyStream) == nil {
			if err := meta.Put(keyStream, []byte(newStreamID())); err != nil {
				return err
			}
			if err := putUint(meta, keyNext, 1); err != nil {
				return err
			}
		}
		q.st = readMeta(meta)
		q.st.Budget = budget
		// A smaller budget than last time applies at once.
		return q.trimLocked(tx, &q.st, 0)
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("telemetry: open queue: %w", err)
	}
	return q, nil
}

// newStreamID returns 16 random hex digits with the creation time, so that
// streams sort roughly by age when someone reads them.
func newStreamID() string {
	var b [8]byte
	rand.Read(b[:])
	return strconv.FormatInt(time.Now().Unix(), 36) + "-" + hex.EncodeToString(b[:])
}

func readMeta(meta *bolt.Bucket) QueueStats {
	return QueueStats{
		Stream:    string(meta.Get(keyStream)),
		Next:      getUint(meta, keyNext),
		Bytes:     int64(getUint(meta, keyBytes)),
		Snapshots: int(getUint(meta, keyCount)),
		Dropped:   getUint(meta, keyDropped),
		Acked:     getUint(meta, keyAcked),
	}
}

func writeMeta(meta *bolt.Bucket, st *QueueStats) error {
	for _, kv := range []struct {
		k []byte
		v uint64
	}{{keyNext, st.Next}, {keyBytes, uint64(st.Bytes)}, {keyCount, uint64(st.Snapshots)}, {keyDropped, st.Dropped}, {keyAcked, st.Acked}} {
		if err := putUint(meta, kv.k, kv.v); err != nil {
			return err
		}
	}
	return nil
}

func getUint(b *bolt.Bucket, k []byte) uint64 {
	v := b.Get(k)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func putUint(b *bolt.Bucket, k []byte, v uint64) error {
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], v)
	return b.Put(k, buf[:])
}

func seqKey(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

// trimLocked drops the oldest snapshots until need more bytes fit in the
// budget.
func (q *Queue) trimLocked(tx *bolt.Tx, st *QueueStats, need int64) error {
	if st.Bytes+need <= q.budget {
		return nil
	}
	c := tx.Bucket(bucketQueue).Cursor()
	for k, v := c.First(); k != nil && st.Bytes+need > q.budget; k, v = c.First() {
		st.Bytes -= int64(len(v)) + entryOverhead
		st.Snapshots--
		st.Dropped++
		if err := c.Delete(); err != nil {
			return err
		}
	}
	if st.Snapshots == 0 {
		st.Bytes = 0
	}
	return writeMeta(tx.Bucket(bucketMeta), st)
}

// Append numbers the snapshots (setting their Seq), validates, encodes and
// queues them in one transaction, discarding the oldest queued snapshots
// when the budget requires it. It returns the sequence numbers given. A
// snapshot that fails validation or is too large fails the whole call and
// nothing is queued.
func (q *Queue) Append(snaps ...wire.Snapshot) ([]uint64, error) {
	if len(snaps) == 0 {
		return nil, nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	st := q.st
	seqs := make([]uint64, len(snaps))
	enc := make([][]byte, len(snaps))
	for i := range snaps {
		s := snaps[i]
		s.Seq = st.Next + uint64(i)
		if err := s.Validate(); err != nil {
			return nil, fmt.Errorf("telemetry: snapshot: %w", err)
		}
		b, err := json.Marshal(&s)
		if err != nil {
			return nil, fmt.Errorf("telemetry: encode snapshot: %w", err)
		}
		if len(b) > wire.MaxSnapshotBytes || int64(len(b))+entryOverhead > q.budget {
			return nil, fmt.Errorf("telemetry: %w: %d bytes (limit %d, budget %d)", ErrTooLarge, len(b), wire.MaxSnapshotBytes, q.budget)
		}
		seqs[i], enc[i] = s.Seq, b
	}
	err := q.db.Update(func(tx *bolt.Tx) error {
		qb := tx.Bucket(bucketQueue)
		for i, b := range enc {
			need := int64(len(b)) + entryOverhead
			if err := q.trimLocked(tx, &st, need); err != nil {
				return err
			}
			if err := qb.Put(seqKey(seqs[i]), b); err != nil {
				return err
			}
			st.Bytes += need
			st.Snapshots++
			st.Next = seqs[i] + 1
		}
		return writeMeta(tx.Bucket(bucketMeta), &st)
	})
	if err != nil {
		return nil, fmt.Errorf("telemetry: append: %w", err)
	}
	q.st = st
	return seqs, nil
}

// Peek returns the oldest queued snapshots, at most maxCount of them and
// at most maxBytes encoded bytes (but at least one). The batch is empty
// when the queue is.
func (q *Queue) Peek(maxCount, maxBytes int) (Batch, error) {
	q.mu.Lock()
	b := Batch{Stream: q.st.Stream, Dropped: q.st.Dropped}
	q.mu.Unlock()
	err := q.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketQueue).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(b.Snapshots) >= maxCount || (len(b.Snapshots) > 0 && b.Bytes+len(v) > maxBytes) {
				break
			}
			seq := binary.BigEndian.Uint64(k)
			if b.First == 0 {
				b.First = seq
			}
			b.Last = seq
			b.Snapshots = append(b.Snapshots, append(json.RawMessage(nil), v...))
			b.Bytes += len(v)
		}
		return nil
	})
	if err != nil {
		return Batch{}, fmt.Errorf("telemetry: read queue: %w", err)
	}
	return b, nil
}

// Ack deletes every snapshot of the stream up to and including seq, as
// the hub acknowledged them. Acks of another stream are ignored. It
// returns how many snapshots were deleted.
func (q *Queue) Ack(stream string, seq uint64) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	st := q.st
	if stream != st.Stream || seq <= st.Acked && st.Snapshots == 0 {
		return 0, nil
	}
	n := 0
	err := q.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketQueue).Cursor()
		for k, v := c.First(); k != nil && binary.BigEndian.Uint64(k) <= seq; k, v = c.First() {
			st.Bytes -= int64(len(v)) + entryOverhead
			st.Snapshots--
			n++
			if err := c.Delete(); err != nil {
				return err
			}
		}
		if st.Snapshots == 0 {
			st.Bytes = 0
		}
		st.Acked = max(st.Acked, seq)
		return writeMeta(tx.Bucket(bucketMeta), &st)
	})
	if err != nil {
		return 0, fmt.Errorf("telemetry: ack: %w", err)
	}
	q.st = st
	return n, nil
}

// Stats returns the queue's counters.
func (q *Queue) Stats() QueueStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.st
}

// Path is the queue file.
func (q *Queue) Path() string { return q.db.Path() }

// Close closes the file.
func (q *Queue) Close() error { return q.db.Close() }
