//! The coordinator's metrics, through the `metrics` facade: no-ops until a binary installs a recorder.
//!
//! Names follow `volley_coordinator_<what>_<unit>` (counters end `_total`,
//! durations are `_seconds`). [`describe`] gives each its HELP text; the
//! binary calls it once after installing its recorder. Hot-path updates go
//! through handles made once ([`MeteredStore`]'s per-verb counters, the
//! dispatcher's [`DispatchMetrics`]) or one labelled increment per flush or
//! claim (never per op): without a recorder every one of them is a no-op.
//!
//! What is counted where:
//! - Store calls, lease expiries, retries and batch ends: [`MeteredStore`],
//!   the counting layer every store call of the coordinator goes through.
//! - Ops handed out (`started`) and results recorded (`succeeded` /
//!   `failed`), by kind: the dispatcher and the worker sessions, which know
//!   each op's kind from the plan ([`count_started`], [`count_recorded`]).
//! - Skipped and cancelled ops: when their batch ends, from its counters
//!   (one read of the batch's meta): those ops never reached a worker and the
//!   store does not list them, so their kind is not known here (`kind=""`).
//!   Likewise failures that no worker reported (a lease ran out on the last
//!   attempt, a wait for a memory key timed out).
//! - Queue depth, active batches, workers and their slots: sampled by the
//!   dispatcher every housekeeping tick.

use std::sync::Arc;

use async_trait::async_trait;
use metrics::{Counter, Gauge, Histogram};
use tokio::sync::broadcast;
use tracing::warn;
use volley_plan::Plan;
use volley_proto::BatchId;
use volley_store::{
    BatchMeta, BatchState, CancelOutcome, Claimed, CompleteOutcome, Completion, Created, Doorbell,
    Event, Fence, MemoryChange, MemoryKeyInfo, MemoryScope, MemoryValue, NewBatch, NewOp, OpRecord,
    OpSummary, OpWaits, PRIORITY_LEVELS, PutOptions, PutOutcome, ReadyDepth, SpawnOnce, Store,
    StoreResult, StoredSpec, TokenRecord, WorkerEntry,
};

pub const OPS_TOTAL: &str = "volley_coordinator_ops_total";
pub const READY_OPS: &str = "volley_coordinator_ready_ops";
pub const ACTIVE_BATCHES: &str = "volley_coordinator_active_batches";
pub const DISPATCH_LATENCY_SECONDS: &str = "volley_coordinator_dispatch_latency_seconds";
pub const LEASE_EXPIRIES_TOTAL: &str = "volley_coordinator_lease_expiries_total";
pub const RETRIES_TOTAL: &str = "volley_coordinator_retries_total";
pub const REDIS_ROUND_TRIPS_TOTAL: &str = "volley_coordinator_redis_round_trips_total";
pub const WORKERS_CONNECTED: &str = "volley_coordinator_workers_connected";
pub const WORKER_SLOTS: &str = "volley_coordinator_worker_slots";
pub const BATCHES_TOTAL: &str = "volley_coordinator_batches_total";
pub const GRPC_REQUESTS_TOTAL: &str = "volley_coordinator_grpc_requests_total";
pub const WORKER_REFUSALS_TOTAL: &str = "volley_coordinator_worker_refusals_total";
pub const AUTH_FAILURES_TOTAL: &str = "volley_coordinator_auth_failures_total";

/// A worker message refused because its session was not given the op
/// (`what`: result, return, adopt).
pub fn count_worker_refusal(what: &'static str) {
    metrics::counter!(WORKER_REFUSALS_TOTAL, "what" => what).increment(1);
}

/// A call refused by authentication (`code`: unauthenticated,
/// permission_denied).
pub fn count_auth_failure(code: &'static str) {
    metrics::counter!(AUTH_FAILURES_TOTAL, "code" => code).increment(1);
}

/// The `priority` label of each ready queue (index = the store's priority).
pub const PRIORITY_NAMES: [&str; PRIORITY_LEVELS as usize] = ["critical", "high", "medium", "low"];

