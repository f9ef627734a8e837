//! The ops a worker runs and the results it still owes a coordinator, kept across coordinator sessions.
//!
//! [`WorkerOps`] belongs to [`run_worker`](crate::run_worker), not to one
//! `Session` stream: when a stream breaks, ops keep running and their
//! results wait here until a session (to the same coordinator or another one
//! behind the same address) takes them. It also runs the drain's clock, so a
//! drain carries on across sessions and while disconnected.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{Id as TaskId, JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use volley_proto::v1::{Assignment, FailureKind, OpRef, OpResult};

use crate::executor::Executor;
use crate::metrics::{SlotGauges, set_draining};

/// How long cancelled ops get to end (and report) before they are aborted.
pub(crate) const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// An op as the coordinator names it: (batch, op index, attempt).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct OpKey {
    pub(crate) batch_id: String,
    pub(crate) op_index: u32,
    pub(crate) attempt: u32,
}

impl OpKey {
    pub(crate) fn of_assignment(assignment: &Assignment) -> Self {
        Self {
            batch_id: assignment.batch_id.clone(),
            op_index: assignment.op_index,
            attempt: assignment.attempt,
        }
    }

    pub(crate) fn of_result(result: &OpResult) -> Self {
        Self {
            batch_id: result.batch_id.clone(),
            op_index: result.op_index,
            attempt: result.attempt,
        }
    }

    pub(crate) fn from_ref(op: OpRef) -> Self {
        Self {
            batch_id: op.batch_id,
            op_index: op.op_index,
            attempt: op.attempt,
        }
    }

    pub(crate) fn into_ref(self) -> OpRef {
        OpRef {
            batch_id: self.batch_id,
            op_index: self.op_index,
            attempt: self.attempt,
            ticket: String::new(),
        }
    }
}

/// How an op task ended.
#[derive(Debug)]
enum OpEnd {
    /// It has a result to report.
    Finished(OpResult),
    /// The drain's cancel cut it short: no result, it is handed back instead.
    Interrupted,
}

/// A running op: the token a coordinator's `CancelOps` fires, and its task
/// (to find the op again if the task is aborted or panics).
struct RunningOp {
    coordinator_cancel: CancellationToken,
    task: TaskId,
}

/// Where a shutdown is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DrainPhase {
    /// No shutdown: ops run to the end and report.
    Serving,
    /// Shutdown: running ops may finish until `deadline`.
    Draining { deadline: Instant },
    /// The deadline passed and every op was cancelled; stragglers are aborted at `abort_at`.
    Cancelling {
        deadline: Instant,
        abort_at: Instant,
    },
    /// Stragglers were aborted; waiting for their tasks, up to `give_up_at`.
    Aborted {
        deadline: Instant,
        give_up_at: Instant,
    },
}

/// The ops this worker runs, and what it owes a coordinator: results not
/// delivered yet and ops to hand back. Owned by `run_worker`, lent to each
/// session in turn.
pub(crate) struct WorkerOps {
    executor: Arc<Executor>,
    /// The worker's span: ops are its children, not a session's, since they
    /// outlive sessions.
    span: tracing::Span,
    /// Every op task; each returns its key and how it ended.
    tasks: JoinSet<(OpKey, OpEnd)>,
    running: HashMap<OpKey, RunningOp>,
    /// Parent of every op's token: the drain timeout cancels them all at once.
    drain_cancel: CancellationToken,
    phase: DrainPhase,
    /// Finished results no session has sent yet, oldest first. Bounded by the
    /// coordinator: it assigns no more than the worker's free slots, and a
    /// slot only frees up when its result arrives.
    undelivered: VecDeque<OpResult>,
    /// The keys of `undelivered`, with how many results each has there
    /// (a requeued result may sit next to its own copy), so checking
    /// whether an op is held does not scan the queue.
    undelivered_keys: HashMap<OpKey, u32>,
    /// Ops the drain timeout interrupted, to hand back (`ReturnOps`).
    interrupted: Vec<OpKey>,
    /// Busy and free slots, kept as ops start and end (`with_slot_gauges`).
    slot_gauges: Option<SlotGauges>,
    /// The lease ticket of each op held (running, or with a result not yet
    /// delivered): shown in Register.running so that a coordinator adopts
    /// the op after a reconnect.
    tickets: HashMap<OpKey, String>,
}

