package batching

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgefleet/edgefleet/agent/tensor"
)

// Request is one caller's inputs and requested outputs (empty: all).
type Request struct {
	Inputs  []tensor.Tensor
	Outputs []string
}

// RunFunc runs one (possibly merged) request on the model: typically a
// session run. outputs selects and orders the outputs; empty means all in
// model order. It must not retain inputs after it returns.
type RunFunc func(ctx context.Context, inputs []tensor.Tensor, outputs []string) ([]tensor.Tensor, error)

// Defaults for zero Options fields.
const (
	DefaultMaxBatchSize = 8
	DefaultMaxQueue     = 256
)

var (
	// ErrClosed is returned by Submit after Close.
	ErrClosed = errors.New("batcher is closed")
	// ErrQueueFull is returned by Submit at once when MaxQueue requests wait.
	ErrQueueFull = errors.New("batch queue is full")
	// ErrSplit is wrapped by the errors of every request in a batch whose
	// outputs could not be split back: an output's dimension 0 was not the
	// batch total, so the model is not batch-major.
	ErrSplit = errors.New("batched outputs cannot be split per request")
)

// Options configure a Batcher. Every field is optional.
type Options struct {
	// MaxBatchSize is the most rows (sum of dimension 0) a merged batch
	// holds. A single request with more rows still runs, alone. 0 means
	// DefaultMaxBatchSize.
	MaxBatchSize int
	// MaxQueueDelay is how long the oldest queued request may wait for more
	// requests to join its batch (microsecond granularity is honoured). 0
	// dispatches as soon as a worker is free: batches then form only from
	// requests that arrived while every worker was busy.
	MaxQueueDelay time.Duration
	// PreferredBatchSizes are batch sizes dispatched at once, without waiting
	// for MaxQueueDelay, when the queue can form one; the largest possible is
	// taken. Sizes above MaxBatchSize or below 1 are ignored.
	PreferredBatchSizes []int
	// MaxQueue bounds the requests waiting to be batched; when that many
	// wait, Submit fails at once with an error wrapping ErrQueueFull.
	// 0 or less means DefaultMaxQueue.
	MaxQueue int
	// Workers is how many batches may run at once (the model's instances).
	// 0 or less means 1.
	Workers int
	// Logger receives batch failures; nil discards them.
	Logger *slog.Logger
	// ObserveBatch, when set, is called with the number of rows of every
	// batch dispatched (a batch size histogram). It must be fast and safe for
	// concurrent use.
	ObserveBatch func(size int)
}

// Batcher is a dynamic batcher in front of one model version. It is safe for
// concurrent use; create it with New and stop it with Close.
type Batcher struct {
	run       RunFunc
	maxBatch  int64
	delay     time.Duration
	preferred []int64 // sorted, each in [1, maxBatch]
	maxQueue  int
	log       *slog.Logger
	observe   func(int)

	slots    chan struct{} // one token per running batch (capacity = Workers)
	wake     chan struct{} // capacity 1: the queue changed or Close was called
	loopDone chan struct{} // closed when the scheduler has exited
	running  sync.WaitGroup

	mu     sync.Mutex // guards queue and closed
	queue  []*call    // oldest first
	closed bool

	queued atomic.Int64 // len(queue), readable without mu
}

// call is one submitted request.
type call struct {
	ctx  context.Context
	req  *Request
	rows int64  // dimension 0 of every input; 0 when the request cannot be merged
	key  string // compatibility key; "" when the request cannot be merged
	at   time.Time
	done chan result // capacity 1, written once
}

type result struct {
	outs []tensor.Tensor
	err  error
}

