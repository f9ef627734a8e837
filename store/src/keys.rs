//! Every Redis key and channel name Volley uses: the only place one is spelled.
//!
//! All keys of one batch share the hash tag `{b:<batch>}`, so a batch lives
//! in one Redis Cluster slot and its scripts touch one slot. Scripts receive
//! the batch's key prefix ([`batch_prefix`], `volley:{b:<batch>}:`) as
//! `KEYS[1]` and derive per-batch names by appending the suffixes below
//! (`meta`, `ready:<p>`, `waiters:<key>`, …). That is cluster-safe: every
//! derived name carries the same hash tag as the declared key, so it maps to
//! the same slot. The suffixes are spelled here and, identically, in
//! `lua/common.lua`, which is the scripts' half of this module.
//!
//! Batch keys:
//! - `meta` (hash): name, state, created_ms, finished_ms, max_parallel,
//!   on_failure, total, the counters, error, `seq` (last event), and the
//!   flags `cancel_requested` / `fail_fast_fired`.
//! - `spec` (string): the opaque spec bytes.
//! - `state` (hash index → [`crate::OpState::code`]).
//! - `attempts` (hash index → attempts started; absent = 0).
//! - `pending` (hash index → inputs still missing; absent = 0).
//! - `info` (hash index → `priority|run_if_always|max_attempts|d1,d2,…`).
//! - `result` (hash index → JSON record of a final op).
//! - `ready:<p>` (list of indices, p = 0 critical … 3 low).
//! - `waiters:<key>` (set of indices waiting for memory key `<key>`).
//! - `mem:<key>` (string: the batch's memory).
//! - `events` (stream, ids `0-<seq>`).
//!
//! Global keys: [`EPOCH`], [`BATCHES`], [`ACTIVE`], channel [`DOORBELL_CHANNEL`].

use volley_proto::BatchId;

/// Written once (`SET NX`) with a random uuid; its loss means Redis restarted empty.
pub const EPOCH: &str = "volley:epoch";
/// Sorted set of every batch id, scored by `created_ms`.
pub const BATCHES: &str = "volley:batches";
/// Set of the ids of batches not yet finished.
pub const ACTIVE: &str = "volley:active";
/// Pub/sub channel on which scripts publish the id of a batch they changed.
pub const DOORBELL_CHANNEL: &str = "volley:doorbell";

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

pub fn memory(batch: &BatchId, memory_key: &str) -> String {
    format!("{}{MEMORY}{memory_key}", batch_prefix(batch))
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
        assert_eq!(memory(&batch, "a/b"), "volley:{b:0193-abc}:mem:a/b");
    }
}
