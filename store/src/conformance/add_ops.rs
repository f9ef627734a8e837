//! Conformance cases of `add_ops`: growing a running batch.

use super::*;

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
