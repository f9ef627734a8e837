//! The batch state machine, op by op: claim, complete, leases, deadlines and waits.

use super::*;

pub(super) async fn claim(
    store: &MemoryStore,
    batch: &BatchId,
    max: u32,
    now_ms: u64,
    lease_until_ms: u64,
) -> StoreResult<Vec<Claimed>> {
    let claimed = {
        let mut inner = store.lock();
        let data = inner.batch_mut(batch)?;
        if data.meta.state != BatchState::Running || max == 0 {
            return Ok(Vec::new());
        }
        data.promote_due(now_ms);
        let mut limit = max;
        if data.meta.max_parallel > 0 {
            limit = limit.min(data.meta.max_parallel.saturating_sub(data.meta.running));
        }
        if data.sequential {
            limit = limit.min(1u32.saturating_sub(data.meta.running));
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
                data.set_lease(index, lease_until_ms);
                data.event(now_ms, EventKind::OpStarted, Some(index), attempt, "", "");
                claimed.push(Claimed { index, attempt });
            }
        }
        claimed
    };
    if !claimed.is_empty() {
        store.ring_events(batch);
    }
    Ok(claimed)
}

pub(super) async fn complete(
    store: &MemoryStore,
    batch: &BatchId,
    completions: &[Completion],
    now_ms: u64,
) -> StoreResult<CompleteOutcome> {
    let cap = store.cap();
    let mut bells = Vec::new();
    let outcome = {
        let mut guard = store.lock();
        let inner = &mut *guard;
        // Taken out of the map while it is worked on, so memory writes
        // (which may wake other batches) can borrow `inner` meanwhile.
        let mut data = inner
            .batches
            .remove(batch)
            .ok_or_else(|| StoreError::BatchNotFound(batch.clone()))?;
        let shared = matches!(data.memory, MemoryScope::Shared(_));
        let memory = data.memory.clone();
        let mut outcome = CompleteOutcome::default();
        let mut shared_writes: Vec<(String, Vec<u8>)> = Vec::new();
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
            data.leave_running(index);
            if !completion.ok
                && data.retry_or_not(
                    index,
                    completion.attempt,
                    completion.failure,
                    completion.retry_after_ms,
                    &completion.worker,
                    &completion.error,
                    now_ms,
                )
            {
                outcome.retried.push(index);
                continue;
            }
            let op = &mut data.ops[index as usize];
            let state = if completion.ok {
                OpState::Succeeded
            } else {
                OpState::Failed
            };
            op.record.started_ms = completion.started_ms;
            op.record.duration_ms = completion.duration_ms;
            data.meta.sequential_ms += completion.duration_ms;
            op.record
                .set_result(&completion.output, &completion.details_json);
            data.ops[index as usize].record.worker = data.workers.number(&completion.worker);
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
                let value = completion.output.as_bytes().to_vec();
                if shared {
                    // Like the Redis store: after the completions.
                    shared_writes.push((key.clone(), value));
                } else {
                    let written = store_as(inner, &memory, key, value, now_ms, cap, &mut data);
                    outcome.became_ready += written.became_ready_current;
                    bells.push(Doorbell::Memory(memory.clone()));
                }
            }
            outcome.became_ready += data.propagate(index, state, now_ms);
            if state == OpState::Failed {
                data.apply_fail_fast(index, now_ms);
            }
        }
        outcome.became_ready += settle_hopeless(&mut inner.scopes, &mut data, now_ms);
        let (finished, pass_ready) = data.finish_if_done(now_ms);
        outcome.finished = finished;
        outcome.became_ready += pass_ready;
        for (key, value) in shared_writes {
            let written = store_as(inner, &memory, &key, value, now_ms, cap, &mut data);
            outcome.became_ready += written.became_ready_current;
            bells.extend(written.touched.into_iter().map(Doorbell::Batch));
            bells.push(Doorbell::Memory(memory.clone()));
        }
        outcome.next_retry_at_ms = data.next_retry_at();
        inner.batches.insert(batch.clone(), data);
        outcome
    };
    store.ring(batch);
    store.ring_all(bells);
    store.ring_if_ended(batch, outcome.finished);
    Ok(outcome)
}

pub(super) async fn renew_leases_on(
    store: &MemoryStore,
    batch: &BatchId,
    ops: &[Claimed],
    lease_until_ms: u64,
    worker: &str,
) -> StoreResult<Vec<Claimed>> {
    let mut inner = store.lock();
    let data = inner.batch_mut(batch)?;
    let mut stale = Vec::new();
    for claimed in ops {
        if data.runs(*claimed) {
            data.set_lease(claimed.index, lease_until_ms);
            if !worker.is_empty() {
                data.running_on
                    .insert(claimed.index, (claimed.attempt, worker.to_owned()));
            }
        } else {
            stale.push(*claimed);
        }
    }
    Ok(stale)
}

