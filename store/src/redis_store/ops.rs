//! The batch state machine, op by op: claim, complete, leases, deadlines and waits.

use super::*;

pub(super) async fn claim(
    store: &RedisStore,
    batch: &BatchId,
    max: u32,
    now_ms: u64,
    lease_until_ms: u64,
) -> StoreResult<Vec<Claimed>> {
    if max == 0 {
        return Ok(Vec::new());
    }
    let reply: Value = batch_invocation(&store.shared.scripts.claim, batch, now_ms)
        .arg(max)
        .arg(lease_until_ms)
        .invoke_async(&mut store.connection())
        .await?;
    if let Value::Int(-1) = reply {
        return Err(StoreError::BatchNotFound(batch.clone()));
    }
    let values: Vec<i64> = redis::from_redis_value(reply).map_err(corrupt)?;
    claimed_pairs(&values)
}

pub(super) async fn complete(
    store: &RedisStore,
    batch: &BatchId,
    completions: &[Completion],
    now_ms: u64,
) -> StoreResult<CompleteOutcome> {
    let own_scope = MemoryScope::Batch(batch.clone());
    let mut invocation =
        store.memory_invocation(&store.shared.scripts.complete, &own_scope, now_ms);
    invocation.arg(random_seed()).arg(completions.len());
    for completion in completions {
        invocation
            .arg(completion.index)
            .arg(completion.attempt)
            .arg(outcome_code(completion))
            .arg(&completion.output)
            .arg(&completion.error)
            .arg(&completion.details_json)
            .arg(&completion.worker)
            .arg(completion.started_ms)
            .arg(completion.duration_ms)
            .arg(u8::from(completion.store_as.is_some()))
            .arg(completion.store_as.as_deref().unwrap_or(""))
            .arg(completion.retry_after_ms);
    }
    #[allow(clippy::type_complexity)]
    let (recorded, retried, stale, mut became_ready, finished, shared_writes, memory, next): (
        i64,
        Vec<u32>,
        Vec<u32>,
        u32,
        String,
        Vec<usize>,
        String,
        String,
    ) = invocation.invoke_async(&mut store.connection()).await?;
    if recorded < 0 {
        return Err(StoreError::BatchNotFound(batch.clone()));
    }
    // store_as into a shared namespace: the script recorded each in the
    // batch's outbox, atomically with the completion; written now, each
    // guarded by its op attempt, then cleared. A crash in between leaves
    // the entry for a drain (`drain_outbox`) to write.
    let scope = scope_from_code(batch, &memory);
    if !shared_writes.is_empty() {
        store.test_fault_after_complete();
    }
    for position in shared_writes {
        let Some(completion) = completions.get(position) else {
            return Err(corrupt(format_args!("store_as position {position}")));
        };
        let Some(key) = completion.store_as.as_deref() else {
            continue;
        };
        became_ready += store
            .write_outboxed(
                batch,
                &scope,
                completion.index,
                completion.attempt,
                key,
                completion.output.as_bytes(),
                now_ms,
            )
            .await?;
    }
    // A result sent again (its first delivery was recorded, and maybe
    // its coordinator died before the shared write): repair it now.
    let resent_store_as = stale.iter().any(|index| {
        completions
            .iter()
            .any(|completion| completion.index == *index && completion.store_as.is_some())
    });
    if resent_store_as && matches!(scope, MemoryScope::Shared(_)) {
        store.drain_outbox(batch, now_ms).await?;
    }
    let finished = store.finished_state(batch, &finished).await?;
    Ok(CompleteOutcome {
        recorded: recorded as u32,
        retried,
        stale,
        became_ready,
        finished,
        next_retry_at_ms: parse_next_retry(&next)?,
    })
}

pub(super) async fn renew_leases_on(
    store: &RedisStore,
    batch: &BatchId,
    ops: &[Claimed],
    lease_until_ms: u64,
    worker: &str,
) -> StoreResult<Vec<Claimed>> {
    let mut connection = store.connection();
    // An empty slice still checks that the batch exists.
    let chunks: Vec<&[Claimed]> = if ops.is_empty() {
        vec![ops]
    } else {
        ops.chunks(WRITE_CHUNK).collect()
    };
    let mut stale = Vec::new();
    for chunk in chunks {
        let mut invocation = batch_invocation(&store.shared.scripts.renew_leases, batch, 0);
        invocation.arg(lease_until_ms).arg(worker);
        for claimed in chunk {
            invocation.arg(claimed.index).arg(claimed.attempt);
        }
        let reply: Value = invocation.invoke_async(&mut connection).await?;
        if let Value::Int(-1) = reply {
            return Err(StoreError::BatchNotFound(batch.clone()));
        }
        let values: Vec<i64> = redis::from_redis_value(reply).map_err(corrupt)?;
        stale.extend(claimed_pairs(&values)?);
    }
    Ok(stale)
}

