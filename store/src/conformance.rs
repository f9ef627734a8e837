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

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use volley_proto::BatchId;

use crate::model::*;
use crate::{Store, StoreError};

mod ready;
pub use ready::*;
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

/// Real unix ms: for the cases where a hold must run out, which Redis
/// judges by its own clock and the in-memory store by the `now_ms` given.
fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_millis() as u64
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

pub async fn case_chain_completes_in_order(store: &dyn Store) {
    use EventKind::*;
    let batch_id = id("chain");
    store
        .create_batch(batch("chain", vec![op(0, &[1]), op(1, &[2]), op(1, &[])]))
        .await
        .expect("create");
    assert_eq!(
        store.batch_spec(&batch_id).await.expect("spec"),
        Some(StoredSpec {
            base: b"spec of chain".to_vec(),
            added: Vec::new(),
        })
    );
    assert_eq!(
        store.active_batches().await.expect("active"),
        vec![batch_id.clone()]
    );
    assert_eq!(
        states(store, &batch_id).await,
        vec![OpState::Ready, OpState::Waiting, OpState::Waiting]
    );
    let first = store
        .claim(&batch_id, 10, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(first, vec![claimed(0, 1)]);
    assert_eq!(indices(store, &batch_id, 10).await, Vec::<u32>::new());
    assert_eq!(meta(store, &batch_id).await.running, 1);
    let outcome = store
        .complete(&batch_id, &[success(first[0])], NOW + 20)
        .await
        .expect("complete");
    assert_eq!(
        outcome,
        CompleteOutcome {
            recorded: 1,
            became_ready: 1,
            ..CompleteOutcome::default()
        }
    );
    run_one(store, &batch_id, 1).await;
    let last = run_one(store, &batch_id, 2).await;
    assert_eq!(last.finished, Some(BatchState::Succeeded));

    let meta = meta(store, &batch_id).await;
    assert_eq!(meta.state, BatchState::Succeeded);
    assert_eq!(meta.name, "chain-name");
    assert_eq!(
        (meta.total, meta.succeeded, meta.failed, meta.running),
        (3, 3, 0, 0)
    );
    assert_eq!(meta.finished_ms, Some(NOW + 20));
    assert_eq!(meta.error, "");
    let records = store.op_records(&batch_id).await.expect("records");
    assert_eq!(records.len(), 3);
    for (index, record) in records.iter().enumerate() {
        assert_eq!(
            record,
            &OpRecord {
                state: OpState::Succeeded,
                attempts: 1,
                worker: "w1".to_owned(),
                started_ms: NOW + 10,
                duration_ms: 7,
                output: format!("out-{index}"),
                error: String::new(),
                details_json: format!("{{\"op\":{index}}}"),
            }
        );
    }
    assert_eq!(
        event_shapes(store, &batch_id).await,
        vec![
            (BatchSubmitted, None, 0),
            (OpStarted, Some(0), 1),
            (OpSucceeded, Some(0), 1),
            (OpStarted, Some(1), 1),
            (OpSucceeded, Some(1), 1),
            (OpStarted, Some(2), 1),
            (OpSucceeded, Some(2), 1),
            (BatchFinished, None, 0),
        ]
    );
    let events = all_events(store, &batch_id).await;
    assert_eq!(events[0].at_ms, NOW);
    assert_eq!(events[2].worker, "w1");
    assert_eq!(events[7].batch_state, Some(BatchState::Succeeded));
    assert_eq!(
        store.active_batches().await.expect("active"),
        Vec::<BatchId>::new()
    );
    assert_eq!(indices(store, &batch_id, 10).await, Vec::<u32>::new());
}

pub async fn case_op_records_at_reads_the_given_ops(store: &dyn Store) {
    let batch_id = id("records-at");
    store
        .create_batch(batch(
            "records-at",
            vec![op(0, &[]), op(0, &[]), op(0, &[])],
        ))
        .await
        .expect("create");
    let claimed = store
        .claim(&batch_id, 3, NOW + 1, LEASE)
        .await
        .expect("claim");
    let second = claimed
        .iter()
        .copied()
        .find(|claim| claim.index == 1)
        .expect("op 1 claimed");
    store
        .complete(&batch_id, &[success(second)], NOW + 5)
        .await
        .expect("complete");
    let records = store
        .op_records_at(&batch_id, &[2, 1])
        .await
        .expect("records");
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].state, OpState::Running);
    assert_eq!(records[1].state, OpState::Succeeded);
    assert_eq!(records[1].output, "out-1");
    assert_eq!(records[1].worker, "w1");
    assert!(matches!(
        store.op_records_at(&batch_id, &[7]).await,
        Err(StoreError::BatchNotFound(_))
    ));
    assert!(matches!(
        store.op_records_at(&id("no-such-batch"), &[0]).await,
        Err(StoreError::BatchNotFound(_))
    ));
    let durations = store.op_durations(&batch_id).await.expect("durations");
    let recorded: Vec<u64> = store
        .op_records(&batch_id)
        .await
        .expect("records")
        .iter()
        .map(|record| record.duration_ms)
        .collect();
    assert_eq!(durations, recorded);
    assert_eq!(durations.len(), 3);
    assert!(matches!(
        store.op_durations(&id("no-such-batch")).await,
        Err(StoreError::BatchNotFound(_))
    ));
}

