//! Holds on batches, the worker registry, tokens and the ready gauge.

use super::*;

pub(super) async fn hold_batch(
    store: &RedisStore,
    batch: &BatchId,
    coordinator: &str,
    ttl_ms: u64,
    now_ms: u64,
) -> StoreResult<Option<Fence>> {
    let (status, token, holder): (i64, u64, String) =
        batch_invocation(&store.shared.scripts.hold, batch, now_ms)
            .arg(coordinator)
            .arg(ttl_ms.max(1))
            .invoke_async(&mut store.connection())
            .await?;
    match status {
        -1 => Err(StoreError::BatchNotFound(batch.clone())),
        1 => Ok(Some(Fence {
            coordinator: coordinator.to_owned(),
            token,
        })),
        _ => {
            if !holder.is_empty() {
                tracing::debug!(holder, "the batch is held by another coordinator");
            }
            Ok(None)
        }
    }
}

pub(super) async fn release_batch(
    store: &RedisStore,
    batch: &BatchId,
    fence: &Fence,
) -> StoreResult<()> {
    let _: i64 = batch_invocation(&store.shared.scripts.release, batch, 0)
        .arg(packed_fence(fence))
        .invoke_async(&mut store.connection())
        .await?;
    Ok(())
}

pub(super) async fn batch_owner(
    store: &RedisStore,
    batch: &BatchId,
    _now_ms: u64,
) -> StoreResult<Option<Fence>> {
    let value: Option<String> = store.connection().get(keys::owner(batch)).await?;
    value.as_deref().map(parse_fence).transpose()
}

pub(super) async fn publish_workers(
    store: &RedisStore,
    coordinator: &str,
    workers: &[WorkerEntry],
    until_ms: u64,
) -> StoreResult<()> {
    let json = serde_json::to_string(&PublishedWorkers {
        until_ms,
        workers: workers.to_vec(),
    })
    .map_err(|error| corrupt(format_args!("workers of {coordinator}: {error}")))?;
    let _: i64 = store
        .connection()
        .hset(keys::WORKERS, coordinator, json)
        .await?;
    Ok(())
}

pub(super) async fn workers(
    store: &RedisStore,
    now_ms: u64,
) -> StoreResult<Vec<(String, WorkerEntry)>> {
    let flat: Vec<String> = store
        .shared
        .scripts
        .workers
        .key(keys::WORKERS)
        .arg(now_ms)
        .arg(WORKERS_FORGET_AFTER_MS)
        .invoke_async(&mut store.connection())
        .await?;
    let mut listed = Vec::new();
    for pair in flat.chunks_exact(2) {
        let (coordinator, json) = (&pair[0], &pair[1]);
        match serde_json::from_str::<PublishedWorkers>(json) {
            // The script judged until_ms in a double; judge it again exactly.
            Ok(published) if published.until_ms >= now_ms => listed.extend(
                published
                    .workers
                    .into_iter()
                    .map(|worker| (coordinator.clone(), worker)),
            ),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(coordinator, %error, "unreadable worker registry entry")
            }
        }
    }
    listed.sort_by(|left, right| (&left.0, &left.1.worker_id).cmp(&(&right.0, &right.1.worker_id)));
    Ok(listed)
}

pub(super) async fn ready_depth(
    store: &RedisStore,
    batches: &[BatchId],
) -> StoreResult<ReadyDepth> {
    store.read_ready_depth(batches).await
}

pub(super) async fn publish_ready_gauge(store: &RedisStore, total: u64) -> StoreResult<u64> {
    store.write_ready_gauge(total).await
}

pub(super) async fn create_token(store: &RedisStore, token: &TokenRecord) -> StoreResult<()> {
    let record = serde_json::to_string(token).map_err(corrupt)?;
    let created: bool = store
        .connection()
        .hset_nx(keys::TOKENS, &token.id, record)
        .await?;
    if created {
        Ok(())
    } else {
        Err(StoreError::TokenExists(token.id.clone()))
    }
}

pub(super) async fn token(store: &RedisStore, id: &str) -> StoreResult<Option<TokenRecord>> {
    let mut pipe = redis::pipe();
    pipe.hget(keys::TOKENS, id)
        .hget(keys::TOKENS_REVOKED, id)
        .hget(keys::TOKENS_USED, id);
    let (record, revoked, used): (Option<String>, Option<u64>, Option<u64>) =
        pipe.query_async(&mut store.connection()).await?;
    let Some(record) = record else {
        return Ok(None);
    };
    let mut token: TokenRecord = serde_json::from_str(&record).map_err(corrupt)?;
    token.revoked_ms = revoked;
    token.last_used_ms = used;
    Ok(Some(token))
}

pub(super) async fn tokens(store: &RedisStore) -> StoreResult<Vec<TokenRecord>> {
    let mut pipe = redis::pipe();
    pipe.hgetall(keys::TOKENS)
        .hgetall(keys::TOKENS_REVOKED)
        .hgetall(keys::TOKENS_USED);
    let (records, revoked, used): (
        BTreeMap<String, String>,
        HashMap<String, u64>,
        HashMap<String, u64>,
    ) = pipe.query_async(&mut store.connection()).await?;
    records
        .into_values()
        .map(|record| {
            let mut token: TokenRecord = serde_json::from_str(&record).map_err(corrupt)?;
            token.revoked_ms = revoked.get(&token.id).copied();
            token.last_used_ms = used.get(&token.id).copied();
            Ok(token)
        })
        .collect()
}

pub(super) async fn revoke_token(store: &RedisStore, id: &str, now_ms: u64) -> StoreResult<bool> {
    let revoked: i64 = store
        .shared
        .scripts
        .revoke_token
        .key(keys::TOKENS)
        .key(keys::TOKENS_REVOKED)
        .key(keys::TOKENS_REVOCATIONS)
        .arg(id)
        .arg(now_ms)
        .invoke_async(&mut store.connection())
        .await?;
    Ok(revoked == 1)
}

pub(super) async fn touch_token(store: &RedisStore, id: &str, now_ms: u64) -> StoreResult<()> {
    let _: i64 = store
        .connection()
        .hset(keys::TOKENS_USED, id, now_ms)
        .await?;
    Ok(())
}

pub(super) async fn token_revocations(store: &RedisStore) -> StoreResult<u64> {
    let count: Option<u64> = store.connection().get(keys::TOKENS_REVOCATIONS).await?;
    Ok(count.unwrap_or(0))
}
