//! Conformance cases of the sequential pass (`retry_failed: sequential`;
//! see the [`Store`](crate::Store) trait's doc).

use super::*;

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
    // The failed attempt's duration left the sequential time with its record.
    assert_eq!(meta_now.sequential_ms, 0);
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