// New starts a Batcher that runs batches with run.
func New(run RunFunc, opts Options) *Batcher {
	b := &Batcher{
		run:      run,
		maxBatch: int64(opts.MaxBatchSize),
		delay:    max(opts.MaxQueueDelay, 0),
		maxQueue: opts.MaxQueue,
		log:      opts.Logger,
		observe:  opts.ObserveBatch,
		wake:     make(chan struct{}, 1),
		loopDone: make(chan struct{}),
	}
	if b.maxBatch <= 0 {
		b.maxBatch = DefaultMaxBatchSize
	}
	if b.maxQueue <= 0 {
		b.maxQueue = DefaultMaxQueue
	}
	if b.log == nil {
		b.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	for _, p := range opts.PreferredBatchSizes {
		if p >= 1 && int64(p) <= b.maxBatch && !slices.Contains(b.preferred, int64(p)) {
			b.preferred = append(b.preferred, int64(p))
		}
	}
	slices.Sort(b.preferred)
	b.slots = make(chan struct{}, max(opts.Workers, 1))
	go b.loop()
	return b
}

// Len returns the number of requests waiting to be batched.
func (b *Batcher) Len() int { return int(b.queued.Load()) }

// Submit queues req, waits for its batch to run and returns req's outputs
// (requested outputs in order; all outputs when req.Outputs is empty). It
// fails at once with an error wrapping ErrQueueFull when the queue is
// full, and with ErrClosed after Close. When ctx ends first, Submit returns
// ctx's error at once; a request still queued then is never run.
func (b *Batcher) Submit(ctx context.Context, req *Request) ([]tensor.Tensor, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c := &call{ctx: ctx, req: req, at: time.Now(), done: make(chan result, 1)}
	c.rows, c.key = classify(req)

	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	if len(b.queue) >= b.maxQueue {
		b.mu.Unlock()
		return nil, fmt.Errorf("%w: %d requests waiting to be batched", ErrQueueFull, b.maxQueue)
	}
	b.queue = append(b.queue, c)
	b.queued.Store(int64(len(b.queue)))
	b.mu.Unlock()
	b.signal()

	select {
	case r := <-c.done:
		return r.outs, r.err
	case <-ctx.Done():
		b.mu.Lock()
		dropped := b.removeLocked(c)
		b.mu.Unlock()
		if dropped {
			return nil, fmt.Errorf("dropped while waiting to be batched: %w", ctx.Err())
		}
		// The batch is running; it completes for its other members. Its
		// inputs are copies, so the caller may reuse its buffers now.
		return nil, ctx.Err()
	}
}

// Close stops accepting requests, runs every queued request and waits for
// all batches to finish. It is safe to call more than once.
func (b *Batcher) Close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.signal()
	<-b.loopDone
}

func (b *Batcher) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// removeLocked removes c from the queue, reporting whether it was there.
func (b *Batcher) removeLocked(c *call) bool {
	i := slices.Index(b.queue, c)
	if i < 0 {
		return false
	}
	b.queue = slices.Delete(b.queue, i, i+1)
	b.queued.Store(int64(len(b.queue)))
	return true
}

// loop is the scheduler: it takes a worker slot, forms a batch and starts it.
func (b *Batcher) loop() {
	defer close(b.loopDone)
	for {
		b.slots <- struct{}{}
		// Let the goroutines woken by the batch that just finished (its
		// callers, about to submit again) queue before the next batch forms:
		// on a busy machine this turns a stream of one-row batches into full
		// ones even with no queue delay.
		goruntime.Gosched()
		batch, ok := b.next()
		if !ok {
			<-b.slots
			break
		}
		b.running.Add(1)
		go b.execute(batch)
	}
	b.running.Wait()
}

// next blocks until a batch is ready and takes it off the queue. It returns
// false once the Batcher is closed and the queue is empty.
func (b *Batcher) next() ([]*call, bool) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	b.mu.Lock()
	for {
		if len(b.queue) == 0 {
			if b.closed {
				b.mu.Unlock()
				return nil, false
			}
			b.mu.Unlock()
			<-b.wake
			b.mu.Lock()
			continue
		}
		batch, wait := b.formLocked(time.Now())
		if batch != nil {
			b.takeLocked(batch)
			b.mu.Unlock()
			return batch, true
		}
		if len(b.queue) == 0 { // only abandoned requests were left
			continue
		}
		b.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(wait)
		} else {
			timer.Reset(wait)
		}
		select {
		case <-b.wake:
		case <-timer.C:
		}
		b.mu.Lock()
	}
}

// formLocked picks the next batch from the queue, or returns how long to
// wait for it to grow. Requests whose context has ended are dropped.
func (b *Batcher) formLocked(now time.Time) ([]*call, time.Duration) {
	dead := false
	lead := -1
	for i, c := range b.queue {
		if c.ctx.Err() != nil {
			b.queue[i], dead = nil, true
			continue
		}
		lead = i
		break
	}
	if lead < 0 {
		b.compactLocked()
		return nil, 0
	}
	oldest := b.queue[lead]
	if oldest.key == "" || oldest.rows >= b.maxBatch {
		if dead {
			b.compactLocked()
		}
		return []*call{oldest}, 0
	}
	batch := []*call{oldest}
	total := oldest.rows
	best := 0 // len(batch) at the largest preferred size reached
	if slices.Contains(b.preferred, total) {
		best = 1
	}
	full := false
	for i := lead + 1; i < len(b.queue) && total < b.maxBatch; i++ {
		c := b.queue[i]
		if c.key != oldest.key {
			continue
		}
		if c.ctx.Err() != nil {
			b.queue[i], dead = nil, true
			continue
		}
		if total+c.rows > b.maxBatch {
			full = true // a compatible request no longer fits: waiting cannot help
			continue
		}
		batch = append(batch, c)
		total += c.rows
		if slices.Contains(b.preferred, total) {
			best = len(batch)
		}
	}
	if dead {
		b.compactLocked()
	}
	switch {
	case full || total >= b.maxBatch:
		return batch, 0
	case best > 0:
		return batch[:best], 0
	case b.closed || b.delay == 0:
		return batch, 0
	}
	if wait := oldest.at.Add(b.delay).Sub(now); wait > 0 {
		return nil, wait
	}
	return batch, 0
}

