//! The Redis implementation of [`Store`]: state in the batch's keys, every verb one Lua script.
//!
//! Hot path: `claim` is one script call, `complete` one script call for a
//! whole slice of results. Only `create_batch` (pipelined in bounded steps),
//! `cancel`/fail_fast (one scan of the state hash) and the read verbs
//! (`op_records`, chunked) are proportional to a batch's size.
//!
//! Doorbells: scripts `PUBLISH` the batch id on [`keys::DOORBELL_CHANNEL`]; a
//! background task holds its own pub/sub connection and forwards them into a
//! broadcast channel, resubscribing with backoff after a disconnect and then
//! sending [`Doorbell::Resync`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::{AsyncCommands, Script, Value};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use volley_proto::BatchId;

use crate::keys;
use crate::memory_store::DOORBELL_CAPACITY;
use crate::model::*;
use crate::{Store, StoreError, StoreResult};

/// Fields (ops, or op/key pairs) per command while writing a batch: bounds
/// the size of any single command so a million-op batch is many modest
/// commands, never one giant one.
const WRITE_CHUNK: usize = 10_000;
/// Indices per `HMGET` when reading op records back.
const READ_CHUNK: usize = 10_000;
/// Large batches make big pipelines and fail_fast/cancel scans: the client's
/// default 500 ms response timeout is too short for them.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
const RESUBSCRIBE_MIN_BACKOFF: Duration = Duration::from_millis(100);
const RESUBSCRIBE_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Each script is `lua/common.lua` followed by the verb's file.
macro_rules! lua_script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("../lua/common.lua"),
            include_str!(concat!("../lua/", $file))
        ))
    };
}

struct Scripts {
    create: Script,
    register_waits: Script,
    claim: Script,
    complete: Script,
    cancel: Script,
    put_memory: Script,
}

impl Scripts {
    fn load() -> Scripts {
        Scripts {
            create: lua_script!("create.lua"),
            register_waits: lua_script!("register_waits.lua"),
            claim: lua_script!("claim.lua"),
            complete: lua_script!("complete.lua"),
            cancel: lua_script!("cancel.lua"),
            put_memory: lua_script!("put_memory.lua"),
        }
    }
}

/// A [`Store`] on Redis. Cheap to clone: clones share one multiplexed
/// connection and one doorbell listener, which stops when the last clone is
/// dropped or the shutdown token is cancelled.
#[derive(Clone)]
pub struct RedisStore {
    shared: Arc<Shared>,
}

