//! Submitting a batch: limits checked as it arrives, then validated,
//! planned (off the async workers), stored and handed to the dispatcher.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message;
use tracing::{info, warn};
use volley_plan::{Plan, PlannedOp};
use volley_proto::{BatchId, v1};
use volley_store::{
    Created, DEFAULT_LOST_WORKER_RETRIES, NewBatch, NewOp, OnFailure, RetryPolicy, StoreError,
};

use super::{Coordinator, now_ms};
use crate::auth::{AuthError, Principal, Role};
use crate::dispatch::Command;
use crate::domain::SubmitOutcome;
use crate::error::CoordinatorError;
use crate::idempotency;
use crate::plans::PlannedBatch;
use crate::tracing_ctx::BatchTrace;

/// The most lost-worker retries a batch may ask for per op: enough for any
/// real outage, not enough to loop on a poisoned op for ever.
const MAX_LOST_WORKER_RETRIES: u32 = 100;

impl Coordinator {
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

    /// A `max_parallel` the connected workers cannot reach: the batch
    /// runs, but never as wide as asked, which is worth saying once.
    async fn parallelism_beyond_slots(&self, plan: &Plan) -> Option<String> {
        let wanted = plan.max_parallel as usize;
        if wanted == 0 || plan.ops.len() <= 1 {
            return None;
        }
        let slots: usize = self
            .workers()
            .await
            .iter()
            .map(|worker| worker.slots as usize)
            .sum();
        (slots > 0 && wanted > slots && plan.ops.len() > slots).then(|| {
            format!(
                "max_parallel is {wanted}, but the connected workers have {slots} slot(s) in all: at most {slots} op(s) run at once until more workers (or workers with more --slots) connect"
            )
        })
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
    ) -> Result<SubmitOutcome, CoordinatorError> {
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
        let mut plan = plan.map_err(CoordinatorError::Invalid)?;
        // Reported once the batch is stored; the cached plan need not keep them.
        let unwritten_waits = std::mem::take(&mut plan.unwritten_waits);
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
        warnings.extend(self.parallelism_beyond_slots(&plan).await);
        let planned = Arc::new(PlannedBatch::new(
            id.clone(),
            plan,
            trace,
            principal.tenant.clone(),
        ));
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
                return Ok(SubmitOutcome {
                    batch: id,
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
        self.note_unwritten_waits(&id, &unwritten_waits).await;
        self.inner.dispatch.send(Command::BatchAdded(planned)).await;
        info!(batch = %id, op_count, audit = "submit", token = %principal.token_id, tenant = %principal.tenant, "batch accepted");
        idempotency::fault_point("submit-stored");
        Ok(SubmitOutcome {
            batch: id,
            op_count,
            warnings,
        })
    }

    /// Ops of a batch with its own memory that wait for a key no op of the
    /// batch writes can only be unblocked by a client or an agent: say so
    /// in the batch's events (`OP_BLOCKED`), once, as it starts. Which ops
    /// and keys is the planner's finding (`Plan::unwritten_waits`).
    async fn note_unwritten_waits(&self, batch: &BatchId, unwritten_waits: &[(u32, Vec<String>)]) {
        for (index, unwritten) in unwritten_waits {
            let keys: Vec<String> = unwritten.iter().map(|key| format!("`{key}`")).collect();
            let message = format!(
                "waits for memory key {} that no op of the batch writes: only a client or an agent's put can unblock it",
                keys.join(", ")
            );
            if let Err(error) = self
                .store()
                .note_blocked(batch, *index, &message, now_ms())
                .await
            {
                warn!(%batch, %error, "could not note a blocked op");
            }
        }
    }
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
