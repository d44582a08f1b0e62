// Package batching merges concurrent inference requests for one model into
// larger batches, runs them, and splits the outputs back per request: the
// dynamic batcher of Triton, for models whose first input and output
// dimension is the batch.
//
// # Basics
//
// A Batcher wraps a RunFunc (one session run). Submit queues a request and
// waits for its outputs. A scheduler goroutine forms batches whenever one of
// Options.Workers run slots is free:
//
//   - the oldest queued request leads the batch; later requests join it when
//     they are compatible: same input names, data types and non-batch
//     dimensions, and the same requested outputs;
//   - a batch is dispatched at once when it reaches MaxBatchSize or when a
//     compatible request no longer fits; otherwise at the largest preferred
//     size it can form; otherwise when the oldest request has waited
//     MaxQueueDelay (zero: at once);
//   - inputs are concatenated along dimension 0 (raw bytes; element lists for
//     BYTES), and every output, whose dimension 0 must equal the batch total,
//     is cut back into per-request tensors that alias the batch output.
//
// Requests of different batch sizes merge (1, 3 and 2 rows run as one batch
// of 6). A request with MaxBatchSize rows or more, a request with a scalar
// input, inputs that disagree on dimension 0, or tensors whose data does not
// match their shape run alone, unmerged: the runtime then reports any error
// for that request only.
//
// # Errors and deadlines
//
// The queue is bounded: when Options.MaxQueue requests wait, Submit fails at
// once with an error wrapping ErrQueueFull. A request whose context
// ends while queued is dropped, never run, and Submit returns the context's
// error. A request whose context ends while its batch runs gets the error at
// once; the batch still completes for the others, and the batch's context
// ends only when every member's has. When a merged batch fails, each member
// is re-run alone so that one bad request cannot fail its neighbours. When
// the outputs cannot be split (dimension 0 differs from the batch total) every
// member gets an error wrapping ErrSplit: the model is not batch-major and
// must not be served through a Batcher.
//
// # Caveats
//
// Output tensors of merged requests share the batch's buffers: each
// request's slice is capped, so appending to it copies, but callers must
// treat outputs as read-only (as everywhere in the agent). Input tensors are
// copied before they run, so a caller may reuse their buffers as soon as
// Submit returns, even when it returns early.
//
// A Batcher is safe for concurrent use. Close stops accepting requests, runs
// what is queued and waits for running batches.
package batching
