//! The conformance suite every [`Store`] must pass: one `case_*` per behaviour.
//!
//! Use it through [`conformance_tests!`](crate::conformance_tests), which
//! expands into one `#[tokio::test]` per case:
//!
//! ```ignore
//! async fn make() -> (std::sync::Arc<dyn volley_store::Store>, ()) {
//!     (std::sync::Arc::new(volley_store::MemoryStore::new()), ())
//! }
//! async fn make_small_log() -> (std::sync::Arc<dyn volley_store::Store>, ()) {
//!     let cap = volley_store::conformance::SMALL_CHANGE_LOG_CAP;
//!     (std::sync::Arc::new(volley_store::MemoryStore::new().with_change_log_cap(cap)), ())
//! }
//! volley_store::conformance_tests!(make(), make_small_log());
//! ```
//!
//! The second expression builds a store whose change log keeps
//! [`SMALL_CHANGE_LOG_CAP`] changes (for the trimming case). The second tuple element is a guard kept alive for the test (e.g. the
//! `redis-server` the store talks to). Cases assert exact states, counters
//! and event sequences, never timings. Panicking is how a case fails, so the
//! `expect`s here are deliberate.
//!
//! Compiled only with the `conformance` feature (the store's own tests
//! enable it): it is test code, not part of a release build.
//!
//! # Sections
//! This file holds the macro and the helpers several sections share; the
//! cases live by subject under `conformance/`:
//! - `claims` — dependencies counting down, priorities, the caps of a claim;
//! - `batches` — a batch as a whole: creation, events, cancel, deadline,
//!   lost batches, listing, retention;
//! - `completion` — failures, retries, backoff, skips, fail_fast, stale
//!   completions;
//! - `leases` — lease expiry and renewal, lost workers, hand-back;
//! - `ownership` — batch holds and fences, the worker registry;
//! - `doorbells` — which bells ring when;
//! - `memory` — the memory verbs and their change log;
//! - `waits` — ops waiting for memory keys, and their expiry;
//! - `writers` — declared writers, and shared `store_as` writes;
//! - `causes` — the ops a skip's or a cancel's message names, as data, and
//!   `add_ops`'s typed refusals;
//! - `summaries` — `op_summaries`, the light rows of a batch's ops;
//! - `add_ops`, `idempotency`, `sequential` (the sequential pass),
//!   `tokens`, `ready` (ready depth and gauge).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use volley_proto::BatchId;

use crate::model::*;
use crate::{AddOpsRefusal, Store, StoreError};

mod add_ops;
pub use add_ops::*;
mod batches;
pub use batches::*;
mod causes;
pub use causes::*;
mod claims;
pub use claims::*;
mod completion;
pub use completion::*;
mod doorbells;
pub use doorbells::*;
mod idempotency;
pub use idempotency::*;
mod leases;
pub use leases::*;
mod memory;
pub use memory::*;
mod ownership;
pub use ownership::*;
mod ready;
pub use ready::*;
mod sequential;
pub use sequential::*;
mod summaries;
pub use summaries::*;
mod tokens;
pub use tokens::*;
mod waits;
pub use waits::*;
mod writers;
pub use writers::*;

