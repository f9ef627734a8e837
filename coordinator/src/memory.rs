//! Memory: the keys ops and clients coordinate through, in a batch's own
//! memory or a shared namespace — get, put (TTL, compare-and-set), delete,
//! list, incr, watch (resumable) and wait. Writes unblock waiting ops in
//! every batch that waits on the scope; that is the store's job.

use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tracing::{Instrument, info, info_span};
use volley_proto::{BatchId, v1};
use volley_store::{
    Doorbell, MemoryChange, MemoryChangeKind, MemoryKeyInfo, MemoryScope, MemoryValue, PutOptions,
    PutOutcome, StoreError,
};

use crate::auth::{AuthError, Principal, tenant_namespace};
use crate::error::CoordinatorError;
use crate::service::{Access, Coordinator, now_ms};

/// Changes read per store call while watching.
const CHANGES_PER_READ: u32 = 1000;
/// Longest page of `list`.
const MAX_LIST_PAGE: u32 = 1000;
/// Longest `store_epoch` a watch may name (ours are 36-byte UUIDs).
const MAX_EPOCH_BYTES: usize = 64;

/// Who is writing: an op's attempt, so a write from a stale attempt (the op
/// was retried elsewhere) is refused.
#[derive(Clone, Debug, Default)]
pub struct Writer {
    pub batch: Option<BatchId>,
    pub op_id: String,
    pub attempt: u32,
}

impl Coordinator {
    /// Resolves a request's `(batch_id, namespace)`: a namespace names a
    /// shared scope (the batch id then, if any, only says who writes);
    /// otherwise the batch's own memory — or, when the batch was submitted
    /// with a namespace, that namespace, so an op's plain reads and writes
    /// land where its batch's `store_as` and `wait_for` do.
    ///
    /// Namespaces are the caller's tenant's (see
    /// [`crate::auth::tenant_namespace`]); a batch must be one the caller
    /// may see. An op's token reaches its own batch's memory, or its
    /// batch's namespace, and nothing else.
    pub async fn memory_scope(
        &self,
        batch_id: &str,
        namespace: &str,
        principal: &Principal,
    ) -> Result<MemoryScope, CoordinatorError> {
        if let Some(agent) = &principal.agent {
            let planned = self
                .authorize(principal, &agent.batch, Access::Read)
                .await?;
            if !batch_id.is_empty() && batch_id != agent.batch.as_str() {
                return Err(CoordinatorError::BatchNotFound(BatchId::new(batch_id)));
            }
            if !namespace.is_empty() && planned.plan.namespace.as_deref() != Some(namespace) {
                return Err(AuthError::PermissionDenied(format!(
                    "an op's token reaches its batch's memory only, not namespace `{namespace}`"
                ))
                .into());
            }
            return Ok(planned.memory_scope());
        }
        if !namespace.is_empty() {
            volley_plan::check_memory_key(namespace)
                .map_err(|message| CoordinatorError::BadRequest(format!("namespace: {message}")))?;
            return Ok(MemoryScope::Shared(tenant_namespace(
                &principal.tenant,
                namespace,
            )));
        }
        if batch_id.is_empty() {
            return Err(CoordinatorError::BadRequest(
                "name a memory scope: a batch id or a namespace".into(),
            ));
        }
        let batch = BatchId::new(batch_id);
        let planned = self.authorize(principal, &batch, Access::Read).await?;
        Ok(planned.memory_scope())
    }

    fn check_key(key: &str) -> Result<(), CoordinatorError> {
        volley_plan::check_memory_key(key).map_err(CoordinatorError::BadRequest)
    }

    pub async fn memory_get(
        &self,
        scope: &MemoryScope,
        key: &str,
    ) -> Result<Option<MemoryValue>, CoordinatorError> {
        Self::check_key(key)?;
        Ok(self.store().memory_get(scope, key).await?)
    }

