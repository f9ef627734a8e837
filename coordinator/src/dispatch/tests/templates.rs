//! Templates: `${ops.X.output}` and `${memory.K}` filled in at dispatch;
//! args that cannot be filled fail the op for good.

use volley_store::{MemoryScope, OpState, PutOptions, Store};

use super::*;

#[tokio::test]
async fn a_dependency_s_output_is_filled_in() {
    let mut harness = harness().await;
    let mut worker = harness.join("w", &["k"], 2).await;
    let mut second = op("second", "k");
    second.args_json = r#"{"greeting": "${ops.first.output}!"}"#.to_owned();
    harness.submit(batch(vec![op("first", "k"), second])).await;
    harness.step().await;
    let sent = worker.assignments();
    assert_eq!(op_ids(&sent), vec!["first"]);

    // Its result readies the next op, which the next round sends.
    let outcome = harness.report(&worker, &sent, true, "hello\n").await;
    assert_eq!(outcome.became_ready, 1);
    harness.step().await;
    let sent = worker.assignments();
    assert_eq!(op_ids(&sent), vec!["second"]);
    let args: serde_json::Value = serde_json::from_str(&sent[0].args_json).expect("json");
    assert_eq!(args["greeting"], "hello!");
}

#[tokio::test]
async fn a_memory_value_is_filled_in() {
    let mut harness = harness().await;
    let mut worker = harness.join("w", &["k"], 4).await;
    let mut reads = op("reads", "k");
    reads.args_json = r#"{"v": "${memory.colour}"}"#.to_owned();
    let mut also = op("also", "k");
    also.args_json = r#"{"v": "${memory.colour}-too"}"#.to_owned();
    let planned = harness.store_batch(batch(vec![reads, also])).await;
    harness
        .store
        .memory_put(
            &MemoryScope::Batch(planned.id.clone()),
            "colour",
            b"blue",
            &PutOptions::default(),
            now_ms(),
        )
        .await
        .expect("put");
    harness.plans.insert(planned.clone());
    harness
        .dispatcher
        .handle(Command::BatchAdded(planned))
        .await;
    harness.step().await;
    let mut values: Vec<String> = worker
        .assignments()
        .iter()
        .map(|assignment| {
            let args: serde_json::Value =
                serde_json::from_str(&assignment.args_json).expect("json");
            args["v"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    values.sort();
    assert_eq!(values, vec!["blue", "blue-too"]);
}

#[tokio::test]
async fn args_that_cannot_be_filled_fail_the_op_for_good() {
    let mut harness = harness().await;
    let mut worker = harness.join("w", &["k"], 2).await;
    let mut broken = op("broken", "k");
    broken.args_json = r#"{"v": "${memory.missing}"}"#.to_owned();
    let batch = harness.submit(batch(vec![broken, op("fine", "k")])).await;
    harness.step().await;

    assert_eq!(op_ids(&worker.assignments()), vec!["fine"]);
    let records = harness.records(&batch).await;
    assert_eq!(records[0].state, OpState::Failed);
    assert!(
        records[0].error.contains("cannot fill in the op's args"),
        "{}",
        records[0].error
    );
    assert_eq!(harness.in_flight(&batch), Some(1));
    assert_eq!(harness.busy_of("w"), Some(1), "no credit spent on it");
}

#[tokio::test]
async fn a_parked_op_s_args_are_filled_when_a_worker_takes_it() {
    let mut harness = harness().await;
    let mut reads = op("reads", "gamma");
    reads.args_json = r#"{"v": "${memory.later}"}"#.to_owned();
    let batch = harness.submit(batch(vec![reads])).await;
    harness.step().await;
    // Parked, not failed: nothing was filled in for it yet.
    assert_eq!(harness.parked(&batch), vec![0]);
    assert_eq!(harness.states(&batch).await, vec![OpState::Running]);

    harness
        .store
        .memory_put(
            &MemoryScope::Batch(batch.clone()),
            "later",
            b"now",
            &PutOptions::default(),
            now_ms(),
        )
        .await
        .expect("put");
    let mut worker = harness.join("w", &["gamma"], 1).await;
    harness.step().await;
    let sent = worker.assignments();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].args_json, r#"{"v":"now"}"#);
}