/// Expands into one `#[tokio::test]` per conformance case. Both arguments
/// are expressions evaluating to a future of `(Arc<dyn Store>, guard)`; the
/// second's store has a change log cap of [`SMALL_CHANGE_LOG_CAP`].
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr, $make_small_change_log:expr) => {
        $crate::conformance_tests!(@cases $make;
            case_chain_completes_in_order,
            case_diamond_counts_down,
            case_op_records_at_reads_the_given_ops,
            case_op_summaries_agree_with_records,
            case_op_summaries_cross_slices,
            case_sequential_time_is_kept_with_the_meta,
            case_priorities_then_fifo,
            case_claim_respects_max,
            case_max_parallel_caps_claims,
            case_retry_then_success,
            case_permanent_failure_is_not_retried,
            case_failure_skips_dependents_transitively,
            case_fail_fast_cancels_waiting_and_ready,
            case_stale_completions_are_ignored,
            case_store_as_unblocks_a_waiter,
            case_put_memory_unblocks_and_present_keys_count,
            case_cancel_returns_running_and_is_idempotent,
            case_events_are_gapless_and_resumable,
            case_duplicate_batch_id_is_rejected,
            case_unknown_batch,
            case_empty_batch_finishes_at_once,
            case_doorbell_rings_on_complete,
            case_ten_thousand_ops_in_rounds_of_500,
            case_large_batch_with_waits_crosses_chunks,
            case_list_batches_newest_first,
            case_list_batches_of_one_tenant,
            case_tokens_are_stored_revoked_and_touched,
            case_memory_put_get_version_content_type,
            case_memory_compare_and_set,
            case_memory_delete_with_and_without_cas,
            case_memory_list_prefix_pages,
            case_memory_incr,
            case_memory_ttl_expires,
            case_memory_large_value_round_trips,
            case_memory_changes_gapless_prefix_resumable,
            case_wait_for_any_first_key_only,
            case_shared_put_unblocks_two_batches,
            case_shared_key_present_before_create_counts,
            case_shared_store_as_unblocks_another_batch,
            case_batch_scope_write_rings_both_bells,
            case_expire_waits_fails_and_skips,
            case_expire_waits_finishes_with_fail_fast,
            case_add_ops_grows_a_running_batch,
            case_add_ops_waits_on_a_shared_scope,
            case_idempotent_create_returns_the_existing_batch,
            case_idempotent_add_ops_keeps_the_first_record,
            case_lost_workers_have_a_budget_of_their_own,
            case_lost_worker_retries_stop_after_fail_fast,
            case_lease_expiry_requeues_and_the_old_attempt_is_stale,
            case_renew_keeps_a_lease_alive,
            case_lost_worker_fails_when_the_policy_says_no,
            case_losses_exhaust_max_attempts,
            case_failure_kinds_follow_the_policy,
            case_backoff_delays_a_retry,
            case_lost_worker_without_backoff_is_ready_at_once,
            case_return_ops_hands_back_without_an_attempt,
            case_deadline_cancels_and_fails_the_batch,
            case_sequential_pass_reruns_a_failed_chain,
            case_sequential_pass_runs_one_at_a_time_and_failures_are_final,
            case_sequential_pass_not_after_fail_fast_or_cancel,
            case_note_blocked_appends_an_event_only,
            case_mark_lost_marks_unknown_batches_only,
            case_op_waits_reports_pending_and_missing_keys,
            case_doorbell_rings_started_and_ended,
            case_renew_reports_stale_attempts,
            case_hold_is_exclusive_and_extends,
            case_hold_runs_out_and_the_old_fence_is_refused,
            case_release_lets_another_take_over_at_once,
            case_hold_refuses_finished_and_unknown_batches,
            case_worker_registry_lists_live_entries,
            case_finished_batch_expires_after_its_retention,
            case_ready_depth_counts_queued_ops_per_priority,
            case_ready_gauge_is_set_to_the_total_capped,
            case_failed_writer_skips_its_waiters_and_their_dependents,
            case_writers_that_end_without_writing_skip_any_groups_last,
            case_a_writer_that_wrote_its_key_skips_nothing,
            case_a_key_written_before_its_writer_ended_is_not_hopeless,
            case_add_ops_judges_waits_on_keys_whose_writers_ended,
            case_lost_and_expired_writers_skip_their_waiters_too,
            case_shared_namespace_keys_are_never_judged,
            case_shared_store_as_is_written_once_even_when_resent,
            case_an_any_group_with_an_undeclared_key_keeps_waiting,
            case_skips_carry_the_dependency_as_data,
            case_fail_fast_cancels_carry_the_failed_op_as_data,
            case_a_cancel_reason_carries_no_cause,
            case_hopeless_skips_carry_the_key_and_its_writers_as_data,
            case_add_ops_skips_carry_causes_and_refusals_are_typed,
            case_add_ops_after_fail_fast_is_refused_by_type,
        );
        $crate::conformance_tests!(@shared_cases $make;
            case_concurrent_cas_increments_lose_none,
            case_concurrent_incr_from_four_tasks,
        );
        $crate::conformance_tests!(@cases $make_small_change_log;
            case_memory_changes_trimmed,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (store, _guard) = $make.await;
                $crate::conformance::$case(&*store).await;
            }
        )*
    };
    (@shared_cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (store, _guard) = $make.await;
                $crate::conformance::$case(store.clone()).await;
            }
        )*
    };
}

