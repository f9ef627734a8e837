//! The [`Store`] verbs of [`MemoryStore`]: each hands over to the module of its subject.

use super::*;

#[async_trait]
impl Store for MemoryStore {
    async fn epoch(&self) -> StoreResult<String> {
        lifecycle::epoch(self).await
    }

    #[tracing::instrument(skip_all, fields(batch = %batch.id))]
    async fn create_batch(&self, batch: NewBatch) -> StoreResult<Created> {
        lifecycle::create_batch(self, batch).await
    }

    async fn spawn_record(&self, batch: &BatchId, key: &str) -> StoreResult<Option<String>> {
        lifecycle::spawn_record(self, batch, key).await
    }

    async fn batch_spec(&self, batch: &BatchId) -> StoreResult<Option<StoredSpec>> {
        reads::batch_spec(self, batch).await
    }

    async fn active_batches(&self) -> StoreResult<Vec<BatchId>> {
        reads::active_batches(self).await
    }

    #[tracing::instrument(skip_all, fields(batch = %batch))]
    async fn claim(
        &self,
        batch: &BatchId,
        max: u32,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> StoreResult<Vec<Claimed>> {
        ops::claim(self, batch, max, now_ms, lease_until_ms).await
    }

    #[tracing::instrument(skip_all, fields(batch = %batch))]
    async fn complete(
        &self,
        batch: &BatchId,
        completions: &[Completion],
        now_ms: u64,
    ) -> StoreResult<CompleteOutcome> {
        ops::complete(self, batch, completions, now_ms).await
    }

    #[tracing::instrument(skip_all, fields(batch = %batch, ops = ops.len()))]
    async fn renew_leases_on(
        &self,
        batch: &BatchId,
        ops: &[Claimed],
        lease_until_ms: u64,
        worker: &str,
    ) -> StoreResult<Vec<Claimed>> {
        ops::renew_leases_on(self, batch, ops, lease_until_ms, worker).await
    }

    #[tracing::instrument(skip_all, fields(batch = %batch, token = fence.token))]
    async fn expire_leases(
        &self,
        batch: &BatchId,
        now_ms: u64,
        fence: &Fence,
    ) -> StoreResult<CompleteOutcome> {
        ops::expire_leases(self, batch, now_ms, fence).await
    }

    #[tracing::instrument(skip_all, fields(batch = %batch, ops = ops.len()))]
    async fn return_ops(&self, batch: &BatchId, ops: &[Claimed], now_ms: u64) -> StoreResult<u32> {
        ops::return_ops(self, batch, ops, now_ms).await
    }

    #[tracing::instrument(skip_all, fields(batch = %batch, token = fence.token))]
    async fn expire_deadline(
        &self,
        batch: &BatchId,
        now_ms: u64,
        fence: &Fence,
    ) -> StoreResult<CompleteOutcome> {
        ops::expire_deadline(self, batch, now_ms, fence).await
    }

    #[tracing::instrument(skip_all, fields(batches = batches.len()))]
    async fn mark_lost(
        &self,
        batches: &[BatchId],
        reason: &str,
        now_ms: u64,
    ) -> StoreResult<Vec<BatchId>> {
        lifecycle::mark_lost(self, batches, reason, now_ms).await
    }

    async fn op_waits(&self, batch: &BatchId, index: u32) -> StoreResult<OpWaits> {
        ops::op_waits(self, batch, index).await
    }

    #[tracing::instrument(skip_all, fields(batch = %batch, index))]
    async fn note_blocked(
        &self,
        batch: &BatchId,
        index: u32,
        message: &str,
        now_ms: u64,
    ) -> StoreResult<bool> {
        ops::note_blocked(self, batch, index, message, now_ms).await
    }

    #[tracing::instrument(skip_all, fields(batch = %batch))]
    async fn cancel(
        &self,
        batch: &BatchId,
        reason: &str,
        now_ms: u64,
    ) -> StoreResult<CancelOutcome> {
        lifecycle::cancel(self, batch, reason, now_ms).await
    }

    async fn meta(&self, batch: &BatchId) -> StoreResult<Option<BatchMeta>> {
        reads::meta(self, batch).await
    }

    async fn op_records(&self, batch: &BatchId) -> StoreResult<Vec<OpRecord>> {
        reads::op_records(self, batch).await
    }

    async fn op_durations(&self, batch: &BatchId) -> StoreResult<Vec<u64>> {
        let inner = self.lock();
        let data = inner.batch(batch)?;
        Ok(data.ops.iter().map(|op| op.record.duration_ms).collect())
    }

    async fn op_summaries(
        &self,
        batch: &BatchId,
        range: std::ops::Range<u32>,
    ) -> StoreResult<Vec<OpSummary>> {
        reads::op_summaries(self, batch, range).await
    }

    async fn op_records_at(&self, batch: &BatchId, indices: &[u32]) -> StoreResult<Vec<OpRecord>> {
        reads::op_records_at(self, batch, indices).await
    }

    async fn events(&self, batch: &BatchId, after_seq: u64, max: u32) -> StoreResult<Vec<Event>> {
        reads::events(self, batch, after_seq, max).await
    }

    async fn last_event_seq(&self, batch: &BatchId) -> StoreResult<u64> {
        reads::last_event_seq(self, batch).await
    }

    async fn drop_expired(&self, now_ms: u64, max: u32) -> StoreResult<u32> {
        lifecycle::drop_expired(self, now_ms, max).await
    }

    async fn prune_batch_index(&self, _from_ms: u64, _max: u32) -> StoreResult<(u32, u64)> {
        // The index is the batch map itself: an expired batch left it.
        Ok((0, 0))
    }

    async fn list_batches(&self, limit: u32, tenant: Option<&str>) -> StoreResult<Vec<BatchMeta>> {
        reads::list_batches(self, limit, tenant).await
    }

    #[tracing::instrument(skip_all, fields(scope = %scope, key, size = value.len()))]
    async fn memory_put(
        &self,
        scope: &MemoryScope,
        key: &str,
        value: &[u8],
        options: &PutOptions,
        now_ms: u64,
    ) -> StoreResult<PutOutcome> {
        memory::memory_put(self, scope, key, value, options, now_ms).await
    }

    async fn memory_get(&self, scope: &MemoryScope, key: &str) -> StoreResult<Option<MemoryValue>> {
        memory::memory_get(self, scope, key).await
    }

    async fn memory_delete(
        &self,
        scope: &MemoryScope,
        key: &str,
        if_version: Option<u64>,
        now_ms: u64,
    ) -> StoreResult<bool> {
        memory::memory_delete(self, scope, key, if_version, now_ms).await
    }

    async fn memory_list(
        &self,
        scope: &MemoryScope,
        prefix: &str,
        after_key: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<MemoryKeyInfo>> {
        memory::memory_list(self, scope, prefix, after_key, limit).await
    }

    async fn memory_incr(
        &self,
        scope: &MemoryScope,
        key: &str,
        delta: i64,
        now_ms: u64,
    ) -> StoreResult<(i64, PutOutcome)> {
        memory::memory_incr(self, scope, key, delta, now_ms).await
    }

    async fn memory_changes(
        &self,
        scope: &MemoryScope,
        prefix: &str,
        after_revision: u64,
        max: u32,
    ) -> StoreResult<Vec<MemoryChange>> {
        memory::memory_changes(self, scope, prefix, after_revision, max).await
    }

    async fn memory_revision(&self, scope: &MemoryScope) -> StoreResult<u64> {
        memory::memory_revision(self, scope).await
    }

    /// Nothing is ever pending: `complete` writes a shared `store_as` inside
    /// its one critical section.
    async fn drain_outbox(&self, batch: &BatchId, _now_ms: u64) -> StoreResult<u32> {
        let _ = batch;
        Ok(0)
    }

    async fn outboxes_pending(&self, _batches: &[BatchId]) -> StoreResult<Vec<BatchId>> {
        Ok(Vec::new())
    }

    #[tracing::instrument(skip_all, fields(batch = %batch, token = fence.token))]
    async fn expire_waits(
        &self,
        batch: &BatchId,
        now_ms: u64,
        fence: &Fence,
    ) -> StoreResult<CompleteOutcome> {
        ops::expire_waits(self, batch, now_ms, fence).await
    }

    #[tracing::instrument(skip_all, fields(batch = %batch, first_index, ops = ops.len()))]
    async fn add_ops(
        &self,
        batch: &BatchId,
        first_index: u32,
        ops: Vec<NewOp>,
        spec: Vec<u8>,
        note: &str,
        now_ms: u64,
        once: Option<&SpawnOnce>,
    ) -> StoreResult<CompleteOutcome> {
        lifecycle::add_ops(self, batch, first_index, ops, spec, note, now_ms, once).await
    }

    #[tracing::instrument(skip_all, fields(batch = %batch, coordinator, ttl_ms))]
    async fn hold_batch(
        &self,
        batch: &BatchId,
        coordinator: &str,
        ttl_ms: u64,
        now_ms: u64,
    ) -> StoreResult<Option<Fence>> {
        registry::hold_batch(self, batch, coordinator, ttl_ms, now_ms).await
    }

    #[tracing::instrument(skip_all, fields(batch = %batch, token = fence.token))]
    async fn release_batch(&self, batch: &BatchId, fence: &Fence) -> StoreResult<()> {
        registry::release_batch(self, batch, fence).await
    }

    async fn batch_owner(&self, batch: &BatchId, now_ms: u64) -> StoreResult<Option<Fence>> {
        registry::batch_owner(self, batch, now_ms).await
    }

    #[tracing::instrument(skip_all, fields(coordinator, workers = workers.len()))]
    async fn publish_workers(
        &self,
        coordinator: &str,
        workers: &[WorkerEntry],
        until_ms: u64,
    ) -> StoreResult<()> {
        registry::publish_workers(self, coordinator, workers, until_ms).await
    }

    async fn workers(&self, now_ms: u64) -> StoreResult<Vec<(String, WorkerEntry)>> {
        registry::workers(self, now_ms).await
    }

    async fn ready_depth(&self, batches: &[BatchId]) -> StoreResult<ReadyDepth> {
        registry::ready_depth(self, batches).await
    }

    async fn publish_ready_gauge(&self, total: u64) -> StoreResult<u64> {
        registry::publish_ready_gauge(self, total).await
    }

    async fn create_token(&self, token: &TokenRecord) -> StoreResult<()> {
        registry::create_token(self, token).await
    }

    async fn token(&self, id: &str) -> StoreResult<Option<TokenRecord>> {
        registry::token(self, id).await
    }

    async fn tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        registry::tokens(self).await
    }

    async fn revoke_token(&self, id: &str, now_ms: u64) -> StoreResult<bool> {
        registry::revoke_token(self, id, now_ms).await
    }

    async fn touch_token(&self, id: &str, now_ms: u64) -> StoreResult<()> {
        registry::touch_token(self, id, now_ms).await
    }

    async fn token_revocations(&self) -> StoreResult<u64> {
        registry::token_revocations(self).await
    }

    fn doorbells(&self) -> broadcast::Receiver<Doorbell> {
        self.shared.doorbell.subscribe()
    }
}
