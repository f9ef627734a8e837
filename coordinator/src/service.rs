//! `Coordinator`: the domain API behind the gRPC adapters — submit, report,
//! cancel, list, watch, memory, and the worker sessions.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};
use volley_plan::{Plan, PlannedOp};
use volley_proto::{BatchId, v1};
use volley_store::{
    Claimed, Completion, Created, DEFAULT_LOST_WORKER_RETRIES, Doorbell, FailureKind, NewBatch,
    NewOp, OnFailure, RetryPolicy, Store, StoreError,
};

/// The most lost-worker retries a batch may ask for per op: enough for any
/// real outage, not enough to loop on a poisoned op for ever.
const MAX_LOST_WORKER_RETRIES: u32 = 100;

use crate::auth::{AuthError, Authenticator, Principal, Role};
use crate::config::CoordinatorConfig;
use crate::convert;
use crate::dispatch::{self, BatchResults, Command, DispatchHandle, KnownKinds};
use crate::error::CoordinatorError;
use crate::idempotency;
use crate::metrics::{MeteredStore, count_recorded};
use crate::plans::{PlanCache, PlannedBatch};
use crate::report;
use crate::tracing_ctx::BatchTrace;

/// The coordinator's domain API. Cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: CoordinatorConfig,
    pub(crate) plans: Arc<PlanCache>,
    pub(crate) dispatch: DispatchHandle,
    /// Kinds some live worker registered, here or anywhere in the cluster
    /// (kept by the dispatcher).
    pub(crate) kinds: Arc<RwLock<KnownKinds>>,
    pub(crate) tasks: TaskTracker,
    pub(crate) shutdown: CancellationToken,
    /// Spawns re-plan a whole batch: one at a time.
    pub(crate) spawn_lock: tokio::sync::Mutex<()>,
    /// Whether the coordinator can do its work: false while the store is
    /// unreachable (grpc.health.v1 says NOT_SERVING then).
    pub(crate) serving: Arc<tokio::sync::watch::Sender<bool>>,
    /// Checks callers' tokens; mints op capabilities.
    pub(crate) auth: Arc<Authenticator>,
}

/// What a caller wants to do with a batch (see [`Coordinator::authorize`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Status, events, why, memory reads and writes.
    Read,
    /// Spawning ops into it.
    Spawn,
    /// Cancelling it.
    Cancel,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

/// A connected worker. The gRPC adapter feeds it the worker's results and
/// closes it when the stream ends.
pub struct WorkerSession {
    conn: u64,
    worker_id: String,
    /// The token the session authenticated with (for refusal logs).
    token_id: String,
    /// The attempts assigned to this session (or adopted by it) that it has
    /// not reported yet: the only ones whose results, hand-backs it may send.
    ledger: Arc<dispatch::Ledger>,
    /// Ops it said it still runs that it may not adopt: it is told to stop them.
    refused: Vec<v1::OpRef>,
    coordinator: Coordinator,
}

impl Coordinator {
    /// Checks the store, starts the dispatcher and resumes the batches the
    /// store says are active.
    pub async fn start(
        store: Arc<dyn Store>,
        config: CoordinatorConfig,
        shutdown: CancellationToken,
    ) -> Result<Coordinator, CoordinatorError> {
        // Every store call of the coordinator is counted at this one boundary.
        let store: Arc<dyn Store> = Arc::new(MeteredStore::new(store));
        let epoch = store.epoch().await?;
        info!(epoch = %epoch, coordinator = %config.id, "store epoch");
        let tasks = TaskTracker::new();
        let kinds = Arc::new(RwLock::new(KnownKinds::default()));
        let plans = Arc::new(PlanCache::new(config.finished_plans_cached));
        let (dispatch, commands) = dispatch::channel();
        let serving = Arc::new(tokio::sync::watch::Sender::new(true));
        let auth = Arc::new(Authenticator::new(&config.auth, store.clone()));
        tasks.spawn(auth.clone().watch_revocations(shutdown.child_token()));
        let coordinator = Coordinator {
            inner: Arc::new(Inner {
                store: store.clone(),
                config: config.clone(),
                plans: plans.clone(),
                dispatch: dispatch.clone(),
                kinds: kinds.clone(),
                tasks: tasks.clone(),
                shutdown: shutdown.clone(),
                spawn_lock: tokio::sync::Mutex::new(()),
                serving: serving.clone(),
                auth: auth.clone(),
            }),
        };
        let dispatcher = dispatch::Dispatcher::new(
            store.clone(),
            &config,
            commands,
            dispatch,
            plans,
            kinds,
            epoch,
            serving,
            auth,
            shutdown.child_token(),
        );
        tasks.spawn(
            dispatcher
                .run()
                .instrument(info_span!("coordinator.dispatch")),
        );
        for batch in store.active_batches().await? {
            match coordinator.inner.plans.get(store.as_ref(), &batch).await {
                Ok(planned) => {
                    coordinator
                        .inner
                        .dispatch
                        .send(Command::BatchAdded(planned))
                        .await
                }
                Err(error) => warn!(%batch, %error, "cannot resume batch"),
            }
        }
        Ok(coordinator)
    }

