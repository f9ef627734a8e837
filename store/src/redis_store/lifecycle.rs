//! A batch's life as a whole: creation, growth, cancel, loss, outbox, expiry.

use super::*;

pub(super) async fn epoch(store: &RedisStore) -> StoreResult<String> {
    let mut connection = store.connection();
    let candidate = uuid::Uuid::now_v7().to_string();
    let _: Option<String> = redis::cmd("SET")
        .arg(keys::EPOCH)
        .arg(&candidate)
        .arg("NX")
        .query_async(&mut connection)
        .await?;
    let epoch: Option<String> = connection.get(keys::EPOCH).await?;
    epoch.ok_or_else(|| corrupt("epoch vanished right after SET NX"))
}

pub(super) async fn create_batch(store: &RedisStore, batch: NewBatch) -> StoreResult<Created> {
    let mut connection = store.connection();
    let prefix = keys::batch_prefix(&batch.id);
    // Claims the id: a reused id fails here, before anything is written.
    if batch.request_digest.is_empty() {
        let fresh: bool = connection
            .hset_nx(keys::meta(&batch.id), "state", "creating")
            .await?;
        if !fresh {
            return Err(StoreError::BatchExists(batch.id));
        }
    } else {
        // An idempotent submission: the id is the key's mapping, and
        // the claim records the digest and tenant it answers to.
        let claim: String = store
            .shared
            .scripts
            .reserve
            .key(&prefix)
            .arg(keys::DOORBELL_CHANNEL)
            .arg(batch.id.as_str())
            .arg(batch.created_ms)
            .arg(&batch.request_digest)
            .arg(&batch.tenant)
            .arg(crate::CREATING_STALE_MS)
            .invoke_async(&mut connection)
            .await?;
        match claim.as_str() {
            "new" => {}
            "existing" => return Ok(Created::Existing),
            "creating" => return Err(StoreError::StillCreating(batch.id)),
            "conflict" => return Err(StoreError::IdempotencyConflict(batch.id)),
            other => return Err(corrupt(format_args!("reserve.lua answered `{other}`"))),
        }
    }

    // A batch scope is always the batch's own memory.
    let scope = match &batch.memory {
        MemoryScope::Batch(_) => MemoryScope::Batch(batch.id.clone()),
        shared @ MemoryScope::Shared(_) => shared.clone(),
    };
    let triples = wait_triples(0, &batch.ops);
    let mut create = store.shared.scripts.create.key(&prefix);
    create
        .arg(keys::DOORBELL_CHANNEL)
        .arg(batch.id.as_str())
        .arg(batch.created_ms)
        .arg(&batch.name)
        .arg(batch.max_parallel)
        .arg(on_failure_code(batch.on_failure))
        .arg(batch.ops.len() as u64)
        .arg(memory_code(&scope))
        .arg(batch.deadline_ms)
        .arg(u8::from(batch.retry_failed_sequential))
        .arg(batch.retain_ms)
        .arg(&batch.tenant)
        .arg(&batch.submitted_by)
        .arg(batch.lost_worker_retries);

    // A small batch without memory waits (the common case, and every
    // latency-bound one) is written, made visible and announced in one
    // round trip: the pipeline runs in order, so the batch is complete
    // before `create.lua` opens it, and in the active set only after.
    // A non-empty batch never finishes at creation, so the active set
    // and the `Started` bell are right without looking at the reply.
    // Declared writers of the batch's own memory (none judged in a
    // shared namespace): written before the batch opens.
    let declared = match scope {
        MemoryScope::Batch(_) => declared_writers(0, &batch.ops),
        MemoryScope::Shared(_) => declared_writers(0, &[]),
    };
    if !batch.ops.is_empty() && batch.ops.len() <= WRITE_CHUNK && triples.is_empty() {
        let mut pipe = write_ops_pipe(&batch, 0, &batch.ops);
        add_writer_commands(&mut pipe, &batch.id, &declared);
        pipe.set(keys::spec(&batch.id), &batch.spec).ignore();
        // EVALSHA inside a pipeline cannot fall back to loading the
        // script: the first creation loads it first (26 KB sent and
        // hashed, so not on every submit).
        if !store.shared.create_loaded.load(Ordering::Relaxed) {
            pipe.cmd("SCRIPT").arg("LOAD").arg(CREATE_LUA).ignore();
        }
        pipe.invoke_script(&create).ignore();
        pipe.zadd(keys::BATCHES, batch.id.as_str(), batch.created_ms)
            .ignore();
        pipe.sadd(keys::ACTIVE, batch.id.as_str()).ignore();
        pipe.publish(keys::DOORBELL_CHANNEL, keys::started_bell(&batch.id))
            .ignore();
        match pipe.query_async::<()>(&mut connection).await {
            Ok(()) => {
                store.shared.create_loaded.store(true, Ordering::Relaxed);
                return Ok(Created::New);
            }
            // Redis lost its script cache (restarted from its AOF, or
            // SCRIPT FLUSH): the pipeline's writes went through, only
            // `create.lua` did not. Load and run it, then announce the
            // batch again (the active set and the bell are idempotent;
            // the first `Started` rang before the batch opened, which a
            // coordinator's claim rides out: it finds nothing running).
            Err(error)
                if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                store.shared.create_loaded.store(false, Ordering::Relaxed);
                let _: String = create.invoke_async(&mut connection).await?;
                store.shared.create_loaded.store(true, Ordering::Relaxed);
                store.publish_bell(keys::started_bell(&batch.id)).await?;
                return Ok(Created::New);
            }
            Err(error) => return Err(error.into()),
        }
    }

    let _: () = connection.set(keys::spec(&batch.id), &batch.spec).await?;
    // Step 1, pipelined in bounded chunks: static info, state, pending
    // counts (memory waits included), wait deadlines, and the ready
    // queues of ops that wait for nothing. Nothing can claim yet: claim
    // requires meta state `running`.
    for (chunk_number, chunk) in batch.ops.chunks(WRITE_CHUNK).enumerate() {
        let pipe = write_ops_pipe(&batch, (chunk_number * WRITE_CHUNK) as u32, chunk);
        let _: () = pipe.query_async(&mut connection).await?;
    }
    if !declared.by_op.is_empty() {
        let mut pipe = redis::pipe();
        add_writer_commands(&mut pipe, &batch.id, &declared);
        let _: () = pipe.query_async(&mut connection).await?;
    }

    // Step 2: register every memory wait, check-and-register atomically
    // per key (see register_waits.lua / register_shared.lua). The batch
    // is written first, so a write racing this step finds its waiters.
    // (Nothing is judged hopeless yet: no writer has ended.)
    store
        .register_waits(&batch.id, &scope, &triples, batch.created_ms)
        .await?;

    // Step 3: make it visible, append `submitted`, ring.
    let finished: String = create.invoke_async(&mut connection).await?;
    let _: i64 = connection
        .zadd(keys::BATCHES, batch.id.as_str(), batch.created_ms)
        .await?;
    if finished.is_empty() {
        let _: i64 = connection.sadd(keys::ACTIVE, batch.id.as_str()).await?;
        store.publish_bell(keys::started_bell(&batch.id)).await?;
    }
    Ok(Created::New)
}

