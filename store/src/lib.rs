//! Volley's coordination state. The coordinator talks to it only through the
//! [`Store`] trait's verbs (`create_batch`, `claim`, `complete`, …), never
//! through connections, so the Redis store and the in-memory store behind
//! `volley run` are interchangeable and pass one conformance suite.
//!
//! Readiness is a countdown: each op stores how many dependencies and
//! memory keys it still waits for; a completion decrements its dependents and
//! pushes those reaching zero onto the batch's ready queues. Nothing on the
//! hot path scans the batch.
//!
//! # Layout
//! - [`model`] — the types the verbs take and return.
//! - [`keys`] — every Redis key name (the only place one is spelled).
//! - [`redis_store`] — the Redis implementation; its scripts live in `lua/`.
//! - [`memory_store`] — the in-memory implementation, same semantics.
//! - [`conformance`] — the suite both implementations must pass.

pub mod conformance;
pub mod keys;
pub mod memory_store;
pub mod model;
pub mod redis_store;

use async_trait::async_trait;
use volley_proto::BatchId;

pub use memory_store::MemoryStore;
pub use model::*;
pub use redis_store::RedisStore;

/// What can go wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("batch {0} not found")]
    BatchNotFound(BatchId),
    #[error("batch {0} already exists")]
    BatchExists(BatchId),
    #[error("corrupt record in the store: {0}")]
    Corrupt(String),
    #[error("the store restarted empty (epoch {expected} is gone): state in flight was lost")]
    EpochLost { expected: String },
}

impl StoreError {
    /// True when trying again later may succeed (connection trouble).
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Redis(error) => {
                error.is_io_error() || error.is_connection_dropped() || error.is_timeout()
            }
            StoreError::BatchNotFound(_)
            | StoreError::BatchExists(_)
            | StoreError::Corrupt(_)
            | StoreError::EpochLost { .. } => false,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The verbs the coordinator needs. Every verb that changes more than one
/// thing does it atomically (one Lua script in Redis, one lock in memory).
/// Mutating verbs ring the doorbell for the batch they touched.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Returns this store's epoch, writing a new one if none exists yet.
    /// A coordinator remembers it; a later call returning another value
    /// means the store restarted empty.
    async fn epoch(&self) -> StoreResult<String>;

    /// Writes a whole validated batch. Ops with `deps == 0` and no missing
    /// `wait_for` key go onto the ready queues; `wait_for` keys that already
    /// exist in the batch's memory count as satisfied. Appends the
    /// `BatchSubmitted` event (seq 1). Fails with `BatchExists` on a reused id.
    async fn create_batch(&self, batch: NewBatch) -> StoreResult<()>;

    /// The opaque spec bytes given at creation (the coordinator's encoding of
    /// the batch), so any coordinator can resume it.
    async fn batch_spec(&self, batch: &BatchId) -> StoreResult<Option<Vec<u8>>>;

    /// Ids of batches not yet finished, oldest first.
    async fn active_batches(&self) -> StoreResult<Vec<BatchId>>;

    /// Pops up to `max` ready ops, highest priority first (FIFO within a
    /// priority), marks them running with `attempt + 1`, appends one
    /// `OpStarted` event each. Returns nothing once the batch is finished or
    /// cancelled. Also capped by the batch's `max_parallel` (when > 0) minus
    /// its running ops, so several coordinators never exceed it together.
    /// `BatchNotFound` for an unknown batch.
    async fn claim(&self, batch: &BatchId, max: u32, now_ms: u64) -> StoreResult<Vec<Claimed>>;

    /// Records results of running ops in one atomic step: a result whose op
    /// is not running or whose attempt differs is stale and ignored (listed in
    /// `stale`). A failure with attempts left puts the op back on the ready
    /// queue (`OpRetrying`). A final result records state and result, writes
    /// `store_as` into the batch's memory (unblocking waiters), counts down
    /// dependents (pushing those reaching zero onto the ready queues; those
    /// that needed this op to succeed end `Skipped`, transitively), applies
    /// `fail_fast`, and finishes the batch when every op has ended.
    async fn complete(
        &self,
        batch: &BatchId,
        completions: &[Completion],
        now_ms: u64,
    ) -> StoreResult<CompleteOutcome>;

    /// Cancels every op not yet ended (running ones included: their late
    /// results become stale) and finishes the batch `Cancelled`. Returns the
    /// ops that were running, so their workers can be told to stop.
    /// Idempotent: cancelling a finished batch changes nothing.
    async fn cancel(
        &self,
        batch: &BatchId,
        reason: &str,
        now_ms: u64,
    ) -> StoreResult<CancelOutcome>;

    async fn meta(&self, batch: &BatchId) -> StoreResult<Option<BatchMeta>>;

    /// Per-op records in index order (`0..total`).
    async fn op_records(&self, batch: &BatchId) -> StoreResult<Vec<OpRecord>>;

    /// The records of the given ops, in the order given: what dispatch reads
    /// to fill in `${ops.X…}` without reading the whole batch. An index the
    /// batch does not have is `BatchNotFound`.
    async fn op_records_at(&self, batch: &BatchId, indices: &[u32]) -> StoreResult<Vec<OpRecord>>;

    /// Events with `seq > after_seq`, in order, at most `max`.
    async fn events(&self, batch: &BatchId, after_seq: u64, max: u32) -> StoreResult<Vec<Event>>;

    /// Most recent batches first.
    async fn list_batches(&self, limit: u32) -> StoreResult<Vec<BatchMeta>>;

    /// Writes a key of the batch's memory and makes ready the ops whose last
    /// missing input it was. Returns how many ops it unblocked.
    async fn put_memory(
        &self,
        batch: &BatchId,
        key: &str,
        value: &[u8],
        now_ms: u64,
    ) -> StoreResult<u32>;

    async fn get_memory(&self, batch: &BatchId, key: &str) -> StoreResult<Option<Vec<u8>>>;

    /// Doorbells: a batch's ready queue may have grown or its events moved.
    /// Only a hint — the state is in the store. `Doorbell::Resync` after a
    /// reconnect, when some bells may have been missed.
    fn doorbells(&self) -> tokio::sync::broadcast::Receiver<Doorbell>;
}
