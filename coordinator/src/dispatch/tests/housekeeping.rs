//! Housekeeping: leases renewed, deadlines and wait timeouts on time,
//! batches that end or come from elsewhere, holds, a store that restarted
//! empty, ops no worker runs reported blocked.

use std::time::Duration;

use volley_store::{BatchState, Doorbell, EventKind, OpState, Store};

use super::*;

#[tokio::test]
async fn the_tick_renews_the_leases_of_what_our_workers_run() {
    let mut harness = harness_with(CoordinatorConfig {
        lease: Duration::from_millis(200),
        ..config()
    })
    .await;
    let mut worker = harness.join("w", &["k"], 1).await;
    let batch = harness.submit(batch(vec![op("a", "k")])).await;
    let claimed_ms = now_ms();
    harness.step().await;
    assert_eq!(worker.assignments().len(), 1);

    tokio::time::sleep(Duration::from_millis(30)).await;
    harness.tick().await;
    let fence = harness
        .dispatcher
        .owned
        .get(&batch)
        .cloned()
        .expect("we own it");
    // Past the first lease, within the renewed one: nothing expires.
    let outcome = harness
        .store
        .expire_leases(&batch, claimed_ms + 215, &fence)
        .await
        .expect("expire");
    assert!(outcome.retried.is_empty() && outcome.recorded == 0);
    assert_eq!(harness.states(&batch).await, vec![OpState::Running]);
}

#[tokio::test]
async fn parked_ops_are_renewed_too_and_dropped_once_stale() {
    let mut harness = harness().await;
    // Credits to claim with, but no worker for `gamma`.
    let _alpha = harness.join("alpha", &["alpha"], 1).await;
    let batch = harness.submit(batch(vec![op("g", "gamma")])).await;
    harness.step().await;
    assert_eq!(harness.parked(&batch), vec![0]);

    // Another coordinator (the owner) ran it out meanwhile.
    let fence = harness
        .store
        .hold_batch(&batch, "owner", 60_000, now_ms())
        .await
        .expect("hold")
        .expect("free");
    harness
        .store
        .expire_leases(&batch, now_ms() + 20_000, &fence)
        .await
        .expect("expire");
    harness.dispatcher.renew_leases().await;
    assert!(harness.parked(&batch).is_empty(), "stale: dropped");
    assert_eq!(harness.in_flight(&batch), Some(0));
}

#[tokio::test]
async fn a_batch_deadline_fires_on_time_and_stops_its_ops() {
    let mut harness = harness().await;
    let mut worker = harness.join("w", &["k"], 1).await;
    let mut timed = batch(vec![op("a", "k")]);
    timed.deadline_ms = 20;
    let batch = harness.submit(timed).await;
    assert_eq!(
        harness.dispatcher.timers.len(),
        1,
        "a timer for the deadline"
    );
    harness.step().await;
    let sent = worker.assignments();
    assert_eq!(sent.len(), 1);

    tokio::time::sleep(Duration::from_millis(30)).await;
    harness.dispatcher.fire_timers().await;
    assert_ne!(harness.batch_state(&batch).await, BatchState::Running);
    assert_eq!(
        worker.cancels(),
        vec![(batch.to_string(), 0, sent[0].attempt)]
    );
    assert_eq!(harness.in_flight(&batch), None, "forgotten");
    assert!(harness.dispatcher.timers.is_empty());
}

#[tokio::test]
async fn a_wait_for_a_key_times_out_on_time() {
    let mut harness = harness().await;
    let _worker = harness.join("w", &["k"], 1).await;
    let mut waiting = op("waits", "k");
    waiting.wait_for = vec!["never".to_owned()];
    waiting.wait_timeout_ms = 20;
    let batch = harness.submit(batch(vec![waiting, op("free", "k")])).await;
    harness.step().await;
    assert_eq!(harness.states(&batch).await[0], OpState::Waiting);

    tokio::time::sleep(Duration::from_millis(30)).await;
    harness.dispatcher.fire_timers().await;
    assert_eq!(harness.states(&batch).await[0], OpState::Failed);
}

#[tokio::test]
async fn a_cancelled_batch_stops_its_ops_on_the_workers() {
    let mut harness = harness().await;
    let mut worker = harness.join("w", &["k"], 2).await;
    let batch = harness.submit(batch(ops(3, "k"))).await;
    harness.step().await;
    let sent = worker.assignments();
    assert_eq!(sent.len(), 2);

    let cancelled = harness
        .store
        .cancel(&batch, "by hand", now_ms())
        .await
        .expect("cancel");
    harness
        .dispatcher
        .handle(Command::BatchCancelled {
            batch: batch.clone(),
            running: cancelled.running,
        })
        .await;
    let mut stopped = worker.cancels();
    stopped.sort();
    let mut expected: Vec<(String, u32, u32)> = sent
        .iter()
        .map(|assignment| {
            (
                assignment.batch_id.clone(),
                assignment.op_index,
                assignment.attempt,
            )
        })
        .collect();
    expected.sort();
    assert_eq!(stopped, expected);
    assert_eq!(harness.in_flight(&batch), None);
}

