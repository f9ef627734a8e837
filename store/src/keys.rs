//! Every Redis key and channel name Volley uses, as the Rust side spells it:
//! the source of truth for key names.
//!
//! All keys of one batch share the hash tag `{b:<batch>}`, so a batch lives
//! in one Redis Cluster slot and its scripts touch one slot. Scripts receive
//! the batch's key prefix ([`batch_prefix`], `volley:{b:<batch>}:`) as
//! `KEYS[1]` and derive per-batch names by appending the suffixes below
//! (`meta`, `ready:<p>`, `waiters:<key>`, …). That is cluster-safe: every
//! derived name carries the same hash tag as the declared key, so it maps to
//! the same slot.
//!
//! Key names are spelled in two places: here, and in `lua/common.lua`,
//! the scripts' half of this module (its `K_*` names and `k_*` builders,
//! which every script gets as its prelude). This module is the source: a
//! new key is added here first, then spelled alike in `common.lua`.
//! `tests/keys_spelling.rs` keeps the two aligned: it parses both files
//! (every suffix defined here is spelled in `common.lua`, and no script
//! appends a suffix, names a global key or rings a doorbell this module
//! does not define), and runs `common.lua` on a real `redis-server` to
//! compare each name it builds with the builder here for the same batch
//! or namespace.
//!
//! Batch keys:
//! - `meta` (hash): name, tenant, state, created_ms, finished_ms, max_parallel,
//!   on_failure, total, the counters, error,
//!   `deadline_ms` (0: none), the flags `cancel_requested` /
//!   `fail_fast_fired` / `deadline_fired`, `duration_sum_ms` (the final
//!   records' durations summed, kept by `end_op` and `complete.lua`),
//!   `retry_failed` (1: a sequential
//!   pass is asked for) and `sequential` (1: that pass started; claims run
//!   one op at a time, failures are final), and `owner_token` (the last
//!   fence token handed out by `hold.lua`; absent = 0).
//! - `owner` (string `<coordinator>|<token>`, with `PX` = the hold's ttl):
//!   the coordinator holding the batch and its fence token.
//! - `spec` (string): the opaque spec bytes.
//! - `state` (hash index → [`crate::OpState::code`]).
//! - `attempts` (hash index → attempts started; absent = 0).
//! - `pending` (hash index → inputs still missing; absent = 0).
//! - `info` (hash index → `priority|run_if_always|max_attempts|retry|d1,d2,…`,
//!   retry = `<on_failure><on_timeout><on_lost_worker>,<initial_ms>,<max_ms>,<multiplier>,<jitter>`).
//! - `handed_back` (hash index → attempts handed back by `return_ops`; absent = 0).
//! - `leases` (sorted set: running op index scored by its lease deadline).
//! - `delayed` (sorted set: index of an op waiting out a retry backoff, state
//!   Ready but on no ready queue, scored by when it becomes ready).
//! - `result` (hash index → JSON record of a final op; dropped when the
//!   sequential pass runs the op again).
//! - `ready:<p>` (list of indices, p = 0 critical … 3 low).
//! - `events` (stream, ids `0-<seq>`, numbered by Redis: `XADD 0-*`; one field
//!   `e` packing time, kind, op, attempt, worker, batch state and message).
//! - `spec_added` (list: the spec chunk of each `add_ops`, in order).
//! - `spawn_keys` (hash idempotency key → the record an idempotent
//!   `add_ops` kept; retained with the batch).
//! - `meta` of an idempotent submission also holds `digest` (of the
//!   request) and `claimed_ms` (when `reserve.lua` claimed its id).
//! - `arrived` (set of `<op>|<key>`: `wait_for` keys counted for that op, so
//!   a retried arrival never counts twice; the sequential pass adds every
//!   key of the ops it runs again, so no arrival counts them down).
//! - `any_done` (set of op indices whose `wait_for_any` group is satisfied,
//!   or that the sequential pass runs again).
//! - `deadlines` (sorted set: op index scored by its `wait_deadline_ms`).
//! - `waitinfo` (hash index → JSON `{"s": since_ms, "a": [all keys], "y":
//!   [any keys]}` of every op with memory waits, for the error of an expired
//!   wait, for `op_waits` and for the sequential pass).
//!
//! - `writes` (hash index → `k1,k2`: the batch's own memory keys the op is
//!   declared to write), `writer_ops` (hash key → `i1,i2`: its declared
//!   writers) and `writers_left` (hash key → declared writers not yet
//!   ended), kept while meta `writers` is 1 (some op declares writes and
//!   the batch's memory is its own): a key reaching 0 writers left that
//!   does not exist skips its waiters (see `settle_hopeless` in
//!   `lua/common.lua`).
//! - `outbox` (hash index → JSON `{"k": key, "a": attempt, "q": seq}`): a
//!   succeeded op's `store_as` into the batch's shared namespace, recorded
//!   by `complete.lua` and dropped once written (`outbox_clear.lua`); the
//!   value is the op's output in `result`. Kept after the finish (with the
//!   records' retention) until drained.
//!
//! A finished batch's remaining keys (and its own memory scope) go
//! `retain_ms` after it finished (meta field `retain_ms`, from the
//! coordinator's `--retain-finished`; 0 keeps them): the Rust side puts it
//! in [`EXPIRING`] when it sees the finish, and coordinators UNLINK it
//! (`drop_batch.lua`) once its time came. As a safety net (a coordinator
//! that died between the finish and the ZADD) the finishing script also
//! sets a TTL an hour past the retention; coordinators walk [`BATCHES`] and
//! drop the ids whose `meta` is gone.
//!
//! When a batch finishes, the keys only a running batch needs go (`leases`,
//! `delayed`, `info`, `pending`, `arrived`, `any_done`, `deadlines`,
//! `waitinfo`, `handed_back`, the ready queues): a finished op keeps its
//! state, attempts, result, events and spec.
//!
//! Memory scope keys live under the scope's prefix ([`scope_prefix`]): the
//! batch's prefix for a batch scope, `volley:{m:<namespace>}:` for a shared
//! one, so a memory write and the waiters it wakes share one slot:
//! - `mem:<key>` (hash: `ver`, `ct` content type, `size`, `exp` expiry ms or
//!   0, and either `v` (the value) or `gen` + `n` (its chunks)).
//! - `chunk:<gen>:<n>` (string: the n-th 256 KiB chunk of a large value;
//!   `gen` is unique per write, so a new chunk set never overwrites the old).
//! - `mkeys` (sorted set, all scores 0: the scope's keys, for `ZRANGEBYLEX`;
//!   expired ones are dropped lazily by `memory_list`).
//! - `changes` (stream, ids `0-<revision>`) and `revision` (its counter).
//! - `waiters:<key>` (set of `<batch>|<op>|<key>|<all|any>`).
//! - `applied:<batch>|<op>|<attempt>` (string: the version written, with a
//!   TTL of a day), in a shared namespace only: the marker that one op
//!   attempt's `store_as` was written, so a drain that writes it again
//!   does nothing (no second revision).
//!
//! Global keys: [`EPOCH`], [`BATCHES`], [`EXPIRING`], [`ACTIVE`], [`WORKERS`],
//! [`QUEUE_READY`], the token keys ([`TOKENS`] and its companions), channel
//! [`DOORBELL_CHANNEL`].

