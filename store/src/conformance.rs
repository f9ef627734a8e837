//! The conformance suite every [`Store`] must pass: one `case_*` per behaviour.
//!
//! Use it through [`conformance_tests!`](crate::conformance_tests), which
//! expands into one `#[tokio::test]` per case:
//!
//! ```ignore
//! async fn make() -> (std::sync::Arc<dyn volley_store::Store>, ()) {
//!     (std::sync::Arc::new(volley_store::MemoryStore::new()), ())
//! }
//! volley_store::conformance_tests!(make());
//! ```
//!
//! The second tuple element is a guard kept alive for the test (e.g. the
//! `redis-server` the store talks to). Cases assert exact states, counters
//! and event sequences, never timings. Panicking is how a case fails, so the
//! `expect`s here are deliberate.

use std::time::Duration;

use volley_proto::BatchId;

use crate::model::*;
use crate::{Store, StoreError};

/// Expands into one `#[tokio::test]` per conformance case. `$make` is an
/// expression evaluating to a future of `(Arc<dyn Store>, guard)`.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
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
}

const NOW: u64 = 1_700_000_000_000;
/// Only a guard against hanging forever; never asserted on.
const DOORBELL_DEADLINE: Duration = Duration::from_secs(20);

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
        wait_for: Vec::new(),
    }
}

fn batch(batch_id: &str, ops: Vec<NewOp>) -> NewBatch {
    NewBatch {
        id: id(batch_id),
        name: format!("{batch_id}-name"),
        max_parallel: 0,
        on_failure: OnFailure::Continue,
        created_ms: NOW,
        spec: format!("spec of {batch_id}").into_bytes(),
        ops,
    }
}

fn success(claimed: Claimed) -> Completion {
    Completion {
        index: claimed.index,
        attempt: claimed.attempt,
        ok: true,
        permanent: false,
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
        .claim(batch_id, max, NOW + 1)
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

/// Claims and succeeds exactly the op `index` (it must be the only ready one).
async fn run_one(store: &dyn Store, batch_id: &BatchId, index: u32) -> CompleteOutcome {
    let claimed = store.claim(batch_id, 10, NOW + 1).await.expect("claim");
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
        Some(b"spec of chain".to_vec())
    );
    assert_eq!(
        store.active_batches().await.expect("active"),
        vec![batch_id.clone()]
    );
    assert_eq!(
        states(store, &batch_id).await,
        vec![OpState::Ready, OpState::Waiting, OpState::Waiting]
    );
    let first = store.claim(&batch_id, 10, NOW + 1).await.expect("claim");
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
    let claimed = store.claim(&batch_id, 3, NOW + 1).await.expect("claim");
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
    let middle = store.claim(&batch_id, 10, NOW + 1).await.expect("claim");
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
    let first = store.claim(&batch_id, 10, NOW + 1).await.expect("claim");
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
    let first = store.claim(&batch_id, 10, NOW + 1).await.expect("claim");
    let mut refused = failure(first[0], "path escapes the root");
    refused.permanent = true;
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
    let first = store.claim(&batch_id, 10, NOW + 1).await.expect("claim");
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
    let second = store.claim(&batch_id, 10, NOW + 30).await.expect("claim");
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
    let first = store.claim(&batch_id, 10, NOW + 1).await.expect("claim");
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
    let running = store.claim(&batch_id, 2, NOW + 1).await.expect("claim");
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
    let running = store.claim(&batch_id, 1, NOW + 1).await.expect("claim");
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
    let late = store.claim(&batch_id, 1, NOW + 1).await.expect("claim");
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
    let first = store.claim(&batch_id, 10, NOW + 1).await.expect("claim");
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
        store
            .get_memory(&batch_id, "swarm/findings")
            .await
            .expect("get"),
        Some(b"the findings".to_vec())
    );
    assert_eq!(indices(store, &batch_id, 10).await, vec![1]);
}

