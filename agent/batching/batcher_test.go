package batching_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/edgefleet/edgefleet/deploy/testenv"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/batching"
	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/tensor"
)

type submitted struct {
	outs []tensor.Tensor
	err  error
}

// submitAll submits reqs concurrently, waits until all are queued (the
// worker is held by the gate), and returns channels with their results.
func submitAll(t *testing.T, b *batching.Batcher, reqs []*batching.Request) []chan submitted {
	t.Helper()
	res := make([]chan submitted, len(reqs))
	before := b.Len()
	for i, r := range reqs {
		res[i] = make(chan submitted, 1)
		go func() {
			outs, err := b.Submit(context.Background(), r)
			res[i] <- submitted{outs, err}
		}()
		// One at a time, so queue order is submission order.
		testenv.Eventually(t, fmt.Sprintf("request %d queued", i), 30*time.Second, func() bool { return b.Len() == before+i+1 })
	}
	return res
}

// start submits req without waiting for it to queue (it may run at once).
func start(b *batching.Batcher, req *batching.Request) chan submitted {
	c := make(chan submitted, 1)
	go func() {
		outs, err := b.Submit(context.Background(), req)
		c <- submitted{outs, err}
	}()
	return c
}

func recv(t *testing.T, c chan submitted) submitted {
	t.Helper()
	select {
	case r := <-c:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("no result")
		return submitted{}
	}
}

// TestMergeSplitExact queues requests of mixed sizes behind a busy worker,
// so they run as one merged batch, and checks every request's outputs are
// byte-identical to running it alone; for every dtype, BYTES included.
func TestMergeSplitExact(t *testing.T) {
	s := session(t, "dtypes/identity_all.onnx")
	for _, tc := range []struct {
		name    string
		rows    []int64
		outputs []string
		batches []int // ObserveBatch sizes after the blocker's 1
	}{
		{"all outputs 1+3+2", []int64{1, 3, 2}, nil, []int{6}},
		{"subset 2+1+4+1", []int64{2, 1, 4, 1}, []string{"out_BYTES", "double_fp32", "out_FP16"}, []int{8}},
		{"single row each", []int64{1, 1, 1, 1, 1}, []string{"out_INT64"}, []int{5}},
		{"beyond max splits into two batches", []int64{5, 4, 3}, []string{"out_UINT8"}, []int{9, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGate(t, runOf(s))
			var sz sizes
			b := newBatcher(t, g.run, batching.Options{MaxBatchSize: 10, Workers: 1, ObserveBatch: sz.observe})

			release := g.block()
			blocker := []chan submitted{start(b, identityRequest(1, 99, tc.outputs))}
			g.waitEntered(t)
			var reqs []*batching.Request
			for i, n := range tc.rows {
				reqs = append(reqs, identityRequest(n, i, tc.outputs))
			}
			res := submitAll(t, b, reqs)
			release()

			if r := recv(t, blocker[0]); r.err != nil {
				t.Fatal(r.err)
			}
			for i, r := range reqs {
				got := recv(t, res[i])
				if got.err != nil {
					t.Fatalf("request %d: %v", i, got.err)
				}
				want, err := s.Run(r.Inputs, r.Outputs)
				if err != nil {
					t.Fatal(err)
				}
				equalTensors(t, fmt.Sprintf("request %d (%d rows)", i, tc.rows[i]), got.outs, want.Outputs)
			}
			b.Close()
			if got, want := sz.get(), append([]int{1}, tc.batches...); !slices.Equal(got, want) {
				t.Errorf("batch sizes %v, want %v", got, want)
			}
		})
	}
}

