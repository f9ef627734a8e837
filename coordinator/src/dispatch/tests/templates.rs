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
    broken.args_json = r#"{"v": "${memory.gone}"}"#.to_owned();
    let planned = harness
        .store_batch(batch(vec![broken, op("fine", "k")]))
        .await;
    let batch = planned.id.clone();
    // The key arrives (the op is ready), then is deleted before dispatch.
    put(&harness, &batch, "gone", b"here").await;
    harness
        .store
        .memory_delete(&MemoryScope::Batch(batch.clone()), "gone", None, now_ms())
        .await
        .expect("delete");
    harness.plans.insert(planned.clone());
    harness
        .dispatcher
        .handle(Command::BatchAdded(planned))
        .await;
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
    // Credits to claim with, but no worker for `gamma`.
    let _alpha = harness.join("alpha", &["alpha"], 1).await;
    let mut reads = op("reads", "gamma");
    reads.args_json = r#"{"v": "${memory.colour}"}"#.to_owned();
    let planned = harness.store_batch(batch(vec![reads])).await;
    let batch = planned.id.clone();
    put(&harness, &batch, "colour", b"red").await;
    harness.plans.insert(planned.clone());
    harness
        .dispatcher
        .handle(Command::BatchAdded(planned))
        .await;
    harness.step().await;
    assert_eq!(harness.parked(&batch), vec![0]);
    assert_eq!(harness.states(&batch).await, vec![OpState::Running]);

    // Filled when sent, not when claimed: the value of then.
    put(&harness, &batch, "colour", b"green").await;
    let mut worker = harness.join("w", &["gamma"], 1).await;
    harness.step().await;
    let sent = worker.assignments();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].args_json, r#"{"v":"green"}"#);
}

async fn put(harness: &Harness, batch: &BatchId, key: &str, value: &[u8]) {
    harness
        .store
        .memory_put(
            &MemoryScope::Batch(batch.clone()),
            key,
            value,
            &PutOptions::default(),
            now_ms(),
        )
        .await
        .expect("put");
}