pub async fn case_put_memory_unblocks_and_present_keys_count(store: &dyn Store) {
    let batch_id = id("memory");
    // Written before the batch exists: counts as present at creation.
    assert_eq!(
        store
            .put_memory(&batch_id, "pre", b"early", NOW)
            .await
            .expect("put"),
        0
    );
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
    assert_eq!(
        store
            .put_memory(&batch_id, "a", b"1", NOW)
            .await
            .expect("put"),
        1
    );
    assert_eq!(
        store
            .put_memory(&batch_id, "unrelated", b"x", NOW)
            .await
            .expect("put"),
        0
    );
    assert_eq!(
        store
            .put_memory(&batch_id, "b", b"2", NOW)
            .await
            .expect("put"),
        1
    );
    // Writing a key again unblocks nothing more.
    assert_eq!(
        store
            .put_memory(&batch_id, "a", b"3", NOW)
            .await
            .expect("put"),
        0
    );
    assert_eq!(indices(store, &batch_id, 10).await, vec![2, 1]);
    assert_eq!(states(store, &batch_id).await[4], OpState::Waiting);
    let outcome = store
        .complete(&batch_id, &[success(claimed(3, 1))], NOW + 20)
        .await
        .expect("complete");
    assert_eq!(outcome.became_ready, 1);
    assert_eq!(indices(store, &batch_id, 10).await, vec![4]);
    assert_eq!(
        store.get_memory(&batch_id, "a").await.expect("get"),
        Some(b"3".to_vec())
    );
    assert_eq!(
        store.get_memory(&batch_id, "pre").await.expect("get"),
        Some(b"early".to_vec())
    );
    assert_eq!(
        store.get_memory(&batch_id, "nope").await.expect("get"),
        None
    );
    assert_eq!(
        store.get_memory(&id("other"), "a").await.expect("get"),
        None
    );
}

pub async fn case_cancel_returns_running_and_is_idempotent(store: &dyn Store) {
    use EventKind::*;
    let batch_id = id("cancel");
    store
        .create_batch(batch("cancel", vec![op(0, &[2]), op(0, &[]), op(1, &[])]))
        .await
        .expect("create");
    let running = store.claim(&batch_id, 1, NOW + 1).await.expect("claim");
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
    assert_eq!(store.meta(&batch_id).await.expect("meta"), None);
    assert_eq!(store.batch_spec(&batch_id).await.expect("spec"), None);
    assert!(matches!(
        store.claim(&batch_id, 1, NOW).await,
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
    loop {
        let bell = tokio::time::timeout(DOORBELL_DEADLINE, receiver.recv())
            .await
            .expect("a doorbell before the deadline")
            .expect("doorbell channel open");
        match bell {
            Doorbell::Resync => continue,
            Doorbell::Batch(batch_id) => {
                assert_eq!(&batch_id, expected);
                return;
            }
        }
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
    let running = store.claim(&batch_id, 1, NOW + 1).await.expect("claim");
    expect_bell(&mut receiver, &batch_id).await;
    // Bells arrive in order, so once the marker's bell is in, nothing of
    // the first batch is still under way.
    store
        .create_batch(batch("bell-marker", vec![op(0, &[])]))
        .await
        .expect("create");
    expect_bell(&mut receiver, &marker).await;
    store
        .complete(&batch_id, &[success(running[0])], NOW + 20)
        .await
        .expect("complete");
    expect_bell(&mut receiver, &batch_id).await;
    store
        .put_memory(&marker, "k", b"v", NOW)
        .await
        .expect("put");
    expect_bell(&mut receiver, &marker).await;
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
        let running = store.claim(&batch_id, 500, NOW + 1).await.expect("claim");
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
    store
        .put_memory(&batch_id, "present", b"1", NOW)
        .await
        .expect("put");
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
    let ready_now = store.claim(&batch_id, OPS, NOW + 1).await.expect("claim");
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
    let unblocked = store
        .put_memory(&batch_id, "later", b"2", NOW)
        .await
        .expect("put");
    assert_eq!(unblocked as usize, OPS as usize - expected_now);
    let later = store.claim(&batch_id, OPS, NOW + 1).await.expect("claim");
    assert_eq!(later.len(), OPS as usize - expected_now);
    assert_eq!(later[0].index, 2);
}

pub async fn case_list_batches_newest_first(store: &dyn Store) {
    for (name, created_ms) in [("old", NOW), ("newest", NOW + 300), ("middle", NOW + 200)] {
        let mut new_batch = batch(name, vec![op(0, &[])]);
        new_batch.created_ms = created_ms;
        store.create_batch(new_batch).await.expect("create");
    }
    let listed: Vec<String> = store
        .list_batches(10)
        .await
        .expect("list")
        .into_iter()
        .map(|meta| meta.id.into_string())
        .collect();
    assert_eq!(listed, vec!["newest", "middle", "old"]);
    let limited = store.list_batches(2).await.expect("list");
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