    #[tracing::instrument(skip_all, fields(scope = %scope, key, bytes = value.len()))]
    pub async fn memory_put(
        &self,
        scope: &MemoryScope,
        key: &str,
        value: &[u8],
        options: &PutOptions,
        writer: &Writer,
        principal: &Principal,
    ) -> Result<PutOutcome, CoordinatorError> {
        Self::check_key(key)?;
        let max = self.config().max_value_bytes;
        if value.len() > max {
            return Err(CoordinatorError::ValueTooLarge {
                key: key.to_owned(),
                size: value.len(),
                max,
            });
        }
        // An op's token writes as that op's attempt, whatever the request
        // says: a stale attempt's write is refused like any other.
        let writer = match &principal.agent {
            Some(agent) => &Writer {
                batch: Some(agent.batch.clone()),
                op_id: self
                    .plan_of(&agent.batch)
                    .await?
                    .op_id(agent.op_index)
                    .to_owned(),
                attempt: agent.attempt,
            },
            None => writer,
        };
        self.check_writer(writer).await?;
        if principal.agent.is_none() {
            info!(%scope, key, audit = "memory.put", token = %principal.token_id, tenant = %principal.tenant, "memory written by a client");
        }
        Ok(self
            .store()
            .memory_put(scope, key, value, options, now_ms())
            .await?)
    }

    pub async fn memory_delete(
        &self,
        scope: &MemoryScope,
        key: &str,
        if_version: Option<u64>,
    ) -> Result<bool, CoordinatorError> {
        Self::check_key(key)?;
        Ok(self
            .store()
            .memory_delete(scope, key, if_version, now_ms())
            .await?)
    }