pub(super) async fn mark_lost(
    store: &RedisStore,
    batches: &[BatchId],
    reason: &str,
    now_ms: u64,
) -> StoreResult<Vec<BatchId>> {
    let mut connection = store.connection();
    let mut marked = Vec::new();
    for batch in batches {
        let fresh: i64 = batch_invocation(&store.shared.scripts.mark_lost, batch, now_ms)
            .arg(reason)
            .invoke_async(&mut connection)
            .await?;
        if fresh == 1 {
            let _: i64 = connection
                .zadd(keys::BATCHES, batch.as_str(), now_ms)
                .await?;
            store.leave_active(batch).await?;
            // Lost is an end: watchers of the batch learn it here.
            store.publish_bell(keys::ended_bell(batch)).await?;
            marked.push(batch.clone());
        }
    }
    Ok(marked)
}

pub(super) async fn cancel(
    store: &RedisStore,
    batch: &BatchId,
    reason: &str,
    now_ms: u64,
) -> StoreResult<CancelOutcome> {
    let (cancelled, running, finished): (i64, Vec<i64>, String) = store
        .shared
        .scripts
        .cancel
        .key(keys::batch_prefix(batch))
        .arg(keys::DOORBELL_CHANNEL)
        .arg(batch.as_str())
        .arg(now_ms)
        .arg(reason)
        .invoke_async(&mut store.connection())
        .await?;
    if cancelled < 0 {
        return Err(StoreError::BatchNotFound(batch.clone()));
    }
    // Idempotent: also repairs a previous call that died before this
    // step (then it is this call that takes the batch out: it rings).
    let removed = store.leave_active(batch).await?;
    if removed || !finished.is_empty() {
        store.publish_bell(keys::ended_bell(batch)).await?;
        store.schedule_expiry(batch).await?;
    }
    Ok(CancelOutcome {
        running: claimed_pairs(&running)?,
        cancelled: cancelled as u32,
    })
}

