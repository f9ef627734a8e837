//! Several coordinators behind one address, proven with real processes: a
//! `redis-server`, two `volley coordinator`s behind a TCP balancer (what a
//! Kubernetes Service does), and `volley worker`s connected through it.
//! Every coordinator dispatches every batch to its own workers; one owns
//! each batch's timers and another takes it over when the owner dies or
//! stops; workers that lose their coordinator carry on through another, and
//! watch streams resume where they were. Nothing asserts how long anything
//! took: waits are for conditions, with generous deadlines.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::Fleet;
use futures::StreamExt;
use serde_json::json;
use volley_client::v1::{self, BatchState, EventKind, OpState};
use volley_client::{Client, Scope};
use volley_testkit::{RedisServer, wait_until};

/// Fast ticks; holds that run out quickly when their owner dies.
const FLAGS: &[&str] = &[
    "--resync-interval",
    "200ms",
    "--lease",
    "8s",
    "--ownership-ttl",
    "2s",
];

fn op(id: &str, kind: &str, args: serde_json::Value) -> v1::Op {
    v1::Op {
        attempts: 3,
        ..volley_testkit::op(id, kind, args)
    }
}

/// `sleepers` ops sleeping `ms` each, then `gated` echo ops that wait for
/// the memory key `go` (which the test writes when it is ready).
fn gated_batch(name: &str, sleepers: usize, ms: u64, gated: usize) -> v1::Batch {
    let mut ops = Vec::new();
    for index in 0..sleepers {
        ops.push(op(&format!("s{index}"), "sleep", json!({ "ms": ms })));
    }
    for index in 0..gated {
        let mut gate = op(
            &format!("g{index}"),
            "echo",
            json!({ "text": format!("gated {index} ${{memory.go}}") }),
        );
        gate.wait_for = vec!["go".to_owned()];
        ops.push(gate);
    }
    v1::Batch {
        name: name.to_owned(),
        ops,
        // The test writes `go` as a client.
        allow_unwritten: true,
        ..Default::default()
    }
}

