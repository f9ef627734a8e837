//! `op_summaries`: every op's state and timings without its output.

use super::*;

/// Summaries agree with the records they summarise (the error's first line,
/// bounded on a character boundary; a skip's cause as data), whatever the
/// range, and an unknown batch is `BatchNotFound`.
pub async fn case_op_summaries_agree_with_records(store: &dyn Store) {
    let batch_id = id("summaries");
    // 0 succeeds with a large output, 1 fails (so 2 is skipped), 3 runs,
    // 4 never starts (its dependency 3 still runs).
    store
        .create_batch(batch(
            "summaries",
            vec![op(0, &[]), op(0, &[2]), op(1, &[]), op(0, &[4]), op(1, &[])],
        ))
        .await
        .expect("create");
    let claimed = store
        .claim(&batch_id, 10, NOW + 1, LEASE)
        .await
        .expect("claim");
    let by_index = |index: u32| {
        claimed
            .iter()
            .copied()
            .find(|claim| claim.index == index)
            .expect("op claimed")
    };
    let mut large = success(by_index(0));
    large.output = "x".repeat(300_000);
    // A first line longer than the bound, with a multi-byte character
    // across it, then `\r\n` and more lines.
    let long_line = format!("{}é€ and then some", "e".repeat(198));
    let failed = failure(by_index(1), &format!("{long_line}\r\nsecond line\nthird"));
    store
        .complete(&batch_id, &[large, failed], NOW + 20)
        .await
        .expect("complete");

    let records = store.op_records(&batch_id).await.expect("records");
    let expected: Vec<OpSummary> = records.iter().map(OpSummary::of_record).collect();
    let summaries = store
        .op_summaries(&batch_id, 0..u32::MAX)
        .await
        .expect("summaries");
    assert_eq!(summaries, expected);
    assert_eq!(
        summaries.iter().map(|row| row.state).collect::<Vec<_>>(),
        vec![
            OpState::Succeeded,
            OpState::Failed,
            OpState::Skipped,
            OpState::Running,
            OpState::Waiting,
        ]
    );
    assert_eq!(summaries[0].worker, "w1");
    assert_eq!(
        (summaries[0].started_ms, summaries[0].duration_ms),
        (NOW + 10, 7)
    );
    assert_eq!(
        summaries[1].error_first_line,
        format!("{}é", "e".repeat(198))
    );
    assert!(summaries[1].error_first_line.len() <= SUMMARY_ERROR_MAX_BYTES);
    assert!(summaries[2].cause.is_some(), "a skip names its cause");

    assert_eq!(
        store.op_summaries(&batch_id, 1..3).await.expect("a slice"),
        expected[1..3].to_vec()
    );
    assert_eq!(
        store
            .op_summaries(&batch_id, 3..99)
            .await
            .expect("past the end"),
        expected[3..].to_vec()
    );
    assert!(
        store
            .op_summaries(&batch_id, 7..9)
            .await
            .expect("wholly past the end")
            .is_empty()
    );
    assert!(matches!(
        store.op_summaries(&id("no-such-batch"), 0..10).await,
        Err(StoreError::BatchNotFound(_))
    ));
}

/// A batch larger than one read slice comes back whole and in order.
pub async fn case_op_summaries_cross_slices(store: &dyn Store) {
    let batch_id = id("summaries-large");
    let total = 12_345u32;
    store
        .create_batch(batch(
            "summaries-large",
            (0..total).map(|_| op(0, &[])).collect(),
        ))
        .await
        .expect("create");
    let claimed = store
        .claim(&batch_id, 100, NOW + 1, LEASE)
        .await
        .expect("claim");
    let done: Vec<Completion> = claimed.iter().copied().map(success).collect();
    store
        .complete(&batch_id, &done, NOW + 20)
        .await
        .expect("complete");
    let records = store.op_records(&batch_id).await.expect("records");
    let expected: Vec<OpSummary> = records.iter().map(OpSummary::of_record).collect();
    let summaries = store
        .op_summaries(&batch_id, 0..total)
        .await
        .expect("summaries");
    assert_eq!(summaries.len(), total as usize);
    assert_eq!(summaries, expected);
    assert_eq!(
        store
            .op_summaries(&batch_id, 4_990..10_010)
            .await
            .expect("a slice across chunks"),
        expected[4_990..10_010].to_vec()
    );
}

/// The meta's sequential time is the sum of the ops' durations as they end,
/// on every path that ends one (a slice of successes, a final failure), and
/// `list_batches` carries it too.
pub async fn case_sequential_time_is_kept_with_the_meta(store: &dyn Store) {
    let batch_id = id("sequential-sum");
    // 0, 1 and 2 independent; 3 after 2.
    store
        .create_batch(batch(
            "sequential-sum",
            vec![op(0, &[]), op(0, &[]), op(0, &[3]), op(1, &[])],
        ))
        .await
        .expect("create");
    assert_eq!(meta(store, &batch_id).await.sequential_ms, 0);
    let claimed = store
        .claim(&batch_id, 10, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 3);
    let completions: Vec<Completion> = claimed
        .iter()
        .map(|claim| match claim.index {
            // A success of its own duration and a plain one (7 ms), written
            // together; a final failure, written on its own.
            0 => Completion {
                duration_ms: 1_000,
                ..success(*claim)
            },
            1 => success(*claim),
            _ => Completion {
                duration_ms: 30,
                ..failure(*claim, "boom")
            },
        })
        .collect();
    store
        .complete(&batch_id, &completions, NOW + 20)
        .await
        .expect("complete");
    let durations: u64 = store
        .op_durations(&batch_id)
        .await
        .expect("durations")
        .iter()
        .sum();
    assert_eq!(durations, 1_037);
    let after = meta(store, &batch_id).await;
    assert_eq!(after.sequential_ms, durations);
    assert_eq!(after.state, BatchState::Failed, "3 was skipped");
    let listed = store
        .list_batches(10, None)
        .await
        .expect("list")
        .into_iter()
        .find(|listed| listed.id == batch_id)
        .expect("listed");
    assert_eq!(listed.sequential_ms, 1_037);
}
