//! Reading a batch: its meta, op records, events, and the batch list.

use super::*;

pub(super) async fn batch_spec(
    store: &MemoryStore,
    batch: &BatchId,
) -> StoreResult<Option<StoredSpec>> {
    Ok(store.lock().batches.get(batch).map(|data| StoredSpec {
        base: data.spec.clone(),
        added: data.spec_added.clone(),
    }))
}

pub(super) async fn active_batches(store: &MemoryStore) -> StoreResult<Vec<BatchId>> {
    let inner = store.lock();
    let mut active: Vec<&BatchMeta> = inner
        .batches
        .values()
        .map(|data| &data.meta)
        .filter(|meta| meta.state == BatchState::Running)
        .collect();
    active.sort_by(|left, right| (left.created_ms, &left.id).cmp(&(right.created_ms, &right.id)));
    Ok(active.into_iter().map(|meta| meta.id.clone()).collect())
}

pub(super) async fn meta(store: &MemoryStore, batch: &BatchId) -> StoreResult<Option<BatchMeta>> {
    Ok(store.lock().batches.get(batch).map(BatchData::meta_now))
}

pub(super) async fn op_records(store: &MemoryStore, batch: &BatchId) -> StoreResult<Vec<OpRecord>> {
    let inner = store.lock();
    let data = inner.batch(batch)?;
    Ok(data
        .ops
        .iter()
        .map(|op| op.record.to_record(&data.workers))
        .collect())
}

pub(super) async fn op_summaries(
    store: &MemoryStore,
    batch: &BatchId,
    range: std::ops::Range<u32>,
) -> StoreResult<Vec<OpSummary>> {
    let inner = store.lock();
    let data = inner.batch(batch)?;
    let end = (range.end as usize).min(data.ops.len());
    let start = (range.start as usize).min(end);
    Ok(data.ops[start..end]
        .iter()
        .map(|op| op.record.to_summary(&data.workers))
        .collect())
}

pub(super) async fn op_records_at(
    store: &MemoryStore,
    batch: &BatchId,
    indices: &[u32],
) -> StoreResult<Vec<OpRecord>> {
    let inner = store.lock();
    let data = inner.batch(batch)?;
    indices
        .iter()
        .map(|index| {
            data.ops
                .get(*index as usize)
                .map(|op| op.record.to_record(&data.workers))
                .ok_or_else(|| StoreError::BatchNotFound(batch.clone()))
        })
        .collect()
}

pub(super) async fn events(
    store: &MemoryStore,
    batch: &BatchId,
    after_seq: u64,
    max: u32,
) -> StoreResult<Vec<Event>> {
    let inner = store.lock();
    let Some(data) = inner.batches.get(batch) else {
        return Ok(Vec::new());
    };
    let start = usize::try_from(after_seq)
        .unwrap_or(usize::MAX)
        .min(data.events.len());
    Ok(data.events[start..]
        .iter()
        .take(max as usize)
        .enumerate()
        .map(|(offset, event)| data.unpack((start + offset) as u64 + 1, event))
        .collect())
}

pub(super) async fn last_event_seq(store: &MemoryStore, batch: &BatchId) -> StoreResult<u64> {
    // Seqs are 1, 2, 3, … by position.
    Ok(store
        .lock()
        .batches
        .get(batch)
        .map_or(0, |data| data.events.len() as u64))
}

pub(super) async fn list_batches(
    store: &MemoryStore,
    limit: u32,
    tenant: Option<&str>,
) -> StoreResult<Vec<BatchMeta>> {
    let inner = store.lock();
    let mut batches: Vec<&BatchData> = inner
        .batches
        .values()
        .filter(|data| tenant.is_none_or(|tenant| data.meta.tenant == tenant))
        .collect();
    batches.sort_by(|left, right| {
        (right.meta.created_ms, &right.meta.id).cmp(&(left.meta.created_ms, &left.meta.id))
    });
    Ok(batches
        .into_iter()
        .take(limit as usize)
        .map(BatchData::meta_now)
        .collect())
}