    /// One page of keys under `prefix`, and the token of the next page
    /// (empty on the last).
    pub async fn memory_list(
        &self,
        scope: &MemoryScope,
        prefix: &str,
        page_token: &str,
        limit: u32,
    ) -> Result<(Vec<MemoryKeyInfo>, String), CoordinatorError> {
        let limit = if limit == 0 {
            100
        } else {
            limit.min(MAX_LIST_PAGE)
        };
        let after = (!page_token.is_empty()).then_some(page_token);
        let keys = self
            .store()
            .memory_list(scope, prefix, after, limit)
            .await?;
        let next = if keys.len() as u32 == limit {
            keys.last().map(|info| info.key.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok((keys, next))
    }

    pub async fn memory_incr(
        &self,
        scope: &MemoryScope,
        key: &str,
        delta: i64,
    ) -> Result<(i64, PutOutcome), CoordinatorError> {
        Self::check_key(key)?;
        Ok(self
            .store()
            .memory_incr(scope, key, delta, now_ms())
            .await?)
    }

    /// Refuses a write from an op attempt that is no longer the op's
    /// running attempt.
    async fn check_writer(&self, writer: &Writer) -> Result<(), CoordinatorError> {
        let Some(batch) = &writer.batch else {
            return Ok(());
        };
        if writer.op_id.is_empty() {
            return Ok(());
        }
        let planned = self.plan_of(batch).await?;
        let Some(index) = planned
            .plan
            .ops
            .iter()
            .position(|op| op.id.as_str() == writer.op_id)
        else {
            return Err(CoordinatorError::BadRequest(format!(
                "writer op `{}` is not in batch {batch}",
                writer.op_id
            )));
        };
        let records = self.store().op_records_at(batch, &[index as u32]).await?;
        let current = records.first();
        let live = current.is_some_and(|record| {
            record.state == volley_store::OpState::Running && record.attempts == writer.attempt
        });
        if live {
            Ok(())
        } else {
            Err(CoordinatorError::StaleWriter {
                op_id: writer.op_id.clone(),
                attempt: writer.attempt,
                current: current.map_or(0, |record| record.attempts),
            })
        }
    }

    /// Streams changes under `prefix` after `after_revision` (0: from now,
    /// after every existing key when `include_existing`), until the client
    /// goes away. Wakes on memory doorbells, re-reads on a slow timer.
    ///
    /// A watch never skips silently. Revisions are only comparable within
    /// one store epoch: when the store restarted empty (`store_epoch` is
    /// not the epoch now, the epoch changes while the watch runs, or the
    /// scope's revision is behind `after_revision`), or the changes to
    /// resume from were trimmed, the stream's last change is a `RESET`
    /// carrying the scope's revision now, followed by the error that says
    /// why (DATA_LOSS or OUT_OF_RANGE, for clients that do not know RESET).
    pub async fn memory_watch(
        &self,
        scope: MemoryScope,
        prefix: String,
        after_revision: u64,
        include_existing: bool,
        store_epoch: &str,
    ) -> Result<MemoryWatch, CoordinatorError> {
        if store_epoch.len() > MAX_EPOCH_BYTES {
            return Err(CoordinatorError::BadRequest(format!(
                "store_epoch is {} bytes; the most is {MAX_EPOCH_BYTES}",
                store_epoch.len()
            )));
        }
        // Subscribe before reading the revision: a write in between rings.
        let doorbells = self.store().doorbells();
        // The epoch before the revision: a restart in between then shows
        // as another epoch at the first check, never as a silent gap.
        let epoch = self.store().epoch().await?;
        let (sender, receiver) = mpsc::channel(256);
        let mut watch = MemoryWatch {
            epoch: epoch.clone(),
            after: after_revision,
            existing: 0,
            changes: receiver,
        };
        let latest = self.store().memory_revision(&scope).await?;
        let epoch_changed = !store_epoch.is_empty() && store_epoch != epoch;
        if epoch_changed || latest < after_revision {
            // Nothing to pump: the stream is its reset. The channel has room.
            let _ = sender.try_send(Ok(reset_change(
                latest,
                v1::MemoryResetReason::StoreRestarted,
            )));
            let _ = sender.try_send(Err(CoordinatorError::MemoryReset {
                scope: scope.to_string(),
                after: after_revision,
                latest,
            }));
            return Ok(watch);
        }
        let mut start = after_revision;
        let mut existing = Vec::new();
        if after_revision == 0 {
            start = latest;
            if include_existing {
                existing = self.existing_as_changes(&scope, &prefix, start).await?;
            }
        }
        watch.after = start;
        watch.existing = existing.len() as u64;
        let coordinator = self.clone();
        let span = info_span!("coordinator.watch_memory", scope = %scope, prefix = %prefix);
        self.spawn(
            async move {
                for change in existing {
                    if sender.send(Ok(change)).await.is_err() {
                        return;
                    }
                }
                let pump = ChangePump {
                    scope,
                    prefix,
                    epoch,
                    after: start,
                    sender,
                };
                coordinator.pump_changes(pump, doorbells).await;
            }
            .instrument(span),
        );
        Ok(watch)
    }

    async fn existing_as_changes(
        &self,
        scope: &MemoryScope,
        prefix: &str,
        revision: u64,
    ) -> Result<Vec<v1::MemoryChange>, CoordinatorError> {
        let mut changes = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store()
                .memory_list(scope, prefix, after.as_deref(), MAX_LIST_PAGE)
                .await?;
            let full = page.len() as u32 == MAX_LIST_PAGE;
            for info in page {
                let value = self.store().memory_get(scope, &info.key).await?;
                if let Some(value) = value {
                    after = Some(info.key.clone());
                    changes.push(v1::MemoryChange {
                        revision,
                        key: info.key,
                        kind: v1::MemoryChangeKind::Put as i32,
                        version: value.version,
                        value_omitted: value.value.len() > volley_store::CHANGE_VALUE_LIMIT,
                        value: if value.value.len() > volley_store::CHANGE_VALUE_LIMIT {
                            Vec::new()
                        } else {
                            value.value
                        },
                        content_type: value.content_type,
                        at_ms: 0,
                        reset_reason: v1::MemoryResetReason::Unspecified as i32,
                    });
                } else {
                    after = Some(info.key);
                }
            }
            if !full {
                return Ok(changes);
            }
        }
    }

    /// Sends changes as they come until the client goes away, the
    /// coordinator shuts down (the stream ends UNAVAILABLE, never as if all
    /// was said: the client resumes elsewhere), or the watch cannot go on
    /// (a reset, or the store's error).
    async fn pump_changes(
        &self,
        mut pump: ChangePump,
        mut doorbells: broadcast::Receiver<Doorbell>,
    ) {
        loop {
            let read = self
                .store()
                .memory_changes(&pump.scope, &pump.prefix, pump.after, CHANGES_PER_READ)
                .await;
            let changes = match read {
                Ok(changes) => changes,
                Err(trimmed @ StoreError::ChangesTrimmed { .. })
                    if self.same_epoch(&pump).await =>
                {
                    let latest = self.store().memory_revision(&pump.scope).await;
                    tracing::warn!(scope = %pump.scope, after = pump.after, "memory watch reset: its changes were trimmed");
                    pump.reset(
                        latest.unwrap_or_default(),
                        v1::MemoryResetReason::ChangesTrimmed,
                        Some(trimmed.into()),
                    )
                    .await;
                    return;
                }
                Err(StoreError::ChangesTrimmed { .. }) => {
                    self.reset_restarted(&pump).await;
                    return;
                }
                Err(error) => {
                    let _ = pump.sender.send(Err(error.into())).await;
                    return;
                }
            };
            // The changes read are the epoch's only if the epoch still is
            // the watch's once they were read: a restart before the read
            // shows here; one after it is the next round's.
            if !self.same_epoch(&pump).await {
                self.reset_restarted(&pump).await;
                return;
            }
            if changes.is_empty() {
                // Belt and braces for a store without epochs: revisions
                // never go back but after a restart.
                match self.store().memory_revision(&pump.scope).await {
                    Ok(latest) if latest < pump.after => {
                        self.reset_restarted(&pump).await;
                        return;
                    }
                    Ok(_) => {}
                    Err(error) => {
                        let _ = pump.sender.send(Err(error.into())).await;
                        return;
                    }
                }
            }
            let full = changes.len() as u32 == CHANGES_PER_READ;
            for change in changes {
                pump.after = change.revision;
                if pump.sender.send(Ok(change_to_proto(change))).await.is_err() {
                    return;
                }
            }
            if full {
                continue;
            }
            tokio::select! {
                () = self.shutdown_token().cancelled() => {
                    // Say so rather than end the stream as if all was said:
                    // the client resumes on another coordinator.
                    let _ = pump.sender.try_send(Err(CoordinatorError::ShuttingDown));
                    return;
                }
                () = pump.sender.closed() => return,
                () = wait_for_memory_bell(&mut doorbells, &pump.scope) => {}
                () = tokio::time::sleep(self.config().resync_interval) => {}
            }
        }
    }

    /// Whether the store's epoch is still the watch's. A store that cannot
    /// say counts as the same: the next read fails and says why.
    async fn same_epoch(&self, pump: &ChangePump) -> bool {
        match self.store().epoch().await {
            Ok(epoch) => epoch == pump.epoch,
            Err(_) => true,
        }
    }

    async fn reset_restarted(&self, pump: &ChangePump) {
        let latest = self
            .store()
            .memory_revision(&pump.scope)
            .await
            .unwrap_or_default();
        tracing::warn!(scope = %pump.scope, after = pump.after, latest, "memory watch reset: the store restarted empty");
        let error = CoordinatorError::MemoryReset {
            scope: pump.scope.to_string(),
            after: pump.after,
            latest,
        };
        pump.reset(latest, v1::MemoryResetReason::StoreRestarted, Some(error))
            .await;
    }

    /// The key's value once it exists, or `WaitTimedOut`.
    pub async fn memory_wait(
        &self,
        scope: &MemoryScope,
        key: &str,
        timeout: Option<Duration>,
    ) -> Result<MemoryValue, CoordinatorError> {
        Self::check_key(key)?;
        let mut doorbells = self.store().doorbells();
        let deadline = timeout.map(|timeout| tokio::time::Instant::now() + timeout);
        loop {
            if let Some(value) = self.store().memory_get(scope, key).await? {
                return Ok(value);
            }
            let until_deadline = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.shutdown_token().cancelled() => return Err(CoordinatorError::ShuttingDown),
                () = until_deadline => {
                    return Err(CoordinatorError::WaitTimedOut { key: key.to_owned(), waited: timeout.unwrap_or_default() });
                }
                () = wait_for_memory_bell(&mut doorbells, scope) => {}
                () = tokio::time::sleep(self.config().resync_interval) => {}
            }
        }
    }
}

