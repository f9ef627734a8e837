//! A batch's life as a whole: creation, growth, cancel, loss, outbox, expiry.

use super::*;

pub(super) async fn epoch(store: &MemoryStore) -> StoreResult<String> {
    Ok(store.shared.epoch.clone())
}

pub(super) async fn create_batch(store: &MemoryStore, batch: NewBatch) -> StoreResult<Created> {
    let batch_id = batch.id.clone();
    let mut bells = Vec::new();
    {
        let mut inner = store.lock();
        // One lock: a batch here is always whole (never `creating`).
        if let Some(existing) = inner.batches.get(&batch.id) {
            if batch.request_digest.is_empty() {
                return Err(StoreError::BatchExists(batch.id));
            }
            if existing.request_digest == batch.request_digest
                && existing.meta.tenant == batch.tenant
            {
                return Ok(Created::Existing);
            }
            return Err(StoreError::IdempotencyConflict(batch.id));
        }
        // A batch scope is always the batch's own memory.
        let memory = match batch.memory {
            MemoryScope::Batch(_) => MemoryScope::Batch(batch.id.clone()),
            shared @ MemoryScope::Shared(_) => shared,
        };
        let mut ops = Vec::with_capacity(batch.ops.len());
        let mut deadlines = BTreeSet::new();
        for (index, new_op) in batch.ops.iter().enumerate() {
            let op = OpData::new(new_op, new_op.dependents.clone(), batch.created_ms);
            if op.has_deadline(new_op) {
                deadlines.insert((new_op.wait_deadline_ms, index as u32));
            }
            ops.push(op);
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
                total: batch.ops.len() as u32,
                succeeded: 0,
                failed: 0,
                skipped: 0,
                cancelled: 0,
                running: 0,
                error: String::new(),
                tenant: batch.tenant,
                sequential_ms: 0,
            },
            memory,
            spec: batch.spec,
            spec_added: Vec::new(),
            ops,
            ready: Default::default(),
            deadlines,
            leases: BTreeSet::new(),
            lease_until: HashMap::new(),
            delayed: BTreeSet::new(),
            retry_at: HashMap::new(),
            events: Vec::new(),
            event_messages: Vec::new(),
            event_causes: HashMap::new(),
            workers: Interned::default(),
            deadline_ms: batch.deadline_ms,
            cancel_requested: false,
            fail_fast_fired: false,
            deadline_fired: false,
            retry_failed_sequential: batch.retry_failed_sequential,
            sequential: false,
            owner: None,
            owner_token: 0,
            retain_ms: batch.retain_ms,
            expires_at_ms: None,
            request_digest: batch.request_digest,
            spawn_keys: HashMap::new(),
            lost_worker_retries: batch.lost_worker_retries,
            lost_workers: HashMap::new(),
            running_on: HashMap::new(),
            writers: Writers::default(),
        };
        if matches!(data.memory, MemoryScope::Batch(_)) {
            data.writers.add(0, &batch.ops);
        }
        // Same order as the Redis store: first the ops that wait for
        // nothing, then those whose keys are present already.
        for index in 0..data.meta.total {
            if data.ops[index as usize].pending == 0 {
                data.push_ready(index);
            }
        }
        let triples = wait_triples(0, &batch.ops);
        inner.register_waits(&mut data, &triples);
        data.event(
            batch.created_ms,
            EventKind::BatchSubmitted,
            None,
            0,
            "",
            &batch.submitted_by,
        );
        // An empty batch is finished as soon as it exists.
        let (finished, _) = data.finish_if_done(batch.created_ms);
        inner.batches.insert(batch.id, data);
        bells.push(Doorbell::Batch(batch_id.clone()));
        if finished.is_none() {
            bells.push(Doorbell::Started(batch_id));
        }
    }
    store.ring_all(bells);
    Ok(Created::New)
}

pub(super) async fn spawn_record(
    store: &MemoryStore,
    batch: &BatchId,
    key: &str,
) -> StoreResult<Option<String>> {
    Ok(store
        .lock()
        .batches
        .get(batch)
        .and_then(|data| data.spawn_keys.get(key).cloned()))
}

