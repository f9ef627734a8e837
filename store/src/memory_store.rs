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

impl BatchData {
    /// The hold still live at `now_ms`, if any.
    fn live_owner(&self, now_ms: u64) -> Option<&Fence> {
        self.owner
            .as_ref()
            .filter(|(_, until_ms)| *until_ms > now_ms)
            .map(|(fence, _)| fence)
    }

    /// `NotOwner` unless `fence` is the live hold at `now_ms`.
    fn check_fence(&self, fence: &Fence, now_ms: u64) -> StoreResult<()> {
        match self.live_owner(now_ms) {
            Some(live) if live == fence => Ok(()),
            live => Err(StoreError::NotOwner {
                batch: self.meta.id.clone(),
                holder: live.map(|live| live.coordinator.clone()),
            }),
        }
    }

    /// When attempt `attempt` of op `index` started: its `OpStarted` event
    /// among the latest [`STARTED_LOOKBACK`] events (as `expire_leases.lua`
    /// looks).
    fn attempt_started_ms(&self, index: u32, attempt: u32) -> Option<u64> {
        self.events
            .iter()
            .rev()
            .take(STARTED_LOOKBACK)
            .find(|event| {
                event.kind == EventKind::OpStarted
                    && event.op_index == index
                    && event.attempt == attempt
            })
            .map(|event| event.at_ms)
    }

    fn event(
        &mut self,
        at_ms: u64,
        kind: EventKind,
        op_index: Option<u32>,
        attempt: u32,
        worker: &str,
        message: &str,
    ) -> u32 {
        let worker = self.workers.number(worker);
        let message = if message.is_empty() {
            0
        } else {
            self.event_messages.push(message.into());
            self.event_messages.len() as u32
        };
        self.events.push(PackedEvent {
            at_ms,
            op_index: op_index.unwrap_or(u32::MAX),
            attempt,
            worker,
            message,
            kind,
            batch_state: None,
        });
        message
    }

    /// Ends op `index` in `state` (skipped or cancelled) for `cause`, whose
    /// message and data its record and its event (`kind`) both carry.
    fn end_op_for(
        &mut self,
        index: u32,
        state: OpState,
        kind: EventKind,
        cause: &Cause,
        now_ms: u64,
    ) {
        let attempt = self.ops[index as usize].record.attempts;
        let message = cause.message();
        self.end_op_caused(index, state, message.clone(), Some(cause.clone()));
        let number = self.event(now_ms, kind, Some(index), attempt, "", &message);
        self.event_causes.insert(number, cause.clone());
    }

    /// Event `seq` (1-based), unpacked.
    fn unpack(&self, seq: u64, event: &PackedEvent) -> Event {
        let message = match event.message {
            0 => String::new(),
            number => self
                .event_messages
                .get(number as usize - 1)
                .map_or_else(String::new, |message| message.to_string()),
        };
        Event {
            seq,
            at_ms: event.at_ms,
            kind: event.kind,
            op_index: (event.op_index != u32::MAX).then_some(event.op_index),
            attempt: event.attempt,
            worker: self.workers.name(event.worker).to_owned(),
            message,
            cause: self.event_causes.get(&event.message).cloned(),
            batch_state: event.batch_state,
        }
    }

    fn push_ready(&mut self, index: u32) {
        let op = &mut self.ops[index as usize];
        op.record.state = OpState::Ready;
        let priority = clamp_priority(op.priority);
        self.ready[priority].push_back(index);
    }

    /// One input of `index` arrived: count down, ready at zero. Returns
    /// whether the op became ready.
    fn count_down(&mut self, index: u32) -> bool {
        let Some(op) = self.ops.get_mut(index as usize) else {
            return false;
        };
        if op.record.state != OpState::Waiting {
            return false;
        }
        op.pending = op.pending.saturating_sub(1);
        if op.pending == 0 {
            self.push_ready(index);
            return true;
        }
        false
    }

    fn clear_lease(&mut self, index: u32) {
        if let Some(until) = self.lease_until.remove(&index) {
            self.leases.remove(&(until, index));
        }
    }

    /// Whether the op runs exactly this attempt now.
    fn runs(&self, claimed: Claimed) -> bool {
        self.ops.get(claimed.index as usize).is_some_and(|op| {
            op.record.state == OpState::Running && op.record.attempts == claimed.attempt
        })
    }

    fn set_lease(&mut self, index: u32, until: u64) {
        self.clear_lease(index);
        self.lease_until.insert(index, until);
        self.leases.insert((until, index));
    }

    fn clear_delay(&mut self, index: u32) {
        if let Some(at) = self.retry_at.remove(&index) {
            self.delayed.remove(&(at, index));
        }
    }

    /// The op leaves Running (not ended): running counter -1, lease dropped.
    fn leave_running(&mut self, index: u32) {
        self.meta.running = self.meta.running.saturating_sub(1);
        self.clear_lease(index);
    }

    /// The delay (ms, 0 = at once) before another attempt of `index`, which
    /// just failed with `kind`; `None` when there is none (see
    /// `retry_delay` in `lua/common.lua`).
    fn retry_delay(&self, index: u32, kind: FailureKind, retry_after_ms: u64) -> Option<u64> {
        let op = &self.ops[index as usize];
        let policy = op.retry();
        let allowed = match kind {
            FailureKind::Error => policy.on_failure,
            FailureKind::Timeout => policy.on_timeout,
            FailureKind::LostWorker => policy.on_lost_worker,
            FailureKind::Permanent => false,
        };
        let used = op.record.attempts.saturating_sub(op.handed_back);
        // After fail_fast, and in the sequential pass, every failure is final.
        if !allowed || self.fail_fast_fired || self.sequential || used >= op.max_attempts {
            return None;
        }
        let delay = backoff_delay(policy, used, random_unit());
        Some(delay.max(retry_after_ms.min(MAX_DELAY_MS as u64)))
    }

    /// Another attempt of `index` after `delay` ms: onto its ready queue at
    /// once, or (state Ready) into the delayed set. Returns the ready-at.
    fn requeue(&mut self, index: u32, delay: u64, now_ms: u64) -> u64 {
        if delay == 0 {
            self.push_ready(index);
            return now_ms;
        }
        let ready_at = now_ms.saturating_add(delay);
        self.ops[index as usize].record.state = OpState::Ready;
        self.retry_at.insert(index, ready_at);
        self.delayed.insert((ready_at, index));
        ready_at
    }

    fn next_retry_at(&self) -> Option<u64> {
        self.delayed.first().map(|(at, _)| *at)
    }

    /// Moves delayed retries whose ready-at passed onto their ready queues.
    fn promote_due(&mut self, now_ms: u64) {
        while let Some(&(at, index)) = self.delayed.first() {
            if at > now_ms {
                break;
            }
            self.delayed.remove(&(at, index));
            self.retry_at.remove(&index);
            let op = &self.ops[index as usize];
            if op.record.state == OpState::Ready {
                let priority = clamp_priority(op.priority);
                self.ready[priority].push_back(index);
            }
        }
    }

    /// Attempt `attempt` of running op `index` failed with `kind`: another
    /// attempt (a `retrying` event, returns true) or failed for good (the
    /// caller records the end and returns false).
    #[allow(clippy::too_many_arguments)]
    fn retry_or_not(
        &mut self,
        index: u32,
        attempt: u32,
        kind: FailureKind,
        retry_after_ms: u64,
        worker: &str,
        error: &str,
        now_ms: u64,
    ) -> bool {
        let Some(delay) = self.retry_delay(index, kind, retry_after_ms) else {
            return false;
        };
        let ready_at = self.requeue(index, delay, now_ms);
        let message = retry_message(error, delay, ready_at);
        self.event(
            now_ms,
            EventKind::OpRetrying,
            Some(index),
            attempt,
            worker,
            &message,
        );
        true
    }

