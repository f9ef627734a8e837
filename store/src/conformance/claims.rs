//! Conformance cases of claims: dependencies counting down, priorities
//! then FIFO, the caps of a claim (`max`, `max_parallel`), and reading
//! the records of the ops claimed.

use super::*;

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
                cause: None,
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
