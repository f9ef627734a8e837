//! Conformance cases of completion and retries: failures final or
//! retried per the op's policy and failure kind, backoff, skipped
//! dependents, fail_fast, and stale completions.

use super::*;

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

fn no_jitter(initial_ms: u64, max_ms: u64) -> RetryPolicy {
    RetryPolicy {
        backoff_initial_ms: initial_ms,
        backoff_max_ms: max_ms,
        backoff_multiplier: 2.0,
        backoff_jitter: false,
        ..RetryPolicy::default()
    }
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
