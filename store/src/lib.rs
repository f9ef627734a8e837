//! Volley's coordination state. The coordinator talks to it only through the
//! [`Store`] trait's verbs (`create_batch`, `claim`, `complete`, …), never
//! through connections, so the Redis store and the in-memory store behind
//! `volley run` are interchangeable and pass one conformance suite.
//!
//! Readiness is a countdown: each op stores how many dependencies and
//! memory keys it still waits for; a completion decrements its dependents and
//! pushes those reaching zero onto the batch's ready queues. Nothing on the
//! hot path scans the batch.
//!
//! # Layout
//! - [`model`] — the types the verbs take and return.
//! - `cause` — [`Cause`]: the ops a skip's or a fail_fast cancel's message
//!   names, as data beside the message.
//! - [`keys`] — every Redis key name, the source `lua/common.lua` follows
//!   (`tests/keys_spelling.rs` checks they agree).
//! - [`redis_store`] — the Redis implementation; its scripts live in `lua/`.
//! - [`redis_connect`] — how it reaches Redis (URL, TLS, password) and
//!   [`redact_url`], the one way a Redis URL is shown.
//! - [`memory_store`] — the in-memory implementation, same semantics.
//! - `common` — what both compute alike from a batch's ops (memory waits,
//!   declared writers, added edges, backoff multiplier), so neither
//!   implementation imports the other.
//! - `conformance` — the suite both implementations must pass, by section
//!   under `conformance/`; compiled only with the `conformance` feature,
//!   which the store's own tests enable.

mod cause;
mod common;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod keys;
pub mod memory_store;
pub mod model;
pub mod redis_connect;
pub mod redis_store;
mod words;

use async_trait::async_trait;
use volley_proto::BatchId;

pub use cause::*;
pub use memory_store::MemoryStore;
pub use model::*;
pub use redis_connect::{RedisConnect, RedisConnectError, redact_url};
pub use redis_store::RedisStore;

/// What can go wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("batch {0} not found")]
    BatchNotFound(BatchId),
    #[error("batch {0} already exists")]
    BatchExists(BatchId),
    #[error("corrupt record in the store: {0}")]
    Corrupt(String),
    #[error("the store restarted empty (epoch {expected} is gone): state in flight was lost")]
    EpochLost { expected: String },
    #[error("memory key `{key}` is at version {actual}, not {expected}")]
    VersionMismatch {
        key: String,
        expected: u64,
        actual: u64,
    },
    #[error("memory key `{key}` does not hold an integer")]
    NotAnInteger { key: String },
    #[error(
        "changes of {scope} after revision {after} are no longer kept (oldest kept: {oldest}); read the keys again"
    )]
    ChangesTrimmed {
        scope: String,
        after: u64,
        oldest: u64,
    },
    #[error("batch {batch} cannot grow: {reason}")]
    CannotAddOps {
        batch: BatchId,
        reason: AddOpsRefusal,
    },
    #[error("token id {0} is taken")]
    TokenExists(String),
    /// An idempotent `create_batch` found its id taken by another
    /// submission (another request digest, or another tenant).
    #[error("batch {0} was created by another submission")]
    IdempotencyConflict(BatchId),
    /// An idempotent `create_batch` found its batch still being written by
    /// another call (its claim is younger than [`CREATING_STALE_MS`]); try
    /// again shortly.
    #[error("batch {0} is still being created by an earlier call")]
    StillCreating(BatchId),
    /// An idempotent `add_ops` found its key already used in this batch:
    /// nothing was added; `record` is what the first call stored.
    #[error("batch {batch} already has ops spawned with this idempotency key")]
    AlreadySpawned { batch: BatchId, record: String },
    /// A verb that takes a [`Fence`] was called with one that is not the
    /// batch's current live hold: another coordinator took the batch over
    /// (or the hold ran out or was released). Nothing was changed.
    #[error(
        "batch {batch} is owned by {}, not by this coordinator's fence",
        owner_words(.holder)
    )]
    NotOwner {
        batch: BatchId,
        /// The coordinator holding the batch now, if any.
        holder: Option<String>,
    },
}

