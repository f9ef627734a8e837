//! Reading a batch: its meta, op records, events, and the batch list.

use super::*;

/// One chunk of op records as three `HMGET`s read it: states, attempts,
/// result JSON.
type RecordColumns = (Vec<Option<String>>, Vec<Option<u32>>, Vec<Option<String>>);

pub(super) async fn batch_spec(
    store: &RedisStore,
    batch: &BatchId,
) -> StoreResult<Option<StoredSpec>> {
    let (base, added): (Option<Vec<u8>>, Vec<Vec<u8>>) = redis::pipe()
        .get(keys::spec(batch))
        .lrange(keys::spec_added(batch), 0, -1)
        .query_async(&mut store.connection())
        .await?;
    Ok(base.map(|base| StoredSpec { base, added }))
}

pub(super) async fn active_batches(store: &RedisStore) -> StoreResult<Vec<BatchId>> {
    let mut connection = store.connection();
    let ids: Vec<String> = connection.smembers(keys::ACTIVE).await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.hget(keys::meta(&BatchId::new(id.as_str())), "created_ms");
    }
    let created: Vec<Option<u64>> = pipe.query_async(&mut connection).await?;
    let mut active: Vec<(u64, String)> = ids
        .into_iter()
        .zip(created)
        .map(|(id, created_ms)| (created_ms.unwrap_or(0), id))
        .collect();
    active.sort();
    Ok(active.into_iter().map(|(_, id)| BatchId::new(id)).collect())
}

pub(super) async fn meta(store: &RedisStore, batch: &BatchId) -> StoreResult<Option<BatchMeta>> {
    store.read_meta(batch).await
}

pub(super) async fn op_records(store: &RedisStore, batch: &BatchId) -> StoreResult<Vec<OpRecord>> {
    let meta = store
        .read_meta(batch)
        .await?
        .ok_or_else(|| StoreError::BatchNotFound(batch.clone()))?;
    let indices: Vec<u32> = (0..meta.total).collect();
    store.op_records_at(batch, &indices).await
}

/// Ops per `op_summaries.lua` call: a slice decodes its results in a few
/// milliseconds, so a 100,000-op batch never blocks the server for long.
const SUMMARY_CHUNK: u32 = 5_000;

pub(super) async fn op_summaries(
    store: &RedisStore,
    batch: &BatchId,
    range: std::ops::Range<u32>,
) -> StoreResult<Vec<OpSummary>> {
    let mut connection = store.connection();
    let mut summaries = Vec::new();
    let mut start = range.start;
    loop {
        let end = range.end.min(start.saturating_add(SUMMARY_CHUNK));
        let (total, packed): (i64, Vec<u8>) =
            batch_invocation(&store.shared.scripts.op_summaries, batch, 0)
                .arg(start)
                .arg(end.max(start))
                // 4 bytes more than kept: a character cut by the script is
                // past the bound, so the cut here drops it whole.
                .arg(SUMMARY_ERROR_MAX_BYTES + 4)
                .invoke_async(&mut connection)
                .await?;
        if total < 0 {
            return Err(StoreError::BatchNotFound(batch.clone()));
        }
        let mut rest: &[u8] = &packed;
        let mut index = u64::from(start);
        while !rest.is_empty() {
            let (summary, after) = parse_summary(batch, index, rest)?;
            summaries.push(summary);
            rest = after;
            index += 1;
        }
        start = end;
        if start >= range.end || u64::from(start) >= total as u64 {
            break;
        }
    }
    Ok(summaries)
}