/// Gives every coordinator metric its HELP text. Call once, after the
/// recorder is installed (a recorder installed later never sees them).
pub fn describe() {
    metrics::describe_counter!(
        OPS_TOTAL,
        "Ops by state reached: started (handed to a worker by this coordinator), succeeded and failed (results it recorded), skipped and cancelled (counted when their batch ends here; kind=\"\" when the op's kind is not known)."
    );
    metrics::describe_gauge!(
        READY_OPS,
        "Ops ready and not yet claimed across the active batches, by priority, sampled every housekeeping tick."
    );
    metrics::describe_gauge!(
        ACTIVE_BATCHES,
        "Batches running in the store (the whole cluster's), sampled every housekeeping tick."
    );
    metrics::describe_histogram!(
        DISPATCH_LATENCY_SECONDS,
        "Seconds from the claim that took an op off its ready queue (the call's start) to its assignment being queued on a worker's stream; parked ops count their wait for a worker."
    );
    metrics::describe_counter!(
        LEASE_EXPIRIES_TOTAL,
        "Running ops whose lease ran out (their worker died, hung or never came back), as expired by this coordinator for the batches it owns."
    );
    metrics::describe_counter!(
        RETRIES_TOTAL,
        "Failed attempts given another attempt (worker failures and lost leases)."
    );
    metrics::describe_counter!(
        REDIS_ROUND_TRIPS_TOTAL,
        "Store calls by verb; each is one Redis round trip (a script call or a pipeline) except where a verb's size makes it several (a large batch's creation, chunked reads)."
    );
    metrics::describe_gauge!(WORKERS_CONNECTED, "Workers connected to this coordinator.");
    metrics::describe_gauge!(
        WORKER_SLOTS,
        "Slots of the workers connected to this coordinator: busy (an op assigned and its result not yet back) or free."
    );
    metrics::describe_counter!(
        BATCHES_TOTAL,
        "Batches submitted to this coordinator (state=submitted) and batches that ended through one of its store calls, by final state."
    );
    metrics::describe_counter!(
        GRPC_REQUESTS_TOTAL,
        "gRPC calls served, by method and the status code the response opened with (a stream that fails later counts as OK)."
    );
    metrics::describe_counter!(
        WORKER_REFUSALS_TOTAL,
        "Worker messages refused because the session was not given the op attempt they name: forged or confused results (what=result), hand-backs (return) and adoptions after a reconnect (adopt)."
    );
    metrics::describe_counter!(
        AUTH_FAILURES_TOTAL,
        "Calls refused by authentication: no, unknown, expired or revoked token (code=unauthenticated) or a role that may not make the call (permission_denied)."
    );
}

/// Handles the dispatcher updates: made once, so no update looks anything up.
pub(crate) struct DispatchMetrics {
    pub(crate) dispatch_latency: Histogram,
    pub(crate) ready_ops: [Gauge; PRIORITY_LEVELS as usize],
    pub(crate) active_batches: Gauge,
    pub(crate) workers_connected: Gauge,
    pub(crate) slots_busy: Gauge,
    pub(crate) slots_free: Gauge,
}

impl DispatchMetrics {
    pub(crate) fn new() -> DispatchMetrics {
        DispatchMetrics {
            dispatch_latency: metrics::histogram!(DISPATCH_LATENCY_SECONDS),
            ready_ops: PRIORITY_NAMES
                .map(|priority| metrics::gauge!(READY_OPS, "priority" => priority)),
            active_batches: metrics::gauge!(ACTIVE_BATCHES),
            workers_connected: metrics::gauge!(WORKERS_CONNECTED),
            slots_busy: metrics::gauge!(WORKER_SLOTS, "state" => "busy"),
            slots_free: metrics::gauge!(WORKER_SLOTS, "state" => "free"),
        }
    }

    pub(crate) fn set_ready(&self, depth: &ReadyDepth, active_batches: usize) {
        for (gauge, count) in self.ready_ops.iter().zip(depth.by_priority) {
            gauge.set(count as f64);
        }
        self.active_batches.set(active_batches as f64);
    }
}

