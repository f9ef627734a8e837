//! Volley's coordinator: accepts batches, validates and plans them, stores
//! them, dispatches ready ops to connected workers and streams progress.
//!
//! It keeps no state that the store does not also hold: plans are a cache of
//! the spec stored with each batch, and a restarted coordinator picks the
//! active batches up from the store.
//!
//! # Layout
//! - [`auth`] — who is calling: tokens, roles, tenants, op capabilities.
//! - [`config`] — `CoordinatorConfig`.
//! - [`error`] — `CoordinatorError`, what every domain call can fail with.
//! - [`service`] — `Coordinator`, the domain API the gRPC adapters call
//!   (`service/`: submit, status, watch, workers).
//! - [`domain`] — what that API takes and answers (`SubmitOutcome`,
//!   `OpResult`, `WorkerInfo`…), converted to and from proto in `grpc/`.
//! - [`memory`] — memory scopes, writes with fencing, watch and wait.
//! - [`metrics`] — the coordinator's metrics (`metrics` facade) and the
//!   counting layer at its store boundary.
//! - `spawn` — ops a running op adds to its batch.
//! - [`idempotency`] — idempotency keys of submit and spawn: key checks,
//!   batch ids derived from them, request digests.
//! - `tokens` — creating, listing and revoking API tokens (admin).
//! - `why` — why an op is not running.
//! - `dispatch`: the dispatcher task: worker credits, batch parallelism,
//!   routing by kind and labels, templates filled in at dispatch.
//! - `plans`: the cache of planned batches.
//! - `report`: builds a batch's final report (timings, critical path).
//! - `tracing_ctx`: a batch's trace context (stored with it) and the span
//!   of each op's dispatch.
//! - [`grpc`] — thin tonic adapters and the server (with health and
//!   reflection).

pub mod auth;
pub mod config;
mod convert;
mod dispatch;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod idempotency;
mod logs;
pub mod memory;
pub mod metrics;
mod plans;
mod report;
pub mod service;
mod spawn;
mod tokens;
mod tracing_ctx;
pub mod views;
mod why;

pub use config::CoordinatorConfig;
pub use error::CoordinatorError;
pub use grpc::serve;
pub use service::Coordinator;