pub async fn case_diamond_counts_down(store: &dyn Store) {
    let batch_id = id("diamond");
    store
        .create_batch(batch(
            "diamond",
            vec![op(0, &[1, 2]), op(1, &[3]), op(1, &[3]), op(2, &[])],
        ))
        .await
        .expect("create");
    let outcome = run_one(store, &batch_id, 0).await;
    assert_eq!(outcome.became_ready, 2);
    let middle = store
        .claim(&batch_id, 10, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(middle, vec![claimed(1, 1), claimed(2, 1)]);
    let outcome = store
        .complete(&batch_id, &[success(middle[0])], NOW + 20)
        .await
        .expect("complete");
    assert_eq!(outcome.became_ready, 0);
    assert_eq!(indices(store, &batch_id, 10).await, Vec::<u32>::new());
    assert_eq!(states(store, &batch_id).await[3], OpState::Waiting);
    let outcome = store
        .complete(&batch_id, &[success(middle[1])], NOW + 20)
        .await
        .expect("complete");
    assert_eq!(outcome.became_ready, 1);
    let outcome = run_one(store, &batch_id, 3).await;
    assert_eq!(outcome.finished, Some(BatchState::Succeeded));
}

pub async fn case_priorities_then_fifo(store: &dyn Store) {
    let batch_id = id("priorities");
    let priorities = [3u8, 1, 0, 1, 0, 2];
    let ops = priorities
        .iter()
        .map(|&priority| NewOp {
            priority,
            ..op(0, &[])
        })
        .collect();
    store
        .create_batch(batch("priorities", ops))
        .await
        .expect("create");
    assert_eq!(indices(store, &batch_id, 100).await, vec![2, 4, 1, 3, 5, 0]);
}

pub async fn case_claim_respects_max(store: &dyn Store) {
    let batch_id = id("max");
    store
        .create_batch(batch("max", (0..5).map(|_| op(0, &[])).collect()))
        .await
        .expect("create");
    assert_eq!(indices(store, &batch_id, 2).await, vec![0, 1]);
    assert_eq!(indices(store, &batch_id, 2).await, vec![2, 3]);
    assert_eq!(indices(store, &batch_id, 2).await, vec![4]);
    assert_eq!(indices(store, &batch_id, 2).await, Vec::<u32>::new());
    assert_eq!(indices(store, &batch_id, 0).await, Vec::<u32>::new());
    assert_eq!(meta(store, &batch_id).await.running, 5);
}

pub async fn case_max_parallel_caps_claims(store: &dyn Store) {
    let batch_id = id("parallel");
    let mut new_batch = batch("parallel", (0..5).map(|_| op(0, &[])).collect());
    new_batch.max_parallel = 2;
    store.create_batch(new_batch).await.expect("create");
    let first = store
        .claim(&batch_id, 10, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(first, vec![claimed(0, 1), claimed(1, 1)]);
    assert_eq!(indices(store, &batch_id, 10).await, Vec::<u32>::new());
    store
        .complete(&batch_id, &[success(first[0])], NOW + 20)
        .await
        .expect("complete");
    assert_eq!(indices(store, &batch_id, 10).await, vec![2]);
    assert_eq!(meta(store, &batch_id).await.running, 2);
}

pub async fn case_permanent_failure_is_not_retried(store: &dyn Store) {
    let batch_id = id("permanent");
    store
        .create_batch(batch(
            "permanent",
            vec![NewOp {
                max_attempts: 3,
                ..op(0, &[])
            }],
        ))
        .await
        .expect("create");
    let first = store
        .claim(&batch_id, 10, NOW + 1, LEASE)
        .await
        .expect("claim");
    let mut refused = failure(first[0], "path escapes the root");
    refused.failure = FailureKind::Permanent;
    let outcome = store
        .complete(&batch_id, &[refused], NOW + 20)
        .await
        .expect("complete");
    assert_eq!(outcome.recorded, 1);
    assert!(outcome.retried.is_empty());
    assert_eq!(outcome.finished, Some(BatchState::Failed));
    let records = store.op_records(&batch_id).await.expect("records");
    assert_eq!(
        (records[0].state, records[0].attempts),
        (OpState::Failed, 1)
    );
    assert_eq!(records[0].error, "path escapes the root");
}

pub async fn case_retry_then_success(store: &dyn Store) {
    use EventKind::*;
    let batch_id = id("retry");
    store
        .create_batch(batch(
            "retry",
            vec![NewOp {
                max_attempts: 3,
                ..op(0, &[])
            }],
        ))
        .await
        .expect("create");
    let first = store
        .claim(&batch_id, 10, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(first, vec![claimed(0, 1)]);
    let outcome = store
        .complete(&batch_id, &[failure(first[0], "boom")], NOW + 20)
        .await
        .expect("complete");
    assert_eq!(
        outcome,
        CompleteOutcome {
            retried: vec![0],
            ..CompleteOutcome::default()
        }
    );
    assert_eq!(states(store, &batch_id).await, vec![OpState::Ready]);
    assert_eq!(meta(store, &batch_id).await.running, 0);
    let second = store
        .claim(&batch_id, 10, NOW + 30, LEASE)
        .await
        .expect("claim");
    assert_eq!(second, vec![claimed(0, 2)]);
    let outcome = store
        .complete(&batch_id, &[success(second[0])], NOW + 40)
        .await
        .expect("complete");
    assert_eq!(outcome.recorded, 1);
    assert_eq!(outcome.finished, Some(BatchState::Succeeded));
    let records = store.op_records(&batch_id).await.expect("records");
    assert_eq!(
        (records[0].state, records[0].attempts),
        (OpState::Succeeded, 2)
    );
    assert_eq!(
        event_shapes(store, &batch_id).await,
        vec![
            (BatchSubmitted, None, 0),
            (OpStarted, Some(0), 1),
            (OpRetrying, Some(0), 1),
            (OpStarted, Some(0), 2),
            (OpSucceeded, Some(0), 2),
            (BatchFinished, None, 0),
        ]
    );
    assert_eq!(all_events(store, &batch_id).await[2].message, "boom");
}

pub async fn case_failure_skips_dependents_transitively(store: &dyn Store) {
    use EventKind::*;
    let batch_id = id("skips");
    // 0 → 1 → 2, and 0 → 3 (run_if_always) → 4.
    let ops = vec![
        op(0, &[1, 3]),
        op(1, &[2]),
        op(1, &[]),
        NewOp {
            run_if_always: true,
            ..op(1, &[4])
        },
        op(1, &[]),
    ];
    store
        .create_batch(batch("skips", ops))
        .await
        .expect("create");
    let first = store
        .claim(&batch_id, 10, NOW + 1, LEASE)
        .await
        .expect("claim");
    let outcome = store
        .complete(&batch_id, &[failure(first[0], "exit 1")], NOW + 20)
        .await
        .expect("complete");
    assert_eq!(
        outcome,
        CompleteOutcome {
            recorded: 1,
            became_ready: 1,
            ..CompleteOutcome::default()
        }
    );
    assert_eq!(
        states(store, &batch_id).await,
        vec![
            OpState::Failed,
            OpState::Skipped,
            OpState::Skipped,
            OpState::Ready,
            OpState::Waiting
        ]
    );
    let records = store.op_records(&batch_id).await.expect("records");
    assert_eq!(records[0].error, "exit 1");
    assert_eq!(records[1].error, "dependency `0` failed");
    assert_eq!(records[2].error, "dependency `1` skipped");
    assert_eq!(records[1].attempts, 0);
    run_one(store, &batch_id, 3).await;
    let last = run_one(store, &batch_id, 4).await;
    assert_eq!(last.finished, Some(BatchState::Failed));
    let meta = meta(store, &batch_id).await;
    assert_eq!(
        (meta.succeeded, meta.failed, meta.skipped, meta.cancelled),
        (2, 1, 2, 0)
    );
    assert_eq!(meta.state, BatchState::Failed);
    assert_eq!(meta.error, "1 failed, 2 skipped, 0 cancelled");
    let shapes = event_shapes(store, &batch_id).await;
    assert_eq!(
        shapes[..5],
        [
            (BatchSubmitted, None, 0),
            (OpStarted, Some(0), 1),
            (OpFailed, Some(0), 1),
            (OpSkipped, Some(1), 0),
            (OpSkipped, Some(2), 0),
        ]
    );
    let events = all_events(store, &batch_id).await;
    assert_eq!(events[2].message, "exit 1");
    assert_eq!(events[3].message, "dependency `0` failed");
    let finished = events.last().expect("events");
    assert_eq!(finished.kind, BatchFinished);
    assert_eq!(finished.batch_state, Some(BatchState::Failed));
}

pub async fn case_fail_fast_cancels_waiting_and_ready(store: &dyn Store) {
    use EventKind::*;
    let batch_id = id("failfast");
    // 0 and 1 run first; 2 waits for 0; 3 is ready but low priority.
    let ops = vec![
        op(0, &[2]),
        NewOp {
            max_attempts: 3,
            ..op(0, &[])
        },
        op(1, &[]),
        NewOp {
            priority: 3,
            ..op(0, &[])
        },
        op(0, &[]),
    ];
    let mut new_batch = batch("failfast", ops);
    new_batch.on_failure = OnFailure::FailFast;
    store.create_batch(new_batch).await.expect("create");
    let running = store
        .claim(&batch_id, 2, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(running, vec![claimed(0, 1), claimed(1, 1)]);
    let outcome = store
        .complete(&batch_id, &[failure(running[0], "bad")], NOW + 20)
        .await
        .expect("complete");
    assert_eq!(outcome.recorded, 1);
    assert_eq!(outcome.finished, None);
    assert_eq!(
        states(store, &batch_id).await,
        vec![
            OpState::Failed,
            OpState::Running,
            OpState::Skipped,
            OpState::Cancelled,
            OpState::Cancelled
        ]
    );
    let records = store.op_records(&batch_id).await.expect("records");
    assert_eq!(records[3].error, "cancelled: fail_fast after op `0` failed");
    assert_eq!(indices(store, &batch_id, 10).await, Vec::<u32>::new());
    // Once fail_fast fired, a failure is final even with attempts left.
    let outcome = store
        .complete(&batch_id, &[failure(running[1], "also bad")], NOW + 30)
        .await
        .expect("complete");
    assert_eq!(outcome.retried, Vec::<u32>::new());
    assert_eq!(outcome.recorded, 1);
    assert_eq!(outcome.finished, Some(BatchState::Failed));
    let meta = meta(store, &batch_id).await;
    assert_eq!(
        (
            meta.succeeded,
            meta.failed,
            meta.skipped,
            meta.cancelled,
            meta.running
        ),
        (0, 2, 1, 2, 0)
    );
    assert_eq!(
        event_shapes(store, &batch_id).await,
        vec![
            (BatchSubmitted, None, 0),
            (OpStarted, Some(0), 1),
            (OpStarted, Some(1), 1),
            (OpFailed, Some(0), 1),
            (OpSkipped, Some(2), 0),
            (OpCancelled, Some(3), 0),
            (OpCancelled, Some(4), 0),
            (OpFailed, Some(1), 1),
            (BatchFinished, None, 0),
        ]
    );
}

pub async fn case_stale_completions_are_ignored(store: &dyn Store) {
    let batch_id = id("stale");
    store
        .create_batch(batch("stale", vec![op(0, &[1]), op(1, &[]), op(0, &[])]))
        .await
        .expect("create");
    let running = store
        .claim(&batch_id, 1, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(running, vec![claimed(0, 1)]);
    let events_before = all_events(store, &batch_id).await.len();
    // Wrong attempt, an op that is waiting, an op that is ready, an index out of range.
    let outcome = store
        .complete(
            &batch_id,
            &[
                success(claimed(0, 2)),
                success(claimed(1, 1)),
                success(claimed(2, 0)),
                success(claimed(99, 1)),
            ],
            NOW + 20,
        )
        .await
        .expect("complete");
    assert_eq!(
        outcome,
        CompleteOutcome {
            stale: vec![0, 1, 2, 99],
            ..CompleteOutcome::default()
        }
    );
    assert_eq!(all_events(store, &batch_id).await.len(), events_before);
    assert_eq!(
        states(store, &batch_id).await,
        vec![OpState::Running, OpState::Waiting, OpState::Ready]
    );
    // The real one, then the same again (duplicate delivery).
    let outcome = store
        .complete(
            &batch_id,
            &[success(running[0]), success(running[0])],
            NOW + 20,
        )
        .await
        .expect("complete");
    assert_eq!((outcome.recorded, outcome.stale.clone()), (1, vec![0]));
    assert_eq!(meta(store, &batch_id).await.succeeded, 1);
    // After cancel, a running op's late result is stale.
    let late = store
        .claim(&batch_id, 1, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(late, vec![claimed(2, 1)]);
    store
        .cancel(&batch_id, "user", NOW + 30)
        .await
        .expect("cancel");
    let outcome = store
        .complete(&batch_id, &[success(late[0])], NOW + 40)
        .await
        .expect("complete");
    assert_eq!(outcome.stale, vec![2]);
    assert_eq!(outcome.recorded, 0);
    assert_eq!(outcome.finished, None);
    assert_eq!(states(store, &batch_id).await[2], OpState::Cancelled);
}

pub async fn case_store_as_unblocks_a_waiter(store: &dyn Store) {
    let batch_id = id("store-as");
    let ops = vec![
        op(0, &[]),
        NewOp {
            wait_for: vec!["swarm/findings".to_owned()],
            ..op(0, &[])
        },
    ];
    store
        .create_batch(batch("store-as", ops))
        .await
        .expect("create");
    assert_eq!(
        states(store, &batch_id).await,
        vec![OpState::Ready, OpState::Waiting]
    );
    let first = store
        .claim(&batch_id, 10, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(first, vec![claimed(0, 1)]);
    let completion = Completion {
        output: "the findings".to_owned(),
        store_as: Some("swarm/findings".to_owned()),
        ..success(first[0])
    };
    let outcome = store
        .complete(&batch_id, &[completion], NOW + 20)
        .await
        .expect("complete");
    assert_eq!(outcome.became_ready, 1);
    assert_eq!(
        get(store, &own(&batch_id), "swarm/findings").await,
        Some(b"the findings".to_vec())
    );
    assert_eq!(indices(store, &batch_id, 10).await, vec![1]);
}

pub async fn case_put_memory_unblocks_and_present_keys_count(store: &dyn Store) {
    let batch_id = id("memory");
    // Written before the batch exists: counts as present at creation.
    assert_eq!(put(store, &own(&batch_id), "pre", b"early").await, 0);
    let waiting = |keys: &[&str]| NewOp {
        wait_for: keys.iter().map(|key| key.to_string()).collect(),
        ..op(0, &[])
    };
    let ops = vec![
        waiting(&["pre"]),
        waiting(&["a", "b"]),
        waiting(&["a", "pre"]),
        op(0, &[]),
        // Waits for a key and for op 3.
        NewOp {
            deps: 1,
            ..waiting(&["b"])
        },
    ];
    let mut ops = ops;
    ops[3].dependents = vec![4];
    store
        .create_batch(batch("memory", ops))
        .await
        .expect("create");
    assert_eq!(
        states(store, &batch_id).await,
        vec![
            OpState::Ready,
            OpState::Waiting,
            OpState::Waiting,
            OpState::Ready,
            OpState::Waiting
        ]
    );
    // Ops waiting for nothing queue first, then those satisfied by memory.
    assert_eq!(indices(store, &batch_id, 10).await, vec![3, 0]);
    // `unblocked` counts countdowns decremented: ops 1 and 2 (2 is ready).
    assert_eq!(put(store, &own(&batch_id), "a", b"1").await, 2);
    assert_eq!(put(store, &own(&batch_id), "unrelated", b"x").await, 0);
    // Ops 1 (now ready) and 4 (still waiting for op 3).
    assert_eq!(put(store, &own(&batch_id), "b", b"2").await, 2);
    // Writing a key again unblocks nothing more.
    assert_eq!(put(store, &own(&batch_id), "a", b"3").await, 0);
    assert_eq!(indices(store, &batch_id, 10).await, vec![2, 1]);
    assert_eq!(states(store, &batch_id).await[4], OpState::Waiting);
    let outcome = store
        .complete(&batch_id, &[success(claimed(3, 1))], NOW + 20)
        .await
        .expect("complete");
    assert_eq!(outcome.became_ready, 1);
    assert_eq!(indices(store, &batch_id, 10).await, vec![4]);
    assert_eq!(get(store, &own(&batch_id), "a").await, Some(b"3".to_vec()));
    assert_eq!(
        get(store, &own(&batch_id), "pre").await,
        Some(b"early".to_vec())
    );
    assert_eq!(get(store, &own(&batch_id), "nope").await, None);
    assert_eq!(get(store, &own(&id("other")), "a").await, None);
}

pub async fn case_cancel_returns_running_and_is_idempotent(store: &dyn Store) {
    use EventKind::*;
    let batch_id = id("cancel");
    store
        .create_batch(batch("cancel", vec![op(0, &[2]), op(0, &[]), op(1, &[])]))
        .await
        .expect("create");
    let running = store
        .claim(&batch_id, 1, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(running, vec![claimed(0, 1)]);
    let outcome = store
        .cancel(&batch_id, "user asked", NOW + 50)
        .await
        .expect("cancel");
    assert_eq!(
        outcome,
        CancelOutcome {
            running: vec![claimed(0, 1)],
            cancelled: 3,
        }
    );
    let meta_after = meta(store, &batch_id).await;
    assert_eq!(meta_after.state, BatchState::Cancelled);
    assert_eq!(meta_after.error, "cancelled: user asked");
    assert_eq!(meta_after.finished_ms, Some(NOW + 50));
    assert_eq!((meta_after.cancelled, meta_after.running), (3, 0));
    let records = store.op_records(&batch_id).await.expect("records");
    assert_eq!(records[0].attempts, 1);
    assert_eq!(records[2].error, "cancelled: user asked");
    assert!(
        records
            .iter()
            .all(|record| record.state == OpState::Cancelled)
    );
    let shapes = event_shapes(store, &batch_id).await;
    assert_eq!(
        shapes,
        vec![
            (BatchSubmitted, None, 0),
            (OpStarted, Some(0), 1),
            (OpCancelled, Some(0), 1),
            (OpCancelled, Some(1), 0),
            (OpCancelled, Some(2), 0),
            (BatchFinished, None, 0),
        ]
    );
    assert_eq!(
        all_events(store, &batch_id).await[5].batch_state,
        Some(BatchState::Cancelled)
    );
    assert_eq!(
        store.active_batches().await.expect("active"),
        Vec::<BatchId>::new()
    );
    // Again: nothing changes.
    let again = store
        .cancel(&batch_id, "twice", NOW + 60)
        .await
        .expect("cancel");
    assert_eq!(again, CancelOutcome::default());
    assert_eq!(event_shapes(store, &batch_id).await.len(), shapes.len());
    assert_eq!(meta(store, &batch_id).await, meta_after);
    assert_eq!(indices(store, &batch_id, 10).await, Vec::<u32>::new());
}

pub async fn case_events_are_gapless_and_resumable(store: &dyn Store) {
    let batch_id = id("events");
    store
        .create_batch(batch("events", vec![op(0, &[1]), op(1, &[2]), op(1, &[])]))
        .await
        .expect("create");
    for index in 0..3 {
        run_one(store, &batch_id, index).await;
    }
    let all = all_events(store, &batch_id).await;
    assert_eq!(all.len(), 8);
    let seqs: Vec<u64> = all.iter().map(|event| event.seq).collect();
    assert_eq!(seqs, (1..=8).collect::<Vec<u64>>());
    for after in 0..=all.len() {
        let page = store
            .events(&batch_id, after as u64, 3)
            .await
            .expect("events");
        let end = (after + 3).min(all.len());
        assert_eq!(page, all[after..end].to_vec(), "after {after}");
    }
    assert_eq!(
        store.events(&batch_id, 100, 10).await.expect("events"),
        Vec::<Event>::new()
    );
    assert_eq!(
        store.events(&id("no-such"), 0, 10).await.expect("events"),
        Vec::<Event>::new()
    );
}

pub async fn case_duplicate_batch_id_is_rejected(store: &dyn Store) {
    let batch_id = id("dup");
    store
        .create_batch(batch("dup", vec![op(0, &[])]))
        .await
        .expect("create");
    let again = store
        .create_batch(batch("dup", vec![op(0, &[]), op(0, &[])]))
        .await;
    assert!(matches!(again, Err(StoreError::BatchExists(ref reused)) if *reused == batch_id));
    assert_eq!(meta(store, &batch_id).await.total, 1);
    assert_eq!(all_events(store, &batch_id).await.len(), 1);
}

pub async fn case_unknown_batch(store: &dyn Store) {
    let batch_id = id("ghost");
    let fence = stranger();
    assert_eq!(store.meta(&batch_id).await.expect("meta"), None);
    assert_eq!(store.batch_spec(&batch_id).await.expect("spec"), None);
    assert!(matches!(
        store.claim(&batch_id, 1, NOW, LEASE).await,
        Err(StoreError::BatchNotFound(_))
    ));
    assert!(matches!(
        store
            .complete(&batch_id, &[success(claimed(0, 1))], NOW)
            .await,
        Err(StoreError::BatchNotFound(_))
    ));
    assert!(matches!(
        store.cancel(&batch_id, "x", NOW).await,
        Err(StoreError::BatchNotFound(_))
    ));
    assert!(matches!(
        store.op_records(&batch_id).await,
        Err(StoreError::BatchNotFound(_))
    ));
    assert!(matches!(
        store.renew_leases(&batch_id, &[claimed(0, 1)], NOW).await,
        Err(StoreError::BatchNotFound(_))
    ));
    assert!(matches!(
        store.expire_leases(&batch_id, NOW, &fence).await,
        Err(StoreError::BatchNotFound(_))
    ));
    assert!(matches!(
        store.return_ops(&batch_id, &[claimed(0, 1)], NOW).await,
        Err(StoreError::BatchNotFound(_))
    ));
    assert!(matches!(
        store.expire_deadline(&batch_id, NOW, &fence).await,
        Err(StoreError::BatchNotFound(_))
    ));
    assert!(matches!(
        store.op_waits(&batch_id, 0).await,
        Err(StoreError::BatchNotFound(_))
    ));
}

pub async fn case_empty_batch_finishes_at_once(store: &dyn Store) {
    use EventKind::*;
    let batch_id = id("empty");
    store
        .create_batch(batch("empty", Vec::new()))
        .await
        .expect("create");
    let meta = meta(store, &batch_id).await;
    assert_eq!((meta.state, meta.total), (BatchState::Succeeded, 0));
    assert_eq!(
        event_shapes(store, &batch_id).await,
        vec![(BatchSubmitted, None, 0), (BatchFinished, None, 0)]
    );
    assert_eq!(
        store.active_batches().await.expect("active"),
        Vec::<BatchId>::new()
    );
}

/// Waits for `Doorbell::Batch(expected)`, skipping `Resync`; any other bell
/// fails the case. The deadline only guards against hanging.
async fn expect_bell(
    receiver: &mut tokio::sync::broadcast::Receiver<Doorbell>,
    expected: &BatchId,
) {
    expect_exact_bell(receiver, &Doorbell::Batch(expected.clone())).await;
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

pub async fn case_doorbell_rings_on_complete(store: &dyn Store) {
    let batch_id = id("bell");
    let marker = id("bell-marker");
    let mut receiver = store.doorbells();
    store
        .create_batch(batch("bell", vec![op(0, &[])]))
        .await
        .expect("create");
    expect_bell(&mut receiver, &batch_id).await;
    expect_exact_bell(&mut receiver, &Doorbell::Started(batch_id.clone())).await;
    let running = store
        .claim(&batch_id, 1, NOW + 1, LEASE)
        .await
        .expect("claim");
    expect_exact_bell(&mut receiver, &Doorbell::Events(batch_id.clone())).await;
    // Bells arrive in order, so once the marker's bell is in, nothing of
    // the first batch is still under way.
    store
        .create_batch(batch("bell-marker", vec![op(0, &[])]))
        .await
        .expect("create");
    expect_bell(&mut receiver, &marker).await;
    expect_exact_bell(&mut receiver, &Doorbell::Started(marker.clone())).await;
    store
        .complete(&batch_id, &[success(running[0])], NOW + 20)
        .await
        .expect("complete");
    expect_bell(&mut receiver, &batch_id).await;
    expect_exact_bell(&mut receiver, &Doorbell::Ended(batch_id.clone())).await;
    // A memory write nobody waits for rings only the memory bell.
    put(store, &own(&marker), "k", b"v").await;
    expect_exact_bell(&mut receiver, &Doorbell::Memory(own(&marker))).await;
}

pub async fn case_ten_thousand_ops_in_rounds_of_500(store: &dyn Store) {
    let batch_id = id("ten-thousand");
    store
        .create_batch(batch(
            "ten-thousand",
            (0..10_000).map(|_| op(0, &[])).collect(),
        ))
        .await
        .expect("create");
    let mut rounds = 0;
    let mut next_index = 0;
    let mut finished = None;
    loop {
        let running = store
            .claim(&batch_id, 500, NOW + 1, LEASE)
            .await
            .expect("claim");
        if running.is_empty() {
            break;
        }
        rounds += 1;
        assert_eq!(running.len(), 500);
        for claimed in &running {
            assert_eq!(
                *claimed,
                Claimed {
                    index: next_index,
                    attempt: 1
                }
            );
            next_index += 1;
        }
        let completions: Vec<Completion> = running.iter().copied().map(success).collect();
        let outcome = store
            .complete(&batch_id, &completions, NOW + 20)
            .await
            .expect("complete");
        assert_eq!(outcome.recorded, 500);
        assert!(outcome.stale.is_empty());
        finished = outcome.finished;
    }
    assert_eq!(rounds, 20);
    assert_eq!(finished, Some(BatchState::Succeeded));
    let meta = meta(store, &batch_id).await;
    assert_eq!((meta.succeeded, meta.running), (10_000, 0));
    let records = store.op_records(&batch_id).await.expect("records");
    assert_eq!(records.len(), 10_000);
    assert_eq!(records[9_999].output, "out-9999");
    let events = all_events(store, &batch_id).await;
    assert_eq!(events.len(), 1 + 2 * 10_000 + 1);
    assert_eq!(events.last().map(|event| event.seq), Some(20_002));
}

/// More ops and wait pairs than one write chunk (10k), with keys both
/// present before creation and written after.
pub async fn case_large_batch_with_waits_crosses_chunks(store: &dyn Store) {
    let batch_id = id("large");
    const OPS: u32 = 25_000;
    put(store, &own(&batch_id), "present", b"1").await;
    let ops = (0..OPS)
        .map(|index| {
            let wait_for = match index % 3 {
                0 => vec![],
                1 => vec!["present".to_owned()],
                _ => vec!["present".to_owned(), "later".to_owned()],
            };
            NewOp {
                wait_for,
                ..op(0, &[])
            }
        })
        .collect();
    store
        .create_batch(batch("large", ops))
        .await
        .expect("create");
    let ready_now = store
        .claim(&batch_id, OPS, NOW + 1, LEASE)
        .await
        .expect("claim");
    let expected_now = (0..OPS).filter(|index| index % 3 != 2).count();
    assert_eq!(ready_now.len(), expected_now);
    // Waiting for nothing first (index order), then satisfied by memory.
    assert_eq!(ready_now[0].index, 0);
    assert_eq!(ready_now[1].index, 3);
    let last_satisfied_by_memory = (0..OPS).rev().find(|index| index % 3 == 1);
    assert_eq!(
        Some(ready_now[expected_now - 1].index),
        last_satisfied_by_memory
    );
    let unblocked = put(store, &own(&batch_id), "later", b"2").await;
    assert_eq!(unblocked as usize, OPS as usize - expected_now);
    let later = store
        .claim(&batch_id, OPS, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(later.len(), OPS as usize - expected_now);
    assert_eq!(later[0].index, 2);
}

pub async fn case_list_batches_of_one_tenant(store: &dyn Store) {
    for (name, tenant, created_ms) in [
        ("a-old", "a", NOW),
        ("b-only", "b", NOW + 100),
        ("a-new", "a", NOW + 200),
    ] {
        let mut new_batch = batch(name, vec![op(0, &[])]);
        new_batch.created_ms = created_ms;
        new_batch.tenant = tenant.to_owned();
        store.create_batch(new_batch).await.expect("create");
    }
    let names = |metas: Vec<BatchMeta>| -> Vec<(String, String)> {
        metas
            .into_iter()
            .map(|meta| (meta.id.into_string(), meta.tenant))
            .collect()
    };
    assert_eq!(
        names(store.list_batches(10, Some("a")).await.expect("list a")),
        vec![
            ("a-new".to_owned(), "a".to_owned()),
            ("a-old".to_owned(), "a".to_owned())
        ]
    );
    assert_eq!(
        names(store.list_batches(1, Some("a")).await.expect("list a")),
        vec![("a-new".to_owned(), "a".to_owned())]
    );
    assert_eq!(
        names(store.list_batches(10, Some("b")).await.expect("list b")),
        vec![("b-only".to_owned(), "b".to_owned())]
    );
    assert!(
        store
            .list_batches(10, Some("c"))
            .await
            .expect("list c")
            .is_empty()
    );
    assert_eq!(store.list_batches(10, None).await.expect("list").len(), 3);
    let meta = store
        .meta(&id("b-only"))
        .await
        .expect("meta")
        .expect("exists");
    assert_eq!(meta.tenant, "b");
}

pub async fn case_tokens_are_stored_revoked_and_touched(store: &dyn Store) {
    let record = TokenRecord {
        id: "abc123".to_owned(),
        hash: "00ff".to_owned(),
        role: "client".to_owned(),
        tenant: "team-a".to_owned(),
        name: "ci".to_owned(),
        created_ms: NOW,
        expires_ms: NOW + 1000,
        labels: BTreeMap::from([("zone".to_owned(), "eu".to_owned())]),
        kinds: vec!["echo".to_owned()],
        revoked_ms: None,
        last_used_ms: None,
    };
    assert_eq!(store.token("abc123").await.expect("token"), None);
    store.create_token(&record).await.expect("create");
    assert!(matches!(
        store.create_token(&record).await,
        Err(StoreError::TokenExists(taken)) if taken == "abc123"
    ));
    assert_eq!(
        store.token("abc123").await.expect("token"),
        Some(record.clone())
    );
    let revocations = store.token_revocations().await.expect("revocations");
    store.touch_token("abc123", NOW + 5).await.expect("touch");
    assert!(
        store
            .revoke_token("abc123", NOW + 10)
            .await
            .expect("revoke")
    );
    assert!(
        store
            .revoke_token("abc123", NOW + 20)
            .await
            .expect("revoke")
    );
    assert!(!store.revoke_token("nope", NOW + 20).await.expect("revoke"));
    assert_eq!(
        store.token_revocations().await.expect("revocations"),
        revocations + 2
    );
    let read = store.token("abc123").await.expect("token").expect("exists");
    assert_eq!(read.revoked_ms, Some(NOW + 10));
    assert_eq!(read.last_used_ms, Some(NOW + 5));
    let mut other = record.clone();
    other.id = "0first".to_owned();
    store.create_token(&other).await.expect("create");
    let ids: Vec<String> = store
        .tokens()
        .await
        .expect("tokens")
        .into_iter()
        .map(|token| token.id)
        .collect();
    assert_eq!(ids, vec!["0first", "abc123"]);
}

pub async fn case_list_batches_newest_first(store: &dyn Store) {
    for (name, created_ms) in [("old", NOW), ("newest", NOW + 300), ("middle", NOW + 200)] {
        let mut new_batch = batch(name, vec![op(0, &[])]);
        new_batch.created_ms = created_ms;
        store.create_batch(new_batch).await.expect("create");
    }
    let listed: Vec<String> = store
        .list_batches(10, None)
        .await
        .expect("list")
        .into_iter()
        .map(|meta| meta.id.into_string())
        .collect();
    assert_eq!(listed, vec!["newest", "middle", "old"]);
    let limited = store.list_batches(2, None).await.expect("list");
    assert_eq!(limited.len(), 2);
    assert_eq!(limited[0].name, "newest-name");
    assert_eq!(limited[0].created_ms, NOW + 300);
    assert_eq!(
        store.active_batches().await.expect("active"),
        vec![id("old"), id("middle"), id("newest")]
    );
    let epoch = store.epoch().await.expect("epoch");
    assert!(!epoch.is_empty());
    assert_eq!(store.epoch().await.expect("epoch"), epoch);
}

// ---- memory verbs -------------------------------------------------------

pub async fn case_memory_put_get_version_content_type(store: &dyn Store) {
    let scope = shared("pg");
    let first = store
        .memory_put(&scope, "k", b"v1", &typed("application/json"), NOW)
        .await
        .expect("put");
    assert_eq!(
        first,
        PutOutcome {
            version: 1,
            unblocked: 0
        }
    );
    assert_eq!(
        store.memory_get(&scope, "k").await.expect("get"),
        Some(MemoryValue {
            value: b"v1".to_vec(),
            content_type: "application/json".to_owned(),
            version: 1,
        })
    );
    let second = store
        .memory_put(&scope, "k", b"v2", &typed("text/csv"), NOW)
        .await
        .expect("put");
    assert_eq!(second.version, 2);
    assert_eq!(
        store.memory_get(&scope, "k").await.expect("get"),
        Some(MemoryValue {
            value: b"v2".to_vec(),
            content_type: "text/csv".to_owned(),
            version: 2,
        })
    );
    assert_eq!(store.memory_get(&scope, "nope").await.expect("get"), None);
    // Scopes are apart: the same key of a batch scope or another namespace.
    assert_eq!(get(store, &own(&id("pg")), "k").await, None);
    assert_eq!(get(store, &shared("pg2"), "k").await, None);
    assert_eq!(store.memory_revision(&scope).await.expect("revision"), 2);
    assert_eq!(
        store
            .memory_revision(&shared("pg2"))
            .await
            .expect("revision"),
        0
    );
}

fn cas(if_version: u64) -> PutOptions {
    PutOptions {
        if_version: Some(if_version),
        ..typed("text/plain")
    }
}

pub async fn case_memory_compare_and_set(store: &dyn Store) {
    let scope = shared("cas-basic");
    // Create-only: version 0 means "must not exist".
    let created = store
        .memory_put(&scope, "k", b"a", &cas(0), NOW)
        .await
        .expect("create-only put");
    assert_eq!(created.version, 1);
    let again = store.memory_put(&scope, "k", b"b", &cas(0), NOW).await;
    assert!(
        matches!(again, Err(StoreError::VersionMismatch { ref key, expected: 0, actual: 1 }) if key == "k"),
        "{again:?}"
    );
    let swapped = store
        .memory_put(&scope, "k", b"c", &cas(1), NOW)
        .await
        .expect("cas put");
    assert_eq!(swapped.version, 2);
    let stale = store.memory_put(&scope, "k", b"d", &cas(1), NOW).await;
    assert!(
        matches!(
            stale,
            Err(StoreError::VersionMismatch {
                expected: 1,
                actual: 2,
                ..
            })
        ),
        "{stale:?}"
    );
    let missing = store.memory_put(&scope, "other", b"x", &cas(5), NOW).await;
    assert!(
        matches!(
            missing,
            Err(StoreError::VersionMismatch {
                expected: 5,
                actual: 0,
                ..
            })
        ),
        "{missing:?}"
    );
    let value = store
        .memory_get(&scope, "k")
        .await
        .expect("get")
        .expect("k exists");
    assert_eq!((value.value, value.version), (b"c".to_vec(), 2));
    assert_eq!(store.memory_get(&scope, "other").await.expect("get"), None);
    // Refused writes log no change.
    assert_eq!(store.memory_revision(&scope).await.expect("revision"), 2);
}

pub async fn case_memory_delete_with_and_without_cas(store: &dyn Store) {
    let scope = shared("del");
    put(store, &scope, "k", b"1").await;
    let refused = store.memory_delete(&scope, "k", Some(2), NOW).await;
    assert!(
        matches!(
            refused,
            Err(StoreError::VersionMismatch {
                expected: 2,
                actual: 1,
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(get(store, &scope, "k").await, Some(b"1".to_vec()));
    assert!(
        store
            .memory_delete(&scope, "k", Some(1), NOW)
            .await
            .expect("delete")
    );
    assert_eq!(get(store, &scope, "k").await, None);
    assert!(
        !store
            .memory_delete(&scope, "k", None, NOW)
            .await
            .expect("delete")
    );
    put(store, &scope, "plain", b"x").await;
    assert!(
        store
            .memory_delete(&scope, "plain", None, NOW)
            .await
            .expect("delete")
    );
    // Written again after a delete, a key starts over at version 1.
    let fresh = store
        .memory_put(&scope, "k", b"2", &cas(0), NOW)
        .await
        .expect("put");
    assert_eq!(fresh.version, 1);
    let listed: Vec<String> = store
        .memory_list(&scope, "", None, 10)
        .await
        .expect("list")
        .into_iter()
        .map(|info| info.key)
        .collect();
    assert_eq!(listed, vec!["k"]);
}

pub async fn case_memory_list_prefix_pages(store: &dyn Store) {
    let scope = shared("list");
    for key in ["a/3", "b/1", "a/1", "a", "a/5", "a/2", "ab", "a/4"] {
        put(store, &scope, key, key.as_bytes()).await;
    }
    put(store, &scope, "a/2", b"again").await;
    store
        .memory_delete(&scope, "a/4", None, NOW)
        .await
        .expect("delete");
    let keys = |infos: Vec<MemoryKeyInfo>| -> Vec<String> {
        infos.into_iter().map(|info| info.key).collect()
    };
    let page1 = store
        .memory_list(&scope, "a/", None, 2)
        .await
        .expect("list");
    assert_eq!(page1[1].version, 2);
    assert_eq!(page1[1].size, 5);
    assert_eq!(page1[1].content_type, "text/plain");
    assert_eq!(page1[1].expires_at_ms, 0);
    assert_eq!(keys(page1), vec!["a/1", "a/2"]);
    let page2 = store
        .memory_list(&scope, "a/", Some("a/2"), 2)
        .await
        .expect("list");
    assert_eq!(keys(page2), vec!["a/3", "a/5"]);
    let page3 = store
        .memory_list(&scope, "a/", Some("a/5"), 2)
        .await
        .expect("list");
    assert_eq!(keys(page3), Vec::<String>::new());
    // `after_key` before the prefix: starts at the prefix.
    let from_start = store
        .memory_list(&scope, "a/", Some("0"), 10)
        .await
        .expect("list");
    assert_eq!(keys(from_start), vec!["a/1", "a/2", "a/3", "a/5"]);
    let all = store
        .memory_list(&scope, "", None, 100)
        .await
        .expect("list");
    assert_eq!(
        keys(all),
        vec!["a", "a/1", "a/2", "a/3", "a/5", "ab", "b/1"]
    );
    assert_eq!(
        store.memory_list(&scope, "", None, 0).await.expect("list"),
        Vec::new()
    );
    assert_eq!(
        store
            .memory_list(&shared("list-empty"), "", None, 10)
            .await
            .expect("list"),
        Vec::new()
    );
}

pub async fn case_memory_incr(store: &dyn Store) {
    let scope = shared("incr");
    let (value, outcome) = store.memory_incr(&scope, "n", 5, NOW).await.expect("incr");
    assert_eq!((value, outcome.version), (5, 1));
    let (value, outcome) = store.memory_incr(&scope, "n", -8, NOW).await.expect("incr");
    assert_eq!((value, outcome.version), (-3, 2));
    let stored = store
        .memory_get(&scope, "n")
        .await
        .expect("get")
        .expect("n exists");
    assert_eq!(
        stored,
        MemoryValue {
            value: b"-3".to_vec(),
            content_type: TEXT_CONTENT_TYPE.to_owned(),
            version: 2,
        }
    );
    put(store, &scope, "s", b"abc").await;
    let refused = store.memory_incr(&scope, "s", 1, NOW).await;
    assert!(
        matches!(refused, Err(StoreError::NotAnInteger { ref key }) if key == "s"),
        "{refused:?}"
    );
    let untouched = store
        .memory_get(&scope, "s")
        .await
        .expect("get")
        .expect("s exists");
    assert_eq!((untouched.value, untouched.version), (b"abc".to_vec(), 1));
    store
        .memory_put(&scope, "t", b"41", &typed("application/json"), NOW)
        .await
        .expect("put");
    let (value, outcome) = store.memory_incr(&scope, "t", 1, NOW).await.expect("incr");
    assert_eq!((value, outcome.version), (42, 2));
    let kept = store
        .memory_get(&scope, "t")
        .await
        .expect("get")
        .expect("t exists");
    assert_eq!(kept.content_type, "application/json");
    assert_eq!(kept.value, b"42".to_vec());
}

/// Only a guard against hanging while waiting for a TTL; never asserted on.
const TTL_DEADLINE: Duration = Duration::from_secs(20);
const TTL_POLL: Duration = Duration::from_millis(20);

pub async fn case_memory_ttl_expires(store: &dyn Store) {
    let scope = shared("ttl");
    let short = PutOptions {
        ttl_ms: Some(300),
        ..typed("text/plain")
    };
    store
        .memory_put(&scope, "short", b"s", &short, NOW)
        .await
        .expect("put");
    let large = vec![7u8; MEMORY_CHUNK_BYTES * 2 + 1];
    store
        .memory_put(&scope, "short-large", &large, &short, NOW)
        .await
        .expect("put");
    put(store, &scope, "long", b"l").await;
    let listed = store.memory_list(&scope, "", None, 10).await.expect("list");
    // The TTL may already have run out on a slow machine: only check what
    // is listed.
    for info in &listed {
        let expected = if info.key == "long" { 0 } else { NOW + 300 };
        assert_eq!(info.expires_at_ms, expected, "{}", info.key);
    }
    tokio::time::timeout(TTL_DEADLINE, async {
        while get(store, &scope, "short").await.is_some()
            || get(store, &scope, "short-large").await.is_some()
        {
            tokio::time::sleep(TTL_POLL).await;
        }
    })
    .await
    .expect("the short keys expired before the deadline");
    let keys: Vec<String> = store
        .memory_list(&scope, "", None, 10)
        .await
        .expect("list")
        .into_iter()
        .map(|info| info.key)
        .collect();
    assert_eq!(keys, vec!["long"]);
    // An expired key is gone for compare-and-set too.
    let recreated = store
        .memory_put(&scope, "short", b"again", &cas(0), NOW)
        .await
        .expect("put");
    assert_eq!(recreated.version, 1);
}

pub async fn case_memory_large_value_round_trips(store: &dyn Store) {
    let scope = shared("large");
    let big: Vec<u8> = (0..(1024 * 1024 + 17))
        .map(|index: usize| (index * 31 % 251) as u8)
        .collect();
    let outcome = store
        .memory_put(
            &scope,
            "blob",
            &big,
            &typed("application/octet-stream"),
            NOW,
        )
        .await
        .expect("put");
    assert_eq!(outcome.version, 1);
    let read = store
        .memory_get(&scope, "blob")
        .await
        .expect("get")
        .expect("blob exists");
    assert_eq!(read.value.len(), big.len());
    assert!(read.value == big, "the 1 MiB value came back different");
    assert_eq!(read.content_type, "application/octet-stream");
    let info = store
        .memory_list(&scope, "blob", None, 1)
        .await
        .expect("list");
    assert_eq!(info[0].size, big.len() as u64);
    // Small over large, then large again (reversed) over small.
    put(store, &scope, "blob", b"tiny").await;
    assert_eq!(get(store, &scope, "blob").await, Some(b"tiny".to_vec()));
    let reversed: Vec<u8> = big.iter().rev().copied().collect();
    let outcome = store
        .memory_put(&scope, "blob", &reversed, &typed("x"), NOW)
        .await
        .expect("put");
    assert_eq!(outcome.version, 3);
    assert!(get(store, &scope, "blob").await == Some(reversed));
    let changes = store
        .memory_changes(&scope, "", 0, 10)
        .await
        .expect("changes");
    let carried: Vec<bool> = changes
        .iter()
        .map(|change| change.value.is_some())
        .collect();
    // Values above CHANGE_VALUE_LIMIT are not carried in changes.
    assert_eq!(carried, vec![false, true, false]);
}

pub async fn case_memory_changes_gapless_prefix_resumable(store: &dyn Store) {
    use MemoryChangeKind::*;
    let scope = shared("log");
    assert_eq!(store.memory_revision(&scope).await.expect("revision"), 0);
    assert_eq!(
        store
            .memory_changes(&scope, "", 0, 10)
            .await
            .expect("changes"),
        Vec::new()
    );
    put(store, &scope, "a/x", b"1").await;
    put(store, &scope, "b/y", b"2").await;
    store
        .memory_incr(&scope, "a/n", 3, NOW + 1)
        .await
        .expect("incr");
    store
        .memory_delete(&scope, "a/x", None, NOW + 2)
        .await
        .expect("delete");
    put(store, &scope, "a/x", b"5").await;
    let all = store
        .memory_changes(&scope, "", 0, 100)
        .await
        .expect("changes");
    type Shape<'a> = (u64, &'a str, MemoryChangeKind, u64, Option<&'a [u8]>);
    let shapes: Vec<Shape> = all
        .iter()
        .map(|change| {
            (
                change.revision,
                change.key.as_str(),
                change.kind,
                change.version,
                change.value.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        shapes,
        vec![
            (1, "a/x", Put, 1, Some(b"1".as_slice())),
            (2, "b/y", Put, 1, Some(b"2".as_slice())),
            (3, "a/n", Put, 1, Some(b"3".as_slice())),
            (4, "a/x", Delete, 1, None),
            (5, "a/x", Put, 1, Some(b"5".as_slice())),
        ]
    );
    assert_eq!(all[0].content_type, "text/plain");
    assert_eq!(
        (all[0].at_ms, all[2].at_ms, all[3].at_ms),
        (NOW, NOW + 1, NOW + 2)
    );
    let prefixed: Vec<u64> = store
        .memory_changes(&scope, "a/", 0, 100)
        .await
        .expect("changes")
        .iter()
        .map(|change| change.revision)
        .collect();
    assert_eq!(prefixed, vec![1, 3, 4, 5]);
    for after in 0..=5u64 {
        let page = store
            .memory_changes(&scope, "", after, 2)
            .await
            .expect("changes");
        let end = (after as usize + 2).min(all.len());
        assert_eq!(page, all[after as usize..end].to_vec(), "after {after}");
    }
    let prefixed_page: Vec<u64> = store
        .memory_changes(&scope, "a/", 1, 2)
        .await
        .expect("changes")
        .iter()
        .map(|change| change.revision)
        .collect();
    assert_eq!(prefixed_page, vec![3, 4]);
    assert_eq!(store.memory_revision(&scope).await.expect("revision"), 5);
}

/// The change log cap of the store given to
/// [`case_memory_changes_trimmed`] (see [`conformance_tests!`](crate::conformance_tests)).
pub const SMALL_CHANGE_LOG_CAP: u64 = 10;

/// Needs a store built with a change log cap of [`SMALL_CHANGE_LOG_CAP`].
pub async fn case_memory_changes_trimmed(store: &dyn Store) {
    let scope = shared("trimmed");
    for index in 0..300u32 {
        put(store, &scope, &format!("k{index}"), b"v").await;
    }
    assert_eq!(store.memory_revision(&scope).await.expect("revision"), 300);
    let trimmed = store.memory_changes(&scope, "", 0, 10).await;
    match trimmed {
        Err(StoreError::ChangesTrimmed {
            ref scope,
            after,
            oldest,
        }) => {
            assert_eq!(scope, "namespace trimmed");
            assert_eq!(after, 0);
            assert!(
                oldest > 1 && oldest <= 300 - SMALL_CHANGE_LOG_CAP + 1,
                "{oldest}"
            );
        }
        other => panic!("expected ChangesTrimmed, got {other:?}"),
    }
    // The newest `cap` changes are kept, and resuming among them works.
    let resumed: Vec<u64> = store
        .memory_changes(&scope, "", 300 - SMALL_CHANGE_LOG_CAP, 100)
        .await
        .expect("changes")
        .iter()
        .map(|change| change.revision)
        .collect();
    assert_eq!(resumed, (291..=300).collect::<Vec<u64>>());
    assert_eq!(
        store
            .memory_changes(&scope, "", 300, 10)
            .await
            .expect("changes"),
        Vec::new()
    );
}

// ---- waits ------------------------------------------------------------------

pub async fn case_wait_for_any_first_key_only(store: &dyn Store) {
    let batch_id = id("any");
    let scope = own(&batch_id);
    let ops = vec![
        waiting_for_any(&["x", "y"]),
        NewOp {
            wait_for: vec!["x".to_owned()],
            ..waiting_for_any(&["y", "z"])
        },
    ];
    store.create_batch(batch("any", ops)).await.expect("create");
    assert_eq!(
        states(store, &batch_id).await,
        vec![OpState::Waiting, OpState::Waiting]
    );
    // y satisfies both any-groups.
    assert_eq!(put(store, &scope, "y", b"1").await, 2);
    assert_eq!(
        states(store, &batch_id).await,
        vec![OpState::Ready, OpState::Waiting]
    );
    // x: op 0's group is already satisfied; op 1 still needed x.
    assert_eq!(put(store, &scope, "x", b"2").await, 1);
    // z: op 1's group was satisfied by y; later keys are ignored.
    assert_eq!(put(store, &scope, "z", b"3").await, 0);
    assert_eq!(put(store, &scope, "y", b"4").await, 0);
    assert_eq!(indices(store, &batch_id, 10).await, vec![0, 1]);
}

fn shared_batch(batch_id: &str, namespace: &str, ops: Vec<NewOp>) -> NewBatch {
    NewBatch {
        memory: shared(namespace),
        ..batch(batch_id, ops)
    }
}

pub async fn case_shared_put_unblocks_two_batches(store: &dyn Store) {
    let scope = shared("team");
    let mut receiver = store.doorbells();
    store
        .create_batch(shared_batch(
            "two-1",
            "team",
            vec![waiting_for(&["go"]), op(0, &[])],
        ))
        .await
        .expect("create");
    store
        .create_batch(shared_batch(
            "two-2",
            "team",
            vec![
                waiting_for(&["go", "later"]),
                waiting_for_any(&["nope", "go"]),
            ],
        ))
        .await
        .expect("create");
    assert_eq!(put(store, &scope, "unrelated", b"x").await, 0);
    let outcome = store
        .memory_put(&scope, "go", b"now", &typed("text/plain"), NOW)
        .await
        .expect("put");
    assert_eq!(outcome.unblocked, 3);
    expect_bells(
        &mut receiver,
        &[
            Doorbell::Batch(id("two-1")),
            Doorbell::Batch(id("two-2")),
            Doorbell::Memory(scope.clone()),
        ],
    )
    .await;
    assert_eq!(indices(store, &id("two-1"), 10).await, vec![1, 0]);
    assert_eq!(indices(store, &id("two-2"), 10).await, vec![1]);
    assert_eq!(states(store, &id("two-2")).await[0], OpState::Waiting);
    // The batches' own memory is untouched.
    assert_eq!(get(store, &own(&id("two-1")), "go").await, None);
    // Writing it again unblocks nothing more.
    assert_eq!(put(store, &scope, "go", b"again").await, 0);
    assert_eq!(put(store, &scope, "later", b"l").await, 1);
    assert_eq!(indices(store, &id("two-2"), 10).await, vec![0]);
}

pub async fn case_shared_key_present_before_create_counts(store: &dyn Store) {
    let scope = shared("present-ns");
    put(store, &scope, "ready-key", b"1").await;
    let batch_id = id("present");
    store
        .create_batch(shared_batch(
            "present",
            "present-ns",
            vec![
                waiting_for(&["ready-key"]),
                waiting_for_any(&["missing", "ready-key"]),
                waiting_for(&["ready-key", "missing"]),
            ],
        ))
        .await
        .expect("create");
    assert_eq!(
        states(store, &batch_id).await,
        vec![OpState::Ready, OpState::Ready, OpState::Waiting]
    );
    assert_eq!(indices(store, &batch_id, 10).await, vec![0, 1]);
    // The batch's own memory does not count for a shared-scope batch.
    put(store, &own(&batch_id), "missing", b"wrong scope").await;
    assert_eq!(states(store, &batch_id).await[2], OpState::Waiting);
    assert_eq!(put(store, &scope, "missing", b"2").await, 1);
    assert_eq!(indices(store, &batch_id, 10).await, vec![2]);
}

pub async fn case_shared_store_as_unblocks_another_batch(store: &dyn Store) {
    let scope = shared("pipeline");
    let producer = id("producer");
    let consumer = id("consumer");
    store
        .create_batch(shared_batch("producer", "pipeline", vec![op(0, &[])]))
        .await
        .expect("create");
    store
        .create_batch(shared_batch(
            "consumer",
            "pipeline",
            vec![waiting_for(&["result"])],
        ))
        .await
        .expect("create");
    let running = store
        .claim(&producer, 1, NOW + 1, LEASE)
        .await
        .expect("claim");
    let completion = Completion {
        output: "42".to_owned(),
        store_as: Some("result".to_owned()),
        ..success(running[0])
    };
    let outcome = store
        .complete(&producer, &[completion], NOW + 20)
        .await
        .expect("complete");
    assert_eq!(outcome.recorded, 1);
    assert_eq!(outcome.finished, Some(BatchState::Succeeded));
    assert_eq!(
        store.memory_get(&scope, "result").await.expect("get"),
        Some(MemoryValue {
            value: b"42".to_vec(),
            content_type: TEXT_CONTENT_TYPE.to_owned(),
            version: 1,
        })
    );
    assert_eq!(get(store, &own(&producer), "result").await, None);
    assert_eq!(states(store, &consumer).await, vec![OpState::Ready]);
    assert_eq!(indices(store, &consumer, 10).await, vec![0]);
    let changes = store
        .memory_changes(&scope, "", 0, 10)
        .await
        .expect("changes");
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (changes[0].key.as_str(), changes[0].at_ms),
        ("result", NOW + 20)
    );
}

pub async fn case_batch_scope_write_rings_both_bells(store: &dyn Store) {
    let batch_id = id("both-bells");
    store
        .create_batch(batch("both-bells", vec![waiting_for(&["k"])]))
        .await
        .expect("create");
    let mut receiver = store.doorbells();
    let outcome = store
        .memory_put(&own(&batch_id), "k", b"v", &typed("text/plain"), NOW)
        .await
        .expect("put");
    assert_eq!(outcome.unblocked, 1);
    expect_bells(
        &mut receiver,
        &[
            Doorbell::Batch(batch_id.clone()),
            Doorbell::Memory(own(&batch_id)),
        ],
    )
    .await;
    // The write is in the batch's change log.
    let changes = store
        .memory_changes(&own(&batch_id), "", 0, 10)
        .await
        .expect("changes");
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].key, "k");
}

pub async fn case_expire_waits_fails_and_skips(store: &dyn Store) {
    use EventKind::*;
    let batch_id = id("expire");
    let ops = vec![
        NewOp {
            wait_deadline_ms: NOW + 1_000,
            dependents: vec![1],
            ..waiting_for(&["never", "also"])
        },
        op(1, &[]),
        // Waits with no deadline: never expires.
        waiting_for(&["never"]),
        NewOp {
            wait_for: vec!["p".to_owned(), "q".to_owned()],
            wait_deadline_ms: NOW + 1_200,
            ..waiting_for_any(&["r", "s"])
        },
        // Its key arrives in time.
        NewOp {
            wait_deadline_ms: NOW + 1_000,
            ..waiting_for(&["also"])
        },
    ];
    store
        .create_batch(batch("expire", ops))
        .await
        .expect("create");
    let fence = hold(store, &batch_id, NOW).await;
    assert_eq!(put(store, &own(&batch_id), "also", b"1").await, 2);
    let early = store
        .expire_waits(&batch_id, NOW + 999, &fence)
        .await
        .expect("expire");
    assert_eq!(early, CompleteOutcome::default());
    assert_eq!(
        states(store, &batch_id).await,
        vec![
            OpState::Waiting,
            OpState::Waiting,
            OpState::Waiting,
            OpState::Waiting,
            OpState::Ready
        ]
    );
    let outcome = store
        .expire_waits(&batch_id, NOW + 1_500, &fence)
        .await
        .expect("expire");
    assert_eq!(
        outcome,
        CompleteOutcome {
            recorded: 2,
            ..CompleteOutcome::default()
        }
    );
    assert_eq!(
        states(store, &batch_id).await,
        vec![
            OpState::Failed,
            OpState::Skipped,
            OpState::Waiting,
            OpState::Failed,
            OpState::Ready
        ]
    );
    let records = store.op_records(&batch_id).await.expect("records");
    assert_eq!(
        records[0].error,
        "memory key `never` never appeared (waited 1500 ms)"
    );
    assert_eq!(records[1].error, "dependency `0` failed");
    assert_eq!(
        records[3].error,
        "memory key `p`, `q`, `r`, `s` never appeared (waited 1500 ms)"
    );
    let shapes = event_shapes(store, &batch_id).await;
    assert_eq!(
        shapes,
        vec![
            (BatchSubmitted, None, 0),
            (OpFailed, Some(0), 0),
            (OpSkipped, Some(1), 0),
            (OpFailed, Some(3), 0),
        ]
    );
    let meta_now = meta(store, &batch_id).await;
    assert_eq!((meta_now.failed, meta_now.skipped), (2, 1));
    // Nothing left to expire.
    assert_eq!(
        store
            .expire_waits(&batch_id, NOW + 5_000, &fence)
            .await
            .expect("expire"),
        CompleteOutcome::default()
    );
    // A late key changes nothing for a failed op.
    assert_eq!(put(store, &own(&batch_id), "never", b"late").await, 1);
    assert_eq!(states(store, &batch_id).await[0], OpState::Failed);
    assert!(matches!(
        store.expire_waits(&id("no-such"), NOW, &stranger()).await,
        Err(StoreError::BatchNotFound(_))
    ));
}

pub async fn case_expire_waits_finishes_with_fail_fast(store: &dyn Store) {
    let batch_id = id("expire-ff");
    let ops = vec![
        NewOp {
            wait_deadline_ms: NOW + 10,
            ..waiting_for(&["k"])
        },
        waiting_for(&["other"]),
    ];
    let mut new_batch = batch("expire-ff", ops);
    new_batch.on_failure = OnFailure::FailFast;
    store.create_batch(new_batch).await.expect("create");
    let fence = hold(store, &batch_id, NOW).await;
    let outcome = store
        .expire_waits(&batch_id, NOW + 10, &fence)
        .await
        .expect("expire");
    assert_eq!(outcome.recorded, 1);
    assert_eq!(outcome.finished, Some(BatchState::Failed));
    assert_eq!(
        states(store, &batch_id).await,
        vec![OpState::Failed, OpState::Cancelled]
    );
    assert_eq!(
        store.active_batches().await.expect("active"),
        Vec::<BatchId>::new()
    );
}

// ---- add_ops ----------------------------------------------------------------

fn after(before: &[u32]) -> NewOp {
    NewOp {
        after: before.to_vec(),
        ..op(before.len() as u32, &[])
    }
}

pub async fn case_add_ops_grows_a_running_batch(store: &dyn Store) {
    use EventKind::*;
    use OpState::*;
    let batch_id = id("grow");
    store
        .create_batch(batch("grow", vec![op(0, &[]), op(0, &[]), op(0, &[])]))
        .await
        .expect("create");
    let running = store
        .claim(&batch_id, 10, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(running.len(), 3);
    store
        .complete(
            &batch_id,
            &[success(running[1]), failure(running[2], "boom")],
            NOW + 5,
        )
        .await
        .expect("complete");
    let events_before = all_events(store, &batch_id).await.len();
    let added = vec![
        after(&[0]), // 3: after a running op
        after(&[1]), // 4: after a succeeded op: ready at once
        after(&[2]), // 5: after a failed op: skipped at once
        after(&[5]), // 6: after 5: skipped too
        NewOp {
            run_if_always: true,
            ..after(&[2])
        }, // 7: run_if_always after a failed op: ready
        after(&[3, 4]), // 8
    ];
    let outcome = store
        .add_ops(
            &batch_id,
            3,
            added,
            b"chunk-1".to_vec(),
            "by token t1",
            NOW + 10,
            None,
        )
        .await
        .expect("add_ops");
    assert_eq!(
        outcome,
        CompleteOutcome {
            became_ready: 2,
            ..CompleteOutcome::default()
        }
    );
    assert_eq!(
        states(store, &batch_id).await,
        vec![
            Running, Succeeded, Failed, Waiting, Ready, Skipped, Skipped, Ready, Waiting
        ]
    );
    assert_eq!(meta(store, &batch_id).await.total, 9);
    let events = all_events(store, &batch_id).await;
    let new_events: Vec<(EventKind, Option<u32>, String)> = events[events_before..]
        .iter()
        .map(|event| (event.kind, event.op_index, event.message.clone()))
        .collect();
    assert_eq!(
        new_events,
        vec![
            (OpsAdded, None, "6 ops added by token t1".to_owned()),
            (OpSkipped, Some(5), "dependency `2` failed".to_owned()),
            (OpSkipped, Some(6), "dependency `5` skipped".to_owned()),
        ]
    );
    assert_eq!(events[events_before].seq, events_before as u64 + 1);
    assert_eq!(events[events_before].at_ms, NOW + 10);
    assert_eq!(indices(store, &batch_id, 10).await, vec![4, 7]);
    // The running op's completion counts the new edge down.
    let outcome = store
        .complete(&batch_id, &[success(running[0])], NOW + 20)
        .await
        .expect("complete");
    assert_eq!(outcome.became_ready, 1);
    assert_eq!(indices(store, &batch_id, 10).await, vec![3]);
    // A mismatched first_index is refused and changes nothing.
    let refused = store
        .add_ops(
            &batch_id,
            5,
            vec![op(0, &[])],
            b"x".to_vec(),
            "",
            NOW + 21,
            None,
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::CannotAddOps { ref batch, .. }) if *batch == batch_id),
        "{refused:?}"
    );
    // A second chunk, with a memory wait already satisfied.
    put(store, &own(&batch_id), "k", b"1").await;
    let outcome = store
        .add_ops(
            &batch_id,
            9,
            vec![op(0, &[]), waiting_for(&["k"]), waiting_for(&["k2"])],
            b"chunk-2".to_vec(),
            "",
            NOW + 22,
            None,
        )
        .await
        .expect("add_ops");
    assert_eq!(outcome.became_ready, 2);
    assert_eq!(meta(store, &batch_id).await.total, 12);
    assert_eq!(
        store.batch_spec(&batch_id).await.expect("spec"),
        Some(StoredSpec {
            base: b"spec of grow".to_vec(),
            added: vec![b"chunk-1".to_vec(), b"chunk-2".to_vec()],
        })
    );
    assert_eq!(put(store, &own(&batch_id), "k2", b"2").await, 1);
    // Run everything to the end: first the ops claimed above.
    let records = store.op_records(&batch_id).await.expect("records");
    let claimed_before: Vec<Completion> = records
        .iter()
        .enumerate()
        .filter(|(_, record)| record.state == Running)
        .map(|(index, record)| success(claimed(index as u32, record.attempts)))
        .collect();
    assert_eq!(claimed_before.len(), 3);
    store
        .complete(&batch_id, &claimed_before, NOW + 25)
        .await
        .expect("complete");
    loop {
        let running = store
            .claim(&batch_id, 100, NOW + 30, LEASE)
            .await
            .expect("claim");
        if running.is_empty() {
            break;
        }
        let completions: Vec<Completion> = running.iter().copied().map(success).collect();
        store
            .complete(&batch_id, &completions, NOW + 40)
            .await
            .expect("complete");
    }
    let meta_end = meta(store, &batch_id).await;
    assert_eq!(meta_end.state, BatchState::Failed);
    assert_eq!(
        (meta_end.succeeded, meta_end.failed, meta_end.skipped),
        (9, 1, 2)
    );
    // A finished batch cannot grow.
    let finished = store
        .add_ops(
            &batch_id,
            12,
            vec![op(0, &[])],
            Vec::new(),
            "",
            NOW + 50,
            None,
        )
        .await;
    assert!(
        matches!(finished, Err(StoreError::CannotAddOps { .. })),
        "{finished:?}"
    );
    assert!(matches!(
        store
            .add_ops(
                &id("no-such"),
                0,
                vec![op(0, &[])],
                Vec::new(),
                "",
                NOW,
                None
            )
            .await,
        Err(StoreError::BatchNotFound(_))
    ));
}

pub async fn case_add_ops_waits_on_a_shared_scope(store: &dyn Store) {
    let scope = shared("grow-ns");
    let batch_id = id("grow-shared");
    store
        .create_batch(shared_batch("grow-shared", "grow-ns", vec![op(0, &[])]))
        .await
        .expect("create");
    put(store, &scope, "here", b"1").await;
    let outcome = store
        .add_ops(
            &batch_id,
            1,
            vec![waiting_for(&["here"]), waiting_for_any(&["a", "b"])],
            Vec::new(),
            "",
            NOW + 1,
            None,
        )
        .await
        .expect("add_ops");
    assert_eq!(outcome.became_ready, 1);
    assert_eq!(put(store, &scope, "b", b"2").await, 1);
    assert_eq!(indices(store, &batch_id, 10).await, vec![0, 1, 2]);
}

// ---- idempotency ---------------------------------------------------------------

/// An idempotent submission: `digest` set, as the coordinator does.
fn idempotent_batch(batch_id: &str, tenant: &str, digest: &str, ops: Vec<NewOp>) -> NewBatch {
    NewBatch {
        tenant: tenant.to_owned(),
        request_digest: digest.to_owned(),
        ..batch(batch_id, ops)
    }
}

pub async fn case_idempotent_create_returns_the_existing_batch(store: &dyn Store) {
    let batch_id = id("idem");
    let first = idempotent_batch("idem", "acme", "d1", vec![op(0, &[]), op(0, &[])]);
    assert_eq!(
        store.create_batch(first.clone()).await.expect("create"),
        Created::New
    );
    // The same submission again: nothing written, not even an event.
    let again = store.create_batch(first.clone()).await.expect("again");
    assert_eq!(again, Created::Existing);
    assert_eq!(meta(store, &batch_id).await.total, 2);
    assert_eq!(all_events(store, &batch_id).await.len(), 1);
    assert_eq!(indices(store, &batch_id, 10).await, vec![0, 1]);
    // Another body under the same key, or another tenant: refused.
    let other_body = idempotent_batch("idem", "acme", "d2", vec![op(0, &[])]);
    assert!(matches!(
        store.create_batch(other_body).await,
        Err(StoreError::IdempotencyConflict(ref batch)) if *batch == batch_id
    ));
    let other_tenant = idempotent_batch("idem", "globex", "d1", vec![op(0, &[]), op(0, &[])]);
    assert!(matches!(
        store.create_batch(other_tenant).await,
        Err(StoreError::IdempotencyConflict(_))
    ));
    // A submission without a key never reuses an id.
    assert!(matches!(
        store.create_batch(batch("idem", vec![op(0, &[])])).await,
        Err(StoreError::BatchExists(_))
    ));
    // Ended, the batch still answers its key while it is retained.
    for claimed in [0, 1] {
        store
            .complete(
                &batch_id,
                &[success(Claimed {
                    index: claimed,
                    attempt: 1,
                })],
                NOW + 5,
            )
            .await
            .expect("complete");
    }
    assert_eq!(meta(store, &batch_id).await.state, BatchState::Succeeded);
    assert_eq!(
        store.create_batch(first).await.expect("after the end"),
        Created::Existing
    );
    assert_eq!(
        all_events(store, &batch_id)
            .await
            .last()
            .map(|event| event.kind),
        Some(EventKind::BatchFinished)
    );
    // An idempotent submission whose id was taken by a plain one: refused.
    store
        .create_batch(batch("plain", vec![op(0, &[])]))
        .await
        .expect("plain");
    assert!(matches!(
        store
            .create_batch(idempotent_batch("plain", "", "d1", vec![op(0, &[])]))
            .await,
        Err(StoreError::IdempotencyConflict(_))
    ));
}

pub async fn case_idempotent_add_ops_keeps_the_first_record(store: &dyn Store) {
    let batch_id = id("grow-once");
    store
        .create_batch(batch("grow-once", vec![op(0, &[])]))
        .await
        .expect("create");
    let once = SpawnOnce {
        key: "k1".to_owned(),
        record: "first answer".to_owned(),
    };
    assert_eq!(
        store.spawn_record(&batch_id, "k1").await.expect("read"),
        None
    );
    store
        .add_ops(
            &batch_id,
            1,
            vec![op(0, &[])],
            b"c1".to_vec(),
            "",
            NOW + 1,
            Some(&once),
        )
        .await
        .expect("add_ops");
    assert_eq!(
        store.spawn_record(&batch_id, "k1").await.expect("read"),
        Some("first answer".to_owned())
    );
    // The same key again (even at the right index): nothing added.
    let retried = SpawnOnce {
        key: "k1".to_owned(),
        record: "second answer".to_owned(),
    };
    let refused = store
        .add_ops(
            &batch_id,
            2,
            vec![op(0, &[])],
            b"c2".to_vec(),
            "",
            NOW + 2,
            Some(&retried),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::AlreadySpawned { ref record, .. }) if record == "first answer"),
        "{refused:?}"
    );
    assert_eq!(meta(store, &batch_id).await.total, 2);
    let added_events = all_events(store, &batch_id)
        .await
        .iter()
        .filter(|event| event.kind == EventKind::OpsAdded)
        .count();
    assert_eq!(added_events, 1);
    // Another key, and none, add as usual.
    let other = SpawnOnce {
        key: "k2".to_owned(),
        record: "other".to_owned(),
    };
    store
        .add_ops(
            &batch_id,
            2,
            vec![op(0, &[])],
            b"c2".to_vec(),
            "",
            NOW + 3,
            Some(&other),
        )
        .await
        .expect("another key");
    store
        .add_ops(
            &batch_id,
            3,
            vec![op(0, &[])],
            b"c3".to_vec(),
            "",
            NOW + 4,
            None,
        )
        .await
        .expect("no key");
    assert_eq!(meta(store, &batch_id).await.total, 4);
    // Keys are per batch.
    store
        .create_batch(batch("grow-once-2", vec![op(0, &[])]))
        .await
        .expect("create");
    assert_eq!(
        store
            .spawn_record(&id("grow-once-2"), "k1")
            .await
            .expect("read"),
        None
    );
    assert_eq!(
        store
            .spawn_record(&id("no-such"), "k1")
            .await
            .expect("read"),
        None
    );
    // Once the batch ended, its keys still answer (before the state check).
    let claimed = store
        .claim(&batch_id, 10, NOW + 5, LEASE)
        .await
        .expect("claim");
    let done: Vec<Completion> = claimed.into_iter().map(success).collect();
    store
        .complete(&batch_id, &done, NOW + 6)
        .await
        .expect("complete");
    assert_eq!(meta(store, &batch_id).await.state, BatchState::Succeeded);
    let after_end = store
        .add_ops(
            &batch_id,
            4,
            vec![op(0, &[])],
            Vec::new(),
            "",
            NOW + 7,
            Some(&retried),
        )
        .await;
    assert!(
        matches!(after_end, Err(StoreError::AlreadySpawned { .. })),
        "{after_end:?}"
    );
}

// ---- concurrency (these take the store shared, to spawn tasks) ---------------

pub async fn case_concurrent_cas_increments_lose_none(store: std::sync::Arc<dyn Store>) {
    let scope = shared("cas-race");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let store = store.clone();
        let scope = scope.clone();
        tasks.spawn(async move {
            let mut done = 0;
            while done < 50 {
                let current = store.memory_get(&scope, "n").await.expect("get");
                let (value, version) = match current {
                    Some(current) => {
                        let text = String::from_utf8(current.value).expect("utf-8");
                        (text.parse::<u64>().expect("a number"), current.version)
                    }
                    None => (0, 0),
                };
                let options = PutOptions {
                    if_version: Some(version),
                    ..PutOptions::default()
                };
                match store
                    .memory_put(
                        &scope,
                        "n",
                        (value + 1).to_string().as_bytes(),
                        &options,
                        NOW,
                    )
                    .await
                {
                    Ok(_) => done += 1,
                    Err(StoreError::VersionMismatch { .. }) => {}
                    Err(error) => panic!("put: {error}"),
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("task");
    }
    let value = store
        .memory_get(&scope, "n")
        .await
        .expect("get")
        .expect("n exists");
    assert_eq!((value.value, value.version), (b"200".to_vec(), 200));
}

pub async fn case_concurrent_incr_from_four_tasks(store: std::sync::Arc<dyn Store>) {
    let scope = shared("incr-race");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let store = store.clone();
        let scope = scope.clone();
        tasks.spawn(async move {
            for _ in 0..50 {
                store.memory_incr(&scope, "n", 1, NOW).await.expect("incr");
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("task");
    }
    let value = store
        .memory_get(&scope, "n")
        .await
        .expect("get")
        .expect("n exists");
    assert_eq!((value.value, value.version), (b"200".to_vec(), 200));
    assert_eq!(store.memory_revision(&scope).await.expect("revision"), 200);
}

/// An op with `max_attempts` and `retry` (no waits, medium priority).
fn retrying(max_attempts: u32, retry: RetryPolicy) -> NewOp {
    NewOp {
        max_attempts,
        retry,
        ..op(0, &[])
    }
}

fn no_jitter(initial_ms: u64, max_ms: u64) -> RetryPolicy {
    RetryPolicy {
        backoff_initial_ms: initial_ms,
        backoff_max_ms: max_ms,
        backoff_multiplier: 2.0,
        backoff_jitter: false,
        ..RetryPolicy::default()
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

pub async fn case_lease_expiry_requeues_and_the_old_attempt_is_stale(store: &dyn Store) {
    use EventKind::*;
    let batch_id = id("lease-expiry");
    store
        .create_batch(batch(
            "lease-expiry",
            vec![retrying(3, RetryPolicy::default())],
        ))
        .await
        .expect("create");
    let fence = hold(store, &batch_id, NOW).await;
    let first = store
        .claim(&batch_id, 10, NOW + 1, NOW + 100)
        .await
        .expect("claim");
    assert_eq!(first, vec![claimed(0, 1)]);
    assert_eq!(
        op_waits(store, &batch_id, 0).await.lease_until_ms,
        Some(NOW + 100)
    );
    // Not due yet: nothing happens.
    let outcome = store
        .expire_leases(&batch_id, NOW + 99, &fence)
        .await
        .expect("expire");
    assert_eq!(outcome, CompleteOutcome::default());
    assert_eq!(states(store, &batch_id).await, vec![OpState::Running]);
    let outcome = store
        .expire_leases(&batch_id, NOW + 100, &fence)
        .await
        .expect("expire");
    assert_eq!(
        outcome,
        CompleteOutcome {
            retried: vec![0],
            ..CompleteOutcome::default()
        }
    );
    assert_eq!(states(store, &batch_id).await, vec![OpState::Ready]);
    assert_eq!(meta(store, &batch_id).await.running, 0);
    assert_eq!(op_waits(store, &batch_id, 0).await.lease_until_ms, None);
    let second = store
        .claim(&batch_id, 10, NOW + 110, NOW + 300)
        .await
        .expect("claim");
    assert_eq!(second, vec![claimed(0, 2)]);
    // The lost attempt's late result is stale.
    let outcome = store
        .complete(&batch_id, &[success(first[0])], NOW + 120)
        .await
        .expect("complete");
    assert_eq!(outcome.stale, vec![0]);
    assert_eq!(outcome.recorded, 0);
    let outcome = store
        .complete(&batch_id, &[success(second[0])], NOW + 130)
        .await
        .expect("complete");
    assert_eq!(outcome.recorded, 1);
    assert_eq!(outcome.finished, Some(BatchState::Succeeded));
    assert_eq!(
        event_shapes(store, &batch_id).await,
        vec![
            (BatchSubmitted, None, 0),
            (OpStarted, Some(0), 1),
            (OpRetrying, Some(0), 1),
            (OpStarted, Some(0), 2),
            (OpSucceeded, Some(0), 2),
            (BatchFinished, None, 0),
        ]
    );
    let events = all_events(store, &batch_id).await;
    assert!(
        events[2].message.starts_with("lost"),
        "{}",
        events[2].message
    );
    // Finished: nothing is leased any more.
    let outcome = store
        .expire_leases(&batch_id, NOW + 10_000, &fence)
        .await
        .expect("expire");
    assert_eq!(outcome, CompleteOutcome::default());
}

/// Losing a worker is not the op's fault: the batch's lost-worker retries
/// run it again without using up its `max_attempts` (1 here); the errors
/// name the worker a coordinator noted and show times as RFC 3339; past the
/// budget it is an ordinary lost-worker failure, whose record keeps the
/// worker.
pub async fn case_lost_workers_have_a_budget_of_their_own(store: &dyn Store) {
    use EventKind::*;
    let batch_id = id("lost-budget");
    store
        .create_batch(NewBatch {
            lost_worker_retries: 2,
            ..batch("lost-budget", vec![op(0, &[])])
        })
        .await
        .expect("create");
    let fence = hold(store, &batch_id, NOW).await;
    // Attempt 1: nobody said which worker ran it.
    let first = store
        .claim(&batch_id, 10, NOW + 1, NOW + 100)
        .await
        .expect("claim");
    assert_eq!(first, vec![claimed(0, 1)]);
    let outcome = store
        .expire_leases(&batch_id, NOW + 100, &fence)
        .await
        .expect("expire");
    assert_eq!(outcome.retried, vec![0]);
    assert_eq!(outcome.recorded, 0);
    // Attempt 2: its coordinator lost worker `w9` and shortened the lease.
    let second = store
        .claim(&batch_id, 10, NOW + 110, NOW + 300)
        .await
        .expect("claim");
    assert_eq!(second, vec![claimed(0, 2)]);
    let stale = store
        .renew_leases_on(&batch_id, &second, NOW + 200, "w9")
        .await
        .expect("renew");
    assert!(stale.is_empty());
    let outcome = store
        .expire_leases(&batch_id, NOW + 200, &fence)
        .await
        .expect("expire");
    assert_eq!(outcome.retried, vec![0]);
    // Attempt 3: the budget is spent; with max_attempts 1 (two attempts
    // handed back, one used) the loss of `w7` is final.
    let third = store
        .claim(&batch_id, 10, NOW + 210, NOW + 400)
        .await
        .expect("claim");
    assert_eq!(third, vec![claimed(0, 3)]);
    store
        .renew_leases_on(&batch_id, &third, NOW + 350, "w7")
        .await
        .expect("renew");
    let outcome = store
        .expire_leases(&batch_id, NOW + 350, &fence)
        .await
        .expect("expire");
    assert_eq!(outcome.recorded, 1);
    assert_eq!(outcome.finished, Some(BatchState::Failed));
    assert_eq!(
        event_shapes(store, &batch_id).await,
        vec![
            (BatchSubmitted, None, 0),
            (OpStarted, Some(0), 1),
            (OpRetrying, Some(0), 1),
            (OpStarted, Some(0), 2),
            (OpRetrying, Some(0), 2),
            (OpStarted, Some(0), 3),
            (OpFailed, Some(0), 3),
            (BatchFinished, None, 0),
        ]
    );
    let events = all_events(store, &batch_id).await;
    assert_eq!(
        events[2].message,
        format!(
            "{}; runs again (lost-worker retry 1 of 2)",
            lost_worker_message("", NOW + 100)
        )
    );
    assert_eq!(
        lost_worker_message("", 1_796_170_339_293),
        "lost: its worker stopped renewing its lease (ran out at 2026-12-02T00:12:19.293Z)"
    );
    assert_eq!(events[4].worker, "w9");
    assert_eq!(
        events[4].message,
        format!(
            "{}; runs again (lost-worker retry 2 of 2)",
            lost_worker_message("w9", NOW + 200)
        )
    );
    assert!(
        events[4].message.starts_with(
            "lost: worker `w9` stopped renewing its lease (ran out at 2023-11-14T22:13:20.200Z)"
        ),
        "{}",
        events[4].message
    );
    assert_eq!(events[6].worker, "w7");
    assert_eq!(events[6].message, lost_worker_message("w7", NOW + 350));
    let records = store.op_records(&batch_id).await.expect("records");
    assert_eq!(records[0].state, OpState::Failed);
    assert_eq!(records[0].attempts, 3);
    assert_eq!(records[0].worker, "w7");
    // Attempt 3 started at NOW + 210 (its claim) and lost its lease at NOW + 350.
    assert_eq!(
        (records[0].started_ms, records[0].duration_ms),
        (NOW + 210, 140)
    );
    assert_eq!(records[0].error, lost_worker_message("w7", NOW + 350));
}

/// After fail_fast fired, a lost worker is final like every failure.
pub async fn case_lost_worker_retries_stop_after_fail_fast(store: &dyn Store) {
    let batch_id = id("lost-ff");
    store
        .create_batch(NewBatch {
            lost_worker_retries: 3,
            on_failure: OnFailure::FailFast,
            ..batch("lost-ff", vec![op(0, &[]), op(0, &[])])
        })
        .await
        .expect("create");
    let fence = hold(store, &batch_id, NOW).await;
    let running = store
        .claim(&batch_id, 10, NOW + 1, NOW + 100)
        .await
        .expect("claim");
    assert_eq!(running.len(), 2);
    // Op 0 fails for good; fail_fast cancels what waits, op 1 runs on.
    store
        .complete(&batch_id, &[failure(running[0], "boom")], NOW + 5)
        .await
        .expect("complete");
    let outcome = store
        .expire_leases(&batch_id, NOW + 100, &fence)
        .await
        .expect("expire");
    assert!(outcome.retried.is_empty(), "{outcome:?}");
    assert_eq!(states(store, &batch_id).await[1], OpState::Failed);
}

pub async fn case_renew_keeps_a_lease_alive(store: &dyn Store) {
    let batch_id = id("lease-renew");
    store
        .create_batch(batch(
            "lease-renew",
            vec![retrying(3, RetryPolicy::default())],
        ))
        .await
        .expect("create");
    let fence = hold(store, &batch_id, NOW).await;
    let running = store
        .claim(&batch_id, 10, NOW + 1, NOW + 100)
        .await
        .expect("claim");
    store
        .renew_leases(&batch_id, &running, NOW + 500)
        .await
        .expect("renew");
    // Another attempt and an unknown op are ignored.
    store
        .renew_leases(&batch_id, &[claimed(0, 2), claimed(9, 1)], NOW + 9_000)
        .await
        .expect("renew");
    assert_eq!(
        op_waits(store, &batch_id, 0).await.lease_until_ms,
        Some(NOW + 500)
    );
    let outcome = store
        .expire_leases(&batch_id, NOW + 200, &fence)
        .await
        .expect("expire");
    assert_eq!(outcome, CompleteOutcome::default());
    assert_eq!(states(store, &batch_id).await, vec![OpState::Running]);
    let outcome = store
        .expire_leases(&batch_id, NOW + 500, &fence)
        .await
        .expect("expire");
    assert_eq!(outcome.retried, vec![0]);
    // A renewal of the lost attempt does not bring it back.
    store
        .renew_leases(&batch_id, &running, NOW + 9_000)
        .await
        .expect("renew");
    assert_eq!(op_waits(store, &batch_id, 0).await.lease_until_ms, None);
    assert_eq!(states(store, &batch_id).await, vec![OpState::Ready]);
}

pub async fn case_lost_worker_fails_when_the_policy_says_no(store: &dyn Store) {
    use EventKind::*;
    let batch_id = id("lost-no-retry");
    let ops = vec![
        NewOp {
            dependents: vec![1],
            ..retrying(
                3,
                RetryPolicy {
                    on_lost_worker: false,
                    ..RetryPolicy::default()
                },
            )
        },
        op(1, &[]),
    ];
    store
        .create_batch(batch("lost-no-retry", ops))
        .await
        .expect("create");
    let fence = hold(store, &batch_id, NOW).await;
    store
        .claim(&batch_id, 10, NOW + 1, NOW + 100)
        .await
        .expect("claim");
    let outcome = store
        .expire_leases(&batch_id, NOW + 150, &fence)
        .await
        .expect("expire");
    assert_eq!(
        outcome,
        CompleteOutcome {
            recorded: 1,
            finished: Some(BatchState::Failed),
            ..CompleteOutcome::default()
        }
    );
    let records = store.op_records(&batch_id).await.expect("records");
    assert_eq!(records[0].state, OpState::Failed);
    assert!(records[0].error.starts_with("lost"), "{}", records[0].error);
    assert_eq!(records[1].state, OpState::Skipped);
    let meta = meta(store, &batch_id).await;
    assert_eq!((meta.failed, meta.skipped, meta.running), (1, 1, 0));
    assert_eq!(
        event_shapes(store, &batch_id).await,
        vec![
            (BatchSubmitted, None, 0),
            (OpStarted, Some(0), 1),
            (OpFailed, Some(0), 1),
            (OpSkipped, Some(1), 0),
            (BatchFinished, None, 0),
        ]
    );
    // A lost worker reported through complete is refused the same way.
    let batch_id = id("lost-no-retry-2");
    store
        .create_batch(batch(
            "lost-no-retry-2",
            vec![retrying(
                3,
                RetryPolicy {
                    on_lost_worker: false,
                    ..RetryPolicy::default()
                },
            )],
        ))
        .await
        .expect("create");
    let running = store
        .claim(&batch_id, 1, NOW + 1, LEASE)
        .await
        .expect("claim");
    let outcome = store
        .complete(
            &batch_id,
            &[failed_with(running[0], FailureKind::LostWorker)],
            NOW + 5,
        )
        .await
        .expect("complete");
    assert_eq!((outcome.recorded, outcome.retried), (1, vec![]));
}

pub async fn case_losses_exhaust_max_attempts(store: &dyn Store) {
    let batch_id = id("lost-twice");
    store
        .create_batch(batch(
            "lost-twice",
            vec![retrying(2, RetryPolicy::default())],
        ))
        .await
        .expect("create");
    let fence = hold(store, &batch_id, NOW).await;
    let first = store
        .claim(&batch_id, 1, NOW + 1, NOW + 100)
        .await
        .expect("claim");
    assert_eq!(first, vec![claimed(0, 1)]);
    let outcome = store
        .expire_leases(&batch_id, NOW + 100, &fence)
        .await
        .expect("expire");
    assert_eq!(outcome.retried, vec![0]);
    let second = store
        .claim(&batch_id, 1, NOW + 101, NOW + 200)
        .await
        .expect("claim");
    assert_eq!(second, vec![claimed(0, 2)]);
    let outcome = store
        .expire_leases(&batch_id, NOW + 250, &fence)
        .await
        .expect("expire");
    assert_eq!(outcome.retried, Vec::<u32>::new());
    assert_eq!(outcome.recorded, 1);
    assert_eq!(outcome.finished, Some(BatchState::Failed));
    let records = store.op_records(&batch_id).await.expect("records");
    assert_eq!(
        (records[0].state, records[0].attempts),
        (OpState::Failed, 2)
    );
    assert!(records[0].error.starts_with("lost"), "{}", records[0].error);
}

pub async fn case_failure_kinds_follow_the_policy(store: &dyn Store) {
    let batch_id = id("kinds");
    let no_timeout = RetryPolicy {
        on_timeout: false,
        ..RetryPolicy::default()
    };
    let no_failure = RetryPolicy {
        on_failure: false,
        ..RetryPolicy::default()
    };
    let ops = vec![
        retrying(3, RetryPolicy::default()),
        retrying(3, no_timeout.clone()),
        retrying(3, no_failure.clone()),
        retrying(3, no_timeout),
        retrying(3, RetryPolicy::default()),
        retrying(3, RetryPolicy::default()),
    ];
    store
        .create_batch(batch("kinds", ops))
        .await
        .expect("create");
    let running = store
        .claim(&batch_id, 10, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(running.len(), 6);
    let outcome = store
        .complete(
            &batch_id,
            &[
                failed_with(running[0], FailureKind::Timeout),
                failed_with(running[1], FailureKind::Timeout),
                failed_with(running[2], FailureKind::Error),
                failed_with(running[3], FailureKind::Error),
                failed_with(running[4], FailureKind::Permanent),
                failed_with(running[5], FailureKind::LostWorker),
            ],
            NOW + 10,
        )
        .await
        .expect("complete");
    assert_eq!(outcome.retried, vec![0, 3, 5]);
    assert_eq!(outcome.recorded, 3);
    assert_eq!(outcome.next_retry_at_ms, None);
    assert_eq!(
        states(store, &batch_id).await,
        vec![
            OpState::Ready,
            OpState::Failed,
            OpState::Failed,
            OpState::Ready,
            OpState::Failed,
            OpState::Ready
        ]
    );
    // No backoff: ready at once.
    assert_eq!(indices(store, &batch_id, 10).await, vec![0, 3, 5]);
}

pub async fn case_backoff_delays_a_retry(store: &dyn Store) {
    use EventKind::*;
    let batch_id = id("backoff");
    store
        .create_batch(batch(
            "backoff",
            vec![retrying(4, no_jitter(1_000, 1_500)), op(0, &[])],
        ))
        .await
        .expect("create");
    let fence = hold(store, &batch_id, NOW).await;
    let first = store
        .claim(&batch_id, 1, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(first, vec![claimed(0, 1)]);
    let outcome = store
        .complete(&batch_id, &[failure(first[0], "boom")], NOW + 10)
        .await
        .expect("complete");
    assert_eq!(outcome.retried, vec![0]);
    assert_eq!(outcome.next_retry_at_ms, Some(NOW + 1_010));
    assert_eq!(states(store, &batch_id).await[0], OpState::Ready);
    assert_eq!(
        op_waits(store, &batch_id, 0).await.retry_at_ms,
        Some(NOW + 1_010)
    );
    // Not claimable before its ready-at; the other op is.
    let early = store
        .claim(&batch_id, 10, NOW + 1_009, LEASE)
        .await
        .expect("claim");
    assert_eq!(early, vec![claimed(1, 1)]);
    // expire_leases reports the pending retry too.
    let outcome = store
        .expire_leases(&batch_id, NOW + 1_009, &fence)
        .await
        .expect("expire");
    assert_eq!(outcome.next_retry_at_ms, Some(NOW + 1_010));
    let second = store
        .claim(&batch_id, 10, NOW + 1_010, LEASE)
        .await
        .expect("claim");
    assert_eq!(second, vec![claimed(0, 2)]);
    assert_eq!(op_waits(store, &batch_id, 0).await.retry_at_ms, None);
    // 1000 * 2 = 2000, capped at 1500.
    let outcome = store
        .complete(&batch_id, &[failure(second[0], "boom")], NOW + 2_000)
        .await
        .expect("complete");
    assert_eq!(outcome.next_retry_at_ms, Some(NOW + 3_500));
    assert!(
        store
            .claim(&batch_id, 10, NOW + 3_499, LEASE)
            .await
            .expect("claim")
            .is_empty()
    );
    let third = store
        .claim(&batch_id, 10, NOW + 3_500, LEASE)
        .await
        .expect("claim");
    assert_eq!(third, vec![claimed(0, 3)]);
    // The handler asked for more than the backoff.
    let asked = Completion {
        retry_after_ms: 5_000,
        ..failure(third[0], "rate limited")
    };
    let outcome = store
        .complete(&batch_id, &[asked], NOW + 4_000)
        .await
        .expect("complete");
    assert_eq!(outcome.next_retry_at_ms, Some(NOW + 9_000));
    let fourth = store
        .claim(&batch_id, 10, NOW + 9_000, LEASE)
        .await
        .expect("claim");
    assert_eq!(fourth, vec![claimed(0, 4)]);
    let outcome = store
        .complete(&batch_id, &[failure(fourth[0], "boom")], NOW + 9_100)
        .await
        .expect("complete");
    assert_eq!((outcome.recorded, outcome.next_retry_at_ms), (1, None));
    let events = all_events(store, &batch_id).await;
    let retry_events: Vec<&Event> = events
        .iter()
        .filter(|event| event.kind == OpRetrying)
        .collect();
    assert_eq!(retry_events.len(), 3);
    assert!(
        retry_events[0]
            .message
            .contains(&format!("next attempt at {} (in", rfc3339_ms(NOW + 1_010))),
        "{}",
        retry_events[0].message
    );
    assert!(retry_events[0].message.starts_with("boom"));
    // With jitter: somewhere in [delay/2, delay].
    let batch_id = id("backoff-jitter");
    store
        .create_batch(batch(
            "backoff-jitter",
            vec![retrying(
                2,
                RetryPolicy {
                    backoff_jitter: true,
                    ..no_jitter(1_000, 0)
                },
            )],
        ))
        .await
        .expect("create");
    let first = store
        .claim(&batch_id, 1, NOW + 1, LEASE)
        .await
        .expect("claim");
    let outcome = store
        .complete(&batch_id, &[failure(first[0], "boom")], NOW + 10)
        .await
        .expect("complete");
    let at = outcome.next_retry_at_ms.expect("a delayed retry");
    assert!((NOW + 510..=NOW + 1_010).contains(&at), "{at}");
    // Cancelling drops it.
    store
        .cancel(&batch_id, "user", NOW + 20)
        .await
        .expect("cancel");
    assert_eq!(op_waits(store, &batch_id, 0).await.retry_at_ms, None);
    assert!(
        store
            .claim(&batch_id, 1, NOW + 5_000, LEASE)
            .await
            .expect("claim")
            .is_empty()
    );
}

pub async fn case_lost_worker_without_backoff_is_ready_at_once(store: &dyn Store) {
    let batch_id = id("lost-at-once");
    store
        .create_batch(batch(
            "lost-at-once",
            vec![retrying(2, RetryPolicy::default())],
        ))
        .await
        .expect("create");
    let fence = hold(store, &batch_id, NOW).await;
    store
        .claim(&batch_id, 1, NOW + 1, NOW + 10)
        .await
        .expect("claim");
    let outcome = store
        .expire_leases(&batch_id, NOW + 10, &fence)
        .await
        .expect("expire");
    assert_eq!((outcome.retried, outcome.next_retry_at_ms), (vec![0], None));
    let again = store
        .claim(&batch_id, 1, NOW + 10, LEASE)
        .await
        .expect("claim");
    assert_eq!(again, vec![claimed(0, 2)]);
}

pub async fn case_return_ops_hands_back_without_an_attempt(store: &dyn Store) {
    use EventKind::*;
    let batch_id = id("hand-back");
    store
        .create_batch(batch(
            "hand-back",
            vec![
                retrying(1, RetryPolicy::default()),
                retrying(2, RetryPolicy::default()),
                op(0, &[]),
            ],
        ))
        .await
        .expect("create");
    let running = store
        .claim(&batch_id, 2, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(running, vec![claimed(0, 1), claimed(1, 1)]);
    // Stale attempts and ops not running are ignored.
    let returned = store
        .return_ops(
            &batch_id,
            &[running[0], running[1], claimed(0, 7), claimed(2, 0)],
            NOW + 5,
        )
        .await
        .expect("return");
    assert_eq!(returned, 2);
    let meta_now = meta(store, &batch_id).await;
    assert_eq!(meta_now.running, 0);
    assert_eq!(
        states(store, &batch_id).await,
        vec![OpState::Ready, OpState::Ready, OpState::Ready]
    );
    assert_eq!(op_waits(store, &batch_id, 0).await.lease_until_ms, None);
    // The handed-back attempt's late result is stale.
    let outcome = store
        .complete(&batch_id, &[success(running[0])], NOW + 6)
        .await
        .expect("complete");
    assert_eq!(outcome.stale, vec![0]);
    // Back at the front of the queue, in the order given.
    let again = store
        .claim(&batch_id, 2, NOW + 7, LEASE)
        .await
        .expect("claim");
    assert_eq!(again, vec![claimed(0, 2), claimed(1, 2)]);
    let outcome = store
        .complete(&batch_id, &[success(running[0])], NOW + 8)
        .await
        .expect("complete");
    assert_eq!(outcome.stale, vec![0]);
    // max_attempts 1 got its next attempt; a failure of it is final.
    // max_attempts 2 with one attempt handed back still has one retry.
    let outcome = store
        .complete(
            &batch_id,
            &[failure(again[0], "boom"), failure(again[1], "boom")],
            NOW + 9,
        )
        .await
        .expect("complete");
    assert_eq!((outcome.recorded, outcome.retried), (1, vec![1]));
    let records = store.op_records(&batch_id).await.expect("records");
    assert_eq!(
        (records[0].state, records[0].attempts),
        (OpState::Failed, 2)
    );
    assert_eq!((records[1].state, records[1].attempts), (OpState::Ready, 2));
    let events = all_events(store, &batch_id).await;
    let handed: Vec<(Option<u32>, u32, &str)> = events
        .iter()
        .filter(|event| event.kind == OpRetrying)
        .map(|event| (event.op_index, event.attempt, event.message.as_str()))
        .collect();
    assert_eq!(
        handed[..2],
        [
            (Some(0), 1, "handed back by its worker"),
            (Some(1), 1, "handed back by its worker"),
        ]
    );
    let shapes = event_shapes(store, &batch_id).await;
    assert_eq!(
        shapes[..5],
        [
            (BatchSubmitted, None, 0),
            (OpStarted, Some(0), 1),
            (OpStarted, Some(1), 1),
            (OpRetrying, Some(0), 1),
            (OpRetrying, Some(1), 1),
        ]
    );
    assert_eq!(
        store
            .return_ops(&batch_id, &[], NOW + 10)
            .await
            .expect("return"),
        0
    );
}

pub async fn case_deadline_cancels_and_fails_the_batch(store: &dyn Store) {
    use EventKind::*;
    let batch_id = id("deadline");
    let mut new_batch = batch(
        "deadline",
        vec![op(0, &[]), op(0, &[]), op(0, &[3]), op(1, &[])],
    );
    new_batch.deadline_ms = NOW + 1_000;
    store.create_batch(new_batch).await.expect("create");
    let fence = hold(store, &batch_id, NOW).await;
    let running = store
        .claim(&batch_id, 2, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(running, vec![claimed(0, 1), claimed(1, 1)]);
    store
        .complete(&batch_id, &[success(running[1])], NOW + 5)
        .await
        .expect("complete");
    let outcome = store
        .expire_deadline(&batch_id, NOW + 999, &fence)
        .await
        .expect("deadline");
    assert_eq!(outcome, CompleteOutcome::default());
    assert_eq!(meta(store, &batch_id).await.state, BatchState::Running);
    let outcome = store
        .expire_deadline(&batch_id, NOW + 1_000, &fence)
        .await
        .expect("deadline");
    assert_eq!(outcome.finished, Some(BatchState::Failed));
    assert_eq!(outcome.recorded, 3);
    let meta_after = meta(store, &batch_id).await;
    assert_eq!(meta_after.state, BatchState::Failed);
    assert_eq!(meta_after.error, "deadline exceeded");
    assert_eq!(meta_after.finished_ms, Some(NOW + 1_000));
    assert_eq!(
        (
            meta_after.succeeded,
            meta_after.cancelled,
            meta_after.running
        ),
        (1, 3, 0)
    );
    let records = store.op_records(&batch_id).await.expect("records");
    assert_eq!(
        records
            .iter()
            .map(|record| record.state)
            .collect::<Vec<_>>(),
        vec![
            OpState::Cancelled,
            OpState::Succeeded,
            OpState::Cancelled,
            OpState::Cancelled
        ]
    );
    assert_eq!(records[0].error, "cancelled: the batch's deadline passed");
    let shapes = event_shapes(store, &batch_id).await;
    assert_eq!(
        shapes[shapes.len() - 4..],
        [
            (OpCancelled, Some(0), 1),
            (OpCancelled, Some(2), 0),
            (OpCancelled, Some(3), 0),
            (BatchFinished, None, 0),
        ]
    );
    let events = all_events(store, &batch_id).await;
    let finished = events.last().expect("events");
    assert_eq!(finished.batch_state, Some(BatchState::Failed));
    assert_eq!(finished.message, "deadline exceeded");
    assert_eq!(
        store.active_batches().await.expect("active"),
        Vec::<BatchId>::new()
    );
    // The running op's late result is stale; again changes nothing.
    let outcome = store
        .complete(&batch_id, &[success(running[0])], NOW + 1_001)
        .await
        .expect("complete");
    assert_eq!(outcome.stale, vec![0]);
    let outcome = store
        .expire_deadline(&batch_id, NOW + 2_000, &fence)
        .await
        .expect("deadline");
    assert_eq!(outcome, CompleteOutcome::default());
    assert_eq!(all_events(store, &batch_id).await.len(), events.len());
    // No deadline: never.
    let batch_id = id("no-deadline");
    store
        .create_batch(batch("no-deadline", vec![op(0, &[])]))
        .await
        .expect("create");
    let late_fence = hold(store, &batch_id, u64::MAX / 2).await;
    let outcome = store
        .expire_deadline(&batch_id, u64::MAX / 2, &late_fence)
        .await
        .expect("deadline");
    assert_eq!(outcome, CompleteOutcome::default());
    assert_eq!(meta(store, &batch_id).await.state, BatchState::Running);
}

pub async fn case_mark_lost_marks_unknown_batches_only(store: &dyn Store) {
    let kept = id("kept");
    store
        .create_batch(batch("kept", vec![op(0, &[])]))
        .await
        .expect("create");
    let reason = "the store restarted empty";
    let marked = store
        .mark_lost(&[id("lost-a"), kept.clone(), id("lost-b")], reason, NOW + 5)
        .await
        .expect("mark_lost");
    assert_eq!(marked, vec![id("lost-a"), id("lost-b")]);
    let lost = meta(store, &id("lost-a")).await;
    assert_eq!(lost.state, BatchState::Lost);
    assert_eq!(lost.error, reason);
    assert_eq!(lost.name, "");
    assert_eq!((lost.total, lost.running, lost.done()), (0, 0, 0));
    assert_eq!(lost.created_ms, NOW + 5);
    assert_eq!(lost.finished_ms, Some(NOW + 5));
    let events = all_events(store, &id("lost-a")).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].seq, 1);
    assert_eq!(events[0].kind, EventKind::BatchFinished);
    assert_eq!(events[0].batch_state, Some(BatchState::Lost));
    assert_eq!(events[0].message, reason);
    assert_eq!(events[0].at_ms, NOW + 5);
    let kept_meta = meta(store, &kept).await;
    assert_eq!(kept_meta.state, BatchState::Running);
    assert_eq!(all_events(store, &kept).await.len(), 1);
    assert_eq!(
        store.active_batches().await.expect("active"),
        vec![kept.clone()]
    );
    let listed: Vec<BatchId> = store
        .list_batches(10, None)
        .await
        .expect("list")
        .into_iter()
        .map(|meta| meta.id)
        .collect();
    assert!(listed.contains(&id("lost-a")), "{listed:?}");
    // Marked once: held now, so left alone.
    let again = store
        .mark_lost(&[id("lost-a")], "again", NOW + 9)
        .await
        .expect("mark_lost");
    assert_eq!(again, Vec::<BatchId>::new());
    assert_eq!(meta(store, &id("lost-a")).await.error, reason);
    assert!(
        store
            .claim(&id("lost-a"), 1, NOW + 10, LEASE)
            .await
            .expect("claim")
            .is_empty()
    );
}

pub async fn case_op_waits_reports_pending_and_missing_keys(store: &dyn Store) {
    let batch_id = id("why");
    let ops = vec![
        op(0, &[2]),
        NewOp {
            wait_for: vec!["b".to_owned(), "a".to_owned()],
            wait_for_any: vec!["y".to_owned(), "x".to_owned()],
            ..op(0, &[])
        },
        NewOp {
            deps: 1,
            wait_for: vec!["a".to_owned()],
            wait_deadline_ms: NOW + 60_000,
            ..op(0, &[])
        },
    ];
    store.create_batch(batch("why", ops)).await.expect("create");
    let strings = |keys: &[&str]| keys.iter().map(|key| key.to_string()).collect::<Vec<_>>();
    assert_eq!(
        op_waits(store, &batch_id, 1).await,
        OpWaits {
            pending: 3,
            missing_keys: strings(&["a", "b", "x", "y"]),
            ..OpWaits::default()
        }
    );
    assert_eq!(
        op_waits(store, &batch_id, 2).await,
        OpWaits {
            pending: 2,
            missing_keys: strings(&["a"]),
            ..OpWaits::default()
        }
    );
    assert_eq!(op_waits(store, &batch_id, 0).await, OpWaits::default());
    put(store, &own(&batch_id), "a", b"1").await;
    put(store, &own(&batch_id), "y", b"1").await;
    assert_eq!(
        op_waits(store, &batch_id, 1).await,
        OpWaits {
            pending: 1,
            missing_keys: strings(&["b"]),
            ..OpWaits::default()
        }
    );
    assert_eq!(
        op_waits(store, &batch_id, 2).await,
        OpWaits {
            pending: 1,
            missing_keys: Vec::new(),
            ..OpWaits::default()
        }
    );
    let running = store
        .claim(&batch_id, 1, NOW + 1, NOW + 77)
        .await
        .expect("claim");
    assert_eq!(running, vec![claimed(0, 1)]);
    assert_eq!(
        op_waits(store, &batch_id, 0).await,
        OpWaits {
            lease_until_ms: Some(NOW + 77),
            ..OpWaits::default()
        }
    );
    assert!(matches!(
        store.op_waits(&batch_id, 3).await,
        Err(StoreError::BatchNotFound(_))
    ));
}

// ---- several coordinators ----------------------------------------------------

pub async fn case_doorbell_rings_started_and_ended(store: &dyn Store) {
    let mut receiver = store.doorbells();
    // Finished by complete.
    let done = id("se-done");
    store
        .create_batch(batch("se-done", vec![op(0, &[])]))
        .await
        .expect("create");
    expect_exact_bell(&mut receiver, &Doorbell::Batch(done.clone())).await;
    expect_exact_bell(&mut receiver, &Doorbell::Started(done.clone())).await;
    run_one(store, &done, 0).await;
    // The claim rings the events bell only: it makes nothing claimable.
    expect_exact_bell(&mut receiver, &Doorbell::Events(done.clone())).await;
    expect_exact_bell(&mut receiver, &Doorbell::Batch(done.clone())).await;
    expect_exact_bell(&mut receiver, &Doorbell::Ended(done.clone())).await;
    // Cancelled; cancelling again rings nothing.
    let cancelled = id("se-cancelled");
    store
        .create_batch(batch("se-cancelled", vec![op(0, &[1]), op(1, &[])]))
        .await
        .expect("create");
    expect_exact_bell(&mut receiver, &Doorbell::Batch(cancelled.clone())).await;
    expect_exact_bell(&mut receiver, &Doorbell::Started(cancelled.clone())).await;
    store
        .cancel(&cancelled, "user", NOW + 5)
        .await
        .expect("cancel");
    expect_exact_bell(&mut receiver, &Doorbell::Batch(cancelled.clone())).await;
    expect_exact_bell(&mut receiver, &Doorbell::Ended(cancelled.clone())).await;
    store
        .cancel(&cancelled, "user", NOW + 6)
        .await
        .expect("cancel");
    // Failed by its deadline.
    let late = id("se-late");
    let mut new_batch = batch("se-late", vec![op(0, &[])]);
    new_batch.deadline_ms = NOW + 100;
    store.create_batch(new_batch).await.expect("create");
    expect_exact_bell(&mut receiver, &Doorbell::Batch(late.clone())).await;
    expect_exact_bell(&mut receiver, &Doorbell::Started(late.clone())).await;
    let fence = hold(store, &late, NOW).await;
    let outcome = store
        .expire_deadline(&late, NOW + 100, &fence)
        .await
        .expect("deadline");
    assert_eq!(outcome.finished, Some(BatchState::Failed));
    expect_exact_bell(&mut receiver, &Doorbell::Batch(late.clone())).await;
    expect_exact_bell(&mut receiver, &Doorbell::Ended(late.clone())).await;
    // An empty batch is never active: no Started, no Ended.
    let empty = id("se-empty");
    store
        .create_batch(batch("se-empty", Vec::new()))
        .await
        .expect("create");
    expect_exact_bell(&mut receiver, &Doorbell::Batch(empty.clone())).await;
    // Marked lost: it ended.
    let lost = id("se-lost");
    store
        .mark_lost(std::slice::from_ref(&lost), "gone", NOW + 7)
        .await
        .expect("mark_lost");
    expect_exact_bell(&mut receiver, &Doorbell::Batch(lost.clone())).await;
    expect_exact_bell(&mut receiver, &Doorbell::Ended(lost.clone())).await;
    assert_eq!(
        store.active_batches().await.expect("active"),
        Vec::<BatchId>::new()
    );
}

pub async fn case_renew_reports_stale_attempts(store: &dyn Store) {
    let batch_id = id("renew-stale");
    store
        .create_batch(batch(
            "renew-stale",
            vec![retrying(3, RetryPolicy::default()), op(0, &[])],
        ))
        .await
        .expect("create");
    let running = store
        .claim(&batch_id, 10, NOW + 1, NOW + 100)
        .await
        .expect("claim");
    assert_eq!(running, vec![claimed(0, 1), claimed(1, 1)]);
    store
        .complete(&batch_id, &[success(running[1])], NOW + 5)
        .await
        .expect("complete");
    // Op 0 runs attempt 1 (renewed); attempt 2 of it, the ended op 1 and an
    // op the batch does not have are stale, reported in the order given.
    let stale = store
        .renew_leases(
            &batch_id,
            &[claimed(0, 2), claimed(1, 1), claimed(0, 1), claimed(9, 1)],
            NOW + 500,
        )
        .await
        .expect("renew");
    assert_eq!(stale, vec![claimed(0, 2), claimed(1, 1), claimed(9, 1)]);
    assert_eq!(
        op_waits(store, &batch_id, 0).await.lease_until_ms,
        Some(NOW + 500)
    );
    assert_eq!(op_waits(store, &batch_id, 1).await.lease_until_ms, None);
    assert_eq!(
        store
            .renew_leases(&batch_id, &[], NOW + 600)
            .await
            .expect("renew"),
        Vec::<Claimed>::new()
    );
}

pub async fn case_hold_is_exclusive_and_extends(store: &dyn Store) {
    let batch_id = id("held");
    store
        .create_batch(batch("held", vec![op(0, &[])]))
        .await
        .expect("create");
    let now = unix_now_ms();
    assert_eq!(
        store.batch_owner(&batch_id, now).await.expect("owner"),
        None
    );
    let first = store
        .hold_batch(&batch_id, "c1", 60_000, now)
        .await
        .expect("hold")
        .expect("free: c1 takes it");
    assert_eq!(first.coordinator, "c1");
    assert!(first.token >= 1, "{first:?}");
    // Holding again extends the hold with the same fence.
    let again = store
        .hold_batch(&batch_id, "c1", 60_000, now + 10)
        .await
        .expect("hold");
    assert_eq!(again, Some(first.clone()));
    // A second coordinator cannot take a held batch.
    assert_eq!(
        store
            .hold_batch(&batch_id, "c2", 60_000, now + 20)
            .await
            .expect("hold"),
        None
    );
    assert_eq!(
        store.batch_owner(&batch_id, now + 30).await.expect("owner"),
        Some(first.clone())
    );
    // The holder's fence works; another coordinator's made-up fence does not.
    store
        .expire_leases(&batch_id, now + 40, &first)
        .await
        .expect("the holder's fence");
    let forged = Fence {
        coordinator: "c2".to_owned(),
        token: first.token + 1,
    };
    let refused = store.expire_leases(&batch_id, now + 40, &forged).await;
    match refused {
        Err(StoreError::NotOwner { batch, holder }) => {
            assert_eq!(batch, batch_id);
            assert_eq!(holder.as_deref(), Some("c1"));
        }
        other => panic!("expected NotOwner, got {other:?}"),
    }
    let error = StoreError::NotOwner {
        batch: batch_id.clone(),
        holder: Some("c1".to_owned()),
    };
    assert!(!error.is_retryable());
    assert!(error.to_string().contains("c1"), "{error}");
}

pub async fn case_hold_runs_out_and_the_old_fence_is_refused(store: &dyn Store) {
    let batch_id = id("taken-over");
    let mut new_batch = batch(
        "taken-over",
        vec![
            retrying(3, RetryPolicy::default()),
            NewOp {
                wait_deadline_ms: 1,
                ..waiting_for(&["never"])
            },
        ],
    );
    new_batch.deadline_ms = 1;
    store.create_batch(new_batch).await.expect("create");
    let start = unix_now_ms();
    let old = store
        .hold_batch(&batch_id, "c1", 100, start)
        .await
        .expect("hold")
        .expect("free: c1 takes it");
    // A lease that is due at once, so expire_leases would act.
    let running = store
        .claim(&batch_id, 10, start, start)
        .await
        .expect("claim");
    assert_eq!(running, vec![claimed(0, 1)]);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let now = unix_now_ms();
    assert_eq!(
        store.batch_owner(&batch_id, now).await.expect("owner"),
        None
    );
    let new = store
        .hold_batch(&batch_id, "c2", 60_000, now)
        .await
        .expect("hold")
        .expect("the old hold ran out: c2 takes it");
    assert_eq!(new.coordinator, "c2");
    assert!(new.token > old.token, "{new:?} after {old:?}");
    let events_before = all_events(store, &batch_id).await;
    // The old owner's fence is refused, and nothing changes.
    for refused in [
        store.expire_leases(&batch_id, now, &old).await,
        store.expire_deadline(&batch_id, now, &old).await,
        store.expire_waits(&batch_id, now, &old).await,
    ] {
        match refused {
            Err(StoreError::NotOwner { batch, holder }) => {
                assert_eq!(batch, batch_id);
                assert_eq!(holder.as_deref(), Some("c2"));
            }
            other => panic!("expected NotOwner, got {other:?}"),
        }
    }
    assert_eq!(
        states(store, &batch_id).await,
        vec![OpState::Running, OpState::Waiting]
    );
    assert_eq!(meta(store, &batch_id).await.state, BatchState::Running);
    assert_eq!(all_events(store, &batch_id).await, events_before);
    assert_eq!(
        op_waits(store, &batch_id, 0).await.lease_until_ms,
        Some(start)
    );
    // Nor can the old owner take it back while c2 holds it.
    assert_eq!(
        store
            .hold_batch(&batch_id, "c1", 60_000, now)
            .await
            .expect("hold"),
        None
    );
    // The new owner's fence works.
    let outcome = store
        .expire_leases(&batch_id, now, &new)
        .await
        .expect("expire");
    assert_eq!(outcome.retried, vec![0]);
}

pub async fn case_release_lets_another_take_over_at_once(store: &dyn Store) {
    let batch_id = id("released");
    store
        .create_batch(batch("released", vec![op(0, &[])]))
        .await
        .expect("create");
    let now = unix_now_ms();
    let first = store
        .hold_batch(&batch_id, "c1", 60_000, now)
        .await
        .expect("hold")
        .expect("free: c1 takes it");
    // A fence that is not the hold releases nothing.
    let stale = Fence {
        coordinator: "c1".to_owned(),
        token: first.token + 7,
    };
    store
        .release_batch(&batch_id, &stale)
        .await
        .expect("release");
    assert_eq!(
        store.batch_owner(&batch_id, now).await.expect("owner"),
        Some(first.clone())
    );
    store
        .release_batch(&batch_id, &first)
        .await
        .expect("release");
    assert_eq!(
        store.batch_owner(&batch_id, now).await.expect("owner"),
        None
    );
    let second = store
        .hold_batch(&batch_id, "c2", 60_000, now + 1)
        .await
        .expect("hold")
        .expect("released: c2 takes it at once");
    assert!(second.token > first.token, "{second:?} after {first:?}");
    assert!(matches!(
        store.expire_leases(&batch_id, now + 2, &first).await,
        Err(StoreError::NotOwner { .. })
    ));
    // The old fence cannot release the new hold.
    store
        .release_batch(&batch_id, &first)
        .await
        .expect("release");
    assert_eq!(
        store.batch_owner(&batch_id, now + 3).await.expect("owner"),
        Some(second.clone())
    );
    // Taking it back after the release is a new token again.
    store
        .release_batch(&batch_id, &second)
        .await
        .expect("release");
    // Released: nobody holds it, so even the last holder's fence is refused.
    match store.expire_leases(&batch_id, now + 4, &second).await {
        Err(StoreError::NotOwner { holder, .. }) => assert_eq!(holder, None),
        other => panic!("expected NotOwner, got {other:?}"),
    }
    let third = store
        .hold_batch(&batch_id, "c1", 60_000, now + 4)
        .await
        .expect("hold")
        .expect("released: c1 takes it");
    assert!(third.token > second.token, "{third:?} after {second:?}");
}

pub async fn case_hold_refuses_finished_and_unknown_batches(store: &dyn Store) {
    let batch_id = id("hold-finished");
    store
        .create_batch(batch("hold-finished", vec![op(0, &[])]))
        .await
        .expect("create");
    let now = unix_now_ms();
    let fence = store
        .hold_batch(&batch_id, "c1", 60_000, now)
        .await
        .expect("hold")
        .expect("free: c1 takes it");
    run_one(store, &batch_id, 0).await;
    // Finished: nobody can hold it, its last holder included.
    for coordinator in ["c1", "c2"] {
        assert_eq!(
            store
                .hold_batch(&batch_id, coordinator, 60_000, now + 1)
                .await
                .expect("hold"),
            None
        );
    }
    // Its holder's fence still only finds nothing to do.
    assert_eq!(
        store
            .expire_leases(&batch_id, now + 2, &fence)
            .await
            .expect("expire"),
        CompleteOutcome::default()
    );
    // Cancelled and lost batches cannot be held either.
    let cancelled = id("hold-cancelled");
    store
        .create_batch(batch("hold-cancelled", vec![op(0, &[])]))
        .await
        .expect("create");
    store.cancel(&cancelled, "user", NOW).await.expect("cancel");
    assert_eq!(
        store
            .hold_batch(&cancelled, "c1", 60_000, now)
            .await
            .expect("hold"),
        None
    );
    let lost = id("hold-lost");
    store
        .mark_lost(std::slice::from_ref(&lost), "gone", NOW)
        .await
        .expect("mark_lost");
    assert_eq!(
        store
            .hold_batch(&lost, "c1", 60_000, now)
            .await
            .expect("hold"),
        None
    );
    assert_eq!(store.batch_owner(&lost, now).await.expect("owner"), None);
    // Unknown: not found; it has no owner and releasing it is harmless.
    let ghost = id("hold-ghost");
    assert!(matches!(
        store.hold_batch(&ghost, "c1", 60_000, now).await,
        Err(StoreError::BatchNotFound(ref missing)) if *missing == ghost
    ));
    assert_eq!(store.batch_owner(&ghost, now).await.expect("owner"), None);
    store
        .release_batch(&ghost, &stranger())
        .await
        .expect("release");
    assert!(matches!(
        store.expire_deadline(&ghost, now, &stranger()).await,
        Err(StoreError::BatchNotFound(_))
    ));
}

fn worker(worker_id: &str, slots: u32, busy: u32) -> WorkerEntry {
    WorkerEntry {
        worker_id: worker_id.to_owned(),
        kinds: vec!["shell".to_owned(), "http".to_owned()],
        labels: BTreeMap::from([("zone".to_owned(), "eu-1".to_owned())]),
        slots,
        busy,
    }
}

pub async fn case_worker_registry_lists_live_entries(store: &dyn Store) {
    assert_eq!(
        store.workers(NOW).await.expect("workers"),
        Vec::<(String, WorkerEntry)>::new()
    );
    store
        .publish_workers(
            "c2",
            &[worker("w-b", 4, 1), worker("w-a", 2, 0)],
            NOW + 10_000,
        )
        .await
        .expect("publish");
    store
        .publish_workers("c1", &[worker("w-z", 8, 8)], NOW + 10_000)
        .await
        .expect("publish");
    // No workers: an entry that lists nothing.
    store
        .publish_workers("c0", &[], NOW + 10_000)
        .await
        .expect("publish");
    let listed = |entries: &[(&str, WorkerEntry)]| -> Vec<(String, WorkerEntry)> {
        entries
            .iter()
            .map(|(coordinator, entry)| (coordinator.to_string(), entry.clone()))
            .collect()
    };
    assert_eq!(
        store.workers(NOW).await.expect("workers"),
        listed(&[
            ("c1", worker("w-z", 8, 8)),
            ("c2", worker("w-a", 2, 0)),
            ("c2", worker("w-b", 4, 1)),
        ])
    );
    // Republishing replaces the coordinator's entry.
    store
        .publish_workers("c2", &[worker("w-c", 3, 2)], NOW + 20_000)
        .await
        .expect("publish");
    // Ran out a moment ago: not listed, but kept for a while.
    store
        .publish_workers("c3", &[worker("w-late", 1, 0)], NOW - 1)
        .await
        .expect("publish");
    // Ran out more than a minute ago: deleted by the next listing.
    store
        .publish_workers(
            "c4",
            &[worker("w-gone", 1, 0)],
            NOW - WORKERS_FORGET_AFTER_MS - 1_000,
        )
        .await
        .expect("publish");
    assert_eq!(
        store.workers(NOW).await.expect("workers"),
        listed(&[("c1", worker("w-z", 8, 8)), ("c2", worker("w-c", 3, 2))])
    );
    // Seen from earlier: c3 is still there, c4 is gone for good.
    assert_eq!(
        store
            .workers(NOW - WORKERS_FORGET_AFTER_MS - 5_000)
            .await
            .expect("workers"),
        listed(&[
            ("c1", worker("w-z", 8, 8)),
            ("c2", worker("w-c", 3, 2)),
            ("c3", worker("w-late", 1, 0)),
        ])
    );
    // The boundary: listed while until_ms >= now.
    assert_eq!(
        store.workers(NOW + 20_000).await.expect("workers"),
        listed(&[("c2", worker("w-c", 3, 2))])
    );
}

/// A batch with `retry_failed: sequential`.
fn sequential_batch(batch_id: &str, ops: Vec<NewOp>) -> NewBatch {
    NewBatch {
        retry_failed_sequential: true,
        ..batch(batch_id, ops)
    }
}

pub async fn case_sequential_pass_reruns_a_failed_chain(store: &dyn Store) {
    use EventKind::*;
    let batch_id = id("seq-chain");
    let scope = own(&batch_id);
    // 0 → 1, and 0 → 2, which also waits for a key nobody writes in time.
    let ops = vec![
        op(0, &[1, 2]),
        op(1, &[]),
        NewOp {
            wait_for: vec!["late".to_owned()],
            ..op(1, &[])
        },
    ];
    store
        .create_batch(sequential_batch("seq-chain", ops))
        .await
        .expect("create");
    let first = store
        .claim(&batch_id, 10, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(first, vec![claimed(0, 1)]);
    // Its only attempt fails: 1 and 2 are skipped, every op has ended, and
    // instead of finishing the batch starts its sequential pass.
    let outcome = store
        .complete(&batch_id, &[failure(first[0], "boom")], NOW + 20)
        .await
        .expect("complete");
    assert_eq!(
        outcome,
        CompleteOutcome {
            recorded: 1,
            became_ready: 1,
            ..CompleteOutcome::default()
        }
    );
    assert_eq!(
        states(store, &batch_id).await,
        vec![OpState::Ready, OpState::Waiting, OpState::Waiting]
    );
    let meta_now = meta(store, &batch_id).await;
    assert_eq!(meta_now.state, BatchState::Running);
    assert_eq!(
        (
            meta_now.succeeded,
            meta_now.failed,
            meta_now.skipped,
            meta_now.cancelled,
            meta_now.done()
        ),
        (0, 0, 0, 0, 0)
    );
    // The records of the first pass are gone; the attempts stay.
    let records = store.op_records(&batch_id).await.expect("records");
    assert_eq!(
        records
            .iter()
            .map(|record| (
                record.attempts,
                record.error.as_str(),
                record.worker.as_str()
            ))
            .collect::<Vec<_>>(),
        vec![(1, "", ""), (0, "", ""), (0, "", "")]
    );
    // Memory waits are not counted again: 2 waits only for 0 now, and a
    // late write of its key counts nothing down.
    let waits = op_waits(store, &batch_id, 2).await;
    assert_eq!(
        (waits.pending, waits.missing_keys),
        (1, Vec::<String>::new())
    );
    assert_eq!(put(store, &scope, "late", b"v").await, 0);
    assert_eq!(op_waits(store, &batch_id, 2).await.pending, 1);
    // Attempt 2 of op 0, though its policy allowed one.
    let again = store
        .claim(&batch_id, 10, NOW + 30, LEASE)
        .await
        .expect("claim");
    assert_eq!(again, vec![claimed(0, 2)]);
    let outcome = store
        .complete(&batch_id, &[success(again[0])], NOW + 40)
        .await
        .expect("complete");
    assert_eq!((outcome.recorded, outcome.became_ready), (1, 2));
    assert_eq!(outcome.finished, None);
    // One op at a time, in index order.
    let next = store
        .claim(&batch_id, 10, NOW + 50, LEASE)
        .await
        .expect("claim");
    assert_eq!(next, vec![claimed(1, 1)]);
    store
        .complete(&batch_id, &[success(next[0])], NOW + 60)
        .await
        .expect("complete");
    let last = store
        .claim(&batch_id, 10, NOW + 70, LEASE)
        .await
        .expect("claim");
    assert_eq!(last, vec![claimed(2, 1)]);
    let outcome = store
        .complete(&batch_id, &[success(last[0])], NOW + 80)
        .await
        .expect("complete");
    assert_eq!(outcome.finished, Some(BatchState::Succeeded));
    let meta_end = meta(store, &batch_id).await;
    assert_eq!(
        (meta_end.succeeded, meta_end.failed, meta_end.skipped),
        (3, 0, 0)
    );
    assert_eq!(meta_end.error, "");
    let records = store.op_records(&batch_id).await.expect("records");
    assert_eq!(
        (
            records[0].state,
            records[0].attempts,
            records[0].output.as_str()
        ),
        (OpState::Succeeded, 2, "out-0")
    );
    assert_eq!(
        event_shapes(store, &batch_id).await,
        vec![
            (BatchSubmitted, None, 0),
            (OpStarted, Some(0), 1),
            (OpFailed, Some(0), 1),
            (OpSkipped, Some(1), 0),
            (OpSkipped, Some(2), 0),
            (OpRetrying, Some(0), 1),
            (OpRetrying, Some(1), 0),
            (OpRetrying, Some(2), 0),
            (OpStarted, Some(0), 2),
            (OpSucceeded, Some(0), 2),
            (OpStarted, Some(1), 1),
            (OpSucceeded, Some(1), 1),
            (OpStarted, Some(2), 1),
            (OpSucceeded, Some(2), 1),
            (BatchFinished, None, 0),
        ]
    );
    let events = all_events(store, &batch_id).await;
    assert_eq!(events[5].message, sequential_pass_message(1));
    assert_eq!(
        events[5].message,
        "retry_failed: sequential pass after the parallel pass (1 op failed): \
         one last attempt each, one op at a time"
    );
    assert_eq!(events[6].message, SEQUENTIAL_PASS_REQUEUED);
    assert_eq!(events[7].message, SEQUENTIAL_PASS_REQUEUED);
}

pub async fn case_sequential_pass_runs_one_at_a_time_and_failures_are_final(store: &dyn Store) {
    use EventKind::*;
    let batch_id = id("seq-three");
    // Attempts left after the first pass: the pass refuses them anyway.
    let three = |_| NewOp {
        max_attempts: 3,
        ..op(0, &[])
    };
    store
        .create_batch(sequential_batch("seq-three", (0..3).map(three).collect()))
        .await
        .expect("create");
    let running = store
        .claim(&batch_id, 10, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(running, vec![claimed(0, 1), claimed(1, 1), claimed(2, 1)]);
    let permanent: Vec<Completion> = running
        .iter()
        .map(|claimed| failed_with(*claimed, FailureKind::Permanent))
        .collect();
    let outcome = store
        .complete(&batch_id, &permanent, NOW + 20)
        .await
        .expect("complete");
    assert_eq!(
        outcome,
        CompleteOutcome {
            recorded: 3,
            became_ready: 3,
            ..CompleteOutcome::default()
        }
    );
    assert_eq!(meta(store, &batch_id).await.failed, 0);
    // One op at a time: nothing more while one runs, whatever `max` says.
    let first = store
        .claim(&batch_id, 10, NOW + 30, LEASE)
        .await
        .expect("claim");
    assert_eq!(first, vec![claimed(0, 2)]);
    assert_eq!(indices(store, &batch_id, 10).await, Vec::<u32>::new());
    assert_eq!(meta(store, &batch_id).await.running, 1);
    // A failure in the pass is final, though the policy has attempts left.
    let outcome = store
        .complete(&batch_id, &[failure(first[0], "again")], NOW + 40)
        .await
        .expect("complete");
    assert_eq!((outcome.recorded, outcome.retried), (1, Vec::<u32>::new()));
    let second = store
        .claim(&batch_id, 10, NOW + 50, LEASE)
        .await
        .expect("claim");
    assert_eq!(second, vec![claimed(1, 2)]);
    store
        .complete(&batch_id, &[success(second[0])], NOW + 60)
        .await
        .expect("complete");
    let third = store
        .claim(&batch_id, 10, NOW + 70, LEASE)
        .await
        .expect("claim");
    assert_eq!(third, vec![claimed(2, 2)]);
    // A lost worker in the pass is final too.
    let fence = hold(store, &batch_id, NOW + 75).await;
    let lease_ran_out = store
        .renew_leases(&batch_id, &third, NOW + 76)
        .await
        .expect("renew");
    assert_eq!(lease_ran_out, Vec::<Claimed>::new());
    let outcome = store
        .expire_leases(&batch_id, NOW + 80, &fence)
        .await
        .expect("expire_leases");
    assert_eq!((outcome.recorded, outcome.retried), (1, Vec::<u32>::new()));
    // The pass runs once: the batch ends failed with the usual counters.
    assert_eq!(outcome.finished, Some(BatchState::Failed));
    let meta_end = meta(store, &batch_id).await;
    assert_eq!(
        (
            meta_end.succeeded,
            meta_end.failed,
            meta_end.skipped,
            meta_end.cancelled,
            meta_end.running
        ),
        (1, 2, 0, 0, 0)
    );
    assert_eq!(meta_end.error, "2 failed, 0 skipped, 0 cancelled");
    assert_eq!(
        states(store, &batch_id).await,
        vec![OpState::Failed, OpState::Succeeded, OpState::Failed]
    );
    let events = all_events(store, &batch_id).await;
    let retrying: Vec<(Option<u32>, u32, &str)> = events
        .iter()
        .filter(|event| event.kind == OpRetrying)
        .map(|event| (event.op_index, event.attempt, event.message.as_str()))
        .collect();
    let message = sequential_pass_message(3);
    assert_eq!(
        retrying,
        vec![
            (Some(0), 1, message.as_str()),
            (Some(1), 1, message.as_str()),
            (Some(2), 1, message.as_str()),
        ]
    );
    assert_eq!(
        event_shapes(store, &batch_id).await[7..],
        [
            (OpRetrying, Some(0), 1),
            (OpRetrying, Some(1), 1),
            (OpRetrying, Some(2), 1),
            (OpStarted, Some(0), 2),
            (OpFailed, Some(0), 2),
            (OpStarted, Some(1), 2),
            (OpSucceeded, Some(1), 2),
            (OpStarted, Some(2), 2),
            (OpFailed, Some(2), 2),
            (BatchFinished, None, 0),
        ]
    );
}

pub async fn case_sequential_pass_not_after_fail_fast_or_cancel(store: &dyn Store) {
    use EventKind::*;
    // fail_fast fired: the batch ends as it would without the option.
    let fast = id("seq-fast");
    let mut new_batch = sequential_batch("seq-fast", vec![op(0, &[]), op(0, &[])]);
    new_batch.on_failure = OnFailure::FailFast;
    store.create_batch(new_batch).await.expect("create");
    let running = store.claim(&fast, 1, NOW + 1, LEASE).await.expect("claim");
    let outcome = store
        .complete(&fast, &[failure(running[0], "bad")], NOW + 20)
        .await
        .expect("complete");
    assert_eq!(outcome.finished, Some(BatchState::Failed));
    assert_eq!(outcome.became_ready, 0);
    assert_eq!(indices(store, &fast, 10).await, Vec::<u32>::new());
    assert_eq!(
        event_shapes(store, &fast).await,
        vec![
            (BatchSubmitted, None, 0),
            (OpStarted, Some(0), 1),
            (OpFailed, Some(0), 1),
            (OpCancelled, Some(1), 0),
            (BatchFinished, None, 0),
        ]
    );
    let meta_fast = meta(store, &fast).await;
    assert_eq!((meta_fast.failed, meta_fast.cancelled), (1, 1));
    // Cancelled after a failure: cancelled, no pass.
    let cancelled = id("seq-cancel");
    store
        .create_batch(sequential_batch("seq-cancel", vec![op(0, &[]), op(0, &[])]))
        .await
        .expect("create");
    let running = store
        .claim(&cancelled, 10, NOW + 1, LEASE)
        .await
        .expect("claim");
    store
        .complete(&cancelled, &[failure(running[0], "bad")], NOW + 20)
        .await
        .expect("complete");
    store
        .cancel(&cancelled, "enough", NOW + 30)
        .await
        .expect("cancel");
    let meta_cancelled = meta(store, &cancelled).await;
    assert_eq!(meta_cancelled.state, BatchState::Cancelled);
    assert_eq!((meta_cancelled.failed, meta_cancelled.cancelled), (1, 1));
    assert!(
        all_events(store, &cancelled)
            .await
            .iter()
            .all(|event| event.kind != OpRetrying)
    );
    // Nothing failed (only skips are impossible without a failure): no pass.
    let fine = id("seq-fine");
    store
        .create_batch(sequential_batch("seq-fine", vec![op(0, &[])]))
        .await
        .expect("create");
    let outcome = run_one(store, &fine, 0).await;
    assert_eq!(outcome.finished, Some(BatchState::Succeeded));
}

pub async fn case_note_blocked_appends_an_event_only(store: &dyn Store) {
    use EventKind::*;
    let batch_id = id("blocked");
    let marker = id("blocked-marker");
    let mut receiver = store.doorbells();
    // 0 → 1, and 2 alone.
    store
        .create_batch(batch("blocked", vec![op(0, &[1]), op(1, &[]), op(0, &[])]))
        .await
        .expect("create");
    let running = store
        .claim(&batch_id, 1, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(running, vec![claimed(0, 1)]);
    // Bells arrive in order: once the marker's are in, the batch's are too.
    store
        .create_batch(batch("blocked-marker", vec![op(0, &[])]))
        .await
        .expect("create");
    expect_bells(
        &mut receiver,
        &[
            Doorbell::Batch(marker.clone()),
            Doorbell::Started(marker.clone()),
        ],
    )
    .await;
    let before = meta(store, &batch_id).await;
    let message = "no live worker runs `gpu` ops; it waits until one connects";
    // Waiting, ready and running ops can be noted.
    assert!(
        store
            .note_blocked(&batch_id, 1, message, NOW + 5)
            .await
            .expect("note_blocked")
    );
    // Only the events bell: a note makes nothing claimable.
    expect_exact_bell(&mut receiver, &Doorbell::Events(batch_id.clone())).await;
    assert!(
        store
            .note_blocked(&batch_id, 2, "ready", NOW + 6)
            .await
            .expect("note_blocked")
    );
    assert!(
        store
            .note_blocked(&batch_id, 0, "running", NOW + 7)
            .await
            .expect("note_blocked")
    );
    // Nothing else changed.
    assert_eq!(meta(store, &batch_id).await, before);
    assert_eq!(
        states(store, &batch_id).await,
        vec![OpState::Running, OpState::Waiting, OpState::Ready]
    );
    assert_eq!(op_waits(store, &batch_id, 1).await.pending, 1);
    // An ended op is not noted.
    store
        .complete(&batch_id, &[failure(running[0], "bad")], NOW + 20)
        .await
        .expect("complete");
    assert!(
        !store
            .note_blocked(&batch_id, 0, "late", NOW + 21)
            .await
            .expect("note_blocked")
    );
    assert!(
        !store
            .note_blocked(&batch_id, 1, "skipped by now", NOW + 22)
            .await
            .expect("note_blocked")
    );
    let events = all_events(store, &batch_id).await;
    let blocked: Vec<(Option<u32>, u32, &str, &str, u64)> = events
        .iter()
        .filter(|event| event.kind == OpBlocked)
        .map(|event| {
            (
                event.op_index,
                event.attempt,
                event.worker.as_str(),
                event.message.as_str(),
                event.at_ms,
            )
        })
        .collect();
    assert_eq!(
        blocked,
        vec![
            (Some(1), 0, "", message, NOW + 5),
            (Some(2), 0, "", "ready", NOW + 6),
            (Some(0), 1, "", "running", NOW + 7),
        ]
    );
    assert_eq!(
        event_shapes(store, &batch_id).await,
        vec![
            (BatchSubmitted, None, 0),
            (OpStarted, Some(0), 1),
            (OpBlocked, Some(1), 0),
            (OpBlocked, Some(2), 0),
            (OpBlocked, Some(0), 1),
            (OpFailed, Some(0), 1),
            (OpSkipped, Some(1), 0),
        ]
    );
    // Not once the batch ended, even for an op that never ran.
    store
        .cancel(&batch_id, "done", NOW + 30)
        .await
        .expect("cancel");
    assert!(
        !store
            .note_blocked(&batch_id, 2, "too late", NOW + 31)
            .await
            .expect("note_blocked")
    );
    // Unknown op or batch.
    assert!(matches!(
        store.note_blocked(&batch_id, 9, "nope", NOW + 32).await,
        Err(StoreError::BatchNotFound(_))
    ));
    assert!(matches!(
        store
            .note_blocked(&id("blocked-ghost"), 0, "nope", NOW + 33)
            .await,
        Err(StoreError::BatchNotFound(_))
    ));
}

/// `retain_ms`: a finished batch stays readable for its retention; then
/// `drop_expired` deletes its records and its own memory scope (a large,
/// chunked value too); a batch without retention, or still running, stays.
pub async fn case_finished_batch_expires_after_its_retention(store: &dyn Store) {
    let short = id("retain-short");
    let kept = id("retain-kept");
    let running = id("retain-running");
    for (batch_id, retain_ms) in [(&short, 300), (&kept, 0), (&running, 300)] {
        store
            .create_batch(NewBatch {
                retain_ms,
                ..batch(batch_id.as_str(), vec![op(0, &[])])
            })
            .await
            .expect("create");
    }
    put(store, &own(&short), "small", b"v").await;
    let large = vec![7_u8; 600 * 1024];
    put(store, &own(&short), "large", &large).await;
    run_one(store, &short, 0).await;
    run_one(store, &kept, 0).await;
    // Retained: everything still readable until its time comes.
    let finished = meta(store, &short).await;
    assert_eq!(finished.state, BatchState::Succeeded);
    let gone_at = finished.finished_ms.expect("finished_ms") + 300;
    assert_eq!(store.drop_expired(gone_at - 1, 10).await.expect("drop"), 0);
    assert!(
        !store
            .events(&short, 0, 100)
            .await
            .expect("events")
            .is_empty()
    );
    assert_eq!(store.drop_expired(gone_at, 10).await.expect("drop"), 1);
    assert!(store.meta(&short).await.expect("meta").is_none());
    // Nothing more to drop.
    assert_eq!(
        store
            .drop_expired(gone_at + 60_000, 10)
            .await
            .expect("drop"),
        0
    );
    assert!(
        store
            .events(&short, 0, 100)
            .await
            .expect("events")
            .is_empty()
    );
    assert!(store.batch_spec(&short).await.expect("spec").is_none());
    for key in ["small", "large"] {
        assert!(
            store
                .memory_get(&own(&short), key)
                .await
                .expect("get")
                .is_none(),
            "memory key {key} outlived its batch"
        );
    }
    let listed: Vec<BatchId> = store
        .list_batches(10, None)
        .await
        .expect("list")
        .into_iter()
        .map(|meta| meta.id)
        .collect();
    assert!(!listed.contains(&short));
    assert!(listed.contains(&kept) && listed.contains(&running));
    assert_eq!(meta(store, &kept).await.state, BatchState::Succeeded);
    assert_eq!(meta(store, &running).await.state, BatchState::Running);
}