impl WorkerOps {
    /// Ops run with `executor`, as children of the current span.
    pub(crate) fn new(executor: Arc<Executor>) -> Self {
        Self {
            executor,
            span: tracing::Span::current(),
            tasks: JoinSet::new(),
            running: HashMap::new(),
            drain_cancel: CancellationToken::new(),
            phase: DrainPhase::Serving,
            undelivered: VecDeque::new(),
            undelivered_keys: HashMap::new(),
            tickets: HashMap::new(),
            interrupted: Vec::new(),
            slot_gauges: None,
        }
    }

    /// Keeps the slot gauges (`volley_worker_slots{state}`) of a worker with
    /// `slots` slots: busy = ops running.
    pub(crate) fn with_slot_gauges(mut self, slots: u32) -> Self {
        self.slot_gauges = Some(SlotGauges::new(slots));
        self
    }

    fn sample_slots(&self) {
        if let Some(gauges) = &self.slot_gauges {
            gauges.set(self.running.len());
        }
    }

    /// Starts `assignment` unless it already runs here (or its result waits
    /// to be sent): an op never runs twice at once on one worker.
    pub(crate) fn start(&mut self, mut assignment: Assignment) {
        let key = OpKey::of_assignment(&assignment);
        if self.holds(&key) {
            tracing::warn!(batch = %key.batch_id, op_index = key.op_index, attempt = key.attempt, "assignment for an op this worker already holds: ignored");
            return;
        }
        // Two ways to stop an op: the coordinator's cancel (its own token)
        // and the drain's (the parent of every op's token).
        let coordinator_cancel = CancellationToken::new();
        let op_cancel = self.drain_cancel.child_token();
        let drain_cancel = self.drain_cancel.clone();
        let executor = Arc::clone(&self.executor);
        let task_key = key.clone();
        let task_cancel = coordinator_cancel.clone();
        let ticket = std::mem::take(&mut assignment.lease_ticket);
        if !ticket.is_empty() {
            self.tickets.insert(key.clone(), ticket);
        }
        let op = async move {
            let run = executor.run(assignment, op_cancel.clone());
            tokio::pin!(run);
            let result = tokio::select! {
                biased;
                result = &mut run => result,
                () = task_cancel.cancelled() => {
                    op_cancel.cancel();
                    run.await
                }
            };
            // Cut short by the drain, not by the coordinator: the op did not
            // really fail, so it goes back to the queue instead.
            if result.failure_kind() == FailureKind::Cancelled
                && drain_cancel.is_cancelled()
                && !task_cancel.is_cancelled()
            {
                return (task_key, OpEnd::Interrupted);
            }
            (task_key, OpEnd::Finished(result))
        };
        let task = self.tasks.spawn(op.instrument(self.span.clone())).id();
        self.running.insert(
            key,
            RunningOp {
                coordinator_cancel,
                task,
            },
        );
        self.sample_slots();
    }

    /// Whether `key` runs here or its result waits to be sent.
    fn holds(&self, key: &OpKey) -> bool {
        self.running.contains_key(key) || self.undelivered_keys.contains_key(key)
    }