#[tokio::test]
async fn a_batch_that_ended_elsewhere_is_stopped_here() {
    let mut harness = harness().await;
    let mut worker = harness.join("w", &["k"], 1).await;
    let batch = harness.submit(batch(vec![op("a", "k")])).await;
    harness.step().await;
    let sent = worker.assignments();
    harness.dispatcher.ring(Ok(Doorbell::Ended(batch.clone())));
    assert_eq!(
        worker.cancels(),
        vec![(batch.to_string(), 0, sent[0].attempt)]
    );
    assert_eq!(harness.in_flight(&batch), None);
}

#[tokio::test]
async fn a_batch_submitted_elsewhere_is_loaded_and_dispatched() {
    let mut harness = harness().await;
    let mut worker = harness.join("w", &["k"], 2).await;
    let planned = harness.store_batch(batch(ops(2, "k"))).await;
    harness
        .dispatcher
        .ring(Ok(Doorbell::Started(planned.id.clone())));
    // The plan is rebuilt from the stored spec on a task of its own.
    harness.settle().await;
    assert_eq!(op_ids(&worker.assignments()), vec!["op0", "op1"]);
    assert!(harness.plans.cached(&planned.id).is_some());
}

#[tokio::test]
async fn the_tick_finds_batches_submitted_elsewhere() {
    let mut harness = harness().await;
    let mut worker = harness.join("w", &["k"], 1).await;
    let planned = harness.store_batch(batch(vec![op("a", "k")])).await;
    harness.tick().await;
    // The plan is rebuilt from the stored spec on a task of its own.
    harness.settle().await;
    assert_eq!(worker.assignments().len(), 1);
    assert_eq!(harness.in_flight(&planned.id), Some(1));
}

#[tokio::test]
async fn the_tick_takes_the_hold_and_shutdown_releases_it() {
    let mut harness = harness().await;
    let batch = harness.submit(batch(vec![op("a", "k")])).await;
    harness.tick().await;
    assert!(harness.dispatcher.owned.contains_key(&batch));
    let taken = harness
        .store
        .hold_batch(&batch, "other", 5_000, now_ms())
        .await
        .expect("hold");
    assert!(taken.is_none(), "ours while we hold it");

    harness.dispatcher.release_holds().await;
    let taken = harness
        .store
        .hold_batch(&batch, "other", 5_000, now_ms())
        .await
        .expect("hold");
    assert!(taken.is_some(), "released at once");
}

#[tokio::test]
async fn batches_are_lost_when_the_store_restarted_empty() {
    let mut harness = harness().await;
    let mut worker = harness.join("w", &["k"], 1).await;
    let batch = harness.submit(batch(vec![op("a", "k")])).await;
    harness.step().await;
    let sent = worker.assignments();
    // One batch the dispatcher runs that the store does not have: gone
    // with the old store.
    let gone = BatchId::new("gone");
    let planned = replan(
        &gone,
        &StoredSpec {
            base: batch_of_one().encode_to_vec(),
            added: Vec::new(),
        },
    )
    .expect("plans");
    harness
        .dispatcher
        .handle(Command::BatchAdded(Arc::new(planned)))
        .await;
    // As if the epoch we started with were another store's.
    harness.dispatcher.epoch = "an earlier store".to_owned();
    harness.tick().await;

    assert_eq!(harness.batch_state(&gone).await, BatchState::Lost);
    assert_eq!(
        worker.cancels(),
        vec![(batch.to_string(), 0, sent[0].attempt)]
    );
    assert_eq!(harness.in_flight(&gone), None, "forgotten");
}

fn batch_of_one() -> v1::Batch {
    batch(vec![op("a", "k")])
}

#[tokio::test(start_paused = true)]
async fn an_op_no_live_worker_runs_is_reported_blocked_once() {
    let mut harness = harness().await;
    let _alpha = harness.join("alpha", &["gamma"], 1).await;
    let mut gpu = op("g", "gamma");
    gpu.requires.insert("gpu".to_owned(), "a100".to_owned());
    let batch = harness.submit(batch(vec![gpu])).await;
    harness.step().await;
    harness.tick().await;
    let blocked = |events: &[volley_store::Event]| {
        events
            .iter()
            .filter(|event| event.kind == EventKind::OpBlocked)
            .map(|event| event.message.clone())
            .collect::<Vec<_>>()
    };
    let events = harness.store.events(&batch, 0, 100).await.expect("events");
    assert!(blocked(&events).is_empty(), "not yet");

    tokio::time::advance(Duration::from_secs(11)).await;
    harness.tick().await;
    harness.tick().await;
    let events = harness.store.events(&batch, 0, 100).await.expect("events");
    assert_eq!(
        blocked(&events),
        vec!["no live worker runs `gamma` ops with labels gpu=a100; it waits until one connects"]
    );
    assert_eq!(harness.parked(&batch), vec![0], "still parked");
}
