//! Volley's public contract: the generated `volley.v1` messages and services,
//! the id newtypes every crate passes around, and the table that maps error
//! codes to gRPC codes.
//!
//! # Layout
//! - `v1`: generated code (never edited by hand).
//! - [`codec`] — the services' codec: prost, with malformed input refused
//!   as INVALID_ARGUMENT.
//! - [`ids`] — `BatchId`, `OpId`, `WorkerId`.
//! - [`FILE_DESCRIPTOR_SET`] — the encoded descriptors, for gRPC reflection.

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("volley.v1");
}

pub mod codec;
pub mod ids;

/// The encoded `FileDescriptorSet` of `volley/v1/volley.proto` (and what it
/// imports), for gRPC server reflection: `grpcurl`, Postman and friends can
/// list and call Volley's services without a copy of the `.proto`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/volley_descriptor.bin"));

pub use ids::{BatchId, OpId, WorkerId};

/// Default port of the coordinator's gRPC endpoint.
pub const DEFAULT_COORDINATOR_ADDR: &str = "127.0.0.1:7070";

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
