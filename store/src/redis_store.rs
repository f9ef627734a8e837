//! The Redis implementation of [`Store`]: state in the batch's keys, every verb one Lua script.
//!
//! Hot path: `claim` is one script call, `complete` one script call for a
//! whole slice of results. Only `create_batch` (pipelined in bounded steps),
//! `cancel`/fail_fast and the start of a `retry_failed: sequential` pass
//! (one scan of the state hash each) and the read verbs (`op_records`,
//! chunked) are proportional to a batch's size.
//!
//! Memory: a batch-scope key lives in the batch's slot, so one script
//! writes it and counts down the batch's waiters. A shared namespace has its
//! own slot: a write is one script there (write, log, pop the waiters), then
//! one idempotent `arrive.lua` per waiting batch in that batch's slot. Large
//! values are staged as chunks with separate bounded commands and flipped
//! visible by the write script. A `store_as` into a shared namespace cannot
//! be written by the completion script (another slot): the script records
//! it in the batch's `outbox`, `complete` writes it right after (guarded by
//! the op attempt, so no second write adds a revision) and clears the entry,
//! and [`Store::drain_outbox`] writes what a dead coordinator left there.
//!
//! Doorbells: scripts `PUBLISH` `b:<batch>` (a batch changed), `m:<namespace>`
//! or `mb:<batch>` (a memory scope changed) on [`keys::DOORBELL_CHANNEL`];
//! the Rust side publishes `n:<batch>` / `e:<batch>` right after its
//! `SADD` / `SREM` of [`keys::ACTIVE`] (scripts never touch global keys). A
//! background task holds its own pub/sub connection and forwards them into a
//! broadcast channel, resubscribing with backoff after a disconnect and then
//! sending [`Doorbell::Resync`].
//!
//! Ownership: a batch's hold is its `owner` key (`<coordinator>|<token>`,
//! expiring with `PX` on the server's clock); fenced scripts compare it with
//! the caller's fence first and answer a mismatch with the error reply
//! `NOT_OWNER_REPLY`, mapped to [`StoreError::NotOwner`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

use crate::common::{
    DOORBELL_CAPACITY, DeclaredWriters, added_edges, declared_writers, pending_count,
    sane_multiplier, wait_keys, wait_triples,
};
use crate::keys;
use crate::model::*;
use crate::redis_connect::{PreparedClient, RedisConnect, RedisConnectError};
use crate::{AddOpsRefusal, Store, StoreError, StoreResult};

mod ready_gauge;

/// Fields (ops, or op/key pairs) per command while writing a batch: bounds
/// the size of any single command so a million-op batch is many modest
/// commands, never one giant one.
const WRITE_CHUNK: usize = 10_000;
/// Indices per `HMGET` when reading op records back.
/// `list_batches` looks at most this many batch ids for one tenant's page.
const LIST_SCAN_MAX: isize = 100_000;

const READ_CHUNK: usize = 10_000;
/// Large batches make big pipelines and fail_fast/cancel scans: the client's
/// default 500 ms response timeout is too short for them.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
const RESUBSCRIBE_MIN_BACKOFF: Duration = Duration::from_millis(100);
const RESUBSCRIBE_MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Chunks of a large value live this long until the write script makes them
/// part of the value (then they get the value's TTL): a writer that dies
/// between staging and the flip leaves no garbage behind for long.
const STAGED_CHUNK_TTL_MS: u64 = 10 * 60 * 1000;
/// Stream entries per `XRANGE` while reading changes.
const CHANGES_PAGE: usize = 1_000;
/// A read of a chunked value that raced an overwrite (its chunks deleted
/// under it) starts over this many times before giving up.
const CHUNKED_READ_ATTEMPTS: u32 = 5;

/// The error code a fenced script replies with when the caller's fence is not
/// the batch's live hold (`refuse_fence` in `lua/common.lua`): `NOTOWNER
/// <holder>`, the holder '' when nobody holds the batch.
const NOT_OWNER_REPLY: &str = "NOTOWNER";

/// How long the marker of a shared `store_as` write
/// ([`keys::applied_guard`]) lives: far longer than any drain takes, so a
/// second write of the same op attempt (a drain racing the first writer,
/// or a coordinator that died between the write and clearing the outbox)
/// finds it and writes nothing.
const APPLIED_GUARD_TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// Each script is `lua/common.lua` followed by the verb's file.
/// `create.lua` with its prelude: `create_batch` loads it by name inside a
/// pipeline.
const CREATE_LUA: &str = concat!(
    include_str!("../lua/common.lua"),
    include_str!("../lua/create.lua")
);

macro_rules! lua_script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("../lua/common.lua"),
            include_str!(concat!("../lua/", $file))
        ))
    };
}

/// Scripts that write a memory scope: `lua/common.lua`, `lua/memory.lua`,
/// then the verb's file.
macro_rules! memory_script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("../lua/common.lua"),
            include_str!("../lua/memory.lua"),
            include_str!(concat!("../lua/", $file))
        ))
    };
}

struct Scripts {
    create: Script,
    reserve: Script,
    drop_batch: Script,
    register_waits: Script,
    register_shared: Script,
    arrive: Script,
    claim: Script,
    complete: Script,
    cancel: Script,
    add_ops: Script,
    expire_waits: Script,
    renew_leases: Script,
    expire_leases: Script,
    return_ops: Script,
    expire_deadline: Script,
    mark_lost: Script,
    op_waits: Script,
    note_blocked: Script,
    memory_put: Script,
    memory_incr: Script,
    memory_delete: Script,
    memory_list: Script,
    hold: Script,
    release: Script,
    workers: Script,
    revoke_token: Script,
    outbox_clear: Script,
}

impl Scripts {
    fn load() -> Scripts {
        Scripts {
            create: Script::new(CREATE_LUA),
            reserve: lua_script!("reserve.lua"),
            register_waits: lua_script!("register_waits.lua"),
            register_shared: lua_script!("register_shared.lua"),
            arrive: lua_script!("arrive.lua"),
            claim: lua_script!("claim.lua"),
            complete: memory_script!("complete.lua"),
            cancel: lua_script!("cancel.lua"),
            add_ops: lua_script!("add_ops.lua"),
            expire_waits: lua_script!("expire_waits.lua"),
            renew_leases: lua_script!("renew_leases.lua"),
            expire_leases: lua_script!("expire_leases.lua"),
            return_ops: lua_script!("return_ops.lua"),
            expire_deadline: lua_script!("expire_deadline.lua"),
            mark_lost: lua_script!("mark_lost.lua"),
            drop_batch: lua_script!("drop_batch.lua"),
            op_waits: lua_script!("op_waits.lua"),
            note_blocked: lua_script!("note_blocked.lua"),
            memory_put: memory_script!("memory_put.lua"),
            memory_incr: memory_script!("memory_incr.lua"),
            memory_delete: memory_script!("memory_delete.lua"),
            memory_list: lua_script!("memory_list.lua"),
            hold: lua_script!("hold.lua"),
            release: lua_script!("release.lua"),
            // Touches no batch: not prefixed with common.lua.
            workers: Script::new(include_str!("../lua/workers.lua")),
            // Touches the token keys only, through KEYS.
            revoke_token: Script::new(include_str!("../lua/revoke_token.lua")),
            outbox_clear: lua_script!("outbox_clear.lua"),
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
    /// Changes kept per memory scope (see [`RedisStore::with_change_log_cap`]).
    change_log_cap: AtomicU64,
    /// `create.lua` is in Redis's script cache as far as we know: the
    /// one-pipeline creation then runs it without loading it first.
    create_loaded: AtomicBool,
    /// The test-only fault point `after-complete`, when set.
    #[cfg(debug_assertions)]
    fault_after_complete: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.listener_shutdown.cancel();
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://[user][:password@]host:port[/db]`,
    /// `rediss://…` for TLS trusting the system's roots) and starts the
    /// doorbell listener; returns once the doorbell subscription is live, so
    /// no bell rung after this returns is missed.
    pub async fn connect(url: &str) -> Result<RedisStore, RedisConnectError> {
        Self::connect_with_shutdown(url, CancellationToken::new()).await
    }

    /// Like [`RedisStore::connect`]; the doorbell listener also stops when
    /// `shutdown` is cancelled (it runs on a child token).
    pub async fn connect_with_shutdown(
        url: &str,
        shutdown: CancellationToken,
    ) -> Result<RedisStore, RedisConnectError> {
        Self::connect_with_options(&RedisConnect::from_url(url), shutdown).await
    }

    /// Like [`RedisStore::connect_with_shutdown`], with TLS files and a
    /// password file: every connection the store opens (commands, the
    /// doorbell subscription and its resubscriptions) uses them.
    ///
    /// A wrong setting, file or credential fails at once; an unreachable
    /// Redis is retried for a few seconds first.
    #[tracing::instrument(skip_all, fields(redis = %options.redacted_url()))]
    pub async fn connect_with_options(
        options: &RedisConnect,
        shutdown: CancellationToken,
    ) -> Result<RedisStore, RedisConnectError> {
        let prepared = PreparedClient::prepare(options).await?;
        let client = prepared.client.clone();
        // One attempt at the subscription first: a refused password or an
        // untrusted certificate fails here without the connection manager's
        // retries (several seconds of backoff that cannot help).
        let first_subscription = subscribe(&client).await;
        if let Err(error) = &first_subscription {
            let connect_error = prepared.connect_error(error);
            if !connect_error.is_retryable() {
                return Err(connect_error);
            }
        }
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECTION_TIMEOUT));
        let connection = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|error| prepared.connect_error(&error))?;
        let pubsub = match first_subscription {
            Ok(pubsub) => pubsub,
            Err(_) => subscribe(&client)
                .await
                .map_err(|error| prepared.connect_error(&error))?,
        };
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
                change_log_cap: AtomicU64::new(DEFAULT_CHANGE_LOG_CAP),
                create_loaded: AtomicBool::new(false),
                #[cfg(debug_assertions)]
                fault_after_complete: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Keeps about `cap` changes per memory scope instead of
    /// [`DEFAULT_CHANGE_LOG_CAP`] (trimming is approximate, `MAXLEN ~`:
    /// Redis drops whole stream nodes, so somewhat more may be kept). Applies
    /// to every clone of this store.
    pub fn with_change_log_cap(self, cap: u64) -> RedisStore {
        self.shared
            .change_log_cap
            .store(cap.max(1), Ordering::Relaxed);
        self
    }

