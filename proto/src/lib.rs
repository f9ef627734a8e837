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
