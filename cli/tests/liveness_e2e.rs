//! Every end reaches every watcher, and the story a watcher hears adds up:
//! - `volley watch ID --after N` with N at or past the batch's last event
//!   ends (with the report and the batch's exit code) once the batch has
//!   ended — at once for a finished batch, and when a running one finishes;
//! - watchers of a batch lost with the store's data (Redis restarted empty,
//!   or FLUSHALL) end with exit 1 and the reason;
//! - ops spawned through one coordinator are known to the others (status,
//!   why and watch agree) and a watcher names them;
//! - the sequential pass tells one story per op;
//! - `wait_timeout` fires on time, not at the next tick.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{ADMIN_TOKEN, Cluster, Fleet, batch_file, client_process, volley};

/// Only a guard against hanging; never asserted on.
const DEADLINE: Duration = Duration::from_secs(60);

async fn watch_after(cluster: &Cluster, batch: &str, after: &str) -> tokio::process::Child {
    volley()
        .args(["watch", batch, "--after", after, "--output", "json"])
        .env("VOLLEY_COORDINATOR", &cluster.url)
        .env("VOLLEY_TOKEN", ADMIN_TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("volley watch starts")
}

async fn finished(child: tokio::process::Child) -> (Option<i32>, serde_json::Value) {
    let output = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("the watch ends instead of reconnecting forever")
        .expect("volley watch");
    let report = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("{error}: {}", String::from_utf8_lossy(&output.stderr)));
    (output.status.code(), report)
}

#[tokio::test]
async fn a_watch_past_the_end_ends_for_finished_and_running_batches() {
    let cluster = Cluster::start(1).await;
    let quick = batch_file(
        cluster.root(),
        "quick.yaml",
        "name: quick\nops:\n  - {id: a, kind: echo, args: {text: hi}}\n",
    );
    let submitted = cluster
        .client
        .submit(volley_client::read_batch_file(&quick).expect("batch"))
        .await
        .expect("submit");
    let until = tokio::time::Instant::now() + DEADLINE;
    while cluster
        .client
        .summary(&submitted.batch_id)
        .await
        .expect("summary")
        .state
        == volley_client::v1::BatchState::Running as i32
    {
        assert!(tokio::time::Instant::now() < until, "the batch never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for after in ["3", "4", "1000"] {
        let (code, report) =
            finished(watch_after(&cluster, &submitted.batch_id, after).await).await;
        assert_eq!(code, Some(0), "--after {after}: {report}");
        assert_eq!(report["state"], "succeeded");
    }

    // Running, gated on a key; watched from far past its end.
    let gated = batch_file(
        cluster.root(),
        "gated.yaml",
        "name: gated\nallow_unwritten: true\nops:\n  - {id: g, kind: echo, wait_for: [go], args: {text: gated}}\n",
    );
    let running = cluster
        .client
        .submit(volley_client::read_batch_file(&gated).expect("batch"))
        .await
        .expect("submit")
        .batch_id;
    let watcher = watch_after(&cluster, &running, "1000").await;
    cluster
        .client
        .memory(volley_client::Scope::Batch(running.clone()))
        .put("go", b"now".to_vec())
        .await
        .expect("open the gate");
    let (code, report) = finished(watcher).await;
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["state"], "succeeded");
}

