//! The in-memory store behind `volley run`: the same semantics as the Redis store.
//!
//! One `std::sync::Mutex` guards everything: every verb is one short critical
//! section with no `.await` inside, which is what makes each verb atomic (the
//! Redis store gets the same from one Lua script per verb).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::broadcast;
use volley_proto::BatchId;

use crate::model::*;
use crate::{Store, StoreError, StoreResult};

/// Doorbell channel capacity; a receiver that lags gets `Lagged` and should
/// resync, exactly as after `Doorbell::Resync`.
pub(crate) const DOORBELL_CAPACITY: usize = 1024;

/// An in-process [`Store`]. Cheap to clone: clones share the state.
#[derive(Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

struct Shared {
    epoch: String,
    state: Mutex<Inner>,
    doorbell: broadcast::Sender<Doorbell>,
}

impl Inner {
    fn batch(&self, batch: &BatchId) -> StoreResult<&BatchData> {
        self.batches
            .get(batch)
            .ok_or_else(|| StoreError::BatchNotFound(batch.clone()))
    }

    fn batch_mut(&mut self, batch: &BatchId) -> StoreResult<&mut BatchData> {
        self.batches
            .get_mut(batch)
            .ok_or_else(|| StoreError::BatchNotFound(batch.clone()))
    }
}

#[derive(Default)]
struct Inner {
    batches: HashMap<BatchId, BatchData>,
    /// Memory lives apart from batches: a key may be written before its
    /// batch is created, and then counts as present.
    memories: HashMap<BatchId, HashMap<String, Vec<u8>>>,
}

struct BatchData {
    meta: BatchMeta,
    spec: Vec<u8>,
    ops: Vec<OpData>,
    ready: [VecDeque<u32>; PRIORITY_LEVELS as usize],
    /// Memory key → ops waiting for it (ordered, so unblocking is deterministic).
    waiters: HashMap<String, BTreeSet<u32>>,
    events: Vec<Event>,
    cancel_requested: bool,
    fail_fast_fired: bool,
}

