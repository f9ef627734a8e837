//! Watches end: `volley watch ID --after N` with N at or past the batch's
//! last event ends (with the report and the batch's exit code) once the
//! batch has ended — at once for a finished batch, and when a running one
//! finishes — instead of reconnecting forever.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{ADMIN_TOKEN, Cluster, batch_file, volley};

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