    /// Memory key `key` arrived for op `index` (one of its `wait_for`
    /// keys, or of its `wait_for_any` group when `any`). Idempotent, like
    /// `arrive` in `lua/common.lua`. Returns (countdown decremented, op
    /// became ready).
    fn arrive(&mut self, index: u32, key: &str, any: bool) -> (bool, bool) {
        let Some(op) = self.ops.get_mut(index as usize) else {
            return (false, false);
        };
        if op.record.state != OpState::Waiting {
            return (false, false);
        }
        // Only an op with memory waits has waiters.
        let Some(waits) = op.waits.as_deref_mut() else {
            return (false, false);
        };
        if any {
            if waits.any_done {
                return (false, false);
            }
            waits.any_done = true;
        } else if !waits.arrived.insert(key.to_owned()) {
            return (false, false);
        }
        (true, self.count_down(index))
    }

    /// `index` failed for good: on a fail_fast batch, the first such failure
    /// cancels every op still waiting or ready.
    fn apply_fail_fast(&mut self, index: u32, now_ms: u64) {
        if self.meta.on_failure == OnFailure::FailFast && !self.fail_fast_fired {
            self.fail_fast_fired = true;
            let cause = Cause::FailFast { index };
            self.cancel_where(
                &[OpState::Waiting, OpState::Ready],
                &cause.message(),
                Some(&cause),
                now_ms,
            );
        }
    }