use volley_proto::BatchId;

use crate::model::MemoryScope;

/// Written once (`SET NX`) with a random uuid; its loss means Redis restarted empty.
pub const EPOCH: &str = "volley:epoch";
/// Sorted set of every batch id, scored by `created_ms`.
pub const BATCHES: &str = "volley:batches";
/// Sorted set of finished batches with a retention, scored by the unix ms
/// their records go (finished_ms + retain_ms); `drop_expired` reads it.
pub const EXPIRING: &str = "volley:expiring";
/// Set of the ids of batches not yet finished.
pub const ACTIVE: &str = "volley:active";
/// Hash of the cluster's worker registry: field = coordinator id, value =
/// JSON `{"until_ms": <unix ms>, "workers": [<WorkerEntry>…]}`. One global
/// key (its own slot), written by `publish_workers` with one `HSET`.
pub const WORKERS: &str = "volley:workers";
/// The ready-queue depth as a list for KEDA's `redis` (list) scaler, which
/// reads only `LLEN`: a list of 1-byte items whose length is the number of
/// ready (runnable, not yet claimed) ops across every active batch, capped
/// at [`crate::READY_GAUGE_CAP`]. Its items mean nothing. Coordinators set
/// its length every housekeeping tick (`publish_ready_gauge`, one script
/// call on this key alone: its own slot), so it is at most one tick stale.
pub const QUEUE_READY: &str = "volley:queue:ready";
/// Pub/sub channel on which scripts publish what they changed: `b:<batch>`
/// (a batch's ops, and so its events), `v:<batch>` (only its events: a
/// claim, a blocked note), `m:<namespace>` (a shared memory scope) or
/// `mb:<batch>` (a batch's memory scope); and on which the Rust side
/// publishes, right after it changes [`ACTIVE`], `n:<batch>` (the batch
/// entered the active set) or `e:<batch>` (it left it).
pub const DOORBELL_CHANNEL: &str = "volley:doorbell";
/// Doorbell payload prefixes (see [`DOORBELL_CHANNEL`]).
pub const BELL_BATCH: &str = "b:";
pub const BELL_EVENTS: &str = "v:";
pub const BELL_SHARED_MEMORY: &str = "m:";
pub const BELL_BATCH_MEMORY: &str = "mb:";
pub const BELL_STARTED: &str = "n:";
pub const BELL_ENDED: &str = "e:";

