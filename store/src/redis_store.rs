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
//!
//! # Layout
//! This file holds [`RedisStore`] (connecting, the helpers verbs share) and
//! the constants; the rest by seam:
//! - `verbs` — the [`Store`] impl, each verb handing over to its module;
//! - `lifecycle` — a batch as a whole: create, add ops, cancel, loss, the
//!   outbox, expiry;
//! - `ops` — the batch state machine op by op: claim, complete, leases,
//!   deadlines, waits;
//! - `reads` — meta, op records, events, the batch list;
//! - `memory` — memory scopes: the memory verbs and the writes and waits
//!   batch verbs share;
//! - `registry` — holds, the worker registry, tokens, the ready gauge;
//! - `scripts` — the scripts registry; `doorbells` — the pub/sub listener;
//! - `codec` — how values are written into fields and script arguments
//!   and read back.

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

mod codec;
mod doorbells;
mod lifecycle;
mod memory;
mod ops;
mod reads;
mod ready_gauge;
mod registry;
mod scripts;
mod verbs;

use codec::*;
use doorbells::*;
use scripts::*;

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