/// One op of an `op_summaries.lua` reply (state, attempts, worker,
/// started, duration, cause JSON, error length, error, separated by
/// `\x1f`), and what follows it.
fn parse_summary<'a>(
    batch: &BatchId,
    index: u64,
    packed: &'a [u8],
) -> StoreResult<(OpSummary, &'a [u8])> {
    const SEPARATOR: u8 = 0x1f;
    let malformed = || corrupt(format_args!("op {index}: malformed summary"));
    let mut fields: [&[u8]; 7] = [&[]; 7];
    let mut rest = packed;
    for field in &mut fields {
        let end = rest
            .iter()
            .position(|byte| *byte == SEPARATOR)
            .ok_or_else(malformed)?;
        *field = &rest[..end];
        rest = &rest[end + 1..];
    }
    let [
        code,
        attempts,
        worker,
        started,
        duration,
        cause_json,
        error_length,
    ] = fields;
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let error_length: usize = text(error_length).parse().map_err(|_| malformed())?;
    let error = rest.get(..error_length).ok_or_else(malformed)?;
    let rest = &rest[error_length..];
    // No state: the batch went (or is still being created), as
    // `op_records_at` answers it.
    if code.is_empty() {
        return Err(StoreError::BatchNotFound(batch.clone()));
    }
    let code = text(code);
    let state = OpState::from_code(&code)
        .ok_or_else(|| corrupt(format_args!("op {index} has state `{code}`")))?;
    let summary = OpSummary {
        state,
        attempts: text(attempts).parse().unwrap_or(0),
        worker: text(worker),
        started_ms: parse_ms(&text(started)),
        duration_ms: parse_ms(&text(duration)),
        error_first_line: summary_error_line(&String::from_utf8_lossy(error)),
        cause: if cause_json.is_empty() {
            None
        } else {
            CauseJson::parse(&String::from_utf8_lossy(cause_json))
        },
    };
    Ok((summary, rest))
}

pub(super) async fn op_records_at(
    store: &RedisStore,
    batch: &BatchId,
    indices: &[u32],
) -> StoreResult<Vec<OpRecord>> {
    let mut connection = store.connection();
    let mut records = Vec::with_capacity(indices.len());
    for chunk in indices.chunks(READ_CHUNK) {
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET").arg(keys::state(batch)).arg(chunk);
        pipe.cmd("HMGET").arg(keys::attempts(batch)).arg(chunk);
        pipe.cmd("HMGET").arg(keys::result(batch)).arg(chunk);
        let (states, attempts, results): RecordColumns = pipe.query_async(&mut connection).await?;
        for (offset, index) in chunk.iter().enumerate() {
            let Some(code) = states.get(offset).cloned().flatten() else {
                return Err(StoreError::BatchNotFound(batch.clone()));
            };
            let state = OpState::from_code(&code)
                .ok_or_else(|| corrupt(format_args!("op {index} has state `{code}`")))?;
            let result: ResultJson = match results.get(offset).cloned().flatten() {
                Some(json) => serde_json::from_str(&json)
                    .map_err(|error| corrupt(format_args!("op {index} result: {error}")))?,
                None => ResultJson::default(),
            };
            records.push(OpRecord {
                state,
                attempts: attempts.get(offset).copied().flatten().unwrap_or(0),
                worker: result.w,
                started_ms: parse_ms(&result.s),
                duration_ms: parse_ms(&result.d),
                output: result.o,
                error: result.e,
                cause: result.c.and_then(CauseJson::from_value),
                details_json: result.j,
            });
        }
    }
    Ok(records)
}

pub(super) async fn events(
    store: &RedisStore,
    batch: &BatchId,
    after_seq: u64,
    max: u32,
) -> StoreResult<Vec<Event>> {
    if max == 0 {
        return Ok(Vec::new());
    }
    let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(keys::events(batch))
        .arg(format!("(0-{after_seq}"))
        .arg("+")
        .arg("COUNT")
        .arg(max)
        .query_async(&mut store.connection())
        .await?;
    entries
        .iter()
        .map(|(id, fields)| parse_event(id, fields))
        .collect()
}

/// One read: the stream's newest entry (ids are `0-<seq>`).
pub(super) async fn last_event_seq(store: &RedisStore, batch: &BatchId) -> StoreResult<u64> {
    let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XREVRANGE")
        .arg(keys::events(batch))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut store.connection())
        .await?;
    match entries.first() {
        Some((id, fields)) => Ok(parse_event(id, fields)?.seq),
        None => Ok(0),
    }
}