struct OpData {
    priority: u8,
    run_if_always: bool,
    max_attempts: u32,
    dependents: Vec<u32>,
    pending: u32,
    record: OpRecord,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        let (doorbell, _) = broadcast::channel(DOORBELL_CAPACITY);
        MemoryStore {
            shared: Arc::new(Shared {
                epoch: uuid::Uuid::now_v7().to_string(),
                state: Mutex::new(Inner::default()),
                doorbell,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves state that is still
        // structurally valid (each verb mutates field by field), so recover.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn ring(&self, batch: &BatchId) {
        // No receiver is fine: the bell is only a hint.
        let _ = self.shared.doorbell.send(Doorbell::Batch(batch.clone()));
    }
}

fn clamp_priority(priority: u8) -> usize {
    usize::from(priority.min(PRIORITY_LEVELS - 1))
}

impl BatchData {
    fn event(
        &mut self,
        at_ms: u64,
        kind: EventKind,
        op_index: Option<u32>,
        attempt: u32,
        worker: &str,
        message: &str,
    ) {
        let seq = self.events.len() as u64 + 1;
        self.events.push(Event {
            seq,
            at_ms,
            kind,
            op_index,
            attempt,
            worker: worker.to_owned(),
            message: message.to_owned(),
            batch_state: None,
        });
    }

    fn push_ready(&mut self, index: u32) {
        let op = &mut self.ops[index as usize];
        op.record.state = OpState::Ready;
        let priority = clamp_priority(op.priority);
        self.ready[priority].push_back(index);
    }

    /// One input of `index` arrived: count down, ready at zero. Returns
    /// whether the op became ready.
    fn count_down(&mut self, index: u32) -> bool {
        let Some(op) = self.ops.get_mut(index as usize) else {
            return false;
        };
        if op.record.state != OpState::Waiting {
            return false;
        }
        op.pending = op.pending.saturating_sub(1);
        if op.pending == 0 {
            self.push_ready(index);
            return true;
        }
        false
    }

    /// A memory key was written: unblocks its waiters.
    fn key_written(&mut self, key: &str) -> u32 {
        let Some(waiting) = self.waiters.remove(key) else {
            return 0;
        };
        waiting
            .into_iter()
            .filter(|&index| self.count_down(index))
            .count() as u32
    }

    fn end_op(&mut self, index: u32, state: OpState, error: String) {
        let op = &mut self.ops[index as usize];
        op.record.state = state;
        op.record.error = error;
        match state {
            OpState::Succeeded => self.meta.succeeded += 1,
            OpState::Failed => self.meta.failed += 1,
            OpState::Skipped => self.meta.skipped += 1,
            OpState::Cancelled => self.meta.cancelled += 1,
            _ => {}
        }
    }

    /// `index` just ended in `state`: counts down or skips its dependents,
    /// transitively (a worklist, not recursion). Returns how many became ready.
    fn propagate(&mut self, index: u32, state: OpState, now_ms: u64) -> u32 {
        let mut became_ready = 0;
        let mut worklist = VecDeque::from([(index, state)]);
        while let Some((ended, ended_state)) = worklist.pop_front() {
            let dependents = self.ops[ended as usize].dependents.clone();
            for dependent in dependents {
                let Some(op) = self.ops.get(dependent as usize) else {
                    continue;
                };
                if ended_state == OpState::Succeeded || op.run_if_always {
                    if self.count_down(dependent) {
                        became_ready += 1;
                    }
                } else if !op.record.state.is_final() {
                    let reason = format!("dependency `{ended}` {}", ended_word(ended_state));
                    let attempt = op.record.attempts;
                    self.end_op(dependent, OpState::Skipped, reason.clone());
                    self.event(
                        now_ms,
                        EventKind::OpSkipped,
                        Some(dependent),
                        attempt,
                        "",
                        &reason,
                    );
                    worklist.push_back((dependent, OpState::Skipped));
                }
            }
        }
        became_ready
    }

    /// Cancels every op in one of `states`, in index order; returns them with
    /// whether each was running.
    fn cancel_where(
        &mut self,
        states: &[OpState],
        reason: &str,
        now_ms: u64,
    ) -> Vec<(Claimed, bool)> {
        let mut cancelled = Vec::new();
        for index in 0..self.ops.len() as u32 {
            let record = &self.ops[index as usize].record;
            if !states.contains(&record.state) {
                continue;
            }
            let (was, attempt) = (record.state, record.attempts);
            if was == OpState::Running {
                self.meta.running = self.meta.running.saturating_sub(1);
            }
            self.end_op(index, OpState::Cancelled, reason.to_owned());
            self.event(
                now_ms,
                EventKind::OpCancelled,
                Some(index),
                attempt,
                "",
                reason,
            );
            cancelled.push((Claimed { index, attempt }, was == OpState::Running));
        }
        for queue in &mut self.ready {
            queue.clear();
        }
        cancelled
    }

    /// Finishes the batch if every op has ended.
    fn finish_if_done(&mut self, now_ms: u64) -> Option<BatchState> {
        if self.meta.state != BatchState::Running || self.meta.done() < self.meta.total {
            return None;
        }
        let state = if self.cancel_requested {
            BatchState::Cancelled
        } else if self.meta.succeeded == self.meta.total {
            BatchState::Succeeded
        } else {
            BatchState::Failed
        };
        if state == BatchState::Failed {
            self.meta.error = failed_summary(&self.meta);
        }
        self.meta.state = state;
        self.meta.finished_ms = Some(now_ms);
        let message = self.meta.error.clone();
        self.event(now_ms, EventKind::BatchFinished, None, 0, "", &message);
        if let Some(last) = self.events.last_mut() {
            last.batch_state = Some(state);
        }
        Some(state)
    }
}

/// How a dependency's end is worded in a skip reason.
pub(crate) fn ended_word(state: OpState) -> &'static str {
    match state {
        OpState::Failed => "failed",
        OpState::Cancelled => "cancelled",
        _ => "skipped",
    }
}

/// The batch error of a batch that ended `Failed`.
pub(crate) fn failed_summary(meta: &BatchMeta) -> String {
    format!(
        "{} failed, {} skipped, {} cancelled",
        meta.failed, meta.skipped, meta.cancelled
    )
}

#[async_trait]
impl Store for MemoryStore {
    async fn epoch(&self) -> StoreResult<String> {
        Ok(self.shared.epoch.clone())
    }