pub const META: &str = "meta";
pub const SPEC: &str = "spec";
pub const STATE: &str = "state";
pub const ATTEMPTS: &str = "attempts";
pub const PENDING: &str = "pending";
pub const INFO: &str = "info";
pub const RESULT: &str = "result";
pub const EVENTS: &str = "events";
pub const READY: &str = "ready:";
pub const WAITERS: &str = "waiters:";
pub const MEMORY: &str = "mem:";
pub const SPEC_ADDED: &str = "spec_added";
pub const ARRIVED: &str = "arrived";
pub const ANY_DONE: &str = "any_done";
pub const DEADLINES: &str = "deadlines";
pub const WAIT_INFO: &str = "waitinfo";
pub const CHUNK: &str = "chunk:";
pub const MEMORY_KEYS: &str = "mkeys";
pub const CHANGES: &str = "changes";
pub const REVISION: &str = "revision";
pub const LEASES: &str = "leases";
pub const DELAYED: &str = "delayed";
pub const HANDED_BACK: &str = "handed_back";
pub const OWNER: &str = "owner";
pub const WRITES: &str = "writes";
pub const WRITERS_LEFT: &str = "writers_left";
pub const WRITER_OPS: &str = "writer_ops";
pub const OUTBOX: &str = "outbox";
pub const SPAWN_KEYS: &str = "spawn_keys";
pub const LOST_WORKERS: &str = "lost_workers";
pub const RUNNING_ON: &str = "running_on";

/// Hash of every API token: field = token id, value = its
/// [`crate::TokenRecord`] as JSON (a hash of the token, never the token).
/// The token keys share the hash tag `{tokens}`: one slot, so
/// `revoke_token.lua` may touch them together.
pub const TOKENS: &str = "volley:{tokens}";
/// Hash token id → unix ms of its revocation.
pub const TOKENS_REVOKED: &str = "volley:{tokens}:revoked";
/// Hash token id → unix ms it was last used (written at most once a minute
/// per token and coordinator).
pub const TOKENS_USED: &str = "volley:{tokens}:used";
/// Counter bumped by every revocation; coordinators poll it.
pub const TOKENS_REVOCATIONS: &str = "volley:{tokens}:revocations";

/// `volley:{b:<batch>}:` — the prefix of every key of the batch.
pub fn batch_prefix(batch: &BatchId) -> String {
    format!("volley:{{b:{}}}:", batch.as_str())
}

fn batch_key(batch: &BatchId, suffix: &str) -> String {
    let mut key = batch_prefix(batch);
    key.push_str(suffix);
    key
}

pub fn meta(batch: &BatchId) -> String {
    batch_key(batch, META)
}

pub fn spec(batch: &BatchId) -> String {
    batch_key(batch, SPEC)
}

pub fn writes(batch: &BatchId) -> String {
    batch_key(batch, WRITES)
}

pub fn writers_left(batch: &BatchId) -> String {
    batch_key(batch, WRITERS_LEFT)
}

pub fn writer_ops(batch: &BatchId) -> String {
    batch_key(batch, WRITER_OPS)
}

pub fn outbox(batch: &BatchId) -> String {
    batch_key(batch, OUTBOX)
}

/// The guard of a shared `store_as` write, relative to the namespace's
/// prefix (`memory_put.lua` prepends it): `applied:<batch>|<op>|<attempt>`.
/// Only Rust spells it: the scripts get it whole as an argument.
pub fn applied_guard(batch: &BatchId, index: u32, attempt: u32) -> String {
    format!("applied:{}|{index}|{attempt}", batch.as_str())
}

pub fn state(batch: &BatchId) -> String {
    batch_key(batch, STATE)
}

pub fn attempts(batch: &BatchId) -> String {
    batch_key(batch, ATTEMPTS)
}

pub fn pending(batch: &BatchId) -> String {
    batch_key(batch, PENDING)
}

pub fn info(batch: &BatchId) -> String {
    batch_key(batch, INFO)
}

pub fn result(batch: &BatchId) -> String {
    batch_key(batch, RESULT)
}

pub fn events(batch: &BatchId) -> String {
    batch_key(batch, EVENTS)
}

pub fn ready(batch: &BatchId, priority: u8) -> String {
    format!("{}{READY}{priority}", batch_prefix(batch))
}

