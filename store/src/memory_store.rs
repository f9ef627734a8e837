//! The in-memory store behind `volley run`: the same semantics as the Redis store.
//!
//! One `std::sync::Mutex` guards everything: every verb is one short critical
//! section with no `.await` inside, which is what makes each verb atomic (the
//! Redis store gets the same from one Lua script per verb). Memory scopes,
//! their change logs and their waiters live apart from batches (a key may be
//! written before the batch that waits for it exists). TTLs run on the
//! monotonic clock, as Redis's `PEXPIRE` runs on real time; expired keys are
//! dropped when read or listed. Batch holds, on the other hand, are judged by
//! the `now_ms` the verbs are given (there is one process, so one clock).
//!
//! # Layout
//! This file holds the state's types ([`MemoryStore`], batches, ops,
//! records, memory scopes) and the scope bookkeeping; the rest by seam:
//! - `verbs` — the [`Store`] impl, each verb handing over to its module;
//! - `batch` — the batch state machine (count down, end, retry, skip,
//!   finish, hopeless keys);
//! - `lifecycle` — a batch as a whole: create, add ops, cancel, loss,
//!   expiry;
//! - `ops` — claim, complete, leases, deadlines, waits;
//! - `reads` — meta, op records, events, the batch list;
//! - `memory` — the memory verbs and `store_as` writes;
//! - `registry` — holds, the worker registry, tokens, the ready gauge.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::broadcast;
use volley_proto::BatchId;

use crate::common::{
    DOORBELL_CAPACITY, added_edges, declared_writers, pending_count, sane_multiplier, wait_keys,
    wait_triples,
};
use crate::model::*;
use crate::{AddOpsRefusal, Store, StoreError, StoreResult};

mod batch;
mod lifecycle;
mod memory;
mod ops;
mod reads;
mod registry;
mod verbs;

use batch::*;
use memory::*;

/// How many of a batch's latest events a final lost-worker failure looks
/// through for its attempt's start (`STARTED_LOOKBACK` in
/// `lua/expire_leases.lua`).
const STARTED_LOOKBACK: usize = 10_000;

/// An in-process [`Store`]. Cheap to clone: clones share the state.
#[derive(Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

struct Shared {
    epoch: String,
    state: Mutex<Inner>,
    doorbell: broadcast::Sender<Doorbell>,
    /// Changes kept per memory scope (see [`MemoryStore::with_change_log_cap`]).
    change_log_cap: AtomicU64,
}

#[derive(Default)]
struct Inner {
    batches: HashMap<BatchId, BatchData>,
    scopes: HashMap<MemoryScope, ScopeData>,
    /// The worker registry: coordinator → (until_ms, its workers).
    workers: BTreeMap<String, (u64, Vec<WorkerEntry>)>,
    /// The ready gauge's length (`publish_ready_gauge`).
    ready_gauge: u64,
    /// API tokens by id, with `revoked_ms` and `last_used_ms` kept inline.
    tokens: BTreeMap<String, TokenRecord>,
    token_revocations: u64,
}

/// One memory scope: its keys, change log and waiters.
#[derive(Default)]
struct ScopeData {
    entries: BTreeMap<String, Entry>,
    changes: VecDeque<MemoryChange>,
    revision: u64,
    /// Memory key → ops (of any batch) waiting for it, ordered so waking is
    /// deterministic (batch, then index, as the Redis store does).
    waiters: HashMap<String, BTreeSet<Waiter>>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Waiter {
    batch: BatchId,
    index: u32,
    any: bool,
}

struct Entry {
    value: Vec<u8>,
    content_type: String,
    version: u64,
    expires: Option<Instant>,
    expires_at_ms: u64,
}

impl ScopeData {
    /// The live entry of `key`; an expired one is dropped.
    fn live(&mut self, key: &str) -> Option<&Entry> {
        let expired = self
            .entries
            .get(key)
            .is_some_and(|entry| entry.expires.is_some_and(|at| at <= Instant::now()));
        if expired {
            self.entries.remove(key);
        }
        self.entries.get(key)
    }