    /// A coordinator's `CancelOps`: the op ends and reports `CANCELLED`. Works
    /// for ops started in an earlier session too. False if it does not run here.
    pub(crate) fn cancel(&self, key: &OpKey) -> bool {
        match self.running.get(key) {
            Some(running) => {
                running.coordinator_cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Ops still running.
    pub(crate) fn running_count(&self) -> usize {
        self.running.len()
    }

    pub(crate) fn undelivered_count(&self) -> usize {
        self.undelivered.len()
    }

    /// What a (re)registration lists in `Register.running`: the ops still
    /// running and those whose result is not delivered yet. The latter count
    /// too: the coordinator takes `slots - running.len()` as free and each
    /// result returns a slot, so leaving them out would free their slots
    /// twice; and listed, they are not taken for lost before their results
    /// (sent right after the `Register`) arrive.
    pub(crate) fn held(&self) -> Vec<OpRef> {
        let mut keys: Vec<OpKey> = self
            .running
            .keys()
            .cloned()
            .chain(self.undelivered_keys.keys().cloned())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys.into_iter()
            .map(|key| {
                let ticket = self.tickets.get(&key).cloned().unwrap_or_default();
                OpRef {
                    ticket,
                    ..key.into_ref()
                }
            })
            .collect()
    }

    pub(crate) fn has_undelivered(&self) -> bool {
        !self.undelivered.is_empty()
    }

    /// The oldest undelivered results, at least one (if any) and no more
    /// than `max_bytes` (as [`result_size`] counts) in all, each with its
    /// lease ticket: a result that may not have arrived comes back with it
    /// ([`Self::requeue`]), so that the next session still adopts its op.
    pub(crate) fn take_results(&mut self, max_bytes: usize) -> Vec<TakenResult> {
        let mut results = Vec::new();
        let mut bytes = 0;
        while let Some(next) = self.undelivered.front() {
            let size = result_size(next);
            if !results.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            if let Some(result) = self.undelivered.pop_front() {
                let ticket = self.forget_undelivered(&result);
                results.push(TakenResult { result, ticket });
            }
        }
        results
    }

    fn push_undelivered(&mut self, result: OpResult, front: bool) {
        *self
            .undelivered_keys
            .entry(OpKey::of_result(&result))
            .or_default() += 1;
        if front {
            self.undelivered.push_front(result);
        } else {
            self.undelivered.push_back(result);
        }
    }

    /// Takes `result` off the undelivered ones; answers its op's lease
    /// ticket (empty if it had none).
    fn forget_undelivered(&mut self, result: &OpResult) -> String {
        let key = OpKey::of_result(result);
        if let Some(count) = self.undelivered_keys.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                self.undelivered_keys.remove(&key);
                return self.release_ticket(&key);
            }
        }
        self.tickets.get(&key).cloned().unwrap_or_default()
    }

    /// Forgets an op's lease ticket once the op is no longer held; answers
    /// it (empty if it had none).
    fn release_ticket(&mut self, key: &OpKey) -> String {
        if !self.running.contains_key(key) && !self.undelivered_keys.contains_key(key) {
            self.tickets.remove(key).unwrap_or_default()
        } else {
            self.tickets.get(key).cloned().unwrap_or_default()
        }
    }

    /// Results a broken session may not have delivered: sent again first, in
    /// their order (a coordinator ignores a result it already has). Their
    /// tickets come back too: the next `Register` lists each op with its
    /// ticket, or the coordinator would refuse to adopt it and then refuse
    /// its result, and the op would run again once its lease ran out.
    pub(crate) fn requeue(&mut self, results: impl DoubleEndedIterator<Item = TakenResult>) {
        for TakenResult { result, ticket } in results.rev() {
            if !ticket.is_empty() {
                self.tickets.insert(OpKey::of_result(&result), ticket);
            }
            self.push_undelivered(result, true);
        }
    }

    pub(crate) fn has_interrupted(&self) -> bool {
        !self.interrupted.is_empty()
    }

    /// Ops the drain interrupted, to hand back now.
    pub(crate) fn take_interrupted(&mut self) -> Vec<OpKey> {
        std::mem::take(&mut self.interrupted)
    }

    /// Nothing runs and nothing is owed a coordinator.
    pub(crate) fn is_idle(&self) -> bool {
        self.tasks.is_empty()
            && self.running.is_empty()
            && self.undelivered.is_empty()
            && self.interrupted.is_empty()
    }

    /// Starts the drain (once; later calls keep the first deadline): running
    /// ops may finish until `timeout` from now, then they are cancelled.
    pub(crate) fn begin_drain(&mut self, timeout: Duration) -> Instant {
        if let Some(deadline) = self.drain_deadline() {
            return deadline;
        }
        let deadline = Instant::now() + timeout;
        tracing::info!(running = self.running.len(), drain_timeout = ?timeout, "draining");
        self.phase = DrainPhase::Draining { deadline };
        set_draining(true);
        deadline
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.phase != DrainPhase::Serving
    }

    pub(crate) fn drain_deadline(&self) -> Option<Instant> {
        match self.phase {
            DrainPhase::Serving => None,
            DrainPhase::Draining { deadline }
            | DrainPhase::Cancelling { deadline, .. }
            | DrainPhase::Aborted { deadline, .. } => Some(deadline),
        }
    }

    /// The drain timeout passed: ops still running were cancelled.
    pub(crate) fn drain_expired(&self) -> bool {
        matches!(
            self.phase,
            DrainPhase::Cancelling { .. } | DrainPhase::Aborted { .. }
        ) || self
            .drain_deadline()
            .is_some_and(|deadline| deadline <= Instant::now())
    }

    /// Waits for the next change: an op ends (its result is buffered, or it
    /// joins the ops to hand back), the drain deadline passes (every op is
    /// cancelled), or cancelled ops outlive their grace (aborted). Never
    /// returns while nothing can change. Cancel-safe.
    pub(crate) async fn progress(&mut self) {
        let has_tasks = !self.tasks.is_empty();
        let phase = self.phase;
        let timer = async move {
            match phase {
                DrainPhase::Serving => std::future::pending().await,
                DrainPhase::Draining { deadline } => tokio::time::sleep_until(deadline).await,
                DrainPhase::Cancelling { abort_at, .. } if has_tasks => {
                    tokio::time::sleep_until(abort_at).await;
                }
                DrainPhase::Aborted { give_up_at, .. } if has_tasks => {
                    tokio::time::sleep_until(give_up_at).await;
                }
                DrainPhase::Cancelling { .. } | DrainPhase::Aborted { .. } => {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            biased;
            Some(joined) = self.tasks.join_next_with_id(), if has_tasks => self.reap(joined),
            () = timer => self.advance_drain(),
        }
    }

    /// The drain's timer fired: cancel every op, then abort stragglers, then
    /// stop waiting for them.
    fn advance_drain(&mut self) {
        let now = Instant::now();
        match self.phase {
            DrainPhase::Serving => {}
            DrainPhase::Draining { deadline } => {
                if !self.running.is_empty() {
                    tracing::warn!(
                        running = self.running.len(),
                        "drain timeout: cancelling running ops"
                    );
                }
                self.drain_cancel.cancel();
                self.phase = DrainPhase::Cancelling {
                    deadline,
                    abort_at: now + CANCEL_GRACE,
                };
            }
            DrainPhase::Cancelling { deadline, .. } => {
                // Cancelled ops that still have not ended (a handler that
                // ignores its cancel): drop their futures.
                tracing::warn!(
                    running = self.tasks.len(),
                    "ops ignored cancel: aborting them"
                );
                self.tasks.abort_all();
                self.phase = DrainPhase::Aborted {
                    deadline,
                    give_up_at: now + CANCEL_GRACE,
                };
            }
            DrainPhase::Aborted { .. } => {
                // Tasks that do not even end when aborted block their thread:
                // nothing more can be done for them.
                tracing::error!(
                    running = self.tasks.len(),
                    "ops blocking their thread ignored abort: leaving them"
                );
                self.tasks.detach_all();
                let stuck: Vec<OpKey> = self.running.drain().map(|(key, _)| key).collect();
                self.interrupted.extend(stuck);
                self.sample_slots();
            }
        }
    }

    /// Cancels every op now (the drain timeout passed with no coordinator to
    /// hand them back to) and waits for them to end, aborting stragglers.
    pub(crate) async fn stop_all(&mut self) {
        if let DrainPhase::Serving | DrainPhase::Draining { .. } = self.phase {
            let deadline = self.drain_deadline().unwrap_or_else(Instant::now);
            self.phase = DrainPhase::Draining { deadline };
            self.advance_drain();
        }
        while !self.tasks.is_empty() {
            self.progress().await;
        }
    }

    fn reap(&mut self, joined: Result<(TaskId, (OpKey, OpEnd)), JoinError>) {
        self.reap_one(joined);
        self.sample_slots();
    }

    fn reap_one(&mut self, joined: Result<(TaskId, (OpKey, OpEnd)), JoinError>) {
        match joined {
            Ok((_, (key, OpEnd::Finished(result)))) => {
                self.running.remove(&key);
                self.push_undelivered(result, false);
            }
            Ok((_, (key, OpEnd::Interrupted))) => {
                self.running.remove(&key);
                let _ = self.release_ticket(&key);
                self.interrupted.push(key);
            }
            Err(error) => {
                let task = error.id();
                let Some(key) = self
                    .running
                    .iter()
                    .find(|(_, running)| running.task == task)
                    .map(|(key, _)| key.clone())
                else {
                    tracing::error!(%error, "unknown op task ended");
                    return;
                };
                self.running.remove(&key);
                if error.is_cancelled() {
                    // Aborted by the drain: handed back like the interrupted.
                    self.interrupted.push(key);
                } else {
                    // The executor catches handler panics, so this is ours;
                    // still, the coordinator must hear of the op.
                    tracing::error!(%error, batch = %key.batch_id, op_index = key.op_index, "op task failed");
                    let mut result = OpResult {
                        batch_id: key.batch_id,
                        op_index: key.op_index,
                        attempt: key.attempt,
                        ok: false,
                        error: format!("op task failed: {error}"),
                        ..OpResult::default()
                    };
                    result.set_failure_kind(FailureKind::Error);
                    self.push_undelivered(result, false);
                }
            }
        }
    }
}

/// A result on its way to a coordinator, with the lease ticket of its op.
#[derive(Clone, Debug)]
pub(crate) struct TakenResult {
    pub(crate) result: OpResult,
    pub(crate) ticket: String,
}

/// Roughly what `result` adds to a `Results` message.
pub(crate) fn result_size(result: &OpResult) -> usize {
    result.output.len()
        + result.error.len()
        + result.details_json.len()
        + result.batch_id.len()
        + 32
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::memory::LocalMemory;

    /// A hang guard, never a timing assertion.
    const DEADLINE: Duration = Duration::from_secs(20);

    fn worker_ops() -> WorkerOps {
        let registry = crate::test_kinds::registry();
        let executor = Executor::new(registry, Arc::new(LocalMemory::default()), None, false);
        WorkerOps::new(Arc::new(executor))
    }

    fn assignment(op_index: u32, kind: &str, args: serde_json::Value) -> Assignment {
        Assignment {
            batch_id: "b".into(),
            op_index,
            op_id: format!("op{op_index}"),
            kind: kind.into(),
            args_json: args.to_string(),
            attempt: 1,
            ..Assignment::default()
        }
    }

    fn result(op_index: u32, output_bytes: usize) -> TakenResult {
        TakenResult {
            result: OpResult {
                batch_id: "b".into(),
                op_index,
                attempt: 1,
                ok: true,
                output: "x".repeat(output_bytes),
                ..OpResult::default()
            },
            ticket: String::new(),
        }
    }

    fn indexes(results: &[TakenResult]) -> Vec<u32> {
        results.iter().map(|taken| taken.result.op_index).collect()
    }

    async fn settle(ops: &mut WorkerOps) {
        tokio::time::timeout(DEADLINE, async {
            while ops.running_count() > 0 {
                ops.progress().await;
            }
        })
        .await
        .expect("ops did not end before the deadline");
    }

    #[tokio::test]
    async fn results_wait_in_order_and_requeued_ones_go_first() {
        let mut ops = worker_ops();
        ops.requeue([result(0, 10), result(1, 10)].into_iter());
        let size = result_size(&result(0, 10).result);
        // Coalesced up to the cap, in order.
        let first = ops.take_results(size * 2 - 1);
        assert_eq!(indexes(&first), [0]);
        // Past the cap, one still goes: a big result is never stuck.
        ops.requeue([result(2, 100)].into_iter());
        assert_eq!(indexes(&ops.take_results(1)), [2]);
        // Sent again (the stream broke): ahead of what waited, in order.
        ops.requeue(first.into_iter().chain([result(3, 10)]));
        assert_eq!(indexes(&ops.take_results(usize::MAX)), [0, 3, 1]);
        assert!(ops.is_idle());
    }

    #[tokio::test]
    async fn running_and_undelivered_ops_are_held_and_not_started_twice() {
        let mut ops = worker_ops();
        let long_sleep = assignment(0, "sleep", serde_json::json!({"ms": 3_600_000}));
        ops.start(long_sleep.clone());
        ops.start(long_sleep);
        assert_eq!(ops.running_count(), 1, "an op never runs twice at once");
        ops.start(assignment(1, "noop", serde_json::json!({})));
        tokio::time::timeout(DEADLINE, async {
            while !ops.has_undelivered() {
                ops.progress().await;
            }
        })
        .await
        .unwrap();
        // Its result is still owed: held, and not started again.
        ops.start(assignment(1, "noop", serde_json::json!({})));
        assert_eq!(ops.running_count(), 1);
        let held: Vec<u32> = ops.held().iter().map(|op| op.op_index).collect();
        assert_eq!(held, [0, 1]);

        assert!(ops.cancel(&OpKey::of_assignment(&assignment(
            0,
            "sleep",
            serde_json::json!({})
        ))));
        settle(&mut ops).await;
        let results = ops.take_results(usize::MAX);
        assert_eq!(indexes(&results), [1, 0]);
        assert_eq!(results[1].result.failure_kind(), FailureKind::Cancelled);
        assert!(ops.is_idle());
    }

    #[tokio::test]
    async fn a_result_sent_again_keeps_its_lease_ticket_for_the_next_register() {
        let mut ops = worker_ops();
        ops.start(Assignment {
            lease_ticket: "ticket-0".into(),
            ..assignment(0, "noop", serde_json::json!({}))
        });
        settle(&mut ops).await;
        assert_eq!(ops.held()[0].ticket, "ticket-0");
        // Sent on a session that then broke: it may not have arrived.
        let sent = ops.take_results(usize::MAX);
        assert_eq!(sent[0].ticket, "ticket-0");
        assert!(ops.held().is_empty());
        ops.requeue(sent.into_iter());
        let held = ops.held();
        assert_eq!(held.len(), 1);
        assert_eq!(
            held[0].ticket, "ticket-0",
            "the next Register shows the ticket, so the op is adopted and its result kept"
        );
        // Delivered at last: nothing held, the ticket forgotten.
        let again = ops.take_results(usize::MAX);
        assert_eq!(again[0].ticket, "ticket-0");
        assert!(ops.held().is_empty() && ops.is_idle());
    }

    #[tokio::test]
    async fn the_drain_timeout_interrupts_ops_instead_of_failing_them() {
        let mut ops = worker_ops();
        ops.start(assignment(0, "sleep", serde_json::json!({"ms": 3_600_000})));
        ops.start(assignment(1, "noop", serde_json::json!({})));
        ops.begin_drain(Duration::ZERO);
        settle(&mut ops).await;
        assert!(ops.drain_expired());
        assert_eq!(indexes(&ops.take_results(usize::MAX)), [1]);
        let interrupted: Vec<u32> = ops
            .take_interrupted()
            .iter()
            .map(|key| key.op_index)
            .collect();
        assert_eq!(interrupted, [0], "handed back, not failed");
        assert!(ops.is_idle());
    }

    #[tokio::test]
    async fn stop_all_cancels_what_still_runs() {
        let mut ops = worker_ops();
        ops.start(assignment(0, "sleep", serde_json::json!({"ms": 3_600_000})));
        ops.begin_drain(Duration::from_secs(3600));
        tokio::time::timeout(DEADLINE, ops.stop_all())
            .await
            .unwrap();
        assert_eq!(ops.running_count(), 0);
        assert_eq!(ops.take_interrupted().len(), 1);
    }
}