pub(super) async fn mark_lost(
    store: &MemoryStore,
    batches: &[BatchId],
    reason: &str,
    now_ms: u64,
) -> StoreResult<Vec<BatchId>> {
    let marked = {
        let mut inner = store.lock();
        let mut marked = Vec::new();
        for batch in batches {
            if inner.batches.contains_key(batch) {
                continue;
            }
            let mut data = BatchData {
                meta: BatchMeta {
                    id: batch.clone(),
                    name: String::new(),
                    state: BatchState::Lost,
                    created_ms: now_ms,
                    finished_ms: Some(now_ms),
                    max_parallel: 0,
                    on_failure: OnFailure::Continue,
                    total: 0,
                    succeeded: 0,
                    failed: 0,
                    skipped: 0,
                    cancelled: 0,
                    running: 0,
                    error: reason.to_owned(),
                    tenant: String::new(),
                    sequential_ms: 0,
                },
                memory: MemoryScope::Batch(batch.clone()),
                spec: Vec::new(),
                spec_added: Vec::new(),
                ops: Vec::new(),
                ready: Default::default(),
                deadlines: BTreeSet::new(),
                leases: BTreeSet::new(),
                lease_until: HashMap::new(),
                delayed: BTreeSet::new(),
                retry_at: HashMap::new(),
                events: Vec::new(),
                event_messages: Vec::new(),
                event_causes: HashMap::new(),
                workers: Interned::default(),
                deadline_ms: 0,
                cancel_requested: false,
                fail_fast_fired: false,
                deadline_fired: false,
                retry_failed_sequential: false,
                sequential: false,
                owner: None,
                owner_token: 0,
                retain_ms: 0,
                expires_at_ms: None,
                request_digest: String::new(),
                spawn_keys: HashMap::new(),
                lost_worker_retries: 0,
                lost_workers: HashMap::new(),
                running_on: HashMap::new(),
                writers: Writers::default(),
            };
            data.event(now_ms, EventKind::BatchFinished, None, 0, "", reason);
            if let Some(last) = data.events.last_mut() {
                last.batch_state = Some(BatchState::Lost);
            }
            inner.batches.insert(batch.clone(), data);
            marked.push(batch.clone());
        }
        marked
    };
    for batch in &marked {
        store.ring(batch);
        // Lost is an end: watchers of the batch learn it here.
        store.ring_if_ended(batch, Some(BatchState::Lost));
    }
    Ok(marked)
}

pub(super) async fn cancel(
    store: &MemoryStore,
    batch: &BatchId,
    reason: &str,
    now_ms: u64,
) -> StoreResult<CancelOutcome> {
    let (outcome, finished) = {
        let mut inner = store.lock();
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
            None,
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
        let (finished, _) = data.finish_if_done(now_ms);
        (outcome, finished)
    };
    store.ring(batch);
    store.ring_if_ended(batch, finished);
    Ok(outcome)
}

pub(super) async fn drop_expired(store: &MemoryStore, now_ms: u64, max: u32) -> StoreResult<u32> {
    let mut inner = store.lock();
    let due: Vec<BatchId> = inner
        .batches
        .iter()
        .filter(|(_, data)| data.expires_at_ms.is_some_and(|at| at <= now_ms))
        .map(|(id, _)| id.clone())
        .take(max as usize)
        .collect();
    for id in &due {
        inner.batches.remove(id);
        inner.scopes.remove(&MemoryScope::Batch(id.clone()));
    }
    Ok(due.len() as u32)
}