/// Adds `count` to each op kind in `kinds`, grouped, one labelled increment
/// per distinct kind.
fn count_by_kind<'a>(state: &'static str, kinds: impl Iterator<Item = &'a str>) {
    // A batch has few kinds: a linear scan beats hashing here.
    let mut groups: Vec<(&str, u64)> = Vec::new();
    for kind in kinds {
        match groups.iter_mut().find(|(known, _)| *known == kind) {
            Some((_, count)) => *count += 1,
            None => groups.push((kind, 1)),
        }
    }
    for (kind, count) in groups {
        metrics::counter!(OPS_TOTAL, "state" => state, "kind" => kind.to_owned()).increment(count);
    }
}

/// Ops a claim handed this coordinator (`state="started"`), by kind.
pub(crate) fn count_started(plan: &Plan, claimed: &[Claimed]) {
    count_by_kind(
        "started",
        claimed.iter().map(|claim| {
            plan.ops
                .get(claim.index as usize)
                .map_or("", |op| op.kind.as_str())
        }),
    );
}

/// Results the store recorded as final (`succeeded` / `failed`), by kind:
/// the completions neither stale nor given another attempt.
pub(crate) fn count_recorded(plan: &Plan, completions: &[Completion], outcome: &CompleteOutcome) {
    let counted = |completion: &&Completion| {
        !outcome.stale.contains(&completion.index) && !outcome.retried.contains(&completion.index)
    };
    let kind_of = |completion: &Completion| {
        plan.ops
            .get(completion.index as usize)
            .map_or("", |op| op.kind.as_str())
    };
    count_by_kind(
        "succeeded",
        completions
            .iter()
            .filter(counted)
            .filter(|completion| completion.ok)
            .map(kind_of),
    );
    count_by_kind(
        "failed",
        completions
            .iter()
            .filter(counted)
            .filter(|completion| !completion.ok)
            .map(kind_of),
    );
}

macro_rules! verbs {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// The store verbs, for the per-verb call counters.
        #[derive(Clone, Copy)]
        enum Verb { $($variant),* }
        const VERB_NAMES: &[&str] = &[$($name),*];
    };
}

verbs! {
    Epoch => "epoch",
    CreateBatch => "create_batch",
    BatchSpec => "batch_spec",
    ActiveBatches => "active_batches",
    Claim => "claim",
    RenewLeases => "renew_leases",
    ExpireLeases => "expire_leases",
    ReturnOps => "return_ops",
    ExpireDeadline => "expire_deadline",
    MarkLost => "mark_lost",
    OpWaits => "op_waits",
    NoteBlocked => "note_blocked",
    Complete => "complete",
    Cancel => "cancel",
    Meta => "meta",
    OpRecords => "op_records",
    OpRecordsAt => "op_records_at",
    OpSummaries => "op_summaries",
    OpDurations => "op_durations",
    Events => "events",
    LastEventSeq => "last_event_seq",
    ListBatches => "list_batches",
    DropExpired => "drop_expired",
    PruneBatchIndex => "prune_batch_index",
    MemoryPut => "memory_put",
    MemoryGet => "memory_get",
    MemoryDelete => "memory_delete",
    MemoryList => "memory_list",
    MemoryIncr => "memory_incr",
    MemoryChanges => "memory_changes",
    MemoryRevision => "memory_revision",
    ExpireWaits => "expire_waits",
    AddOps => "add_ops",
    SpawnRecord => "spawn_record",
    HoldBatch => "hold_batch",
    ReleaseBatch => "release_batch",
    BatchOwner => "batch_owner",
    PublishWorkers => "publish_workers",
    Workers => "workers",
    ReadyDepth => "ready_depth",
    PublishReadyGauge => "publish_ready_gauge",
    Tokens => "tokens",
    DrainOutbox => "drain_outbox",
    OutboxesPending => "outboxes_pending",
}