    #[tracing::instrument(skip_all, fields(batch = %batch.id))]
    async fn create_batch(&self, batch: NewBatch) -> StoreResult<()> {
        let batch_id = batch.id.clone();
        {
            let mut inner = self.lock();
            if inner.batches.contains_key(&batch.id) {
                return Err(StoreError::BatchExists(batch.id));
            }
            let memory = inner.memories.get(&batch.id);
            let total = batch.ops.len() as u32;
            let mut waiters: HashMap<String, BTreeSet<u32>> = HashMap::new();
            let mut ops = Vec::with_capacity(batch.ops.len());
            let mut waits_for_keys = Vec::with_capacity(batch.ops.len());
            for (index, new_op) in batch.ops.into_iter().enumerate() {
                let mut pending = new_op.deps;
                let keys: BTreeSet<String> = new_op.wait_for.into_iter().collect();
                waits_for_keys.push(!keys.is_empty());
                for key in keys {
                    if !memory.is_some_and(|memory| memory.contains_key(&key)) {
                        pending += 1;
                        waiters.entry(key).or_default().insert(index as u32);
                    }
                }
                ops.push(OpData {
                    priority: new_op.priority,
                    run_if_always: new_op.run_if_always,
                    max_attempts: new_op.max_attempts.max(1),
                    dependents: new_op.dependents,
                    pending,
                    record: OpRecord {
                        state: OpState::Waiting,
                        attempts: 0,
                        worker: String::new(),
                        started_ms: 0,
                        duration_ms: 0,
                        output: String::new(),
                        error: String::new(),
                        details_json: String::new(),
                    },
                });
            }
            let mut data = BatchData {
                meta: BatchMeta {
                    id: batch.id.clone(),
                    name: batch.name,
                    state: BatchState::Running,
                    created_ms: batch.created_ms,
                    finished_ms: None,
                    max_parallel: batch.max_parallel,
                    on_failure: batch.on_failure,
                    total,
                    succeeded: 0,
                    failed: 0,
                    skipped: 0,
                    cancelled: 0,
                    running: 0,
                    error: String::new(),
                },
                spec: batch.spec,
                ops,
                ready: Default::default(),
                waiters,
                events: Vec::new(),
                cancel_requested: false,
                fail_fast_fired: false,
            };
            // Same order as the Redis store: first the ops that wait for
            // nothing, then those whose keys were all present already.
            for satisfied_by_memory in [false, true] {
                for index in 0..total {
                    if data.ops[index as usize].pending == 0
                        && waits_for_keys[index as usize] == satisfied_by_memory
                    {
                        data.push_ready(index);
                    }
                }
            }
            data.event(batch.created_ms, EventKind::BatchSubmitted, None, 0, "", "");
            // An empty batch is finished as soon as it exists.
            data.finish_if_done(batch.created_ms);
            inner.batches.insert(batch.id, data);
        }
        self.ring(&batch_id);
        Ok(())
    }

