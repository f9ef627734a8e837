//! Nothing waits for a key nobody will write, and a shared `store_as` is
//! never lost: a failed writer (an `agent` with `writes:`, a `store_as` op)
//! ends its waiters `skipped` with the reason — in a cluster and in
//! `volley run` — while a `run_if: always` waiter still runs; a coordinator
//! that dies right after recording a shared `store_as` (the debug-only fault
//! point `VOLLEY_TEST_FAULT=after-complete`) leaves the write in the batch's
//! outbox, and the next coordinator writes it, so its consumer finishes.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{
    ADMIN_TOKEN, Cluster, Fleet, batch_file, report_op, run_json, submit_watched_json, volley,
};
use volley_testkit::RedisServer;

/// Only a guard against hanging; never asserted on.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// Writers that fail: an agent declaring `writes: [memory:answer]` and a
/// `store_as` op. Their waiters (a `${memory.…}` reference, a `wait_for`)
/// and what runs after them are skipped; `always` runs.
const FAILED_WRITERS: &str = r#"name: failed-writers
ops:
  - id: writer
    kind: agent
    writes: ["memory:answer"]
    args: {cmd: "exit 3"}
  - id: reader
    kind: echo
    args: {text: "the answer is ${memory.answer}"}
  - id: after-reader
    kind: echo
    after: [reader]
    args: {text: never}
  - id: always
    kind: echo
    wait_for: [answer]
    run_if: always
    args: {text: ran anyway}
  - id: stored
    kind: shell
    store_as: total
    args: {cmd: "exit 1"}
  - id: sum-reader
    kind: echo
    wait_for: [total]
    args: {text: never}
"#;

