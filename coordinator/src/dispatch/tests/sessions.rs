//! Worker sessions: leaving cleanly or not, draining, going silent,
//! reconnecting with ops still running, and results that are not theirs.

use std::time::Duration;

use volley_store::{Claimed, OpState, Store};

use super::*;

#[tokio::test]
async fn a_worker_that_leaves_cleanly_hands_back_what_it_never_started() {
    let mut harness = harness().await;
    let mut leaving = harness.join("leaving", &["k"], 2).await;
    let batch = harness.submit(batch(ops(2, "k"))).await;
    harness.step().await;
    assert_eq!(leaving.assignments().len(), 2);

    harness
        .dispatcher
        .handle(Command::WorkerLeft {
            conn: leaving.conn,
            clean: true,
        })
        .await;
    assert!(harness.worker_ids().is_empty());
    assert_eq!(harness.in_flight(&batch), Some(0));
    assert_eq!(
        harness.states(&batch).await,
        vec![OpState::Ready, OpState::Ready]
    );

    // The next worker gets them, as new attempts (a late result of the
    // old ones is stale).
    let mut next = harness.join("next", &["k"], 2).await;
    harness.step().await;
    let sent = next.assignments();
    assert_eq!(op_ids(&sent), vec!["op0", "op1"]);
    assert!(sent.iter().all(|assignment| assignment.attempt == 2));
}

#[tokio::test]
async fn a_worker_whose_stream_broke_keeps_its_ops_for_the_grace_period() {
    let mut harness = harness_with(CoordinatorConfig {
        reconnect_grace: Duration::ZERO,
        ..config()
    })
    .await;
    let mut broken = harness.join("broken", &["k"], 1).await;
    let batch = harness.submit(batch(vec![op("a", "k")])).await;
    harness.step().await;
    assert_eq!(broken.assignments().len(), 1);

    harness
        .dispatcher
        .handle(Command::WorkerLeft {
            conn: broken.conn,
            clean: false,
        })
        .await;
    // Still running in the store: it may reconnect and carry on.
    assert_eq!(harness.states(&batch).await, vec![OpState::Running]);
    assert_eq!(harness.in_flight(&batch), Some(0));

    // The grace ran out: the owner's tick runs the op again.
    tokio::time::sleep(Duration::from_millis(2)).await;
    let mut next = harness.join("next", &["k"], 1).await;
    harness.tick().await;
    let sent = next.assignments();
    assert_eq!(op_ids(&sent), vec!["a"]);
    assert_eq!(sent[0].attempt, 2);
}

#[tokio::test]
async fn a_reconnecting_worker_keeps_its_ops_and_their_results_count() {
    let mut harness = harness().await;
    let mut first = harness.join("w", &["k"], 2).await;
    let batch = harness.submit(batch(vec![op("a", "k")])).await;
    harness.step().await;
    let sent = first.assignments();
    harness
        .dispatcher
        .handle(Command::WorkerLeft {
            conn: first.conn,
            clean: false,
        })
        .await;

    // It comes back (here) and shows what it still runs: adopted.
    let again = harness
        .join_with(
            "w",
            &["k"],
            &[],
            2,
            vec![(
                batch.clone(),
                Claimed {
                    index: 0,
                    attempt: sent[0].attempt,
                },
            )],
            64,
        )
        .await;
    harness.step().await;
    assert_eq!(again.pending_messages(), 0, "neither re-sent nor stopped");
    assert_eq!(harness.in_flight(&batch), Some(1));
    assert_eq!(harness.busy_of("w"), Some(1));

    let outcome = harness.report(&again, &sent, true, "done").await;
    assert!(outcome.stale.is_empty());
    assert_eq!(
        harness.batch_state(&batch).await,
        volley_store::BatchState::Succeeded
    );
    assert_eq!(harness.in_flight(&batch), None, "finished: forgotten");
    assert_eq!(harness.busy_of("w"), Some(0));
}

#[tokio::test]
async fn an_adopted_attempt_that_already_ended_is_stopped() {
    let mut harness = harness().await;
    let batch = harness.submit(batch(vec![op("a", "k")])).await;
    // It says it runs attempt 7, which the store never handed out.
    let mut worker = harness
        .join_with(
            "w",
            &["k"],
            &[],
            2,
            vec![(
                batch.clone(),
                Claimed {
                    index: 0,
                    attempt: 7,
                },
            )],
            64,
        )
        .await;
    assert_eq!(worker.cancels(), vec![(batch.to_string(), 0, 7)]);
}