/// The coordinator's store boundary: every call counts once under its verb
/// (`volley_coordinator_redis_round_trips_total{verb}`), and what the
/// outcomes say feeds the lease, retry, batch and final-op counters. One
/// place, exact, and nothing else in the coordinator needs to remember.
pub(crate) struct MeteredStore {
    inner: Arc<dyn Store>,
    calls: Vec<Counter>,
    lease_expiries: Counter,
    retries: Counter,
}

impl MeteredStore {
    pub(crate) fn new(inner: Arc<dyn Store>) -> MeteredStore {
        MeteredStore {
            inner,
            calls: VERB_NAMES
                .iter()
                .map(|verb| metrics::counter!(REDIS_ROUND_TRIPS_TOTAL, "verb" => *verb))
                .collect(),
            lease_expiries: metrics::counter!(LEASE_EXPIRIES_TOTAL),
            retries: metrics::counter!(RETRIES_TOTAL),
        }
    }

    fn count(&self, verb: Verb) {
        if let Some(counter) = self.calls.get(verb as usize) {
            counter.increment(1);
        }
    }

    /// What a completing verb's outcome says: retries, failures no worker
    /// reported, the batch's end.
    async fn observe(
        &self,
        batch: &BatchId,
        outcome: &StoreResult<CompleteOutcome>,
        unreported_failures: bool,
    ) {
        let Ok(outcome) = outcome else {
            return;
        };
        if !outcome.retried.is_empty() {
            self.retries.increment(outcome.retried.len() as u64);
        }
        if unreported_failures && outcome.recorded > 0 {
            metrics::counter!(OPS_TOTAL, "state" => "failed", "kind" => "")
                .increment(u64::from(outcome.recorded));
        }
        if let Some(state) = outcome.finished {
            self.ended(batch, state).await;
        }
    }

    /// This call ended the batch (exactly one store call does): count it, and
    /// its skipped and cancelled ops from its counters.
    async fn ended(&self, batch: &BatchId, state: BatchState) {
        metrics::counter!(BATCHES_TOTAL, "state" => state.code()).increment(1);
        self.count(Verb::Meta);
        match self.inner.meta(batch).await {
            Ok(Some(meta)) => {
                for (state, count) in [("skipped", meta.skipped), ("cancelled", meta.cancelled)] {
                    if count > 0 {
                        metrics::counter!(OPS_TOTAL, "state" => state, "kind" => "")
                            .increment(u64::from(count));
                    }
                }
            }
            Ok(None) => {}
            Err(error) => {
                warn!(%batch, %error, "could not read an ended batch's counters for metrics")
            }
        }
    }
}

#[async_trait]
impl Store for MeteredStore {
    async fn epoch(&self) -> StoreResult<String> {
        self.count(Verb::Epoch);
        self.inner.epoch().await
    }

    async fn create_batch(&self, batch: NewBatch) -> StoreResult<Created> {
        self.count(Verb::CreateBatch);
        let created = self.inner.create_batch(batch).await;
        // A replayed idempotent submission created nothing.
        if matches!(created, Ok(Created::New)) {
            metrics::counter!(BATCHES_TOTAL, "state" => "submitted").increment(1);
        }
        created
    }

    async fn spawn_record(&self, batch: &BatchId, key: &str) -> StoreResult<Option<String>> {
        self.count(Verb::SpawnRecord);
        self.inner.spawn_record(batch, key).await
    }

    async fn batch_spec(&self, batch: &BatchId) -> StoreResult<Option<StoredSpec>> {
        self.count(Verb::BatchSpec);
        self.inner.batch_spec(batch).await
    }

    async fn active_batches(&self) -> StoreResult<Vec<BatchId>> {
        self.count(Verb::ActiveBatches);
        self.inner.active_batches().await
    }

