//! The dispatcher's unit suite: a [`Dispatcher`] driven through its
//! [`Command`]s over the in-memory store, with each worker an in-memory
//! channel, as the store's conformance suite drives a store. Each test
//! asserts on what the workers were sent and what the store holds.
//!
//! The harness runs the loop's steps itself (`handle`, `ring`, `pump`,
//! `housekeeping`) instead of spawning [`Dispatcher::run`], so every test
//! is deterministic: nothing happens between two steps. Where the
//! dispatcher's clock matters (silent workers, hold-offs, blocked ops) the
//! tests run on tokio's paused clock; the store's clock is the wall clock
//! (unix ms), so deadlines are a few tens of milliseconds.

mod claims;
mod housekeeping;
mod routing;
mod sessions;
mod templates;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prost::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use volley_proto::{BatchId, v1};
use volley_store::{
    Claimed, Completion, MemoryStore, NewBatch, OnFailure, OpRecord, OpState, Store, StoredSpec,
};

use super::{BatchResults, Command, Dispatcher, KnownKinds, Ledger};
use crate::auth::{AuthConfig, Authenticator};
use crate::config::CoordinatorConfig;
use crate::plans::{PlanCache, PlannedBatch, replan};
use crate::service::{new_op, now_ms};

/// This coordinator's id in the tests.
const HERE: &str = "here";

pub(super) struct Harness {
    pub(super) dispatcher: Dispatcher,
    pub(super) store: Arc<MemoryStore>,
    pub(super) plans: Arc<PlanCache>,
    pub(super) kinds: Arc<RwLock<KnownKinds>>,
    next_batch: u32,
}

/// A connected worker as the dispatcher sees it: its outbound channel's
/// other end, and its session's ledger.
pub(super) struct TestWorker {
    pub(super) conn: u64,
    pub(super) receiver: mpsc::Receiver<v1::CoordinatorMessage>,
    pub(super) ledger: Arc<Ledger>,
}

impl TestWorker {
    /// Every assignment sent to it since the last look.
    pub(super) fn assignments(&mut self) -> Vec<v1::Assignment> {
        self.messages()
            .into_iter()
            .flat_map(|message| match message {
                v1::coordinator_message::Msg::Assignments(batch) => batch.assignments,
                _ => Vec::new(),
            })
            .collect()
    }

    /// Every (batch, op index, attempt) it was told to stop since the last look.
    pub(super) fn cancels(&mut self) -> Vec<(String, u32, u32)> {
        self.messages()
            .into_iter()
            .flat_map(|message| match message {
                v1::coordinator_message::Msg::Cancel(cancel) => cancel.ops,
                _ => Vec::new(),
            })
            .map(|op| (op.batch_id, op.op_index, op.attempt))
            .collect()
    }

    /// How many messages it was sent (not looked at yet).
    pub(super) fn pending_messages(&self) -> usize {
        self.receiver.len()
    }

    fn messages(&mut self) -> Vec<v1::coordinator_message::Msg> {
        let mut messages = Vec::new();
        while let Ok(message) = self.receiver.try_recv() {
            messages.extend(message.msg);
        }
        messages
    }
}

pub(super) fn config() -> CoordinatorConfig {
    CoordinatorConfig {
        id: HERE.to_owned(),
        resync_interval: Duration::from_secs(1),
        lease: Duration::from_secs(15),
        ownership_ttl: Duration::from_secs(5),
        reconnect_grace: Duration::from_secs(3),
        report_blocked_after: Duration::from_secs(10),
        ..CoordinatorConfig::default()
    }
}

pub(super) async fn harness() -> Harness {
    harness_with(config()).await
}

pub(super) async fn harness_with(config: CoordinatorConfig) -> Harness {
    let store = Arc::new(MemoryStore::new());
    let dyn_store: Arc<dyn Store> = store.clone();
    let (handle, commands) = super::channel();
    let plans = Arc::new(PlanCache::new(16));
    let kinds = Arc::new(RwLock::new(KnownKinds::default()));
    let epoch = store.epoch().await.expect("epoch");
    let auth = Arc::new(Authenticator::new(&AuthConfig::None, dyn_store.clone()));
    let dispatcher = Dispatcher::new(
        dyn_store,
        &config,
        commands,
        handle,
        plans.clone(),
        kinds.clone(),
        epoch,
        Arc::new(tokio::sync::watch::Sender::new(true)),
        auth,
        CancellationToken::new(),
    );
    Harness {
        dispatcher,
        store,
        plans,
        kinds,
        next_batch: 0,
    }
}

