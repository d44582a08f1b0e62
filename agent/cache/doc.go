// Package cache is the agent's content-addressed model cache: model bytes
// stored as sha256-addressed blobs in one bbolt file, plus a catalogue that
// maps model names and versions to those blobs.
//
// # Basics
//
// Open a cache on a file (the agent uses DIR/cache.db in its data folder):
//
//	c, err := cache.Open(filepath.Join(dir, "cache.db"), cache.Options{Budget: 2 << 30})
//	...
//	rec, err := c.ImportModel(ctx, "digits", "", onnxBytes, cache.VersionRecord{Source: "file:/models/digits.onnx"})
//	// rec.Version == "1" for the first import, "2" for the next, ...
//	b, err := c.ReadBlob(ctx, rec.Digest) // sha256 re-verified on every read
//
// Blobs are written in three ways:
//
//   - ImportModel stores bytes and catalogues them as a model version in one
//     transaction; PutBytes and Put store a bare blob (Put streams from an
//     io.Reader, holding at most a few chunks in memory).
//   - Resumable partial writes (BeginPartial, AppendPartial, WritePartialFrom,
//     CommitPartial) for downloads that may be cut off: every append is its own
//     transaction, so a restarted agent resumes from PartialOffset. Nothing
//     becomes visible as a blob until CommitPartial has hashed all stored bytes
//     and found the expected digest.
//   - AddVersion catalogues an already stored blob.
//
// Every exported method that changes the file does so in exactly one bbolt
// transaction (WritePartialFrom and Put are sequences of such calls whose
// intermediate states are all valid), so a crash or kill -9 at any moment
// leaves either the old or the new state. A crash in the middle of Put leaves a
// staging area that the next Open removes.
//
// # Per-model state
//
// Each model has a small string map (SetModelState, SetModelStates,
// ModelState) that the activation state machine uses to persist its steps in
// the same file as the catalogue. The keys StateActive, StatePrevious and
// StatePending and every key starting with StateLabelPrefix name versions:
// they may only name versions that exist, and the versions they name are
// pinned: never evicted, and RemoveVersion refuses to remove the active one.
//
// # Disk budget
//
// With Options.Budget set, the bytes of complete blobs plus the expected sizes
// of partial writes stay within the budget. Put, PutBytes, ImportModel and
// BeginPartial make room when needed by evicting unpinned versions, least
// recently used first (ReadBlob marks a blob used); EnsureSpace does the same
// for a caller that knows more versions to protect. Blobs no version refers to
// are evicted too once they are older than Options.OrphanGrace. When the room
// cannot be made, nothing is evicted and ErrNoSpace is returned.
//
// # Storage schema
//
// All keys live under a versioned root bucket. Chunk indexes are big-endian
// uint64, so a cursor walks a blob's chunks in order. Values marked JSON are
// JSON documents; the Go types are blobMeta, partialMeta, modelMeta and
// VersionRecord.
//
//	v1                                  root, one per schema generation
//	├── meta
//	│   └── schema        : "1"          schema version, for ordered migrations
//	├── blobs
//	│   └── <digest>                     "sha256:<64 hex>"
//	│       ├── meta      : JSON         size, chunk size, created, last used
//	│       └── chunks
//	│           └── <idx> : bytes        Options.ChunkSize bytes, the last one shorter
//	├── partials
//	│   └── <digest>                     resumable write of that digest, or
//	│   └── staging:<hex>                a Put in progress (removed by Open)
//	│       ├── meta      : JSON         expected size, offset, chunk size, times
//	│       └── chunks
//	│           └── <idx> : bytes        moved, not copied, under blobs on commit
//	└── models
//	    └── <name>
//	        ├── meta      : JSON         created, highest numeric version ever used
//	        ├── versions
//	        │   └── <version> : JSON     VersionRecord (digest, size, tensors, source, ...)
//	        └── state
//	            └── <key> : string       active, previous, pending, label:<l>, ...
//
// A blob is referenced by the versions whose records name its digest; there is
// no stored reference count to drift. Removing or evicting the last version
// that names a blob deletes the blob in the same transaction.
//
// # Concurrency
//
// A Cache is safe for concurrent use by multiple goroutines. Reads (ReadBlob,
// Versions, Models, ...) run in parallel; bbolt serializes writers. The file is
// locked by one process at a time: a second Open waits Options.LockTimeout and
// then fails with ErrLocked.
//
// # Caveats
//
// The budget counts content bytes, not the file size: bbolt reuses freed pages
// but never shrinks the file. ReadBlob returns the whole blob in memory, which
// is what onnxruntime needs to create a session without temporary files.
// ImportModel and PutBytes hold the whole blob in one transaction's dirty
// pages; use Put or the partial writes for bounded memory.
package cache