    /// Test-only fault point (debug builds only): `fault` runs inside
    /// `complete`, right after the completion script recorded a shared
    /// `store_as` in the batch's outbox and before the namespace write —
    /// the crash window the outbox exists for. The `volley coordinator`
    /// binary sets it from `VOLLEY_TEST_FAULT=after-complete` (exiting the
    /// process) so end-to-end tests can die exactly there. Set once; later
    /// calls are ignored.
    #[cfg(debug_assertions)]
    #[doc(hidden)]
    pub fn with_test_fault_after_complete(self, fault: impl Fn() + Send + Sync + 'static) -> Self {
        let _ = self.shared.fault_after_complete.set(Box::new(fault));
        self
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

    /// Removes the batch from the active set; true when it was in it.
    async fn leave_active(&self, batch: &BatchId) -> StoreResult<bool> {
        let removed: i64 = self.connection().srem(keys::ACTIVE, batch.as_str()).await?;
        Ok(removed > 0)
    }

    /// Publishes a bell the Rust side owns (`n:` / `e:`): right after the
    /// change of the active set it announces, as scripts never touch it.
    async fn publish_bell(&self, payload: String) -> StoreResult<()> {
        let _: i64 = self
            .connection()
            .publish(keys::DOORBELL_CHANNEL, payload)
            .await?;
        Ok(())
    }

    fn change_log_cap(&self) -> u64 {
        self.shared.change_log_cap.load(Ordering::Relaxed)
    }

    /// An invocation of a memory script on `scope` with the header of
    /// `lua/memory.lua` (ARGV 1..5) filled in.
    fn memory_invocation<'a>(
        &self,
        script: &'a Script,
        scope: &MemoryScope,
        now_ms: u64,
    ) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.key(keys::scope_prefix(scope));
        invocation
            .arg(keys::DOORBELL_CHANNEL)
            .arg(match scope {
                MemoryScope::Batch(batch) => batch.as_str(),
                MemoryScope::Shared(_) => "",
            })
            .arg(now_ms)
            .arg(keys::memory_bell(scope))
            .arg(self.change_log_cap());
        invocation
    }

    /// Registers memory waits of `batch`'s ops, exactly as create_batch and
    /// add_ops both need: in the batch's slot for its own memory; for a
    /// shared namespace, first in the namespace's slot, then the keys found
    /// present are applied in the batch's slot (`arrive.lua`). Returns how
    /// many ops became ready, and the batch's finished state code when a
    /// key nobody will write any more skipped the last ops ('' else; see
    /// `register_waits.lua`).
    async fn register_waits(
        &self,
        batch: &BatchId,
        scope: &MemoryScope,
        triples: &[(u32, String, &'static str)],
        now_ms: u64,
    ) -> StoreResult<(u32, String)> {
        let mut connection = self.connection();
        let mut became_ready = 0;
        let mut finished = String::new();
        match scope {
            MemoryScope::Batch(_) => {
                for chunk in triples.chunks(WRITE_CHUNK) {
                    let mut invocation = self
                        .shared
                        .scripts
                        .register_waits
                        .key(keys::batch_prefix(batch));
                    invocation
                        .arg(keys::DOORBELL_CHANNEL)
                        .arg(batch.as_str())
                        .arg(now_ms);
                    for (index, key, mode) in chunk {
                        invocation.arg(*index).arg(key).arg(*mode);
                    }
                    let (ready, ended): (u32, String) =
                        invocation.invoke_async(&mut connection).await?;
                    became_ready += ready;
                    if !ended.is_empty() {
                        finished = ended;
                    }
                }
            }
            MemoryScope::Shared(_) => {
                let mut present: Vec<(u32, String, &'static str)> = Vec::new();
                for chunk in triples.chunks(WRITE_CHUNK) {
                    let mut invocation = self
                        .shared
                        .scripts
                        .register_shared
                        .key(keys::scope_prefix(scope));
                    invocation
                        .arg(keys::DOORBELL_CHANNEL)
                        .arg(batch.as_str())
                        .arg(now_ms);
                    for (index, key, mode) in chunk {
                        invocation.arg(*index).arg(key).arg(*mode);
                    }
                    let found: Vec<String> = invocation.invoke_async(&mut connection).await?;
                    for triple in found.chunks_exact(3) {
                        let index = triple[0]
                            .parse()
                            .map_err(|_| corrupt(format_args!("waiter index `{}`", triple[0])))?;
                        let mode = if triple[2] == "any" { "any" } else { "all" };
                        present.push((index, triple[1].clone(), mode));
                    }
                }
                let (_, ready) = self.arrive(batch, &present, now_ms).await?;
                became_ready += ready;
            }
        }
        Ok((became_ready, finished))
    }

    /// Marks keys arrived for ops of `batch` (idempotent). Returns
    /// (countdowns decremented, ops that became ready).
    async fn arrive(
        &self,
        batch: &BatchId,
        triples: &[(u32, String, &'static str)],
        now_ms: u64,
    ) -> StoreResult<(u32, u32)> {
        let mut connection = self.connection();
        let (mut unblocked, mut became_ready) = (0, 0);
        for chunk in triples.chunks(WRITE_CHUNK) {
            let mut invocation = self.shared.scripts.arrive.key(keys::batch_prefix(batch));
            invocation
                .arg(keys::DOORBELL_CHANNEL)
                .arg(batch.as_str())
                .arg(now_ms);
            for (index, key, mode) in chunk {
                invocation.arg(*index).arg(key).arg(*mode);
            }
            let (decremented, ready): (u32, u32) = invocation.invoke_async(&mut connection).await?;
            unblocked += decremented;
            became_ready += ready;
        }
        Ok((unblocked, became_ready))
    }

    /// Writes a memory key (the code path of `memory_put`, `memory_incr`'s
    /// waiters and a shared `store_as`): stages chunks of a large value,
    /// runs the write script in the scope's slot, then applies the popped
    /// waiters of a shared scope batch by batch.
    ///
    /// `guard`: the marker of this exact write ([`keys::applied_guard`]):
    /// when it exists the write was done already and nothing is written
    /// (`Written::version` is the version written then).
    async fn write_memory(
        &self,
        scope: &MemoryScope,
        key: &str,
        value: &[u8],
        options: &PutOptions,
        guard: Option<&str>,
        now_ms: u64,
    ) -> StoreResult<Written> {
        let mut connection = self.connection();
        let mut staged: Vec<String> = Vec::new();
        let mut invocation = self.memory_invocation(&self.shared.scripts.memory_put, scope, now_ms);
        invocation
            .arg(key)
            .arg(&options.content_type)
            .arg(
                options
                    .ttl_ms
                    .map(|ttl| ttl.to_string())
                    .unwrap_or_default(),
            )
            .arg(options.ttl_ms.map_or(0, |ttl| now_ms.saturating_add(ttl)))
            .arg(
                options
                    .if_version
                    .map(|version| version.to_string())
                    .unwrap_or_default(),
            );
        if value.len() > MEMORY_CHUNK_BYTES {
            let generation = uuid::Uuid::now_v7().simple().to_string();
            for (number, chunk) in value.chunks(MEMORY_CHUNK_BYTES).enumerate() {
                let chunk_key = keys::chunk(scope, &generation, number as u64);
                let _: () = redis::cmd("SET")
                    .arg(&chunk_key)
                    .arg(chunk)
                    .arg("PX")
                    .arg(STAGED_CHUNK_TTL_MS)
                    .query_async(&mut connection)
                    .await?;
                staged.push(chunk_key);
            }
            invocation
                .arg("c")
                .arg(&generation)
                .arg(staged.len())
                .arg(value.len());
        } else {
            invocation.arg("i").arg(value).arg("").arg("");
        }
        invocation
            .arg(guard.unwrap_or(""))
            .arg(APPLIED_GUARD_TTL_MS);
        let reply: Vec<Value> = invocation.invoke_async(&mut connection).await?;
        let status = reply.first().map(value_i64).transpose()?.unwrap_or(-2);
        if status == -3 {
            if !staged.is_empty() {
                let _: i64 = connection.del(&staged).await?;
            }
            let version = reply.get(1).map(value_i64).transpose()?.unwrap_or(0);
            return Ok(Written {
                version: version as u64,
                unblocked: 0,
                became_ready: Vec::new(),
            });
        }
        if status < 0 {
            if !staged.is_empty() {
                let _: i64 = connection.del(&staged).await?;
            }
            if status == -1 {
                let actual = reply.get(1).map(value_i64).transpose()?.unwrap_or(0);
                return Err(StoreError::VersionMismatch {
                    key: key.to_owned(),
                    expected: options.if_version.unwrap_or(0),
                    actual: actual as u64,
                });
            }
            return Err(corrupt(format_args!(
                "staged chunks of memory key `{key}` expired before the write"
            )));
        }
        self.after_write(scope, key, status as u64, &reply[1..], now_ms)
            .await
    }

    /// The common tail of a write script's reply `[unblocked, became_ready,
    /// {members}]`: applies a shared scope's waiters in their batches.
    async fn after_write(
        &self,
        scope: &MemoryScope,
        key: &str,
        version: u64,
        tail: &[Value],
        now_ms: u64,
    ) -> StoreResult<Written> {
        let field = |position: usize| tail.get(position).map(value_i64).transpose();
        let unblocked = field(0)?.unwrap_or(0) as u32;
        let became_ready = field(1)?.unwrap_or(0) as u32;
        let members: Vec<String> = match tail.get(2) {
            Some(value) => redis::from_redis_value(value.clone()).map_err(corrupt)?,
            None => Vec::new(),
        };
        let mut written = Written {
            version,
            unblocked,
            became_ready: Vec::new(),
        };
        if let MemoryScope::Batch(batch) = scope {
            written.became_ready.push((batch.clone(), became_ready));
        }
        let mut by_batch: BTreeMap<BatchId, Vec<(u32, String, &'static str)>> = BTreeMap::new();
        for member in &members {
            match parse_waiter(member, key) {
                Some((batch, index, mode)) => {
                    by_batch
                        .entry(batch)
                        .or_default()
                        .push((index, key.to_owned(), mode))
                }
                None => tracing::warn!(member, "unreadable waiter"),
            }
        }
        for (batch, mut triples) in by_batch {
            triples.sort();
            let (decremented, ready) = self.arrive(&batch, &triples, now_ms).await?;
            written.unblocked += decremented;
            written.became_ready.push((batch, ready));
        }
        Ok(written)
    }

    /// Reads a script's finished-state code; a finished batch leaves the
    /// active set, and `Ended` rings (a script reports a finish only once).
    async fn finished_state(&self, batch: &BatchId, code: &str) -> StoreResult<Option<BatchState>> {
        if code.is_empty() {
            return Ok(None);
        }
        let state = BatchState::from_code(code)
            .ok_or_else(|| corrupt(format_args!("finished state `{code}`")))?;
        self.leave_active(batch).await?;
        self.publish_bell(keys::ended_bell(batch)).await?;
        self.schedule_expiry(batch).await?;
        Ok(Some(state))
    }

    /// A finished batch with a retention goes in [`keys::EXPIRING`], scored
    /// by when `drop_expired` may delete it.
    async fn schedule_expiry(&self, batch: &BatchId) -> StoreResult<()> {
        let mut connection = self.connection();
        let (finished_ms, retain_ms): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(keys::meta(batch))
            .arg("finished_ms")
            .arg("retain_ms")
            .query_async(&mut connection)
            .await?;
        if let (Some(finished_ms), Some(retain_ms @ 1..)) = (finished_ms, retain_ms) {
            let _: i64 = connection
                .zadd(keys::EXPIRING, batch.as_str(), finished_ms + retain_ms)
                .await?;
        }
        Ok(())
    }

    async fn read_meta(&self, batch: &BatchId) -> StoreResult<Option<BatchMeta>> {
        let fields: HashMap<String, String> = self.connection().hgetall(keys::meta(batch)).await?;
        parse_meta(batch, &fields)
    }

    /// Writes one outboxed shared `store_as` (op `index`, `attempt`) into
    /// `scope`, guarded by that attempt (a second write does nothing), then
    /// clears its outbox entry. Returns how many ops of `batch` it made
    /// ready.
    #[allow(clippy::too_many_arguments)]
    async fn write_outboxed(
        &self,
        batch: &BatchId,
        scope: &MemoryScope,
        index: u32,
        attempt: u32,
        key: &str,
        value: &[u8],
        now_ms: u64,
    ) -> StoreResult<u32> {
        let options = PutOptions {
            content_type: TEXT_CONTENT_TYPE.to_owned(),
            ..PutOptions::default()
        };
        let guard = keys::applied_guard(batch, index, attempt);
        let written = self
            .write_memory(scope, key, value, &options, Some(&guard), now_ms)
            .await?;
        let _: i64 = batch_invocation(&self.shared.scripts.outbox_clear, batch, now_ms)
            .arg(index)
            .arg(attempt)
            .invoke_async(&mut self.connection())
            .await?;
        Ok(written
            .became_ready
            .iter()
            .filter(|(ready_batch, _)| ready_batch == batch)
            .map(|(_, ready)| *ready)
            .sum())
    }

    /// The test-only fault point `after-complete` (see
    /// [`RedisStore::with_test_fault_after_complete`]).
    fn test_fault_after_complete(&self) {
        #[cfg(debug_assertions)]
        if let Some(fault) = self.shared.fault_after_complete.get() {
            fault();
        }
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
            let payload = String::from_utf8_lossy(message.get_payload_bytes()).into_owned();
            match parse_bell(&payload) {
                // No receiver is fine: the bell is only a hint.
                Some(bell) => {
                    let _ = sender.send(bell);
                }
                None => tracing::debug!(payload, "unknown doorbell payload"),
            }
        }
    }
}

/// The writes of `create_batch`'s first step for `chunk` (ops `first..`):
/// static info, state, pending counts (memory waits included), wait
/// deadlines, wait info and the ready queues of ops that wait for nothing.
fn write_ops_pipe(batch: &NewBatch, first: u32, chunk: &[NewOp]) -> redis::Pipeline {
    let mut info = redis::cmd("HSET");
    info.arg(keys::info(&batch.id));
    let mut state = redis::cmd("HSET");
    state.arg(keys::state(&batch.id));
    let mut pending = redis::cmd("HSET");
    pending.arg(keys::pending(&batch.id));
    let mut any_pending = false;
    let mut deadlines = redis::cmd("ZADD");
    deadlines.arg(keys::deadlines(&batch.id));
    let mut wait_info = redis::cmd("HSET");
    wait_info.arg(keys::wait_info(&batch.id));
    let mut any_deadline = false;
    let mut any_wait_info = false;
    let mut ready: [Vec<u32>; PRIORITY_LEVELS as usize] = Default::default();
    for (offset, op) in chunk.iter().enumerate() {
        let index = first + offset as u32;
        let count = pending_count(op);
        info.arg(index).arg(packed_info(op, &op.dependents));
        if count == 0 {
            state.arg(index).arg(OpState::Ready.code());
            ready[usize::from(op.priority.min(PRIORITY_LEVELS - 1))].push(index);
        } else {
            state.arg(index).arg(OpState::Waiting.code());
            pending.arg(index).arg(count);
            any_pending = true;
        }
        if let Some(json) = wait_info_json(op, batch.created_ms) {
            if op.wait_deadline_ms > 0 {
                deadlines.arg(op.wait_deadline_ms).arg(index);
                any_deadline = true;
            }
            wait_info.arg(index).arg(json);
            any_wait_info = true;
        }
    }
    let mut pipe = redis::pipe();
    pipe.add_command(info).ignore();
    pipe.add_command(state).ignore();
    if any_pending {
        pipe.add_command(pending).ignore();
    }
    if any_deadline {
        pipe.add_command(deadlines).ignore();
    }
    if any_wait_info {
        pipe.add_command(wait_info).ignore();
    }
    for (priority, indices) in ready.iter().enumerate() {
        if !indices.is_empty() {
            pipe.cmd("RPUSH")
                .arg(keys::ready(&batch.id, priority as u8))
                .arg(indices)
                .ignore();
        }
    }
    pipe
}

/// Reads a doorbell payload (see [`keys::DOORBELL_CHANNEL`]).
fn parse_bell(payload: &str) -> Option<Doorbell> {
    if let Some(batch) = payload.strip_prefix(keys::BELL_BATCH) {
        return Some(Doorbell::Batch(BatchId::new(batch)));
    }
    if let Some(batch) = payload.strip_prefix(keys::BELL_EVENTS) {
        return Some(Doorbell::Events(BatchId::new(batch)));
    }
    if let Some(batch) = payload.strip_prefix(keys::BELL_STARTED) {
        return Some(Doorbell::Started(BatchId::new(batch)));
    }
    if let Some(batch) = payload.strip_prefix(keys::BELL_ENDED) {
        return Some(Doorbell::Ended(BatchId::new(batch)));
    }
    if let Some(batch) = payload.strip_prefix(keys::BELL_BATCH_MEMORY) {
        return Some(Doorbell::Memory(MemoryScope::Batch(BatchId::new(batch))));
    }
    payload
        .strip_prefix(keys::BELL_SHARED_MEMORY)
        .map(|namespace| Doorbell::Memory(MemoryScope::Shared(namespace.to_owned())))
}

/// How a batch's meta records its memory scope: `b` (its own) or `m:<namespace>`.
fn memory_code(scope: &MemoryScope) -> String {
    match scope {
        MemoryScope::Batch(_) => "b".to_owned(),
        MemoryScope::Shared(namespace) => format!("m:{namespace}"),
    }
}

fn scope_from_code(batch: &BatchId, code: &str) -> MemoryScope {
    match code.strip_prefix("m:") {
        Some(namespace) => MemoryScope::Shared(namespace.to_owned()),
        None => MemoryScope::Batch(batch.clone()),
    }
}

/// Adds to `pipe` the writes of a new batch's declared writers (see
/// `keys.rs`): `writes`, `writers_left`, `writer_ops` and meta `writers`.
fn add_writer_commands(pipe: &mut redis::Pipeline, batch: &BatchId, declared: &DeclaredWriters) {
    if declared.by_op.is_empty() {
        return;
    }
    for chunk in declared.by_op.chunks(WRITE_CHUNK) {
        let mut writes = redis::cmd("HSET");
        writes.arg(keys::writes(batch));
        for (index, keys) in chunk {
            writes.arg(*index).arg(keys.join(","));
        }
        pipe.add_command(writes).ignore();
    }
    let by_key: Vec<(&String, &Vec<u32>)> = declared.by_key.iter().collect();
    for chunk in by_key.chunks(WRITE_CHUNK) {
        let mut left = redis::cmd("HSET");
        left.arg(keys::writers_left(batch));
        let mut ops = redis::cmd("HSET");
        ops.arg(keys::writer_ops(batch));
        for (key, writers) in chunk {
            left.arg(*key).arg(writers.len());
            let joined: Vec<String> = writers.iter().map(u32::to_string).collect();
            ops.arg(*key).arg(joined.join(","));
        }
        pipe.add_command(left).ignore();
        pipe.add_command(ops).ignore();
    }
    pipe.hset(keys::meta(batch), "writers", "1").ignore();
}

/// The `waitinfo` JSON of an op with memory waits (what `expire_waits`
/// names and `op_waits` reports); `None` when it waits for no key.
fn wait_info_json(op: &NewOp, since_ms: u64) -> Option<String> {
    let (all, any) = wait_keys(op);
    if all.is_empty() && any.is_empty() {
        return None;
    }
    Some(serde_json::json!({ "s": since_ms.to_string(), "a": all, "y": any }).to_string())
}

/// Parses `<batch>|<op>|<key>|<mode>`, a member of the waiter set of `key`.
fn parse_waiter(member: &str, key: &str) -> Option<(BatchId, u32, &'static str)> {
    let (head, mode) = if let Some(head) = member.strip_suffix("|all") {
        (head, "all")
    } else {
        (member.strip_suffix("|any")?, "any")
    };
    let head = head.strip_suffix(key)?.strip_suffix('|')?;
    let (batch, index) = head.rsplit_once('|')?;
    Some((BatchId::new(batch), index.parse().ok()?, mode))
}

fn value_i64(value: &Value) -> StoreResult<i64> {
    redis::from_redis_value::<i64>(value.clone()).map_err(corrupt)
}

/// What one memory write did.
struct Written {
    version: u64,
    /// Countdowns decremented, across batches.
    unblocked: u32,
    /// Ops that became ready, per batch.
    became_ready: Vec<(BatchId, u32)>,
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

/// How the `owner` key and the fenced scripts spell a fence.
fn packed_fence(fence: &Fence) -> String {
    format!("{}|{}", fence.coordinator, fence.token)
}

/// Reads an `owner` value `<coordinator>|<token>` (the coordinator id may
/// contain '|': the token is after the last one).
fn parse_fence(value: &str) -> StoreResult<Fence> {
    value
        .rsplit_once('|')
        .and_then(|(coordinator, token)| {
            Some(Fence {
                coordinator: coordinator.to_owned(),
                token: token.parse().ok()?,
            })
        })
        .ok_or_else(|| corrupt(format_args!("owner hold `{value}`")))
}

/// A fenced script's error: its `NOTOWNER <holder>` reply becomes
/// [`StoreError::NotOwner`]; anything else stays a Redis error.
fn fenced_error(batch: &BatchId, error: redis::RedisError) -> StoreError {
    if error.code() != Some(NOT_OWNER_REPLY) {
        return StoreError::Redis(error);
    }
    let holder = error
        .detail()
        .map(str::trim)
        .filter(|holder| !holder.is_empty())
        .map(str::to_owned);
    StoreError::NotOwner {
        batch: batch.clone(),
        holder,
    }
}

/// The JSON value of a coordinator's field in [`keys::WORKERS`].
#[derive(serde::Serialize, serde::Deserialize)]
struct PublishedWorkers {
    until_ms: u64,
    #[serde(default)]
    workers: Vec<WorkerEntry>,
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
        tenant: fields.get("tenant").cloned().unwrap_or_default(),
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
    /// What `e` names, when a script wrote it (see [`CauseJson`]).
    #[serde(default)]
    c: Option<serde_json::Value>,
}

/// A [`Cause`] as the scripts keep it (`cause_dependency`,
/// `cause_fail_fast` and `hopeless_message` in `lua/common.lua`):
/// `{"d":7,"s":"F"}`, `{"f":7}`, `{"k":"key","w":[[3,"F"]],"m":0}`.
#[derive(serde::Deserialize)]
struct CauseJson {
    #[serde(default)]
    d: Option<u32>,
    #[serde(default)]
    s: Option<String>,
    #[serde(default)]
    f: Option<u32>,
    #[serde(default)]
    k: Option<String>,
    #[serde(default)]
    w: Vec<(u32, String)>,
    #[serde(default)]
    m: u32,
}

impl CauseJson {
    /// `None` for a cause this version cannot read: the message is then
    /// shown as it is, as for records kept before causes were.
    fn into_cause(self) -> Option<Cause> {
        if let Some(index) = self.d {
            let state = OpState::from_code(self.s.as_deref()?)?;
            return Some(Cause::Dependency { index, state });
        }
        if let Some(index) = self.f {
            return Some(Cause::FailFast { index });
        }
        let key = self.k?;
        let writers = self
            .w
            .into_iter()
            .map(|(index, code)| Some((index, OpState::from_code(&code)?)))
            .collect::<Option<Vec<_>>>()?;
        Some(Cause::NeverWritten {
            key,
            writers,
            more: self.m,
        })
    }

    fn parse(json: &str) -> Option<Cause> {
        serde_json::from_str::<CauseJson>(json)
            .ok()
            .and_then(CauseJson::into_cause)
    }

    fn from_value(value: serde_json::Value) -> Option<Cause> {
        serde_json::from_value::<CauseJson>(value)
            .ok()
            .and_then(CauseJson::into_cause)
    }
}

fn parse_ms(text: &str) -> u64 {
    text.parse().unwrap_or(0)
}

/// Reads an event: one field `e` packing now, kind, op index, attempt,
/// worker, batch state and message, separated by `\x1f` (see `event` in
/// `lua/common.lua`); entries written before that format have one field
/// each (`t`, `k`, `i`, `a`, `w`, `b`, `m`).
fn parse_event(id: &str, fields: &HashMap<String, String>) -> StoreResult<Event> {
    let mut parts: [&str; 7] = [""; 7];
    match fields.get("e") {
        Some(packed) => {
            for (slot, part) in parts.iter_mut().zip(packed.splitn(7, '\x1f')) {
                *slot = part;
            }
        }
        None => {
            for (slot, name) in parts.iter_mut().zip(["t", "k", "i", "a", "w", "b", "m"]) {
                *slot = fields.get(name).map_or("", String::as_str);
            }
        }
    }
    let [at, kind_code, index, attempt, worker, state, message] = parts;
    let seq = id
        .split_once('-')
        .and_then(|(_, seq)| seq.parse().ok())
        .ok_or_else(|| corrupt(format_args!("event id `{id}`")))?;
    let kind = EventKind::from_code(kind_code)
        .ok_or_else(|| corrupt(format_args!("event kind `{kind_code}`")))?;
    let op_index = match index {
        "" => None,
        text => Some(
            text.parse()
                .map_err(|_| corrupt(format_args!("event op index `{text}`")))?,
        ),
    };
    let batch_state = match state {
        "" => None,
        code => Some(
            BatchState::from_code(code)
                .ok_or_else(|| corrupt(format_args!("event batch state `{code}`")))?,
        ),
    };
    Ok(Event {
        seq,
        at_ms: parse_ms(at),
        kind,
        op_index,
        attempt: attempt.parse().unwrap_or(0),
        worker: worker.to_owned(),
        message: message.to_owned(),
        cause: fields.get("c").and_then(|json| CauseJson::parse(json)),
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

/// `priority|run_if_always|max_attempts|retry|d1,d2,…` (see `op_info` in
/// `lua/common.lua`).
fn packed_info(op: &NewOp, dependents: &[u32]) -> String {
    let dependents: Vec<String> = dependents.iter().map(u32::to_string).collect();
    format!(
        "{}|{}|{}|{}|{}",
        op.priority.min(PRIORITY_LEVELS - 1),
        u8::from(op.run_if_always),
        op.max_attempts.max(1),
        packed_retry(&op.retry),
        dependents.join(",")
    )
}

/// `<on_failure><on_timeout><on_lost_worker>,<initial>,<max>,<multiplier>,<jitter>`.
fn packed_retry(policy: &RetryPolicy) -> String {
    format!(
        "{}{}{},{},{},{},{}",
        u8::from(policy.on_failure),
        u8::from(policy.on_timeout),
        u8::from(policy.on_lost_worker),
        policy.backoff_initial_ms,
        policy.backoff_max_ms,
        sane_multiplier(policy.backoff_multiplier),
        u8::from(policy.backoff_jitter)
    )
}

/// How `complete.lua` spells a completion's outcome.
fn outcome_code(completion: &Completion) -> &'static str {
    if completion.ok {
        return "ok";
    }
    match completion.failure {
        FailureKind::Error => "error",
        FailureKind::Timeout => "timeout",
        FailureKind::LostWorker => "lost",
        FailureKind::Permanent => "permanent",
    }
}

/// A fresh seed for the scripts' `math.random` (backoff jitter): Redis
/// would otherwise start every script from the same seed.
fn random_seed() -> u32 {
    // The low bits of a v7 uuid are random.
    (uuid::Uuid::now_v7().as_u128() & 0x7fff_ffff) as u32
}

/// A `next_retry_at_ms` as a script returns it ('' for none).
fn parse_next_retry(text: &str) -> StoreResult<Option<u64>> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| corrupt(format_args!("next retry at `{text}`")))
}

/// The invocation of a batch script with the common header (ARGV 1..3).
fn batch_invocation<'a>(
    script: &'a Script,
    batch: &BatchId,
    now_ms: u64,
) -> redis::ScriptInvocation<'a> {
    let mut invocation = script.key(keys::batch_prefix(batch));
    invocation
        .arg(keys::DOORBELL_CHANNEL)
        .arg(batch.as_str())
        .arg(now_ms);
    invocation
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
    async fn create_batch(&self, batch: NewBatch) -> StoreResult<Created> {
        let mut connection = self.connection();
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
            let claim: String = self
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
        let mut create = self.shared.scripts.create.key(&prefix);
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
            if !self.shared.create_loaded.load(Ordering::Relaxed) {
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
                    self.shared.create_loaded.store(true, Ordering::Relaxed);
                    return Ok(Created::New);
                }
                // Redis lost its script cache (restarted from its AOF, or
                // SCRIPT FLUSH): the pipeline's writes went through, only
                // `create.lua` did not. Load and run it, then announce the
                // batch again (the active set and the bell are idempotent;
                // the first `Started` rang before the batch opened, which a
                // coordinator's claim rides out: it finds nothing running).
                Err(error)
                    if error.kind()
                        == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    self.shared.create_loaded.store(false, Ordering::Relaxed);
                    let _: String = create.invoke_async(&mut connection).await?;
                    self.shared.create_loaded.store(true, Ordering::Relaxed);
                    self.publish_bell(keys::started_bell(&batch.id)).await?;
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
        self.register_waits(&batch.id, &scope, &triples, batch.created_ms)
            .await?;

        // Step 3: make it visible, append `submitted`, ring.
        let finished: String = create.invoke_async(&mut connection).await?;
        let _: i64 = connection
            .zadd(keys::BATCHES, batch.id.as_str(), batch.created_ms)
            .await?;
        if finished.is_empty() {
            let _: i64 = connection.sadd(keys::ACTIVE, batch.id.as_str()).await?;
            self.publish_bell(keys::started_bell(&batch.id)).await?;
        }
        Ok(Created::New)
    }

    async fn batch_spec(&self, batch: &BatchId) -> StoreResult<Option<StoredSpec>> {
        let (base, added): (Option<Vec<u8>>, Vec<Vec<u8>>) = redis::pipe()
            .get(keys::spec(batch))
            .lrange(keys::spec_added(batch), 0, -1)
            .query_async(&mut self.connection())
            .await?;
        Ok(base.map(|base| StoredSpec { base, added }))
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
    async fn claim(
        &self,
        batch: &BatchId,
        max: u32,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> StoreResult<Vec<Claimed>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let reply: Value = batch_invocation(&self.shared.scripts.claim, batch, now_ms)
            .arg(max)
            .arg(lease_until_ms)
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
        let own_scope = MemoryScope::Batch(batch.clone());
        let mut invocation =
            self.memory_invocation(&self.shared.scripts.complete, &own_scope, now_ms);
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
        ) = invocation.invoke_async(&mut self.connection()).await?;
        if recorded < 0 {
            return Err(StoreError::BatchNotFound(batch.clone()));
        }
        // store_as into a shared namespace: the script recorded each in the
        // batch's outbox, atomically with the completion; written now, each
        // guarded by its op attempt, then cleared. A crash in between leaves
        // the entry for a drain (`drain_outbox`) to write.
        let scope = scope_from_code(batch, &memory);
        if !shared_writes.is_empty() {
            self.test_fault_after_complete();
        }
        for position in shared_writes {
            let Some(completion) = completions.get(position) else {
                return Err(corrupt(format_args!("store_as position {position}")));
            };
            let Some(key) = completion.store_as.as_deref() else {
                continue;
            };
            became_ready += self
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
            self.drain_outbox(batch, now_ms).await?;
        }
        let finished = self.finished_state(batch, &finished).await?;
        Ok(CompleteOutcome {
            recorded: recorded as u32,
            retried,
            stale,
            became_ready,
            finished,
            next_retry_at_ms: parse_next_retry(&next)?,
        })
    }

    #[tracing::instrument(skip_all, fields(batch = %batch, ops = ops.len()))]
    async fn renew_leases_on(
        &self,
        batch: &BatchId,
        ops: &[Claimed],
        lease_until_ms: u64,
        worker: &str,
    ) -> StoreResult<Vec<Claimed>> {
        let mut connection = self.connection();
        // An empty slice still checks that the batch exists.
        let chunks: Vec<&[Claimed]> = if ops.is_empty() {
            vec![ops]
        } else {
            ops.chunks(WRITE_CHUNK).collect()
        };
        let mut stale = Vec::new();
        for chunk in chunks {
            let mut invocation = batch_invocation(&self.shared.scripts.renew_leases, batch, 0);
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

    #[tracing::instrument(skip_all, fields(batch = %batch, token = fence.token))]
    async fn expire_leases(
        &self,
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
        ) = batch_invocation(&self.shared.scripts.expire_leases, batch, now_ms)
            .arg(random_seed())
            .arg(packed_fence(fence))
            .invoke_async(&mut self.connection())
            .await
            .map_err(|error| fenced_error(batch, error))?;
        if failed < 0 {
            return Err(StoreError::BatchNotFound(batch.clone()));
        }
        Ok(CompleteOutcome {
            recorded: failed as u32,
            retried,
            became_ready,
            finished: self.finished_state(batch, &finished).await?,
            next_retry_at_ms: parse_next_retry(&next)?,
            ..CompleteOutcome::default()
        })
    }

    #[tracing::instrument(skip_all, fields(batch = %batch, ops = ops.len()))]
    async fn return_ops(&self, batch: &BatchId, ops: &[Claimed], now_ms: u64) -> StoreResult<u32> {
        let mut connection = self.connection();
        let chunks: Vec<&[Claimed]> = if ops.is_empty() {
            vec![ops]
        } else {
            ops.chunks(WRITE_CHUNK).collect()
        };
        let mut returned = 0;
        for chunk in chunks {
            let mut invocation = batch_invocation(&self.shared.scripts.return_ops, batch, now_ms);
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

    #[tracing::instrument(skip_all, fields(batch = %batch, token = fence.token))]
    async fn expire_deadline(
        &self,
        batch: &BatchId,
        now_ms: u64,
        fence: &Fence,
    ) -> StoreResult<CompleteOutcome> {
        let (cancelled, _, _, _, finished, _): (i64, Vec<u32>, Vec<u32>, u32, String, String) =
            batch_invocation(&self.shared.scripts.expire_deadline, batch, now_ms)
                .arg(packed_fence(fence))
                .invoke_async(&mut self.connection())
                .await
                .map_err(|error| fenced_error(batch, error))?;
        if cancelled < 0 {
            return Err(StoreError::BatchNotFound(batch.clone()));
        }
        Ok(CompleteOutcome {
            recorded: cancelled as u32,
            finished: self.finished_state(batch, &finished).await?,
            ..CompleteOutcome::default()
        })
    }

    #[tracing::instrument(skip_all, fields(batches = batches.len()))]
    async fn mark_lost(
        &self,
        batches: &[BatchId],
        reason: &str,
        now_ms: u64,
    ) -> StoreResult<Vec<BatchId>> {
        let mut connection = self.connection();
        let mut marked = Vec::new();
        for batch in batches {
            let fresh: i64 = batch_invocation(&self.shared.scripts.mark_lost, batch, now_ms)
                .arg(reason)
                .invoke_async(&mut connection)
                .await?;
            if fresh == 1 {
                let _: i64 = connection
                    .zadd(keys::BATCHES, batch.as_str(), now_ms)
                    .await?;
                self.leave_active(batch).await?;
                // Lost is an end: watchers of the batch learn it here.
                self.publish_bell(keys::ended_bell(batch)).await?;
                marked.push(batch.clone());
            }
        }
        Ok(marked)
    }

    #[tracing::instrument(skip_all, fields(batch = %batch, index))]
    async fn op_waits(&self, batch: &BatchId, index: u32) -> StoreResult<OpWaits> {
        let (status, pending, missing_keys, lease, retry_at): (
            i64,
            u32,
            Vec<String>,
            String,
            String,
        ) = batch_invocation(&self.shared.scripts.op_waits, batch, 0)
            .arg(index)
            .invoke_async(&mut self.connection())
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

    #[tracing::instrument(skip_all, fields(batch = %batch, index))]
    async fn note_blocked(
        &self,
        batch: &BatchId,
        index: u32,
        message: &str,
        now_ms: u64,
    ) -> StoreResult<bool> {
        let status: i64 = batch_invocation(&self.shared.scripts.note_blocked, batch, now_ms)
            .arg(index)
            .arg(message)
            .invoke_async(&mut self.connection())
            .await?;
        if status < 0 {
            return Err(StoreError::BatchNotFound(batch.clone()));
        }
        Ok(status == 1)
    }

    #[tracing::instrument(skip_all, fields(batch = %batch))]
    async fn cancel(
        &self,
        batch: &BatchId,
        reason: &str,
        now_ms: u64,
    ) -> StoreResult<CancelOutcome> {
        let (cancelled, running, finished): (i64, Vec<i64>, String) = self
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
        // Idempotent: also repairs a previous call that died before this
        // step (then it is this call that takes the batch out: it rings).
        let removed = self.leave_active(batch).await?;
        if removed || !finished.is_empty() {
            self.publish_bell(keys::ended_bell(batch)).await?;
            self.schedule_expiry(batch).await?;
        }
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
                    cause: result.c.and_then(CauseJson::from_value),
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
    async fn list_batches(&self, limit: u32, tenant: Option<&str>) -> StoreResult<Vec<BatchMeta>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut connection = self.connection();
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

    async fn drop_expired(&self, now_ms: u64, max: u32) -> StoreResult<u32> {
        let mut connection = self.connection();
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
            let outcome: i64 = self
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

    async fn prune_batch_index(&self, from_ms: u64, max: u32) -> StoreResult<(u32, u64)> {
        let mut connection = self.connection();
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

    #[tracing::instrument(skip_all, fields(scope = %scope, key, size = value.len()))]
    async fn memory_put(
        &self,
        scope: &MemoryScope,
        key: &str,
        value: &[u8],
        options: &PutOptions,
        now_ms: u64,
    ) -> StoreResult<PutOutcome> {
        let written = self
            .write_memory(scope, key, value, options, None, now_ms)
            .await?;
        Ok(PutOutcome {
            version: written.version,
            unblocked: written.unblocked,
        })
    }

    #[tracing::instrument(skip_all, fields(scope = %scope, key))]
    async fn memory_get(&self, scope: &MemoryScope, key: &str) -> StoreResult<Option<MemoryValue>> {
        let mut connection = self.connection();
        for _ in 0..CHUNKED_READ_ATTEMPTS {
            let fields: HashMap<String, Vec<u8>> =
                connection.hgetall(keys::memory(scope, key)).await?;
            if fields.is_empty() {
                return Ok(None);
            }
            let text = |name: &str| {
                fields
                    .get(name)
                    .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
                    .unwrap_or_default()
            };
            let version: u64 = text("ver").parse().unwrap_or(0);
            let content_type = text("ct");
            if let Some(value) = fields.get("v") {
                return Ok(Some(MemoryValue {
                    value: value.clone(),
                    content_type,
                    version,
                }));
            }
            let generation = text("gen");
            let count: u64 = text("n").parse().unwrap_or(0);
            let mut pipe = redis::pipe();
            for number in 0..count {
                pipe.get(keys::chunk(scope, &generation, number));
            }
            let chunks: Vec<Option<Vec<u8>>> = pipe.query_async(&mut connection).await?;
            // A chunk gone means the value was overwritten under us: read again.
            if chunks.iter().all(Option::is_some) {
                let value = chunks.into_iter().flatten().flatten().collect();
                return Ok(Some(MemoryValue {
                    value,
                    content_type,
                    version,
                }));
            }
        }
        Err(corrupt(format_args!(
            "memory key `{key}` of {scope}: chunks kept vanishing while reading"
        )))
    }

    #[tracing::instrument(skip_all, fields(scope = %scope, key))]
    async fn memory_delete(
        &self,
        scope: &MemoryScope,
        key: &str,
        if_version: Option<u64>,
        now_ms: u64,
    ) -> StoreResult<bool> {
        let mut invocation =
            self.memory_invocation(&self.shared.scripts.memory_delete, scope, now_ms);
        invocation.arg(key).arg(
            if_version
                .map(|version| version.to_string())
                .unwrap_or_default(),
        );
        let reply: Vec<i64> = invocation.invoke_async(&mut self.connection()).await?;
        match reply.as_slice() {
            [-1, actual] => Err(StoreError::VersionMismatch {
                key: key.to_owned(),
                expected: if_version.unwrap_or(0),
                actual: *actual as u64,
            }),
            [deleted] => Ok(*deleted == 1),
            _ => Err(corrupt("memory_delete reply")),
        }
    }

    #[tracing::instrument(skip_all, fields(scope = %scope, prefix, limit))]
    async fn memory_list(
        &self,
        scope: &MemoryScope,
        prefix: &str,
        after_key: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<MemoryKeyInfo>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // ZRANGEBYLEX bounds: past `after_key` when it is at or beyond the
        // prefix, else from the prefix; up to the prefix followed by 0xff
        // (no UTF-8 key has that byte).
        let low: Vec<u8> = match after_key {
            Some(after) if after.as_bytes() >= prefix.as_bytes() => {
                [b"(".as_slice(), after.as_bytes()].concat()
            }
            _ => [b"[".as_slice(), prefix.as_bytes()].concat(),
        };
        let high: Vec<u8> = if prefix.is_empty() {
            b"+".to_vec()
        } else {
            [b"[".as_slice(), prefix.as_bytes(), &[0xff]].concat()
        };
        let flat: Vec<String> = self
            .shared
            .scripts
            .memory_list
            .key(keys::scope_prefix(scope))
            .arg(keys::DOORBELL_CHANNEL)
            .arg("")
            .arg(0)
            .arg(low)
            .arg(high)
            .arg(prefix)
            .arg(limit)
            .invoke_async(&mut self.connection())
            .await?;
        if !flat.len().is_multiple_of(5) {
            return Err(corrupt("memory_list reply"));
        }
        Ok(flat
            .chunks_exact(5)
            .map(|fields| MemoryKeyInfo {
                key: fields[0].clone(),
                version: fields[1].parse().unwrap_or(0),
                size: fields[2].parse().unwrap_or(0),
                content_type: fields[3].clone(),
                expires_at_ms: fields[4].parse().unwrap_or(0),
            })
            .collect())
    }

    #[tracing::instrument(skip_all, fields(scope = %scope, key, delta))]
    async fn memory_incr(
        &self,
        scope: &MemoryScope,
        key: &str,
        delta: i64,
        now_ms: u64,
    ) -> StoreResult<(i64, PutOutcome)> {
        let mut invocation =
            self.memory_invocation(&self.shared.scripts.memory_incr, scope, now_ms);
        invocation.arg(key).arg(delta);
        let reply: Vec<Value> = invocation.invoke_async(&mut self.connection()).await?;
        if let Some(Value::Int(-3)) = reply.first() {
            return Err(StoreError::NotAnInteger {
                key: key.to_owned(),
            });
        }
        let (Some(value), Some(version)) = (reply.first(), reply.get(1)) else {
            return Err(corrupt("memory_incr reply"));
        };
        let text: String = redis::from_redis_value(value.clone()).map_err(corrupt)?;
        let new_value: i64 = text
            .parse()
            .map_err(|_| corrupt(format_args!("memory_incr value `{text}`")))?;
        let version = value_i64(version)? as u64;
        let written = self
            .after_write(scope, key, version, &reply[2..], now_ms)
            .await?;
        Ok((
            new_value,
            PutOutcome {
                version,
                unblocked: written.unblocked,
            },
        ))
    }

    #[tracing::instrument(skip_all, fields(scope = %scope, prefix, after_revision))]
    async fn memory_changes(
        &self,
        scope: &MemoryScope,
        prefix: &str,
        after_revision: u64,
        max: u32,
    ) -> StoreResult<Vec<MemoryChange>> {
        let mut connection = self.connection();
        let mut changes = Vec::new();
        let mut cursor = after_revision;
        let mut first_page = true;
        while changes.len() < max as usize {
            let entries: Vec<(String, HashMap<String, Vec<u8>>)> = redis::cmd("XRANGE")
                .arg(keys::changes(scope))
                .arg(format!("(0-{cursor}"))
                .arg("+")
                .arg("COUNT")
                .arg(CHANGES_PAGE)
                .query_async(&mut connection)
                .await?;
            let page_len = entries.len();
            for (id, fields) in entries {
                let revision: u64 = id
                    .split_once('-')
                    .and_then(|(_, revision)| revision.parse().ok())
                    .ok_or_else(|| corrupt(format_args!("change id `{id}`")))?;
                // Revisions have no gaps, so the first one after the resume
                // point must be the next: anything else was trimmed.
                if first_page && revision != after_revision + 1 {
                    return Err(StoreError::ChangesTrimmed {
                        scope: scope.to_string(),
                        after: after_revision,
                        oldest: revision,
                    });
                }
                first_page = false;
                cursor = revision;
                let text = |name: &str| {
                    fields
                        .get(name)
                        .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
                        .unwrap_or_default()
                };
                let key = text("k");
                if !key.starts_with(prefix) {
                    continue;
                }
                changes.push(MemoryChange {
                    revision,
                    kind: if text("o") == "d" {
                        MemoryChangeKind::Delete
                    } else {
                        MemoryChangeKind::Put
                    },
                    version: text("n").parse().unwrap_or(0),
                    value: fields.get("v").cloned(),
                    content_type: text("c"),
                    at_ms: parse_ms(&text("t")),
                    key,
                });
                if changes.len() >= max as usize {
                    break;
                }
            }
            if page_len < CHANGES_PAGE {
                break;
            }
        }
        Ok(changes)
    }

    async fn memory_revision(&self, scope: &MemoryScope) -> StoreResult<u64> {
        let revision: Option<u64> = self.connection().get(keys::revision(scope)).await?;
        Ok(revision.unwrap_or(0))
    }

    #[tracing::instrument(skip_all, fields(batch = %batch))]
    async fn drain_outbox(&self, batch: &BatchId, now_ms: u64) -> StoreResult<u32> {
        let mut connection = self.connection();
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
                self.write_outboxed(
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
                    self.finished_state(batch, &state).await?;
                }
            }
        }
        Ok(handled)
    }

    async fn outboxes_pending(&self, batches: &[BatchId]) -> StoreResult<Vec<BatchId>> {
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for batch in batches {
            pipe.hlen(keys::outbox(batch));
        }
        let lengths: Vec<u64> = pipe.query_async(&mut self.connection()).await?;
        Ok(batches
            .iter()
            .zip(lengths)
            .filter(|(_, length)| *length > 0)
            .map(|(batch, _)| batch.clone())
            .collect())
    }

    #[tracing::instrument(skip_all, fields(batch = %batch, token = fence.token))]
    async fn expire_waits(
        &self,
        batch: &BatchId,
        now_ms: u64,
        fence: &Fence,
    ) -> StoreResult<CompleteOutcome> {
        let (failed, _, _, became_ready, finished): (i64, Vec<u32>, Vec<u32>, u32, String) =
            batch_invocation(&self.shared.scripts.expire_waits, batch, now_ms)
                .arg(packed_fence(fence))
                .invoke_async(&mut self.connection())
                .await
                .map_err(|error| fenced_error(batch, error))?;
        if failed < 0 {
            return Err(StoreError::BatchNotFound(batch.clone()));
        }
        Ok(CompleteOutcome {
            recorded: failed as u32,
            became_ready,
            finished: self.finished_state(batch, &finished).await?,
            ..CompleteOutcome::default()
        })
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
        let edges = added_edges(batch, first_index, &ops)?;
        let mut invocation = self.shared.scripts.add_ops.key(keys::batch_prefix(batch));
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
        ) = invocation.invoke_async(&mut self.connection()).await?;
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
        let (ready, ended) = self.register_waits(batch, &scope, &triples, now_ms).await?;
        became_ready += ready;
        if finished.is_empty() {
            finished = ended;
        }
        Ok(CompleteOutcome {
            became_ready,
            finished: self.finished_state(batch, &finished).await?,
            ..CompleteOutcome::default()
        })
    }

    async fn spawn_record(&self, batch: &BatchId, key: &str) -> StoreResult<Option<String>> {
        Ok(self.connection().hget(keys::spawn_keys(batch), key).await?)
    }

    #[tracing::instrument(skip_all, fields(batch = %batch, coordinator, ttl_ms))]
    async fn hold_batch(
        &self,
        batch: &BatchId,
        coordinator: &str,
        ttl_ms: u64,
        now_ms: u64,
    ) -> StoreResult<Option<Fence>> {
        let (status, token, holder): (i64, u64, String) =
            batch_invocation(&self.shared.scripts.hold, batch, now_ms)
                .arg(coordinator)
                .arg(ttl_ms.max(1))
                .invoke_async(&mut self.connection())
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

    #[tracing::instrument(skip_all, fields(batch = %batch, token = fence.token))]
    async fn release_batch(&self, batch: &BatchId, fence: &Fence) -> StoreResult<()> {
        let _: i64 = batch_invocation(&self.shared.scripts.release, batch, 0)
            .arg(packed_fence(fence))
            .invoke_async(&mut self.connection())
            .await?;
        Ok(())
    }

    async fn batch_owner(&self, batch: &BatchId, _now_ms: u64) -> StoreResult<Option<Fence>> {
        let value: Option<String> = self.connection().get(keys::owner(batch)).await?;
        value.as_deref().map(parse_fence).transpose()
    }

    #[tracing::instrument(skip_all, fields(coordinator, workers = workers.len()))]
    async fn publish_workers(
        &self,
        coordinator: &str,
        workers: &[WorkerEntry],
        until_ms: u64,
    ) -> StoreResult<()> {
        let json = serde_json::to_string(&PublishedWorkers {
            until_ms,
            workers: workers.to_vec(),
        })
        .map_err(|error| corrupt(format_args!("workers of {coordinator}: {error}")))?;
        let _: i64 = self
            .connection()
            .hset(keys::WORKERS, coordinator, json)
            .await?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn workers(&self, now_ms: u64) -> StoreResult<Vec<(String, WorkerEntry)>> {
        let flat: Vec<String> = self
            .shared
            .scripts
            .workers
            .key(keys::WORKERS)
            .arg(now_ms)
            .arg(WORKERS_FORGET_AFTER_MS)
            .invoke_async(&mut self.connection())
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
        listed.sort_by(|left, right| {
            (&left.0, &left.1.worker_id).cmp(&(&right.0, &right.1.worker_id))
        });
        Ok(listed)
    }

    #[tracing::instrument(skip_all, fields(batches = batches.len()))]
    async fn ready_depth(&self, batches: &[BatchId]) -> StoreResult<ReadyDepth> {
        self.read_ready_depth(batches).await
    }

    #[tracing::instrument(skip_all, fields(total))]
    async fn publish_ready_gauge(&self, total: u64) -> StoreResult<u64> {
        self.write_ready_gauge(total).await
    }

    #[tracing::instrument(skip_all, fields(token = %token.id))]
    async fn create_token(&self, token: &TokenRecord) -> StoreResult<()> {
        let record = serde_json::to_string(token).map_err(corrupt)?;
        let created: bool = self
            .connection()
            .hset_nx(keys::TOKENS, &token.id, record)
            .await?;
        if created {
            Ok(())
        } else {
            Err(StoreError::TokenExists(token.id.clone()))
        }
    }

    #[tracing::instrument(skip_all, fields(token = id))]
    async fn token(&self, id: &str) -> StoreResult<Option<TokenRecord>> {
        let mut pipe = redis::pipe();
        pipe.hget(keys::TOKENS, id)
            .hget(keys::TOKENS_REVOKED, id)
            .hget(keys::TOKENS_USED, id);
        let (record, revoked, used): (Option<String>, Option<u64>, Option<u64>) =
            pipe.query_async(&mut self.connection()).await?;
        let Some(record) = record else {
            return Ok(None);
        };
        let mut token: TokenRecord = serde_json::from_str(&record).map_err(corrupt)?;
        token.revoked_ms = revoked;
        token.last_used_ms = used;
        Ok(Some(token))
    }

    #[tracing::instrument(skip_all)]
    async fn tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        let mut pipe = redis::pipe();
        pipe.hgetall(keys::TOKENS)
            .hgetall(keys::TOKENS_REVOKED)
            .hgetall(keys::TOKENS_USED);
        let (records, revoked, used): (
            BTreeMap<String, String>,
            HashMap<String, u64>,
            HashMap<String, u64>,
        ) = pipe.query_async(&mut self.connection()).await?;
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

    #[tracing::instrument(skip_all, fields(token = id))]
    async fn revoke_token(&self, id: &str, now_ms: u64) -> StoreResult<bool> {
        let revoked: i64 = self
            .shared
            .scripts
            .revoke_token
            .key(keys::TOKENS)
            .key(keys::TOKENS_REVOKED)
            .key(keys::TOKENS_REVOCATIONS)
            .arg(id)
            .arg(now_ms)
            .invoke_async(&mut self.connection())
            .await?;
        Ok(revoked == 1)
    }

    async fn touch_token(&self, id: &str, now_ms: u64) -> StoreResult<()> {
        let _: i64 = self
            .connection()
            .hset(keys::TOKENS_USED, id, now_ms)
            .await?;
        Ok(())
    }

    async fn token_revocations(&self) -> StoreResult<u64> {
        let count: Option<u64> = self.connection().get(keys::TOKENS_REVOCATIONS).await?;
        Ok(count.unwrap_or(0))
    }

    fn doorbells(&self) -> broadcast::Receiver<Doorbell> {
        self.shared.doorbell.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bells_are_told_apart() {
        assert_eq!(
            parse_bell("b:0193"),
            Some(Doorbell::Batch(BatchId::new("0193")))
        );
        assert_eq!(
            parse_bell("mb:0193"),
            Some(Doorbell::Memory(MemoryScope::Batch(BatchId::new("0193"))))
        );
        assert_eq!(
            parse_bell("m:team"),
            Some(Doorbell::Memory(MemoryScope::Shared("team".to_owned())))
        );
        assert_eq!(
            parse_bell("n:0193"),
            Some(Doorbell::Started(BatchId::new("0193")))
        );
        assert_eq!(
            parse_bell("e:0193"),
            Some(Doorbell::Ended(BatchId::new("0193")))
        );
        assert_eq!(parse_bell("0193"), None);
    }

    #[test]
    fn waiter_members_parse_with_bars_in_the_key() {
        assert_eq!(
            parse_waiter("0193|12|a|b|any", "a|b"),
            Some((BatchId::new("0193"), 12, "any"))
        );
        assert_eq!(
            parse_waiter("0193|3|k|all", "k"),
            Some((BatchId::new("0193"), 3, "all"))
        );
        assert_eq!(parse_waiter("0193|x|k|all", "k"), None);
        assert_eq!(parse_waiter("0193|3|k|some", "k"), None);
    }
}