#[allow(clippy::too_many_arguments)] // the verb's own arguments (see Store::add_ops)
pub(super) async fn add_ops(
    store: &MemoryStore,
    batch: &BatchId,
    first_index: u32,
    ops: Vec<NewOp>,
    spec: Vec<u8>,
    note: &str,
    now_ms: u64,
    once: Option<&SpawnOnce>,
) -> StoreResult<CompleteOutcome> {
    let edges = added_edges(batch, first_index, &ops)?;
    let outcome = {
        let mut guard = store.lock();
        let inner = &mut *guard;
        let data = inner.batch_mut(batch)?;
        if let Some(record) = once.and_then(|once| data.spawn_keys.get(&once.key)) {
            return Err(StoreError::AlreadySpawned {
                batch: batch.clone(),
                record: record.clone(),
            });
        }
        let cannot = |reason: AddOpsRefusal| StoreError::CannotAddOps {
            batch: batch.clone(),
            reason,
        };
        if data.meta.state != BatchState::Running {
            return Err(cannot(AddOpsRefusal::NotRunning(data.meta.state)));
        }
        if data.fail_fast_fired {
            return Err(cannot(AddOpsRefusal::FailFastFired));
        }
        if data.meta.total != first_index {
            return Err(cannot(AddOpsRefusal::FirstIndexTaken {
                first_index,
                total: data.meta.total,
            }));
        }
        let mut data = inner
            .batches
            .remove(batch)
            .ok_or_else(|| StoreError::BatchNotFound(batch.clone()))?;
        for (offset, new_op) in ops.iter().enumerate() {
            let index = first_index + offset as u32;
            let op = OpData::new(new_op, edges.new_dependents[offset].clone(), now_ms);
            if op.has_deadline(new_op) {
                data.deadlines.insert((new_op.wait_deadline_ms, index));
            }
            data.ops.push(op);
        }
        data.meta.total += ops.len() as u32;
        if matches!(data.memory, MemoryScope::Batch(_)) {
            data.writers.add(first_index, &ops);
        }
        data.spec_added.push(spec);
        if let Some(once) = once {
            data.spawn_keys
                .insert(once.key.clone(), once.record.clone());
        }
        let message = if note.is_empty() {
            format!("{} ops added", ops.len())
        } else {
            format!("{} ops added {note}", ops.len())
        };
        data.event(now_ms, EventKind::OpsAdded, None, 0, "", &message);
        let mut outcome = CompleteOutcome::default();
        for offset in 0..ops.len() as u32 {
            let index = first_index + offset;
            if data.ops[index as usize].pending == 0 {
                data.push_ready(index);
                outcome.became_ready += 1;
            }
        }
        for (offset, existing) in edges.existing_after.iter().enumerate() {
            let index = first_index + offset as u32;
            for &before in existing {
                let before_state = data.ops[before as usize].record.state;
                if !before_state.is_final() {
                    data.ops[before as usize].dependents.push(index);
                    continue;
                }
                let op = &data.ops[index as usize];
                if before_state == OpState::Succeeded || op.run_if_always {
                    if data.count_down(index) {
                        outcome.became_ready += 1;
                    }
                } else if !op.record.state.is_final() {
                    let cause = Cause::Dependency {
                        index: before,
                        state: before_state,
                    };
                    data.end_op_for(
                        index,
                        OpState::Skipped,
                        EventKind::OpSkipped,
                        &cause,
                        now_ms,
                    );
                    outcome.became_ready += data.propagate(index, OpState::Skipped, now_ms);
                }
            }
        }
        // As the Redis store: keys the skips above made hopeless are
        // settled first (add_ops.lua), then the new waits, among them
        // waits for keys nobody will write any more (register_waits.lua).
        outcome.became_ready += settle_hopeless(&mut inner.scopes, &mut data, now_ms);
        let triples = wait_triples(first_index, &ops);
        outcome.became_ready += inner.register_waits(&mut data, &triples);
        if matches!(data.memory, MemoryScope::Batch(_)) {
            for (_, key, _) in &triples {
                if !data.writers.hopeless.contains(key)
                    && key_hopeless(inner.scopes.get_mut(&data.memory), &data.writers, key)
                {
                    data.writers.hopeless.push(key.clone());
                }
            }
            outcome.became_ready += settle_hopeless(&mut inner.scopes, &mut data, now_ms);
        }
        let (finished, pass_ready) = data.finish_if_done(now_ms);
        outcome.finished = finished;
        outcome.became_ready += pass_ready;
        inner.batches.insert(batch.clone(), data);
        outcome
    };
    store.ring(batch);
    store.ring_if_ended(batch, outcome.finished);
    Ok(outcome)
}