/// A watch's stream as the coordinator opened it: the store epoch its
/// revisions belong to (sent as the `volley-store-epoch` header) and its
/// changes.
pub struct MemoryWatch {
    pub epoch: String,
    /// The revision the stream's changes come after (its first live change
    /// is `after + 1`).
    pub after: u64,
    /// How many changes of existing keys come first (all at `after`).
    pub existing: u64,
    pub changes: mpsc::Receiver<Result<v1::MemoryChange, CoordinatorError>>,
}

/// One watch being pumped: where it is and where its changes go.
struct ChangePump {
    scope: MemoryScope,
    prefix: String,
    /// The store epoch the watch's revisions belong to.
    epoch: String,
    /// The last revision sent (or the resume point).
    after: u64,
    sender: mpsc::Sender<Result<v1::MemoryChange, CoordinatorError>>,
}

impl ChangePump {
    /// Ends the stream with a `RESET` change at `latest`, then `error`.
    async fn reset(
        &self,
        latest: u64,
        reason: v1::MemoryResetReason,
        error: Option<CoordinatorError>,
    ) {
        if self
            .sender
            .send(Ok(reset_change(latest, reason)))
            .await
            .is_err()
        {
            return;
        }
        if let Some(error) = error {
            let _ = self.sender.send(Err(error)).await;
        }
    }
}

