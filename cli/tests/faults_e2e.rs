//! The failure model, proven with real processes: workers killed (-9) and
//! hung (SIGSTOP), a coordinator killed and restarted, Redis restarted
//! empty, retries with backoff, deadlines, graceful drain, `why`.
//! Heartbeats come every 200 ms; leases are 2 s where their running out is
//! tested, 5 s elsewhere. Nothing asserts how long anything took.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use volley_client::v1::{self, BatchState, EventKind, OpState};
use volley_testkit::{op, wait_until};

/// Leases long enough that a loaded 2-core CI machine never misses one by
/// accident; tests of what is not a lease use these.
const LEASE: &[&str] = &["--lease", "5s", "--resync-interval", "200ms"];
/// Short leases, for the tests where a lease running out is the point.
const SHORT_LEASE: &[&str] = &["--lease", "2s", "--resync-interval", "200ms"];
const FAST_HEARTBEAT: &[&str] = &["--heartbeat", "200ms", "--slots", "4"];

/// How many `OP_SUCCEEDED` events a finished batch's whole event stream holds.
async fn successes_reported(client: &volley_client::Client, batch: &str) -> usize {
    client
        .watch(batch, 0)
        .await
        .expect("watch")
        .filter(|event| {
            let succeeded = event
                .as_ref()
                .is_ok_and(|event| event.kind() == EventKind::OpSucceeded);
            async move { succeeded }
        })
        .count()
        .await
}

/// grpc.health.v1 status "" at `url`; None when it does not answer.
async fn health(url: &str) -> Option<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .ok()?
        .connect()
        .await
        .ok()?;
    let mut client = HealthClient::new(channel);
    let response = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    Some(response.into_inner().status())
}