    fn version(&mut self, key: &str) -> u64 {
        self.live(key).map_or(0, |entry| entry.version)
    }

    /// Appends a change with the next revision and trims to `cap`.
    fn log(&mut self, mut change: MemoryChange, cap: u64) {
        self.revision += 1;
        change.revision = self.revision;
        self.changes.push_back(change);
        while self.changes.len() as u64 > cap.max(1) {
            self.changes.pop_front();
        }
    }
}

struct BatchData {
    meta: BatchMeta,
    memory: MemoryScope,
    spec: Vec<u8>,
    spec_added: Vec<Vec<u8>>,
    ops: Vec<OpData>,
    ready: [VecDeque<u32>; PRIORITY_LEVELS as usize],
    /// (wait deadline, index) of ops with memory waits and a deadline.
    deadlines: BTreeSet<(u64, u32)>,
    /// (lease deadline, index) of running ops (mirrors `lease_until`).
    leases: BTreeSet<(u64, u32)>,
    /// Running op → its lease deadline.
    lease_until: HashMap<u32, u64>,

    /// (ready-at, index) of ops waiting out a retry backoff: state Ready but
    /// on no ready queue (mirrors `retry_at`).
    delayed: BTreeSet<(u64, u32)>,
    /// Delayed op → its ready-at.
    retry_at: HashMap<u32, u64>,
    /// Events, packed (seq = position + 1); see [`PackedEvent`].
    events: Vec<PackedEvent>,
    /// Messages of events that have one (`PackedEvent::message` - 1).
    event_messages: Vec<Box<str>>,
    /// Causes of events that have one, by their `PackedEvent::message`
    /// (only skips and fail_fast cancels have one: kept apart so every
    /// event stays small).
    event_causes: HashMap<u32, Cause>,
    /// Worker ids named by records and events; 0 is "" (none).
    workers: Interned,
    /// Unix ms; 0: none.
    deadline_ms: u64,
    cancel_requested: bool,
    fail_fast_fired: bool,
    deadline_fired: bool,
    /// `retry_failed: sequential` was asked for.
    retry_failed_sequential: bool,
    /// The sequential pass started (it runs once): one op at a time, every
    /// failure final.
    sequential: bool,
    /// The coordinator holding the batch, until when (unix ms, exclusive).
    owner: Option<(Fence, u64)>,
    /// The last fence token handed out (0: none yet).
    owner_token: u64,
    /// Kept this long once finished (0: until deleted); see `NewBatch`.
    retain_ms: u64,
    /// Unix ms from which `drop_expired` deletes it: set when it finishes
    /// with a retention.
    expires_at_ms: Option<u64>,
    /// The request digest of an idempotent submission ('' for none).
    request_digest: String,
    /// Idempotent `add_ops`: key → the first call's record.
    spawn_keys: HashMap<String, String>,
    /// Lost-worker retries per op (see `NewBatch::lost_worker_retries`).
    lost_worker_retries: u32,
    /// Op → lost-worker retries it had (only ops that lost a worker).
    lost_workers: HashMap<u32, u32>,
    /// Op → (attempt, worker) noted by `renew_leases_on`.
    running_on: HashMap<u32, (u32, String)>,
    /// Declared writers of the batch's own memory keys (empty for a shared
    /// namespace): see [`Store::complete`].
    writers: Writers,
}

/// The declared writers of a batch's own memory keys, as the Redis store's
/// `writes` / `writer_ops` / `writers_left` hashes.
#[derive(Default)]
struct Writers {
    /// Op → the keys it declares (only ops that declare some).
    by_op: HashMap<u32, Box<[String]>>,
    /// Key → (declared writers not yet ended, its writers in order).
    by_key: HashMap<String, (u32, Vec<u32>)>,
    /// Keys whose last writer ended in this step, not yet settled (FIFO).
    hopeless: Vec<String>,
}

impl Writers {
    fn add(&mut self, first_index: u32, ops: &[NewOp]) {
        let declared = declared_writers(first_index, ops);
        for (index, keys) in declared.by_op {
            self.by_op.insert(index, keys.into_boxed_slice());
        }
        for (key, writers) in declared.by_key {
            let entry = self.by_key.entry(key).or_default();
            entry.0 += writers.len() as u32;
            entry.1.extend(writers);
        }
    }

