package ota

import (
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Option configures registry access for Push, Inspect, Pull, Sign and
// Verify. The zero configuration is usable: credentials from the environment
// and the docker config, plain HTTP for loopback registries, HTTPS elsewhere.
type Option func(*options)

// Retry bounds retries of a transfer that fails with a connection error, a
// stalled stream or a 5xx/429 answer. Client errors (4xx), digest mismatches
// and oversized data are never retried. An attempt that persisted bytes
// before failing resets the failure count, so a flaky link that drops every
// few megabytes still completes.
type Retry struct {
	// Attempts is the number of consecutive failed attempts that moved no
	// bytes before giving up; zero means 6.
	Attempts int
	// Initial is the first backoff; zero means 250 ms. Each later failure
	// doubles it, with ±20% jitter, up to Max.
	Initial time.Duration
	// Max caps the backoff; zero means 15 s.
	Max time.Duration
}

type options struct {
	keychain     authn.Keychain
	transport    http.RoundTripper
	insecure     bool
	log          *slog.Logger
	progress     Progress
	retry        Retry
	chunkSize    int
	stallTimeout time.Duration
	maxBlobSize  int64
	userAgent    string
	variant      *Preference // nil: Inspect and Pull refuse variant indexes
}

// Defaults.
const (
	// DefaultChunkSize is how many bytes a pull hands to Sink.Append at a time.
	DefaultChunkSize = 1 << 20
	// DefaultStallTimeout aborts (and retries) a transfer that receives no
	// bytes for this long.
	DefaultStallTimeout = 30 * time.Second
	// DefaultMaxBlobSize is the largest layer a pull accepts (16 GiB).
	DefaultMaxBlobSize = 16 << 30
)

func makeOptions(opts []Option) *options {
	o := &options{
		chunkSize:    DefaultChunkSize,
		stallTimeout: DefaultStallTimeout,
		maxBlobSize:  DefaultMaxBlobSize,
		userAgent:    "edgefleet-ota",
	}
	for _, opt := range opts {
		opt(o)
	}
	if o.keychain == nil {
		o.keychain = authn.NewMultiKeychain(EnvKeychain(), authn.DefaultKeychain)
	}
	if o.transport == nil {
		o.transport = remote.DefaultTransport.(*http.Transport).Clone()
	}
	if o.log == nil {
		o.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.progress == nil {
		o.progress = ProgressFunc(func(Event) {})
	}
	if o.retry.Attempts <= 0 {
		o.retry.Attempts = 6
	}
	if o.retry.Initial <= 0 {
		o.retry.Initial = 250 * time.Millisecond
	}
	if o.retry.Max <= 0 {
		o.retry.Max = 15 * time.Second
	}
	if o.chunkSize <= 0 {
		o.chunkSize = DefaultChunkSize
	}
	return o
}

// WithKeychain sets where credentials come from. The default is EnvKeychain
// followed by authn.DefaultKeychain (the docker config and its credential
// helpers).
func WithKeychain(kc authn.Keychain) Option { return func(o *options) { o.keychain = kc } }

// WithTransport sets the base HTTP transport, e.g. one trusting a private CA.
// Authentication is layered on top of it.
func WithTransport(rt http.RoundTripper) Option { return func(o *options) { o.transport = rt } }

// WithInsecure allows plain HTTP to any registry. Loopback and private
// (RFC 1918) registries fall back to plain HTTP without it.
func WithInsecure() Option { return func(o *options) { o.insecure = true } }

// WithLogger sets the logger for retries, resumes and restarts; the default
// discards.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithProgress sets the receiver of transfer events.
func WithProgress(p Progress) Option { return func(o *options) { o.progress = p } }

// WithRetry sets the retry policy for transfers.
func WithRetry(r Retry) Option { return func(o *options) { o.retry = r } }

// WithChunkSize sets how many bytes a pull buffers before Sink.Append.
func WithChunkSize(n int) Option { return func(o *options) { o.chunkSize = n } }

// WithStallTimeout sets how long a transfer may receive nothing before it is
// aborted and retried; zero or negative disables the check.
func WithStallTimeout(d time.Duration) Option { return func(o *options) { o.stallTimeout = d } }

// WithMaxBlobSize sets the largest layer a pull accepts; a manifest
// declaring a larger layer is refused before any download.
func WithMaxBlobSize(n int64) Option { return func(o *options) { o.maxBlobSize = n } }

// WithUserAgent sets the User-Agent sent to registries.
func WithUserAgent(ua string) Option { return func(o *options) { o.userAgent = ua } }

// WithVariant makes Inspect and Pull resolve a reference to a variant index
// to the variant SelectVariant picks for p, instead of failing with
// ErrIndex.
func WithVariant(p Preference) Option { return func(o *options) { o.variant = &p } }

func (o *options) nameOptions() []name.Option {
	if o.insecure {
		return []name.Option{name.Insecure}
	}
	return nil
}