#[tokio::test]
async fn a_draining_worker_gets_no_more_work() {
    let mut harness = harness().await;
    let mut draining = harness.join("draining", &["k"], 4).await;
    let mut staying = harness.join("staying", &["k"], 1).await;
    harness
        .dispatcher
        .handle(Command::Draining {
            conn: draining.conn,
        })
        .await;
    assert_eq!(harness.dispatcher.free_credits(), 1);
    let batch = harness.submit(batch(ops(3, "k"))).await;
    harness.step().await;

    assert!(draining.assignments().is_empty());
    assert_eq!(staying.assignments().len(), 1);
    assert_eq!(harness.in_flight(&batch), Some(1));
    let why = harness.dispatcher.why(&batch, 2);
    assert!(
        why.reasons.iter().any(|reason| reason.contains("are busy")),
        "{:?}",
        why.reasons
    );
}

#[tokio::test]
async fn a_draining_worker_hands_back_and_another_takes_over() {
    let mut harness = harness().await;
    let mut draining = harness.join("draining", &["k"], 2).await;
    let batch = harness.submit(batch(ops(2, "k"))).await;
    harness.step().await;
    let sent = draining.assignments();
    assert_eq!(sent.len(), 2);

    // It says it drains, returns one op unstarted, finishes the other.
    harness
        .dispatcher
        .handle(Command::Draining {
            conn: draining.conn,
        })
        .await;
    harness.report(&draining, &sent[..1], true, "").await;
    let mut successor = harness.join("successor", &["k"], 2).await;
    harness
        .dispatcher
        .handle(Command::WorkerLeft {
            conn: draining.conn,
            clean: true,
        })
        .await;
    harness.step().await;
    assert_eq!(
        op_ids(&successor.assignments()),
        vec![sent[1].op_id.clone()]
    );
    assert!(draining.assignments().is_empty());
    assert_eq!(harness.in_flight(&batch), Some(1));
}

#[tokio::test(start_paused = true)]
async fn a_silent_worker_is_dropped_and_its_ops_run_again() {
    let mut harness = harness().await;
    let mut silent = harness.join("silent", &["k"], 1).await;
    let batch = harness.submit(batch(vec![op("a", "k")])).await;
    harness.step().await;
    assert_eq!(silent.assignments().len(), 1);

    tokio::time::advance(Duration::from_secs(16)).await;
    harness.tick().await;
    assert!(harness.worker_ids().is_empty());
    // Its lease was ended and expired by the owner (us): ready again.
    assert_eq!(harness.states(&batch).await, vec![OpState::Ready]);
    assert_eq!(harness.in_flight(&batch), Some(0));
}

#[tokio::test(start_paused = true)]
async fn a_worker_is_not_judged_silent_while_the_store_is_away() {
    let mut harness = harness().await;
    let mut worker = harness.join("waits-on-the-store", &["k"], 1).await;
    let batch = harness.submit(batch(vec![op("a", "k")])).await;
    harness.step().await;
    assert_eq!(worker.assignments().len(), 1);

    // Its session waits for the store to record its results: unheard.
    harness.dispatcher.store_down = true;
    tokio::time::advance(Duration::from_secs(16)).await;
    harness.dispatcher.drop_silent_workers().await;
    assert_eq!(
        harness.worker_ids(),
        HashSet::from(["waits-on-the-store".to_owned()])
    );
    // The store is back: silence is counted from now, not from before.
    harness.dispatcher.check_epoch().await;
    assert!(!harness.dispatcher.store_down);
    harness.dispatcher.drop_silent_workers().await;
    assert_eq!(harness.worker_ids().len(), 1);
    assert_eq!(harness.states(&batch).await, vec![OpState::Running]);
    // Still silent a whole lease later: dropped, as any silent worker.
    tokio::time::advance(Duration::from_secs(16)).await;
    harness.tick().await;
    assert!(harness.worker_ids().is_empty());
}