    /// Op `index` ended: count its keys down; those reaching 0 queue up.
    fn ended(&mut self, index: u32) {
        let Some(keys) = self.by_op.get(&index) else {
            return;
        };
        for key in keys.iter() {
            if let Some((left, _)) = self.by_key.get_mut(key)
                && *left > 0
            {
                *left -= 1;
                if *left == 0 {
                    self.hopeless.push(key.clone());
                }
            }
        }
    }

    /// Every declared writer of `key` ended (it has some).
    fn all_ended(&self, key: &str) -> bool {
        self.by_key.get(key).is_some_and(|(left, _)| *left == 0)
    }
}

/// One op. Kept small, since a million-op batch is normal: what most ops
/// never have (memory waits, a retry policy of their own, texts) is boxed
/// and absent, worker ids are interned, leases and delays live in the
/// batch's maps (only running or delayed ops have them).
struct OpData {
    priority: u8,
    run_if_always: bool,
    max_attempts: u32,
    pending: u32,
    /// Attempts handed back by `return_ops` (not counted against `max_attempts`).
    handed_back: u32,
    dependents: Vec<u32>,
    /// `None`: the default policy.
    retry: Option<Box<RetryPolicy>>,
    /// `None`: the op waits for no memory key.
    waits: Option<Box<Waits>>,
    record: Record,
}

/// The memory waits of an op that has some.
struct Waits {
    /// `wait_for` and `wait_for_any` keys, sorted and deduplicated.
    all: Vec<String>,
    any: Vec<String>,
    /// `wait_for` keys counted so far.
    arrived: BTreeSet<String>,
    any_done: bool,
    /// When the op started waiting (for the error of an expired wait).
    since_ms: u64,
}

impl Waits {
    /// The keys still missing: `wait_for` keys not arrived, then the whole
    /// `wait_for_any` group while none arrived.
    fn missing(&self) -> impl Iterator<Item = &String> {
        let any: &[String] = if self.any_done { &[] } else { &self.any };
        self.all
            .iter()
            .filter(|key| !self.arrived.contains(*key))
            .chain(any)
    }
}

/// What [`OpRecord`] says, compactly: the worker interned in the batch's
/// [`Interned`], the texts boxed only when one is not empty.
struct Record {
    state: OpState,
    attempts: u32,
    worker: u32,
    /// Unix ms; 0 when it never started.
    started_ms: u64,
    duration_ms: u64,
    texts: Option<Box<Texts>>,
}

#[derive(Default)]
struct Texts {
    output: String,
    error: String,
    /// What `error` names as data, when the store wrote it.
    cause: Option<Cause>,
    details_json: String,
}

impl Record {
    fn new(state: OpState, attempts: u32) -> Record {
        Record {
            state,
            attempts,
            worker: 0,
            started_ms: 0,
            duration_ms: 0,
            texts: None,
        }
    }

    fn texts_mut(&mut self) -> &mut Texts {
        self.texts.get_or_insert_with(Box::default)
    }

    fn set_error(&mut self, error: String, cause: Option<Cause>) {
        if !error.is_empty() || cause.is_some() || self.texts.is_some() {
            let texts = self.texts_mut();
            texts.error = error;
            texts.cause = cause;
        }
    }

    fn set_result(&mut self, output: &str, details_json: &str) {
        if output.is_empty() && details_json.is_empty() {
            if let Some(texts) = &mut self.texts {
                texts.output.clear();
                texts.details_json.clear();
            }
            return;
        }
        let texts = self.texts_mut();
        output.clone_into(&mut texts.output);
        details_json.clone_into(&mut texts.details_json);
    }