// compactLocked removes the nil entries left by dropped requests.
func (b *Batcher) compactLocked() {
	b.queue = slices.DeleteFunc(b.queue, func(c *call) bool { return c == nil })
	b.queued.Store(int64(len(b.queue)))
}

// takeLocked removes the batch's calls from the queue.
func (b *Batcher) takeLocked(batch []*call) {
	if len(batch) == 1 && b.queue[0] == batch[0] {
		b.queue[0] = nil
		b.queue = b.queue[1:]
		if len(b.queue) == 0 {
			b.queue = b.queue[:0:0] // let the backing array go
		}
	} else {
		in := make(map[*call]bool, len(batch))
		for _, c := range batch {
			in[c] = true
		}
		b.queue = slices.DeleteFunc(b.queue, func(c *call) bool { return in[c] })
	}
	b.queued.Store(int64(len(b.queue)))
}

// execute runs one batch and delivers every member's outputs.
func (b *Batcher) execute(batch []*call) {
	defer b.running.Done()
	defer func() { <-b.slots }()
	var total int64
	for _, c := range batch {
		total += max(c.rows, 1)
	}
	if b.observe != nil {
		b.observe(int(total))
	}
	if len(batch) == 1 {
		c := batch[0]
		if err := c.ctx.Err(); err != nil { // left while the batch formed: never run
			c.done <- result{nil, err}
			return
		}
		outs, err := b.run(c.ctx, cloneTensors(c.req.Inputs), c.req.Outputs)
		c.done <- result{outs, err}
		return
	}

	inputs := merge(batch, total)
	ctx, stop := batchContext(batch)
	outs, err := b.run(ctx, inputs, batch[0].req.Outputs)
	allGone := ctx.Err() != nil
	stop()
	if err != nil {
		if allGone { // every member's Submit has returned already
			for _, c := range batch {
				c.done <- result{nil, err}
			}
			return
		}
		b.log.Debug("batch failed, re-running its requests one by one", "requests", len(batch), "rows", total, "err", err)
		for _, c := range batch {
			if cerr := c.ctx.Err(); cerr != nil {
				c.done <- result{nil, cerr}
				continue
			}
			outs, err := b.run(c.ctx, cloneTensors(c.req.Inputs), c.req.Outputs)
			c.done <- result{outs, err}
		}
		return
	}
	parts, err := split(outs, batch, total)
	if err != nil {
		b.log.Error("cannot split batch outputs; disable batching for this model", "requests", len(batch), "rows", total, "err", err)
		for _, c := range batch {
			c.done <- result{nil, err}
		}
		return
	}
	for i, c := range batch {
		c.done <- result{parts[i], nil}
	}
}

// batchContext returns a context that ends when every member's context has
// ended, carrying the values of the first member's.
func batchContext(batch []*call) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(batch[0].ctx))
	var live atomic.Int64
	live.Store(int64(len(batch)))
	stops := make([]func() bool, len(batch))
	for i, c := range batch {
		stops[i] = context.AfterFunc(c.ctx, func() {
			if live.Add(-1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, s := range stops {
			s()
		}
		cancel()
	}
}

// classify returns a request's rows and compatibility key, or (0, "") when
// it cannot be merged with others.
func classify(req *Request) (int64, string) {
	if len(req.Inputs) == 0 {
		return 0, ""
	}
	rows := int64(-1)
	for i := range req.Inputs {
		t := &req.Inputs[i]
		if len(t.Shape) == 0 || t.Validate() != nil {
			return 0, ""
		}
		if rows < 0 {
			rows = t.Shape[0]
		}
		if t.Shape[0] != rows {
			return 0, ""
		}
	}
	if rows <= 0 {
		return 0, ""
	}
	idx := make([]int, len(req.Inputs))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return strings.Compare(req.Inputs[a].Name, req.Inputs[b].Name) })
	var k strings.Builder
	for i, j := range idx {
		t := &req.Inputs[j]
		if i > 0 && t.Name == req.Inputs[idx[i-1]].Name {
			return 0, "" // duplicate input name: let the runtime reject it
		}
		k.WriteString(strconv.Itoa(len(t.Name)))
		k.WriteByte(':')
		k.WriteString(t.Name)
		k.WriteByte(byte(t.DType))
		for _, d := range t.Shape[1:] {
			k.WriteByte(',')
			k.WriteString(strconv.FormatInt(d, 10))
		}
		k.WriteByte(';')
	}
	k.WriteByte('>')
	for _, o := range req.Outputs {
		k.WriteString(strconv.Itoa(len(o)))
		k.WriteByte(':')
		k.WriteString(o)
	}
	return rows, k.String()
}

