//! The types the store's verbs take and return.

use std::collections::BTreeMap;

use volley_proto::BatchId;

pub use crate::cause::{Cause, HOPELESS_NAMED, hopeless_message};

/// Op states. The one-letter codes are how the Redis store keeps them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpState {
    Waiting,
    Ready,
    Running,
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
}

impl OpState {
    pub fn code(self) -> &'static str {
        match self {
            OpState::Waiting => "W",
            OpState::Ready => "R",
            OpState::Running => "U",
            OpState::Succeeded => "S",
            OpState::Failed => "F",
            OpState::Skipped => "K",
            OpState::Cancelled => "C",
        }
    }

    pub fn from_code(code: &str) -> Option<OpState> {
        Some(match code {
            "W" => OpState::Waiting,
            "R" => OpState::Ready,
            "U" => OpState::Running,
            "S" => OpState::Succeeded,
            "F" => OpState::Failed,
            "K" => OpState::Skipped,
            "C" => OpState::Cancelled,
            _ => return None,
        })
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            OpState::Succeeded | OpState::Failed | OpState::Skipped | OpState::Cancelled
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BatchState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Lost,
}

impl BatchState {
    pub fn code(self) -> &'static str {
        match self {
            BatchState::Running => "running",
            BatchState::Succeeded => "succeeded",
            BatchState::Failed => "failed",
            BatchState::Cancelled => "cancelled",
            BatchState::Lost => "lost",
        }
    }

    pub fn from_code(code: &str) -> Option<BatchState> {
        Some(match code {
            "running" => BatchState::Running,
            "succeeded" => BatchState::Succeeded,
            "failed" => BatchState::Failed,
            "cancelled" => BatchState::Cancelled,
            "lost" => BatchState::Lost,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnFailure {
    #[default]
    Continue,
    FailFast,
}

/// Priorities, 0 = critical … 3 = low.
pub const PRIORITY_LEVELS: u8 = 4;

/// Where a memory key lives: a batch's own memory, or a named namespace
/// shared by batches and clients.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemoryScope {
    Batch(BatchId),
    Shared(String),
}

impl std::fmt::Display for MemoryScope {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemoryScope::Batch(batch) => write!(formatter, "batch {batch}"),
            MemoryScope::Shared(namespace) => write!(formatter, "namespace {namespace}"),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutOptions {
    pub content_type: String,
    /// Expire the key this long after the write.
    pub ttl_ms: Option<u64>,
    /// Compare-and-set: write only if the key's version is this (0: the key
    /// must not exist); otherwise `StoreError::VersionMismatch`.
    pub if_version: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryValue {
    pub value: Vec<u8>,
    pub content_type: String,
    /// 1 on the first write of the key, +1 on each later write.
    pub version: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PutOutcome {
    pub version: u64,
    /// Ops (of any batch waiting on this scope's key) this write made ready
    /// or moved closer to ready: countdowns it decremented, across batches
    /// (an op whose any-group was already satisfied is not counted).
    pub unblocked: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryKeyInfo {
    pub key: String,
    pub version: u64,
    pub size: u64,
    pub content_type: String,
    /// Unix ms; 0: never.
    pub expires_at_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryChangeKind {
    Put,
    Delete,
}

/// Largest value carried inside a change; larger ones are read with `memory_get`.
pub const CHANGE_VALUE_LIMIT: usize = 64 * 1024;

/// Values larger than this are written as chunks of this size (Redis: one
/// bounded command each, then made visible at once by a small script).
pub const MEMORY_CHUNK_BYTES: usize = 256 * 1024;

/// Changes kept per memory scope by default (older ones are trimmed; a
/// reader resuming before them gets `StoreError::ChangesTrimmed`). Redis
/// trims approximately (`MAXLEN ~`), so it may keep somewhat more.
pub const DEFAULT_CHANGE_LOG_CAP: u64 = 100_000;

/// Content type of values written by `store_as`, and of keys created by
/// `memory_incr`.
pub const TEXT_CONTENT_TYPE: &str = "text/plain";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryChange {
    /// Per scope: 1, 2, 3, … in write order, no gaps.
    pub revision: u64,
    pub key: String,
    pub kind: MemoryChangeKind,
    pub version: u64,
    /// The value of a put up to `CHANGE_VALUE_LIMIT` bytes; `None` for
    /// deletes and larger values.
    pub value: Option<Vec<u8>>,
    pub content_type: String,
    pub at_ms: u64,
}

/// A batch's stored spec: the submission, then each `add_ops` chunk in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredSpec {
    pub base: Vec<u8>,
    pub added: Vec<Vec<u8>>,
}

#[derive(Clone, Debug)]
pub struct NewBatch {
    pub id: BatchId,
    pub name: String,
    /// Where the batch's `store_as` writes and `wait_for` / `wait_for_any`
    /// keys live. `MemoryScope::Batch` always means the batch's own memory
    /// (the id inside is not looked at).
    pub memory: MemoryScope,
    pub max_parallel: u32,
    pub on_failure: OnFailure,
    pub created_ms: u64,
    /// Unix ms at which the batch ends: unfinished ops are cancelled
    /// ("deadline exceeded") and the batch ends `Failed`. 0: no deadline.
    pub deadline_ms: u64,
    /// Opaque to the store: the coordinator's encoding of the batch.
    pub spec: Vec<u8>,
    pub ops: Vec<NewOp>,
    /// `retry_failed: sequential`: once every op has ended with at least one
    /// failed (and no cancel, deadline or fail_fast), the failed and skipped
    /// ops run again in a second pass, one at a time, one final attempt each
    /// (see [`crate::Store::complete`]).
    pub retry_failed_sequential: bool,
    /// How long the batch's records (meta, spec, op states, results,
    /// events, its own memory scope) are kept once it finished, in ms; then
    /// they expire and the batch is unknown. 0: kept until deleted.
    pub retain_ms: u64,
    /// The submitter's tenant (see [`BatchMeta::tenant`]).
    pub tenant: String,
    /// The message of the batch's `BatchSubmitted` event: who submitted it.
    pub submitted_by: String,
    /// How many times each op may run again after losing its worker (its
    /// lease ran out), apart from `max_attempts` (see
    /// [`crate::Store::expire_leases`]). 0: a lost worker is a failure like
    /// any other.
    pub lost_worker_retries: u32,
    /// Set for a submission made with an idempotency key (see
    /// [`crate::Store::create_batch`]): a digest of what was submitted, kept
    /// with the batch. Empty: not idempotent (a reused id is `BatchExists`).
    pub request_digest: String,
}

/// Lost-worker retries per op when a batch does not say (see
/// [`NewBatch::lost_worker_retries`]).
pub const DEFAULT_LOST_WORKER_RETRIES: u32 = 3;

/// How a time reads in errors and events: RFC 3339, UTC, with
/// milliseconds (`2026-12-02T03:04:05.123Z`). `lua/common.lua`'s
/// `rfc3339_ms` spells it identically.
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let since_epoch = std::time::Duration::from_millis(unix_ms);
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + since_epoch).to_string()
}

/// The error of an attempt whose worker was lost: its lease ran out at
/// `lease_until_ms` (`worker` empty when the store never learnt which).
/// `lua/expire_leases.lua` words it identically.
pub fn lost_worker_message(worker: &str, lease_until_ms: u64) -> String {
    let who = if worker.is_empty() {
        "its worker".to_owned()
    } else {
        format!("worker `{worker}`")
    };
    format!(
        "lost: {who} stopped renewing its lease (ran out at {})",
        rfc3339_ms(lease_until_ms)
    )
}

/// What [`crate::Store::create_batch`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    /// The batch was created now.
    New,
    /// An idempotent submission found its batch already there (same id,
    /// tenant and request digest): nothing was written.
    Existing,
}

/// An idempotent [`crate::Store::add_ops`]: the caller's key (per batch)
/// and what to remember under it, written in the same atomic step as the
/// ops (opaque to the store; the coordinator keeps its answer there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpawnOnce {
    pub key: String,
    pub record: String,
}

/// The message of the `OpRetrying` event each failed op gets when its
/// batch starts the sequential pass of `retry_failed: sequential`, `failed`
/// being how many ops failed in the parallel pass (see
/// [`crate::Store::complete`]). `lua/common.lua` words it identically.
pub fn sequential_pass_message(failed: u32) -> String {
    let noun = if failed == 1 { "op" } else { "ops" };
    format!(
        "retry_failed: sequential pass after the parallel pass ({failed} {noun} failed): \
         one last attempt each, one op at a time"
    )
}

/// The message of the `OpRetrying` event each op skipped in the parallel
/// pass gets when the sequential pass queues it again, so that every op's
/// events tell one story (skipped, queued again, then how it ended).
/// `lua/common.lua` words it identically.
pub const SEQUENTIAL_PASS_REQUEUED: &str =
    "retry_failed: sequential pass: queued again (it was skipped in the parallel pass)";

/// When and how an op gets another attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    pub on_failure: bool,
    pub on_timeout: bool,
    pub on_lost_worker: bool,
    /// Delay before attempt n+1: `initial_ms * multiplier^(n-1)`, at most
    /// `max_ms`; with `jitter`, a uniform random part of that. 0: at once.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    pub backoff_multiplier: f64,
    pub backoff_jitter: bool,
}

impl RetryPolicy {
    /// The policy of an op that has none of its own: retry every kind of
    /// failure at once (`Default` too, as a constant the stores can borrow).
    pub const DEFAULT: RetryPolicy = RetryPolicy {
        on_failure: true,
        on_timeout: true,
        on_lost_worker: true,
        backoff_initial_ms: 0,
        backoff_max_ms: 0,
        backoff_multiplier: 2.0,
        backoff_jitter: true,
    };
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::DEFAULT
    }
}