pub(super) async fn expire_leases(
    store: &MemoryStore,
    batch: &BatchId,
    now_ms: u64,
    fence: &Fence,
) -> StoreResult<CompleteOutcome> {
    let outcome = {
        let mut guard = store.lock();
        let inner = &mut *guard;
        let data = inner
            .batches
            .get_mut(batch)
            .ok_or_else(|| StoreError::BatchNotFound(batch.clone()))?;
        data.check_fence(fence, now_ms)?;
        let mut outcome = CompleteOutcome::default();
        let due: Vec<(u64, u32)> = data
            .leases
            .iter()
            .take_while(|(until, _)| *until <= now_ms)
            .copied()
            .collect();
        if due.is_empty() {
            outcome.next_retry_at_ms = data.next_retry_at();
            return Ok(outcome);
        }
        if data.meta.state != BatchState::Running {
            return Ok(outcome);
        }
        let mut due_sorted: Vec<(u32, u64)> =
            due.iter().map(|(until, index)| (*index, *until)).collect();
        due_sorted.sort_unstable();
        for (index, until) in due_sorted {
            let op = &data.ops[index as usize];
            if op.record.state != OpState::Running {
                data.clear_lease(index);
                continue;
            }
            let attempt = op.record.attempts;
            data.leave_running(index);
            let worker = match data.running_on.remove(&index) {
                Some((noted_attempt, worker)) if noted_attempt == attempt => worker,
                _ => String::new(),
            };
            let error = lost_worker_message(&worker, until);
            let lost = data.lost_workers.get(&index).copied().unwrap_or(0);
            if lost < data.lost_worker_retries && !data.fail_fast_fired {
                data.lost_workers.insert(index, lost + 1);
                data.ops[index as usize].handed_back += 1;
                data.requeue(index, 0, now_ms);
                let message = format!(
                    "{error}; runs again (lost-worker retry {} of {})",
                    lost + 1,
                    data.lost_worker_retries
                );
                data.event(
                    now_ms,
                    EventKind::OpRetrying,
                    Some(index),
                    attempt,
                    &worker,
                    &message,
                );
                outcome.retried.push(index);
                continue;
            }
            if data.retry_or_not(
                index,
                attempt,
                FailureKind::LostWorker,
                0,
                &worker,
                &error,
                now_ms,
            ) {
                outcome.retried.push(index);
                continue;
            }
            data.end_op(index, OpState::Failed, error.clone());
            // The record keeps the worker and how long the attempt ran,
            // from its `started` event (looked for as the Redis store
            // does, among the latest STARTED_LOOKBACK events) to the end
            // of its lease.
            let started_ms = data.attempt_started_ms(index, attempt);
            let worker_number = data.workers.number(&worker);
            let record = &mut data.ops[index as usize].record;
            record.worker = worker_number;
            record.started_ms = started_ms.unwrap_or(0);
            record.duration_ms = started_ms.map_or(0, |started| until.saturating_sub(started));
            data.meta.sequential_ms += record.duration_ms;
            data.event(
                now_ms,
                EventKind::OpFailed,
                Some(index),
                attempt,
                &worker,
                &error,
            );
            outcome.recorded += 1;
            outcome.became_ready += data.propagate(index, OpState::Failed, now_ms);
            data.apply_fail_fast(index, now_ms);
        }
        outcome.became_ready += settle_hopeless(&mut inner.scopes, data, now_ms);
        let (finished, pass_ready) = data.finish_if_done(now_ms);
        outcome.finished = finished;
        outcome.became_ready += pass_ready;
        outcome.next_retry_at_ms = data.next_retry_at();
        outcome
    };
    store.ring(batch);
    store.ring_if_ended(batch, outcome.finished);
    Ok(outcome)
}

pub(super) async fn return_ops(
    store: &MemoryStore,
    batch: &BatchId,
    ops: &[Claimed],
    now_ms: u64,
) -> StoreResult<u32> {
    let returned = {
        let mut inner = store.lock();
        let data = inner.batch_mut(batch)?;
        let mut returned = Vec::new();
        for claimed in ops {
            let running_it = data.ops.get(claimed.index as usize).is_some_and(|op| {
                op.record.state == OpState::Running && op.record.attempts == claimed.attempt
            });
            if !running_it {
                continue;
            }
            data.leave_running(claimed.index);
            let op = &mut data.ops[claimed.index as usize];
            op.handed_back += 1;
            op.record.state = OpState::Ready;
            data.event(
                now_ms,
                EventKind::OpRetrying,
                Some(claimed.index),
                claimed.attempt,
                "",
                "handed back by its worker",
            );
            returned.push(claimed.index);
        }
        // To the front of their queues, in the order given.
        for &index in returned.iter().rev() {
            let priority = clamp_priority(data.ops[index as usize].priority);
            data.ready[priority].push_front(index);
        }
        returned.len() as u32
    };
    if returned > 0 {
        store.ring(batch);
    }
    Ok(returned)
}