    /// [`Self::to_record`] without cloning the output and details.
    fn to_summary(&self, workers: &Interned) -> OpSummary {
        let (error_first_line, cause) = match &self.texts {
            Some(texts) => (summary_error_line(&texts.error), texts.cause.clone()),
            None => (String::new(), None),
        };
        OpSummary {
            state: self.state,
            attempts: self.attempts,
            worker: workers.name(self.worker).to_owned(),
            started_ms: self.started_ms,
            duration_ms: self.duration_ms,
            error_first_line,
            cause,
        }
    }

    fn to_record(&self, workers: &Interned) -> OpRecord {
        let (output, error, cause, details_json) = match &self.texts {
            Some(texts) => (
                texts.output.clone(),
                texts.error.clone(),
                texts.cause.clone(),
                texts.details_json.clone(),
            ),
            None => (String::new(), String::new(), None, String::new()),
        };
        OpRecord {
            state: self.state,
            attempts: self.attempts,
            worker: workers.name(self.worker).to_owned(),
            started_ms: self.started_ms,
            duration_ms: self.duration_ms,
            output,
            error,
            cause,
            details_json,
        }
    }
}

/// Strings named by a small number: 0 is always "".
struct Interned {
    names: Vec<Box<str>>,
    numbers: HashMap<Box<str>, u32>,
}

impl Default for Interned {
    fn default() -> Self {
        Interned {
            names: vec!["".into()],
            numbers: HashMap::new(),
        }
    }
}

impl Interned {
    fn number(&mut self, name: &str) -> u32 {
        if name.is_empty() {
            return 0;
        }
        if let Some(number) = self.numbers.get(name) {
            return *number;
        }
        let number = self.names.len() as u32;
        self.names.push(name.into());
        self.numbers.insert(name.into(), number);
        number
    }

    fn name(&self, number: u32) -> &str {
        self.names.get(number as usize).map_or("", |name| name)
    }
}

/// An [`Event`] in 32 bytes: its seq is its position, its worker interned,
/// its message (if any) kept apart.
struct PackedEvent {
    at_ms: u64,
    /// `u32::MAX`: none.
    op_index: u32,
    attempt: u32,
    worker: u32,
    /// 0: empty; else 1 + its index in `BatchData::event_messages`.
    message: u32,
    kind: EventKind,
    batch_state: Option<BatchState>,
}

impl OpData {
    fn new(op: &NewOp, dependents: Vec<u32>, since_ms: u64) -> OpData {
        let (all, any) = wait_keys(op);
        let waits = (!(all.is_empty() && any.is_empty())).then(|| {
            Box::new(Waits {
                all,
                any,
                arrived: BTreeSet::new(),
                any_done: false,
                since_ms,
            })
        });
        OpData {
            priority: op.priority,
            run_if_always: op.run_if_always,
            max_attempts: op.max_attempts.max(1),
            pending: pending_count(op),
            handed_back: 0,
            dependents,
            retry: (op.retry != RetryPolicy::DEFAULT).then(|| Box::new(op.retry.clone())),
            waits,
            record: Record::new(OpState::Waiting, 0),
        }
    }

    fn has_deadline(&self, op: &NewOp) -> bool {
        op.wait_deadline_ms > 0 && self.waits.is_some()
    }

    fn retry(&self) -> &RetryPolicy {
        self.retry.as_deref().unwrap_or(&RetryPolicy::DEFAULT)
    }
}

/// What one memory write did.
struct Written {
    version: u64,
    unblocked: u32,
    /// Ops of the batch passed as `current` that became ready.
    became_ready_current: u32,
    /// Batches whose countdowns were decremented (to ring).
    touched: Vec<BatchId>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        let (doorbell, _) = broadcast::channel(DOORBELL_CAPACITY);
        MemoryStore {
            shared: Arc::new(Shared {
                epoch: uuid::Uuid::now_v7().to_string(),
                state: Mutex::new(Inner::default()),
                doorbell,
                change_log_cap: AtomicU64::new(DEFAULT_CHANGE_LOG_CAP),
            }),
        }
    }