/// Why [`Store::add_ops`] refused to grow a batch, as data: the caller
/// tells "another spawn grew it first, plan again"
/// ([`AddOpsRefusal::FirstIndexTaken`]) from the rest by type.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddOpsRefusal {
    /// The batch has ended (or was lost).
    #[error("batch is {}", .0.code())]
    NotRunning(BatchState),
    /// The batch is fail_fast and one of its ops failed for good.
    #[error("fail_fast fired")]
    FailFastFired,
    /// The new ops were numbered from `first_index` but the batch has
    /// `total` ops: another call grew it in between.
    #[error("first_index is {first_index} but the batch has {total} ops")]
    FirstIndexTaken { first_index: u32, total: u32 },
    /// New op `index` declares `deps` dependencies but lists `after` of them.
    #[error("op {index} has deps {deps} but {after} `after` entries")]
    DepsMismatch { index: u32, deps: u32, after: u32 },
    /// New op `index` runs after `before`, itself or an op that does not exist.
    #[error("op {index} runs after op {before}")]
    BadAfter { index: u32, before: u32 },
}

fn owner_words(holder: &Option<String>) -> String {
    match holder {
        Some(coordinator) => format!("coordinator `{coordinator}`"),
        None => "nobody (its hold ran out or was released)".to_owned(),
    }
}

impl StoreError {
    /// True when trying again later may succeed (connection trouble).
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Redis(error) => {
                error.is_io_error()
                    || error.is_connection_dropped()
                    || error.is_connection_refusal()
                    || error.is_timeout()
                    // A restarted Redis answers LOADING while it reads its AOF.
                    || matches!(
                        error.kind(),
                        redis::ErrorKind::Server(
                            redis::ServerErrorKind::BusyLoading
                                | redis::ServerErrorKind::TryAgain
                                | redis::ServerErrorKind::MasterDown
                        )
                    )
            }
            // Another call is writing the batch: it is there in a moment.
            StoreError::StillCreating(_) => true,
            StoreError::BatchNotFound(_)
            | StoreError::BatchExists(_)
            | StoreError::IdempotencyConflict(_)
            | StoreError::AlreadySpawned { .. }
            | StoreError::Corrupt(_)
            | StoreError::EpochLost { .. }
            | StoreError::VersionMismatch { .. }
            | StoreError::NotAnInteger { .. }
            | StoreError::ChangesTrimmed { .. }
            | StoreError::CannotAddOps { .. }
            | StoreError::TokenExists(_)
            | StoreError::NotOwner { .. } => false,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// How long an idempotent `create_batch` waits for another call that is
/// still writing the same batch before it takes over (that call's
/// coordinator died half way): far longer than writing even a million-op
/// batch takes.
pub const CREATING_STALE_MS: u64 = 60_000;

/// The verbs the coordinator needs. Every verb that changes more than one
/// thing does it atomically (one Lua script in Redis, one lock in memory).
/// Mutating verbs ring the doorbell for the batch they touched.
///
/// Several coordinators may share one store. Each running batch is driven
/// by the coordinator holding it ([`Store::hold_batch`]); the verbs that
/// judge time for the whole batch (`expire_leases`, `expire_deadline`,
/// `expire_waits`) take that holder's [`Fence`] and refuse a stale one, so a
/// coordinator that lost its hold (paused, partitioned) cannot act on the
/// batch alongside its new owner.
///
/// # The sequential pass (`retry_failed: sequential`)
///
/// A batch created with [`NewBatch::retry_failed_sequential`] does not finish
/// when its last op ends if at least one op `Failed` and the batch was not
/// cancelled, did not reach its deadline and did not fire fail_fast. In that
/// same atomic step it starts its sequential pass instead — at most once:
/// - Every `Failed` or `Skipped` op (call them R) goes back to `Waiting`,
///   pending = how many of its dependencies are in R (counted on the stored
///   dependents lists); those pending nothing become `Ready` and are queued
///   in index order (each on its priority's queue). The `failed` / `skipped`
///   counters drop by as many, so every counter stays exact; their records
///   lose what the last pass wrote (worker, times, output, error, details)
///   and keep their attempt counts.
/// - Each op of R that had failed gets one `OpRetrying` (attempt = its last
///   attempt, message [`sequential_pass_message`]); each re-queued skipped
///   op one `OpRetrying` too (attempt = its attempts so far, message
///   [`SEQUENTIAL_PASS_REQUEUED`]), so every op's events tell one story.
/// - Memory waits of R (`wait_for`, `wait_for_any`) are not counted again:
///   they count as arrived, even keys that never appeared, and their wait
///   deadlines no longer apply.
/// - From then on `claim` lets at most one op of the batch run at a time
///   (on top of `max_parallel`), and every failure is final whatever the
///   op's retry policy: one more attempt each (attempt numbers go on),
///   dependents skipped as usual.
/// - When every op has ended again the batch finishes as usual: `Succeeded`
///   if all succeeded now, else `Failed` with the usual error.
///
/// The verb that ended the last op (`complete`, `expire_leases`,
/// `expire_waits`, `add_ops`) then reports `finished: None` and counts the
/// ops the pass made ready in `became_ready`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Returns this store's epoch, writing a new one if none exists yet.
    /// A coordinator remembers it; a later call returning another value
    /// means the store restarted empty.
    async fn epoch(&self) -> StoreResult<String>;

