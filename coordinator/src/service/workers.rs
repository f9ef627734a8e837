//! The cluster's workers, and a connected worker's session: its
//! registration, results, hand-backs, heartbeats and end.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{info, warn};
use volley_plan::Plan;
use volley_proto::{BatchId, v1};
use volley_store::{Claimed, Completion};

use super::{Coordinator, STORE_RETRY_MAX, STORE_RETRY_START, now_ms};
use crate::auth::{AuthError, Principal, Role};
use crate::dispatch::{self, BatchResults, Command};
use crate::domain::{HeldOp, OpRef, OpResult, WorkerInfo, WorkerRegistration};
use crate::error::CoordinatorError;
use crate::metrics::count_recorded;

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
    refused: Vec<OpRef>,
    coordinator: Coordinator,
}

impl Coordinator {
    /// Live workers of the whole cluster and how busy they are: ours as
    /// they are now, those of other coordinators from the registry.
    pub async fn workers(&self) -> Vec<WorkerInfo> {
        let mut workers: Vec<WorkerInfo> = self.inner.dispatch.workers().await;
        match self.store().workers(now_ms()).await {
            Ok(cluster) => workers.extend(
                cluster
                    .into_iter()
                    .filter(|(coordinator, _)| coordinator != &self.inner.config.id)
                    .map(|(coordinator, entry)| WorkerInfo {
                        worker_id: entry.worker_id,
                        kinds: entry.kinds,
                        labels: entry.labels.into_iter().collect(),
                        slots: entry.slots,
                        busy: entry.busy,
                        draining: entry.draining,
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
        register: WorkerRegistration,
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
        principal.check_worker_limits(&register.labels, &register.kinds)?;
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
        for HeldOp { op, ticket } in register.running {
            if self
                .inner
                .auth
                .check_lease_ticket(&op.batch, op.index, op.attempt, &holder, &ticket)
            {
                // Written down before the session reads anything: results
                // of adopted ops may follow the Register at once.
                ledger.give(&op.batch, op.index, op.attempt);
                running.push((
                    op.batch,
                    Claimed {
                        index: op.index,
                        attempt: op.attempt,
                    },
                ));
            } else {
                crate::metrics::count_worker_refusal("adopt");
                warn!(worker = %worker_id, token = %principal.token_id, batch = %op.batch, op_index = op.index, attempt = op.attempt, "refused to adopt: no valid lease ticket for this worker identity");
                refused.push(op);
            }
        }
        self.inner
            .dispatch
            .send(Command::WorkerJoined {
                conn,
                worker_id: worker_id.clone(),
                kinds: register.kinds.into_iter().collect(),
                labels: register.labels,
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

impl WorkerSession {
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// The ops of its Register it may not carry on (no valid lease ticket):
    /// the adapter tells the worker to stop them, right after the greeting.
    pub fn take_refused(&mut self) -> Vec<OpRef> {
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
    pub async fn results(&self, results: Vec<OpResult>) {
        let returned = results.len() as u32;
        let mut by_batch: BTreeMap<BatchId, Vec<OpResult>> = BTreeMap::new();
        let results = self.only_ours(results, "result", |result| {
            (result.op.batch.as_str(), result.op.index, result.op.attempt)
        });
        for result in results {
            by_batch
                .entry(result.op.batch.clone())
                .or_default()
                .push(result);
        }
        let inner = &self.coordinator.inner;
        let mut per_batch = Vec::with_capacity(by_batch.len());
        for (batch, results) in by_batch {
            let indices: Vec<u32> = results.iter().map(|result| result.op.index).collect();
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
    pub async fn return_ops(&self, ops: Vec<OpRef>, reason: &str) {
        let returned = ops.len() as u32;
        let ops = self.only_ours(ops, "return", |op| {
            (op.batch.as_str(), op.index, op.attempt)
        });
        // Handing back is what a draining worker does: assign it nothing more.
        self.coordinator
            .inner
            .dispatch
            .send(Command::Draining { conn: self.conn })
            .await;
        let mut by_batch: BTreeMap<BatchId, Vec<Claimed>> = BTreeMap::new();
        for op in ops {
            by_batch.entry(op.batch).or_default().push(Claimed {
                index: op.index,
                attempt: op.attempt,
            });
        }
        let inner = &self.coordinator.inner;
        let mut per_batch = Vec::with_capacity(by_batch.len());
        for (batch, claims) in by_batch {
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

fn completion(plan: &Plan, worker: &str, result: OpResult) -> Completion {
    let store_as = plan
        .ops
        .get(result.op.index as usize)
        .and_then(|op| op.store_as.clone());
    Completion {
        index: result.op.index,
        attempt: result.op.attempt,
        ok: result.ok,
        failure: result.failure,
        retry_after_ms: result.retry_after_ms,
        output: result.output,
        error: result.error,
        details_json: result.details_json,
        worker: worker.to_owned(),
        started_ms: result.started_ms,
        duration_ms: result.duration_ms,
        store_as,
    }
}