/// The change that ends a watch that cannot go on without a gap.
fn reset_change(latest: u64, reason: v1::MemoryResetReason) -> v1::MemoryChange {
    v1::MemoryChange {
        revision: latest,
        kind: v1::MemoryChangeKind::Reset as i32,
        reset_reason: reason as i32,
        ..v1::MemoryChange::default()
    }
}

async fn wait_for_memory_bell(doorbells: &mut broadcast::Receiver<Doorbell>, scope: &MemoryScope) {
    loop {
        match doorbells.recv().await {
            Ok(Doorbell::Memory(rung)) if &rung == scope => return,
            Ok(
                Doorbell::Memory(_)
                | Doorbell::Batch(_)
                | Doorbell::Events(_)
                | Doorbell::Started(_)
                | Doorbell::Ended(_),
            ) => {}
            Ok(Doorbell::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

pub(crate) fn change_to_proto(change: MemoryChange) -> v1::MemoryChange {
    let value_omitted = change.kind == MemoryChangeKind::Put && change.value.is_none();
    v1::MemoryChange {
        revision: change.revision,
        key: change.key,
        kind: match change.kind {
            MemoryChangeKind::Put => v1::MemoryChangeKind::Put,
            MemoryChangeKind::Delete => v1::MemoryChangeKind::Delete,
        } as i32,
        version: change.version,
        value: change.value.unwrap_or_default(),
        value_omitted,
        content_type: change.content_type,
        at_ms: change.at_ms,
        reset_reason: v1::MemoryResetReason::Unspecified as i32,
    }
}