pub fn waiters(batch: &BatchId, memory_key: &str) -> String {
    format!("{}{WAITERS}{memory_key}", batch_prefix(batch))
}

pub fn spec_added(batch: &BatchId) -> String {
    batch_key(batch, SPEC_ADDED)
}

pub fn wait_info(batch: &BatchId) -> String {
    batch_key(batch, WAIT_INFO)
}

pub fn deadlines(batch: &BatchId) -> String {
    batch_key(batch, DEADLINES)
}

pub fn leases(batch: &BatchId) -> String {
    batch_key(batch, LEASES)
}

pub fn delayed(batch: &BatchId) -> String {
    batch_key(batch, DELAYED)
}

pub fn handed_back(batch: &BatchId) -> String {
    batch_key(batch, HANDED_BACK)
}

pub fn owner(batch: &BatchId) -> String {
    batch_key(batch, OWNER)
}

pub fn spawn_keys(batch: &BatchId) -> String {
    batch_key(batch, SPAWN_KEYS)
}

pub fn lost_workers(batch: &BatchId) -> String {
    batch_key(batch, LOST_WORKERS)
}

pub fn running_on(batch: &BatchId) -> String {
    batch_key(batch, RUNNING_ON)
}

/// The doorbell payload announcing that `batch` entered the active set.
pub fn started_bell(batch: &BatchId) -> String {
    format!("{BELL_STARTED}{}", batch.as_str())
}

/// The doorbell payload announcing that `batch` left the active set.
pub fn ended_bell(batch: &BatchId) -> String {
    format!("{BELL_ENDED}{}", batch.as_str())
}

/// `volley:{m:<namespace>}:` — the prefix of every key of a shared namespace.
pub fn namespace_prefix(namespace: &str) -> String {
    format!("volley:{{m:{namespace}}}:")
}

/// The prefix the keys of a memory scope hang off: the batch's own prefix
/// for a batch scope (its memory shares the batch's slot), the namespace's
/// for a shared one.
pub fn scope_prefix(scope: &MemoryScope) -> String {
    match scope {
        MemoryScope::Batch(batch) => batch_prefix(batch),
        MemoryScope::Shared(namespace) => namespace_prefix(namespace),
    }
}

/// The doorbell payload announcing a change of `scope`.
pub fn memory_bell(scope: &MemoryScope) -> String {
    match scope {
        MemoryScope::Batch(batch) => format!("{BELL_BATCH_MEMORY}{}", batch.as_str()),
        MemoryScope::Shared(namespace) => format!("{BELL_SHARED_MEMORY}{namespace}"),
    }
}

/// The entry hash of memory key `memory_key`.
pub fn memory(scope: &MemoryScope, memory_key: &str) -> String {
    format!("{}{MEMORY}{memory_key}", scope_prefix(scope))
}

pub fn chunk(scope: &MemoryScope, generation: &str, number: u64) -> String {
    format!("{}{CHUNK}{generation}:{number}", scope_prefix(scope))
}

pub fn changes(scope: &MemoryScope) -> String {
    format!("{}{CHANGES}", scope_prefix(scope))
}

pub fn revision(scope: &MemoryScope) -> String {
    format!("{}{REVISION}", scope_prefix(scope))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_keys_share_the_hash_tag() {
        let batch = BatchId::new("0193-abc");
        assert_eq!(batch_prefix(&batch), "volley:{b:0193-abc}:");
        assert_eq!(meta(&batch), "volley:{b:0193-abc}:meta");
        assert_eq!(ready(&batch, 2), "volley:{b:0193-abc}:ready:2");
        assert_eq!(waiters(&batch, "a/b"), "volley:{b:0193-abc}:waiters:a/b");
        assert_eq!(owner(&batch), "volley:{b:0193-abc}:owner");
        assert_eq!(started_bell(&batch), "n:0193-abc");
        assert_eq!(ended_bell(&batch), "e:0193-abc");
        let scope = MemoryScope::Batch(batch.clone());
        assert_eq!(memory(&scope, "a/b"), "volley:{b:0193-abc}:mem:a/b");
        assert_eq!(memory_bell(&scope), "mb:0193-abc");
    }

    #[test]
    fn namespace_keys_share_their_own_hash_tag() {
        let scope = MemoryScope::Shared("team".to_owned());
        assert_eq!(memory(&scope, "k"), "volley:{m:team}:mem:k");
        assert_eq!(chunk(&scope, "g1", 3), "volley:{m:team}:chunk:g1:3");
        assert_eq!(changes(&scope), "volley:{m:team}:changes");
        assert_eq!(revision(&scope), "volley:{m:team}:revision");
        assert_eq!(memory_bell(&scope), "m:team");
    }
}