    /// The keys op `index` still misses, as `` `a`, `b` `` (empty: none).
    fn missing_keys(&self, index: u32) -> String {
        let Some(waits) = self
            .ops
            .get(index as usize)
            .and_then(|op| op.waits.as_deref())
        else {
            return String::new();
        };
        waits
            .missing()
            .map(|key| format!("`{key}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn end_op(&mut self, index: u32, state: OpState, error: String) {
        self.end_op_caused(index, state, error, None);
    }

    fn end_op_caused(&mut self, index: u32, state: OpState, error: String, cause: Option<Cause>) {
        self.clear_lease(index);
        self.clear_delay(index);
        let op = &mut self.ops[index as usize];
        op.record.state = state;
        op.record.set_error(error, cause);
        match state {
            OpState::Succeeded => self.meta.succeeded += 1,
            OpState::Failed => self.meta.failed += 1,
            OpState::Skipped => self.meta.skipped += 1,
            OpState::Cancelled => self.meta.cancelled += 1,
            _ => {}
        }
        self.writers.ended(index);
    }

    /// `index` just ended in `state`: counts down or skips its dependents,
    /// transitively (a worklist, not recursion). Returns how many became ready.
    fn propagate(&mut self, index: u32, state: OpState, now_ms: u64) -> u32 {
        let mut became_ready = 0;
        let mut worklist = VecDeque::from([(index, state)]);
        while let Some((ended, ended_state)) = worklist.pop_front() {
            let dependents = self.ops[ended as usize].dependents.clone();
            for dependent in dependents {
                let Some(op) = self.ops.get(dependent as usize) else {
                    continue;
                };
                if ended_state == OpState::Succeeded || op.run_if_always {
                    if self.count_down(dependent) {
                        became_ready += 1;
                    }
                } else if !op.record.state.is_final() {
                    let cause = Cause::Dependency {
                        index: ended,
                        state: ended_state,
                    };
                    self.end_op_for(
                        dependent,
                        OpState::Skipped,
                        EventKind::OpSkipped,
                        &cause,
                        now_ms,
                    );
                    worklist.push_back((dependent, OpState::Skipped));
                }
            }
        }
        became_ready
    }

    /// Cancels every op in one of `states`, in index order; returns them with
    /// whether each was running.
    fn cancel_where(
        &mut self,
        states: &[OpState],
        reason: &str,
        cause: Option<&Cause>,
        now_ms: u64,
    ) -> Vec<(Claimed, bool)> {
        let mut cancelled = Vec::new();
        for index in 0..self.ops.len() as u32 {
            let record = &self.ops[index as usize].record;
            if !states.contains(&record.state) {
                continue;
            }
            let (was, attempt) = (record.state, record.attempts);
            if was == OpState::Running {
                self.meta.running = self.meta.running.saturating_sub(1);
            }
            self.end_op_caused(index, OpState::Cancelled, reason.to_owned(), cause.cloned());
            let number = self.event(
                now_ms,
                EventKind::OpCancelled,
                Some(index),
                attempt,
                "",
                reason,
            );
            if let Some(cause) = cause {
                self.event_causes.insert(number, cause.clone());
            }
            cancelled.push((Claimed { index, attempt }, was == OpState::Running));
        }
        for queue in &mut self.ready {
            queue.clear();
        }
        cancelled
    }

    /// Finishes the batch if every op has ended — or, for `retry_failed:
    /// sequential`, starts its sequential pass instead (as `finish_if_done`
    /// in `lua/common.lua`). Returns the state it finished in, and how many
    /// ops a pass it started made ready.
    fn finish_if_done(&mut self, now_ms: u64) -> (Option<BatchState>, u32) {
        if self.meta.state != BatchState::Running || self.meta.done() < self.meta.total {
            return (None, 0);
        }
        if self.meta.failed > 0
            && self.retry_failed_sequential
            && !self.sequential
            && !self.cancel_requested
            && !self.deadline_fired
            && !self.fail_fast_fired
        {
            return (None, self.start_sequential_pass(now_ms));
        }
        let state = if self.cancel_requested {
            BatchState::Cancelled
        } else if self.deadline_fired {
            // expire_deadline set the error already.
            BatchState::Failed
        } else if self.meta.succeeded == self.meta.total {
            BatchState::Succeeded
        } else {
            BatchState::Failed
        };
        if state == BatchState::Failed && !self.deadline_fired {
            self.meta.error = failed_summary(&self.meta);
        }
        self.leases.clear();
        self.lease_until.clear();
        self.delayed.clear();
        self.retry_at.clear();
        self.meta.state = state;
        self.meta.finished_ms = Some(now_ms);
        if self.retain_ms > 0 {
            self.expires_at_ms = Some(now_ms + self.retain_ms);
        }
        let message = self.meta.error.clone();
        self.event(now_ms, EventKind::BatchFinished, None, 0, "", &message);
        if let Some(last) = self.events.last_mut() {
            last.batch_state = Some(state);
        }
        (Some(state), 0)
    }

    /// `retry_failed: sequential` (see the `Store` trait doc): every op has
    /// ended, some failed. Every Failed or Skipped op goes back to Waiting,
    /// pending = how many of its dependencies are among them; its memory
    /// waits count as arrived, its wait deadline and record are dropped.
    /// Those pending nothing are queued in index order. Returns how many
    /// became ready.
    fn start_sequential_pass(&mut self, now_ms: u64) -> u32 {
        let again: BTreeSet<u32> = (0..self.ops.len() as u32)
            .filter(|&index| {
                matches!(
                    self.ops[index as usize].record.state,
                    OpState::Failed | OpState::Skipped
                )
            })
            .collect();
        let mut pending: HashMap<u32, u32> = HashMap::new();
        for &index in &again {
            for &dependent in &self.ops[index as usize].dependents {
                if again.contains(&dependent) {
                    *pending.entry(dependent).or_default() += 1;
                }
            }
        }
        self.sequential = true;
        let message = sequential_pass_message(self.meta.failed);
        // Every op had ended, so the queues hold nothing claimable.
        for queue in &mut self.ready {
            queue.clear();
        }
        self.deadlines.retain(|(_, index)| !again.contains(index));
        let mut became_ready = 0;
        for &index in &again {
            let op = &mut self.ops[index as usize];
            let was = op.record.state;
            match was {
                OpState::Failed => self.meta.failed = self.meta.failed.saturating_sub(1),
                _ => self.meta.skipped = self.meta.skipped.saturating_sub(1),
            }
            if let Some(waits) = op.waits.as_deref_mut() {
                waits.arrived = waits.all.iter().cloned().collect();
                waits.any_done = true;
            }
            op.record = Record::new(OpState::Waiting, op.record.attempts);
            op.pending = pending.get(&index).copied().unwrap_or(0);
            let attempt = op.record.attempts;
            let ready = op.pending == 0;
            let retrying = if was == OpState::Failed {
                message.as_str()
            } else {
                SEQUENTIAL_PASS_REQUEUED
            };
            self.event(
                now_ms,
                EventKind::OpRetrying,
                Some(index),
                attempt,
                "",
                retrying,
            );
            if ready {
                self.push_ready(index);
                became_ready += 1;
            }
        }
        became_ready
    }
}

/// The message of a `retrying` event: the failure, then when (as
/// `retry_message` in `lua/common.lua`).
fn retry_message(error: &str, delay: u64, ready_at: u64) -> String {
    if delay == 0 {
        return error.to_owned();
    }
    let when = format!("next attempt at {} (in {delay} ms)", rfc3339_ms(ready_at));
    if error.is_empty() {
        when
    } else {
        format!("{error}; {when}")
    }
}

/// The batch error of a batch that ended `Failed`.
pub(crate) fn failed_summary(meta: &BatchMeta) -> String {
    format!(
        "{} failed, {} skipped, {} cancelled",
        meta.failed, meta.skipped, meta.cancelled
    )
}

#[async_trait]
impl Store for MemoryStore {
    async fn epoch(&self) -> StoreResult<String> {
        Ok(self.shared.epoch.clone())
    }

    #[tracing::instrument(skip_all, fields(batch = %batch.id))]
    async fn create_batch(&self, batch: NewBatch) -> StoreResult<Created> {
        let batch_id = batch.id.clone();
        let mut bells = Vec::new();
        {
            let mut inner = self.lock();
            // One lock: a batch here is always whole (never `creating`).
            if let Some(existing) = inner.batches.get(&batch.id) {
                if batch.request_digest.is_empty() {
                    return Err(StoreError::BatchExists(batch.id));
                }
                if existing.request_digest == batch.request_digest
                    && existing.meta.tenant == batch.tenant
                {
                    return Ok(Created::Existing);
                }
                return Err(StoreError::IdempotencyConflict(batch.id));
            }
            // A batch scope is always the batch's own memory.
            let memory = match batch.memory {
                MemoryScope::Batch(_) => MemoryScope::Batch(batch.id.clone()),
                shared @ MemoryScope::Shared(_) => shared,
            };
            let mut ops = Vec::with_capacity(batch.ops.len());
            let mut deadlines = BTreeSet::new();
            for (index, new_op) in batch.ops.iter().enumerate() {
                let op = OpData::new(new_op, new_op.dependents.clone(), batch.created_ms);
                if op.has_deadline(new_op) {
                    deadlines.insert((new_op.wait_deadline_ms, index as u32));
                }
                ops.push(op);
            }
            let mut data = BatchData {
                meta: BatchMeta {
                    id: batch.id.clone(),
                    name: batch.name,
                    state: BatchState::Running,
                    created_ms: batch.created_ms,
                    finished_ms: None,
                    max_parallel: batch.max_parallel,
                    on_failure: batch.on_failure,
                    total: batch.ops.len() as u32,
                    succeeded: 0,
                    failed: 0,
                    skipped: 0,
                    cancelled: 0,
                    running: 0,
                    error: String::new(),
                    tenant: batch.tenant,
                },
                memory,
                spec: batch.spec,
                spec_added: Vec::new(),
                ops,
                ready: Default::default(),
                deadlines,
                leases: BTreeSet::new(),
                lease_until: HashMap::new(),
                delayed: BTreeSet::new(),
                retry_at: HashMap::new(),
                events: Vec::new(),
                event_messages: Vec::new(),
                event_causes: HashMap::new(),
                workers: Interned::default(),
                deadline_ms: batch.deadline_ms,
                cancel_requested: false,
                fail_fast_fired: false,
                deadline_fired: false,
                retry_failed_sequential: batch.retry_failed_sequential,
                sequential: false,
                owner: None,
                owner_token: 0,
                retain_ms: batch.retain_ms,
                expires_at_ms: None,
                request_digest: batch.request_digest,
                spawn_keys: HashMap::new(),
                lost_worker_retries: batch.lost_worker_retries,
                lost_workers: HashMap::new(),
                running_on: HashMap::new(),
                writers: Writers::default(),
            };
            if matches!(data.memory, MemoryScope::Batch(_)) {
                data.writers.add(0, &batch.ops);
            }
            // Same order as the Redis store: first the ops that wait for
            // nothing, then those whose keys are present already.
            for index in 0..data.meta.total {
                if data.ops[index as usize].pending == 0 {
                    data.push_ready(index);
                }
            }
            let triples = wait_triples(0, &batch.ops);
            inner.register_waits(&mut data, &triples);
            data.event(
                batch.created_ms,
                EventKind::BatchSubmitted,
                None,
                0,
                "",
                &batch.submitted_by,
            );
            // An empty batch is finished as soon as it exists.
            let (finished, _) = data.finish_if_done(batch.created_ms);
            inner.batches.insert(batch.id, data);
            bells.push(Doorbell::Batch(batch_id.clone()));
            if finished.is_none() {
                bells.push(Doorbell::Started(batch_id));
            }
        }
        self.ring_all(bells);
        Ok(Created::New)
    }

    async fn spawn_record(&self, batch: &BatchId, key: &str) -> StoreResult<Option<String>> {
        Ok(self
            .lock()
            .batches
            .get(batch)
            .and_then(|data| data.spawn_keys.get(key).cloned()))
    }

    async fn batch_spec(&self, batch: &BatchId) -> StoreResult<Option<StoredSpec>> {
        Ok(self.lock().batches.get(batch).map(|data| StoredSpec {
            base: data.spec.clone(),
            added: data.spec_added.clone(),
        }))
    }

    async fn active_batches(&self) -> StoreResult<Vec<BatchId>> {
        let inner = self.lock();
        let mut active: Vec<&BatchMeta> = inner
            .batches
            .values()
            .map(|data| &data.meta)
            .filter(|meta| meta.state == BatchState::Running)
            .collect();
        active
            .sort_by(|left, right| (left.created_ms, &left.id).cmp(&(right.created_ms, &right.id)));
        Ok(active.into_iter().map(|meta| meta.id.clone()).collect())
    }

    #[tracing::instrument(skip_all, fields(batch = %batch))]
    async fn claim(
        &self,
        batch: &BatchId,
        max: u32,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> StoreResult<Vec<Claimed>> {
        let claimed = {
            let mut inner = self.lock();
            let data = inner.batch_mut(batch)?;
            if data.meta.state != BatchState::Running || max == 0 {
                return Ok(Vec::new());
            }
            data.promote_due(now_ms);
            let mut limit = max;
            if data.meta.max_parallel > 0 {
                limit = limit.min(data.meta.max_parallel.saturating_sub(data.meta.running));
            }
            if data.sequential {
                limit = limit.min(1u32.saturating_sub(data.meta.running));
            }
            let mut claimed = Vec::new();
            for priority in 0..PRIORITY_LEVELS as usize {
                while (claimed.len() as u32) < limit {
                    let Some(index) = data.ready[priority].pop_front() else {
                        break;
                    };
                    let op = &mut data.ops[index as usize];
                    if op.record.state != OpState::Ready {
                        continue;
                    }
                    op.record.state = OpState::Running;
                    op.record.attempts += 1;
                    let attempt = op.record.attempts;
                    data.meta.running += 1;
                    data.set_lease(index, lease_until_ms);
                    data.event(now_ms, EventKind::OpStarted, Some(index), attempt, "", "");
                    claimed.push(Claimed { index, attempt });
                }
            }
            claimed
        };
        if !claimed.is_empty() {
            self.ring_events(batch);
        }
        Ok(claimed)
    }

    #[tracing::instrument(skip_all, fields(batch = %batch))]
    async fn complete(
        &self,
        batch: &BatchId,
        completions: &[Completion],
        now_ms: u64,
    ) -> StoreResult<CompleteOutcome> {
        let cap = self.cap();
        let mut bells = Vec::new();
        let outcome = {
            let mut guard = self.lock();
            let inner = &mut *guard;
            // Taken out of the map while it is worked on, so memory writes
            // (which may wake other batches) can borrow `inner` meanwhile.
            let mut data = inner
                .batches
                .remove(batch)
                .ok_or_else(|| StoreError::BatchNotFound(batch.clone()))?;
            let shared = matches!(data.memory, MemoryScope::Shared(_));
            let memory = data.memory.clone();
            let mut outcome = CompleteOutcome::default();
            let mut shared_writes: Vec<(String, Vec<u8>)> = Vec::new();
            for completion in completions {
                let index = completion.index;
                let Some(op) = data.ops.get_mut(index as usize) else {
                    outcome.stale.push(index);
                    continue;
                };
                if op.record.state != OpState::Running || op.record.attempts != completion.attempt {
                    outcome.stale.push(index);
                    continue;
                }
                data.leave_running(index);
                if !completion.ok
                    && data.retry_or_not(
                        index,
                        completion.attempt,
                        completion.failure,
                        completion.retry_after_ms,
                        &completion.worker,
                        &completion.error,
                        now_ms,
                    )
                {
                    outcome.retried.push(index);
                    continue;
                }
                let op = &mut data.ops[index as usize];
                let state = if completion.ok {
                    OpState::Succeeded
                } else {
                    OpState::Failed
                };
                op.record.started_ms = completion.started_ms;
                op.record.duration_ms = completion.duration_ms;
                op.record
                    .set_result(&completion.output, &completion.details_json);
                data.ops[index as usize].record.worker = data.workers.number(&completion.worker);
                data.end_op(index, state, completion.error.clone());
                let kind = if completion.ok {
                    EventKind::OpSucceeded
                } else {
                    EventKind::OpFailed
                };
                data.event(
                    now_ms,
                    kind,
                    Some(index),
                    completion.attempt,
                    &completion.worker,
                    &completion.error,
                );
                outcome.recorded += 1;
                if completion.ok
                    && let Some(key) = &completion.store_as
                {
                    let value = completion.output.as_bytes().to_vec();
                    if shared {
                        // Like the Redis store: after the completions.
                        shared_writes.push((key.clone(), value));
                    } else {
                        let written = store_as(inner, &memory, key, value, now_ms, cap, &mut data);
                        outcome.became_ready += written.became_ready_current;
                        bells.push(Doorbell::Memory(memory.clone()));
                    }
                }
                outcome.became_ready += data.propagate(index, state, now_ms);
                if state == OpState::Failed {
                    data.apply_fail_fast(index, now_ms);
                }
            }
            outcome.became_ready += settle_hopeless(&mut inner.scopes, &mut data, now_ms);
            let (finished, pass_ready) = data.finish_if_done(now_ms);
            outcome.finished = finished;
            outcome.became_ready += pass_ready;
            for (key, value) in shared_writes {
                let written = store_as(inner, &memory, &key, value, now_ms, cap, &mut data);
                outcome.became_ready += written.became_ready_current;
                bells.extend(written.touched.into_iter().map(Doorbell::Batch));
                bells.push(Doorbell::Memory(memory.clone()));
            }
            outcome.next_retry_at_ms = data.next_retry_at();
            inner.batches.insert(batch.clone(), data);
            outcome
        };
        self.ring(batch);
        self.ring_all(bells);
        self.ring_if_ended(batch, outcome.finished);
        Ok(outcome)
    }

    #[tracing::instrument(skip_all, fields(batch = %batch, ops = ops.len()))]
    async fn renew_leases_on(
        &self,
        batch: &BatchId,
        ops: &[Claimed],
        lease_until_ms: u64,
        worker: &str,
    ) -> StoreResult<Vec<Claimed>> {
        let mut inner = self.lock();
        let data = inner.batch_mut(batch)?;
        let mut stale = Vec::new();
        for claimed in ops {
            if data.runs(*claimed) {
                data.set_lease(claimed.index, lease_until_ms);
                if !worker.is_empty() {
                    data.running_on
                        .insert(claimed.index, (claimed.attempt, worker.to_owned()));
                }
            } else {
                stale.push(*claimed);
            }
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
        let outcome = {
            let mut guard = self.lock();
            let inner = &mut *guard;
            let data = inner
                .batches
                .get_mut(batch)
                .ok_or_else(|| StoreError::BatchNotFound(batch.clone()))?;
            data.check_fence(fence, now_ms)?;
            let mut outcome = CompleteOutcome::default();
            let due: Vec<(u64, u32)> = data
                .leases
                .iter()
                .take_while(|(until, _)| *until <= now_ms)
                .copied()
                .collect();
            if due.is_empty() {
                outcome.next_retry_at_ms = data.next_retry_at();
                return Ok(outcome);
            }
            if data.meta.state != BatchState::Running {
                return Ok(outcome);
            }
            let mut due_sorted: Vec<(u32, u64)> =
                due.iter().map(|(until, index)| (*index, *until)).collect();
            due_sorted.sort_unstable();
            for (index, until) in due_sorted {
                let op = &data.ops[index as usize];
                if op.record.state != OpState::Running {
                    data.clear_lease(index);
                    continue;
                }
                let attempt = op.record.attempts;
                data.leave_running(index);
                let worker = match data.running_on.remove(&index) {
                    Some((noted_attempt, worker)) if noted_attempt == attempt => worker,
                    _ => String::new(),
                };
                let error = lost_worker_message(&worker, until);
                let lost = data.lost_workers.get(&index).copied().unwrap_or(0);
                if lost < data.lost_worker_retries && !data.fail_fast_fired {
                    data.lost_workers.insert(index, lost + 1);
                    data.ops[index as usize].handed_back += 1;
                    data.requeue(index, 0, now_ms);
                    let message = format!(
                        "{error}; runs again (lost-worker retry {} of {})",
                        lost + 1,
                        data.lost_worker_retries
                    );
                    data.event(
                        now_ms,
                        EventKind::OpRetrying,
                        Some(index),
                        attempt,
                        &worker,
                        &message,
                    );
                    outcome.retried.push(index);
                    continue;
                }
                if data.retry_or_not(
                    index,
                    attempt,
                    FailureKind::LostWorker,
                    0,
                    &worker,
                    &error,
                    now_ms,
                ) {
                    outcome.retried.push(index);
                    continue;
                }
                data.end_op(index, OpState::Failed, error.clone());
                // The record keeps the worker and how long the attempt ran,
                // from its `started` event (looked for as the Redis store
                // does, among the latest STARTED_LOOKBACK events) to the end
                // of its lease.
                let started_ms = data.attempt_started_ms(index, attempt);
                let worker_number = data.workers.number(&worker);
                let record = &mut data.ops[index as usize].record;
                record.worker = worker_number;
                record.started_ms = started_ms.unwrap_or(0);
                record.duration_ms = started_ms.map_or(0, |started| until.saturating_sub(started));
                data.event(
                    now_ms,
                    EventKind::OpFailed,
                    Some(index),
                    attempt,
                    &worker,
                    &error,
                );
                outcome.recorded += 1;
                outcome.became_ready += data.propagate(index, OpState::Failed, now_ms);
                data.apply_fail_fast(index, now_ms);
            }
            outcome.became_ready += settle_hopeless(&mut inner.scopes, data, now_ms);
            let (finished, pass_ready) = data.finish_if_done(now_ms);
            outcome.finished = finished;
            outcome.became_ready += pass_ready;
            outcome.next_retry_at_ms = data.next_retry_at();
            outcome
        };
        self.ring(batch);
        self.ring_if_ended(batch, outcome.finished);
        Ok(outcome)
    }

    #[tracing::instrument(skip_all, fields(batch = %batch, ops = ops.len()))]
    async fn return_ops(&self, batch: &BatchId, ops: &[Claimed], now_ms: u64) -> StoreResult<u32> {
        let returned = {
            let mut inner = self.lock();
            let data = inner.batch_mut(batch)?;
            let mut returned = Vec::new();
            for claimed in ops {
                let running_it = data.ops.get(claimed.index as usize).is_some_and(|op| {
                    op.record.state == OpState::Running && op.record.attempts == claimed.attempt
                });
                if !running_it {
                    continue;
                }
                data.leave_running(claimed.index);
                let op = &mut data.ops[claimed.index as usize];
                op.handed_back += 1;
                op.record.state = OpState::Ready;
                data.event(
                    now_ms,
                    EventKind::OpRetrying,
                    Some(claimed.index),
                    claimed.attempt,
                    "",
                    "handed back by its worker",
                );
                returned.push(claimed.index);
            }
            // To the front of their queues, in the order given.
            for &index in returned.iter().rev() {
                let priority = clamp_priority(data.ops[index as usize].priority);
                data.ready[priority].push_front(index);
            }
            returned.len() as u32
        };
        if returned > 0 {
            self.ring(batch);
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
        let outcome = {
            let mut inner = self.lock();
            let data = inner.batch_mut(batch)?;
            data.check_fence(fence, now_ms)?;
            if data.meta.state != BatchState::Running
                || data.deadline_ms == 0
                || now_ms < data.deadline_ms
            {
                return Ok(CompleteOutcome::default());
            }
            data.deadline_fired = true;
            data.meta.error = "deadline exceeded".to_owned();
            let cancelled = data.cancel_where(
                &[OpState::Waiting, OpState::Ready, OpState::Running],
                "cancelled: the batch's deadline passed",
                None,
                now_ms,
            );
            CompleteOutcome {
                recorded: cancelled.len() as u32,
                finished: data.finish_if_done(now_ms).0,
                ..CompleteOutcome::default()
            }
        };
        self.ring(batch);
        self.ring_if_ended(batch, outcome.finished);
        Ok(outcome)
    }

    #[tracing::instrument(skip_all, fields(batches = batches.len()))]
    async fn mark_lost(
        &self,
        batches: &[BatchId],
        reason: &str,
        now_ms: u64,
    ) -> StoreResult<Vec<BatchId>> {
        let marked = {
            let mut inner = self.lock();
            let mut marked = Vec::new();
            for batch in batches {
                if inner.batches.contains_key(batch) {
                    continue;
                }
                let mut data = BatchData {
                    meta: BatchMeta {
                        id: batch.clone(),
                        name: String::new(),
                        state: BatchState::Lost,
                        created_ms: now_ms,
                        finished_ms: Some(now_ms),
                        max_parallel: 0,
                        on_failure: OnFailure::Continue,
                        total: 0,
                        succeeded: 0,
                        failed: 0,
                        skipped: 0,
                        cancelled: 0,
                        running: 0,
                        error: reason.to_owned(),
                        tenant: String::new(),
                    },
                    memory: MemoryScope::Batch(batch.clone()),
                    spec: Vec::new(),
                    spec_added: Vec::new(),
                    ops: Vec::new(),
                    ready: Default::default(),
                    deadlines: BTreeSet::new(),
                    leases: BTreeSet::new(),
                    lease_until: HashMap::new(),
                    delayed: BTreeSet::new(),
                    retry_at: HashMap::new(),
                    events: Vec::new(),
                    event_messages: Vec::new(),
                    event_causes: HashMap::new(),
                    workers: Interned::default(),
                    deadline_ms: 0,
                    cancel_requested: false,
                    fail_fast_fired: false,
                    deadline_fired: false,
                    retry_failed_sequential: false,
                    sequential: false,
                    owner: None,
                    owner_token: 0,
                    retain_ms: 0,
                    expires_at_ms: None,
                    request_digest: String::new(),
                    spawn_keys: HashMap::new(),
                    lost_worker_retries: 0,
                    lost_workers: HashMap::new(),
                    running_on: HashMap::new(),
                    writers: Writers::default(),
                };
                data.event(now_ms, EventKind::BatchFinished, None, 0, "", reason);
                if let Some(last) = data.events.last_mut() {
                    last.batch_state = Some(BatchState::Lost);
                }
                inner.batches.insert(batch.clone(), data);
                marked.push(batch.clone());
            }
            marked
        };
        for batch in &marked {
            self.ring(batch);
            // Lost is an end: watchers of the batch learn it here.
            self.ring_if_ended(batch, Some(BatchState::Lost));
        }
        Ok(marked)
    }

    async fn op_waits(&self, batch: &BatchId, index: u32) -> StoreResult<OpWaits> {
        let inner = self.lock();
        let data = inner.batch(batch)?;
        let op = data
            .ops
            .get(index as usize)
            .ok_or_else(|| StoreError::BatchNotFound(batch.clone()))?;
        let mut waits = OpWaits {
            lease_until_ms: data.lease_until.get(&index).copied(),
            retry_at_ms: data.retry_at.get(&index).copied(),
            ..OpWaits::default()
        };
        if op.record.state == OpState::Waiting {
            waits.pending = op.pending;
            if let Some(op_waits) = op.waits.as_deref() {
                waits.missing_keys = op_waits.missing().cloned().collect();
            }
        }
        Ok(waits)
    }

    #[tracing::instrument(skip_all, fields(batch = %batch, index))]
    async fn note_blocked(
        &self,
        batch: &BatchId,
        index: u32,
        message: &str,
        now_ms: u64,
    ) -> StoreResult<bool> {
        {
            let mut inner = self.lock();
            let data = inner.batch_mut(batch)?;
            let op = data
                .ops
                .get(index as usize)
                .ok_or_else(|| StoreError::BatchNotFound(batch.clone()))?;
            if data.meta.state != BatchState::Running || op.record.state.is_final() {
                return Ok(false);
            }
            let attempt = op.record.attempts;
            data.event(
                now_ms,
                EventKind::OpBlocked,
                Some(index),
                attempt,
                "",
                message,
            );
        }
        self.ring_events(batch);
        Ok(true)
    }

    #[tracing::instrument(skip_all, fields(batch = %batch))]
    async fn cancel(
        &self,
        batch: &BatchId,
        reason: &str,
        now_ms: u64,
    ) -> StoreResult<CancelOutcome> {
        let (outcome, finished) = {
            let mut inner = self.lock();
            let data = inner.batch_mut(batch)?;
            if data.meta.state != BatchState::Running {
                return Ok(CancelOutcome::default());
            }
            data.cancel_requested = true;
            let reason = format!("cancelled: {reason}");
            data.meta.error = reason.clone();
            let cancelled = data.cancel_where(
                &[OpState::Waiting, OpState::Ready, OpState::Running],
                &reason,
                None,
                now_ms,
            );
            let outcome = CancelOutcome {
                cancelled: cancelled.len() as u32,
                running: cancelled
                    .into_iter()
                    .filter(|(_, was_running)| *was_running)
                    .map(|(claimed, _)| claimed)
                    .collect(),
            };
            let (finished, _) = data.finish_if_done(now_ms);
            (outcome, finished)
        };
        self.ring(batch);
        self.ring_if_ended(batch, finished);
        Ok(outcome)
    }

    async fn meta(&self, batch: &BatchId) -> StoreResult<Option<BatchMeta>> {
        Ok(self.lock().batches.get(batch).map(|data| data.meta.clone()))
    }

    async fn op_records(&self, batch: &BatchId) -> StoreResult<Vec<OpRecord>> {
        let inner = self.lock();
        let data = inner.batch(batch)?;
        Ok(data
            .ops
            .iter()
            .map(|op| op.record.to_record(&data.workers))
            .collect())
    }

    async fn op_durations(&self, batch: &BatchId) -> StoreResult<Vec<u64>> {
        let inner = self.lock();
        let data = inner.batch(batch)?;
        Ok(data.ops.iter().map(|op| op.record.duration_ms).collect())
    }

    async fn op_records_at(&self, batch: &BatchId, indices: &[u32]) -> StoreResult<Vec<OpRecord>> {
        let inner = self.lock();
        let data = inner.batch(batch)?;
        indices
            .iter()
            .map(|index| {
                data.ops
                    .get(*index as usize)
                    .map(|op| op.record.to_record(&data.workers))
                    .ok_or_else(|| StoreError::BatchNotFound(batch.clone()))
            })
            .collect()
    }

    async fn events(&self, batch: &BatchId, after_seq: u64, max: u32) -> StoreResult<Vec<Event>> {
        let inner = self.lock();
        let Some(data) = inner.batches.get(batch) else {
            return Ok(Vec::new());
        };
        let start = usize::try_from(after_seq)
            .unwrap_or(usize::MAX)
            .min(data.events.len());
        Ok(data.events[start..]
            .iter()
            .take(max as usize)
            .enumerate()
            .map(|(offset, event)| data.unpack((start + offset) as u64 + 1, event))
            .collect())
    }

    async fn drop_expired(&self, now_ms: u64, max: u32) -> StoreResult<u32> {
        let mut inner = self.lock();
        let due: Vec<BatchId> = inner
            .batches
            .iter()
            .filter(|(_, data)| data.expires_at_ms.is_some_and(|at| at <= now_ms))
            .map(|(id, _)| id.clone())
            .take(max as usize)
            .collect();
        for id in &due {
            inner.batches.remove(id);
            inner.scopes.remove(&MemoryScope::Batch(id.clone()));
        }
        Ok(due.len() as u32)
    }

    async fn prune_batch_index(&self, _from_ms: u64, _max: u32) -> StoreResult<(u32, u64)> {
        // The index is the batch map itself: an expired batch left it.
        Ok((0, 0))
    }

    async fn list_batches(&self, limit: u32, tenant: Option<&str>) -> StoreResult<Vec<BatchMeta>> {
        let inner = self.lock();
        let mut metas: Vec<&BatchMeta> = inner
            .batches
            .values()
            .map(|data| &data.meta)
            .filter(|meta| tenant.is_none_or(|tenant| meta.tenant == tenant))
            .collect();
        metas
            .sort_by(|left, right| (right.created_ms, &right.id).cmp(&(left.created_ms, &left.id)));
        Ok(metas.into_iter().take(limit as usize).cloned().collect())
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
        let cap = self.cap();
        let written = self
            .lock()
            .put(scope, key, value.to_vec(), options, now_ms, cap, None)?;
        self.ring_all(written.touched.into_iter().map(Doorbell::Batch).collect());
        self.ring_all(vec![Doorbell::Memory(scope.clone())]);
        Ok(PutOutcome {
            version: written.version,
            unblocked: written.unblocked,
        })
    }

    async fn memory_get(&self, scope: &MemoryScope, key: &str) -> StoreResult<Option<MemoryValue>> {
        let mut inner = self.lock();
        let Some(scope_data) = inner.scopes.get_mut(scope) else {
            return Ok(None);
        };
        Ok(scope_data.live(key).map(|entry| MemoryValue {
            value: entry.value.clone(),
            content_type: entry.content_type.clone(),
            version: entry.version,
        }))
    }

    async fn memory_delete(
        &self,
        scope: &MemoryScope,
        key: &str,
        if_version: Option<u64>,
        now_ms: u64,
    ) -> StoreResult<bool> {
        let cap = self.cap();
        {
            let mut inner = self.lock();
            let scope_data = inner.scopes.entry(scope.clone()).or_default();
            let actual = scope_data.version(key);
            if let Some(expected) = if_version
                && expected != actual
            {
                return Err(StoreError::VersionMismatch {
                    key: key.to_owned(),
                    expected,
                    actual,
                });
            }
            let Some(entry) = scope_data.entries.remove(key) else {
                return Ok(false);
            };
            scope_data.log(
                MemoryChange {
                    revision: 0,
                    key: key.to_owned(),
                    kind: MemoryChangeKind::Delete,
                    version: entry.version,
                    value: None,
                    content_type: entry.content_type,
                    at_ms: now_ms,
                },
                cap,
            );
        }
        self.ring_all(vec![Doorbell::Memory(scope.clone())]);
        Ok(true)
    }

    async fn memory_list(
        &self,
        scope: &MemoryScope,
        prefix: &str,
        after_key: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<MemoryKeyInfo>> {
        let mut inner = self.lock();
        let Some(scope_data) = inner.scopes.get_mut(scope) else {
            return Ok(Vec::new());
        };
        let now = Instant::now();
        scope_data
            .entries
            .retain(|_, entry| entry.expires.is_none_or(|at| at > now));
        let listed = scope_data
            .entries
            .iter()
            .filter(|(key, _)| key.starts_with(prefix))
            .filter(|(key, _)| after_key.is_none_or(|after| key.as_str() > after))
            .take(limit as usize)
            .map(|(key, entry)| MemoryKeyInfo {
                key: key.clone(),
                version: entry.version,
                size: entry.value.len() as u64,
                content_type: entry.content_type.clone(),
                expires_at_ms: entry.expires_at_ms,
            })
            .collect();
        Ok(listed)
    }

    async fn memory_incr(
        &self,
        scope: &MemoryScope,
        key: &str,
        delta: i64,
        now_ms: u64,
    ) -> StoreResult<(i64, PutOutcome)> {
        let cap = self.cap();
        let (new_value, written) = {
            let mut inner = self.lock();
            let scope_data = inner.scopes.entry(scope.clone()).or_default();
            let not_an_integer = || StoreError::NotAnInteger {
                key: key.to_owned(),
            };
            let (current, version, content_type, expires, expires_at_ms) =
                match scope_data.live(key) {
                    None => (0, 0, TEXT_CONTENT_TYPE.to_owned(), None, 0),
                    Some(entry) => {
                        let current: i64 = std::str::from_utf8(&entry.value)
                            .ok()
                            .and_then(|text| text.parse().ok())
                            .ok_or_else(not_an_integer)?;
                        (
                            current,
                            entry.version,
                            entry.content_type.clone(),
                            entry.expires,
                            entry.expires_at_ms,
                        )
                    }
                };
            let new_value = current.checked_add(delta).ok_or_else(not_an_integer)?;
            let text = new_value.to_string().into_bytes();
            scope_data.entries.insert(
                key.to_owned(),
                Entry {
                    value: text.clone(),
                    content_type: content_type.clone(),
                    version: version + 1,
                    expires,
                    expires_at_ms,
                },
            );
            scope_data.log(
                MemoryChange {
                    revision: 0,
                    key: key.to_owned(),
                    kind: MemoryChangeKind::Put,
                    version: version + 1,
                    value: Some(text),
                    content_type,
                    at_ms: now_ms,
                },
                cap,
            );
            (new_value, inner.wake(scope, key, version + 1, None))
        };
        self.ring_all(written.touched.into_iter().map(Doorbell::Batch).collect());
        self.ring_all(vec![Doorbell::Memory(scope.clone())]);
        Ok((
            new_value,
            PutOutcome {
                version: written.version,
                unblocked: written.unblocked,
            },
        ))
    }

    async fn memory_changes(
        &self,
        scope: &MemoryScope,
        prefix: &str,
        after_revision: u64,
        max: u32,
    ) -> StoreResult<Vec<MemoryChange>> {
        let inner = self.lock();
        let Some(scope_data) = inner.scopes.get(scope) else {
            return Ok(Vec::new());
        };
        let mut newer = scope_data
            .changes
            .iter()
            .filter(|change| change.revision > after_revision)
            .peekable();
        if let Some(first) = newer.peek()
            && first.revision != after_revision + 1
        {
            return Err(StoreError::ChangesTrimmed {
                scope: scope.to_string(),
                after: after_revision,
                oldest: first.revision,
            });
        }
        Ok(newer
            .filter(|change| change.key.starts_with(prefix))
            .take(max as usize)
            .cloned()
            .collect())
    }

    async fn memory_revision(&self, scope: &MemoryScope) -> StoreResult<u64> {
        Ok(self
            .lock()
            .scopes
            .get(scope)
            .map_or(0, |scope_data| scope_data.revision))
    }

    /// Nothing is ever pending: `complete` writes a shared `store_as` inside
    /// its one critical section.
    async fn drain_outbox(&self, batch: &BatchId, _now_ms: u64) -> StoreResult<u32> {
        let _ = batch;
        Ok(0)
    }

    async fn outboxes_pending(&self, _batches: &[BatchId]) -> StoreResult<Vec<BatchId>> {
        Ok(Vec::new())
    }

    #[tracing::instrument(skip_all, fields(batch = %batch, token = fence.token))]
    async fn expire_waits(
        &self,
        batch: &BatchId,
        now_ms: u64,
        fence: &Fence,
    ) -> StoreResult<CompleteOutcome> {
        let outcome = {
            let mut guard = self.lock();
            let inner = &mut *guard;
            let data = inner
                .batches
                .get_mut(batch)
                .ok_or_else(|| StoreError::BatchNotFound(batch.clone()))?;
            data.check_fence(fence, now_ms)?;
            let mut outcome = CompleteOutcome::default();
            let due: Vec<(u64, u32)> = data
                .deadlines
                .iter()
                .take_while(|(deadline, _)| *deadline <= now_ms)
                .copied()
                .collect();
            if due.is_empty() {
                return Ok(outcome);
            }
            if data.meta.state != BatchState::Running {
                data.deadlines.clear();
                return Ok(outcome);
            }
            let mut indices: Vec<u32> = due.iter().map(|(_, index)| *index).collect();
            indices.sort_unstable();
            for entry in &due {
                data.deadlines.remove(entry);
            }
            for index in indices {
                let op = &data.ops[index as usize];
                if op.record.state != OpState::Waiting {
                    continue;
                }
                let missing = data.missing_keys(index);
                if missing.is_empty() {
                    continue;
                }
                let since_ms = op.waits.as_deref().map_or(0, |waits| waits.since_ms);
                let waited = now_ms.saturating_sub(since_ms);
                let attempt = op.record.attempts;
                let message = format!("memory key {missing} never appeared (waited {waited} ms)");
                data.end_op(index, OpState::Failed, message.clone());
                data.event(
                    now_ms,
                    EventKind::OpFailed,
                    Some(index),
                    attempt,
                    "",
                    &message,
                );
                outcome.recorded += 1;
                outcome.became_ready += data.propagate(index, OpState::Failed, now_ms);
                data.apply_fail_fast(index, now_ms);
            }
            outcome.became_ready += settle_hopeless(&mut inner.scopes, data, now_ms);
            let (finished, pass_ready) = data.finish_if_done(now_ms);
            outcome.finished = finished;
            outcome.became_ready += pass_ready;
            outcome
        };
        self.ring(batch);
        self.ring_if_ended(batch, outcome.finished);
        Ok(outcome)
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
        let outcome = {
            let mut guard = self.lock();
            let inner = &mut *guard;
            let data = inner.batch_mut(batch)?;
            if let Some(record) = once.and_then(|once| data.spawn_keys.get(&once.key)) {
                return Err(StoreError::AlreadySpawned {
                    batch: batch.clone(),
                    record: record.clone(),
                });
            }
            let cannot = |reason: AddOpsRefusal| StoreError::CannotAddOps {
                batch: batch.clone(),
                reason,
            };
            if data.meta.state != BatchState::Running {
                return Err(cannot(AddOpsRefusal::NotRunning(data.meta.state)));
            }
            if data.fail_fast_fired {
                return Err(cannot(AddOpsRefusal::FailFastFired));
            }
            if data.meta.total != first_index {
                return Err(cannot(AddOpsRefusal::FirstIndexTaken {
                    first_index,
                    total: data.meta.total,
                }));
            }
            let mut data = inner
                .batches
                .remove(batch)
                .ok_or_else(|| StoreError::BatchNotFound(batch.clone()))?;
            for (offset, new_op) in ops.iter().enumerate() {
                let index = first_index + offset as u32;
                let op = OpData::new(new_op, edges.new_dependents[offset].clone(), now_ms);
                if op.has_deadline(new_op) {
                    data.deadlines.insert((new_op.wait_deadline_ms, index));
                }
                data.ops.push(op);
            }
            data.meta.total += ops.len() as u32;
            if matches!(data.memory, MemoryScope::Batch(_)) {
                data.writers.add(first_index, &ops);
            }
            data.spec_added.push(spec);
            if let Some(once) = once {
                data.spawn_keys
                    .insert(once.key.clone(), once.record.clone());
            }
            let message = if note.is_empty() {
                format!("{} ops added", ops.len())
            } else {
                format!("{} ops added {note}", ops.len())
            };
            data.event(now_ms, EventKind::OpsAdded, None, 0, "", &message);
            let mut outcome = CompleteOutcome::default();
            for offset in 0..ops.len() as u32 {
                let index = first_index + offset;
                if data.ops[index as usize].pending == 0 {
                    data.push_ready(index);
                    outcome.became_ready += 1;
                }
            }
            for (offset, existing) in edges.existing_after.iter().enumerate() {
                let index = first_index + offset as u32;
                for &before in existing {
                    let before_state = data.ops[before as usize].record.state;
                    if !before_state.is_final() {
                        data.ops[before as usize].dependents.push(index);
                        continue;
                    }
                    let op = &data.ops[index as usize];
                    if before_state == OpState::Succeeded || op.run_if_always {
                        if data.count_down(index) {
                            outcome.became_ready += 1;
                        }
                    } else if !op.record.state.is_final() {
                        let cause = Cause::Dependency {
                            index: before,
                            state: before_state,
                        };
                        data.end_op_for(
                            index,
                            OpState::Skipped,
                            EventKind::OpSkipped,
                            &cause,
                            now_ms,
                        );
                        outcome.became_ready += data.propagate(index, OpState::Skipped, now_ms);
                    }
                }
            }
            // As the Redis store: keys the skips above made hopeless are
            // settled first (add_ops.lua), then the new waits, among them
            // waits for keys nobody will write any more (register_waits.lua).
            outcome.became_ready += settle_hopeless(&mut inner.scopes, &mut data, now_ms);
            let triples = wait_triples(first_index, &ops);
            outcome.became_ready += inner.register_waits(&mut data, &triples);
            if matches!(data.memory, MemoryScope::Batch(_)) {
                for (_, key, _) in &triples {
                    if !data.writers.hopeless.contains(key)
                        && key_hopeless(inner.scopes.get_mut(&data.memory), &data.writers, key)
                    {
                        data.writers.hopeless.push(key.clone());
                    }
                }
                outcome.became_ready += settle_hopeless(&mut inner.scopes, &mut data, now_ms);
            }
            let (finished, pass_ready) = data.finish_if_done(now_ms);
            outcome.finished = finished;
            outcome.became_ready += pass_ready;
            inner.batches.insert(batch.clone(), data);
            outcome
        };
        self.ring(batch);
        self.ring_if_ended(batch, outcome.finished);
        Ok(outcome)
    }

    #[tracing::instrument(skip_all, fields(batch = %batch, coordinator, ttl_ms))]
    async fn hold_batch(
        &self,
        batch: &BatchId,
        coordinator: &str,
        ttl_ms: u64,
        now_ms: u64,
    ) -> StoreResult<Option<Fence>> {
        let mut inner = self.lock();
        let data = inner.batch_mut(batch)?;
        if data.meta.state != BatchState::Running {
            return Ok(None);
        }
        let until_ms = now_ms.saturating_add(ttl_ms.max(1));
        let fence = match data.live_owner(now_ms) {
            Some(live) if live.coordinator == coordinator => live.clone(),
            Some(_) => return Ok(None),
            None => {
                data.owner_token += 1;
                Fence {
                    coordinator: coordinator.to_owned(),
                    token: data.owner_token,
                }
            }
        };
        data.owner = Some((fence.clone(), until_ms));
        Ok(Some(fence))
    }

    #[tracing::instrument(skip_all, fields(batch = %batch, token = fence.token))]
    async fn release_batch(&self, batch: &BatchId, fence: &Fence) -> StoreResult<()> {
        let mut inner = self.lock();
        if let Some(data) = inner.batches.get_mut(batch)
            && data.owner.as_ref().is_some_and(|(held, _)| held == fence)
        {
            data.owner = None;
        }
        Ok(())
    }

    async fn batch_owner(&self, batch: &BatchId, now_ms: u64) -> StoreResult<Option<Fence>> {
        let inner = self.lock();
        Ok(inner
            .batches
            .get(batch)
            .and_then(|data| data.live_owner(now_ms).cloned()))
    }

    #[tracing::instrument(skip_all, fields(coordinator, workers = workers.len()))]
    async fn publish_workers(
        &self,
        coordinator: &str,
        workers: &[WorkerEntry],
        until_ms: u64,
    ) -> StoreResult<()> {
        self.lock()
            .workers
            .insert(coordinator.to_owned(), (until_ms, workers.to_vec()));
        Ok(())
    }

    async fn workers(&self, now_ms: u64) -> StoreResult<Vec<(String, WorkerEntry)>> {
        let mut inner = self.lock();
        inner
            .workers
            .retain(|_, (until_ms, _)| until_ms.saturating_add(WORKERS_FORGET_AFTER_MS) >= now_ms);
        let mut listed: Vec<(String, WorkerEntry)> = inner
            .workers
            .iter()
            .filter(|(_, (until_ms, _))| *until_ms >= now_ms)
            .flat_map(|(coordinator, (_, workers))| {
                workers
                    .iter()
                    .map(|worker| (coordinator.clone(), worker.clone()))
            })
            .collect();
        listed.sort_by(|left, right| {
            (&left.0, &left.1.worker_id).cmp(&(&right.0, &right.1.worker_id))
        });
        Ok(listed)
    }

    async fn ready_depth(&self, batches: &[BatchId]) -> StoreResult<ReadyDepth> {
        let inner = self.lock();
        let mut depth = ReadyDepth::default();
        for batch in batches {
            // A finished batch's queues are gone in Redis (compaction).
            let Some(data) = inner
                .batches
                .get(batch)
                .filter(|data| data.meta.state == BatchState::Running)
            else {
                continue;
            };
            for (slot, queue) in depth.by_priority.iter_mut().zip(&data.ready) {
                *slot += queue.len() as u64;
            }
        }
        Ok(depth)
    }

    async fn publish_ready_gauge(&self, total: u64) -> StoreResult<u64> {
        let length = total.min(READY_GAUGE_CAP);
        self.lock().ready_gauge = length;
        Ok(length)
    }

    async fn create_token(&self, token: &TokenRecord) -> StoreResult<()> {
        let mut inner = self.lock();
        if inner.tokens.contains_key(&token.id) {
            return Err(StoreError::TokenExists(token.id.clone()));
        }
        let mut record = token.clone();
        record.revoked_ms = None;
        record.last_used_ms = None;
        inner.tokens.insert(token.id.clone(), record);
        Ok(())
    }

    async fn token(&self, id: &str) -> StoreResult<Option<TokenRecord>> {
        Ok(self.lock().tokens.get(id).cloned())
    }

    async fn tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        Ok(self.lock().tokens.values().cloned().collect())
    }

    async fn revoke_token(&self, id: &str, now_ms: u64) -> StoreResult<bool> {
        let mut inner = self.lock();
        let Some(token) = inner.tokens.get_mut(id) else {
            return Ok(false);
        };
        token.revoked_ms.get_or_insert(now_ms);
        inner.token_revocations += 1;
        Ok(true)
    }

    async fn touch_token(&self, id: &str, now_ms: u64) -> StoreResult<()> {
        if let Some(token) = self.lock().tokens.get_mut(id) {
            token.last_used_ms = Some(now_ms);
        }
        Ok(())
    }

    async fn token_revocations(&self) -> StoreResult<u64> {
        Ok(self.lock().token_revocations)
    }

    fn doorbells(&self) -> broadcast::Receiver<Doorbell> {
        self.shared.doorbell.subscribe()
    }
}

/// A `store_as` write of `data`'s op into `memory` (the batch's scope).
/// A key is hopeless when it has declared writers, all ended, and it does
/// not exist in the batch's memory.
fn key_hopeless(scope_data: Option<&mut ScopeData>, writers: &Writers, key: &str) -> bool {
    writers.all_ended(key) && scope_data.is_none_or(|scope_data| scope_data.live(key).is_none())
}

/// Works off the keys whose last declared writer ended (see
/// `settle_hopeless` in `lua/common.lua`, which this mirrors): waiters of a
/// hopeless key still waiting — for a `wait_for` key, or for a
/// `wait_for_any` group all of whose keys are hopeless — are skipped with
/// their dependents; a `run_if_always` one counts the wait as satisfied.
/// Returns how many ops became ready.
fn settle_hopeless(
    scopes: &mut HashMap<MemoryScope, ScopeData>,
    data: &mut BatchData,
    now_ms: u64,
) -> u32 {
    let mut became_ready = 0;
    let mut head = 0;
    while head < data.writers.hopeless.len() {
        let key = data.writers.hopeless[head].clone();
        head += 1;
        let mut scope_data = scopes.get_mut(&data.memory);
        if scope_data
            .as_deref_mut()
            .is_some_and(|scope_data| scope_data.live(&key).is_some())
        {
            continue;
        }
        let waits: Vec<Waiter> = scope_data
            .as_deref()
            .and_then(|scope_data| scope_data.waiters.get(&key))
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default();
        let mut cause: Option<Cause> = None;
        for waiter in waits {
            let Some(op) = data.ops.get(waiter.index as usize) else {
                continue;
            };
            if op.record.state != OpState::Waiting {
                continue;
            }
            if waiter.any {
                let group: Vec<String> = op
                    .waits
                    .as_deref()
                    .map(|waits| waits.any.clone())
                    .unwrap_or_default();
                let all_hopeless = !group.is_empty()
                    && group.iter().all(|other| {
                        key_hopeless(scopes.get_mut(&data.memory), &data.writers, other)
                    });
                if !all_hopeless {
                    continue;
                }
            }
            if let Some(set) = scopes
                .get_mut(&data.memory)
                .and_then(|scope_data| scope_data.waiters.get_mut(&key))
            {
                set.remove(&waiter);
            }
            let op = &data.ops[waiter.index as usize];
            if op.run_if_always {
                if data.arrive(waiter.index, &key, waiter.any).1 {
                    became_ready += 1;
                }
                continue;
            }
            let cause = cause
                .get_or_insert_with(|| {
                    let writers: Vec<(u32, OpState)> = data
                        .writers
                        .by_key
                        .get(&key)
                        .map(|(_, writers)| {
                            writers
                                .iter()
                                .map(|&writer| (writer, data.ops[writer as usize].record.state))
                                .collect()
                        })
                        .unwrap_or_default();
                    Cause::never_written(&key, &writers)
                })
                .clone();
            data.end_op_for(
                waiter.index,
                OpState::Skipped,
                EventKind::OpSkipped,
                &cause,
                now_ms,
            );
            became_ready += data.propagate(waiter.index, OpState::Skipped, now_ms);
        }
    }
    data.writers.hopeless.clear();
    became_ready
}

fn store_as(
    inner: &mut Inner,
    memory: &MemoryScope,
    key: &str,
    value: Vec<u8>,
    now_ms: u64,
    cap: u64,
    data: &mut BatchData,
) -> Written {
    let options = PutOptions {
        content_type: TEXT_CONTENT_TYPE.to_owned(),
        ..PutOptions::default()
    };
    match inner.put(memory, key, value, &options, now_ms, cap, Some(data)) {
        Ok(written) => written,
        // No version check was asked for, so put cannot refuse.
        Err(_) => Written {
            version: 0,
            unblocked: 0,
            became_ready_current: 0,
            touched: Vec::new(),
        },
    }
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
