// Package ota moves edgefleet model artifacts through OCI registries: Push
// builds and uploads an artifact, Inspect fetches and checks its manifest
// and config, and Pull downloads its blobs into a Sink, verified and
// resumable. The format is specified in SPEC.md; package artifact holds its
// types and checks, package signature signs and verifies artifacts the way
// cosign does.
//
// # Basics
//
// References are "host[:port]/repository:tag" or "...@sha256:hex". Loopback
// and private registries are reached over plain HTTP when they do not speak
// TLS; WithInsecure allows plain HTTP anywhere, WithTransport sets a TLS
// configuration. Credentials come from EnvKeychain and then the docker
// config.
//
// A Repository holds one repository's authenticated connection; the
// package-level functions open one per call:
//
//	d, err := ota.Push(ctx, "localhost:5000/models/digits:3", art)
//	res, err := ota.Pull(ctx, d.String(), sink)
//
// Pull streams every layer into the Sink in chunks while hashing it,
// resumes interrupted downloads with HTTP range requests from what the Sink
// already holds (also across process restarts), retries connection failures
// and 5xx answers with backoff, and commits a blob only when its digest
// matches. Progress receives events for progress bars.
//
// PushVariants publishes several precision variants of one model version
// behind one tag as a variant index; InspectIndex lists them, SelectVariant
// picks one for a device's execution providers, and Inspect and Pull given
// WithVariant resolve an index reference to that variant by digest.
//
// # Caveats
//
// Pull trusts nothing but digests: use package signature to decide whether
// an artifact is trusted, then pull it by the verified digest. A Sink must
// keep partial and committed blobs apart; see its documentation.
package ota