/// An op of kind `kind` with no args.
pub(super) fn op(id: &str, kind: &str) -> v1::Op {
    v1::Op {
        id: id.to_owned(),
        kind: kind.to_owned(),
        args_json: "{}".to_owned(),
        ..v1::Op::default()
    }
}

/// A batch of `ops`.
pub(super) fn batch(ops: Vec<v1::Op>) -> v1::Batch {
    v1::Batch {
        name: "test".to_owned(),
        ops,
        ..v1::Batch::default()
    }
}

/// `count` independent ops `op0`, `op1`, … of `kind`.
pub(super) fn ops(count: usize, kind: &str) -> Vec<v1::Op> {
    (0..count).map(|n| op(&format!("op{n}"), kind)).collect()
}

/// What the coordinator's submit writes to the store for `planned`
/// (`service.rs::new_batch`, which is private to the service).
pub(super) fn new_batch(planned: &PlannedBatch, spec: Vec<u8>) -> NewBatch {
    let created_ms = now_ms();
    let plan = &planned.plan;
    NewBatch {
        request_digest: String::new(),
        lost_worker_retries: volley_store::DEFAULT_LOST_WORKER_RETRIES,
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

impl Harness {
    /// Plans and stores the batch (as another coordinator would), without
    /// telling the dispatcher.
    pub(super) async fn store_batch(&mut self, batch: v1::Batch) -> Arc<PlannedBatch> {
        self.next_batch += 1;
        let id = BatchId::new(format!("batch-{}", self.next_batch));
        let spec = batch.encode_to_vec();
        let stored = StoredSpec {
            base: spec.clone(),
            added: Vec::new(),
        };
        let planned = Arc::new(replan(&id, &stored).expect("the test batch plans"));
        self.store
            .create_batch(new_batch(&planned, spec))
            .await
            .expect("create the batch");
        planned
    }

    /// Submits the batch as `Coordinator::submit` does: stored, cached,
    /// then `BatchAdded`. Nothing is claimed until the next [`Self::step`].
    pub(super) async fn submit(&mut self, batch: v1::Batch) -> BatchId {
        let planned = self.store_batch(batch).await;
        self.plans.insert(planned.clone());
        let id = planned.id.clone();
        self.dispatcher.handle(Command::BatchAdded(planned)).await;
        id
    }

    pub(super) async fn join(&mut self, worker_id: &str, kinds: &[&str], slots: u32) -> TestWorker {
        self.join_with(worker_id, kinds, &[], slots, Vec::new(), 64)
            .await
    }

    pub(super) async fn join_labelled(
        &mut self,
        worker_id: &str,
        kinds: &[&str],
        labels: &[(&str, &str)],
        slots: u32,
    ) -> TestWorker {
        self.join_with(worker_id, kinds, labels, slots, Vec::new(), 64)
            .await
    }

    /// A worker registers: `running` are ops it still runs from an earlier
    /// session; `capacity` bounds its outbound channel.
    pub(super) async fn join_with(
        &mut self,
        worker_id: &str,
        kinds: &[&str],
        labels: &[(&str, &str)],
        slots: u32,
        running: Vec<(BatchId, Claimed)>,
        capacity: usize,
    ) -> TestWorker {
        let conn = self.dispatcher.handle.next_conn();
        let (outbound, receiver) = mpsc::channel(capacity);
        let ledger = Arc::new(Ledger::default());
        for (batch, claim) in &running {
            ledger.give(batch, claim.index, claim.attempt);
        }
        self.dispatcher
            .handle(Command::WorkerJoined {
                conn,
                worker_id: worker_id.to_owned(),
                kinds: kinds.iter().map(|kind| (*kind).to_owned()).collect(),
                labels: labels
                    .iter()
                    .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                    .collect::<BTreeMap<_, _>>(),
                slots,
                outbound,
                running,
                holder: Arc::from(format!("token/{worker_id}")),
                ledger: ledger.clone(),
            })
            .await;
        TestWorker {
            conn,
            receiver,
            ledger,
        }
    }

    /// What the run loop does after any wake-up: bells, queued commands,
    /// then claims and routes.
    pub(super) async fn step(&mut self) {
        // Commands sent by tasks the dispatcher spawned (batch loads).
        tokio::task::yield_now().await;
        while let Ok(bell) = self.dispatcher.doorbells.try_recv() {
            self.dispatcher.ring(Ok(bell));
        }
        while let Ok(command) = self.dispatcher.commands.try_recv() {
            self.dispatcher.handle(command).await;
        }
        self.dispatcher.pump().await;
    }

    /// Steps until the tasks the dispatcher spawned (batch loads) are
    /// done and their commands handled.
    pub(super) async fn settle(&mut self) {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        while !self.dispatcher.loading.is_empty() {
            let command =
                tokio::time::timeout(Duration::from_secs(5), self.dispatcher.commands.recv())
                    .await
                    .expect("a batch load ends")
                    .expect("the channel is open");
            self.dispatcher.handle(command).await;
        }
        self.step().await;
    }

    /// The resync tick: every batch looked at again, then housekeeping,
    /// then a step.
    pub(super) async fn tick(&mut self) {
        while let Ok(command) = self.dispatcher.commands.try_recv() {
            self.dispatcher.handle(command).await;
        }
        self.dispatcher.mark_all_ready();
        self.dispatcher.housekeeping().await;
        self.step().await;
    }

    /// The worker's session recording results, as `WorkerSession::results`
    /// does: the ledger checked, the store told, the dispatcher told.
    /// Returns the store's outcome.
    pub(super) async fn report(
        &mut self,
        worker: &TestWorker,
        assignments: &[v1::Assignment],
        ok: bool,
        output: &str,
    ) -> volley_store::CompleteOutcome {
        let batch = BatchId::new(assignments[0].batch_id.clone());
        let completions: Vec<Completion> = assignments
            .iter()
            .map(|assignment| {
                assert!(
                    worker.ledger.take(
                        &assignment.batch_id,
                        assignment.op_index,
                        assignment.attempt
                    ),
                    "the session's ledger has the assignment"
                );
                Completion {
                    index: assignment.op_index,
                    attempt: assignment.attempt,
                    ok,
                    output: output.to_owned(),
                    error: if ok { String::new() } else { "boom".to_owned() },
                    started_ms: now_ms(),
                    ..Completion::default()
                }
            })
            .collect();
        let outcome = self
            .store
            .complete(&batch, &completions, now_ms())
            .await
            .expect("complete");
        self.dispatcher
            .handle(Command::Completed {
                conn: worker.conn,
                returned: completions.len() as u32,
                per_batch: vec![BatchResults {
                    batch,
                    indices: completions
                        .iter()
                        .map(|completion| completion.index)
                        .collect(),
                    outcome: Some(outcome.clone()),
                }],
            })
            .await;
        outcome
    }

    pub(super) async fn records(&self, batch: &BatchId) -> Vec<OpRecord> {
        self.store.op_records(batch).await.expect("op records")
    }

    pub(super) async fn states(&self, batch: &BatchId) -> Vec<OpState> {
        self.records(batch)
            .await
            .into_iter()
            .map(|record| record.state)
            .collect()
    }

    pub(super) async fn batch_state(&self, batch: &BatchId) -> volley_store::BatchState {
        self.store
            .meta(batch)
            .await
            .expect("meta")
            .expect("the batch exists")
            .state
    }

    /// The dispatcher's in-flight count of the batch (None: not dispatched).
    pub(super) fn in_flight(&self, batch: &BatchId) -> Option<u32> {
        self.dispatcher
            .batches
            .get(batch)
            .map(|active| active.in_flight)
    }

    pub(super) fn parked(&self, batch: &BatchId) -> Vec<u32> {
        self.dispatcher
            .batches
            .get(batch)
            .map(|active| active.parked.iter().map(|claim| claim.index).collect())
            .unwrap_or_default()
    }

    /// Free credits of one worker, from `ListWorkers`.
    pub(super) fn busy_of(&self, worker_id: &str) -> Option<u32> {
        self.dispatcher
            .list_workers()
            .into_iter()
            .find(|info| info.worker_id == worker_id)
            .map(|info| info.busy)
    }

    pub(super) fn worker_ids(&self) -> HashSet<String> {
        self.dispatcher
            .list_workers()
            .into_iter()
            .map(|info| info.worker_id)
            .collect()
    }
}

/// The op ids of assignments, sorted.
pub(super) fn op_ids(assignments: &[v1::Assignment]) -> Vec<String> {
    let mut ids: Vec<String> = assignments
        .iter()
        .map(|assignment| assignment.op_id.clone())
        .collect();
    ids.sort();
    ids
}
