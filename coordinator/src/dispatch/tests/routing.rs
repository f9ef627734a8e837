//! Routing: by kind and labels, to the freest worker, parked or handed back
//! when no connected worker takes an op.

use std::time::Duration;

use volley_store::{OpState, Store, WorkerEntry};

use super::*;

#[tokio::test]
async fn an_op_goes_to_a_worker_that_runs_its_kind() {
    let mut harness = harness().await;
    let mut alpha = harness.join("alpha-worker", &["alpha"], 4).await;
    let mut beta = harness.join("beta-worker", &["beta"], 4).await;
    let batch = harness.submit(batch(vec![op("b", "beta")])).await;
    harness.step().await;

    assert!(alpha.assignments().is_empty(), "alpha runs no beta ops");
    let sent = beta.assignments();
    assert_eq!(sent.len(), 1);
    let assignment = &sent[0];
    assert_eq!(assignment.batch_id, batch.as_str());
    assert_eq!(
        (
            assignment.op_index,
            assignment.op_id.as_str(),
            assignment.kind.as_str()
        ),
        (0, "b", "beta")
    );
    assert_eq!(assignment.attempt, 1);
    assert_eq!(assignment.args_json, "{}");
    assert_eq!(harness.states(&batch).await, vec![OpState::Running]);
    assert_eq!(harness.busy_of("beta-worker"), Some(1));
    assert_eq!(harness.in_flight(&batch), Some(1));
    // Written in the session's ledger before it was sent.
    assert!(beta.ledger.take(batch.as_str(), 0, 1));
}

#[tokio::test]
async fn required_labels_pick_the_worker() {
    let mut harness = harness().await;
    let mut plain = harness.join("plain", &["train"], 4).await;
    let mut other_gpu = harness
        .join_labelled("t4", &["train"], &[("gpu", "t4")], 4)
        .await;
    let mut gpu = harness
        .join_labelled("a100", &["train"], &[("gpu", "a100"), ("zone", "x")], 1)
        .await;
    let mut train = op("train", "train");
    train.requires.insert("gpu".to_owned(), "a100".to_owned());
    harness
        .submit(batch(vec![train, op("anywhere", "train")]))
        .await;
    harness.step().await;

    let to_gpu = gpu.assignments();
    assert_eq!(op_ids(&to_gpu), vec!["train"]);
    // The unlabelled op may go anywhere; the labelled one only to the a100.
    let elsewhere: Vec<v1::Assignment> = plain
        .assignments()
        .into_iter()
        .chain(other_gpu.assignments())
        .collect();
    assert_eq!(op_ids(&elsewhere), vec!["anywhere"]);
}

#[tokio::test]
async fn the_worker_with_the_most_free_slots_gets_the_op() {
    let mut harness = harness().await;
    let mut small = harness.join("small", &["k"], 1).await;
    let mut large = harness.join("large", &["k"], 3).await;
    harness.submit(batch(vec![op("a", "k")])).await;
    harness.step().await;
    assert!(small.assignments().is_empty());
    assert_eq!(op_ids(&large.assignments()), vec!["a"]);
}

#[tokio::test]
async fn one_claim_goes_to_a_worker_as_one_message() {
    let mut harness = harness().await;
    let mut worker = harness.join("w", &["k"], 8).await;
    harness.submit(batch(ops(5, "k"))).await;
    harness.step().await;
    assert_eq!(worker.pending_messages(), 1);
    assert_eq!(worker.assignments().len(), 5);
}

