//! Conformance cases of declared memory writers (a key nobody will write
//! skips its waiters) and of shared `store_as` writes (written once).

use super::*;

fn writer_of(keys: &[&str]) -> NewOp {
    NewOp {
        writes: keys.iter().map(|key| key.to_string()).collect(),
        ..op(0, &[])
    }
}

/// Claims exactly `index` (it must be the only ready op left unclaimed).
async fn claim_one(store: &dyn Store, batch_id: &BatchId, index: u32) -> Claimed {
    let claimed = store
        .claim(batch_id, 10, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(claimed, vec![Claimed { index, attempt: 1 }]);
    claimed[0]
}

async fn errors(store: &dyn Store, batch_id: &BatchId) -> Vec<String> {
    store
        .op_records(batch_id)
        .await
        .expect("records")
        .into_iter()
        .map(|record| record.error)
        .collect()
}

fn permanent(claimed: Claimed, error: &str) -> Completion {
    Completion {
        failure: FailureKind::Permanent,
        ..failure(claimed, error)
    }
}

pub async fn case_failed_writer_skips_its_waiters_and_their_dependents(store: &dyn Store) {
    use EventKind::*;
    let batch_id = id("hopeless");
    let ops = vec![
        writer_of(&["k"]),
        // Waits for k; op 2 runs after it.
        NewOp {
            dependents: vec![2],
            ..waiting_for(&["k"])
        },
        op(1, &[]),
        // run_if: always: its wait counts as satisfied.
        NewOp {
            run_if_always: true,
            ..waiting_for(&["k"])
        },
        // Nobody declares `free`: never judged.
        waiting_for(&["free"]),
    ];
    store
        .create_batch(batch("hopeless", ops))
        .await
        .expect("create");
    let writer = claim_one(store, &batch_id, 0).await;
    let outcome = store
        .complete(&batch_id, &[permanent(writer, "boom")], NOW + 20)
        .await
        .expect("complete");
    assert_eq!(outcome.recorded, 1);
    assert_eq!(outcome.became_ready, 1);
    assert_eq!(outcome.finished, None);
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
    let errors_now = errors(store, &batch_id).await;
    assert_eq!(
        errors_now[1],
        "key `k` will never be written: its writer `0` failed"
    );
    assert_eq!(errors_now[2], "dependency `1` skipped");
    assert_eq!(
        event_shapes(store, &batch_id).await,
        vec![
            (BatchSubmitted, None, 0),
            (OpStarted, Some(0), 1),
            (OpFailed, Some(0), 1),
            (OpSkipped, Some(1), 0),
            (OpSkipped, Some(2), 0),
        ]
    );
    let meta_now = meta(store, &batch_id).await;
    assert_eq!((meta_now.failed, meta_now.skipped), (1, 2));
    // The skip said why; a waiter's `op_waits` no longer waits.
    assert_eq!(
        store.op_waits(&batch_id, 1).await.expect("waits"),
        OpWaits::default()
    );
    // The undeclared key still waits for whoever writes it.
    assert_eq!(put(store, &own(&batch_id), "free", b"1").await, 1);
    let running = store
        .claim(&batch_id, 10, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(running, vec![claimed(3, 1), claimed(4, 1)]);
    let outcome = store
        .complete(
            &batch_id,
            &[success(running[0]), success(running[1])],
            NOW + 30,
        )
        .await
        .expect("complete");
    assert_eq!(outcome.finished, Some(BatchState::Failed));
    assert_eq!(
        meta(store, &batch_id).await.error,
        "1 failed, 2 skipped, 0 cancelled"
    );
}

pub async fn case_writers_that_end_without_writing_skip_any_groups_last(store: &dyn Store) {
    let batch_id = id("any-hopeless");
    let ops = vec![
        writer_of(&["a"]),
        writer_of(&["b"]),
        waiting_for_any(&["a", "b"]),
        waiting_for(&["a"]),
        writer_of(&["a"]),
    ];
    store
        .create_batch(batch("any-hopeless", ops))
        .await
        .expect("create");
    let running = store
        .claim(&batch_id, 10, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(running, vec![claimed(0, 1), claimed(1, 1), claimed(4, 1)]);
    // One of a's two writers succeeded without writing it: a may still come.
    store
        .complete(&batch_id, &[success(running[0])], NOW + 20)
        .await
        .expect("complete");
    assert_eq!(
        states(store, &batch_id).await[2..4],
        [OpState::Waiting, OpState::Waiting]
    );
    // Its last writer too: `a` is hopeless; op 3 goes, op 2 still has `b`.
    store
        .complete(&batch_id, &[success(running[2])], NOW + 21)
        .await
        .expect("complete");
    assert_eq!(
        states(store, &batch_id).await[2..4],
        [OpState::Waiting, OpState::Skipped]
    );
    assert_eq!(
        errors(store, &batch_id).await[3],
        "key `a` will never be written: its writers `0` (succeeded without writing it), \
         `4` (succeeded without writing it)"
    );
    // b's only writer fails: the whole any-group is hopeless.
    let outcome = store
        .complete(&batch_id, &[permanent(running[1], "no")], NOW + 22)
        .await
        .expect("complete");
    assert_eq!(outcome.finished, Some(BatchState::Failed));
    assert_eq!(
        states(store, &batch_id).await,
        vec![
            OpState::Succeeded,
            OpState::Failed,
            OpState::Skipped,
            OpState::Skipped,
            OpState::Succeeded
        ]
    );
    assert_eq!(
        errors(store, &batch_id).await[2],
        "key `b` will never be written: its writer `1` failed"
    );
}

pub async fn case_a_writer_that_wrote_its_key_skips_nothing(store: &dyn Store) {
    let batch_id = id("wrote");
    let ops = vec![
        writer_of(&["put"]),
        NewOp {
            writes: vec!["stored".to_owned()],
            ..op(0, &[])
        },
        waiting_for(&["put"]),
        waiting_for(&["stored"]),
    ];
    store
        .create_batch(batch("wrote", ops))
        .await
        .expect("create");
    let running = store
        .claim(&batch_id, 10, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(running, vec![claimed(0, 1), claimed(1, 1)]);
    // Op 0 writes its key while it runs (an agent's `writes:`), op 1 by
    // store_as with its result.
    assert_eq!(put(store, &own(&batch_id), "put", b"1").await, 1);
    let stored = Completion {
        store_as: Some("stored".to_owned()),
        ..success(running[1])
    };
    let outcome = store
        .complete(&batch_id, &[success(running[0]), stored], NOW + 20)
        .await
        .expect("complete");
    assert_eq!(outcome.became_ready, 1);
    assert_eq!(
        states(store, &batch_id).await,
        vec![
            OpState::Succeeded,
            OpState::Succeeded,
            OpState::Ready,
            OpState::Ready
        ]
    );
    assert_eq!(meta(store, &batch_id).await.skipped, 0);
}

pub async fn case_a_key_written_before_its_writer_ended_is_not_hopeless(store: &dyn Store) {
    // Judged when the last writer ends: a key present then (written by a
    // client, or by the writer while it ran) is fine.
    let batch_id = id("written-before");
    let ops = vec![
        writer_of(&["k"]),
        NewOp {
            deps: 1,
            ..waiting_for(&["k"])
        },
    ];
    let mut ops = ops;
    ops[0].dependents = vec![1];
    store
        .create_batch(batch("written-before", ops))
        .await
        .expect("create");
    assert_eq!(put(store, &own(&batch_id), "k", b"v").await, 1);
    let outcome = run_one(store, &batch_id, 0).await;
    assert_eq!(outcome.became_ready, 1);
    assert_eq!(
        states(store, &batch_id).await,
        vec![OpState::Succeeded, OpState::Ready]
    );
}

pub async fn case_add_ops_judges_waits_on_keys_whose_writers_ended(store: &dyn Store) {
    use EventKind::*;
    let batch_id = id("grow-hopeless");
    // Op 1 keeps the batch running.
    store
        .create_batch(batch("grow-hopeless", vec![writer_of(&["k"]), op(0, &[])]))
        .await
        .expect("create");
    let running = store
        .claim(&batch_id, 10, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(running, vec![claimed(0, 1), claimed(1, 1)]);
    store
        .complete(&batch_id, &[permanent(running[0], "boom")], NOW + 20)
        .await
        .expect("complete");
    // An op added later that waits for k is skipped at once, with the op
    // that runs after it; an op waiting for a key a new op writes waits.
    let added = vec![
        waiting_for(&["k"]),
        NewOp {
            deps: 1,
            after: vec![2],
            ..op(1, &[])
        },
        writer_of(&["j"]),
        waiting_for(&["j"]),
    ];
    let outcome = store
        .add_ops(&batch_id, 2, added, b"more".to_vec(), "", NOW + 30, None)
        .await
        .expect("add_ops");
    assert_eq!(outcome.became_ready, 1);
    assert_eq!(outcome.finished, None);
    assert_eq!(
        states(store, &batch_id).await,
        vec![
            OpState::Failed,
            OpState::Running,
            OpState::Skipped,
            OpState::Skipped,
            OpState::Ready,
            OpState::Waiting
        ]
    );
    let errors_now = errors(store, &batch_id).await;
    assert_eq!(
        errors_now[2],
        "key `k` will never be written: its writer `0` failed"
    );
    assert_eq!(errors_now[3], "dependency `2` skipped");
    let shapes = event_shapes(store, &batch_id).await;
    assert_eq!(
        shapes[shapes.len() - 3..],
        [
            (OpsAdded, None, 0),
            (OpSkipped, Some(2), 0),
            (OpSkipped, Some(3), 0)
        ]
    );
    // A new writer of k makes it worth waiting for again.
    let outcome = store
        .add_ops(
            &batch_id,
            6,
            vec![writer_of(&["k"]), waiting_for(&["k"])],
            b"again".to_vec(),
            "",
            NOW + 40,
            None,
        )
        .await
        .expect("add_ops");
    assert_eq!(outcome.became_ready, 1);
    assert_eq!(
        states(store, &batch_id).await[6..],
        [OpState::Ready, OpState::Waiting]
    );
    // j's writer fails: its waiter goes; the batch ends when the rest do.
    let next = store
        .claim(&batch_id, 10, NOW + 41, LEASE)
        .await
        .expect("claim");
    assert_eq!(next, vec![claimed(4, 1), claimed(6, 1)]);
    let outcome = store
        .complete(
            &batch_id,
            &[
                permanent(next[0], "no j"),
                permanent(next[1], "no k"),
                success(running[1]),
            ],
            NOW + 50,
        )
        .await
        .expect("complete");
    assert_eq!(outcome.finished, Some(BatchState::Failed));
    assert_eq!(
        states(store, &batch_id).await[4..],
        [
            OpState::Failed,
            OpState::Skipped,
            OpState::Failed,
            OpState::Skipped
        ]
    );
}

pub async fn case_lost_and_expired_writers_skip_their_waiters_too(store: &dyn Store) {
    // Every verb that ends an op judges its keys: here expire_leases and
    // expire_waits, and a writer skipped because its dependency failed.
    let batch_id = id("other-verbs");
    let ops = vec![
        NewOp {
            dependents: vec![1],
            // Not retried on a lost worker, whatever the default.
            retry: RetryPolicy {
                on_lost_worker: false,
                ..RetryPolicy::DEFAULT
            },
            ..writer_of(&["x"])
        },
        NewOp {
            deps: 1,
            ..writer_of(&["y"])
        },
        waiting_for(&["y"]),
        NewOp {
            wait_deadline_ms: NOW + 100,
            ..NewOp {
                writes: vec!["z".to_owned()],
                ..waiting_for(&["never"])
            }
        },
        waiting_for(&["z"]),
    ];
    store
        .create_batch(batch("other-verbs", ops))
        .await
        .expect("create");
    let fence = hold(store, &batch_id, NOW).await;
    let running = store
        .claim(&batch_id, 10, NOW + 1, NOW + 50)
        .await
        .expect("claim");
    assert_eq!(running, vec![claimed(0, 1)]);
    // Op 0's worker is lost (one attempt): op 1, y's writer, is skipped,
    // so op 2 goes too.
    let outcome = store
        .expire_leases(&batch_id, NOW + 60, &fence)
        .await
        .expect("expire_leases");
    assert_eq!(outcome.recorded, 1);
    // Op 3 (z's writer) never gets its key: op 4 goes with it.
    let outcome = store
        .expire_waits(&batch_id, NOW + 200, &fence)
        .await
        .expect("expire_waits");
    assert_eq!(outcome.recorded, 1);
    assert_eq!(outcome.finished, Some(BatchState::Failed));
    assert_eq!(
        states(store, &batch_id).await,
        vec![
            OpState::Failed,
            OpState::Skipped,
            OpState::Skipped,
            OpState::Failed,
            OpState::Skipped
        ]
    );
    let errors_now = errors(store, &batch_id).await;
    assert_eq!(errors_now[1], "dependency `0` failed");
    assert_eq!(
        errors_now[2],
        "key `y` will never be written: its writer `1` was skipped"
    );
    assert_eq!(
        errors_now[4],
        "key `z` will never be written: its writer `3` failed"
    );
}

pub async fn case_shared_namespace_keys_are_never_judged(store: &dyn Store) {
    let batch_id = id("shared-writers");
    store
        .create_batch(shared_batch(
            "shared-writers",
            "judged-not",
            vec![writer_of(&["k"]), waiting_for(&["k"])],
        ))
        .await
        .expect("create");
    let writer = claim_one(store, &batch_id, 0).await;
    store
        .complete(&batch_id, &[permanent(writer, "boom")], NOW + 20)
        .await
        .expect("complete");
    // Another batch or a client may still write it.
    assert_eq!(
        states(store, &batch_id).await,
        vec![OpState::Failed, OpState::Waiting]
    );
    assert_eq!(put(store, &shared("judged-not"), "k", b"v").await, 1);
    assert_eq!(
        states(store, &batch_id).await,
        vec![OpState::Failed, OpState::Ready]
    );
}

pub async fn case_shared_store_as_is_written_once_even_when_resent(store: &dyn Store) {
    let scope = shared("once");
    let producer = id("once-producer");
    store
        .create_batch(shared_batch(
            "once-producer",
            "once",
            vec![op(0, &[]), op(0, &[])],
        ))
        .await
        .expect("create");
    let running = store
        .claim(&producer, 10, NOW + 1, LEASE)
        .await
        .expect("claim");
    let completion = Completion {
        output: "v1".to_owned(),
        store_as: Some("result".to_owned()),
        ..success(running[0])
    };
    store
        .complete(&producer, std::slice::from_ref(&completion), NOW + 20)
        .await
        .expect("complete");
    assert_eq!(
        store
            .outboxes_pending(std::slice::from_ref(&producer))
            .await
            .expect("pending"),
        Vec::<BatchId>::new()
    );
    // The same result again (a worker resending it): stale, no new write.
    let again = store
        .complete(&producer, &[completion], NOW + 30)
        .await
        .expect("complete");
    assert_eq!(again.stale, vec![0]);
    assert_eq!(
        store
            .drain_outbox(&producer, NOW + 40)
            .await
            .expect("drain"),
        0
    );
    let changes = store
        .memory_changes(&scope, "", 0, 10)
        .await
        .expect("changes");
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].version, 1);
    assert_eq!(get(store, &scope, "result").await, Some(b"v1".to_vec()));
    // Unknown batches have nothing to drain.
    assert_eq!(
        store.drain_outbox(&id("nobody"), NOW).await.expect("drain"),
        0
    );
}

pub async fn case_an_any_group_with_an_undeclared_key_keeps_waiting(store: &dyn Store) {
    let batch_id = id("any-undeclared");
    store
        .create_batch(batch(
            "any-undeclared",
            vec![writer_of(&["a"]), waiting_for_any(&["a", "free"])],
        ))
        .await
        .expect("create");
    let writer = claim_one(store, &batch_id, 0).await;
    let outcome = store
        .complete(&batch_id, &[permanent(writer, "boom")], NOW + 20)
        .await
        .expect("complete");
    assert_eq!(outcome.finished, None);
    // `free` has no declared writer: a client may still write it.
    assert_eq!(
        states(store, &batch_id).await,
        vec![OpState::Failed, OpState::Waiting]
    );
    assert_eq!(put(store, &own(&batch_id), "free", b"1").await, 1);
    assert_eq!(
        states(store, &batch_id).await,
        vec![OpState::Failed, OpState::Ready]
    );
}