const NOW: u64 = 1_700_000_000_000;
/// The lease of every claim that is not about leases: far past any `now_ms`
/// a case passes.
const LEASE: u64 = NOW + 3_600_000;
/// Only a guard against hanging forever; never asserted on.
const DOORBELL_DEADLINE: Duration = Duration::from_secs(20);
/// The coordinator the cases not about ownership act as.
const COORDINATOR: &str = "coordinator-1";
/// Their hold: far past any `now_ms` a case passes (the in-memory store
/// judges holds by it) and any real time a case takes (Redis's clock).
const HOLD_TTL_MS: u64 = 3_600_000;

fn id(text: &str) -> BatchId {
    BatchId::new(text)
}

/// An op with one attempt, medium priority, no waits.
fn op(deps: u32, dependents: &[u32]) -> NewOp {
    NewOp {
        priority: 2,
        run_if_always: false,
        max_attempts: 1,
        deps,
        dependents: dependents.to_vec(),
        ..NewOp::default()
    }
}

fn batch(batch_id: &str, ops: Vec<NewOp>) -> NewBatch {
    NewBatch {
        id: id(batch_id),
        name: format!("{batch_id}-name"),
        memory: MemoryScope::Batch(id(batch_id)),
        max_parallel: 0,
        on_failure: OnFailure::Continue,
        created_ms: NOW,
        deadline_ms: 0,
        spec: format!("spec of {batch_id}").into_bytes(),
        ops,
        retry_failed_sequential: false,
        retain_ms: 0,
        tenant: String::new(),
        submitted_by: String::new(),
        request_digest: String::new(),
        lost_worker_retries: 0,
    }
}

fn success(claimed: Claimed) -> Completion {
    Completion {
        index: claimed.index,
        attempt: claimed.attempt,
        ok: true,
        failure: FailureKind::Error,
        retry_after_ms: 0,
        output: format!("out-{}", claimed.index),
        error: String::new(),
        details_json: format!("{{\"op\":{}}}", claimed.index),
        worker: "w1".to_owned(),
        started_ms: NOW + 10,
        duration_ms: 7,
        store_as: None,
    }
}

fn failure(claimed: Claimed, error: &str) -> Completion {
    Completion {
        ok: false,
        output: String::new(),
        error: error.to_owned(),
        ..success(claimed)
    }
}

fn claimed(index: u32, attempt: u32) -> Claimed {
    Claimed { index, attempt }
}

async fn indices(store: &dyn Store, batch_id: &BatchId, max: u32) -> Vec<u32> {
    store
        .claim(batch_id, max, NOW + 1, LEASE)
        .await
        .expect("claim")
        .iter()
        .map(|claimed| claimed.index)
        .collect()
}

async fn states(store: &dyn Store, batch_id: &BatchId) -> Vec<OpState> {
    store
        .op_records(batch_id)
        .await
        .expect("op_records")
        .iter()
        .map(|record| record.state)
        .collect()
}

async fn meta(store: &dyn Store, batch_id: &BatchId) -> BatchMeta {
    store
        .meta(batch_id)
        .await
        .expect("meta")
        .expect("batch exists")
}

async fn all_events(store: &dyn Store, batch_id: &BatchId) -> Vec<Event> {
    store.events(batch_id, 0, 1_000_000).await.expect("events")
}

/// (kind, op index, attempt) of every event.
async fn event_shapes(store: &dyn Store, batch_id: &BatchId) -> Vec<(EventKind, Option<u32>, u32)> {
    all_events(store, batch_id)
        .await
        .iter()
        .map(|event| (event.kind, event.op_index, event.attempt))
        .collect()
}

/// A batch's own memory scope.
fn own(batch_id: &BatchId) -> MemoryScope {
    MemoryScope::Batch(batch_id.clone())
}

fn shared(namespace: &str) -> MemoryScope {
    MemoryScope::Shared(namespace.to_owned())
}

