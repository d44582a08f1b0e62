package cache

import "errors"

// Sentinel errors. Methods wrap them with the name of the object concerned
// (model, version, digest) and the numbers involved; match them with
// errors.Is.
var (
	// ErrNotFound: the model, version, blob or partial write does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: the version, blob or partial write already exists.
	ErrExists = errors.New("already exists")
	// ErrCorrupt: stored data failed verification (a blob's bytes no longer
	// hash to its digest, a chunk is missing, a record does not parse). The
	// cache never serves such data.
	ErrCorrupt = errors.New("corrupt")
	// ErrDigestMismatch: bytes offered for a digest hash to something else.
	// The bytes are discarded; nothing else changes.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrNoSpace: the disk budget cannot hold the bytes even after evicting
	// every evictable version. Nothing was evicted.
	ErrNoSpace = errors.New("not enough space in the cache budget")
	// ErrLocked: another process (or another Open in this one) holds the
	// cache file.
	ErrLocked = errors.New("cache is locked")
	// ErrInvalid: a bad argument (malformed digest, name or version, a write
	// at the wrong offset, more bytes than announced).
	ErrInvalid = errors.New("invalid argument")
	// ErrInUse: the version or blob is needed (the active version, a blob
	// that versions refer to) and was left in place.
	ErrInUse = errors.New("in use")
)
