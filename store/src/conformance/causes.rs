//! Conformance cases of causes: the ops a skip's or a fail_fast cancel's
//! message names travel beside it as data (records and events alike), and
//! `add_ops` says by type why it refused to grow a batch.

use super::*;

/// Every op's (error, cause), in index order.
async fn record_causes(store: &dyn Store, batch_id: &BatchId) -> Vec<(String, Option<Cause>)> {
    store
        .op_records(batch_id)
        .await
        .expect("records")
        .into_iter()
        .map(|record| (record.error, record.cause))
        .collect()
}

/// (op index, message, cause) of every skip and cancel event.
async fn event_causes(
    store: &dyn Store,
    batch_id: &BatchId,
) -> Vec<(Option<u32>, String, Option<Cause>)> {
    all_events(store, batch_id)
        .await
        .into_iter()
        .filter(|event| matches!(event.kind, EventKind::OpSkipped | EventKind::OpCancelled))
        .map(|event| (event.op_index, event.message, event.cause))
        .collect()
}

/// Every cause's message is the text stored beside it.
fn assert_messages_match(causes: &[(String, Option<Cause>)]) {
    for (message, cause) in causes {
        if let Some(cause) = cause {
            assert_eq!(&cause.message(), message);
        }
    }
}

pub async fn case_skips_carry_the_dependency_as_data(store: &dyn Store) {
    let batch_id = id("cause-skips");
    // 0 → 1 → 2; 3 stands alone.
    let ops = vec![op(0, &[1]), op(1, &[2]), op(1, &[]), op(0, &[])];
    store
        .create_batch(batch("cause-skips", ops))
        .await
        .expect("create");
    let running = store
        .claim(&batch_id, 10, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(running, vec![claimed(0, 1), claimed(3, 1)]);
    store
        .complete(
            &batch_id,
            &[failure(running[0], "exit `1`"), success(running[1])],
            NOW + 20,
        )
        .await
        .expect("complete");
    let records = record_causes(store, &batch_id).await;
    assert_eq!(
        records,
        vec![
            // A worker's error names no op, whatever it reads like.
            ("exit `1`".to_owned(), None),
            (
                "dependency `0` failed".to_owned(),
                Some(Cause::Dependency {
                    index: 0,
                    state: OpState::Failed
                })
            ),
            (
                "dependency `1` skipped".to_owned(),
                Some(Cause::Dependency {
                    index: 1,
                    state: OpState::Skipped
                })
            ),
            (String::new(), None),
        ]
    );
    assert_messages_match(&records);
    assert_eq!(
        event_causes(store, &batch_id).await,
        vec![
            (
                Some(1),
                "dependency `0` failed".to_owned(),
                Some(Cause::Dependency {
                    index: 0,
                    state: OpState::Failed
                })
            ),
            (
                Some(2),
                "dependency `1` skipped".to_owned(),
                Some(Cause::Dependency {
                    index: 1,
                    state: OpState::Skipped
                })
            ),
        ]
    );
    let failed = all_events(store, &batch_id)
        .await
        .into_iter()
        .find(|event| event.kind == EventKind::OpFailed)
        .expect("a failed event");
    assert_eq!(failed.cause, None);
}

pub async fn case_fail_fast_cancels_carry_the_failed_op_as_data(store: &dyn Store) {
    let batch_id = id("cause-failfast");
    // 0 fails; 1 waits for 0 (skipped); 2 is ready (cancelled).
    let mut new_batch = batch("cause-failfast", vec![op(0, &[1]), op(1, &[]), op(0, &[])]);
    new_batch.on_failure = OnFailure::FailFast;
    store.create_batch(new_batch).await.expect("create");
    let running = store
        .claim(&batch_id, 1, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(running, vec![claimed(0, 1)]);
    store
        .complete(&batch_id, &[failure(running[0], "bad")], NOW + 20)
        .await
        .expect("complete");
    let fail_fast = Cause::FailFast { index: 0 };
    let records = record_causes(store, &batch_id).await;
    assert_eq!(
        records[2],
        (
            "cancelled: fail_fast after op `0` failed".to_owned(),
            Some(fail_fast.clone())
        )
    );
    assert_messages_match(&records);
    let events = event_causes(store, &batch_id).await;
    assert!(
        events.contains(&(
            Some(2),
            "cancelled: fail_fast after op `0` failed".to_owned(),
            Some(fail_fast)
        )),
        "{events:?}"
    );
}

pub async fn case_a_cancel_reason_carries_no_cause(store: &dyn Store) {
    let batch_id = id("cause-cancel");
    store
        .create_batch(batch("cause-cancel", vec![op(0, &[])]))
        .await
        .expect("create");
    store
        .cancel(&batch_id, "op `0` is not wanted", NOW + 5)
        .await
        .expect("cancel");
    let records = record_causes(store, &batch_id).await;
    assert_eq!(records[0].1, None);
    for (_, message, cause) in event_causes(store, &batch_id).await {
        assert_eq!(message, "cancelled: op `0` is not wanted");
        assert_eq!(cause, None);
    }
}

pub async fn case_hopeless_skips_carry_the_key_and_its_writers_as_data(store: &dyn Store) {
    let batch_id = id("cause-hopeless");
    // Ops 0..=6 declare `k`; op 7 waits for it.
    let mut ops: Vec<NewOp> = (0..7)
        .map(|_| NewOp {
            writes: vec!["k".to_owned()],
            ..op(0, &[])
        })
        .collect();
    ops.push(waiting_for(&["k"]));
    store
        .create_batch(batch("cause-hopeless", ops))
        .await
        .expect("create");
    let running = store
        .claim(&batch_id, 10, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(running.len(), 7);
    let mut ended: Vec<Completion> = running.iter().map(|claimed| success(*claimed)).collect();
    ended[1] = failure(running[1], "boom");
    store
        .complete(&batch_id, &ended, NOW + 20)
        .await
        .expect("complete");
    let records = record_causes(store, &batch_id).await;
    let expected = Cause::NeverWritten {
        key: "k".to_owned(),
        writers: vec![
            (0, OpState::Succeeded),
            (1, OpState::Failed),
            (2, OpState::Succeeded),
            (3, OpState::Succeeded),
            (4, OpState::Succeeded),
        ],
        more: 2,
    };
    assert_eq!(records[7].1.as_ref(), Some(&expected));
    assert_eq!(
        records[7].0,
        "key `k` will never be written: its writers `0` (succeeded without writing it), \
         `1` (failed), `2` (succeeded without writing it), `3` (succeeded without writing it), \
         `4` (succeeded without writing it) and 2 more"
    );
    assert_messages_match(&records);
    assert_eq!(
        event_causes(store, &batch_id).await,
        vec![(Some(7), records[7].0.clone(), Some(expected))]
    );
}

pub async fn case_add_ops_skips_carry_causes_and_refusals_are_typed(store: &dyn Store) {
    let batch_id = id("cause-add");
    store
        .create_batch(batch("cause-add", vec![op(0, &[]), op(0, &[])]))
        .await
        .expect("create");
    let running = store
        .claim(&batch_id, 10, NOW + 1, LEASE)
        .await
        .expect("claim");
    store
        .complete(&batch_id, &[failure(running[0], "boom")], NOW + 5)
        .await
        .expect("complete");
    // Numbered from 1: another call grew the batch first, as far as this
    // one can tell.
    let stale = store
        .add_ops(
            &batch_id,
            1,
            vec![op(0, &[])],
            Vec::new(),
            "",
            NOW + 6,
            None,
        )
        .await;
    match stale {
        Err(StoreError::CannotAddOps { batch, reason }) => {
            assert_eq!(batch, batch_id);
            assert_eq!(
                reason,
                AddOpsRefusal::FirstIndexTaken {
                    first_index: 1,
                    total: 2
                }
            );
        }
        other => panic!("expected CannotAddOps, got {other:?}"),
    }
    // Op 2 runs after the failed op 0: skipped at once, with its cause.
    let skipped = NewOp {
        after: vec![0],
        ..op(1, &[])
    };
    store
        .add_ops(&batch_id, 2, vec![skipped], Vec::new(), "", NOW + 7, None)
        .await
        .expect("add_ops");
    let records = record_causes(store, &batch_id).await;
    let cause = Cause::Dependency {
        index: 0,
        state: OpState::Failed,
    };
    assert_eq!(
        records[2],
        ("dependency `0` failed".to_owned(), Some(cause.clone()))
    );
    assert_eq!(
        event_causes(store, &batch_id).await,
        vec![(Some(2), "dependency `0` failed".to_owned(), Some(cause))]
    );
    // Once the batch ended: refused as not running.
    store
        .complete(&batch_id, &[success(running[1])], NOW + 8)
        .await
        .expect("complete");
    let ended = store
        .add_ops(
            &batch_id,
            3,
            vec![op(0, &[])],
            Vec::new(),
            "",
            NOW + 9,
            None,
        )
        .await;
    assert!(
        matches!(
            ended,
            Err(StoreError::CannotAddOps {
                reason: AddOpsRefusal::NotRunning(BatchState::Failed),
                ..
            })
        ),
        "{ended:?}"
    );
}

pub async fn case_add_ops_after_fail_fast_is_refused_by_type(store: &dyn Store) {
    let batch_id = id("cause-add-ff");
    let mut new_batch = batch("cause-add-ff", vec![op(0, &[]), op(0, &[])]);
    new_batch.on_failure = OnFailure::FailFast;
    store.create_batch(new_batch).await.expect("create");
    let running = store
        .claim(&batch_id, 10, NOW + 1, LEASE)
        .await
        .expect("claim");
    store
        .complete(&batch_id, &[failure(running[0], "boom")], NOW + 5)
        .await
        .expect("complete");
    let refused = store
        .add_ops(
            &batch_id,
            2,
            vec![op(0, &[])],
            Vec::new(),
            "",
            NOW + 6,
            None,
        )
        .await;
    match refused {
        Err(error @ StoreError::CannotAddOps { .. }) => {
            assert!(matches!(
                error,
                StoreError::CannotAddOps {
                    reason: AddOpsRefusal::FailFastFired,
                    ..
                }
            ));
            assert_eq!(
                error.to_string(),
                "batch cause-add-ff cannot grow: fail_fast fired"
            );
        }
        other => panic!("expected CannotAddOps, got {other:?}"),
    }
}
