//! Conformance cases of leases: expiry, renewal (and stale attempts),
//! lost workers and their own retry budget, and attempts handed back
//! unrun.

use super::*;

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