/// The owner of a running batch, once it has one.
async fn owner_of(client: &Client, batch: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(status) = client.summary(batch).await
            && !status.owner.is_empty()
        {
            return status.owner;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the batch never had an owner"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Collects a batch's whole event stream through the balancer.
fn watch_all(client: &Client, batch: &str) -> tokio::task::JoinHandle<Vec<v1::BatchEvent>> {
    let client = client.clone();
    let batch = batch.to_owned();
    tokio::spawn(async move {
        let stream = client.watch(&batch, 0).await.expect("watch starts");
        tokio::time::timeout(Duration::from_secs(180), stream.collect::<Vec<_>>())
            .await
            .expect("the watch ends")
            .into_iter()
            .map(|event| event.expect("no watch error"))
            .collect()
    })
}

/// Events numbered 1..=n without a gap or a repeat, ending the batch.
fn assert_gapless_and_finished(events: &[v1::BatchEvent], state: BatchState) {
    for (position, event) in events.iter().enumerate() {
        assert_eq!(event.seq, position as u64 + 1, "events are gapless");
    }
    let last = events.last().expect("some events");
    assert_eq!(last.kind(), EventKind::BatchFinished);
    assert_eq!(last.batch_state(), state);
}

fn by_id(status: &v1::BatchStatus) -> HashMap<&str, &v1::OpStatus> {
    status.ops.iter().map(|op| (op.id.as_str(), op)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_coordinators_share_batches_and_workers() {
    let redis = RedisServer::start().expect("redis-server");
    let mut fleet = Fleet::start(redis, 2, FLAGS).await;
    for number in 0..4 {
        fleet.add_worker(&format!("w{number}"), &[]).await;
    }
    fleet.wait_for_workers(4).await;
    let workers = fleet.client.workers().await.expect("list workers");
    let coordinators: BTreeSet<&str> = workers
        .iter()
        .map(|worker| worker.coordinator.as_str())
        .collect();
    assert_eq!(
        coordinators,
        BTreeSet::from(["c0", "c1"]),
        "the balancer spread the workers: {workers:?}"
    );
    let worker_coordinator: HashMap<String, String> = workers
        .iter()
        .map(|worker| (worker.worker_id.clone(), worker.coordinator.clone()))
        .collect();

    // Two batches at once, each submitted to whichever coordinator the
    // balancer picks; chains with templates cross workers of both.
    let mut batches = Vec::new();
    for batch_number in 0..2 {
        let mut ops = Vec::new();
        for index in 0..40 {
            ops.push(op(&format!("s{index}"), "sleep", json!({ "ms": 50 })));
            let mut echo = op(
                &format!("e{index}"),
                "echo",
                json!({ "text": format!("{batch_number}/{index} after ${{ops.s{index}.status}}") }),
            );
            echo.after = vec![format!("s{index}")];
            ops.push(echo);
        }
        let batch = v1::Batch {
            name: format!("shared-{batch_number}"),
            ops,
            ..Default::default()
        };
        let client = common::admin_client(&fleet.url()).await.expect("connect");
        let submitted = client.submit(batch).await.expect("submit");
        batches.push(submitted.batch_id);
    }
    let watches: Vec<_> = batches
        .iter()
        .map(|batch| watch_all(&fleet.client, batch))
        .collect();
    let mut ran_on = BTreeSet::new();
    for (batch_number, (batch, watch)) in batches.iter().zip(watches).enumerate() {
        let events = watch.await.expect("watch task");
        assert_gapless_and_finished(&events, BatchState::Succeeded);
        let status = fleet.client.status(batch).await.expect("status");
        assert_eq!(status.state(), BatchState::Succeeded, "{status:?}");
        let ops = by_id(&status);
        for index in 0..40 {
            let echo = ops[format!("e{index}").as_str()];
            assert_eq!(
                echo.output,
                format!("{batch_number}/{index} after succeeded")
            );
        }
        for op in &status.ops {
            assert_eq!(op.attempts, 1, "{op:?}");
            ran_on.insert(worker_coordinator[&op.worker].clone());
        }
    }
    assert_eq!(
        ran_on,
        BTreeSet::from(["c0".to_owned(), "c1".to_owned()]),
        "workers of both coordinators ran ops"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owner_is_taken_over_and_watches_resume() {
    let redis = RedisServer::start().expect("redis-server");
    let mut fleet = Fleet::start(redis, 2, FLAGS).await;
    for number in 0..4 {
        fleet.add_worker(&format!("w{number}"), &[]).await;
    }
    fleet.wait_for_workers(4).await;
    let submitted = fleet
        .client
        .submit(gated_batch("takeover", 24, 300, 12))
        .await
        .expect("submit");
    let batch = submitted.batch_id;
    // Two watchers through the balancer: whichever coordinator serves them,
    // one may lose it and must resume.
    let watches = [
        watch_all(&fleet.client, &batch),
        watch_all(
            &common::admin_client(&fleet.url()).await.expect("connect"),
            &batch,
        ),
    ];
    let owner = owner_of(&fleet.client, &batch).await;
    let owner_index = Fleet::index_of(&owner).expect("owner is c0 or c1");
    let survivor = Fleet::coordinator_id(1 - owner_index);
    fleet.kill_coordinator(owner_index).await;

    wait_until("the survivor owns the batch", || {
        let client = fleet.client.clone();
        let batch = batch.clone();
        let survivor = survivor.clone();
        async move {
            client
                .summary(&batch)
                .await
                .is_ok_and(|status| status.owner == survivor)
        }
    })
    .await;
    fleet.wait_for_workers(4).await;
    let workers = fleet.client.workers().await.expect("list workers");
    assert!(
        workers.iter().all(|worker| worker.coordinator == survivor),
        "every worker reconnected to the survivor: {workers:?}"
    );
    fleet
        .client
        .memory(Scope::Batch(batch.clone()))
        .put("go", b"now".to_vec())
        .await
        .expect("open the gate");

    for watch in watches {
        let events = watch.await.expect("watch task");
        assert_gapless_and_finished(&events, BatchState::Succeeded);
    }
    let status = fleet.client.status(&batch).await.expect("status");
    assert_eq!(status.state(), BatchState::Succeeded, "{status:?}");
    let ops = by_id(&status);
    for index in 0..12 {
        assert_eq!(
            ops[format!("g{index}").as_str()].output,
            format!("gated {index} now")
        );
    }
    for op in &status.ops {
        assert_eq!(op.state(), OpState::Succeeded, "{op:?}");
        // A result in flight when its coordinator died may be run again;
        // nothing else is.
        assert!(op.attempts <= 2, "{op:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_a_coordinators_batches_over_at_once() {
    // Holds that would take a minute to run out: only a release explains
    // a quick takeover.
    let flags = [
        "--resync-interval",
        "200ms",
        "--lease",
        "8s",
        "--ownership-ttl",
        "60s",
    ];
    let redis = RedisServer::start().expect("redis-server");
    let mut fleet = Fleet::start(redis, 2, &flags).await;
    for number in 0..2 {
        fleet.add_worker(&format!("w{number}"), &[]).await;
    }
    fleet.wait_for_workers(2).await;
    let submitted = fleet
        .client
        .submit(gated_batch("handover", 4, 200, 6))
        .await
        .expect("submit");
    let batch = submitted.batch_id;
    let owner = owner_of(&fleet.client, &batch).await;
    let owner_index = Fleet::index_of(&owner).expect("owner is c0 or c1");
    let survivor = Fleet::coordinator_id(1 - owner_index);
    let exit = fleet.stop_coordinator(owner_index).await;
    assert!(
        exit.success(),
        "a coordinator stops cleanly on SIGTERM: {exit:?}"
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = fleet.client.summary(&batch).await.expect("status");
        if status.owner == survivor {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the survivor took the batch over well before the 60 s hold ran out (owner: {:?})",
            status.owner
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fleet.wait_for_workers(2).await;
    fleet
        .client
        .memory(Scope::Batch(batch.clone()))
        .put("go", b"now".to_vec())
        .await
        .expect("open the gate");
    let events = watch_all(&fleet.client, &batch).await.expect("watch task");
    assert_gapless_and_finished(&events, BatchState::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_coordinator_adopts_the_ops_its_workers_still_run() {
    let redis = RedisServer::start().expect("redis-server");
    let mut fleet = Fleet::start(redis, 1, FLAGS).await;
    for number in 0..2 {
        fleet.add_worker(&format!("w{number}"), &[]).await;
    }
    fleet.wait_for_workers(2).await;
    let mut ops = Vec::new();
    for index in 0..8 {
        ops.push(op(&format!("long{index}"), "sleep", json!({ "ms": 4000 })));
    }
    let submitted = fleet
        .client
        .submit(v1::Batch {
            name: "adopt".into(),
            ops,
            ..Default::default()
        })
        .await
        .expect("submit");
    let batch = submitted.batch_id;
    wait_until("all eight sleepers run", || {
        let client = fleet.client.clone();
        let batch = batch.clone();
        async move {
            client
                .summary(&batch)
                .await
                .is_ok_and(|status| status.running == 8)
        }
    })
    .await;
    fleet.kill_coordinator(0).await;
    fleet.start_coordinator(0).await;

    let events = watch_all(&fleet.client, &batch).await.expect("watch task");
    assert_gapless_and_finished(&events, BatchState::Succeeded);
    let status = fleet.client.status(&batch).await.expect("status");
    for op in &status.ops {
        assert_eq!(op.state(), OpState::Succeeded, "{op:?}");
        assert_eq!(
            op.attempts, 1,
            "the op kept running through the restart and was adopted: {op:?}"
        );
    }
    assert!(
        !events
            .iter()
            .any(|event| event.kind() == EventKind::OpRetrying),
        "nothing ran twice"
    );
}

/// A coordinator killed while results stream in, then started again: the
/// results it never recorded are sent again by their workers, which list
/// those ops (with their lease tickets) as they register anew, so the new
/// coordinator adopts them and keeps the results. No op that ran to the
/// end runs again: every op appears in the ledger once. (An assignment
/// lost in flight never ran, so it may run as a later attempt, once.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_mid_stream_makes_no_op_run_twice() {
    const OPS: usize = 300;
    let redis = RedisServer::start().expect("redis-server");
    let mut fleet = Fleet::start(redis, 1, FLAGS).await;
    for number in 0..2 {
        fleet.add_worker(&format!("w{number}"), &[]).await;
    }
    fleet.wait_for_workers(2).await;
    let ledger = fleet.root.path().join("ledger");
    let ledger = ledger.to_string_lossy();
    let ops = (0..OPS)
        .map(|index| {
            op(
                &format!("op{index}"),
                "agent",
                json!({
                    "cmd": format!(
                        "echo \"$VOLLEY_OP $VOLLEY_ATTEMPT\" >> {ledger} && sleep 0.05"
                    )
                }),
            )
        })
        .collect();
    let batch = fleet
        .client
        .submit(v1::Batch {
            name: "mid-stream".into(),
            ops,
            ..Default::default()
        })
        .await
        .expect("submit")
        .batch_id;
    wait_until("a third of the ops are done", || {
        let client = fleet.client.clone();
        let batch = batch.clone();
        async move {
            client
                .summary(&batch)
                .await
                .is_ok_and(|status| status.succeeded as usize >= OPS / 3)
        }
    })
    .await;
    fleet.kill_coordinator(0).await;
    fleet.start_coordinator(0).await;

    let events = watch_all(&fleet.client, &batch).await.expect("watch task");
    assert_gapless_and_finished(&events, BatchState::Succeeded);
    let text = std::fs::read_to_string(fleet.root.path().join("ledger")).expect("the ledger");
    let mut runs: HashMap<&str, Vec<&str>> = HashMap::new();
    for line in text.lines() {
        let (id, attempt) = line.split_once(' ').expect("`op attempt` lines");
        runs.entry(id).or_default().push(attempt);
    }
    assert_eq!(runs.len(), OPS, "every op ran");
    let twice: Vec<_> = runs.iter().filter(|(_, runs)| runs.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "ops ran more than once across a coordinator restart: {twice:?}"
    );
}