// TestDigitsBatchedEqualsUnbatched serves the held-out digits set through
// the batcher in merged batches of mixed sizes and compares the logits with
// unbatched runs byte for byte.
func TestDigitsBatchedEqualsUnbatched(t *testing.T) {
	s := session(t, "digits/cnn.onnx")
	px := digits(t)
	g := newGate(t, runOf(s))
	var sz sizes
	b := newBatcher(t, g.run, batching.Options{MaxBatchSize: 32, Workers: 1, ObserveBatch: sz.observe})

	release := g.block()
	blocker := []chan submitted{start(b, digitsRequest(px, 0, 1))}
	g.waitEntered(t)
	var reqs []*batching.Request
	for from, i := 0, 0; from < len(px); i++ {
		n := min([]int{1, 3, 2, 5, 1, 7}[i%6], len(px)-from)
		reqs = append(reqs, digitsRequest(px, from, n))
		from += n
	}
	res := submitAll(t, b, reqs)
	release()
	if r := recv(t, blocker[0]); r.err != nil {
		t.Fatal(r.err)
	}
	for i, r := range reqs {
		got := recv(t, res[i])
		if got.err != nil {
			t.Fatalf("request %d: %v", i, got.err)
		}
		want, err := s.Run(r.Inputs, nil)
		if err != nil {
			t.Fatal(err)
		}
		equalTensors(t, fmt.Sprintf("request %d", i), got.outs, want.Outputs)
	}
	merged := 0
	for _, n := range sz.get() {
		if n > 7 {
			merged++
		}
	}
	if merged == 0 {
		t.Errorf("batch sizes %v: no merged batch", sz.get())
	}
}

// TestConcurrentMixedSizes hammers the batcher from 32 goroutines with
// random sizes and output subsets; identity outputs must equal inputs.
func TestConcurrentMixedSizes(t *testing.T) {
	s := session(t, "dtypes/identity_all.onnx")
	var sz sizes
	b := newBatcher(t, runOf(s), batching.Options{MaxBatchSize: 8, MaxQueueDelay: 200 * time.Microsecond,
		PreferredBatchSizes: []int{4, 8}, Workers: 2, ObserveBatch: sz.observe})
	subsets := [][]string{nil, {"out_FP32", "out_BYTES"}, {"out_INT8"}}
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for w := range 32 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := range 15 {
				n := int64(1 + rng.IntN(4))
				outs := subsets[rng.IntN(len(subsets))]
				req := identityRequest(n, w*100+i, outs)
				got, err := b.Submit(context.Background(), req)
				if err != nil {
					errs <- err
					return
				}
				for _, o := range got {
					if o.Name == "double_fp32" {
						continue
					}
					in := req.Inputs[slices.IndexFunc(req.Inputs, func(t tensor.Tensor) bool { return "out_"+t.DType.String() == o.Name })]
					if !slices.Equal(o.Shape, in.Shape) || string(o.Data) != string(in.Data) ||
						!slices.EqualFunc(o.Strings, in.Strings, func(a, b []byte) bool { return string(a) == string(b) }) {
						errs <- fmt.Errorf("worker %d request %d: %s differs from its input", w, i, o.Name)
						return
					}
				}
				if want := len(outs); want > 0 && len(got) != want || want == 0 && len(got) != 14 {
					errs <- fmt.Errorf("worker %d request %d: %d outputs", w, i, len(got))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	total := 0
	for _, n := range sz.get() {
		if n > 8 {
			t.Errorf("batch of %d rows exceeds MaxBatchSize 8", n)
		}
		total += n
	}
	if total == 0 {
		t.Error("no batches observed")
	}
}

func TestQueueFullRejectsAtOnce(t *testing.T) {
	s := session(t, "dtypes/identity_all.onnx")
	g := newGate(t, runOf(s))
	b := newBatcher(t, g.run, batching.Options{MaxQueue: 2, Workers: 1, MaxQueueDelay: time.Hour})
	release := g.block()
	blocker := []chan submitted{start(b, identityRequest(8, 1, nil))} // a full batch: runs at once
	g.waitEntered(t)
	queued := submitAll(t, b, []*batching.Request{identityRequest(1, 2, nil), identityRequest(1, 3, nil)})

	_, err := b.Submit(context.Background(), identityRequest(1, 4, nil))
	if !errors.Is(err, batching.ErrQueueFull) {
		t.Fatalf("Submit on a full queue: %v, want ErrOverloaded", err)
	}
	if b.Len() != 2 {
		t.Errorf("queue length %d after rejection, want 2", b.Len())
	}
	release()
	b.Close() // flushes the queued pair despite the hour-long delay
	for i, c := range append(blocker, queued...) {
		if r := recv(t, c); r.err != nil {
			t.Errorf("request %d: %v", i, r.err)
		}
	}
}

// TestContextEndsWhileQueued: the request gets its context's error and is
// never run.
func TestContextEndsWhileQueued(t *testing.T) {
	s := session(t, "dtypes/identity_all.onnx")
	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		end  bool // cancel once queued (else wait for the deadline)
		want error
	}{
		{"cancel", func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) }, true, context.Canceled},
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 20*time.Millisecond)
		}, false, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGate(t, runOf(s))
			b := newBatcher(t, g.run, batching.Options{Workers: 1, MaxBatchSize: 4})
			release := g.block()
			blocker := []chan submitted{start(b, identityRequest(4, 1, nil))}
			g.waitEntered(t)

			ctx, cancel := tc.ctx()
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := b.Submit(ctx, identityRequest(3, 2, nil)) // the only 3-row request
				done <- err
			}()
			testenv.Eventually(t, "queued", 30*time.Second, func() bool { return b.Len() == 1 })
			if tc.end {
				cancel()
			}
			if err := <-done; !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if b.Len() != 0 {
				t.Errorf("queue length %d after the request left, want 0", b.Len())
			}
			after := submitAll(t, b, []*batching.Request{identityRequest(2, 3, nil)})
			release()
			for _, c := range append(blocker, after...) {
				if r := recv(t, c); r.err != nil {
					t.Fatal(r.err)
				}
			}
			b.Close()
			for _, r := range g.records() {
				if r.rows == 3 || r.rows == 5 {
					t.Errorf("runs %v: the dropped request ran", g.records())
				}
			}
		})
	}
}