    async fn claim(
        &self,
        batch: &BatchId,
        max: u32,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> StoreResult<Vec<Claimed>> {
        self.count(Verb::Claim);
        self.inner.claim(batch, max, now_ms, lease_until_ms).await
    }

    async fn renew_leases_on(
        &self,
        batch: &BatchId,
        ops: &[Claimed],
        lease_until_ms: u64,
        worker: &str,
    ) -> StoreResult<Vec<Claimed>> {
        self.count(Verb::RenewLeases);
        self.inner
            .renew_leases_on(batch, ops, lease_until_ms, worker)
            .await
    }

    async fn expire_leases(
        &self,
        batch: &BatchId,
        now_ms: u64,
        fence: &Fence,
    ) -> StoreResult<CompleteOutcome> {
        self.count(Verb::ExpireLeases);
        let outcome = self.inner.expire_leases(batch, now_ms, fence).await;
        if let Ok(outcome) = &outcome {
            let expired = u64::from(outcome.recorded) + outcome.retried.len() as u64;
            if expired > 0 {
                self.lease_expiries.increment(expired);
            }
        }
        self.observe(batch, &outcome, true).await;
        outcome
    }

    async fn return_ops(&self, batch: &BatchId, ops: &[Claimed], now_ms: u64) -> StoreResult<u32> {
        self.count(Verb::ReturnOps);
        self.inner.return_ops(batch, ops, now_ms).await
    }

    async fn expire_deadline(
        &self,
        batch: &BatchId,
        now_ms: u64,
        fence: &Fence,
    ) -> StoreResult<CompleteOutcome> {
        self.count(Verb::ExpireDeadline);
        let outcome = self.inner.expire_deadline(batch, now_ms, fence).await;
        // What it cancels is counted from the batch's counters as it ends.
        self.observe(batch, &outcome, false).await;
        outcome
    }

    async fn mark_lost(
        &self,
        batches: &[BatchId],
        reason: &str,
        now_ms: u64,
    ) -> StoreResult<Vec<BatchId>> {
        self.count(Verb::MarkLost);
        let marked = self.inner.mark_lost(batches, reason, now_ms).await;
        if let Ok(marked) = &marked
            && !marked.is_empty()
        {
            metrics::counter!(BATCHES_TOTAL, "state" => BatchState::Lost.code())
                .increment(marked.len() as u64);
        }
        marked
    }

    async fn op_waits(&self, batch: &BatchId, index: u32) -> StoreResult<OpWaits> {
        self.count(Verb::OpWaits);
        self.inner.op_waits(batch, index).await
    }

    async fn note_blocked(
        &self,
        batch: &BatchId,
        index: u32,
        message: &str,
        now_ms: u64,
    ) -> StoreResult<bool> {
        self.count(Verb::NoteBlocked);
        self.inner.note_blocked(batch, index, message, now_ms).await
    }

    async fn complete(
        &self,
        batch: &BatchId,
        completions: &[Completion],
        now_ms: u64,
    ) -> StoreResult<CompleteOutcome> {
        self.count(Verb::Complete);
        let outcome = self.inner.complete(batch, completions, now_ms).await;
        // Recorded results are counted by kind where the plan is at hand.
        self.observe(batch, &outcome, false).await;
        outcome
    }

    async fn cancel(
        &self,
        batch: &BatchId,
        reason: &str,
        now_ms: u64,
    ) -> StoreResult<CancelOutcome> {
        self.count(Verb::Cancel);
        let outcome = self.inner.cancel(batch, reason, now_ms).await;
        // A running batch always has an op left to cancel, and a cancel of
        // one that ended already cancels nothing: this call ended it.
        if let Ok(cancelled) = &outcome
            && cancelled.cancelled > 0
        {
            self.ended(batch, BatchState::Cancelled).await;
        }
        outcome
    }

    async fn meta(&self, batch: &BatchId) -> StoreResult<Option<BatchMeta>> {
        self.count(Verb::Meta);
        self.inner.meta(batch).await
    }

    async fn op_records(&self, batch: &BatchId) -> StoreResult<Vec<OpRecord>> {
        self.count(Verb::OpRecords);
        self.inner.op_records(batch).await
    }

    async fn op_records_at(&self, batch: &BatchId, indices: &[u32]) -> StoreResult<Vec<OpRecord>> {
        self.count(Verb::OpRecordsAt);
        self.inner.op_records_at(batch, indices).await
    }

    async fn op_durations(&self, batch: &BatchId) -> StoreResult<Vec<u64>> {
        self.count(Verb::OpDurations);
        self.inner.op_durations(batch).await
    }

    async fn op_summaries(
        &self,
        batch: &BatchId,
        range: std::ops::Range<u32>,
    ) -> StoreResult<Vec<OpSummary>> {
        self.count(Verb::OpSummaries);
        self.inner.op_summaries(batch, range).await
    }

    async fn events(&self, batch: &BatchId, after_seq: u64, max: u32) -> StoreResult<Vec<Event>> {
        self.count(Verb::Events);
        self.inner.events(batch, after_seq, max).await
    }

    async fn last_event_seq(&self, batch: &BatchId) -> StoreResult<u64> {
        self.count(Verb::LastEventSeq);
        self.inner.last_event_seq(batch).await
    }

    async fn list_batches(&self, limit: u32, tenant: Option<&str>) -> StoreResult<Vec<BatchMeta>> {
        self.count(Verb::ListBatches);
        self.inner.list_batches(limit, tenant).await
    }

    async fn drop_expired(&self, now_ms: u64, max: u32) -> StoreResult<u32> {
        self.count(Verb::DropExpired);
        self.inner.drop_expired(now_ms, max).await
    }

    async fn prune_batch_index(&self, from_ms: u64, max: u32) -> StoreResult<(u32, u64)> {
        self.count(Verb::PruneBatchIndex);
        self.inner.prune_batch_index(from_ms, max).await
    }

    async fn memory_put(
        &self,
        scope: &MemoryScope,
        key: &str,
        value: &[u8],
        options: &PutOptions,
        now_ms: u64,
    ) -> StoreResult<PutOutcome> {
        self.count(Verb::MemoryPut);
        self.inner
            .memory_put(scope, key, value, options, now_ms)
            .await
    }

    async fn memory_get(&self, scope: &MemoryScope, key: &str) -> StoreResult<Option<MemoryValue>> {
        self.count(Verb::MemoryGet);
        self.inner.memory_get(scope, key).await
    }

    async fn memory_delete(
        &self,
        scope: &MemoryScope,
        key: &str,
        if_version: Option<u64>,
        now_ms: u64,
    ) -> StoreResult<bool> {
        self.count(Verb::MemoryDelete);
        self.inner
            .memory_delete(scope, key, if_version, now_ms)
            .await
    }

    async fn memory_list(
        &self,
        scope: &MemoryScope,
        prefix: &str,
        after_key: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<MemoryKeyInfo>> {
        self.count(Verb::MemoryList);
        self.inner
            .memory_list(scope, prefix, after_key, limit)
            .await
    }

    async fn memory_incr(
        &self,
        scope: &MemoryScope,
        key: &str,
        delta: i64,
        now_ms: u64,
    ) -> StoreResult<(i64, PutOutcome)> {
        self.count(Verb::MemoryIncr);
        self.inner.memory_incr(scope, key, delta, now_ms).await
    }

    async fn memory_changes(
        &self,
        scope: &MemoryScope,
        prefix: &str,
        after_revision: u64,
        max: u32,
    ) -> StoreResult<Vec<MemoryChange>> {
        self.count(Verb::MemoryChanges);
        self.inner
            .memory_changes(scope, prefix, after_revision, max)
            .await
    }

    async fn memory_revision(&self, scope: &MemoryScope) -> StoreResult<u64> {
        self.count(Verb::MemoryRevision);
        self.inner.memory_revision(scope).await
    }

    async fn drain_outbox(&self, batch: &BatchId, now_ms: u64) -> StoreResult<u32> {
        self.count(Verb::DrainOutbox);
        self.inner.drain_outbox(batch, now_ms).await
    }

    async fn outboxes_pending(&self, batches: &[BatchId]) -> StoreResult<Vec<BatchId>> {
        self.count(Verb::OutboxesPending);
        self.inner.outboxes_pending(batches).await
    }

    async fn expire_waits(
        &self,
        batch: &BatchId,
        now_ms: u64,
        fence: &Fence,
    ) -> StoreResult<CompleteOutcome> {
        self.count(Verb::ExpireWaits);
        let outcome = self.inner.expire_waits(batch, now_ms, fence).await;
        self.observe(batch, &outcome, true).await;
        outcome
    }

    async fn add_ops(
        &self,
        batch: &BatchId,
        first_index: u32,
        ops: Vec<NewOp>,
        spec: Vec<u8>,
        note: &str,
        now_ms: u64,
        once: Option<&SpawnOnce>,
    ) -> StoreResult<CompleteOutcome> {
        self.count(Verb::AddOps);
        let outcome = self
            .inner
            .add_ops(batch, first_index, ops, spec, note, now_ms, once)
            .await;
        self.observe(batch, &outcome, false).await;
        outcome
    }

    async fn hold_batch(
        &self,
        batch: &BatchId,
        coordinator: &str,
        ttl_ms: u64,
        now_ms: u64,
    ) -> StoreResult<Option<Fence>> {
        self.count(Verb::HoldBatch);
        self.inner
            .hold_batch(batch, coordinator, ttl_ms, now_ms)
            .await
    }

    async fn release_batch(&self, batch: &BatchId, fence: &Fence) -> StoreResult<()> {
        self.count(Verb::ReleaseBatch);
        self.inner.release_batch(batch, fence).await
    }

    async fn batch_owner(&self, batch: &BatchId, now_ms: u64) -> StoreResult<Option<Fence>> {
        self.count(Verb::BatchOwner);
        self.inner.batch_owner(batch, now_ms).await
    }

    async fn publish_workers(
        &self,
        coordinator: &str,
        workers: &[WorkerEntry],
        until_ms: u64,
    ) -> StoreResult<()> {
        self.count(Verb::PublishWorkers);
        self.inner
            .publish_workers(coordinator, workers, until_ms)
            .await
    }

    async fn workers(&self, now_ms: u64) -> StoreResult<Vec<(String, WorkerEntry)>> {
        self.count(Verb::Workers);
        self.inner.workers(now_ms).await
    }

    async fn ready_depth(&self, batches: &[BatchId]) -> StoreResult<ReadyDepth> {
        self.count(Verb::ReadyDepth);
        self.inner.ready_depth(batches).await
    }

    async fn publish_ready_gauge(&self, total: u64) -> StoreResult<u64> {
        self.count(Verb::PublishReadyGauge);
        self.inner.publish_ready_gauge(total).await
    }

    async fn create_token(&self, token: &TokenRecord) -> StoreResult<()> {
        self.count(Verb::Tokens);
        self.inner.create_token(token).await
    }

    async fn token(&self, id: &str) -> StoreResult<Option<TokenRecord>> {
        self.count(Verb::Tokens);
        self.inner.token(id).await
    }

    async fn tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        self.count(Verb::Tokens);
        self.inner.tokens().await
    }

    async fn revoke_token(&self, id: &str, now_ms: u64) -> StoreResult<bool> {
        self.count(Verb::Tokens);
        self.inner.revoke_token(id, now_ms).await
    }

    async fn touch_token(&self, id: &str, now_ms: u64) -> StoreResult<()> {
        self.count(Verb::Tokens);
        self.inner.touch_token(id, now_ms).await
    }

    async fn token_revocations(&self) -> StoreResult<u64> {
        self.count(Verb::Tokens);
        self.inner.token_revocations().await
    }

    fn doorbells(&self) -> broadcast::Receiver<Doorbell> {
        self.inner.doorbells()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verb_has_its_name() {
        assert_eq!(VERB_NAMES.len(), Verb::OutboxesPending as usize + 1);
        assert_eq!(VERB_NAMES[Verb::Claim as usize], "claim");
        assert_eq!(VERB_NAMES[Verb::Complete as usize], "complete");
    }
}