    /// Writes a whole validated batch. Ops with `deps == 0` and no missing
    /// `wait_for` key go onto the ready queues; `wait_for` keys that already
    /// exist in the batch's memory count as satisfied. Appends the
    /// `BatchSubmitted` event (seq 1). Fails with `BatchExists` on a reused id.
    /// Rings `Batch`, then `Started` once the batch is in the active set
    /// (not for an empty batch, which ends at once).
    ///
    /// Idempotent submissions (non-empty [`NewBatch::request_digest`]; the
    /// caller derives the id from the tenant and the key, so the id is the
    /// key's mapping and is claimed atomically with the creation): a taken
    /// id whose batch has the same tenant and digest returns
    /// `Created::Existing` and writes nothing, whatever the batch's state
    /// (running or ended, as long as it is retained); another digest or
    /// tenant is `IdempotencyConflict`. A batch another call is still
    /// writing is `StillCreating` (retryable) — unless that call claimed it
    /// more than [`CREATING_STALE_MS`] before `created_ms` (it died half
    /// way): then its records are removed and the batch is created anew.
    async fn create_batch(&self, batch: NewBatch) -> StoreResult<Created>;

    /// The opaque spec bytes given at creation (the coordinator's encoding of
    /// the batch) and by each `add_ops`, so any coordinator can resume it.
    async fn batch_spec(&self, batch: &BatchId) -> StoreResult<Option<StoredSpec>>;

    /// Ids of batches not yet finished, oldest first.
    async fn active_batches(&self) -> StoreResult<Vec<BatchId>>;

