//! Volley's worker library: the [`Handler`] trait users implement for their
//! own op kinds, the built-in kinds (`noop`, `echo`, `sleep`, `read`, `write`,
//! `glob`, `grep`, `shell`, `memory.put`, `memory.get`), and the runtime that
//! connects to a coordinator, runs the ops it assigns and streams the results
//! back.
//!
//! A custom worker is a [`Registry`] (built-ins plus your kinds) handed to
//! [`run_worker`]:
//!
//! ```no_run
//! use volley_worker::{BuiltinConfig, OpOutput, Registry, WorkerConfig, handler_fn, run_worker};
//! # async fn example() -> Result<(), volley_worker::WorkerError> {
//! let builtin_config = BuiltinConfig::default();
//! let mut registry = Registry::with_builtins(&builtin_config);
//! registry.register("upper", handler_fn(|_ctx, args| async move {
//!     let text = args["text"].as_str().unwrap_or_default().to_uppercase();
//!     Ok(OpOutput::text(text))
//! }));
//! let config = WorkerConfig::new("http://127.0.0.1:7070");
//! run_worker(config, registry, volley_worker::CancellationToken::new()).await
//! # }
//! ```
//!
//! # Layout
//! - [`handler`] — `Handler`, `OpContext`, `OpOutput`, `HandlerError`, `handler_fn`.
//! - [`registry`] — `Registry` (kind name → handler) and `BuiltinConfig`.
//! - [`builtins`] — the built-in kinds, one module per family.
//! - [`confine`] — resolving paths under the worker's root and refusing escapes.
//! - [`memory`] — the `MemoryStore` the memory kinds use, `LocalMemory` for tests
//!   and embedded runs.
//! - [`executor`] — runs one assignment (args, timeout, cancel) into a result.
//! - [`runtime`] — `WorkerConfig`, `run_worker`: connect, register, dispatch,
//!   batch results, heartbeat, reconnect, drain.
//! - [`grpc`] — the tonic side: channel setup, the session stream, the
//!   coordinator-backed `MemoryStore`.

pub mod builtins;
pub mod confine;
pub mod executor;
pub mod grpc;
pub mod handler;
pub mod memory;
pub mod registry;
pub mod runtime;

pub use confine::{ConfineError, Root};
pub use executor::Executor;
pub use grpc::{ConnectError, GrpcMemory, connect_channel};
pub use handler::{
    FnHandler, Handler, HandlerError, MemoryHandle, OpContext, OpContextBuilder, OpOutput,
    handler_fn,
};
pub use memory::{LocalMemory, MemoryError, MemoryStore};
pub use registry::{BuiltinConfig, Registry};
pub use runtime::{WorkerConfig, WorkerError, default_worker_id, run_worker};

/// Re-exported so custom handlers can `#[volley_worker::async_trait]`.
pub use async_trait::async_trait;
/// Re-exported so users need not add tokio-util for the shutdown token.
pub use tokio_util::sync::CancellationToken;