    /// Spawns a task the coordinator tracks, so shutdown can wait for it.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.inner.tasks.spawn(task);
    }

    pub(crate) fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    pub(crate) fn config(&self) -> &CoordinatorConfig {
        &self.inner.config
    }

    pub(crate) fn plans(&self) -> &PlanCache {
        &self.inner.plans
    }

    pub(crate) fn dispatch(&self) -> &DispatchHandle {
        &self.inner.dispatch
    }

    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    pub(crate) fn spawn_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.inner.spawn_lock
    }

    /// Who a bearer token belongs to (see [`Authenticator::authenticate`]).
    pub async fn authenticate(&self, bearer: Option<&str>) -> Result<Arc<Principal>, AuthError> {
        self.inner.auth.authenticate(bearer, now_ms()).await
    }

    pub(crate) fn authenticator(&self) -> &Authenticator {
        &self.inner.auth
    }

    /// The batch's plan, if `principal` may have `access` to it. A batch of
    /// another tenant is `BatchNotFound`, exactly like one that does not
    /// exist: its existence is not revealed. An op's capability reaches
    /// its own batch only, and never cancels it.
    pub(crate) async fn authorize(
        &self,
        principal: &Principal,
        batch: &BatchId,
        access: Access,
    ) -> Result<Arc<PlannedBatch>, CoordinatorError> {
        if let Some(agent) = &principal.agent {
            if &agent.batch != batch {
                return Err(CoordinatorError::BatchNotFound(batch.clone()));
            }
            if access == Access::Cancel {
                return Err(AuthError::PermissionDenied(
                    "an op's token cannot cancel its batch".to_owned(),
                )
                .into());
            }
        }
        let planned = self.plan_of(batch).await?;
        if !principal.sees_tenant(&planned.tenant) {
            return Err(CoordinatorError::BatchNotFound(batch.clone()));
        }
        Ok(planned)
    }

    /// The batch's plan (cached, or rebuilt from its stored spec).
    pub(crate) async fn plan_of(
        &self,
        batch: &BatchId,
    ) -> Result<Arc<PlannedBatch>, CoordinatorError> {
        self.inner.plans.get(self.store(), batch).await
    }

    /// Whether the coordinator can do its work now (false while its store is
    /// unreachable), as it changes.
    pub fn serving(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.serving.subscribe()
    }

    /// Waits for every task the coordinator spawned to end (after shutdown).
    pub async fn wait(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    /// Is `kind` runnable: built in, or registered by a live worker.
    pub(crate) fn known_kind(&self, kind: &str) -> bool {
        volley_kinds::BUILTIN_KINDS.contains(&kind)
            || self
                .inner
                .kinds
                .read()
                .map(|kinds| kinds.contains(kind))
                .unwrap_or(false)
    }

    /// Re-reads the cluster's kinds from the worker registry when the batch
    /// names one we have not seen: a worker may have joined another
    /// coordinator since our last tick.
    async fn refresh_kinds_for(&self, batch: &v1::Batch) {
        let unknown = batch.ops.iter().any(|op| !self.known_kind(&op.kind));
        if !unknown {
            return;
        }
        match self.store().workers(now_ms()).await {
            Ok(cluster) => {
                if let Ok(mut kinds) = self.inner.kinds.write() {
                    kinds.cluster = cluster
                        .into_iter()
                        .flat_map(|(_, entry)| entry.kinds)
                        .collect();
                }
            }
            Err(error) => warn!(%error, "could not read the worker registry"),
        }
    }

    /// Warnings for kinds of the plan no connected worker runs now: their
    /// ops wait until such a worker connects.
    fn unserved_kinds(&self, plan: &Plan) -> Vec<String> {
        let Ok(served) = self.inner.kinds.read() else {
            return Vec::new();
        };
        let mut waiting: BTreeMap<&str, usize> = BTreeMap::new();
        for op in &plan.ops {
            if !served.contains(&op.kind) {
                *waiting.entry(op.kind.as_str()).or_default() += 1;
            }
        }
        waiting
            .into_iter()
            .map(|(kind, count)| {
                let hint = if volley_kinds::HOST_PROGRAM_KINDS.contains(&kind) {
                    " (workers run it only when started with --allow-shell)"
                } else if volley_kinds::FILE_KINDS.contains(&kind) {
                    " (workers run it only when started with --root)"
                } else {
                    ""
                };
                format!("no connected worker runs `{kind}` ops{hint}; {count} op(s) wait until one connects")
            })
            .collect()
    }

    /// Checks ops of a submission as they arrive, `held` (of `held_bytes`)
    /// already received, and returns the bytes received with these: past
    /// `max_ops` ops or `max_batch_bytes`, or an op whose args pass
    /// `max_arg_bytes`, the
    /// submission is refused at once, before the rest is read (the whole
    /// batch is validated again once it is complete).
    pub fn check_arriving_ops(
        &self,
        held: usize,
        held_bytes: usize,
        ops: &[v1::Op],
    ) -> Result<usize, CoordinatorError> {
        let limits = &self.inner.config.limits;
        if held + ops.len() > limits.max_ops {
            return Err(CoordinatorError::Invalid(vec![volley_plan::Problem {
                op_id: String::new(),
                field: "ops".to_owned(),
                message: format!(
                    "more than the limit of {} ops (--max-ops): stopped reading the batch there",
                    limits.max_ops
                ),
            }]));
        }
        if let Some(op) = ops
            .iter()
            .find(|op| op.args_json.len() > limits.max_arg_bytes)
        {
            return Err(CoordinatorError::Invalid(vec![volley_plan::Problem {
                op_id: op.id.clone(),
                field: "args".to_owned(),
                message: format!(
                    "{} bytes, more than the limit of {} (--max-arg-bytes): stopped reading the batch there",
                    op.args_json.len(),
                    limits.max_arg_bytes
                ),
            }]));
        }
        let bytes = held_bytes + ops.iter().map(prost::Message::encoded_len).sum::<usize>();
        if bytes > limits.max_batch_bytes {
            return Err(CoordinatorError::Invalid(vec![volley_plan::Problem {
                op_id: String::new(),
                field: "ops".to_owned(),
                message: format!(
                    "more than the limit of {} bytes (--max-batch-bytes): stopped reading the batch there",
                    limits.max_batch_bytes
                ),
            }]));
        }
        Ok(bytes)
    }

    /// Validates, plans and stores a batch, then hands it to the dispatcher.
    /// An invalid batch stores nothing.
    #[tracing::instrument(skip_all, fields(name = %batch.name, ops = batch.ops.len()))]
    ///
    /// With an idempotency key (see [`crate::idempotency`]), a retry of a
    /// submission that was stored already gets the first call's answer
    /// (same batch id, same response) and nothing is created again; the
    /// same key with another batch is refused.
    pub async fn submit(
        &self,
        mut batch: v1::Batch,
        idempotency_key: &str,
        principal: &Principal,
    ) -> Result<v1::SubmitBatchResponse, CoordinatorError> {
        idempotency::check_key(idempotency_key)
            .map_err(|error| CoordinatorError::BadRequest(error.to_string()))?;
        if !matches!(principal.role, Role::Client | Role::Admin) {
            return Err(AuthError::PermissionDenied(format!(
                "a {} token cannot submit batches",
                principal.role.as_str()
            ))
            .into());
        }
        // The batch belongs to the submitter's tenant, whatever it says.
        batch.tenant = principal.tenant.clone();
        let lost_worker_retries = batch
            .lost_worker_retries
            .unwrap_or(DEFAULT_LOST_WORKER_RETRIES);
        if lost_worker_retries > MAX_LOST_WORKER_RETRIES {
            return Err(CoordinatorError::Invalid(vec![volley_plan::Problem {
                op_id: String::new(),
                field: "retry.lost_worker".to_owned(),
                message: format!(
                    "{lost_worker_retries} lost-worker retries; the most is {MAX_LOST_WORKER_RETRIES}"
                ),
            }]));
        }
        let request_digest = if idempotency_key.is_empty() {
            String::new()
        } else {
            idempotency::submission_digest(&mut batch)
        };
        self.refresh_kinds_for(&batch).await;
        let coordinator = self.clone();
        // Planning a large batch is CPU work: keep it off the async workers.
        let (batch, plan) = tokio::task::spawn_blocking(move || {
            let plan = volley_plan::plan(
                &batch,
                &|kind| coordinator.known_kind(kind),
                &coordinator.inner.config.limits,
            );
            (batch, plan)
        })
        .await
        .map_err(|error| CoordinatorError::BadRequest(format!("planning panicked: {error}")))?;
        let plan = plan.map_err(CoordinatorError::Invalid)?;
        let id = if idempotency_key.is_empty() {
            BatchId::new(uuid::Uuid::now_v7().to_string())
        } else {
            idempotency::batch_id_for(&principal.tenant, idempotency_key)
        };
        let trace = BatchTrace::from_carrier(&batch.trace_context);
        // The store keeps the submission encoded; the decoded batch goes
        // before the store's per-op state is built, so a big batch's ops are
        // never held three times at once (decoded, planned, stored).
        let spec = batch.encode_to_vec();
        drop(batch);
        let op_count = plan.ops.len() as u32;
        let mut warnings = plan.warnings.clone();
        warnings.extend(self.unserved_kinds(&plan));
        let planned = Arc::new(PlannedBatch {
            id: id.clone(),
            plan,
            trace,
            tenant: principal.tenant.clone(),
        });
        let mut new_batch = new_batch(&planned, spec);
        new_batch.request_digest = request_digest;
        new_batch.lost_worker_retries = lost_worker_retries;
        new_batch.retain_ms = self.inner.config.retain_finished.as_millis() as u64;
        new_batch.submitted_by = format!(
            "submitted by token {} (tenant {})",
            principal.token_id, principal.tenant
        );
        // Cached before the store has the batch: its `Started` bell makes
        // the dispatcher load it, and a miss then planned it a second time
        // from the stored spec (for a million ops, ~0.7 GB more at once).
        // A retried idempotent submission may find its batch cached here,
        // grown by spawns since: that plan stays.
        let replayed = self.inner.plans.cached(&id).is_some();
        if !replayed {
            self.inner.plans.insert(planned.clone());
        }
        match self.inner.store.create_batch(new_batch).await {
            // (Cached, but gone from the store: retention ran out.)
            Ok(Created::New) if replayed => self.inner.plans.insert(planned.clone()),
            Ok(Created::New) => {}
            // A retried submission: the batch (and its dispatch) exist
            // already; the answer is the first call's.
            Ok(Created::Existing) => {
                if !replayed {
                    self.inner.plans.remove(&id);
                }
                info!(batch = %id, op_count, audit = "submit", token = %principal.token_id, tenant = %principal.tenant, "idempotent retry: batch exists");
                return Ok(v1::SubmitBatchResponse {
                    batch_id: id.into_string(),
                    op_count,
                    warnings,
                });
            }
            Err(StoreError::IdempotencyConflict(batch)) => {
                if !replayed {
                    self.inner.plans.remove(&id);
                }
                return Err(CoordinatorError::IdempotencyConflict {
                    key: idempotency_key.to_owned(),
                    what: format!("another batch `{batch}`"),
                });
            }
            Err(error) => {
                if !replayed {
                    self.inner.plans.remove(&id);
                }
                return Err(error.into());
            }
        }
        self.note_unwritten_waits(&id, &planned.plan).await;
        self.inner.dispatch.send(Command::BatchAdded(planned)).await;
        info!(batch = %id, op_count, audit = "submit", token = %principal.token_id, tenant = %principal.tenant, "batch accepted");
        idempotency::fault_point("submit-stored");
        Ok(v1::SubmitBatchResponse {
            batch_id: id.into_string(),
            op_count,
            warnings,
        })
    }

    /// Ops of a batch with its own memory that wait for a key no op of the
    /// batch writes can only be unblocked by a client or an agent: say so
    /// in the batch's events (`OP_BLOCKED`), once, as it starts.
    async fn note_unwritten_waits(&self, batch: &BatchId, plan: &Plan) {
        if plan.namespace.is_some() {
            return; // other batches and clients write shared keys
        }
        let written: HashSet<&str> = plan
            .ops
            .iter()
            .flat_map(|op| op.memory_writes.iter().map(String::as_str))
            .collect();
        for (index, op) in plan.ops.iter().enumerate() {
            let mut unwritten: Vec<&str> = op
                .wait_for
                .iter()
                .map(String::as_str)
                .filter(|key| !written.contains(key))
                .collect();
            if !op.wait_for_any.is_empty()
                && op
                    .wait_for_any
                    .iter()
                    .all(|key| !written.contains(key.as_str()))
            {
                unwritten.extend(op.wait_for_any.iter().map(String::as_str));
            }
            if unwritten.is_empty() {
                continue;
            }
            let keys: Vec<String> = unwritten.iter().map(|key| format!("`{key}`")).collect();
            let message = format!(
                "waits for memory key {} that no op of the batch writes: only a client or an agent's put can unblock it",
                keys.join(", ")
            );
            if let Err(error) = self
                .store()
                .note_blocked(batch, index as u32, &message, now_ms())
                .await
            {
                warn!(%batch, %error, "could not note a blocked op");
            }
        }
    }

    /// The batch's status: states, outputs, timings, critical path.
    #[tracing::instrument(skip_all, fields(batch = %batch))]
    pub async fn status(
        &self,
        batch: &BatchId,
        include_ops: bool,
        principal: &Principal,
    ) -> Result<v1::BatchStatus, CoordinatorError> {
        self.status_page(batch, include_ops.then_some(0..u32::MAX), principal)
            .await
    }

    /// The batch's status with the ops of indices in `ops` (clamped to the
    /// batch), or none. A page that does not start at 0 has no critical
    /// path and no sequential time (the first page has them): a report read
    /// in pages reads every op's duration once, not once a page.
    #[tracing::instrument(skip_all, fields(batch = %batch))]
    pub async fn status_page(
        &self,
        batch: &BatchId,
        ops: Option<Range<u32>>,
        principal: &Principal,
    ) -> Result<v1::BatchStatus, CoordinatorError> {
        let planned = self.authorize(principal, batch, Access::Read).await?;
        let meta = self
            .store()
            .meta(batch)
            .await?
            .ok_or_else(|| CoordinatorError::BatchNotFound(batch.clone()))?;
        // Ops another coordinator spawned since this one planned the batch.
        let planned = self.plan_covering(&planned, meta.total).await?;
        let total = (planned.plan.ops.len() as u32).min(meta.total);
        let first_page = ops.as_ref().is_none_or(|range| range.start == 0);
        // A summary of a running batch is its counters: reading every op's
        // record for it would make polling cost as much as the batch.
        let ops_wanted = ops.is_some();
        let wants_durations = first_page && (ops_wanted || meta.finished_ms.is_some());
        let (durations, records, offset) = match ops {
            // Every op: one read gives the records and the durations.
            Some(range) if range.start == 0 && range.end >= total => {
                let records = self.store().op_records(batch).await?;
                let durations = records.iter().map(|record| record.duration_ms).collect();
                (durations, records, 0)
            }
            Some(range) => {
                let indices: Vec<u32> = (range.start.min(total)..range.end.min(total)).collect();
                let records = self.store().op_records_at(batch, &indices).await?;
                let durations = if wants_durations {
                    self.store().op_durations(batch).await?
                } else {
                    Vec::new()
                };
                (durations, records, range.start)
            }
            None if wants_durations => (self.store().op_durations(batch).await?, Vec::new(), 0),
            None => (Vec::new(), Vec::new(), 0),
        };
        let page = ops_wanted.then_some(report::OpsPage {
            offset,
            records: &records,
        });
        let mut status = report::build(&planned, &meta, &durations, page, now_ms());
        if meta.finished_ms.is_none() {
            status.owner = self
                .store()
                .batch_owner(batch, now_ms())
                .await?
                .map(|fence| fence.coordinator)
                .unwrap_or_default();
        }
        Ok(status)
    }

    /// Cancels a batch: pending ops at once, running ones are told to stop.
    #[tracing::instrument(skip_all, fields(batch = %batch))]
    pub async fn cancel(
        &self,
        batch: &BatchId,
        principal: &Principal,
    ) -> Result<v1::CancelBatchResponse, CoordinatorError> {
        self.authorize(principal, batch, Access::Cancel).await?;
        if self.store().meta(batch).await?.is_none() {
            return Err(CoordinatorError::BatchNotFound(batch.clone()));
        }
        // The store prefixes "cancelled: ", so the op errors read
        // "cancelled: by token T".
        let reason = format!("by token {}", principal.token_id);
        let outcome = self.store().cancel(batch, &reason, now_ms()).await?;
        info!(%batch, audit = "cancel", token = %principal.token_id, tenant = %principal.tenant, cancelled = outcome.cancelled, "batch cancelled");
        self.inner
            .dispatch
            .send(Command::BatchCancelled {
                batch: batch.clone(),
                running: outcome.running,
            })
            .await;
        self.inner.plans.finished(batch);
        let state = self
            .store()
            .meta(batch)
            .await?
            .map(|meta| convert::batch_state(meta.state) as i32)
            .unwrap_or_default();
        Ok(v1::CancelBatchResponse {
            state,
            cancelled: outcome.cancelled,
        })
    }

    pub async fn list(
        &self,
        limit: u32,
        principal: &Principal,
    ) -> Result<v1::ListBatchesResponse, CoordinatorError> {
        let limit = if limit == 0 { 50 } else { limit.min(1000) };
        let tenant = (!principal.is_admin()).then_some(principal.tenant.as_str());
        let batches = self
            .store()
            .list_batches(limit, tenant)
            .await?
            .into_iter()
            .map(|meta| v1::BatchSummary {
                batch_id: meta.id.to_string(),
                name: meta.name.clone(),
                state: convert::batch_state(meta.state) as i32,
                created_at_ms: meta.created_ms,
                total: meta.total,
                done: meta.done(),
                tenant: crate::auth::tenant_or_default(&meta.tenant).to_owned(),
                finished_at_ms: meta.finished_ms.unwrap_or(0),
            })
            .collect();
        Ok(v1::ListBatchesResponse { batches })
    }

    /// Streams a batch's events after `after_seq`, in order, until the batch
    /// has finished. Wakes on doorbells, and re-reads on a slow timer in
    /// case one was missed. Every stream ends with a `BatchFinished`: the
    /// store's, or — when the watch resumed at or past the batch's last
    /// event, or the batch was lost with the store's data and its events
    /// are gone — one made from the batch's record (see [`final_event`]).
    pub async fn watch(
        &self,
        batch: BatchId,
        after_seq: u64,
        principal: &Principal,
    ) -> Result<mpsc::Receiver<Result<v1::BatchEvent, CoordinatorError>>, CoordinatorError> {
        let planned = self.authorize(principal, &batch, Access::Read).await?;
        let (sender, receiver) = mpsc::channel(256);
        let coordinator = self.clone();
        let span = info_span!("coordinator.watch", batch = %batch);
        self.inner.tasks.spawn(
            async move {
                coordinator.pump_events(planned, after_seq, sender).await;
            }
            .instrument(span),
        );
        Ok(receiver)
    }

    async fn pump_events(
        &self,
        mut planned: Arc<PlannedBatch>,
        mut after_seq: u64,
        sender: mpsc::Sender<Result<v1::BatchEvent, CoordinatorError>>,
    ) {
        let mut doorbells = self.store().doorbells();
        // Since when the batch's record has been missing (the store was
        // emptied and nobody has marked the batch lost yet, or its
        // retention ran out).
        let mut missing_since: Option<tokio::time::Instant> = None;
        loop {
            let events = match self.store().events(&planned.id, after_seq, 1000).await {
                Ok(events) => events,
                Err(error) => {
                    let _ = sender.send(Err(error.into())).await;
                    return;
                }
            };
            let fetched = events.len();
            let mut finished = false;
            for event in events {
                after_seq = event.seq;
                finished |= event.kind == volley_store::EventKind::BatchFinished;
                // Ops another coordinator spawned into the batch: learn
                // their names before naming them.
                if event
                    .op_index
                    .is_some_and(|index| index as usize >= planned.plan.ops.len())
                    && let Ok(fresh) = self
                        .plan_covering(&planned, event.op_index.unwrap_or(0) + 1)
                        .await
                {
                    planned = fresh;
                }
                if sender
                    .send(Ok(convert::event(&planned, event)))
                    .await
                    .is_err()
                {
                    return; // the client went away
                }
            }
            if finished {
                return;
            }
            if fetched > 0 {
                continue;
            }
            // Nothing new: if the batch has ended and no event is left
            // after `after_seq` (the watch resumed at or past its end, now
            // or since, or the batch was lost with its events), nothing
            // more comes from the store: end with the batch's final event,
            // made from its record. Asked at each idle wake, not only the
            // first: a watch past the end of a running batch must end when
            // the batch does, though its `BatchFinished` is behind it.
            match self.store().meta(&planned.id).await {
                Ok(Some(meta)) => {
                    missing_since = None;
                    if meta.finished_ms.is_some()
                        && self
                            .store()
                            .events(&planned.id, after_seq, 1)
                            .await
                            .is_ok_and(|events| events.is_empty())
                    {
                        let _ = sender.send(Ok(final_event(&meta, after_seq))).await;
                        return;
                    }
                }
                Ok(None) => {
                    let since = *missing_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= MISSING_BATCH_GRACE {
                        let _ = sender
                            .send(Err(CoordinatorError::BatchNotFound(planned.id.clone())))
                            .await;
                        return;
                    }
                }
                Err(error) => {
                    debug!(%error, batch = %planned.id, "watch: could not read the batch's record; trying again")
                }
            }
            tokio::select! {
                () = self.inner.shutdown.cancelled() => return,
                () = sender.closed() => return,
                () = wait_for_bell(&mut doorbells, &planned.id) => {}
                () = tokio::time::sleep(self.inner.config.resync_interval) => {}
            }
        }
    }

    /// `planned`, or the batch's plan read again from its stored spec when
    /// `planned` knows fewer than `ops` ops: another coordinator grew the
    /// batch (spawned ops) since this one planned it.
    pub(crate) async fn plan_covering(
        &self,
        planned: &Arc<PlannedBatch>,
        ops: u32,
    ) -> Result<Arc<PlannedBatch>, CoordinatorError> {
        self.inner
            .plans
            .covering(self.store(), &planned.id, ops as usize)
            .await
    }

    /// Live workers of the whole cluster and how busy they are: ours as
    /// they are now, those of other coordinators from the registry.
    pub async fn workers(&self) -> Vec<v1::WorkerInfo> {
        let mut workers = self.inner.dispatch.workers().await;
        match self.store().workers(now_ms()).await {
            Ok(cluster) => workers.extend(
                cluster
                    .into_iter()
                    .filter(|(coordinator, _)| coordinator != &self.inner.config.id)
                    .map(|(coordinator, entry)| v1::WorkerInfo {
                        worker_id: entry.worker_id,
                        kinds: entry.kinds,
                        labels: entry.labels.into_iter().collect(),
                        slots: entry.slots,
                        busy: entry.busy,
                        coordinator,
                    }),
            ),
            Err(error) => warn!(%error, "could not read the worker registry; listing ours only"),
        }
        workers
    }

    /// Registers a worker. `outbound` carries what the coordinator sends it.
    pub async fn connect_worker(
        &self,
        register: v1::Register,
        outbound: mpsc::Sender<v1::CoordinatorMessage>,
        principal: &Principal,
    ) -> Result<WorkerSession, CoordinatorError> {
        if !matches!(principal.role, Role::Worker | Role::Admin) {
            return Err(AuthError::PermissionDenied(format!(
                "a {} token cannot register a worker",
                principal.role.as_str()
            ))
            .into());
        }
        let labels: BTreeMap<String, String> = register.labels.clone().into_iter().collect();
        principal.check_worker_limits(&labels, &register.kinds)?;
        if register.slots == 0 {
            return Err(CoordinatorError::BadRequest(
                "a worker needs at least one slot".into(),
            ));
        }
        if register.worker_id.chars().any(char::is_control) {
            return Err(CoordinatorError::BadRequest(format!(
                "worker id {:?} holds a control character",
                register.worker_id
            )));
        }
        let conn = self.inner.dispatch.next_conn();
        let worker_id = if register.worker_id.is_empty() {
            format!("worker-{conn}")
        } else {
            register.worker_id.clone()
        };
        info!(worker = %worker_id, token = %principal.token_id, slots = register.slots, kinds = ?register.kinds, running = register.running.len(), "worker connected");
        let ledger = Arc::new(dispatch::Ledger::default());
        let holder = format!("{}/{worker_id}", principal.token_id);
        // Only ops whose lease ticket says they were given to this very
        // identity are adopted; a worker's word alone never takes a lease.
        let mut running = Vec::with_capacity(register.running.len());
        let mut refused = Vec::new();
        for op in register.running {
            let batch = BatchId::new(op.batch_id.clone());
            if self.inner.auth.check_lease_ticket(
                &batch,
                op.op_index,
                op.attempt,
                &holder,
                &op.ticket,
            ) {
                // Written down before the session reads anything: results
                // of adopted ops may follow the Register at once.
                ledger.give(&batch, op.op_index, op.attempt);
                running.push((
                    batch,
                    Claimed {
                        index: op.op_index,
                        attempt: op.attempt,
                    },
                ));
            } else {
                crate::metrics::count_worker_refusal("adopt");
                warn!(worker = %worker_id, token = %principal.token_id, batch = %op.batch_id, op_index = op.op_index, attempt = op.attempt, "refused to adopt: no valid lease ticket for this worker identity");
                refused.push(v1::OpRef {
                    ticket: String::new(),
                    ..op
                });
            }
        }
        self.inner
            .dispatch
            .send(Command::WorkerJoined {
                conn,
                worker_id: worker_id.clone(),
                kinds: register.kinds.into_iter().collect(),
                labels,
                slots: register.slots,
                outbound,
                running,
                holder: holder.into(),
                ledger: ledger.clone(),
            })
            .await;
        Ok(WorkerSession {
            conn,
            worker_id,
            token_id: principal.token_id.clone(),
            ledger,
            refused,
            coordinator: self.clone(),
        })
    }
}