pub(super) async fn drop_expired(store: &RedisStore, now_ms: u64, max: u32) -> StoreResult<u32> {
    let mut connection = store.connection();
    let due: Vec<String> = redis::cmd("ZRANGEBYSCORE")
        .arg(keys::EXPIRING)
        .arg("-inf")
        .arg(now_ms)
        .arg("LIMIT")
        .arg(0)
        .arg(max)
        .query_async(&mut connection)
        .await?;
    let mut dropped = 0;
    for id in &due {
        let batch = BatchId::new(id.as_str());
        let outcome: i64 = store
            .shared
            .scripts
            .drop_batch
            .key(keys::batch_prefix(&batch))
            .arg(keys::DOORBELL_CHANNEL)
            .arg(batch.as_str())
            .arg(now_ms)
            .invoke_async(&mut connection)
            .await?;
        if outcome == 1 {
            dropped += 1;
        }
    }
    if !due.is_empty() {
        // A running batch (0) cannot be in the set: it was put there
        // when it finished. Either way the entry has done its job.
        let _: () = redis::pipe()
            .zrem(keys::EXPIRING, &due)
            .ignore()
            .zrem(keys::BATCHES, &due)
            .ignore()
            .query_async(&mut connection)
            .await?;
    }
    Ok(dropped)
}

pub(super) async fn prune_batch_index(
    store: &RedisStore,
    from_ms: u64,
    max: u32,
) -> StoreResult<(u32, u64)> {
    let mut connection = store.connection();
    let entries: Vec<(String, u64)> = redis::cmd("ZRANGEBYSCORE")
        .arg(keys::BATCHES)
        .arg(from_ms)
        .arg("+inf")
        .arg("WITHSCORES")
        .arg("LIMIT")
        .arg(0)
        .arg(max)
        .query_async(&mut connection)
        .await?;
    if entries.is_empty() {
        return Ok((0, 0));
    }
    let mut pipe = redis::pipe();
    for (id, _) in &entries {
        pipe.exists(keys::meta(&BatchId::new(id.as_str())));
    }
    let exists: Vec<bool> = pipe.query_async(&mut connection).await?;
    let expired: Vec<&str> = entries
        .iter()
        .zip(&exists)
        .filter(|(_, exists)| !**exists)
        .map(|((id, _), _)| id.as_str())
        .collect();
    let dropped = expired.len() as u32;
    if !expired.is_empty() {
        let _: i64 = connection.zrem(keys::BATCHES, expired).await?;
    }
    // Go on after the last score seen (ties at that ms are seen again).
    let next = if entries.len() < max as usize {
        0
    } else {
        entries.last().map_or(0, |(_, score)| *score)
    };
    Ok((dropped, next))
}

pub(super) async fn drain_outbox(
    store: &RedisStore,
    batch: &BatchId,
    now_ms: u64,
) -> StoreResult<u32> {
    let mut connection = store.connection();
    let (entries, memory): (HashMap<String, String>, Option<String>) = redis::pipe()
        .hgetall(keys::outbox(batch))
        .hget(keys::meta(batch), "memory")
        .query_async(&mut connection)
        .await?;
    if entries.is_empty() {
        return Ok(0);
    }
    let scope = scope_from_code(batch, memory.as_deref().unwrap_or("b"));
    #[derive(serde::Deserialize)]
    struct OutboxEntry {
        k: String,
        a: u32,
        q: u64,
    }
    let mut pending: Vec<(u64, u32, u32, String)> = Vec::with_capacity(entries.len());
    for (index, raw) in &entries {
        let index: u32 = index
            .parse()
            .map_err(|_| corrupt(format_args!("outbox index `{index}`")))?;
        let entry: OutboxEntry = serde_json::from_str(raw).map_err(corrupt)?;
        pending.push((entry.q, index, entry.a, entry.k));
    }
    pending.sort();
    let mut handled = 0;
    for (_, index, attempt, key) in pending {
        let result: Option<String> = connection.hget(keys::result(batch), index).await?;
        let output = match result {
            Some(raw) => {
                let record: serde_json::Value = serde_json::from_str(&raw).map_err(corrupt)?;
                Some(
                    record
                        .get("o")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                )
            }
            None => None,
        };
        let output = match output {
            Some(output) => output,
            None => {
                tracing::warn!(%batch, index, "outboxed store_as without a result: dropped");
                let _: i64 = connection.hdel(keys::outbox(batch), index).await?;
                continue;
            }
        };
        if matches!(scope, MemoryScope::Shared(_)) {
            store
                .write_outboxed(
                    batch,
                    &scope,
                    index,
                    attempt,
                    &key,
                    output.as_bytes(),
                    now_ms,
                )
                .await?;
        } else {
            let _: i64 = connection.hdel(keys::outbox(batch), index).await?;
        }
        handled += 1;
    }
    if handled > 0 {
        tracing::info!(%batch, handled, "drained the outbox of shared store_as writes");
        // The completion that left these may also have finished the
        // batch and died before announcing it (`complete` writes, then
        // announces): do what it would have done. Idempotent.
        let state: Option<String> = connection.hget(keys::meta(batch), "state").await?;
        if let Some(state) = state.filter(|state| state != "running" && state != "creating") {
            let active: bool = connection.sismember(keys::ACTIVE, batch.as_str()).await?;
            if active {
                store.finished_state(batch, &state).await?;
            }
        }
    }
    Ok(handled)
}

