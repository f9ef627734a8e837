//! Volley's worker SDK: the [`Handler`] trait users implement for their own
//! op kinds, the [`Registry`] of kinds a worker runs, and the runtime that
//! connects to a coordinator, runs the ops it assigns and streams the results
//! back. The built-in kinds (`noop`, `echo`, `shell`, …) are handlers of
//! their own crate, `volley-builtins`, so a worker that runs only its own
//! kinds builds none of what they need.
//!
//! A custom worker is a [`Registry`] of your kinds (plus, if you want them,
//! `volley_builtins`' `Registry::with_builtins`) handed to [`run_worker`]:
//!
//! ```no_run
//! use volley_worker::{OpOutput, Registry, WorkerConfig, handler_fn, run_worker};
//! # async fn example() -> Result<(), volley_worker::WorkerError> {
//! let mut registry = Registry::new();
//! registry.register("upper", handler_fn(|_ctx, args| async move {
//!     let text = args["text"].as_str().unwrap_or_default().to_uppercase();
//!     Ok(OpOutput::text(text))
//! }));
//! let config = WorkerConfig::new(volley_worker::DEFAULT_COORDINATOR_URL);
//! run_worker(config, registry, volley_worker::CancellationToken::new()).await
//! # }
//! ```
//!
//! # Layout
//! - [`handler`] — `Handler`, `OpContext`, `OpOutput`, `HandlerError`, `handler_fn`.
//! - [`registry`] — `Registry` (kind name → handler; kinds held but not
//!   advertised).
//! - [`confine`] — resolving paths under the worker's root and refusing escapes.
//! - [`memory`] — the `MemoryStore` behind `ctx.memory()` (scopes, versions,
//!   compare-and-set, ttl, waits), `LocalMemory` for tests.
//! - [`spawn`] — `ctx.spawn`: adding ops to the running batch (`OpSpawner`).
//! - [`executor`] — runs one assignment (args, timeout, cancel) into a result.
//! - [`metrics`] — the worker's metrics (`metrics` facade): slots, ops by
//!   kind and outcome, op durations, connected, draining.
//! - [`tracing_ctx`] — an op's span joins its batch's trace (W3C context from
//!   the assignment); the same context for a host program's environment.
//! - `ops` — the ops a worker runs and the results it still owes, kept
//!   across coordinator sessions; the drain's clock.
//! - [`runtime`] — `WorkerConfig`, `run_worker`: connect, register, dispatch,
//!   batch results, heartbeat, reconnect (ops carry on), drain.
//! - [`grpc`] — the tonic side: channel setup (the SDK's endpoint builder
//!   with keepalives), the session stream, the coordinator-backed
//!   `MemoryStore` (the SDK's `MemoryRpc`) and `OpSpawner`.

pub mod confine;
pub mod executor;
pub mod grpc;
pub mod handler;
pub mod memory;
pub mod metrics;
pub(crate) mod ops;
pub mod registry;
pub mod runtime;
pub mod spawn;
#[cfg(test)]
mod test_kinds;
pub mod tracing_ctx;

pub use confine::{ConfineError, Root};
pub use executor::Executor;
pub use grpc::{ConnectError, GrpcMemory, GrpcSpawner, connect_channel};
pub use handler::{
    DEFAULT_MAX_OUTPUT, FnHandler, Handler, HandlerError, MemoryHandle, OpContext,
    OpContextBuilder, OpOutput, handler_fn,
};
pub use memory::{
    LocalMemory, MemoryEntry, MemoryError, MemoryScope, MemoryStore, MemoryWriter, PutOptions,
};
pub use registry::Registry;
pub use runtime::{WorkerConfig, WorkerError, default_worker_id, run_worker};
pub use spawn::{OpSpawner, SpawnError, SpawnOutcome};

/// Re-exported so custom handlers can `#[volley_worker::async_trait]`.
pub use async_trait::async_trait;
/// Re-exported so users need not add tokio-util for the shutdown token.
pub use tokio_util::sync::CancellationToken;
/// Where a worker looks for its coordinator by default (`http://127.0.0.1:7070`).
pub use volley_proto::DEFAULT_COORDINATOR_URL;
/// The contract's messages (`v1::Op` for [`OpContext::spawn`], `v1::Problem`),
/// re-exported so custom workers need not depend on `volley-proto`.
pub use volley_proto::v1;