// TestContextEndsWhileRunning: a member of a running batch gets its error at
// once, and the batch completes for the others.
func TestContextEndsWhileRunning(t *testing.T) {
	s := session(t, "dtypes/identity_all.onnx")
	g := newGate(t, runOf(s))
	b := newBatcher(t, g.run, batching.Options{Workers: 1, MaxBatchSize: 8})
	releaseBlocker := g.block()
	blocker := []chan submitted{start(b, identityRequest(8, 1, nil))}
	g.waitEntered(t)

	ctx, cancel := context.WithCancel(context.Background())
	leaving := make(chan error, 1)
	leaver := identityRequest(2, 2, nil)
	go func() {
		_, err := b.Submit(ctx, leaver)
		leaving <- err
	}()
	testenv.Eventually(t, "queued", 30*time.Second, func() bool { return b.Len() == 1 })
	staying := identityRequest(3, 3, nil)
	stay := submitAll(t, b, []*batching.Request{staying})
	release := g.block() // holds the merged batch
	releaseBlocker()
	if r := recv(t, blocker[0]); r.err != nil {
		t.Fatal(r.err)
	}
	if rows := g.waitEntered(t); rows != 5 {
		t.Fatalf("merged batch has %d rows, want 5", rows)
	}
	cancel()
	select {
	case err := <-leaving:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("cancelled member did not return while its batch was held")
	}
	// Scribble over the leaver's buffers: the batch must have copied them.
	for i := range leaver.Inputs {
		clear(leaver.Inputs[i].Data)
	}
	release()
	got := recv(t, stay[0])
	if got.err != nil {
		t.Fatal(got.err)
	}
	want, err := s.Run(staying.Inputs, nil)
	if err != nil {
		t.Fatal(err)
	}
	equalTensors(t, "staying member", got.outs, want.Outputs)
}