/// The exit code, stdout and stderr of a client process that must end.
async fn ended(child: tokio::process::Child, what: &str) -> (Option<i32>, String, String) {
    let output = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} never ended"))
        .expect("volley");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_of_a_lost_batch_end_with_exit_1_and_the_reason() {
    let mut cluster = Cluster::start(1).await;
    for (round, lose) in ["restart", "flushall"].into_iter().enumerate() {
        let file = batch_file(
            cluster.root(),
            &format!("doomed{round}.yaml"),
            "name: doomed\nops:\n  - {id: long, kind: sleep, args: {ms: 120000}}\n",
        );
        // Two watchers from before the loss: `submit --watch` (its own
        // stream) and a `volley watch` of the same batch.
        let submitter = client_process(
            &cluster.url,
            &["submit", file.to_str().expect("utf-8"), "--watch"],
        );
        let batch = {
            let until = tokio::time::Instant::now() + DEADLINE;
            loop {
                let listed = cluster.client.list(10).await.expect("list");
                if let Some(found) = listed
                    .iter()
                    .find(|summary| summary.state == volley_client::v1::BatchState::Running as i32)
                {
                    break found.batch_id.clone();
                }
                assert!(tokio::time::Instant::now() < until, "the batch never ran");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let watcher = client_process(&cluster.url, &["watch", &batch]);
        tokio::time::sleep(Duration::from_millis(500)).await;
        match lose {
            "restart" => cluster.redis.restart().expect("redis restarts empty"),
            _ => {
                let flushed = std::process::Command::new("redis-cli")
                    .args(["-p", &cluster.redis.port().to_string(), "FLUSHALL"])
                    .output()
                    .expect("redis-cli");
                assert!(flushed.status.success(), "FLUSHALL: {flushed:?}");
            }
        }
        for (what, child) in [("submit --watch", submitter), ("watch", watcher)] {
            let (code, stdout, stderr) = ended(child, what).await;
            assert_eq!(code, Some(1), "{lose}, {what}: {stdout}\n{stderr}");
            let said = format!("{stdout}{stderr}");
            assert!(
                said.contains("lost"),
                "{lose}, {what} says the batch is lost: {said}"
            );
            assert!(
                said.contains("restarted empty"),
                "{lose}, {what} gives the reason: {said}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_spawned_through_one_coordinator_are_known_to_the_other() {
    let redis = volley_testkit::RedisServer::start().expect("redis-server starts");
    let mut fleet = Fleet::start(redis, 2, &[]).await;
    fleet.add_worker("w", &[]).await;
    fleet.wait_for_workers(1).await;
    let direct = |index: usize| format!("http://127.0.0.1:{}", fleet.coordinators[index].0);
    let (c0, c1) = (direct(0), direct(1));
    let gated = batch_file(
        fleet.root.path(),
        "gated.yaml",
        "name: grows\nallow_unwritten: true\nops:\n  - {id: gate, kind: echo, wait_for: [go], args: {text: gated}}\n  - {id: first, kind: echo, args: {text: first}}\n",
    );
    let (code, submitted, stderr) = ended(
        client_process(&c0, &["submit", gated.to_str().expect("utf-8")]),
        "submit",
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let batch = submitted
        .split_whitespace()
        .find(|word| word.len() >= 32)
        .unwrap_or_else(|| panic!("no batch id in {submitted}"))
        .to_owned();
    // Both coordinators plan the batch before it grows.
    for url in [&c0, &c1] {
        let (code, _, stderr) = ended(client_process(url, &["status", &batch]), "status").await;
        assert_eq!(code, Some(0), "{stderr}");
    }
    // A watcher on c1, open while c0 grows the batch.
    let watcher = client_process(&c1, &["watch", &batch]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let children = batch_file(
        fleet.root.path(),
        "children.yaml",
        "ops:\n  - {id: child1, kind: echo, args: {text: one}}\n  - {id: child2, kind: echo, args: {text: two}}\n",
    );
    let (code, _, stderr) = ended(
        client_process(
            &c0,
            &[
                "spawn",
                children.to_str().expect("utf-8"),
                "--batch",
                &batch,
                "--op",
                "gate",
            ],
        ),
        "spawn",
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    // c1 agrees at once: status lists all four ops, why knows child2.
    let (code, status, stderr) = ended(
        client_process(&c1, &["status", &batch, "--output", "json"]),
        "status",
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    let ids: Vec<&str> = status["ops"]
        .as_array()
        .expect("ops")
        .iter()
        .filter_map(|op| op["id"].as_str())
        .collect();
    assert_eq!(ids, ["gate", "first", "child1", "child2"], "{status}");
    let (code, why, stderr) = ended(client_process(&c1, &["why", &batch, "child2"]), "why").await;
    assert_eq!(code, Some(0), "{why}{stderr}");
    assert!(!why.contains("has no op"), "{why}");
    fleet
        .client
        .memory(volley_client::Scope::Batch(batch.clone()))
        .put("go", b"now".to_vec())
        .await
        .expect("open the gate");
    let (code, _, lines) = ended(watcher, "watch").await;
    assert_eq!(code, Some(0), "{lines}");
    assert!(
        lines.contains("succeeded child2"),
        "the watcher names spawned ops: {lines}"
    );
    assert!(!lines.contains(" ? "), "no op is `?`: {lines}");
    assert!(
        lines.contains("grew      2 ops added by token") && lines.contains("(op `gate`)"),
        "the grew line says who: {lines}"
    );
    assert!(!lines.contains("by a client"), "{lines}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sequential_pass_tells_one_story_per_op() {
    let cluster = Cluster::start(1).await;
    // `flaky` fails the first time (parallel pass) and succeeds after;
    // `after1` is skipped with it, then runs in the pass.
    let file = batch_file(
        cluster.root(),
        "seq.yaml",
        "name: seq\nretry_failed: sequential\nops:\n  - {id: flaky, kind: shell, args: {cmd: 'if [ -e once ]; then echo ok; else touch once; exit 3; fi'}}\n  - {id: after1, kind: echo, after: [flaky], args: {text: after}}\n  - {id: fine, kind: echo, args: {text: fine}}\n",
    );
    let (code, _, lines) = ended(
        client_process(
            &cluster.url,
            &["submit", file.to_str().expect("utf-8"), "--watch"],
        ),
        "submit --watch",
    )
    .await;
    assert_eq!(code, Some(0), "{lines}");
    let story = |op: &str| -> Vec<String> {
        lines
            .lines()
            .filter(|line| {
                line.split_whitespace().nth(3) == Some(op)
                    || line.split_whitespace().nth(3) == Some(&format!("{op}:"))
            })
            .map(|line| line.split_whitespace().nth(2).unwrap_or("").to_owned())
            .collect()
    };
    assert_eq!(
        story("flaky"),
        ["starting", "failed", "retrying", "starting", "succeeded"],
        "{lines}"
    );
    assert_eq!(
        story("after1"),
        ["skipped", "retrying", "starting", "succeeded"],
        "{lines}"
    );
    assert!(
        lines.contains("retrying  after1: retry_failed: sequential pass: queued again"),
        "{lines}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_timeout_fires_on_time_not_at_the_next_tick() {
    // A 5 s tick: a timeout that waited for the tick would say ~5000 ms.
    let cluster = Cluster::start_with(1, &["--resync-interval", "5s"]).await;
    let file = batch_file(
        cluster.root(),
        "wait.yaml",
        "name: waits\nops:\n  - {id: w, kind: echo, wait_for: [never], wait_timeout: 1500ms, args: {text: never}}\n",
    );
    let (code, _, lines) = ended(
        client_process(
            &cluster.url,
            &[
                "submit",
                file.to_str().expect("utf-8"),
                "--watch",
                "--allow-unwritten",
            ],
        ),
        "submit --watch",
    )
    .await;
    assert_eq!(code, Some(1), "{lines}");
    let waited: u64 = lines
        .split("waited ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no `waited N ms` in {lines}"));
    assert!(waited >= 1500, "{lines}");
    // Not a correctness bound on speed: a tick-driven check would say
    // about 5000 ms here.
    assert!(waited < 4000, "fired at the tick, not on time: {lines}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_fires_on_time_not_at_the_next_tick() {
    // A 5 s tick: a deadline that waited for the tick would end the batch
    // about 5 s after its start.
    let cluster = Cluster::start_with(1, &["--resync-interval", "5s"]).await;
    let file = batch_file(
        cluster.root(),
        "deadline.yaml",
        "name: late\ndeadline: 1500ms\nops:\n  - {id: long, kind: sleep, args: {ms: 60000}}\n",
    );
    let (code, report) = common::submit_watched_json(&cluster, &file).await;
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["state"], "failed", "{report}");
    let wall = report["wall_ms"].as_u64().expect("wall_ms");
    assert!(wall >= 1500, "{report}");
    // The store's own measure, not the test's clock: a tick-driven
    // deadline would read about 5000 here.
    assert!(wall < 4000, "fired at the tick, not on time: {report}");
}