// merge concatenates the members' inputs along dimension 0, copying them.
// Members share a key, so names, data types and non-batch dimensions agree.
func merge(batch []*call, total int64) []tensor.Tensor {
	first := batch[0].req.Inputs
	out := make([]tensor.Tensor, len(first))
	for i, in := range first {
		shape := slices.Clone(in.Shape)
		shape[0] = total
		t := tensor.Tensor{Name: in.Name, DType: in.DType, Shape: shape}
		if in.DType == tensor.Bytes {
			size, n := 0, 0
			for _, c := range batch {
				src := input(c.req, i, in.Name)
				n += len(src.Strings)
				size += src.ByteSize()
			}
			arena := make([]byte, 0, size)
			t.Strings = make([][]byte, 0, n)
			for _, c := range batch {
				for _, s := range input(c.req, i, in.Name).Strings {
					start := len(arena)
					arena = append(arena, s...)
					t.Strings = append(t.Strings, arena[start:len(arena):len(arena)])
				}
			}
		} else {
			size := 0
			for _, c := range batch {
				size += len(input(c.req, i, in.Name).Data)
			}
			t.Data = make([]byte, 0, size)
			for _, c := range batch {
				t.Data = append(t.Data, input(c.req, i, in.Name).Data...)
			}
		}
		out[i] = t
	}
	return out
}

// input returns req's input named name, looking at position i first.
func input(req *Request, i int, name string) *tensor.Tensor {
	if i < len(req.Inputs) && req.Inputs[i].Name == name {
		return &req.Inputs[i]
	}
	for j := range req.Inputs {
		if req.Inputs[j].Name == name {
			return &req.Inputs[j]
		}
	}
	panic("batching: merged request lacks input " + name) // unreachable: members share a key
}

// split cuts every output along dimension 0 into the members' rows.
func split(outs []tensor.Tensor, batch []*call, total int64) ([][]tensor.Tensor, error) {
	parts := make([][]tensor.Tensor, len(batch))
	backing := make([]tensor.Tensor, len(batch)*len(outs))
	for i := range parts {
		parts[i] = backing[i*len(outs) : (i+1)*len(outs) : (i+1)*len(outs)]
	}
	for j := range outs {
		o := &outs[j]
		if len(o.Shape) == 0 || o.Shape[0] != total {
			return nil, fmt.Errorf("%w: output %q has shape %v, want dimension 0 = %d (the batch's rows)", ErrSplit, o.Name, o.Shape, total)
		}
		if err := o.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrSplit, err)
		}
		per, _ := tensor.NumElements(o.Shape[1:])
		var row int64
		for i, c := range batch {
			shape := slices.Clone(o.Shape)
			shape[0] = c.rows
			t := tensor.Tensor{Name: o.Name, DType: o.DType, Shape: shape}
			lo, hi := row*per, (row+c.rows)*per
			if o.DType == tensor.Bytes {
				t.Strings = o.Strings[lo:hi:hi]
			} else {
				sz := int64(o.DType.Size())
				t.Data = o.Data[lo*sz : hi*sz : hi*sz]
			}
			parts[i][j] = t
			row += c.rows
		}
	}
	return parts, nil
}

// cloneTensors deep-copies tensors (whatever their validity) so that the
// run never reads the caller's buffers after Submit has returned.
func cloneTensors(ts []tensor.Tensor) []tensor.Tensor {
	out := make([]tensor.Tensor, len(ts))
	for i, t := range ts {
		t.Shape = slices.Clone(t.Shape)
		t.Data = slices.Clone(t.Data)
		if t.Strings != nil {
			size := 0
			for _, s := range t.Strings {
				size += len(s)
			}
			arena := make([]byte, 0, size)
			strs := make([][]byte, len(t.Strings))
			for j, s := range t.Strings {
				start := len(arena)
				arena = append(arena, s...)
				strs[j] = arena[start:len(arena):len(arena)]
			}
			t.Strings = strs
		}
		out[i] = t
	}
	return out
}
