//! Volley's Rust SDK: read batch files, submit batches (streamed in chunks,
//! so no batch is too large for one gRPC message), watch their events,
//! inspect, cancel, and use a batch's memory.
//!
//! # Layout
//! - [`batch_file`] — YAML/JSON batch files → `volley.v1.Batch` (feature
//!   `batch-files`, on by default).
//! - [`matrix`] — `foreach:` on an op, expanded into ops as the file is read.
//! - [`client`] — `Client`, one connection to a coordinator.
//! - [`connect`] — `Connection`: url, token and TLS, for every endpoint.
//! - [`error`] — `ClientError`, statuses mapped back to typed errors.
//! - [`memory_rpc`] — `MemoryRpc`, the one `MemoryService` client (this
//!   SDK's `Memory` and the worker's op memory both call it).
//! - `file_problems` — a batch file's unknown fields (all at once, with a
//!   "did you mean"), non-mapping files and bare-millisecond durations.
//! - [`health`] — `HealthProbe`: grpc.health.v1 `Check` and `Watch` of a
//!   coordinator or a worker's health address.
//! - `trace` — W3C trace context into request metadata.

#[cfg(feature = "batch-files")]
pub mod batch_file;
pub mod client;
pub mod connect;
pub mod error;
#[cfg(feature = "batch-files")]
mod file_problems;
pub mod health;
#[cfg(feature = "batch-files")]
pub mod matrix;
pub mod memory_rpc;
mod trace;

#[cfg(feature = "batch-files")]
pub use batch_file::{
    BatchFileError, FileProblem, parse_batch, parse_batch_in, parse_batch_with_warnings,
    read_batch_file, read_batch_file_with_warnings,
};
pub use client::{Client, Memory, WatchOptions};
pub use connect::{BearerToken, Connection, bearer_value, token_from};
pub use error::ClientError;
pub use health::{HealthProbe, HealthStatus};
pub use memory_rpc::{MemoryEntry, MemoryRpc, PutOptions, Scope, Writer};
pub use volley_proto::{DEFAULT_COORDINATOR_URL, v1};
pub use volley_tls::ClientTlsFiles;
