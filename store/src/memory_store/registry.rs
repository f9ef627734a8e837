//! Holds on batches, the worker registry, tokens and the ready gauge.

use super::*;

pub(super) async fn hold_batch(
    store: &MemoryStore,
    batch: &BatchId,
    coordinator: &str,
    ttl_ms: u64,
    now_ms: u64,
) -> StoreResult<Option<Fence>> {
    let mut inner = store.lock();
    let data = inner.batch_mut(batch)?;
    if data.meta.state != BatchState::Running {
        return Ok(None);
    }
    let until_ms = now_ms.saturating_add(ttl_ms.max(1));
    let fence = match data.live_owner(now_ms) {
        Some(live) if live.coordinator == coordinator => live.clone(),
        Some(_) => return Ok(None),
        None => {
            data.owner_token += 1;
            Fence {
                coordinator: coordinator.to_owned(),
                token: data.owner_token,
            }
        }
    };
    data.owner = Some((fence.clone(), until_ms));
    Ok(Some(fence))
}

pub(super) async fn release_batch(
    store: &MemoryStore,
    batch: &BatchId,
    fence: &Fence,
) -> StoreResult<()> {
    let mut inner = store.lock();
    if let Some(data) = inner.batches.get_mut(batch)
        && data.owner.as_ref().is_some_and(|(held, _)| held == fence)
    {
        data.owner = None;
    }
    Ok(())
}

pub(super) async fn batch_owner(
    store: &MemoryStore,
    batch: &BatchId,
    now_ms: u64,
) -> StoreResult<Option<Fence>> {
    let inner = store.lock();
    Ok(inner
        .batches
        .get(batch)
        .and_then(|data| data.live_owner(now_ms).cloned()))
}

pub(super) async fn publish_workers(
    store: &MemoryStore,
    coordinator: &str,
    workers: &[WorkerEntry],
    until_ms: u64,
) -> StoreResult<()> {
    store
        .lock()
        .workers
        .insert(coordinator.to_owned(), (until_ms, workers.to_vec()));
    Ok(())
}

pub(super) async fn workers(
    store: &MemoryStore,
    now_ms: u64,
) -> StoreResult<Vec<(String, WorkerEntry)>> {
    let mut inner = store.lock();
    inner
        .workers
        .retain(|_, (until_ms, _)| until_ms.saturating_add(WORKERS_FORGET_AFTER_MS) >= now_ms);
    let mut listed: Vec<(String, WorkerEntry)> = inner
        .workers
        .iter()
        .filter(|(_, (until_ms, _))| *until_ms >= now_ms)
        .flat_map(|(coordinator, (_, workers))| {
            workers
                .iter()
                .map(|worker| (coordinator.clone(), worker.clone()))
        })
        .collect();
    listed.sort_by(|left, right| (&left.0, &left.1.worker_id).cmp(&(&right.0, &right.1.worker_id)));
    Ok(listed)
}

pub(super) async fn ready_depth(
    store: &MemoryStore,
    batches: &[BatchId],
) -> StoreResult<ReadyDepth> {
    let inner = store.lock();
    let mut depth = ReadyDepth::default();
    for batch in batches {
        // A finished batch's queues are gone in Redis (compaction).
        let Some(data) = inner
            .batches
            .get(batch)
            .filter(|data| data.meta.state == BatchState::Running)
        else {
            continue;
        };
        for (slot, queue) in depth.by_priority.iter_mut().zip(&data.ready) {
            *slot += queue.len() as u64;
        }
    }
    Ok(depth)
}

pub(super) async fn publish_ready_gauge(store: &MemoryStore, total: u64) -> StoreResult<u64> {
    let length = total.min(READY_GAUGE_CAP);
    store.lock().ready_gauge = length;
    Ok(length)
}

pub(super) async fn create_token(store: &MemoryStore, token: &TokenRecord) -> StoreResult<()> {
    let mut inner = store.lock();
    if inner.tokens.contains_key(&token.id) {
        return Err(StoreError::TokenExists(token.id.clone()));
    }
    let mut record = token.clone();
    record.revoked_ms = None;
    record.last_used_ms = None;
    inner.tokens.insert(token.id.clone(), record);
    Ok(())
}

pub(super) async fn token(store: &MemoryStore, id: &str) -> StoreResult<Option<TokenRecord>> {
    Ok(store.lock().tokens.get(id).cloned())
}

pub(super) async fn tokens(store: &MemoryStore) -> StoreResult<Vec<TokenRecord>> {
    Ok(store.lock().tokens.values().cloned().collect())
}

pub(super) async fn revoke_token(store: &MemoryStore, id: &str, now_ms: u64) -> StoreResult<bool> {
    let mut inner = store.lock();
    let Some(token) = inner.tokens.get_mut(id) else {
        return Ok(false);
    };
    token.revoked_ms.get_or_insert(now_ms);
    inner.token_revocations += 1;
    Ok(true)
}

pub(super) async fn touch_token(store: &MemoryStore, id: &str, now_ms: u64) -> StoreResult<()> {
    if let Some(token) = store.lock().tokens.get_mut(id) {
        token.last_used_ms = Some(now_ms);
    }
    Ok(())
}

pub(super) async fn token_revocations(store: &MemoryStore) -> StoreResult<u64> {
    Ok(store.lock().token_revocations)
}