fn assert_failed_writers_report(code: Option<i32>, report: &serde_json::Value) {
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["state"], "failed", "{report}");
    let state = |id: &str| report_op(report, id)["state"].as_str().map(str::to_owned);
    let error = |id: &str| {
        report_op(report, id)["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(state("writer").as_deref(), Some("failed"), "{report}");
    assert_eq!(state("reader").as_deref(), Some("skipped"), "{report}");
    assert_eq!(
        error("reader"),
        "key `answer` will never be written: its writer `writer` failed"
    );
    assert_eq!(
        state("after-reader").as_deref(),
        Some("skipped"),
        "{report}"
    );
    assert_eq!(error("after-reader"), "dependency `reader` skipped");
    assert_eq!(state("always").as_deref(), Some("succeeded"), "{report}");
    assert_eq!(state("stored").as_deref(), Some("failed"), "{report}");
    assert_eq!(state("sum-reader").as_deref(), Some("skipped"), "{report}");
    assert_eq!(
        error("sum-reader"),
        "key `total` will never be written: its writer `stored` failed"
    );
}

#[tokio::test]
async fn a_failed_writer_skips_its_waiters_and_submit_watch_ends_with_the_reason() {
    let cluster = Cluster::start(1).await;
    let file = batch_file(cluster.root(), "failed.yaml", FAILED_WRITERS);
    let (code, report) = tokio::time::timeout(HANG_GUARD, submit_watched_json(&cluster, &file))
        .await
        .expect("submit --watch ends instead of waiting forever");
    assert_failed_writers_report(code, &report);

    // The same as a person watching sees it: the skip and its reason.
    let output = tokio::time::timeout(
        HANG_GUARD,
        volley()
            .args(["submit", file.to_str().expect("utf-8"), "--watch"])
            .env("VOLLEY_COORDINATOR", &cluster.url)
            .env("VOLLEY_TOKEN", ADMIN_TOKEN)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("submit --watch ends instead of waiting forever")
    .expect("volley submit");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(1), "{printed}");
    assert!(
        printed.contains("key `answer` will never be written: its writer `writer` failed"),
        "{printed}"
    );
}

#[tokio::test]
async fn a_failed_writer_skips_its_waiters_in_volley_run() {
    let root = tempfile::tempdir().expect("temp dir");
    let file = batch_file(root.path(), "failed.yaml", FAILED_WRITERS);
    let (code, report) = tokio::time::timeout(HANG_GUARD, run_json(root.path(), &file, &[]))
        .await
        .expect("volley run ends instead of waiting forever");
    assert_failed_writers_report(code, &report);

    // What a person running it reads.
    let output = tokio::time::timeout(
        HANG_GUARD,
        volley()
            .args(["run", file.to_str().expect("utf-8")])
            .current_dir(root.path())
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("volley run ends instead of waiting forever")
    .expect("volley run");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(1), "{printed}");
    assert!(
        printed.contains("key `total` will never be written: its writer `stored` failed"),
        "{printed}"
    );
}

#[tokio::test]
async fn a_writer_that_succeeds_without_writing_its_key_skips_the_waiter_by_name() {
    let root = tempfile::tempdir().expect("temp dir");
    let file = batch_file(
        root.path(),
        "forgot.yaml",
        r#"name: forgot
ops:
  - {id: forgetful, kind: agent, writes: ["memory:note"], args: {cmd: "true"}}
  - {id: careful, kind: agent, writes: ["memory:kept"], args: {cmd: "volley memory put kept yes"}}
  - {id: wants-note, kind: echo, wait_for: [note], args: {text: never}}
  - {id: wants-kept, kind: echo, args: {text: "kept ${memory.kept}"}}
"#,
    );
    let (code, report) = tokio::time::timeout(HANG_GUARD, run_json(root.path(), &file, &[]))
        .await
        .expect("volley run ends instead of waiting forever");
    assert_eq!(code, Some(1), "{report}");
    let wants_note = report_op(&report, "wants-note");
    assert_eq!(wants_note["state"], "skipped", "{report}");
    assert_eq!(
        wants_note["error"],
        "key `note` will never be written: its writer `forgetful` succeeded without writing it"
    );
    let wants_kept = report_op(&report, "wants-kept");
    assert_eq!(wants_kept["state"], "succeeded", "{report}");
    assert_eq!(wants_kept["output"], "kept yes", "{report}");
}

#[tokio::test]
async fn a_shared_store_as_cut_short_by_a_dying_coordinator_is_written_by_the_next() {
    let redis = RedisServer::start().expect("redis-server starts");
    let mut fleet = Fleet::start(redis, 1, &[]).await;
    // c0 comes back with the test-only fault point of debug builds: it dies
    // right after recording the producer's completion, before the shared
    // write.
    fleet.kill_coordinator(0).await;
    let port = fleet.coordinators[0].0;
    let faulty = volley()
        .args([
            "coordinator",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--redis",
            &fleet.redis.url(),
            "--id",
            "c0",
        ])
        .env("VOLLEY_TEST_FAULT", "after-complete")
        .env("VOLLEY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("coordinator starts");
    fleet.coordinators[0].1 = Some(faulty);
    fleet.client = common::connect_with_deadline(&fleet.url(), Duration::from_secs(20)).await;
    fleet.add_worker("w0", &[]).await;
    fleet.wait_for_workers(1).await;

    let consumer_file = batch_file(
        fleet.root.path(),
        "consumer.yaml",
        "name: consumer\nnamespace: pipeline\nops:\n  - {id: use, kind: echo, args: {text: \"got ${memory.result}\"}}\n",
    );
    let consumer = fleet
        .client
        .submit(volley_client::read_batch_file(&consumer_file).expect("batch"))
        .await
        .expect("submit the consumer")
        .batch_id;
    let producer_file = batch_file(
        fleet.root.path(),
        "producer.yaml",
        "name: producer\nnamespace: pipeline\nops:\n  - {id: make, kind: echo, store_as: result, args: {text: forty-two}}\n",
    );
    let producer = fleet
        .client
        .submit(volley_client::read_batch_file(&producer_file).expect("batch"))
        .await
        .expect("submit the producer")
        .batch_id;

    // c0 recorded the op and died where the fault point is.
    let mut faulty = fleet.coordinators[0].1.take().expect("c0 running");
    let status = tokio::time::timeout(HANG_GUARD, faulty.wait())
        .await
        .expect("c0 reaches the fault point")
        .expect("wait for c0");
    assert_eq!(status.code(), Some(86), "c0 exited at the fault point");
    let mut stderr = String::new();
    if let Some(mut pipe) = faulty.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = pipe.read_to_string(&mut stderr).await;
    }
    assert!(
        stderr.contains("VOLLEY_TEST_FAULT=after-complete"),
        "{stderr}"
    );

    // A coordinator without the fault takes over: it drains the outbox, the
    // key appears, and the consumer runs with it.
    fleet.start_coordinator(0).await;
    fleet.client = common::connect_with_deadline(&fleet.url(), Duration::from_secs(20)).await;
    let scope = volley_client::Scope::Namespace("pipeline".to_owned());
    volley_testkit::wait_until("the shared key is written", || {
        let memory = fleet.client.memory(scope.clone());
        async move {
            matches!(memory.get("result").await, Ok(Some(value)) if value.value == b"forty-two")
        }
    })
    .await;
    let watch = volley()
        .args(["watch", &consumer, "--output", "json"])
        .env("VOLLEY_COORDINATOR", fleet.url())
        .env("VOLLEY_TOKEN", ADMIN_TOKEN)
        .stdin(Stdio::null())
        .output();
    let output = tokio::time::timeout(HANG_GUARD, watch)
        .await
        .expect("the consumer finishes instead of waiting forever")
        .expect("volley watch");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("{error}: {}", String::from_utf8_lossy(&output.stderr)));
    assert_eq!(output.status.code(), Some(0), "{report}");
    assert_eq!(report_op(&report, "use")["output"], "got forty-two");
    // The producer succeeded once; the key was written once.
    let summary = fleet.client.summary(&producer).await.expect("summary");
    assert_eq!(
        summary.state,
        volley_client::v1::BatchState::Succeeded as i32
    );
    let value = fleet
        .client
        .memory(scope)
        .get("result")
        .await
        .expect("get")
        .expect("written");
    assert_eq!(value.version, 1);
}

#[tokio::test]
async fn a_run_if_always_waiter_runs_but_cannot_fill_in_the_missing_key() {
    let root = tempfile::tempdir().expect("temp dir");
    let file = batch_file(
        root.path(),
        "always.yaml",
        r#"name: always-fill
ops:
  - {id: writer, kind: agent, writes: ["memory:answer"], args: {cmd: "exit 3"}}
  - {id: plain, kind: echo, wait_for: [answer], run_if: always, args: {text: ran}}
  - {id: templated, kind: echo, run_if: always, args: {text: "got ${memory.answer}"}}
"#,
    );
    let (code, report) = tokio::time::timeout(HANG_GUARD, run_json(root.path(), &file, &[]))
        .await
        .expect("volley run ends instead of waiting forever");
    assert_eq!(code, Some(1), "{report}");
    let plain = report_op(&report, "plain");
    assert_eq!(plain["state"], "succeeded", "{report}");
    assert_eq!(plain["output"], "ran");
    // It was dispatched: the key it refers to has no value to fill in.
    let templated = report_op(&report, "templated");
    assert_eq!(templated["state"], "failed", "{report}");
    assert_eq!(
        templated["error"],
        "cannot fill in the op's args: args.text: no value for `${memory.answer}`"
    );
}