// TestWhatRunsAlone: requests over MaxBatchSize and incompatible requests
// are never merged; compatible ones are.
func TestWhatRunsAlone(t *testing.T) {
	s := session(t, "dtypes/identity_all.onnx")
	wrongDim := identityRequest(1, 5, nil)
	for i := range wrongDim.Inputs {
		wrongDim.Inputs[i].Shape = []int64{1, 1, 3}
	}
	badData := identityRequest(2, 6, nil)
	badData.Inputs[1].Data = badData.Inputs[1].Data[:1]
	reqs := []*batching.Request{
		identityRequest(6, 1, nil),                  // 0: over max (4): alone
		identityRequest(1, 2, nil),                  // 1: merges with 3
		identityRequest(2, 3, []string{"out_FP32"}), // 2: other outputs: alone
		identityRequest(1, 4, nil),                  // 3
		wrongDim,                                    // 4: other non-batch dims: alone, fails
		badData,                                     // 5: data does not match shape: alone, fails
		identityRequest(1, 7, []string{"out_FP32"}), // 6: merges with 2
	}
	g := newGate(t, runOf(s))
	var sz sizes
	b := newBatcher(t, g.run, batching.Options{Workers: 1, MaxBatchSize: 4, ObserveBatch: sz.observe})
	release := g.block()
	blocker := []chan submitted{start(b, identityRequest(4, 0, nil))}
	g.waitEntered(t)
	res := submitAll(t, b, reqs)
	release()
	recv(t, blocker[0])
	for i, r := range reqs {
		got := recv(t, res[i])
		want, werr := s.Run(r.Inputs, r.Outputs)
		if (got.err != nil) != (werr != nil) {
			t.Fatalf("request %d: err %v, alone %v", i, got.err, werr)
		}
		if werr != nil {
			if !errors.Is(got.err, runtime.ErrInvalidInput) {
				t.Errorf("request %d: %v, want the runtime's invalid input error", i, got.err)
			}
			continue
		}
		equalTensors(t, fmt.Sprintf("request %d", i), got.outs, want.Outputs)
	}
	b.Close()
	// Oldest first: [6] alone; [1,3] merged (2 rows, the 2-row out_FP32 pair
	// is another key); [2,6] merged (3 rows); [4] and [5] alone.
	type run struct {
		rows int64
		outs string
	}
	var got []run
	for _, r := range g.records()[1:] {
		got = append(got, run{r.rows, fmt.Sprint(r.outputs)})
	}
	want := []run{{6, "[]"}, {2, "[]"}, {3, "[out_FP32]"}, {1, "[]"}, {2, "[]"}}
	if !slices.Equal(got, want) {
		t.Errorf("runs %v, want %v", got, want)
	}
}

// TestFailedBatchRerunsAlone: when a merged batch fails, each member runs
// alone, so one bad request cannot fail its neighbours.
func TestFailedBatchRerunsAlone(t *testing.T) {
	s := session(t, "dtypes/identity_all.onnx")
	inner := runOf(s)
	// Fault: any run of more than 3 rows fails (as a value-dependent op would).
	g := newGate(t, func(ctx context.Context, in []tensor.Tensor, outs []string) ([]tensor.Tensor, error) {
		if in[0].Shape[0] > 3 {
			return nil, errors.New("injected batch failure")
		}
		return inner(ctx, in, outs)
	})
	b := newBatcher(t, g.run, batching.Options{Workers: 1, MaxBatchSize: 8})
	release := g.block()
	blocker := []chan submitted{start(b, identityRequest(8, 0, nil))}
	g.waitEntered(t)
	reqs := []*batching.Request{identityRequest(2, 1, nil), identityRequest(3, 2, nil), identityRequest(1, 3, nil)}
	res := submitAll(t, b, reqs)
	release()
	if r := recv(t, blocker[0]); r.err == nil {
		t.Error("the 8-row request did not fail")
	}
	for i, r := range reqs {
		got := recv(t, res[i])
		if got.err != nil {
			t.Fatalf("request %d: %v", i, got.err)
		}
		want, err := s.Run(r.Inputs, nil)
		if err != nil {
			t.Fatal(err)
		}
		equalTensors(t, fmt.Sprintf("request %d", i), got.outs, want.Outputs)
	}
	var rows []int64
	for _, r := range g.records() {
		rows = append(rows, r.rows)
	}
	if want := []int64{8, 6, 2, 3, 1}; !slices.Equal(rows, want) {
		t.Errorf("runs %v, want %v", rows, want)
	}
}

// TestUnsplittableOutputs: outputs whose dimension 0 is not the batch total
// fail every member with ErrSplit instead of being cut wrongly.
func TestUnsplittableOutputs(t *testing.T) {
	s := session(t, "dtypes/identity_all.onnx")
	inner := runOf(s)
	g := newGate(t, func(ctx context.Context, in []tensor.Tensor, outs []string) ([]tensor.Tensor, error) {
		o, err := inner(ctx, in, outs)
		if err == nil && in[0].Shape[0] > 1 { // fault: drop the last row of the first output
			o[0].Shape[0]--
			o[0].Data = o[0].Data[:len(o[0].Data)-3*o[0].DType.Size()]
		}
		return o, err
	})
	b := newBatcher(t, g.run, batching.Options{Workers: 1})
	release := g.block()
	blocker := []chan submitted{start(b, identityRequest(1, 0, []string{"out_INT32"}))}
	g.waitEntered(t)
	res := submitAll(t, b, []*batching.Request{identityRequest(1, 1, []string{"out_INT32"}), identityRequest(2, 2, []string{"out_INT32"})})
	release()
	recv(t, blocker[0])
	for i, c := range res {
		if r := recv(t, c); !errors.Is(r.err, batching.ErrSplit) {
			t.Errorf("request %d: %v, want ErrSplit", i, r.err)
		}
	}
}