pub(super) async fn expire_deadline(
    store: &MemoryStore,
    batch: &BatchId,
    now_ms: u64,
    fence: &Fence,
) -> StoreResult<CompleteOutcome> {
    let outcome = {
        let mut inner = store.lock();
        let data = inner.batch_mut(batch)?;
        data.check_fence(fence, now_ms)?;
        if data.meta.state != BatchState::Running
            || data.deadline_ms == 0
            || now_ms < data.deadline_ms
        {
            return Ok(CompleteOutcome::default());
        }
        data.deadline_fired = true;
        data.meta.error = "deadline exceeded".to_owned();
        let cancelled = data.cancel_where(
            &[OpState::Waiting, OpState::Ready, OpState::Running],
            "cancelled: the batch's deadline passed",
            None,
            now_ms,
        );
        CompleteOutcome {
            recorded: cancelled.len() as u32,
            finished: data.finish_if_done(now_ms).0,
            ..CompleteOutcome::default()
        }
    };
    store.ring(batch);
    store.ring_if_ended(batch, outcome.finished);
    Ok(outcome)
}

pub(super) async fn op_waits(
    store: &MemoryStore,
    batch: &BatchId,
    index: u32,
) -> StoreResult<OpWaits> {
    let inner = store.lock();
    let data = inner.batch(batch)?;
    let op = data
        .ops
        .get(index as usize)
        .ok_or_else(|| StoreError::BatchNotFound(batch.clone()))?;
    let mut waits = OpWaits {
        lease_until_ms: data.lease_until.get(&index).copied(),
        retry_at_ms: data.retry_at.get(&index).copied(),
        ..OpWaits::default()
    };
    if op.record.state == OpState::Waiting {
        waits.pending = op.pending;
        if let Some(op_waits) = op.waits.as_deref() {
            waits.missing_keys = op_waits.missing().cloned().collect();
        }
    }
    Ok(waits)
}

pub(super) async fn note_blocked(
    store: &MemoryStore,
    batch: &BatchId,
    index: u32,
    message: &str,
    now_ms: u64,
) -> StoreResult<bool> {
    {
        let mut inner = store.lock();
        let data = inner.batch_mut(batch)?;
        let op = data
            .ops
            .get(index as usize)
            .ok_or_else(|| StoreError::BatchNotFound(batch.clone()))?;
        if data.meta.state != BatchState::Running || op.record.state.is_final() {
            return Ok(false);
        }
        let attempt = op.record.attempts;
        data.event(
            now_ms,
            EventKind::OpBlocked,
            Some(index),
            attempt,
            "",
            message,
        );
    }
    store.ring_events(batch);
    Ok(true)
}

pub(super) async fn expire_waits(
    store: &MemoryStore,
    batch: &BatchId,
    now_ms: u64,
    fence: &Fence,
) -> StoreResult<CompleteOutcome> {
    let outcome = {
        let mut guard = store.lock();
        let inner = &mut *guard;
        let data = inner
            .batches
            .get_mut(batch)
            .ok_or_else(|| StoreError::BatchNotFound(batch.clone()))?;
        data.check_fence(fence, now_ms)?;
        let mut outcome = CompleteOutcome::default();
        let due: Vec<(u64, u32)> = data
            .deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now_ms)
            .copied()
            .collect();
        if due.is_empty() {
            return Ok(outcome);
        }
        if data.meta.state != BatchState::Running {
            data.deadlines.clear();
            return Ok(outcome);
        }
        let mut indices: Vec<u32> = due.iter().map(|(_, index)| *index).collect();
        indices.sort_unstable();
        for entry in &due {
            data.deadlines.remove(entry);
        }
        for index in indices {
            let op = &data.ops[index as usize];
            if op.record.state != OpState::Waiting {
                continue;
            }
            let missing = data.missing_keys(index);
            if missing.is_empty() {
                continue;
            }
            let since_ms = op.waits.as_deref().map_or(0, |waits| waits.since_ms);
            let waited = now_ms.saturating_sub(since_ms);
            let attempt = op.record.attempts;
            let message = format!("memory key {missing} never appeared (waited {waited} ms)");
            data.end_op(index, OpState::Failed, message.clone());
            data.event(
                now_ms,
                EventKind::OpFailed,
                Some(index),
                attempt,
                "",
                &message,
            );
            outcome.recorded += 1;
            outcome.became_ready += data.propagate(index, OpState::Failed, now_ms);
            data.apply_fail_fast(index, now_ms);
        }
        outcome.became_ready += settle_hopeless(&mut inner.scopes, data, now_ms);
        let (finished, pass_ready) = data.finish_if_done(now_ms);
        outcome.finished = finished;
        outcome.became_ready += pass_ready;
        outcome
    };
    store.ring(batch);
    store.ring_if_ended(batch, outcome.finished);
    Ok(outcome)
}
