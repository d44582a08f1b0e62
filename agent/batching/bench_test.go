package batching_test

import (
	"context"
	goruntime "runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/batching"
)

// BenchmarkDigitsConcurrency32 serves one-row digits CNN requests from 32
// goroutines in process, with two run slots (the model's instances, one
// intra-op thread each) either taken directly per request (batching=off, as
// models.Manager does without a batcher) or through a Batcher. Compare the
// req/s metrics; rows/batch is the mean batch size.
func BenchmarkDigitsConcurrency32(b *testing.B) {
	s := session(b, "digits/cnn.onnx")
	px := digits(b)
	const instances, concurrency = 2, 32
	reqs := make([]*batching.Request, len(px))
	for i := range reqs {
		reqs[i] = digitsRequest(px, i, 1)
	}
	parallelism := max(1, concurrency/goruntime.GOMAXPROCS(0))

	drive := func(b *testing.B, infer func(*batching.Request) error) {
		var next atomic.Int64
		b.SetParallelism(parallelism)
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := infer(reqs[next.Add(1)%int64(len(reqs))]); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
	}

	b.Run("batching=off", func(b *testing.B) {
		slots := make(chan struct{}, instances)
		drive(b, func(r *batching.Request) error {
			slots <- struct{}{}
			defer func() { <-slots }()
			_, err := s.Run(r.Inputs, nil)
			return err
		})
	})
	for _, tc := range []struct {
		name string
		opts batching.Options
	}{
		// max = concurrency / instances keeps both instances busy.
		{"batching=on/max=16/delay=0", batching.Options{MaxBatchSize: 16}},
		{"batching=on/max=16/delay=50us", batching.Options{MaxBatchSize: 16, MaxQueueDelay: 50 * time.Microsecond}},
		// One batch holds every client: the other instance idles.
		{"batching=on/max=32/delay=50us", batching.Options{MaxBatchSize: 32, MaxQueueDelay: 50 * time.Microsecond}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var batches, rows atomic.Int64
			tc.opts.Workers = instances
			tc.opts.ObserveBatch = func(n int) { batches.Add(1); rows.Add(int64(n)) }
			bt := batching.New(runOf(s), tc.opts)
			defer bt.Close()
			ctx := context.Background()
			drive(b, func(r *batching.Request) error {
				_, err := bt.Submit(ctx, r)
				return err
			})
			if n := batches.Load(); n > 0 {
				b.ReportMetric(float64(rows.Load())/float64(n), "rows/batch")
			}
		})
	}
}