#[tokio::test(start_paused = true)]
async fn heartbeats_keep_a_worker() {
    let mut harness = harness().await;
    let worker = harness.join("alive", &["k"], 1).await;
    for _ in 0..3 {
        tokio::time::advance(Duration::from_secs(10)).await;
        harness
            .dispatcher
            .handle(Command::Heartbeat { conn: worker.conn })
            .await;
        harness.tick().await;
    }
    assert_eq!(harness.worker_ids(), HashSet::from(["alive".to_owned()]));
}

#[tokio::test]
async fn a_result_for_another_attempt_or_op_is_not_the_sessions() {
    let mut harness = harness().await;
    let mut worker = harness.join("w", &["k"], 1).await;
    let batch = harness.submit(batch(ops(2, "k"))).await;
    harness.step().await;
    let sent = worker.assignments();
    assert_eq!(sent.len(), 1);
    let index = sent[0].op_index;

    // The session refuses what it was not given: another attempt, another
    // op, another batch.
    assert!(!worker.ledger.take(batch.as_str(), index, 2));
    assert!(!worker.ledger.take(batch.as_str(), 1 - index, 1));
    assert!(!worker.ledger.take("batch-other", index, 1));
    // And the store drops a stale attempt even if one got through.
    let outcome = harness
        .store
        .complete(
            &batch,
            &[Completion {
                index,
                attempt: 2,
                ok: true,
                ..Completion::default()
            }],
            now_ms(),
        )
        .await
        .expect("complete");
    assert_eq!(outcome.stale, vec![index]);
    assert_eq!(
        harness.states(&batch).await[index as usize],
        OpState::Running
    );
    // The real result still counts.
    harness.report(&worker, &sent, true, "").await;
    assert_eq!(
        harness.states(&batch).await[index as usize],
        OpState::Succeeded
    );
}

#[tokio::test]
async fn results_from_an_unknown_session_or_batch_change_nothing() {
    let mut harness = harness().await;
    let mut worker = harness.join("w", &["k"], 1).await;
    let batch = harness.submit(batch(ops(2, "k"))).await;
    harness.step().await;
    assert_eq!(worker.assignments().len(), 1);

    harness
        .dispatcher
        .handle(Command::Completed {
            conn: 9_999,
            returned: 1,
            per_batch: vec![BatchResults {
                batch: BatchId::new("batch-unknown"),
                indices: vec![0],
                outcome: None,
            }],
        })
        .await;
    assert_eq!(harness.busy_of("w"), Some(1));
    assert_eq!(harness.in_flight(&batch), Some(1));
    harness.step().await;
    assert!(worker.assignments().is_empty(), "no credit came back");
}

#[tokio::test]
async fn list_workers_reports_slots_and_busy_ones() {
    let mut harness = harness().await;
    let worker = harness
        .join_labelled("w", &["k", "j"], &[("zone", "x")], 3)
        .await;
    harness.submit(batch(ops(2, "k"))).await;
    harness.step().await;
    let handle = harness.dispatcher.handle.clone();
    let workers = handle.workers();
    // The handle's reply comes from the loop: answer it here.
    let (listed, ()) = tokio::join!(workers, async {
        tokio::task::yield_now().await;
        let command =
            tokio::time::timeout(Duration::from_secs(5), harness.dispatcher.commands.recv())
                .await
                .expect("the request comes")
                .expect("a command");
        harness.dispatcher.handle(command).await;
    });
    assert_eq!(listed.len(), 1);
    let info = &listed[0];
    assert_eq!((info.slots, info.busy), (3, 2));
    assert_eq!(info.coordinator, HERE);
    assert_eq!(info.labels.get("zone").map(String::as_str), Some("x"));
    let mut kinds = info.kinds.clone();
    kinds.sort();
    assert_eq!(kinds, vec!["j", "k"]);
    assert!(!info.draining);
    // Once it hands work back it is listed as draining.
    harness
        .dispatcher
        .handle(Command::Draining { conn: worker.conn })
        .await;
    assert!(harness.dispatcher.list_workers()[0].draining);
    // The kinds they run are published for the planner.
    let known = harness.kinds.read().expect("kinds");
    assert!(known.contains("j") && known.contains("k") && !known.contains("z"));
}