async fn finish(client: &volley_client::Client, batch: &str) -> v1::BatchStatus {
    let until = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        // Reconnects and resumes (the coordinator may have restarted).
        if let Ok(stream) = client.watch(batch, 0).await {
            let _: Vec<_> =
                tokio::time::timeout(Duration::from_secs(120), stream.collect::<Vec<_>>())
                    .await
                    .unwrap_or_default();
        }
        if let Ok(status) = client.status(batch).await
            && status.state() != BatchState::Running
        {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "batch {batch} never finished"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A cluster with two fast-heartbeat workers running a batch of `count`
/// sleepers (3 attempts each), returned once `started` of them succeeded.
async fn sleepers_under_way(
    lease: &[&str],
    name: &str,
    count: usize,
    sleep_ms: u64,
    max_parallel: u32,
    started: u32,
) -> (common::Cluster, String) {
    let mut cluster = common::Cluster::start_with(0, lease).await;
    for id in ["w1", "w2"] {
        cluster.add_bare_worker(id, FAST_HEARTBEAT).await;
    }
    cluster
        .client
        .wait_for_workers(2, Duration::from_secs(20))
        .await
        .expect("workers");
    let ops: Vec<v1::Op> = (0..count)
        .map(|index| {
            let mut sleeper = op(&format!("s{index}"), "sleep", json!({"ms": sleep_ms}));
            sleeper.attempts = 3;
            sleeper
        })
        .collect();
    let batch = v1::Batch {
        name: name.into(),
        max_parallel,
        ops,
        ..Default::default()
    };
    let batch_id = cluster.client.submit(batch).await.expect("submit").batch_id;
    let client = cluster.client.clone();
    let id = batch_id.clone();
    wait_until("some ops have run", || {
        let client = client.clone();
        let id = id.clone();
        async move {
            client
                .summary(&id)
                .await
                .map(|status| status.succeeded >= started)
                .unwrap_or(false)
        }
    })
    .await;
    (cluster, batch_id)
}

fn by_id(status: &v1::BatchStatus) -> HashMap<&str, &v1::OpStatus> {
    status.ops.iter().map(|op| (op.id.as_str(), op)).collect()
}

/// Each op appends `id attempt` to a ledger, then sleeps.
fn ledger_op(id: &str, ledger: &str, sleep: &str) -> v1::Op {
    let mut op = op(
        id,
        "shell",
        json!({"cmd": format!("echo {id} >> {ledger}; sleep {sleep}; echo done-{id}")}),
    );
    op.attempts = 3;
    op
}

/// A cluster whose one worker, `worker` (the harness's usual worker: shell
/// allowed, rooted in the cluster's dir), runs `count` ledger ops; returned
/// once every op really started — claimed is not started.
async fn ledger_ops_under_way(
    lease: &[&str],
    worker: &str,
    name: &str,
    prefix: &str,
    count: usize,
) -> (common::Cluster, String) {
    let mut cluster = common::Cluster::start_with(0, lease).await;
    cluster.add_worker(worker).await;
    cluster
        .client
        .wait_for_workers(1, Duration::from_secs(20))
        .await
        .expect("workers");
    let ops = (0..count)
        .map(|index| ledger_op(&format!("{prefix}-{index}"), "ledger.txt", "1"))
        .collect();
    let batch = v1::Batch {
        name: name.into(),
        ops,
        ..Default::default()
    };
    let batch_id = cluster.client.submit(batch).await.expect("submit").batch_id;
    let ledger_path = cluster.root().join("ledger.txt");
    wait_until("every op started on the worker", || {
        let ledger_path = ledger_path.clone();
        async move {
            std::fs::read_to_string(&ledger_path)
                .map(|text| text.lines().count() == count)
                .unwrap_or(false)
        }
    })
    .await;
    (cluster, batch_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_ops_run_again_elsewhere_and_succeed_once() {
    let (mut cluster, batch_id) = ledger_ops_under_way(LEASE, "doomed", "kill", "slow", 3).await;
    common::Cluster::signal(&cluster.workers[0], "KILL");
    cluster.add_worker("survivor").await;
    let status = finish(&cluster.client, &batch_id).await;
    assert_eq!(status.state(), BatchState::Succeeded);
    for op in &status.ops {
        assert_eq!(
            (op.worker.as_str(), op.attempts),
            ("survivor", 2),
            "{}",
            op.id
        );
        assert_eq!(op.output.trim(), format!("done-{}", op.id));
    }
    // The ledger: each op ran exactly twice — its first attempt was lost.
    let ledger = std::fs::read_to_string(cluster.root().join("ledger.txt")).expect("ledger");
    let mut runs: HashMap<&str, usize> = HashMap::new();
    for line in ledger.lines() {
        *runs.entry(line).or_default() += 1;
    }
    assert_eq!(
        runs,
        (0..3)
            .map(|index| (["slow-0", "slow-1", "slow-2"][index], 2))
            .collect()
    );
    // Each op is reported succeeded exactly once.
    let events: Vec<_> = cluster
        .client
        .watch(&batch_id, 0)
        .await
        .expect("watch")
        .collect()
        .await;
    let succeeded = events
        .iter()
        .filter_map(|event| event.as_ref().ok())
        .filter(|event| event.kind() == EventKind::OpSucceeded)
        .count();
    assert_eq!(succeeded, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_worker_loses_its_leases_and_its_ops_run_elsewhere() {
    let (mut cluster, batch_id) = ledger_ops_under_way(SHORT_LEASE, "hangs", "hang", "op", 2).await;
    common::Cluster::signal(&cluster.workers[0], "STOP");
    cluster.add_worker("healthy").await;
    let status = finish(&cluster.client, &batch_id).await;
    common::Cluster::signal(&cluster.workers[0], "CONT");
    assert_eq!(status.state(), BatchState::Succeeded);
    for op in &status.ops {
        // The hung worker's attempt was lost, so at least a second one ran,
        // and the attempt that succeeded ran on the healthy worker.
        assert_eq!(op.worker, "healthy", "{}", op.id);
        assert!(op.attempts >= 2, "{}: {} attempt(s)", op.id, op.attempts);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_coordinator_resumes_the_batch() {
    let (mut cluster, batch_id) = sleepers_under_way(SHORT_LEASE, "resume", 30, 300, 0, 4).await;
    cluster.restart_coordinator(SHORT_LEASE).await;
    let status = finish(&cluster.client, &batch_id).await;
    assert_eq!(
        status.state(),
        BatchState::Succeeded,
        "{:?}",
        status
            .ops
            .iter()
            .filter(|op| op.state() != OpState::Succeeded)
            .map(|op| (&op.id, &op.error))
            .collect::<Vec<_>>()
    );
    assert_eq!(status.succeeded, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_restarts_empty_ends_batches_lost_never_succeeded() {
    let mut cluster = common::Cluster::start_with(0, LEASE).await;
    cluster.add_bare_worker("w", FAST_HEARTBEAT).await;
    cluster
        .client
        .wait_for_workers(1, Duration::from_secs(20))
        .await
        .expect("workers");
    let submitted = cluster
        .client
        .submit(v1::Batch {
            name: "doomed".into(),
            ops: vec![op("long", "sleep", json!({"ms": 30_000}))],
            ..Default::default()
        })
        .await
        .expect("submit");
    cluster.redis.restart().expect("redis restarts empty");
    let client = cluster.client.clone();
    let id = submitted.batch_id.clone();
    wait_until("the batch is reported lost", || {
        let client = client.clone();
        let id = id.clone();
        async move {
            client
                .summary(&id)
                .await
                .map(|status| status.state() == BatchState::Lost)
                .unwrap_or(false)
        }
    })
    .await;
    let status = cluster
        .client
        .summary(&submitted.batch_id)
        .await
        .expect("status");
    assert!(status.error.contains("restarted empty"), "{}", status.error);
    // And the coordinator carries on with new work.
    let after = cluster
        .client
        .submit(v1::Batch {
            name: "after".into(),
            ops: vec![op("quick", "echo", json!({"text": "still here"}))],
            ..Default::default()
        })
        .await
        .expect("submit after the restart");
    assert_eq!(
        finish(&cluster.client, &after.batch_id).await.state(),
        BatchState::Succeeded
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_wait_out_their_backoff_and_follow_retry_on() {
    let mut cluster = common::Cluster::start_with(0, LEASE).await;
    let root = cluster.root().to_string_lossy().into_owned();
    cluster
        .add_bare_worker(
            "w",
            &["--allow-shell", "--root", &root, "--heartbeat", "200ms"],
        )
        .await;
    cluster
        .client
        .wait_for_workers(1, Duration::from_secs(20))
        .await
        .expect("workers");
    // Fails twice, then succeeds; 300 ms (no jitter), then 600 ms apart.
    let mut flaky = op(
        "flaky",
        "shell",
        json!({"cmd": "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; [ $n -ge 3 ] && echo ok"}),
    );
    flaky.attempts = 5;
    flaky.backoff = Some(v1::Backoff {
        initial_ms: 300,
        max_ms: 5000,
        multiplier: 2.0,
        no_jitter: true,
    });
    // Only a lost worker is worth another attempt: a plain failure is final.
    let mut strict = op("strict", "shell", json!({"cmd": "exit 4"}));
    strict.attempts = 5;
    strict.retry_on = vec![v1::RetryOn::LostWorker as i32];
    let submitted = cluster
        .client
        .submit(v1::Batch {
            name: "retries".into(),
            ops: vec![flaky, strict],
            ..Default::default()
        })
        .await
        .expect("submit");
    let status = finish(&cluster.client, &submitted.batch_id).await;
    let ops = by_id(&status);
    assert_eq!(
        (ops["flaky"].state(), ops["flaky"].attempts),
        (OpState::Succeeded, 3)
    );
    assert_eq!(
        (ops["strict"].state(), ops["strict"].attempts),
        (OpState::Failed, 1)
    );
    // The store never hands out a retry before its backoff is over.
    let events: Vec<v1::BatchEvent> = cluster
        .client
        .watch(&submitted.batch_id, 0)
        .await
        .expect("watch")
        .filter_map(|event| async { event.ok() })
        .collect()
        .await;
    let at = |kind: EventKind, attempt: u32| {
        events
            .iter()
            .find(|event| {
                event.op_id == "flaky" && event.kind() == kind && event.attempt == attempt
            })
            .map(|event| event.at_ms)
            .expect("event")
    };
    assert!(at(EventKind::OpStarted, 2) >= at(EventKind::OpRetrying, 1) + 300);
    assert!(at(EventKind::OpStarted, 3) >= at(EventKind::OpRetrying, 2) + 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_ends_the_batch_and_cancels_what_is_left() {
    let mut cluster = common::Cluster::start_with(0, LEASE).await;
    cluster.add_bare_worker("w", FAST_HEARTBEAT).await;
    cluster
        .client
        .wait_for_workers(1, Duration::from_secs(20))
        .await
        .expect("workers");
    let mut after = op("after", "noop", json!({}));
    after.after = vec!["long".into()];
    let batch = v1::Batch {
        name: "deadline".into(),
        deadline_ms: 500,
        ops: vec![op("long", "sleep", json!({"ms": 60_000})), after],
        ..Default::default()
    };
    let submitted = cluster.client.submit(batch).await.expect("submit");
    let status = finish(&cluster.client, &submitted.batch_id).await;
    assert_eq!(status.state(), BatchState::Failed);
    assert!(status.error.contains("deadline"), "{}", status.error);
    let ops = by_id(&status);
    assert_eq!(ops["long"].state(), OpState::Cancelled);
    assert_eq!(ops["after"].state(), OpState::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn why_says_what_an_op_waits_for() {
    let flags = [LEASE, &["--report-blocked-after", "1s"]].concat();
    let cluster = common::Cluster::start_with(1, &flags).await;
    let mut waiter = op("waiter", "echo", json!({"text": "x"}));
    waiter.wait_for = vec!["go/now".into()];
    let mut gpu = op("gpu", "noop", json!({}));
    gpu.requires = [("gpu".to_owned(), "yes".to_owned())].into_iter().collect();
    let mut chained = op("chained", "noop", json!({}));
    chained.after = vec!["waiter".into()];
    let submitted = cluster
        .client
        .submit(v1::Batch {
            name: "why".into(),
            // Nothing writes `go/now`: the waiter stays blocked.
            allow_unwritten: true,
            ops: vec![waiter, gpu, chained],
            ..Default::default()
        })
        .await
        .expect("submit");
    let client = cluster.client.clone();
    let id = submitted.batch_id.clone();
    wait_until("the gpu op says no worker takes it", || {
        let client = client.clone();
        let id = id.clone();
        async move {
            client
                .why(&id, "gpu")
                .await
                .map(|why| {
                    why.reasons.iter().any(|reason| {
                        reason.contains("no live worker runs `noop` ops with labels gpu=yes")
                    })
                })
                .unwrap_or(false)
        }
    })
    .await;
    let waiter = cluster
        .client
        .why(&submitted.batch_id, "waiter")
        .await
        .expect("why");
    assert!(
        waiter
            .reasons
            .iter()
            .any(|reason| reason.contains("go/now")),
        "{:?}",
        waiter.reasons
    );
    let chained = cluster
        .client
        .why(&submitted.batch_id, "chained")
        .await
        .expect("why");
    assert!(
        chained
            .reasons
            .iter()
            .any(|reason| reason.contains("`waiter`") && reason.contains("waiting")),
        "{:?}",
        chained.reasons
    );
    let output = common::volley()
        .args([
            "why",
            &submitted.batch_id,
            "waiter",
            "--coordinator",
            &cluster.url,
        ])
        .output()
        .await
        .expect("volley why");
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).contains("go/now"));

    // Ops that may never run say so in the batch's events: the key nothing
    // writes at once, the op no live worker takes after a while.
    let mut blocked: HashMap<String, String> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while blocked.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never saw both ops blocked: {blocked:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stream = cluster
            .client
            .watch(&submitted.batch_id, 0)
            .await
            .expect("watch");
        // The batch is still running: read what is there, then stop.
        let events: Vec<_> = stream
            .take_until(tokio::time::sleep(Duration::from_millis(300)))
            .collect()
            .await;
        blocked = events
            .into_iter()
            .filter_map(Result::ok)
            .filter(|event| event.kind() == EventKind::OpBlocked)
            .map(|event| (event.op_id, event.message))
            .collect();
    }
    assert!(
        blocked["waiter"].contains("`go/now`")
            && blocked["waiter"].contains("no op of the batch writes"),
        "{blocked:?}"
    );
    assert!(
        blocked["gpu"].contains("no live worker runs `noop` ops with labels gpu=yes"),
        "{blocked:?}"
    );
    cluster
        .client
        .cancel(&submitted.batch_id)
        .await
        .expect("cancel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_worker_finishing_running_ops_and_handing_back_the_rest() {
    let mut cluster = common::Cluster::start_with(0, LEASE).await;
    let root = cluster.root().to_string_lossy().into_owned();
    let health_port = common::free_port();
    let health_address = format!("127.0.0.1:{health_port}");
    cluster
        .add_bare_worker(
            "drains",
            &[
                "--allow-shell",
                "--root",
                &root,
                "--heartbeat",
                "200ms",
                "--slots",
                "2",
                "--drain-timeout",
                "1500ms",
                "--health-listen",
                &health_address,
            ],
        )
        .await;
    cluster
        .client
        .wait_for_workers(1, Duration::from_secs(20))
        .await
        .expect("workers");
    // Each op marks that it really started on the worker before it sleeps.
    let mut short = op(
        "short",
        "shell",
        json!({"cmd": "touch started-short; sleep 0.4"}),
    );
    short.attempts = 1;
    let mut long = op(
        "long",
        "shell",
        json!({"cmd": "touch started-long; sleep 4"}),
    );
    long.attempts = 1;
    let submitted = cluster
        .client
        .submit(v1::Batch {
            name: "drain".into(),
            ops: vec![short, long],
            ..Default::default()
        })
        .await
        .expect("submit");
    let root_path = cluster.root().to_path_buf();
    wait_until("both started on the worker", || {
        let root_path = root_path.clone();
        async move {
            root_path.join("started-short").exists() && root_path.join("started-long").exists()
        }
    })
    .await;
    let health_url = format!("http://{health_address}");
    assert_eq!(health(&health_url).await, Some(ServingStatus::Serving));
    common::Cluster::signal(&cluster.workers[0], "TERM");
    // Draining: NOT_SERVING while the long op still runs (it is handed back
    // only at the drain timeout).
    wait_until("the draining worker reports NOT_SERVING", || {
        let health_url = health_url.clone();
        async move { health(&health_url).await == Some(ServingStatus::NotServing) }
    })
    .await;
    // The worker said so at once: listed as draining while its op runs.
    wait_until("the coordinator lists the worker as draining", || {
        let client = cluster.client.clone();
        async move {
            client.workers().await.is_ok_and(|workers| {
                workers
                    .iter()
                    .any(|worker| worker.worker_id == "drains" && worker.draining)
            })
        }
    })
    .await;
    let output = common::volley()
        .args(["workers", "--coordinator", &cluster.url])
        .output()
        .await
        .expect("volley workers");
    assert_eq!(output.status.code(), Some(0));
    let listed = String::from_utf8_lossy(&output.stdout);
    assert!(
        listed
            .lines()
            .any(|line| line.starts_with("drains  busy") && line.ends_with("  draining")),
        "{listed}"
    );
    let exit = tokio::time::timeout(Duration::from_secs(30), cluster.workers[0].wait())
        .await
        .expect("the worker exits")
        .expect("status");
    assert!(exit.success(), "{exit:?}");
    // The short op finished during the drain; the long one was handed back
    // (not failed — it had a single attempt) and runs on the next worker.
    cluster
        .add_bare_worker(
            "next",
            &["--allow-shell", "--root", &root, "--heartbeat", "200ms"],
        )
        .await;
    let status = finish(&cluster.client, &submitted.batch_id).await;
    let ops = by_id(&status);
    assert_eq!(
        (ops["short"].state(), ops["short"].worker.as_str()),
        (OpState::Succeeded, "drains"),
        "short: {}",
        ops["short"].error
    );
    assert_eq!(
        (ops["long"].state(), ops["long"].worker.as_str()),
        (OpState::Succeeded, "next")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_shell_does_not_live_on_as_an_orphan() {
    let mut cluster = common::Cluster::start_with(0, LEASE).await;
    let root = cluster.root().to_string_lossy().into_owned();
    cluster
        .add_bare_worker(
            "doomed",
            &["--allow-shell", "--root", &root, "--heartbeat", "200ms"],
        )
        .await;
    cluster
        .client
        .wait_for_workers(1, Duration::from_secs(20))
        .await
        .expect("workers");
    // The shell writes its pid, then loops (as a runaway script would).
    let looping = op(
        "loops",
        "shell",
        json!({"cmd": "echo $$ > pid.txt; while :; do sleep 0.1; done"}),
    );
    let submitted = cluster
        .client
        .submit(v1::Batch {
            name: "orphan".into(),
            ops: vec![looping],
            ..Default::default()
        })
        .await
        .expect("submit");
    let pid_file = cluster.root().join("pid.txt");
    wait_until("the shell wrote its pid", || {
        let pid_file = pid_file.clone();
        async move {
            std::fs::read_to_string(&pid_file)
                .map(|text| !text.trim().is_empty())
                .unwrap_or(false)
        }
    })
    .await;
    let pid = std::fs::read_to_string(&pid_file)
        .expect("pid")
        .trim()
        .to_owned();
    common::Cluster::signal(&cluster.workers[0], "KILL");
    wait_until("the shell died with its worker", || {
        let pid = pid.clone();
        async move { !std::path::Path::new(&format!("/proc/{pid}")).exists() }
    })
    .await;
    cluster
        .client
        .cancel(&submitted.batch_id)
        .await
        .expect("cancel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_freezes_for_seconds_loses_nothing() {
    let (cluster, batch_id) = sleepers_under_way(LEASE, "freeze", 200, 20, 4, 20).await;
    let pid = cluster.redis.pid().expect("redis runs").to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
    };
    signal("-STOP");
    tokio::time::sleep(Duration::from_secs(3)).await; // the outage itself, not a wait for a condition
    signal("-CONT");
    let status = finish(&cluster.client, &batch_id).await;
    assert_eq!(status.state(), BatchState::Succeeded);
    assert_eq!(status.succeeded, 200);
    assert_eq!(
        successes_reported(&cluster.client, &batch_id).await,
        200,
        "each op reported succeeded exactly once"
    );
}

/// Redis killed mid-batch and unreachable (connection refused) for 30 s,
/// then started again from its append-only file: two coordinators and their
/// workers ride it out — no crash, results kept and recorded once it is
/// back, every op succeeded exactly once, none run twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_down_for_30_s_and_back_from_its_aof_loses_nothing() {
    let redis = volley_testkit::RedisServer::start_with(volley_testkit::RedisOptions {
        aof: true,
        ..Default::default()
    })
    .expect("redis-server with AOF");
    let mut fleet = common::Fleet::start(redis, 2, LEASE).await;
    for number in 0..2 {
        fleet.add_worker(&format!("w{number}"), &[]).await;
    }
    fleet.wait_for_workers(2).await;
    let mut ops = Vec::new();
    for index in 0..60 {
        let mut sleeper = op(&format!("s{index}"), "sleep", json!({ "ms": 400 }));
        sleeper.attempts = 3;
        ops.push(sleeper);
        let mut echo = op(
            &format!("e{index}"),
            "echo",
            json!({ "text": format!("{index}: ${{ops.s{index}.status}}") }),
        );
        echo.after = vec![format!("s{index}")];
        ops.push(echo);
    }
    let submitted = fleet
        .client
        .submit(v1::Batch {
            name: "redis-outage".into(),
            max_parallel: 4,
            ops,
            ..Default::default()
        })
        .await
        .expect("submit");
    let batch = submitted.batch_id.clone();
    wait_until("a few ops succeeded", || {
        let client = fleet.client.clone();
        let batch = batch.clone();
        async move {
            client
                .summary(&batch)
                .await
                .is_ok_and(|status| status.succeeded >= 10 && status.running > 0)
        }
    })
    .await;

    fleet.redis.stop();
    let direct = format!("http://127.0.0.1:{}", fleet.coordinators[0].0);
    wait_until("a coordinator without Redis reports NOT_SERVING", || {
        let direct = direct.clone();
        async move { health(&direct).await == Some(ServingStatus::NotServing) }
    })
    .await;
    // The outage itself (connection refused), not a wait for a condition.
    tokio::time::sleep(Duration::from_secs(30)).await;
    for (index, (_, coordinator)) in fleet.coordinators.iter_mut().enumerate() {
        let coordinator = coordinator.as_mut().expect("coordinator was started");
        assert!(
            coordinator.try_wait().expect("poll").is_none(),
            "coordinator {index} is still up"
        );
    }
    for (id, worker) in &mut fleet.workers {
        assert!(
            worker.try_wait().expect("poll").is_none(),
            "worker {id} is still up"
        );
    }
    fleet
        .redis
        .start_again()
        .expect("redis starts from its AOF");
    wait_until("the coordinator reports SERVING again", || {
        let direct = direct.clone();
        async move { health(&direct).await == Some(ServingStatus::Serving) }
    })
    .await;

    let status = finish(&fleet.client, &batch).await;
    assert_eq!(status.state(), BatchState::Succeeded, "{}", status.error);
    assert_eq!(status.succeeded, 120);
    for op in &status.ops {
        assert_eq!(op.attempts, 1, "nothing ran twice: {op:?}");
        if let Some(index) = op.id.strip_prefix('e') {
            assert_eq!(op.output, format!("{index}: succeeded"));
        }
    }
    assert_eq!(
        successes_reported(&fleet.client, &batch).await,
        120,
        "each op reported succeeded exactly once"
    );
}

/// `retry_failed: sequential`: ops that trip over each other when run in
/// parallel (each needs a lock directory only one can hold) fail in the
/// parallel pass, then all succeed when retried one at a time; the
/// dependents they skipped run too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_failed_sequential_reruns_interfering_ops_one_at_a_time() {
    let cluster = common::Cluster::start_with(1, LEASE).await;
    let mut ops = Vec::new();
    for index in 0..4 {
        // All four wait until all four started (in the parallel pass), then
        // race for the lock; in the sequential pass they find their marker
        // files already there and go straight on.
        let mut locked = op(
            &format!("locked{index}"),
            "shell",
            json!({ "cmd": format!("touch started-{index}; while [ $(ls started-* | wc -l) -lt 4 ]; do sleep 0.05; done; mkdir lock && sleep 0.3 && rmdir lock && echo ok-{index}") }),
        );
        locked.attempts = 1;
        ops.push(locked);
    }
    let mut after = op(
        "after",
        "echo",
        json!({ "text": "after ${ops.locked0.output}" }),
    );
    after.after = vec!["locked0".into()];
    ops.push(after);
    let submitted = cluster
        .client
        .submit(v1::Batch {
            name: "sequential".into(),
            retry_failed: v1::RetryFailed::Sequential as i32,
            ops,
            ..Default::default()
        })
        .await
        .expect("submit");
    let status = finish(&cluster.client, &submitted.batch_id).await;
    assert_eq!(status.state(), BatchState::Succeeded, "{}", status.error);
    let events: Vec<v1::BatchEvent> = cluster
        .client
        .watch(&submitted.batch_id, 0)
        .await
        .expect("watch")
        .filter_map(|event| async move { event.ok() })
        .collect()
        .await;
    let first_pass_end = events
        .iter()
        .position(|event| {
            event.kind() == EventKind::OpRetrying && event.message.contains("sequential pass")
        })
        .expect("some op lost the race in the parallel pass");
    let ops = by_id(&status);
    for index in 0..4 {
        let locked = ops[format!("locked{index}").as_str()];
        assert_eq!(locked.state(), OpState::Succeeded, "{locked:?}");
        assert_eq!(locked.output.trim_end(), format!("ok-{index}"));
    }
    assert_eq!(ops["after"].output.trim_end(), "after ok-0");
    // The sequential pass never ran two ops at once.
    let mut running = 0i32;
    for event in &events[first_pass_end..] {
        match event.kind() {
            EventKind::OpStarted => {
                running += 1;
                assert!(running <= 1, "two ops ran at once in the sequential pass");
            }
            EventKind::OpSucceeded | EventKind::OpFailed => running -= 1,
            _ => {}
        }
    }
}