#[derive(Clone, Debug, Default)]
pub struct NewOp {
    /// 0 = critical … 3 = low.
    pub priority: u8,
    /// Runs once its dependencies ended, whatever their end; otherwise it
    /// needs every dependency to succeed and is skipped if one does not.
    pub run_if_always: bool,
    /// At least 1.
    pub max_attempts: u32,
    /// How many ops this one runs after (its in-degree).
    pub deps: u32,
    /// Indices of the ops that run after this one.
    pub dependents: Vec<u32>,
    /// Keys of the batch's memory scope this op waits for (all of them).
    pub wait_for: Vec<String>,
    /// Keys of which any one is enough (on top of all of `wait_for`).
    pub wait_for_any: Vec<String>,
    /// Unix ms after which a still-waiting op fails ("memory key K never
    /// appeared"); 0: it waits as long as it takes.
    pub wait_deadline_ms: u64,
    /// For `add_ops` only: the indices (existing or added) this op runs
    /// after; `deps` must equal its length there, and `dependents` is not
    /// looked at (edges among added ops are derived from `after`). In
    /// `create_batch` it may be left empty: only `deps` and `dependents`
    /// count there.
    pub after: Vec<u32>,
    pub retry: RetryPolicy,
    /// Keys of the batch's own memory this op is declared to write
    /// (`store_as`, a `memory.put` key, `writes: [memory:KEY]`). When every
    /// declared writer of a key has ended and the key does not exist, the
    /// ops still waiting for it are skipped (see [`crate::Store::complete`]).
    /// Not looked at when the batch's memory is a shared namespace (others
    /// may write its keys).
    pub writes: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claimed {
    pub index: u32,
    pub attempt: u32,
}

#[derive(Clone, Debug, Default)]
pub struct Completion {
    pub index: u32,
    pub attempt: u32,
    pub ok: bool,
    /// What kind of failure (ignored when `ok`): decides, with the op's
    /// `RetryPolicy`, whether another attempt follows.
    pub failure: FailureKind,
    /// The handler asked to wait at least this long before another attempt.
    pub retry_after_ms: u64,
    pub output: String,
    pub error: String,
    pub details_json: String,
    pub worker: String,
    /// Unix ms.
    pub started_ms: u64,
    pub duration_ms: u64,
    /// Key of the batch's memory the output is written to on success.
    pub store_as: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailureKind {
    /// An ordinary failure: retried when the policy says `on_failure`.
    #[default]
    Error,
    Timeout,
    /// The worker died, hung (lease expired) or went away.
    LostWorker,
    /// Another attempt cannot help (bad args, refused path): never retried.
    Permanent,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompleteOutcome {
    /// Results recorded as final (succeeded or failed).
    pub recorded: u32,
    /// Ops put back on the ready queue for another attempt.
    pub retried: Vec<u32>,
    /// Indices whose result was stale (op not running, or another attempt).
    pub stale: Vec<u32>,
    /// Ops that became ready because of these results.
    pub became_ready: u32,
    /// Set when these results ended the batch.
    pub finished: Option<BatchState>,
    /// The earliest unix ms at which a retry delayed by backoff becomes
    /// ready (the dispatcher looks again then); `None`: none pending.
    pub next_retry_at_ms: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CancelOutcome {
    /// Ops that were running when cancelled.
    pub running: Vec<Claimed>,
    /// Ops this call cancelled (running ones included).
    pub cancelled: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    BatchSubmitted,
    OpStarted,
    OpSucceeded,
    OpFailed,
    OpSkipped,
    OpCancelled,
    OpRetrying,
    BatchFinished,
    /// `add_ops` grew the batch; the message says how many ops.
    OpsAdded,
    /// The coordinator noted that something may keep the op from ever
    /// running (`Store::note_blocked`); the message says what. The op has
    /// not ended: this changes no state.
    OpBlocked,
}

impl EventKind {
    pub fn code(self) -> &'static str {
        match self {
            EventKind::BatchSubmitted => "submitted",
            EventKind::OpStarted => "started",
            EventKind::OpSucceeded => "succeeded",
            EventKind::OpFailed => "failed",
            EventKind::OpSkipped => "skipped",
            EventKind::OpCancelled => "cancelled",
            EventKind::OpRetrying => "retrying",
            EventKind::BatchFinished => "finished",
            EventKind::OpsAdded => "added",
            EventKind::OpBlocked => "blocked",
        }
    }

    pub fn from_code(code: &str) -> Option<EventKind> {
        Some(match code {
            "submitted" => EventKind::BatchSubmitted,
            "started" => EventKind::OpStarted,
            "succeeded" => EventKind::OpSucceeded,
            "failed" => EventKind::OpFailed,
            "skipped" => EventKind::OpSkipped,
            "cancelled" => EventKind::OpCancelled,
            "retrying" => EventKind::OpRetrying,
            "finished" => EventKind::BatchFinished,
            "added" => EventKind::OpsAdded,
            "blocked" => EventKind::OpBlocked,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// 1, 2, 3, … with no gaps within a batch.
    pub seq: u64,
    pub at_ms: u64,
    pub kind: EventKind,
    pub op_index: Option<u32>,
    pub attempt: u32,
    pub worker: String,
    /// Reason of a skip, error of a failure, … (may be empty).
    pub message: String,
    /// What the message names as data (ops by index), for the messages
    /// that name ops (see [`Cause`]); `None` for the others, and for events
    /// stored before causes were kept.
    pub cause: Option<Cause>,
    /// Set on `BatchFinished`.
    pub batch_state: Option<BatchState>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchMeta {
    pub id: BatchId,
    pub name: String,
    pub state: BatchState,
    pub created_ms: u64,
    pub finished_ms: Option<u64>,
    pub max_parallel: u32,
    pub on_failure: OnFailure,
    pub total: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub skipped: u32,
    pub cancelled: u32,
    pub running: u32,
    /// Why the batch ended the way it did, when not all succeeded.
    pub error: String,
    /// The tenant of the token that submitted it ("" for a store that
    /// predates tenants: the default tenant's).
    pub tenant: String,
    /// The durations of its ended ops, summed: its sequential time so far
    /// (what [`crate::Store::op_durations`] adds up to), kept with the
    /// counters so a list of batches shows a speedup without reading their
    /// ops. 0 for a batch stored before this was kept.
    pub sequential_ms: u64,
}

impl BatchMeta {
    pub fn done(&self) -> u32 {
        self.succeeded + self.failed + self.skipped + self.cancelled
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpRecord {
    pub state: OpState,
    pub attempts: u32,
    pub worker: String,
    /// Unix ms; 0 when it never started.
    pub started_ms: u64,
    pub duration_ms: u64,
    pub output: String,
    /// The error of a failure, or why it was skipped or cancelled.
    pub error: String,
    /// What `error` names as data when the store wrote it (see [`Cause`]);
    /// `None` for a worker's error, and for records stored before causes
    /// were kept.
    pub cause: Option<Cause>,
    pub details_json: String,
}

/// An op's record without its output and details: what a picture of a
/// whole batch draws (see [`crate::Store::op_summaries`]). Reading it never
/// moves an op's output, which may be megabytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpSummary {
    pub state: OpState,
    pub attempts: u32,
    pub worker: String,
    /// Unix ms; 0 when it never started.
    pub started_ms: u64,
    pub duration_ms: u64,
    /// The first line of the record's `error`, at most
    /// [`SUMMARY_ERROR_MAX_BYTES`] bytes (cut on a character boundary).
    pub error_first_line: String,
    /// As in [`OpRecord::cause`].
    pub cause: Option<Cause>,
}

/// The bound of [`OpSummary::error_first_line`]: a row shows one short line.
pub const SUMMARY_ERROR_MAX_BYTES: usize = 200;

impl OpSummary {
    /// The summary of a whole record (what both stores must agree with).
    pub fn of_record(record: &OpRecord) -> OpSummary {
        OpSummary {
            state: record.state,
            attempts: record.attempts,
            worker: record.worker.clone(),
            started_ms: record.started_ms,
            duration_ms: record.duration_ms,
            error_first_line: summary_error_line(&record.error),
            cause: record.cause.clone(),
        }
    }
}

/// The first line of `error`, cut to [`SUMMARY_ERROR_MAX_BYTES`] on a
/// character boundary.
pub fn summary_error_line(error: &str) -> String {
    let line = error.lines().next().unwrap_or_default();
    if line.len() <= SUMMARY_ERROR_MAX_BYTES {
        return line.to_owned();
    }
    let mut end = SUMMARY_ERROR_MAX_BYTES;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_owned()
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Doorbell {
    /// The batch changed in a way that may make ops claimable (ops became
    /// ready, were handed back, the batch was cancelled…); its events
    /// changed too.
    Batch(BatchId),
    /// Only the batch's events changed (a claim's `started`, an
    /// `OP_BLOCKED` note): watchers re-read, dispatchers need not claim.
    /// Claims ring this one so that a claim never wakes every
    /// coordinator into another, empty claim.
    Events(BatchId),
    /// The batch was created and is in the active set (a batch that ends at
    /// creation, being empty, never is: no `Started`, no `Ended`). Other
    /// coordinators sharing the store learn of new work from it.
    Started(BatchId),
    /// The batch left the active set: it finished (`complete`, `expire_*`,
    /// `add_ops`), was cancelled, or was marked lost by `mark_lost`.
    Ended(BatchId),
    /// A memory scope changed (watchers re-read its changes).
    Memory(MemoryScope),
    /// Bells may have been missed (the subscription reconnected): re-read
    /// every active batch.
    Resync,
}

/// What an op still waits for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpWaits {
    /// Dependencies not yet counted down plus keys not yet arrived.
    pub pending: u32,
    /// `wait_for` / `wait_for_any` keys not yet arrived.
    pub missing_keys: Vec<String>,
    /// Unix ms its lease runs out, when running.
    pub lease_until_ms: Option<u64>,
    /// Unix ms a backoff-delayed retry becomes ready, when delayed.
    pub retry_at_ms: Option<u64>,
}

/// A coordinator's hold on a batch (see `Store::hold_batch`). `token` grows
/// with every new hold of the batch, so a coordinator whose hold ran out and
/// was taken over carries a smaller token than the new owner: verbs that take
/// a fence refuse it (`StoreError::NotOwner`) instead of acting twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub coordinator: String,
    pub token: u64,
}

/// A `publish_workers` entry is dropped for good (not only left out of
/// `workers`) once its `until_ms` is this far in the past.
pub const WORKERS_FORGET_AFTER_MS: u64 = 60_000;

/// The most items `Store::publish_ready_gauge` keeps in the ready gauge
/// ([`crate::keys::QUEUE_READY`]): enough for any autoscaler to decide on,
/// and a bound on what the gauge costs Redis (about 1 MiB at most).
pub const READY_GAUGE_CAP: u64 = 100_000;

/// What the ready queues of some batches hold (`Store::ready_depth`): ops
/// ready and not yet claimed, per priority (index 0 critical … 3 low).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadyDepth {
    pub by_priority: [u64; PRIORITY_LEVELS as usize],
}

impl ReadyDepth {
    /// Every priority together.
    pub fn total(&self) -> u64 {
        self.by_priority.iter().sum()
    }
}

/// One worker connected to some coordinator, as that coordinator publishes
/// it to the cluster (`Store::publish_workers`).
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct WorkerEntry {
    pub worker_id: String,
    /// Op kinds it runs.
    pub kinds: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Ops it runs at once.
    pub slots: u32,
    /// Slots in use when published.
    pub busy: u32,
    /// It hands its work back and takes no more (absent in an entry of an
    /// older coordinator: not draining).
    pub draining: bool,
}

/// An API token as the store keeps it: never the token itself, only its
/// SHA-256 hash (hex), with who it speaks for. `revoked_ms` and
/// `last_used_ms` are kept apart from the record (a revocation and a use
/// are single writes) and filled in when it is read.
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TokenRecord {
    /// Public, printed by `volley token ls` and in audit logs.
    pub id: String,
    /// SHA-256 of the whole token, lowercase hex.
    pub hash: String,
    /// `client`, `worker` or `admin`.
    pub role: String,
    pub tenant: String,
    /// A free-form note (who it is for).
    pub name: String,
    pub created_ms: u64,
    /// Unix ms after which it is refused; 0: never.
    pub expires_ms: u64,
    /// For a worker token: the only labels it may register (`k=v`, all of
    /// them a subset of these); empty: any.
    pub labels: BTreeMap<String, String>,
    /// For a worker token: the only kinds it may register; empty: any.
    pub kinds: Vec<String>,
    #[serde(skip)]
    pub revoked_ms: Option<u64>,
    #[serde(skip)]
    pub last_used_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_kind_codes_round_trip() {
        use EventKind::*;
        for kind in [
            BatchSubmitted,
            OpStarted,
            OpSucceeded,
            OpFailed,
            OpSkipped,
            OpCancelled,
            OpRetrying,
            BatchFinished,
            OpsAdded,
            OpBlocked,
        ] {
            assert_eq!(EventKind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(OpBlocked.code(), "blocked");
        assert_eq!(EventKind::from_code("nope"), None);
    }

    #[test]
    fn sequential_pass_message_counts_ops() {
        assert_eq!(
            sequential_pass_message(1),
            "retry_failed: sequential pass after the parallel pass (1 op failed): \
             one last attempt each, one op at a time"
        );
        assert!(sequential_pass_message(3).contains("(3 ops failed)"));
    }
}