    async fn batch_spec(&self, batch: &BatchId) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.lock().batches.get(batch).map(|data| data.spec.clone()))
    }

    async fn active_batches(&self) -> StoreResult<Vec<BatchId>> {
        let inner = self.lock();
        let mut active: Vec<&BatchMeta> = inner
            .batches
            .values()
            .map(|data| &data.meta)
            .filter(|meta| meta.state == BatchState::Running)
            .collect();
        active
            .sort_by(|left, right| (left.created_ms, &left.id).cmp(&(right.created_ms, &right.id)));
        Ok(active.into_iter().map(|meta| meta.id.clone()).collect())
    }

    #[tracing::instrument(skip_all, fields(batch = %batch))]
    async fn claim(&self, batch: &BatchId, max: u32, now_ms: u64) -> StoreResult<Vec<Claimed>> {
        let claimed = {
            let mut inner = self.lock();
            let data = inner.batch_mut(batch)?;
            if data.meta.state != BatchState::Running {
                return Ok(Vec::new());
            }
            let mut limit = max;
            if data.meta.max_parallel > 0 {
                limit = limit.min(data.meta.max_parallel.saturating_sub(data.meta.running));
            }
            let mut claimed = Vec::new();
            for priority in 0..PRIORITY_LEVELS as usize {
                while (claimed.len() as u32) < limit {
                    let Some(index) = data.ready[priority].pop_front() else {
                        break;
                    };
                    let op = &mut data.ops[index as usize];
                    if op.record.state != OpState::Ready {
                        continue;
                    }
                    op.record.state = OpState::Running;
                    op.record.attempts += 1;
                    let attempt = op.record.attempts;
                    data.meta.running += 1;
                    data.event(now_ms, EventKind::OpStarted, Some(index), attempt, "", "");
                    claimed.push(Claimed { index, attempt });
                }
            }
            claimed
        };
        if !claimed.is_empty() {
            self.ring(batch);
        }
        Ok(claimed)
    }

    #[tracing::instrument(skip_all, fields(batch = %batch))]
    async fn complete(
        &self,
        batch: &BatchId,
        completions: &[Completion],
        now_ms: u64,
    ) -> StoreResult<CompleteOutcome> {
        let outcome = {
            let mut guard = self.lock();
            let inner = &mut *guard;
            // Field-wise borrow: `memories` is written below while `data` lives.
            let data = inner
                .batches
                .get_mut(batch)
                .ok_or_else(|| StoreError::BatchNotFound(batch.clone()))?;
            let mut outcome = CompleteOutcome::default();
            for completion in completions {
                let index = completion.index;
                let Some(op) = data.ops.get_mut(index as usize) else {
                    outcome.stale.push(index);
                    continue;
                };
                if op.record.state != OpState::Running || op.record.attempts != completion.attempt {
                    outcome.stale.push(index);
                    continue;
                }
                data.meta.running = data.meta.running.saturating_sub(1);
                if !completion.ok
                    && !completion.permanent
                    && op.record.attempts < op.max_attempts
                    && !data.fail_fast_fired
                {
                    data.push_ready(index);
                    data.event(
                        now_ms,
                        EventKind::OpRetrying,
                        Some(index),
                        completion.attempt,
                        &completion.worker,
                        &completion.error,
                    );
                    outcome.retried.push(index);
                    continue;
                }
                let state = if completion.ok {
                    OpState::Succeeded
                } else {
                    OpState::Failed
                };
                op.record.worker = completion.worker.clone();
                op.record.started_ms = completion.started_ms;
                op.record.duration_ms = completion.duration_ms;
                op.record.output = completion.output.clone();
                op.record.details_json = completion.details_json.clone();
                data.end_op(index, state, completion.error.clone());
                let kind = if completion.ok {
                    EventKind::OpSucceeded
                } else {
                    EventKind::OpFailed
                };
                data.event(
                    now_ms,
                    kind,
                    Some(index),
                    completion.attempt,
                    &completion.worker,
                    &completion.error,
                );
                outcome.recorded += 1;
                if completion.ok
                    && let Some(key) = &completion.store_as
                {
                    inner
                        .memories
                        .entry(batch.clone())
                        .or_default()
                        .insert(key.clone(), completion.output.as_bytes().to_vec());
                    outcome.became_ready += data.key_written(key);
                }
                outcome.became_ready += data.propagate(index, state, now_ms);
                if state == OpState::Failed
                    && data.meta.on_failure == OnFailure::FailFast
                    && !data.fail_fast_fired
                {
                    data.fail_fast_fired = true;
                    let reason = format!("cancelled: fail_fast after op `{index}` failed");
                    data.cancel_where(&[OpState::Waiting, OpState::Ready], &reason, now_ms);
                }
            }
            outcome.finished = data.finish_if_done(now_ms);
            outcome
        };
        self.ring(batch);
        Ok(outcome)
    }

    #[tracing::instrument(skip_all, fields(batch = %batch))]
    async fn cancel(
        &self,
        batch: &BatchId,
        reason: &str,
        now_ms: u64,
    ) -> StoreResult<CancelOutcome> {
        let outcome = {
            let mut inner = self.lock();
            let data = inner.batch_mut(batch)?;
            if data.meta.state != BatchState::Running {
                return Ok(CancelOutcome::default());
            }
            data.cancel_requested = true;
            let reason = format!("cancelled: {reason}");
            data.meta.error = reason.clone();
            let cancelled = data.cancel_where(
                &[OpState::Waiting, OpState::Ready, OpState::Running],
                &reason,
                now_ms,
            );
            let outcome = CancelOutcome {
                cancelled: cancelled.len() as u32,
                running: cancelled
                    .into_iter()
                    .filter(|(_, was_running)| *was_running)
                    .map(|(claimed, _)| claimed)
                    .collect(),
            };
            data.finish_if_done(now_ms);
            outcome
        };
        self.ring(batch);
        Ok(outcome)
    }

    async fn meta(&self, batch: &BatchId) -> StoreResult<Option<BatchMeta>> {
        Ok(self.lock().batches.get(batch).map(|data| data.meta.clone()))
    }

    async fn op_records(&self, batch: &BatchId) -> StoreResult<Vec<OpRecord>> {
        let inner = self.lock();
        let data = inner.batch(batch)?;
        Ok(data.ops.iter().map(|op| op.record.clone()).collect())
    }

    async fn op_records_at(&self, batch: &BatchId, indices: &[u32]) -> StoreResult<Vec<OpRecord>> {
        let inner = self.lock();
        let data = inner.batch(batch)?;
        indices
            .iter()
            .map(|index| {
                data.ops
                    .get(*index as usize)
                    .map(|op| op.record.clone())
                    .ok_or_else(|| StoreError::BatchNotFound(batch.clone()))
            })
            .collect()
    }

    async fn events(&self, batch: &BatchId, after_seq: u64, max: u32) -> StoreResult<Vec<Event>> {
        let inner = self.lock();
        let Some(data) = inner.batches.get(batch) else {
            return Ok(Vec::new());
        };
        let start = usize::try_from(after_seq).unwrap_or(usize::MAX);
        Ok(data
            .events
            .iter()
            .skip(start)
            .take(max as usize)
            .cloned()
            .collect())
    }

    async fn list_batches(&self, limit: u32) -> StoreResult<Vec<BatchMeta>> {
        let inner = self.lock();
        let mut metas: Vec<&BatchMeta> = inner.batches.values().map(|data| &data.meta).collect();
        metas
            .sort_by(|left, right| (right.created_ms, &right.id).cmp(&(left.created_ms, &left.id)));
        Ok(metas.into_iter().take(limit as usize).cloned().collect())
    }

    #[tracing::instrument(skip_all, fields(batch = %batch))]
    async fn put_memory(
        &self,
        batch: &BatchId,
        key: &str,
        value: &[u8],
        _now_ms: u64,
    ) -> StoreResult<u32> {
        let unblocked = {
            let mut inner = self.lock();
            inner
                .memories
                .entry(batch.clone())
                .or_default()
                .insert(key.to_owned(), value.to_vec());
            match inner.batches.get_mut(batch) {
                Some(data) => data.key_written(key),
                None => 0,
            }
        };
        self.ring(batch);
        Ok(unblocked)
    }

    async fn get_memory(&self, batch: &BatchId, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self
            .lock()
            .memories
            .get(batch)
            .and_then(|memory| memory.get(key))
            .cloned())
    }

    fn doorbells(&self) -> broadcast::Receiver<Doorbell> {
        self.shared.doorbell.subscribe()
    }
}
