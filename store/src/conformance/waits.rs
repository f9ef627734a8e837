//! Conformance cases of memory waits: ops unblocked by `store_as` and
//! puts, in their own and in shared scopes, `wait_for_any`, large batches
//! of waits, `op_waits`, and waits that expire.

use super::*;

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