    /// Keeps the last `cap` changes per memory scope instead of
    /// [`DEFAULT_CHANGE_LOG_CAP`] (exactly; Redis keeps at least as many).
    /// Applies to every clone of this store.
    pub fn with_change_log_cap(self, cap: u64) -> MemoryStore {
        self.shared
            .change_log_cap
            .store(cap.max(1), Ordering::Relaxed);
        self
    }

    fn cap(&self) -> u64 {
        self.shared.change_log_cap.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves state that is still
        // structurally valid (each verb mutates field by field), so recover.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn ring(&self, batch: &BatchId) {
        // No receiver is fine: the bell is only a hint.
        let _ = self.shared.doorbell.send(Doorbell::Batch(batch.clone()));
    }

    fn ring_events(&self, batch: &BatchId) {
        let _ = self.shared.doorbell.send(Doorbell::Events(batch.clone()));
    }

    fn ring_all(&self, bells: Vec<Doorbell>) {
        for bell in bells {
            let _ = self.shared.doorbell.send(bell);
        }
    }

    /// Rings `Ended` when a verb's outcome says it finished the batch.
    fn ring_if_ended(&self, batch: &BatchId, finished: Option<BatchState>) {
        if finished.is_some() {
            let _ = self.shared.doorbell.send(Doorbell::Ended(batch.clone()));
        }
    }
}

impl Inner {
    fn batch(&self, batch: &BatchId) -> StoreResult<&BatchData> {
        self.batches
            .get(batch)
            .ok_or_else(|| StoreError::BatchNotFound(batch.clone()))
    }

    fn batch_mut(&mut self, batch: &BatchId) -> StoreResult<&mut BatchData> {
        self.batches
            .get_mut(batch)
            .ok_or_else(|| StoreError::BatchNotFound(batch.clone()))
    }

    /// Stores `value` under `key` (after the version check) and wakes its
    /// waiters. `current` is a batch taken out of `batches` by the caller.
    #[allow(clippy::too_many_arguments)]
    fn put(
        &mut self,
        scope: &MemoryScope,
        key: &str,
        value: Vec<u8>,
        options: &PutOptions,
        now_ms: u64,
        cap: u64,
        current: Option<&mut BatchData>,
    ) -> StoreResult<Written> {
        let scope_data = self.scopes.entry(scope.clone()).or_default();
        let actual = scope_data.version(key);
        if let Some(expected) = options.if_version
            && expected != actual
        {
            return Err(StoreError::VersionMismatch {
                key: key.to_owned(),
                expected,
                actual,
            });
        }
        let version = actual + 1;
        let carried = (value.len() <= CHANGE_VALUE_LIMIT).then(|| value.clone());
        scope_data.entries.insert(
            key.to_owned(),
            Entry {
                value,
                content_type: options.content_type.clone(),
                version,
                expires: options
                    .ttl_ms
                    .map(|ttl| Instant::now() + Duration::from_millis(ttl)),
                expires_at_ms: options.ttl_ms.map_or(0, |ttl| now_ms.saturating_add(ttl)),
            },
        );
        scope_data.log(
            MemoryChange {
                revision: 0,
                key: key.to_owned(),
                kind: MemoryChangeKind::Put,
                version,
                value: carried,
                content_type: options.content_type.clone(),
                at_ms: now_ms,
            },
            cap,
        );
        Ok(self.wake(scope, key, version, current))
    }