/// How long a watch waits for a batch whose record is gone to be marked
/// lost (the store restarted empty) before it ends with "not found" (its
/// retention ran out).
const MISSING_BATCH_GRACE: Duration = Duration::from_secs(30);

/// The `BatchFinished` of an ended batch whose own final event the watch
/// cannot deliver: it resumed at or past it, or the batch was lost with the
/// store's data (its events were numbered afresh). Numbered right after the
/// last event the watcher saw, so the stream stays gapless for it; says the
/// batch's state and why it ended.
fn final_event(meta: &volley_store::BatchMeta, after_seq: u64) -> v1::BatchEvent {
    v1::BatchEvent {
        seq: after_seq + 1,
        at_ms: meta.finished_ms.unwrap_or_default(),
        kind: v1::EventKind::BatchFinished as i32,
        message: meta.error.clone(),
        batch_state: convert::batch_state(meta.state) as i32,
        ..v1::BatchEvent::default()
    }
}

async fn wait_for_bell(doorbells: &mut broadcast::Receiver<Doorbell>, batch: &BatchId) {
    loop {
        match doorbells.recv().await {
            Ok(Doorbell::Batch(rung) | Doorbell::Events(rung)) if &rung == batch => return,
            // The batch ended: its last events are there to read.
            Ok(Doorbell::Ended(rung)) if &rung == batch => return,
            Ok(
                Doorbell::Batch(_)
                | Doorbell::Events(_)
                | Doorbell::Memory(_)
                | Doorbell::Started(_)
                | Doorbell::Ended(_),
            ) => {}
            // Missed bells or a resync: re-read to be sure.
            Ok(Doorbell::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => {
                // No more bells: fall back to the timer alone.
                std::future::pending::<()>().await;
            }
        }
    }
}

impl WorkerSession {
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// The ops of its Register it may not carry on (no valid lease ticket):
    /// the adapter tells the worker to stop them, right after the greeting.
    pub fn take_refused(&mut self) -> Vec<v1::OpRef> {
        std::mem::take(&mut self.refused)
    }

    /// Keeps the items about attempts this session was given (taking them
    /// off its ledger); refuses the others — a result or hand-back for an
    /// op another session runs is a forgery or a confusion, never recorded
    /// — counting and logging each refusal with the session's token id.
    /// The refused still return their credit: a slot count cannot be
    /// raised by lying, since credits never exceed the slots registered.
    fn only_ours<T>(
        &self,
        items: Vec<T>,
        what: &'static str,
        key: impl Fn(&T) -> (&str, u32, u32),
    ) -> Vec<T> {
        let mut kept = Vec::with_capacity(items.len());
        for item in items {
            let (batch, index, attempt) = key(&item);
            if self.ledger.take(batch, index, attempt) {
                kept.push(item);
            } else {
                crate::metrics::count_worker_refusal(what);
                warn!(worker = %self.worker_id, token = %self.token_id, %batch, op_index = index, attempt, what, "refused: this session was not given that attempt");
            }
        }
        kept
    }

    /// Records a flush of results: one store call per batch in it, then
    /// returns the worker's credits to the dispatcher.
    #[tracing::instrument(skip_all, fields(worker = %self.worker_id, results = results.len()))]
    pub async fn results(&self, results: Vec<v1::OpResult>) {
        let returned = results.len() as u32;
        let mut by_batch: BTreeMap<String, Vec<v1::OpResult>> = BTreeMap::new();
        let results = self.only_ours(results, "result", |result| {
            (result.batch_id.as_str(), result.op_index, result.attempt)
        });
        for result in results {
            by_batch
                .entry(result.batch_id.clone())
                .or_default()
                .push(result);
        }
        let inner = &self.coordinator.inner;
        let mut per_batch = Vec::with_capacity(by_batch.len());
        for (batch, results) in by_batch {
            let batch = BatchId::new(batch);
            let indices: Vec<u32> = results.iter().map(|result| result.op_index).collect();
            let outcome = match inner.plans.get(inner.store.as_ref(), &batch).await {
                Ok(planned) => {
                    let completions: Vec<Completion> = results
                        .into_iter()
                        .map(|result| completion(&planned.plan, &self.worker_id, result))
                        .collect();
                    match self.record(&batch, &completions).await {
                        Ok(outcome) => {
                            count_recorded(&planned.plan, &completions, &outcome);
                            if !outcome.stale.is_empty() {
                                warn!(%batch, stale = ?outcome.stale, "stale results ignored");
                            }
                            if outcome.finished.is_some() {
                                inner.plans.finished(&batch);
                            }
                            Some(outcome)
                        }
                        Err(error) => {
                            warn!(%batch, %error, "could not record results");
                            None
                        }
                    }
                }
                Err(error) => {
                    warn!(%batch, %error, "results for an unknown batch");
                    None
                }
            };
            per_batch.push(BatchResults {
                batch,
                indices,
                outcome,
            });
        }
        inner
            .dispatch
            .send(Command::Completed {
                conn: self.conn,
                returned,
                per_batch,
            })
            .await;
    }

    /// Records completions, retrying while the store is unreachable (with
    /// backoff, until shutdown): a result the worker delivered is never
    /// dropped because Redis was away for a while. The worker's stream
    /// waits meanwhile, which is the backpressure we want.
    async fn record(
        &self,
        batch: &BatchId,
        completions: &[Completion],
    ) -> Result<volley_store::CompleteOutcome, volley_store::StoreError> {
        let inner = &self.coordinator.inner;
        let mut backoff = STORE_RETRY_START;
        loop {
            match inner.store.complete(batch, completions, now_ms()).await {
                Err(error) if error.is_retryable() && !inner.shutdown.is_cancelled() => {
                    warn!(%batch, %error, retry_in = ?backoff, "store unreachable; keeping the results and retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = inner.shutdown.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(STORE_RETRY_MAX);
                }
                outcome => return outcome,
            }
        }
    }

    /// The worker is alive: extend the leases of what it runs.
    pub async fn heartbeat(&self) {
        self.coordinator
            .inner
            .dispatch
            .send(Command::Heartbeat { conn: self.conn })
            .await;
    }

    /// Ops the worker hands back unrun (it is draining): ready again at once,
    /// without counting an attempt; their slots come back.
    #[tracing::instrument(skip_all, fields(worker = %self.worker_id, ops = ops.len()))]
    pub async fn return_ops(&self, ops: Vec<v1::OpRef>, reason: &str) {
        let returned = ops.len() as u32;
        let ops = self.only_ours(ops, "return", |op| {
            (op.batch_id.as_str(), op.op_index, op.attempt)
        });
        // Handing back is what a draining worker does: assign it nothing more.
        self.coordinator
            .inner
            .dispatch
            .send(Command::Draining { conn: self.conn })
            .await;
        let mut by_batch: BTreeMap<String, Vec<Claimed>> = BTreeMap::new();
        for op in ops {
            by_batch.entry(op.batch_id).or_default().push(Claimed {
                index: op.op_index,
                attempt: op.attempt,
            });
        }
        let inner = &self.coordinator.inner;
        let mut per_batch = Vec::with_capacity(by_batch.len());
        for (batch, claims) in by_batch {
            let batch = BatchId::new(batch);
            info!(%batch, ops = claims.len(), reason, "ops handed back");
            if let Err(error) = inner.store.return_ops(&batch, &claims, now_ms()).await {
                warn!(%batch, %error, "could not take ops back; their leases will run out");
            }
            per_batch.push(BatchResults {
                batch,
                indices: claims.iter().map(|claim| claim.index).collect(),
                // Look at the queue again: the ops are ready.
                outcome: None,
            });
        }
        inner
            .dispatch
            .send(Command::Completed {
                conn: self.conn,
                returned,
                per_batch,
            })
            .await;
    }

    /// The worker's stream ended: the dispatcher forgets it and re-queues
    /// what it was running.
    /// `clean`: the worker ended its stream itself, after reporting every
    /// op it ran (a drain); what is still assigned to it never started.
    /// Otherwise the stream broke and its running ops are lost.
    pub async fn close(self, clean: bool) {
        info!(worker = %self.worker_id, clean, "worker disconnected");
        self.coordinator
            .inner
            .dispatch
            .send(Command::WorkerLeft {
                conn: self.conn,
                clean,
            })
            .await;
    }
}

fn completion(plan: &Plan, worker: &str, result: v1::OpResult) -> Completion {
    let store_as = plan
        .ops
        .get(result.op_index as usize)
        .and_then(|op| op.store_as.clone());
    let failure = failure_kind(&result);
    Completion {
        index: result.op_index,
        attempt: result.attempt,
        ok: result.ok,
        failure,
        retry_after_ms: result.retry_after_ms,
        output: result.output,
        error: result.error,
        details_json: result.details_json,
        worker: worker.to_owned(),
        started_ms: result.started_at_ms,
        duration_ms: result.duration_ms,
        store_as,
    }
}

/// What kind of failure a worker reported: its `failure_kind`, or for a
/// worker that predates it, the `retryable` flag in its details.
fn failure_kind(result: &v1::OpResult) -> FailureKind {
    match v1::FailureKind::try_from(result.failure_kind) {
        Ok(v1::FailureKind::Timeout) => FailureKind::Timeout,
        Ok(v1::FailureKind::Permanent) => FailureKind::Permanent,
        // A cancel came from us (a cancelled batch): nothing to retry.
        Ok(v1::FailureKind::Cancelled) => FailureKind::Permanent,
        Ok(v1::FailureKind::Error) => FailureKind::Error,
        Ok(v1::FailureKind::Unspecified) | Err(_) => {
            if declared_permanent(&result.details_json) {
                FailureKind::Permanent
            } else {
                FailureKind::Error
            }
        }
    }
}

fn declared_permanent(details_json: &str) -> bool {
    if !details_json.contains("retryable") {
        return false;
    }
    serde_json::from_str::<serde_json::Value>(details_json)
        .ok()
        .and_then(|details| {
            details
                .get("retryable")
                .and_then(serde_json::Value::as_bool)
        })
        .is_some_and(|retryable| !retryable)
}

fn new_batch(planned: &PlannedBatch, spec: Vec<u8>) -> NewBatch {
    let created_ms = now_ms();
    let plan = &planned.plan;
    NewBatch {
        request_digest: String::new(),
        lost_worker_retries: DEFAULT_LOST_WORKER_RETRIES,
        id: planned.id.clone(),
        name: plan.name.clone(),
        memory: planned.memory_scope(),
        tenant: planned.tenant.clone(),
        submitted_by: String::new(),
        max_parallel: plan.max_parallel,
        on_failure: if plan.fail_fast {
            OnFailure::FailFast
        } else {
            OnFailure::Continue
        },
        created_ms,
        deadline_ms: if plan.deadline_ms == 0 {
            0
        } else {
            created_ms + plan.deadline_ms
        },
        retry_failed_sequential: plan.retry_failed_sequential,
        retain_ms: 0,
        spec,
        ops: plan.ops.iter().map(|op| new_op(op, created_ms)).collect(),
    }
}

/// The store's view of a planned op; waits time out `wait_timeout_ms` after
/// `since_ms` (its batch's creation, or its spawn).
pub(crate) fn new_op(op: &PlannedOp, since_ms: u64) -> NewOp {
    NewOp {
        priority: op.priority,
        run_if_always: op.run_if_always,
        max_attempts: op.max_attempts,
        deps: op.deps.len() as u32,
        dependents: op.dependents.to_vec(),
        wait_for: op.wait_for.to_vec(),
        wait_for_any: op.wait_for_any.to_vec(),
        wait_deadline_ms: if op.wait_timeout_ms == 0 {
            0
        } else {
            since_ms + op.wait_timeout_ms
        },
        after: Vec::new(),
        // The store judges these only in the batch's own memory.
        writes: op.memory_writes.to_vec(),
        retry: {
            let retry = op.retry();
            RetryPolicy {
                on_failure: retry.on_failure,
                on_timeout: retry.on_timeout,
                on_lost_worker: retry.on_lost_worker,
                backoff_initial_ms: retry.backoff_initial_ms,
                backoff_max_ms: retry.backoff_max_ms,
                backoff_multiplier: retry.backoff_multiplier,
                backoff_jitter: retry.backoff_jitter,
            }
        },
    }
}

/// Retrying a store call that failed for want of a connection: the first
/// pause, doubled up to the second.
const STORE_RETRY_START: Duration = Duration::from_millis(100);
const STORE_RETRY_MAX: Duration = Duration::from_secs(2);

/// Shutting the dispatcher down and waiting for it is `wait`'s job; this is
/// how long a caller should give it.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