struct Shared {
    connection: ConnectionManager,
    scripts: Scripts,
    doorbell: broadcast::Sender<Doorbell>,
    listener_shutdown: CancellationToken,
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.listener_shutdown.cancel();
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port[/db]`) and starts the doorbell
    /// listener; returns once the doorbell subscription is live, so no bell
    /// rung after this returns is missed.
    pub async fn connect(url: &str) -> StoreResult<RedisStore> {
        Self::connect_with_shutdown(url, CancellationToken::new()).await
    }

    /// Like [`RedisStore::connect`]; the doorbell listener also stops when
    /// `shutdown` is cancelled (it runs on a child token).
    pub async fn connect_with_shutdown(
        url: &str,
        shutdown: CancellationToken,
    ) -> StoreResult<RedisStore> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECTION_TIMEOUT));
        let connection = client.get_connection_manager_with_config(config).await?;
        let pubsub = subscribe(&client).await?;
        let (doorbell, _) = broadcast::channel(DOORBELL_CAPACITY);
        let listener_shutdown = shutdown.child_token();
        let listener = tokio::spawn(listen_doorbells(
            client,
            pubsub,
            doorbell.clone(),
            listener_shutdown.clone(),
        ));
        Ok(RedisStore {
            shared: Arc::new(Shared {
                connection,
                scripts: Scripts::load(),
                doorbell,
                listener_shutdown,
                listener: Mutex::new(Some(listener)),
            }),
        })
    }

    /// Stops the doorbell listener and waits for it to end.
    pub async fn shutdown(&self) {
        self.shared.listener_shutdown.cancel();
        let listener = self
            .shared
            .listener
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(listener) = listener {
            let _ = listener.await;
        }
    }

    fn connection(&self) -> ConnectionManager {
        self.shared.connection.clone()
    }

    async fn leave_active(&self, batch: &BatchId) -> StoreResult<()> {
        let _: i64 = self.connection().srem(keys::ACTIVE, batch.as_str()).await?;
        Ok(())
    }

    async fn read_meta(&self, batch: &BatchId) -> StoreResult<Option<BatchMeta>> {
        let fields: HashMap<String, String> = self.connection().hgetall(keys::meta(batch)).await?;
        parse_meta(batch, &fields)
    }
}

async fn subscribe(client: &redis::Client) -> redis::RedisResult<PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(keys::DOORBELL_CHANNEL).await?;
    Ok(pubsub)
}

/// Forwards published batch ids into the broadcast channel until shutdown;
/// after losing the subscription, resubscribes with doubling backoff and
/// sends `Resync`, since bells may have been missed meanwhile.
async fn listen_doorbells(
    client: redis::Client,
    first: PubSub,
    sender: broadcast::Sender<Doorbell>,
    shutdown: CancellationToken,
) {
    let mut live = Some(first);
    let mut backoff = RESUBSCRIBE_MIN_BACKOFF;
    loop {
        let pubsub = match live.take() {
            Some(pubsub) => pubsub,
            None => {
                let attempt = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    attempt = subscribe(&client) => attempt,
                };
                match attempt {
                    Ok(pubsub) => {
                        backoff = RESUBSCRIBE_MIN_BACKOFF;
                        tracing::info!("doorbell subscription restored");
                        let _ = sender.send(Doorbell::Resync);
                        pubsub
                    }
                    Err(error) => {
                        tracing::warn!(%error, ?backoff, "doorbell resubscribe failed");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(RESUBSCRIBE_MAX_BACKOFF);
                        continue;
                    }
                }
            }
        };
        let mut messages = pubsub.into_on_message();
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => return,
                message = messages.next() => message,
            };
            let Some(message) = message else {
                tracing::warn!("doorbell subscription lost");
                break;
            };
            let batch = String::from_utf8_lossy(message.get_payload_bytes()).into_owned();
            // No receiver is fine: the bell is only a hint.
            let _ = sender.send(Doorbell::Batch(BatchId::new(batch)));
        }
    }
}

fn on_failure_code(on_failure: OnFailure) -> &'static str {
    match on_failure {
        OnFailure::Continue => "continue",
        OnFailure::FailFast => "fail_fast",
    }
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn number<T: std::str::FromStr + Default>(
    fields: &HashMap<String, String>,
    name: &str,
) -> StoreResult<T> {
    match fields.get(name).map(String::as_str) {
        None | Some("") => Ok(T::default()),
        Some(text) => text
            .parse()
            .map_err(|_| corrupt(format_args!("meta field `{name}` is `{text}`"))),
    }
}

/// `None` for a missing batch or one still being written (`creating`).
fn parse_meta(batch: &BatchId, fields: &HashMap<String, String>) -> StoreResult<Option<BatchMeta>> {
    let Some(state) = fields.get("state") else {
        return Ok(None);
    };
    if state == "creating" {
        return Ok(None);
    }
    let state = BatchState::from_code(state)
        .ok_or_else(|| corrupt(format_args!("batch {batch} has state `{state}`")))?;
    let finished_ms = match fields.get("finished_ms") {
        Some(text) if !text.is_empty() => Some(number(fields, "finished_ms")?),
        _ => None,
    };
    Ok(Some(BatchMeta {
        id: batch.clone(),
        name: fields.get("name").cloned().unwrap_or_default(),
        state,
        created_ms: number(fields, "created_ms")?,
        finished_ms,
        max_parallel: number(fields, "max_parallel")?,
        on_failure: match fields.get("on_failure").map(String::as_str) {
            Some("fail_fast") => OnFailure::FailFast,
            _ => OnFailure::Continue,
        },
        total: number(fields, "total")?,
        succeeded: number(fields, "succeeded")?,
        failed: number(fields, "failed")?,
        skipped: number(fields, "skipped")?,
        cancelled: number(fields, "cancelled")?,
        running: number(fields, "running")?,
        error: fields.get("error").cloned().unwrap_or_default(),
    }))
}

/// The JSON kept per final op in the `result` hash (written by the scripts
/// with cjson; times are strings so no precision is lost in Lua's doubles).
#[derive(serde::Deserialize, Default)]
struct ResultJson {
    #[serde(default)]
    w: String,
    #[serde(default)]
    s: String,
    #[serde(default)]
    d: String,
    #[serde(default)]
    o: String,
    #[serde(default)]
    e: String,
    #[serde(default)]
    j: String,
}

fn parse_ms(text: &str) -> u64 {
    text.parse().unwrap_or(0)
}

fn parse_event(id: &str, fields: &HashMap<String, String>) -> StoreResult<Event> {
    let seq = id
        .split_once('-')
        .and_then(|(_, seq)| seq.parse().ok())
        .ok_or_else(|| corrupt(format_args!("event id `{id}`")))?;
    let field = |name: &str| fields.get(name).cloned().unwrap_or_default();
    let kind_code = field("k");
    let kind = EventKind::from_code(&kind_code)
        .ok_or_else(|| corrupt(format_args!("event kind `{kind_code}`")))?;
    let op_index = match fields.get("i").map(String::as_str) {
        None | Some("") => None,
        Some(text) => Some(
            text.parse()
                .map_err(|_| corrupt(format_args!("event op index `{text}`")))?,
        ),
    };
    let batch_state = match fields.get("b").map(String::as_str) {
        None | Some("") => None,
        Some(code) => Some(
            BatchState::from_code(code)
                .ok_or_else(|| corrupt(format_args!("event batch state `{code}`")))?,
        ),
    };
    Ok(Event {
        seq,
        at_ms: parse_ms(&field("t")),
        kind,
        op_index,
        attempt: field("a").parse().unwrap_or(0),
        worker: field("w"),
        message: field("m"),
        batch_state,
    })
}

/// Reads a flat `[index, attempt, …]` array.
fn claimed_pairs(values: &[i64]) -> StoreResult<Vec<Claimed>> {
    if !values.len().is_multiple_of(2) {
        return Err(corrupt("odd index/attempt list from a script"));
    }
    Ok(values
        .chunks_exact(2)
        .map(|pair| Claimed {
            index: pair[0] as u32,
            attempt: pair[1] as u32,
        })
        .collect())
}

fn packed_info(op: &NewOp) -> String {
    let dependents: Vec<String> = op.dependents.iter().map(u32::to_string).collect();
    format!(
        "{}|{}|{}|{}",
        op.priority.min(PRIORITY_LEVELS - 1),
        u8::from(op.run_if_always),
        op.max_attempts.max(1),
        dependents.join(",")
    )
}

#[async_trait]
impl Store for RedisStore {
    #[tracing::instrument(skip_all)]
    async fn epoch(&self) -> StoreResult<String> {
        let mut connection = self.connection();
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

    #[tracing::instrument(skip_all, fields(batch = %batch.id, ops = batch.ops.len()))]
    async fn create_batch(&self, batch: NewBatch) -> StoreResult<()> {
        let mut connection = self.connection();
        let prefix = keys::batch_prefix(&batch.id);
        // Claims the id: a reused id fails here, before anything is written.
        let fresh: bool = connection
            .hset_nx(keys::meta(&batch.id), "state", "creating")
            .await?;
        if !fresh {
            return Err(StoreError::BatchExists(batch.id));
        }
        let _: () = connection.set(keys::spec(&batch.id), &batch.spec).await?;

        // Step 1, pipelined in bounded chunks: static info, state, pending
        // counts, and the ready queues of ops that wait for nothing. Nothing
        // can claim yet: claim requires meta state `running`.
        let mut wait_pairs: Vec<(u32, &str)> = Vec::new();
        for (chunk_number, chunk) in batch.ops.chunks(WRITE_CHUNK).enumerate() {
            let first = (chunk_number * WRITE_CHUNK) as u32;
            let mut info = redis::cmd("HSET");
            info.arg(keys::info(&batch.id));
            let mut state = redis::cmd("HSET");
            state.arg(keys::state(&batch.id));
            let mut pending = redis::cmd("HSET");
            pending.arg(keys::pending(&batch.id));
            let mut any_pending = false;
            let mut ready: [Vec<u32>; PRIORITY_LEVELS as usize] = Default::default();
            for (offset, op) in chunk.iter().enumerate() {
                let index = first + offset as u32;
                let mut keys_waited: Vec<&str> = op.wait_for.iter().map(String::as_str).collect();
                keys_waited.sort_unstable();
                keys_waited.dedup();
                let count = op.deps + keys_waited.len() as u32;
                info.arg(index).arg(packed_info(op));
                if count == 0 {
                    state.arg(index).arg(OpState::Ready.code());
                    ready[usize::from(op.priority.min(PRIORITY_LEVELS - 1))].push(index);
                } else {
                    state.arg(index).arg(OpState::Waiting.code());
                    pending.arg(index).arg(count);
                    any_pending = true;
                }
                wait_pairs.extend(keys_waited.into_iter().map(|key| (index, key)));
            }
            let mut pipe = redis::pipe();
            pipe.add_command(info).ignore();
            pipe.add_command(state).ignore();
            if any_pending {
                pipe.add_command(pending).ignore();
            }
            for (priority, indices) in ready.iter().enumerate() {
                if !indices.is_empty() {
                    pipe.cmd("RPUSH")
                        .arg(keys::ready(&batch.id, priority as u8))
                        .arg(indices)
                        .ignore();
                }
            }
            let _: () = pipe.query_async(&mut connection).await?;
        }

        // Step 2: check-and-register every wait_for key atomically per pair
        // (see register_waits.lua), in bounded script calls.
        for pairs in wait_pairs.chunks(WRITE_CHUNK) {
            let mut invocation = self.shared.scripts.register_waits.key(&prefix);
            invocation
                .arg(keys::DOORBELL_CHANNEL)
                .arg(batch.id.as_str())
                .arg(batch.created_ms);
            for (index, key) in pairs {
                invocation.arg(*index).arg(*key);
            }
            let _: i64 = invocation.invoke_async(&mut connection).await?;
        }

        // Step 3: make it visible, append `submitted`, ring.
        let finished: String = self
            .shared
            .scripts
            .create
            .key(&prefix)
            .arg(keys::DOORBELL_CHANNEL)
            .arg(batch.id.as_str())
            .arg(batch.created_ms)
            .arg(&batch.name)
            .arg(batch.max_parallel)
            .arg(on_failure_code(batch.on_failure))
            .arg(batch.ops.len() as u64)
            .invoke_async(&mut connection)
            .await?;
        let _: i64 = connection
            .zadd(keys::BATCHES, batch.id.as_str(), batch.created_ms)
            .await?;
        if finished.is_empty() {
            let _: i64 = connection.sadd(keys::ACTIVE, batch.id.as_str()).await?;
        }
        Ok(())
    }

    async fn batch_spec(&self, batch: &BatchId) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.connection().get(keys::spec(batch)).await?)
    }

    async fn active_batches(&self) -> StoreResult<Vec<BatchId>> {
        let mut connection = self.connection();
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

    #[tracing::instrument(skip_all, fields(batch = %batch))]
    async fn claim(&self, batch: &BatchId, max: u32, now_ms: u64) -> StoreResult<Vec<Claimed>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let reply: Value = self
            .shared
            .scripts
            .claim
            .key(keys::batch_prefix(batch))
            .arg(keys::DOORBELL_CHANNEL)
            .arg(batch.as_str())
            .arg(now_ms)
            .arg(max)
            .invoke_async(&mut self.connection())
            .await?;
        if let Value::Int(-1) = reply {
            return Err(StoreError::BatchNotFound(batch.clone()));
        }
        let values: Vec<i64> = redis::from_redis_value(reply).map_err(corrupt)?;
        claimed_pairs(&values)
    }

    #[tracing::instrument(skip_all, fields(batch = %batch, results = completions.len()))]
    async fn complete(
        &self,
        batch: &BatchId,
        completions: &[Completion],
        now_ms: u64,
    ) -> StoreResult<CompleteOutcome> {
        let mut invocation = self.shared.scripts.complete.key(keys::batch_prefix(batch));
        invocation
            .arg(keys::DOORBELL_CHANNEL)
            .arg(batch.as_str())
            .arg(now_ms)
            .arg(completions.len());
        for completion in completions {
            invocation
                .arg(completion.index)
                .arg(completion.attempt)
                .arg(match (completion.ok, completion.permanent) {
                    (true, _) => 1u8,
                    (false, false) => 0,
                    (false, true) => 2,
                })
                .arg(&completion.output)
                .arg(&completion.error)
                .arg(&completion.details_json)
                .arg(&completion.worker)
                .arg(completion.started_ms)
                .arg(completion.duration_ms)
                .arg(u8::from(completion.store_as.is_some()))
                .arg(completion.store_as.as_deref().unwrap_or(""));
        }
        let (recorded, retried, stale, became_ready, finished): (
            i64,
            Vec<u32>,
            Vec<u32>,
            u32,
            String,
        ) = invocation.invoke_async(&mut self.connection()).await?;
        if recorded < 0 {
            return Err(StoreError::BatchNotFound(batch.clone()));
        }
        let finished = if finished.is_empty() {
            None
        } else {
            let state = BatchState::from_code(&finished)
                .ok_or_else(|| corrupt(format_args!("finished state `{finished}`")))?;
            self.leave_active(batch).await?;
            Some(state)
        };
        Ok(CompleteOutcome {
            recorded: recorded as u32,
            retried,
            stale,
            became_ready,
            finished,
        })
    }

    #[tracing::instrument(skip_all, fields(batch = %batch))]
    async fn cancel(
        &self,
        batch: &BatchId,
        reason: &str,
        now_ms: u64,
    ) -> StoreResult<CancelOutcome> {
        let (cancelled, running): (i64, Vec<i64>) = self
            .shared
            .scripts
            .cancel
            .key(keys::batch_prefix(batch))
            .arg(keys::DOORBELL_CHANNEL)
            .arg(batch.as_str())
            .arg(now_ms)
            .arg(reason)
            .invoke_async(&mut self.connection())
            .await?;
        if cancelled < 0 {
            return Err(StoreError::BatchNotFound(batch.clone()));
        }
        // Idempotent: also repairs a previous call that died before this step.
        self.leave_active(batch).await?;
        Ok(CancelOutcome {
            running: claimed_pairs(&running)?,
            cancelled: cancelled as u32,
        })
    }

    #[tracing::instrument(skip_all, fields(batch = %batch))]
    async fn meta(&self, batch: &BatchId) -> StoreResult<Option<BatchMeta>> {
        self.read_meta(batch).await
    }

    #[tracing::instrument(skip_all, fields(batch = %batch))]
    async fn op_records(&self, batch: &BatchId) -> StoreResult<Vec<OpRecord>> {
        let meta = self
            .read_meta(batch)
            .await?
            .ok_or_else(|| StoreError::BatchNotFound(batch.clone()))?;
        let indices: Vec<u32> = (0..meta.total).collect();
        self.op_records_at(batch, &indices).await
    }

    #[tracing::instrument(skip_all, fields(batch = %batch, ops = indices.len()))]
    async fn op_records_at(&self, batch: &BatchId, indices: &[u32]) -> StoreResult<Vec<OpRecord>> {
        let mut connection = self.connection();
        let mut records = Vec::with_capacity(indices.len());
        for chunk in indices.chunks(READ_CHUNK) {
            let mut pipe = redis::pipe();
            pipe.cmd("HMGET").arg(keys::state(batch)).arg(chunk);
            pipe.cmd("HMGET").arg(keys::attempts(batch)).arg(chunk);
            pipe.cmd("HMGET").arg(keys::result(batch)).arg(chunk);
            let (states, attempts, results): (
                Vec<Option<String>>,
                Vec<Option<u32>>,
                Vec<Option<String>>,
            ) = pipe.query_async(&mut connection).await?;
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
                    details_json: result.j,
                });
            }
        }
        Ok(records)
    }

    #[tracing::instrument(skip_all, fields(batch = %batch, after_seq))]
    async fn events(&self, batch: &BatchId, after_seq: u64, max: u32) -> StoreResult<Vec<Event>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(keys::events(batch))
            .arg(format!("(0-{after_seq}"))
            .arg("+")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut self.connection())
            .await?;
        entries
            .iter()
            .map(|(id, fields)| parse_event(id, fields))
            .collect()
    }

    #[tracing::instrument(skip_all)]
    async fn list_batches(&self, limit: u32) -> StoreResult<Vec<BatchMeta>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut connection = self.connection();
        let ids: Vec<String> = connection
            .zrevrange(keys::BATCHES, 0, limit as isize - 1)
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(keys::meta(&BatchId::new(id.as_str())));
        }
        let metas: Vec<HashMap<String, String>> = pipe.query_async(&mut connection).await?;
        let mut out = Vec::with_capacity(ids.len());
        for (id, fields) in ids.into_iter().zip(metas) {
            if let Some(meta) = parse_meta(&BatchId::new(id), &fields)? {
                out.push(meta);
            }
        }
        Ok(out)
    }

    #[tracing::instrument(skip_all, fields(batch = %batch))]
    async fn put_memory(
        &self,
        batch: &BatchId,
        key: &str,
        value: &[u8],
        now_ms: u64,
    ) -> StoreResult<u32> {
        let became_ready: u32 = self
            .shared
            .scripts
            .put_memory
            .key(keys::batch_prefix(batch))
            .arg(keys::DOORBELL_CHANNEL)
            .arg(batch.as_str())
            .arg(now_ms)
            .arg(key)
            .arg(value)
            .invoke_async(&mut self.connection())
            .await?;
        Ok(became_ready)
    }

    #[tracing::instrument(skip_all, fields(batch = %batch))]
    async fn get_memory(&self, batch: &BatchId, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.connection().get(keys::memory(batch, key)).await?)
    }

    fn doorbells(&self) -> broadcast::Receiver<Doorbell> {
        self.shared.doorbell.subscribe()
    }
}