#[tokio::test]
async fn an_op_no_worker_runs_is_parked_until_one_connects() {
    let mut harness = harness().await;
    let mut other = harness.join("other", &["alpha"], 2).await;
    let batch = harness.submit(batch(vec![op("g", "gamma")])).await;
    harness.step().await;

    assert!(other.assignments().is_empty());
    // Claimed (running in the store, leased to us) and parked here.
    assert_eq!(harness.states(&batch).await, vec![OpState::Running]);
    assert_eq!(harness.parked(&batch), vec![0]);
    assert_eq!(harness.in_flight(&batch), Some(1));
    let why = harness.dispatcher.why(&batch, 0);
    assert!(why.parked);
    assert!(
        why.reasons
            .iter()
            .any(|reason| reason.contains("no live worker runs `gamma` ops")),
        "{:?}",
        why.reasons
    );

    let mut gamma = harness.join("gamma-worker", &["gamma"], 1).await;
    harness.step().await;
    let sent = gamma.assignments();
    // The same attempt: parking does not cost one.
    assert_eq!(
        sent.iter()
            .map(|assignment| (assignment.op_id.as_str(), assignment.attempt))
            .collect::<Vec<_>>(),
        vec![("g", 1)]
    );
    assert!(harness.parked(&batch).is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_op_only_another_coordinators_workers_run_is_handed_back() {
    let mut harness = harness().await;
    // A worker of another coordinator runs `gamma`; ours run `alpha`.
    harness
        .store
        .publish_workers(
            "elsewhere",
            &[WorkerEntry {
                worker_id: "far".to_owned(),
                kinds: vec!["gamma".to_owned()],
                labels: BTreeMap::new(),
                slots: 4,
                busy: 0,
                draining: false,
            }],
            now_ms() + 60_000,
        )
        .await
        .expect("publish");
    let mut ours = harness.join("near", &["alpha"], 2).await;
    let batch = harness.submit(batch(vec![op("g", "gamma")])).await;
    harness.step().await;

    assert!(ours.assignments().is_empty());
    // Back on the queue for the other coordinator, not parked here.
    assert_eq!(harness.states(&batch).await, vec![OpState::Ready]);
    assert!(harness.parked(&batch).is_empty());
    assert_eq!(harness.in_flight(&batch), Some(0));
    let active = &harness.dispatcher.batches[&batch];
    assert!(active.claim_after.is_some(), "claims hold off");
    assert_eq!(active.hold_off, Duration::from_millis(500), "doubled");

    // Held off: another step claims nothing.
    harness.dispatcher.mark_all_ready();
    harness.step().await;
    assert_eq!(harness.states(&batch).await, vec![OpState::Ready]);
    let attempts = harness.records(&batch).await[0].attempts;

    // After the pause it claims (and hands back) again, pausing longer.
    tokio::time::advance(Duration::from_millis(300)).await;
    harness.dispatcher.mark_all_ready();
    harness.step().await;
    assert_eq!(harness.states(&batch).await, vec![OpState::Ready]);
    assert!(harness.records(&batch).await[0].attempts >= attempts);
    assert_eq!(
        harness.dispatcher.batches[&batch].hold_off,
        Duration::from_secs(1)
    );
}

#[tokio::test]
async fn a_worker_that_does_not_take_assignments_is_dropped() {
    let mut harness = harness_with(CoordinatorConfig {
        reconnect_grace: Duration::ZERO,
        ..config()
    })
    .await;
    // Its channel holds one message, and one is already waiting in it.
    let mut stuck = harness
        .join_with("stuck", &["k"], &[], 2, Vec::new(), 1)
        .await;
    let batch = harness.submit(batch(vec![op("a", "k")])).await;
    let filler = v1::CoordinatorMessage { msg: None };
    harness
        .dispatcher
        .workers
        .get(&stuck.conn)
        .expect("joined")
        .outbound
        .try_send(filler)
        .expect("room for one");
    harness.step().await;

    assert!(harness.worker_ids().is_empty(), "dropped");
    assert!(stuck.assignments().is_empty());
    assert_eq!(harness.in_flight(&batch), Some(0));
    // Its lease now ends at once: the owner's tick runs the op again.
    let fence = harness
        .store
        .hold_batch(&batch, HERE, 5_000, now_ms())
        .await
        .expect("hold")
        .expect("free to hold");
    let outcome = harness
        .store
        .expire_leases(&batch, now_ms() + 1, &fence)
        .await
        .expect("expire");
    assert_eq!(outcome.retried, vec![0]);
}
