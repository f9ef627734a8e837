//! Volley's public contract: the generated `volley.v1` messages and services,
//! the id newtypes every crate passes around, and (below) which gRPC code a
//! failure travels as.
//!
//! # Status codes
//! The mapping itself is code, not data, and lives with the errors it maps:
//! `From<CoordinatorError> for Status` in `coordinator/src/grpc/status.rs`
//! (the only place a domain error becomes a status; every variant matched
//! explicitly) and, back on the client, `From<Status> for ClientError` in
//! `client/src/error.rs` (whose `is_retryable()` is true for `UNAVAILABLE`
//! and transport failures only). What a caller can rely on:
//!
//! | Code | When |
//! |---|---|
//! | `INVALID_ARGUMENT` | an invalid batch (details: `ValidationFailure`, every problem with op id and field), a malformed request, a value too large, a bad token request, a message the codec cannot decode |
//! | `NOT_FOUND` | no such batch (or not visible to the caller's tenant) |
//! | `ALREADY_EXISTS` | a batch or token id already taken |
//! | `FAILED_PRECONDITION` | a memory write's version check failed, a stale writer, a value that is not an integer, a batch that cannot grow, a batch owned by another coordinator |
//! | `OUT_OF_RANGE` | memory changes asked from a revision no longer kept: read the keys again |
//! | `DEADLINE_EXCEEDED` | a memory wait timed out |
//! | `UNAUTHENTICATED` / `PERMISSION_DENIED` | no valid token / the token's role or tenant may not do this |
//! | `UNAVAILABLE` | the coordinator is shutting down, or the store is unreachable for now (retryable) |
//! | `DATA_LOSS` | the store restarted empty: state in flight was lost |
//! | `INTERNAL` | a corrupt record, or a store error retrying cannot fix |
//!
//! The CLI turns these into exit codes (`cli/src/exit.rs`).
//!
//! # Layout
//! - `v1`: generated code (never edited by hand).
//! - [`codec`] — the services' codec: prost, with malformed input refused
//!   as INVALID_ARGUMENT.
//! - [`ids`] — `BatchId`, `OpId`, `WorkerId`.
//! - [`streams`] — an op's stdout and stderr, read from its status.
//! - [`words`] — the words every view prints for states and event kinds.
//! - [`FILE_DESCRIPTOR_SET`] — the encoded descriptors, for gRPC reflection.

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("volley.v1");
}

pub mod codec;
pub mod digest;
pub mod ids;
pub mod streams;
pub mod words;

/// The encoded `FileDescriptorSet` of `volley/v1/volley.proto` (and what it
/// imports), for gRPC server reflection: `grpcurl`, Postman and friends can
/// list and call Volley's services without a copy of the `.proto`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/volley_descriptor.bin"));

pub use ids::{BatchId, OpId, WorkerId};

/// The one spelling of the coordinator's default address, so that
/// [`DEFAULT_COORDINATOR_ADDR`] and [`DEFAULT_COORDINATOR_URL`] cannot drift.
macro_rules! default_coordinator_addr {
    () => {
        "127.0.0.1:7070"
    };
}

/// Where a coordinator listens by default (`volley coordinator --listen`).
pub const DEFAULT_COORDINATOR_ADDR: &str = default_coordinator_addr!();

/// Where clients and workers look for a coordinator by default
/// (`--coordinator`, `VOLLEY_COORDINATOR`).
pub const DEFAULT_COORDINATOR_URL: &str = concat!("http://", default_coordinator_addr!());

/// Largest gRPC message either side accepts. Batches are streamed in chunks
/// well below this; reports of large batches may exceed gRPC's 4 MiB default.
pub const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

/// Response header of `WatchMemory`: the store epoch the stream's
/// revisions belong to. A client resuming sends it back as
/// `WatchMemoryRequest.store_epoch`.
pub const STORE_EPOCH_HEADER: &str = "volley-store-epoch";

/// Response header of `WatchMemory`: the revision the stream starts after
/// (the request's `after_revision`, or the scope's revision when that was 0).
pub const WATCH_AFTER_HEADER: &str = "volley-watch-after";

/// Response header of `WatchMemory`: how many changes of the existing keys
/// (`include_existing`) come first, all at the stream's start revision.
pub const WATCH_EXISTING_HEADER: &str = "volley-watch-existing";