pub(super) async fn outboxes_pending(
    store: &RedisStore,
    batches: &[BatchId],
) -> StoreResult<Vec<BatchId>> {
    if batches.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for batch in batches {
        pipe.hlen(keys::outbox(batch));
    }
    let lengths: Vec<u64> = pipe.query_async(&mut store.connection()).await?;
    Ok(batches
        .iter()
        .zip(lengths)
        .filter(|(_, length)| *length > 0)
        .map(|(batch, _)| batch.clone())
        .collect())
}

#[allow(clippy::too_many_arguments)] // the verb's own arguments (see Store::add_ops)
pub(super) async fn add_ops(
    store: &RedisStore,
    batch: &BatchId,
    first_index: u32,
    ops: Vec<NewOp>,
    spec: Vec<u8>,
    note: &str,
    now_ms: u64,
    once: Option<&SpawnOnce>,
) -> StoreResult<CompleteOutcome> {
    let edges = added_edges(batch, first_index, &ops)?;
    let mut invocation = store.shared.scripts.add_ops.key(keys::batch_prefix(batch));
    invocation
        .arg(keys::DOORBELL_CHANNEL)
        .arg(batch.as_str())
        .arg(now_ms)
        .arg(first_index)
        .arg(ops.len())
        .arg(spec);
    for (offset, op) in ops.iter().enumerate() {
        let existing: Vec<String> = edges.existing_after[offset]
            .iter()
            .map(u32::to_string)
            .collect();
        let wait_info = wait_info_json(op, now_ms);
        invocation
            .arg(packed_info(op, &edges.new_dependents[offset]))
            .arg(pending_count(op))
            .arg(existing.join(","))
            .arg(if wait_info.is_some() {
                op.wait_deadline_ms
            } else {
                0
            })
            .arg(wait_info.unwrap_or_default());
    }
    invocation.arg(note);
    let declared = declared_writers(first_index, &ops);
    if declared.by_op.is_empty() {
        invocation.arg("");
    } else {
        invocation.arg(serde_json::to_string(&declared.by_op).map_err(corrupt)?);
    }
    match once {
        Some(once) => invocation.arg(&once.key).arg(&once.record),
        None => invocation.arg("").arg(""),
    };
    let (status, reason, mut became_ready, mut finished, memory): (
        i64,
        String,
        u32,
        String,
        String,
    ) = invocation.invoke_async(&mut store.connection()).await?;
    match status {
        -1 => return Err(StoreError::BatchNotFound(batch.clone())),
        -2 => {
            let state = BatchState::from_code(&reason)
                .ok_or_else(|| corrupt(format_args!("batch {batch} has state `{reason}`")))?;
            return Err(StoreError::CannotAddOps {
                batch: batch.clone(),
                reason: AddOpsRefusal::NotRunning(state),
            });
        }
        -4 => {
            return Err(StoreError::CannotAddOps {
                batch: batch.clone(),
                reason: AddOpsRefusal::FailFastFired,
            });
        }
        -5 => {
            let total = reason
                .parse()
                .map_err(|_| corrupt(format_args!("batch {batch} has `{reason}` ops")))?;
            return Err(StoreError::CannotAddOps {
                batch: batch.clone(),
                reason: AddOpsRefusal::FirstIndexTaken { first_index, total },
            });
        }
        -3 => {
            return Err(StoreError::AlreadySpawned {
                batch: batch.clone(),
                record: reason,
            });
        }
        _ => {}
    }
    let scope = scope_from_code(batch, &memory);
    let triples = wait_triples(first_index, &ops);
    let (ready, ended) = store
        .register_waits(batch, &scope, &triples, now_ms)
        .await?;
    became_ready += ready;
    if finished.is_empty() {
        finished = ended;
    }
    Ok(CompleteOutcome {
        became_ready,
        finished: store.finished_state(batch, &finished).await?,
        ..CompleteOutcome::default()
    })
}

pub(super) async fn spawn_record(
    store: &RedisStore,
    batch: &BatchId,
    key: &str,
) -> StoreResult<Option<String>> {
    Ok(store
        .connection()
        .hget(keys::spawn_keys(batch), key)
        .await?)
}