    /// Pops the waiters of a key just written and marks it arrived for each.
    fn wake(
        &mut self,
        scope: &MemoryScope,
        key: &str,
        version: u64,
        mut current: Option<&mut BatchData>,
    ) -> Written {
        let mut written = Written {
            version,
            unblocked: 0,
            became_ready_current: 0,
            touched: Vec::new(),
        };
        let waiters = self
            .scopes
            .get_mut(scope)
            .and_then(|scope_data| scope_data.waiters.remove(key))
            .unwrap_or_default();
        for waiter in waiters {
            let is_current = current
                .as_deref()
                .is_some_and(|data| data.meta.id == waiter.batch);
            let (decremented, ready) = match (is_current, current.as_deref_mut()) {
                (true, Some(data)) => data.arrive(waiter.index, key, waiter.any),
                _ => match self.batches.get_mut(&waiter.batch) {
                    Some(data) => data.arrive(waiter.index, key, waiter.any),
                    None => (false, false),
                },
            };
            if decremented {
                written.unblocked += 1;
                if !written.touched.contains(&waiter.batch) {
                    written.touched.push(waiter.batch.clone());
                }
            }
            if ready && is_current {
                written.became_ready_current += 1;
            }
        }
        written
    }

    /// Registers memory waits of ops of `data` (create_batch / add_ops):
    /// present keys count as arrived at once, others get a waiter. Returns
    /// how many ops became ready.
    fn register_waits(
        &mut self,
        data: &mut BatchData,
        triples: &[(u32, String, &'static str)],
    ) -> u32 {
        let scope_data = self.scopes.entry(data.memory.clone()).or_default();
        let mut became_ready = 0;
        for (index, key, mode) in triples {
            let any = *mode == "any";
            if scope_data.live(key).is_some() {
                if data.arrive(*index, key, any).1 {
                    became_ready += 1;
                }
            } else {
                scope_data
                    .waiters
                    .entry(key.clone())
                    .or_default()
                    .insert(Waiter {
                        batch: data.meta.id.clone(),
                        index: *index,
                        any,
                    });
            }
        }
        became_ready
    }
}

fn clamp_priority(priority: u8) -> usize {
    usize::from(priority.min(PRIORITY_LEVELS - 1))
}

/// Longest backoff delay (as `MAX_DELAY_MS` in `lua/common.lua`).
const MAX_DELAY_MS: f64 = 1e15;

/// The backoff before the attempt after `used` attempts (as `retry_delay`
/// in `lua/common.lua`): `initial * multiplier^(used - 1)`, at most `max`
/// (0: no cap); with jitter, `delay/2 + floor(random * (delay - delay/2 + 1))`
/// for `random` in [0, 1). 0 without backoff.
pub(crate) fn backoff_delay(policy: &RetryPolicy, used: u32, random: f64) -> u64 {
    if policy.backoff_initial_ms == 0 {
        return 0;
    }
    let exponent = used.saturating_sub(1);
    let initial = policy.backoff_initial_ms as f64;
    let mut delay = initial
        * sane_multiplier(policy.backoff_multiplier).powi(exponent.min(i32::MAX as u32) as i32);
    if delay.is_nan() {
        delay = initial;
    }
    if policy.backoff_max_ms > 0 && delay > policy.backoff_max_ms as f64 {
        delay = policy.backoff_max_ms as f64;
    }
    let delay = delay.min(MAX_DELAY_MS).floor() as u64;
    if !policy.backoff_jitter {
        return delay;
    }
    let half = delay / 2;
    let jittered = half + (random * (delay - half + 1) as f64).floor() as u64;
    jittered.min(delay)
}

/// A uniform random number in [0, 1) (the low bits of a v7 uuid are random).
fn random_unit() -> f64 {
    (uuid::Uuid::now_v7().as_u128() & 0xffff_ffff) as f64 / 4_294_967_296.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_op_state_stays_small() {
        // A million-op batch keeps one of each per op (and two events).
        assert!(std::mem::size_of::<OpData>() <= 96);
        assert!(std::mem::size_of::<PackedEvent>() <= 32);
    }

    #[test]
    fn interned_names_round_trip_and_empty_is_zero() {
        let mut names = Interned::default();
        assert_eq!(names.number(""), 0);
        let first = names.number("local-1");
        assert_eq!(names.number("local-2"), first + 1);
        assert_eq!(names.number("local-1"), first);
        assert_eq!(names.name(first), "local-1");
        assert_eq!(names.name(0), "");
        assert_eq!(names.name(999), "");
    }
}
