//! The coordinator's own vocabulary: what its domain API
//! ([`crate::service::Coordinator`], [`crate::service::WorkerSession`])
//! takes and answers, so that proto types stay at the gRPC edge
//! (`grpc/`), where they are converted.
//!
//! Two exceptions, and why:
//! - A submitted batch stays a `volley.v1.Batch`: the planner
//!   (`volley-plan`) validates and plans that very message, and the store
//!   keeps it encoded as the batch's spec.
//! - What the coordinator sends a worker (`v1::CoordinatorMessage`) is
//!   built by the dispatcher, which writes to the session's stream.

use std::collections::BTreeMap;

use volley_proto::BatchId;
use volley_store::FailureKind;
/// The states and event kinds the domain types carry (the store's own),
/// so that a caller of the domain API needs no store crate to read them.
pub use volley_store::{BatchState, EventKind, OpState};

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
    /// Its ended ops' durations, summed, kept in its record (so a list that
    /// polls reads no op; 0 for a batch stored before the store kept it).
    pub sequential_ms: u64,
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

/// A batch's report (`status`): its record counted and timed, the critical
/// path, and the ops asked for. Built by `report.rs`.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchReport {
    pub batch: BatchId,
    pub name: String,
    pub state: BatchState,
    /// Unix ms.
    pub created_ms: u64,
    pub wall_ms: u64,
    /// Every op's duration, summed (0 when the report did not read them).
    pub sequential_ms: u64,
    /// `sequential_ms / wall_ms`, 0 when unknown.
    pub speedup: f64,
    pub total: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub skipped: u32,
    pub cancelled: u32,
    pub running: u32,
    /// The ops asked for, in index order (a page of them, or none).
    pub ops: Vec<OpReport>,
    /// Op ids in order; empty when the report did not read the durations.
    pub critical_path: Vec<String>,
    pub critical_path_ms: u64,
    /// Why the batch ended, if it failed as a whole.
    pub error: String,
    /// The coordinator that owns a running batch (empty once finished).
    pub owner: String,
}

/// One op of a [`BatchReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpReport {
    pub id: String,
    pub kind: String,
    pub state: OpState,
    pub attempts: u32,
    pub worker: String,
    /// Since the batch was created; 0 when it never started.
    pub started_ms: u64,
    pub duration_ms: u64,
    pub output: String,
    /// Its error, with the ops a cause names by index named by id.
    pub error: String,
    pub details_json: String,
    /// The ids of the ops it depends on.
    pub after: Vec<String>,
    /// The `foreach:` op it was expanded from.
    pub group: Option<String>,
}

/// One event of a batch's stream, as `watch` answers it: numbered with no
/// gaps, ops named by id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchEvent {
    pub seq: u64,
    /// Unix ms.
    pub at_ms: u64,
    pub kind: EventKind,
    pub op_id: Option<String>,
    pub attempt: u32,
    pub worker: String,
    pub message: String,
    /// Set on `BatchFinished`.
    pub batch_state: Option<BatchState>,
}

/// What a spawn added: how many ops, and what is worth saying.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpawnOutcome {
    pub op_count: u32,
    pub warnings: Vec<String>,
}

/// Why an op is where it is (`volley why`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WhyReport {
    pub op_id: String,
    pub state: OpState,
    /// Most important first.
    pub reasons: Vec<String>,
}