    /// Pops up to `max` ready ops, highest priority first (FIFO within a
    /// priority), marks them running with `attempt + 1`, appends one
    /// `OpStarted` event each. Returns nothing once the batch is finished or
    /// cancelled. Also capped by the batch's `max_parallel` (when > 0) minus
    /// its running ops, so several coordinators never exceed it together,
    /// and during its sequential pass (see the trait doc) by 1 minus them.
    /// Each claimed attempt is leased until `lease_until_ms`. First, in the
    /// same atomic step, retries delayed by backoff whose ready-at is at or
    /// before `now_ms` join the back of their ready queues.
    /// `BatchNotFound` for an unknown batch.
    async fn claim(
        &self,
        batch: &BatchId,
        max: u32,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> StoreResult<Vec<Claimed>>;

    /// Extends the leases of these running attempts: each lease is set to
    /// `lease_until_ms`. No event, no doorbell. Returns the given attempts
    /// that are stale — the op is not running, runs another attempt, or does
    /// not exist — in the order given: they got no lease (their worker
    /// should stop them).
    async fn renew_leases(
        &self,
        batch: &BatchId,
        ops: &[Claimed],
        lease_until_ms: u64,
    ) -> StoreResult<Vec<Claimed>> {
        self.renew_leases_on(batch, ops, lease_until_ms, "").await
    }

    /// [`Store::renew_leases`], noting that these attempts run on `worker`
    /// (unless empty) — what a coordinator says when it lost that worker
    /// and shortens their leases: if a lease then runs out, its error names
    /// the worker. Kept per attempt until `expire_leases` reads it or the
    /// batch ends.
    async fn renew_leases_on(
        &self,
        batch: &BatchId,
        ops: &[Claimed],
        lease_until_ms: u64,
        worker: &str,
    ) -> StoreResult<Vec<Claimed>>;

    /// Running ops whose lease ran out (their worker died, hung or was cut
    /// off) lost their worker, which is not their fault. The error is
    /// [`lost_worker_message`]: the worker noted by
    /// [`Store::renew_leases_on`] for that attempt (else "its worker") and
    /// when the lease ran out, as RFC 3339.
    /// - While an op has lost-worker retries left (fewer than the batch's
    ///   [`NewBatch::lost_worker_retries`] so far, and fail_fast has not
    ///   fired), it goes back to the ready queue at once and the attempt is
    ///   handed back (not counted against `max_attempts`): `OpRetrying`
    ///   with the worker and "<error>; runs again (lost-worker retry n of
    ///   N)".
    /// - Past them it is a `LostWorker` failure: another attempt per its
    ///   retry policy (`OpRetrying` with the error, plus when after a
    ///   backoff), else failed (`OpFailed` with the worker; its record
    ///   keeps the worker, the attempt's start — its `OpStarted` event,
    ///   looked for among the batch's latest 10,000 events, else 0 — and
    ///   its duration up to the lease's end; dependents skipped, fail_fast
    ///   applied, as in `complete`).
    ///
    /// Their earlier attempt's late results are stale. `recorded` = ops
    /// failed, `retried` = ops given another attempt.
    /// `NotOwner` (nothing changed) unless `fence` is the batch's live hold,
    /// checked in the same atomic step; `BatchNotFound` first.
    async fn expire_leases(
        &self,
        batch: &BatchId,
        now_ms: u64,
        fence: &Fence,
    ) -> StoreResult<CompleteOutcome>;

    /// Running attempts a worker hands back unrun (it is draining): ready
    /// again at once; the handed-back attempt does not count against the
    /// op's attempts (a per-op count of handed-back attempts is subtracted
    /// wherever attempts are compared with `max_attempts`, and from the
    /// backoff exponent); the attempt number stays, so a late result of the
    /// handed-back attempt is stale. They go to the FRONT of their ready
    /// queues, in the order given. One `OpRetrying` each ("handed back by
    /// its worker"). Returns how many were handed back.
    async fn return_ops(&self, batch: &BatchId, ops: &[Claimed], now_ms: u64) -> StoreResult<u32>;

    /// Ends the batch if its deadline passed: ops not yet ended are
    /// cancelled ("cancelled: the batch's deadline passed", running ones
    /// included: their late results are stale), the batch ends `Failed`
    /// with error "deadline exceeded" (also the `BatchFinished` message).
    /// `recorded` = ops cancelled. A no-op before the deadline, without
    /// one, or once the batch ended. `NotOwner` (nothing changed) unless
    /// `fence` is the batch's live hold, checked in the same atomic step;
    /// `BatchNotFound` first.
    async fn expire_deadline(
        &self,
        batch: &BatchId,
        now_ms: u64,
        fence: &Fence,
    ) -> StoreResult<CompleteOutcome>;

    /// Marks batches the store no longer holds as `Lost` with `reason` —
    /// after the store restarted empty. Writes a minimal record so status
    /// and watchers see it: state `Lost`, error `reason`, name "", total 0,
    /// created and finished `now_ms`, one `BatchFinished` event (seq 1,
    /// message `reason`), listed by `list_batches`, not active; rings
    /// `Ended` for each. Returns those it marked; batches it holds are left
    /// alone.
    async fn mark_lost(
        &self,
        batches: &[BatchId],
        reason: &str,
        now_ms: u64,
    ) -> StoreResult<Vec<BatchId>>;

    /// The countdown of an op: what it still waits for (for `volley why`).
    /// An op not `Waiting` waits for nothing (pending 0, no keys); missing
    /// keys are its `wait_for` keys sorted, then its whole `wait_for_any`
    /// group sorted (while none arrived). `BatchNotFound` for an unknown
    /// batch or index.
    async fn op_waits(&self, batch: &BatchId, index: u32) -> StoreResult<OpWaits>;

    /// Notes that something may keep op `index` from ever running (no live
    /// worker runs its kind, a key nothing writes): appends one `OpBlocked`
    /// event (attempt = the op's attempts so far, no worker, `message`) and
    /// rings `Batch` — only while the batch is running and the op has not
    /// ended (waiting, ready or running). Returns whether it appended.
    /// Changes no state or counter. `BatchNotFound` for an unknown batch or
    /// index.
    async fn note_blocked(
        &self,
        batch: &BatchId,
        index: u32,
        message: &str,
        now_ms: u64,
    ) -> StoreResult<bool>;

    /// Records results of running ops in one atomic step: a result whose op
    /// is not running or whose attempt differs is stale and ignored (listed in
    /// `stale`). A failure whose kind the op's `RetryPolicy` allows, with
    /// attempts left and fail_fast not fired, gets another attempt
    /// (`OpRetrying`, message = the error, then "; next attempt at `<RFC 3339>` (in
    /// `<n>` ms)" when delayed): the delay is the backoff (jitter drawn by the
    /// store: a per-call random seed for the Redis scripts' `math.random`)
    /// or `retry_after_ms` if larger; 0 → ready queue at once, else the
    /// op stays `Ready` in a delayed set until `claim` sees its ready-at.
    /// `next_retry_at_ms` = the earliest ready-at still delayed. A final result records state and result, writes
    /// `store_as` into the batch's memory (unblocking waiters), counts down
    /// dependents (pushing those reaching zero onto the ready queues; those
    /// that needed this op to succeed end `Skipped`, transitively), applies
    /// `fail_fast`, and finishes the batch when every op has ended (or starts
    /// its sequential pass: see the trait doc). A
    /// `store_as` into a batch's own memory is part of that atomic step.
    /// Into a shared namespace (another slot) the step records it in the
    /// batch's outbox instead, and `complete` then writes it with
    /// `memory_put`'s code path (content type `text/plain`), guarded by the
    /// op's attempt, and clears the entry. If the caller dies in between,
    /// the entry stays until [`Store::drain_outbox`] writes it; a result of
    /// that op sent again (stale now) drains the batch's outbox too. The
    /// guard makes every write of one op attempt's value happen once: a
    /// second one adds no revision. The in-memory store writes it inside
    /// the step (one lock), so its outbox is always empty.
    ///
    /// # Keys nobody will write (declared writers)
    ///
    /// In a batch whose memory is its own, each op's [`NewOp::writes`]
    /// declares keys it writes; the store keeps, per key, how many declared
    /// writers have not ended. Whenever an op ends — in any verb, any final
    /// state — its keys count down; a key reaching 0 that does not exist in
    /// the batch's memory is hopeless. In the same atomic step every op still
    /// `Waiting` for it — a `wait_for` key, or a `wait_for_any` group every
    /// key of which is hopeless — ends `Skipped` with
    /// [`hopeless_message`] ("key `k` will never be written: its writer
    /// `<op>` failed"), its dependents skipped transitively as for a failed
    /// dependency (no fail_fast: a skip is no failure), and the batch may
    /// finish. A `run_if_always` waiter instead counts the wait as satisfied
    /// (it may run without the key). Keys with no declared writer are never
    /// judged (a client may write them), nor anything in a shared namespace.
    /// `add_ops` adds writers (a key may become writable again) and judges
    /// its new ops' waits at once. During a sequential pass a writer ending
    /// again judges nothing (its waiters' waits count as arrived anyway).
    async fn complete(
        &self,
        batch: &BatchId,
        completions: &[Completion],
        now_ms: u64,
    ) -> StoreResult<CompleteOutcome>;

    /// Writes the shared `store_as` values still in the batch's outbox (see
    /// [`Store::complete`]): those a coordinator recorded but died before
    /// writing. Oldest first, each guarded by its op attempt, so a drain
    /// racing the first writer (or another drain) writes each value once.
    /// Works on finished batches too. Returns how many entries it handled.
    /// 0 for an unknown batch or an empty outbox (always, in memory).
    async fn drain_outbox(&self, batch: &BatchId, now_ms: u64) -> StoreResult<u32>;

    /// The given batches whose outbox holds something (one read each,
    /// pipelined; no scan): what a coordinator's housekeeping drains.
    async fn outboxes_pending(&self, batches: &[BatchId]) -> StoreResult<Vec<BatchId>>;

    /// Cancels every op not yet ended (running ones included: their late
    /// results become stale) and finishes the batch `Cancelled`. Returns the
    /// ops that were running, so their workers can be told to stop.
    /// Idempotent: cancelling a finished batch changes nothing. Rings
    /// `Ended` when this call ended the batch.
    async fn cancel(
        &self,
        batch: &BatchId,
        reason: &str,
        now_ms: u64,
    ) -> StoreResult<CancelOutcome>;

    async fn meta(&self, batch: &BatchId) -> StoreResult<Option<BatchMeta>>;

    /// Per-op records in index order (`0..total`).
    async fn op_records(&self, batch: &BatchId) -> StoreResult<Vec<OpRecord>>;

    /// Every op's `duration_ms` in index order (`0..total`): what a report
    /// sums and walks for the critical path, without reading every op's
    /// whole record. `BatchNotFound` for an unknown batch.
    async fn op_durations(&self, batch: &BatchId) -> StoreResult<Vec<u64>> {
        Ok(self
            .op_summaries(batch, 0..u32::MAX)
            .await?
            .iter()
            .map(|summary| summary.duration_ms)
            .collect())
    }

    /// The summaries of the ops with an index in `range` (clipped to
    /// `0..total`), in index order: every op's state and timings without
    /// moving its output, so a view of a 100,000-op batch reads kilobytes
    /// per op-page instead of every output. `BatchNotFound` for an unknown
    /// batch. Agrees with [`OpSummary::of_record`] of [`Store::op_records`].
    async fn op_summaries(
        &self,
        batch: &BatchId,
        range: std::ops::Range<u32>,
    ) -> StoreResult<Vec<OpSummary>> {
        let records = self.op_records(batch).await?;
        let end = (range.end as usize).min(records.len());
        let start = (range.start as usize).min(end);
        Ok(records[start..end]
            .iter()
            .map(OpSummary::of_record)
            .collect())
    }

    /// The records of the given ops, in the order given: what dispatch reads
    /// to fill in `${ops.X…}` without reading the whole batch. An index the
    /// batch does not have is `BatchNotFound`.
    async fn op_records_at(&self, batch: &BatchId, indices: &[u32]) -> StoreResult<Vec<OpRecord>>;

    /// Events with `seq > after_seq`, in order, at most `max`.
    async fn events(&self, batch: &BatchId, after_seq: u64, max: u32) -> StoreResult<Vec<Event>>;

    /// The seq of the batch's latest event: 0 when it has none (or there
    /// is no such batch). A reader shows the batch as of this event, and
    /// follows its stream from there.
    async fn last_event_seq(&self, batch: &BatchId) -> StoreResult<u64>;

    /// Most recent batches first.
    async fn list_batches(&self, limit: u32, tenant: Option<&str>) -> StoreResult<Vec<BatchMeta>>;

    /// Deletes up to `max` finished batches whose retention ran out by
    /// `now_ms` (finished_ms + `NewBatch::retain_ms` ≤ now_ms): their
    /// records and their own memory scope. Returns how many it deleted.
    /// Coordinators call it every tick; the Redis store frees the memory
    /// off Redis's main thread (UNLINK), so a million-op batch going does
    /// not stall it.
    async fn drop_expired(&self, now_ms: u64, max: u32) -> StoreResult<u32>;

    /// Walks the batch index (what `list_batches` reads) from creation time
    /// `from_ms` on, at most `max` entries, and drops those whose batch's
    /// records have expired (see `NewBatch::retain_ms`), so the index does
    /// not grow without bound. Returns how many it dropped and where the
    /// next call goes on from (0: the walk reached the end; start over).
    async fn prune_batch_index(&self, from_ms: u64, max: u32) -> StoreResult<(u32, u64)>;

    /// Writes a memory key and unblocks the ops waiting for it — in the
    /// batch for a batch scope, in every batch waiting on the namespace for
    /// a shared one (idempotent steps, one slot at a time). Values above a
    /// threshold are written in chunks so no single command is large.
    /// Appends a change (`memory_changes`) and rings `Doorbell::Memory`;
    /// also `Doorbell::Batch` for each batch whose countdowns it moved.
    /// `ttl_ms` runs in real time from the call (Redis `PEXPIRE`; the
    /// in-memory store uses the monotonic clock); `expires_at_ms` reports
    /// `now_ms + ttl_ms`. Expiry logs no change. A write without `ttl_ms`
    /// clears an earlier TTL.
    async fn memory_put(
        &self,
        scope: &MemoryScope,
        key: &str,
        value: &[u8],
        options: &PutOptions,
        now_ms: u64,
    ) -> StoreResult<PutOutcome>;

    async fn memory_get(&self, scope: &MemoryScope, key: &str) -> StoreResult<Option<MemoryValue>>;

    /// Deletes a key (if at `if_version`, when given). Returns whether it existed.
    async fn memory_delete(
        &self,
        scope: &MemoryScope,
        key: &str,
        if_version: Option<u64>,
        now_ms: u64,
    ) -> StoreResult<bool>;

    /// Live keys starting with `prefix`, sorted, those after `after_key`
    /// only (pagination), at most `limit`.
    async fn memory_list(
        &self,
        scope: &MemoryScope,
        prefix: &str,
        after_key: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<MemoryKeyInfo>>;

    /// Adds `delta` to an integer key (a missing key counts as 0), atomically;
    /// unblocks waiters like a put. Returns the new value.
    async fn memory_incr(
        &self,
        scope: &MemoryScope,
        key: &str,
        delta: i64,
        now_ms: u64,
    ) -> StoreResult<(i64, PutOutcome)>;

    /// Changes of keys under `prefix` with revision > `after_revision`, in
    /// order, at most `max`. `ChangesTrimmed` when some were dropped.
    async fn memory_changes(
        &self,
        scope: &MemoryScope,
        prefix: &str,
        after_revision: u64,
        max: u32,
    ) -> StoreResult<Vec<MemoryChange>>;

    /// The scope's latest revision (0 before any write).
    async fn memory_revision(&self, scope: &MemoryScope) -> StoreResult<u64>;

    /// Fails the ops still waiting for keys past their `wait_deadline_ms`
    /// ("memory key `k` never appeared"), like a final failure: dependents
    /// skipped, fail_fast applied, the batch finished if that was the last.
    /// The error lists every key not yet arrived (`` `a`, `b` ``; all keys
    /// of an unsatisfied any-group) and `(waited N ms)` since creation or
    /// `add_ops`. An op whose keys all arrived but that still waits for
    /// dependencies is left alone. `recorded` = ops failed. `NotOwner`
    /// (nothing changed) unless `fence` is the batch's live hold, checked in
    /// the same atomic step; `BatchNotFound` first.
    async fn expire_waits(
        &self,
        batch: &BatchId,
        now_ms: u64,
        fence: &Fence,
    ) -> StoreResult<CompleteOutcome>;

    /// Grows a running batch (dynamic fan-out): `ops` get indices
    /// `first_index..`, which must equal the batch's current total (else
    /// `CannotAddOps`, and the caller re-plans). Edges from existing ops are
    /// added to their dependents; an edge from an op that already ended
    /// counts down at once (or skips the new op, as `complete` would).
    /// `spec` is appended to the stored spec. Appends `OpsAdded` ("N ops
    /// added", then ` <note>` unless `note` is empty: who added them), then
    /// the skips it caused. Memory waits are registered as in
    /// `create_batch`. Also `CannotAddOps` when the batch is not running,
    /// after fail_fast fired, or when an op's `after` is inconsistent
    /// (`deps != after.len()`, an index past the new ops, or itself).
    /// `became_ready` counts ops made ready.
    ///
    /// With `once` (an idempotent spawn), `once.record` is kept under
    /// `once.key` for the batch in the same atomic step, as long as the
    /// batch is retained; a key already kept is `AlreadySpawned` with the
    /// first call's record, and nothing is added (checked before anything
    /// else but the batch's existence).
    #[allow(clippy::too_many_arguments)]
    async fn add_ops(
        &self,
        batch: &BatchId,
        first_index: u32,
        ops: Vec<NewOp>,
        spec: Vec<u8>,
        note: &str,
        now_ms: u64,
        once: Option<&SpawnOnce>,
    ) -> StoreResult<CompleteOutcome>;

    /// The record an idempotent `add_ops` kept under `key` for this batch,
    /// if any (`None` for an unknown batch too).
    async fn spawn_record(&self, batch: &BatchId, key: &str) -> StoreResult<Option<String>>;

    /// Takes or keeps `coordinator`'s hold on a running batch for `ttl_ms`
    /// (at least 1). Nobody holds it, or the last hold ran out or was
    /// released: the caller becomes its owner with a new fence token,
    /// strictly greater than every earlier token of the batch. The caller
    /// holds it already: the hold is extended and the same fence returned.
    /// Another coordinator holds it: `None`. A batch no longer running
    /// (finished, cancelled, lost): `None`, and no hold is taken.
    /// `BatchNotFound` for an unknown batch. Time: the Redis store lets the
    /// hold expire on the server's clock (`PX`); the in-memory store judges
    /// it by the `now_ms` its verbs are given (held until `now_ms + ttl_ms`).
    async fn hold_batch(
        &self,
        batch: &BatchId,
        coordinator: &str,
        ttl_ms: u64,
        now_ms: u64,
    ) -> StoreResult<Option<Fence>>;

    /// Drops the hold if it is still exactly `fence`, so another coordinator
    /// can take the batch at once; otherwise (taken over, ran out, unknown
    /// batch) does nothing.
    async fn release_batch(&self, batch: &BatchId, fence: &Fence) -> StoreResult<()>;

    /// The batch's live hold, if any (also `None` for an unknown batch).
    async fn batch_owner(&self, batch: &BatchId, now_ms: u64) -> StoreResult<Option<Fence>>;

    /// Replaces `coordinator`'s entry in the cluster's worker registry with
    /// `workers` (an empty slice is an entry with no workers), listed by
    /// [`Store::workers`] while `now_ms <= until_ms`. A coordinator
    /// republishes before `until_ms`; one that dies drops out by itself.
    async fn publish_workers(
        &self,
        coordinator: &str,
        workers: &[WorkerEntry],
        until_ms: u64,
    ) -> StoreResult<()>;

    /// `(coordinator, worker)` of every entry whose `until_ms >= now_ms`,
    /// sorted by coordinator, then `worker_id`. Entries that ran out more
    /// than [`WORKERS_FORGET_AFTER_MS`] before `now_ms` are deleted on the
    /// way.
    async fn workers(&self, now_ms: u64) -> StoreResult<Vec<(String, WorkerEntry)>>;

    /// What the ready queues of `batches` hold, per priority: ops ready and
    /// not yet claimed (a retry waiting out its backoff is not on a queue
    /// yet). A batch that is unknown or no longer running counts 0. One
    /// read of every queue length (one pipeline in Redis), no scan.
    async fn ready_depth(&self, batches: &[BatchId]) -> StoreResult<ReadyDepth>;

    /// Sets the ready gauge ([`keys::QUEUE_READY`], for autoscalers that
    /// read a list's length) to `min(total, READY_GAUGE_CAP)` items and
    /// returns that length. Idempotent: coordinators that publish their view
    /// of the same queues converge on it. Touches only the gauge's own key.
    async fn publish_ready_gauge(&self, total: u64) -> StoreResult<u64>;

    /// Stores a new API token's record (its hash, never the token).
    /// `TokenExists` if its id is taken.
    async fn create_token(&self, token: &TokenRecord) -> StoreResult<()>;

    /// The token of this id, with `revoked_ms` and `last_used_ms` filled in.
    async fn token(&self, id: &str) -> StoreResult<Option<TokenRecord>>;

    /// Every token, sorted by id.
    async fn tokens(&self) -> StoreResult<Vec<TokenRecord>>;

    /// Revokes a token and bumps the revocation counter
    /// ([`Store::token_revocations`]) in one atomic step. `false` for an
    /// unknown id; revoking twice keeps the first time.
    async fn revoke_token(&self, id: &str, now_ms: u64) -> StoreResult<bool>;

    /// Records that the token was used (for `volley token ls`).
    async fn touch_token(&self, id: &str, now_ms: u64) -> StoreResult<()>;

    /// How many revocations there have been: coordinators poll it and drop
    /// their cache of checked tokens when it moves.
    async fn token_revocations(&self) -> StoreResult<u64>;

    /// Doorbells: a batch's ready queue may have grown or its events moved
    /// (`Batch`), a memory scope changed (`Memory`), a batch entered
    /// (`Started`) or left (`Ended`) the active set. Only a hint — the state
    /// is in the store. `Doorbell::Resync` after a reconnect, when some
    /// bells may have been missed.
    fn doorbells(&self) -> tokio::sync::broadcast::Receiver<Doorbell>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_owner_names_the_holder_or_nobody() {
        let batch = BatchId::new("0193");
        let taken = StoreError::NotOwner {
            batch: batch.clone(),
            holder: Some("coord-b".to_owned()),
        };
        assert_eq!(
            taken.to_string(),
            "batch 0193 is owned by coordinator `coord-b`, not by this coordinator's fence"
        );
        let free = StoreError::NotOwner {
            batch,
            holder: None,
        };
        assert_eq!(
            free.to_string(),
            "batch 0193 is owned by nobody (its hold ran out or was released), not by this coordinator's fence"
        );
        assert!(!free.is_retryable());
    }
}