pub(super) async fn expire_leases(
    store: &RedisStore,
    batch: &BatchId,
    now_ms: u64,
    fence: &Fence,
) -> StoreResult<CompleteOutcome> {
    let (failed, retried, _, became_ready, finished, next): (
        i64,
        Vec<u32>,
        Vec<u32>,
        u32,
        String,
        String,
    ) = batch_invocation(&store.shared.scripts.expire_leases, batch, now_ms)
        .arg(random_seed())
        .arg(packed_fence(fence))
        .invoke_async(&mut store.connection())
        .await
        .map_err(|error| fenced_error(batch, error))?;
    if failed < 0 {
        return Err(StoreError::BatchNotFound(batch.clone()));
    }
    Ok(CompleteOutcome {
        recorded: failed as u32,
        retried,
        became_ready,
        finished: store.finished_state(batch, &finished).await?,
        next_retry_at_ms: parse_next_retry(&next)?,
        ..CompleteOutcome::default()
    })
}

pub(super) async fn return_ops(
    store: &RedisStore,
    batch: &BatchId,
    ops: &[Claimed],
    now_ms: u64,
) -> StoreResult<u32> {
    let mut connection = store.connection();
    let chunks: Vec<&[Claimed]> = if ops.is_empty() {
        vec![ops]
    } else {
        ops.chunks(WRITE_CHUNK).collect()
    };
    let mut returned = 0;
    for chunk in chunks {
        let mut invocation = batch_invocation(&store.shared.scripts.return_ops, batch, now_ms);
        for claimed in chunk {
            invocation.arg(claimed.index).arg(claimed.attempt);
        }
        let count: i64 = invocation.invoke_async(&mut connection).await?;
        if count < 0 {
            return Err(StoreError::BatchNotFound(batch.clone()));
        }
        returned += count as u32;
    }
    Ok(returned)
}

pub(super) async fn expire_deadline(
    store: &RedisStore,
    batch: &BatchId,
    now_ms: u64,
    fence: &Fence,
) -> StoreResult<CompleteOutcome> {
    let (cancelled, _, _, _, finished, _): (i64, Vec<u32>, Vec<u32>, u32, String, String) =
        batch_invocation(&store.shared.scripts.expire_deadline, batch, now_ms)
            .arg(packed_fence(fence))
            .invoke_async(&mut store.connection())
            .await
            .map_err(|error| fenced_error(batch, error))?;
    if cancelled < 0 {
        return Err(StoreError::BatchNotFound(batch.clone()));
    }
    Ok(CompleteOutcome {
        recorded: cancelled as u32,
        finished: store.finished_state(batch, &finished).await?,
        ..CompleteOutcome::default()
    })
}

pub(super) async fn op_waits(
    store: &RedisStore,
    batch: &BatchId,
    index: u32,
) -> StoreResult<OpWaits> {
    let (status, pending, missing_keys, lease, retry_at): (i64, u32, Vec<String>, String, String) =
        batch_invocation(&store.shared.scripts.op_waits, batch, 0)
            .arg(index)
            .invoke_async(&mut store.connection())
            .await?;
    if status < 0 {
        return Err(StoreError::BatchNotFound(batch.clone()));
    }
    Ok(OpWaits {
        pending,
        missing_keys,
        lease_until_ms: parse_next_retry(&lease)?,
        retry_at_ms: parse_next_retry(&retry_at)?,
    })
}

pub(super) async fn note_blocked(
    store: &RedisStore,
    batch: &BatchId,
    index: u32,
    message: &str,
    now_ms: u64,
) -> StoreResult<bool> {
    let status: i64 = batch_invocation(&store.shared.scripts.note_blocked, batch, now_ms)
        .arg(index)
        .arg(message)
        .invoke_async(&mut store.connection())
        .await?;
    if status < 0 {
        return Err(StoreError::BatchNotFound(batch.clone()));
    }
    Ok(status == 1)
}

pub(super) async fn expire_waits(
    store: &RedisStore,
    batch: &BatchId,
    now_ms: u64,
    fence: &Fence,
) -> StoreResult<CompleteOutcome> {
    let (failed, _, _, became_ready, finished): (i64, Vec<u32>, Vec<u32>, u32, String) =
        batch_invocation(&store.shared.scripts.expire_waits, batch, now_ms)
            .arg(packed_fence(fence))
            .invoke_async(&mut store.connection())
            .await
            .map_err(|error| fenced_error(batch, error))?;
    if failed < 0 {
        return Err(StoreError::BatchNotFound(batch.clone()));
    }
    Ok(CompleteOutcome {
        recorded: failed as u32,
        became_ready,
        finished: store.finished_state(batch, &finished).await?,
        ..CompleteOutcome::default()
    })
}