fn typed(content_type: &str) -> PutOptions {
    PutOptions {
        content_type: content_type.to_owned(),
        ..PutOptions::default()
    }
}

/// Puts a value (content type `text/plain`); returns how many ops it unblocked.
async fn put(store: &dyn Store, scope: &MemoryScope, key: &str, value: &[u8]) -> u32 {
    store
        .memory_put(scope, key, value, &typed("text/plain"), NOW)
        .await
        .expect("memory_put")
        .unblocked
}

async fn get(store: &dyn Store, scope: &MemoryScope, key: &str) -> Option<Vec<u8>> {
    store
        .memory_get(scope, key)
        .await
        .expect("memory_get")
        .map(|value| value.value)
}

fn waiting_for(keys: &[&str]) -> NewOp {
    NewOp {
        wait_for: keys.iter().map(|key| key.to_string()).collect(),
        ..op(0, &[])
    }
}

fn waiting_for_any(keys: &[&str]) -> NewOp {
    NewOp {
        wait_for_any: keys.iter().map(|key| key.to_string()).collect(),
        ..op(0, &[])
    }
}

/// Holds the batch as [`COORDINATOR`] at `now_ms` (it must be running and
/// free or held by it already); the fence the fenced verbs then take.
async fn hold(store: &dyn Store, batch_id: &BatchId, now_ms: u64) -> Fence {
    store
        .hold_batch(batch_id, COORDINATOR, HOLD_TTL_MS, now_ms)
        .await
        .expect("hold_batch")
        .expect("the batch is free or held by this coordinator")
}

/// A fence no store handed out.
fn stranger() -> Fence {
    Fence {
        coordinator: "stranger".to_owned(),
        token: 1,
    }
}

/// Claims and succeeds exactly the op `index` (it must be the only ready one).
async fn run_one(store: &dyn Store, batch_id: &BatchId, index: u32) -> CompleteOutcome {
    let claimed = store
        .claim(batch_id, 10, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(claimed, vec![Claimed { index, attempt: 1 }]);
    store
        .complete(batch_id, &[success(claimed[0])], NOW + 20)
        .await
        .expect("complete")
}

/// Waits for the next bell other than `Resync` and asserts it is `expected`.
async fn expect_exact_bell(
    receiver: &mut tokio::sync::broadcast::Receiver<Doorbell>,
    expected: &Doorbell,
) {
    loop {
        let bell = tokio::time::timeout(DOORBELL_DEADLINE, receiver.recv())
            .await
            .expect("a doorbell before the deadline")
            .expect("doorbell channel open");
        if bell == Doorbell::Resync {
            continue;
        }
        assert_eq!(&bell, expected);
        return;
    }
}

/// Waits until every bell of `expected` has rung (in any order, others
/// ignored). The deadline only guards against hanging.
async fn expect_bells(
    receiver: &mut tokio::sync::broadcast::Receiver<Doorbell>,
    expected: &[Doorbell],
) {
    let mut missing: Vec<Doorbell> = expected.to_vec();
    while !missing.is_empty() {
        let bell = tokio::time::timeout(DOORBELL_DEADLINE, receiver.recv())
            .await
            .expect("the expected doorbells before the deadline")
            .expect("doorbell channel open");
        missing.retain(|wanted| *wanted != bell);
    }
}

fn shared_batch(batch_id: &str, namespace: &str, ops: Vec<NewOp>) -> NewBatch {
    NewBatch {
        memory: shared(namespace),
        ..batch(batch_id, ops)
    }
}

/// An op with `max_attempts` and `retry` (no waits, medium priority).
fn retrying(max_attempts: u32, retry: RetryPolicy) -> NewOp {
    NewOp {
        max_attempts,
        retry,
        ..op(0, &[])
    }
}

fn failed_with(claimed: Claimed, kind: FailureKind) -> Completion {
    Completion {
        failure: kind,
        ..failure(claimed, "it went wrong")
    }
}

async fn op_waits(store: &dyn Store, batch_id: &BatchId, index: u32) -> OpWaits {
    store.op_waits(batch_id, index).await.expect("op_waits")
}