pub(super) async fn list_batches(
    store: &RedisStore,
    limit: u32,
    tenant: Option<&str>,
) -> StoreResult<Vec<BatchMeta>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut connection = store.connection();
    let mut out = Vec::with_capacity(limit as usize);
    // Newest first, a page at a time: a tenant's batches may be spread
    // thin among everyone's, so the scan goes on until `limit` of
    // theirs are found (at most LIST_SCAN_MAX ids in all).
    let page = (limit as isize).max(100);
    let mut start: isize = 0;
    while out.len() < limit as usize && start < LIST_SCAN_MAX {
        let ids: Vec<String> = connection
            .zrevrange(keys::BATCHES, start, start + page - 1)
            .await?;
        if ids.is_empty() {
            break;
        }
        start += ids.len() as isize;
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(keys::meta(&BatchId::new(id.as_str())));
        }
        let metas: Vec<HashMap<String, String>> = pipe.query_async(&mut connection).await?;
        for (id, fields) in ids.into_iter().zip(metas) {
            if let Some(meta) = parse_meta(&BatchId::new(id), &fields)?
                && tenant.is_none_or(|tenant| meta.tenant == tenant)
                && out.len() < limit as usize
            {
                out.push(meta);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod summary_bench {
    use super::*;

    /// The other way to read summaries, kept to measure against
    /// `op_summaries.lua` (see `summaries_lua_vs_pipelined` below): pipelined
    /// `HMGET`s of states, attempts and whole results, parsed here skipping
    /// the output. It moves every output over the wire.
    async fn op_summaries_pipelined(
        store: &RedisStore,
        batch: &BatchId,
        range: std::ops::Range<u32>,
    ) -> StoreResult<Vec<OpSummary>> {
        #[derive(serde::Deserialize)]
        struct Light {
            #[serde(default)]
            w: String,
            #[serde(default)]
            s: String,
            #[serde(default)]
            d: String,
            #[serde(default)]
            e: String,
            #[serde(default)]
            c: Option<serde_json::Value>,
        }
        let meta = store
            .read_meta(batch)
            .await?
            .ok_or_else(|| StoreError::BatchNotFound(batch.clone()))?;
        let indices: Vec<u32> = (range.start.min(meta.total)..range.end.min(meta.total)).collect();
        let mut connection = store.connection();
        let mut summaries = Vec::with_capacity(indices.len());
        for chunk in indices.chunks(READ_CHUNK) {
            let mut pipe = redis::pipe();
            pipe.cmd("HMGET").arg(keys::state(batch)).arg(chunk);
            pipe.cmd("HMGET").arg(keys::attempts(batch)).arg(chunk);
            pipe.cmd("HMGET").arg(keys::result(batch)).arg(chunk);
            let (states, attempts, results): RecordColumns =
                pipe.query_async(&mut connection).await?;
            for (offset, index) in chunk.iter().enumerate() {
                let Some(code) = states.get(offset).cloned().flatten() else {
                    return Err(StoreError::BatchNotFound(batch.clone()));
                };
                let state = OpState::from_code(&code)
                    .ok_or_else(|| corrupt(format_args!("op {index} has state `{code}`")))?;
                let light: Light = match results.get(offset).and_then(Option::as_deref) {
                    Some(json) => serde_json::from_str(json)
                        .map_err(|error| corrupt(format_args!("op {index} result: {error}")))?,
                    None => Light {
                        w: String::new(),
                        s: String::new(),
                        d: String::new(),
                        e: String::new(),
                        c: None,
                    },
                };
                summaries.push(OpSummary {
                    state,
                    attempts: attempts.get(offset).copied().flatten().unwrap_or(0),
                    worker: light.w,
                    started_ms: parse_ms(&light.s),
                    duration_ms: parse_ms(&light.d),
                    error_first_line: summary_error_line(&light.e),
                    cause: light.c.and_then(CauseJson::from_value),
                });
            }
        }
        Ok(summaries)
    }

    /// Times both ways on a batch already in a Redis:
    /// `VOLLEY_BENCH_REDIS=redis://… VOLLEY_BENCH_BATCH=<id> cargo nextest
    /// run -p volley-store --run-ignored only summaries_lua_vs_pipelined
    /// --no-capture`.
    #[tokio::test]
    #[ignore = "needs a Redis holding a large batch (VOLLEY_BENCH_REDIS, VOLLEY_BENCH_BATCH)"]
    async fn summaries_lua_vs_pipelined() {
        let url = std::env::var("VOLLEY_BENCH_REDIS").expect("VOLLEY_BENCH_REDIS");
        let batch = BatchId::new(std::env::var("VOLLEY_BENCH_BATCH").expect("VOLLEY_BENCH_BATCH"));
        let store = RedisStore::connect(&url).await.expect("connect");
        for _ in 0..3 {
            let started = std::time::Instant::now();
            let lua = op_summaries(&store, &batch, 0..u32::MAX)
                .await
                .expect("lua");
            let lua_time = started.elapsed();
            let started = std::time::Instant::now();
            let piped = op_summaries_pipelined(&store, &batch, 0..u32::MAX)
                .await
                .expect("pipelined");
            let piped_time = started.elapsed();
            assert_eq!(lua, piped);
            eprintln!(
                "ops={} lua={lua_time:?} pipelined={piped_time:?}",
                lua.len()
            );
        }
    }
}
