//! The coordinator's own vocabulary: what its domain API
//! ([`crate::service::Coordinator`], [`crate::service::WorkerSession`])
//! takes and answers, so that proto types stay at the gRPC edge
//! (`grpc/`), where they are converted.
//!
//! Not everything is here yet, and why:
//! - A submitted batch stays a `volley.v1.Batch`: the planner
//!   (`volley-plan`) validates and plans that very message, and the store
//!   keeps it encoded as the batch's spec.
//! - A batch's status and its event stream are still built as
//!   `v1::BatchStatus` / `v1::BatchEvent` (by `report.rs` and `convert.rs`).
//! - What the coordinator sends a worker (`v1::CoordinatorMessage`) is
//!   built by the dispatcher, which writes to the session's stream.

use std::collections::BTreeMap;

use volley_proto::BatchId;
use volley_store::{BatchState, FailureKind};

/// What a submission came to: the batch id (the first call's, for a
/// retried idempotent submission), its op count, and what is worth saying.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmitOutcome {
    pub batch: BatchId,
    pub op_count: u32,
    /// Planner warnings, then kinds no connected worker runs.
    pub warnings: Vec<String>,
}

/// What a cancel did: the batch's state after it (`None` when its record
/// is gone) and how many ops it cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CancelOutcome {
    pub state: Option<BatchState>,
    pub cancelled: u32,
}

/// One line of `list`: a batch's record, counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchSummary {
    pub batch: BatchId,
    pub name: String,
    pub state: BatchState,
    pub created_ms: u64,
    pub total: u32,
    pub done: u32,
    /// Never empty: a batch stored before tenants is the default tenant's.
    pub tenant: String,
    /// `None` while it runs.
    pub finished_ms: Option<u64>,
}

/// A live worker of the cluster and how busy it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerInfo {
    pub worker_id: String,
    pub kinds: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub slots: u32,
    pub busy: u32,
    /// It is handing its work back (shutting down) and takes no more.
    pub draining: bool,
    /// The coordinator it is connected to.
    pub coordinator: String,
}

/// One attempt of one op, as a worker names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpRef {
    pub batch: BatchId,
    pub index: u32,
    pub attempt: u32,
}

/// An op a registering worker says it still runs, with the lease ticket
/// that lets it keep it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldOp {
    pub op: OpRef,
    pub ticket: String,
}

/// What a worker says about itself as it connects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerRegistration {
    /// Empty: the coordinator names it `worker-<conn>`.
    pub worker_id: String,
    pub kinds: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub slots: u32,
    /// Ops it runs from an earlier session (a reconnect).
    pub running: Vec<HeldOp>,
}

/// How one attempt of an op ended, as its worker reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpResult {
    pub op: OpRef,
    pub ok: bool,
    /// What kind of failure (ignored when `ok`).
    pub failure: FailureKind,
    /// The handler asked to wait at least this long before another attempt.
    pub retry_after_ms: u64,
    pub output: String,
    pub error: String,
    pub details_json: String,
    /// Unix ms.
    pub started_ms: u64,
    pub duration_ms: u64,
}