// TestScheduling checks when batches are dispatched: preferred and maximum
// sizes at once, a request that no longer fits closes the batch, the delay
// from the oldest request, and Close flushing what waits.
func TestScheduling(t *testing.T) {
	s := session(t, "dtypes/identity_all.onnx")
	for _, tc := range []struct {
		name      string
		opts      batching.Options
		rows      []int64
		wantSizes []int // ObserveBatch, in order, before Close
		flushed   []int // more sizes dispatched by Close
	}{
		{"preferred size dispatches at once", batching.Options{MaxBatchSize: 8, PreferredBatchSizes: []int{2, 4}, MaxQueueDelay: time.Hour},
			[]int64{1, 3}, []int{4}, nil},
		{"max size dispatches at once", batching.Options{MaxBatchSize: 4, MaxQueueDelay: time.Hour},
			[]int64{2, 2}, []int{4}, nil},
		{"request that does not fit closes the batch", batching.Options{MaxBatchSize: 4, MaxQueueDelay: time.Hour},
			[]int64{3, 2}, []int{3}, []int{2}},
		{"waits for the delay otherwise", batching.Options{MaxBatchSize: 8, PreferredBatchSizes: []int{4}, MaxQueueDelay: time.Hour},
			[]int64{1, 1, 1}, nil, []int{3}},
		{"short delay", batching.Options{MaxBatchSize: 8, MaxQueueDelay: 500 * time.Microsecond},
			[]int64{1}, []int{1}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sz sizes
			tc.opts.ObserveBatch = sz.observe
			b := newBatcher(t, runOf(s), tc.opts)
			var reqs []*batching.Request
			for i, n := range tc.rows {
				reqs = append(reqs, identityRequest(n, i, nil))
			}
			res := make([]chan submitted, len(reqs))
			for i, r := range reqs {
				res[i] = make(chan submitted, 1)
				go func() {
					outs, err := b.Submit(context.Background(), r)
					res[i] <- submitted{outs, err}
				}()
				testenv.Eventually(t, "queued or run", 30*time.Second, func() bool { return b.Len() == i+1 || len(sz.get()) > 0 })
			}
			if len(tc.wantSizes) > 0 {
				testenv.Eventually(t, "dispatch", 30*time.Second, func() bool { return len(sz.get()) >= len(tc.wantSizes) })
			}
			if got := sz.get(); !slices.Equal(got, tc.wantSizes) {
				t.Fatalf("dispatched %v before Close, want %v", got, tc.wantSizes)
			}
			b.Close()
			if got, want := sz.get(), append(slices.Clone(tc.wantSizes), tc.flushed...); !slices.Equal(got, want) {
				t.Errorf("dispatched %v, want %v", got, want)
			}
			for i := range reqs {
				if r := recv(t, res[i]); r.err != nil {
					t.Errorf("request %d: %v", i, r.err)
				}
			}
		})
	}
}

func TestClose(t *testing.T) {
	s := session(t, "dtypes/identity_all.onnx")
	g := newGate(t, runOf(s))
	b := newBatcher(t, g.run, batching.Options{Workers: 2, MaxBatchSize: 2})
	release := g.block()
	held := []chan submitted{start(b, identityRequest(2, 0, nil)), start(b, identityRequest(2, 1, nil))}
	g.waitEntered(t)
	g.waitEntered(t)
	queued := submitAll(t, b, []*batching.Request{identityRequest(1, 2, nil), identityRequest(1, 3, nil), identityRequest(2, 4, nil)})
	closed := make(chan struct{})
	go func() { b.Close(); close(closed) }()
	testenv.Eventually(t, "closing", 30*time.Second, func() bool {
		// A probe that arrives before Close leaves the queue again at once.
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		_, err := b.Submit(ctx, identityRequest(1, 5, nil))
		return errors.Is(err, batching.ErrClosed)
	})
	release()
	<-closed
	for i, c := range append(held, queued...) {
		if r := recv(t, c); r.err != nil {
			t.Errorf("request %d: %v", i, r.err)
		}
	}
	b.Close() // idempotent
}
