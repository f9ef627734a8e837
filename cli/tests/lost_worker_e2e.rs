//! A lost worker is not the op's fault, proven with real processes: a
//! worker killed (-9) under an op with the default `attempts: 1` costs the
//! op nothing — it runs again on another worker and the batch succeeds —
//! and what the user reads names the lost worker and says when, as a time.
//! With `retry: {lost_worker: 0}` the loss is a failure, and the report
//! keeps the worker. Nothing asserts how long anything took.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{ADMIN_TOKEN, Cluster, batch_file, volley};

/// Short leases: a lease running out is the point here.
const SHORT_LEASE: &[&str] = &["--lease", "2s", "--resync-interval", "200ms"];
/// Only a guard against hanging; never asserted on.
const HANG_GUARD: Duration = Duration::from_secs(90);

/// One shell op (default attempts) that logs each run; its first run hangs
/// until its worker is killed.
fn first_run_hangs(extra: &str) -> String {
    format!(
        "name: lost\n{extra}ops:\n  - {{id: slow, kind: shell, args: {{cmd: 'echo run >> runs.txt; if [ $(wc -l < runs.txt) -eq 1 ]; then sleep 600; fi; echo done'}}}}\n"
    )
}

/// Waits until `runs.txt` in `root` has a line: the op is running.
async fn first_run_started(root: &Path) {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while std::fs::read_to_string(root.join("runs.txt"))
        .unwrap_or_default()
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the op never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `volley submit FILE --watch ARGS…` started in the background.
fn submit_watched(cluster: &Cluster, file: &Path, args: &[&str]) -> tokio::process::Child {
    let mut all = vec!["submit", file.to_str().expect("utf-8"), "--watch"];
    all.extend_from_slice(args);
    common::client_process(&cluster.url, &all)
}

/// Kills worker `w1` (the only one) once the op runs on it, and starts `w2`.
async fn lose_the_first_worker(cluster: &mut Cluster) {
    first_run_started(cluster.root()).await;
    Cluster::signal(&cluster.workers[0], "KILL");
    cluster.add_worker("w2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_costs_an_op_with_one_attempt_nothing() {
    let mut cluster = Cluster::start_with(0, SHORT_LEASE).await;
    cluster.add_worker("w1").await;
    cluster
        .client
        .wait_for_workers(1, HANG_GUARD)
        .await
        .expect("w1 connects");
    let file = batch_file(cluster.root(), "lost.yaml", &first_run_hangs(""));
    let watcher = submit_watched(&cluster, &file, &[]);
    lose_the_first_worker(&mut cluster).await;
    let output = tokio::time::timeout(HANG_GUARD, watcher.wait_with_output())
        .await
        .expect("submit --watch ends")
        .expect("submit --watch runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    // The event lines say which worker was lost, and when, as a time.
    let retrying = stderr
        .lines()
        .find(|line| line.contains("retrying  slow:"))
        .unwrap_or_else(|| panic!("no retrying line in:\n{stderr}"));
    assert!(
        retrying.contains("lost: worker `w1` stopped renewing its lease (ran out at 20"),
        "{retrying}"
    );
    assert!(
        retrying.contains("Z); runs again (lost-worker retry 1 of 3)"),
        "{retrying}"
    );
    assert!(
        !retrying.contains("lease ran out at 1"),
        "epoch ms: {retrying}"
    );
    let runs = std::fs::read_to_string(cluster.root().join("runs.txt")).expect("runs");
    assert_eq!(runs.lines().count(), 2, "{runs}");
    let status = cluster
        .client
        .status(stdout_batch_id(&stderr))
        .await
        .expect("status");
    let op = &status.ops[0];
    assert_eq!((op.worker.as_str(), op.attempts), ("w2", 2));
    assert_eq!(op.output.trim(), "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_lost_worker_retries_the_loss_fails_the_op_and_names_the_worker() {
    let mut cluster = Cluster::start_with(0, SHORT_LEASE).await;
    cluster.add_worker("w1").await;
    cluster
        .client
        .wait_for_workers(1, HANG_GUARD)
        .await
        .expect("w1 connects");
    let file = batch_file(
        cluster.root(),
        "lost.yaml",
        &first_run_hangs("retry: {lost_worker: 0}\n"),
    );
    let watcher = submit_watched(&cluster, &file, &["--output", "json"]);
    lose_the_first_worker(&mut cluster).await;
    let output = tokio::time::timeout(HANG_GUARD, watcher.wait_with_output())
        .await
        .expect("submit --watch ends")
        .expect("submit --watch runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr:\n{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    let op = common::report_op(&report, "slow");
    assert_eq!(op["state"], "failed", "{op}");
    assert_eq!(op["worker"], "w1", "{op}");
    // Its real duration: from its start until its lease ran out, not 0.
    assert!(op["duration_ms"].as_u64().is_some_and(|ms| ms > 0), "{op}");
    assert!(op["started_ms"].as_u64().is_some_and(|ms| ms > 0), "{op}");
    let error = op["error"].as_str().expect("an error");
    assert!(
        error.starts_with("lost: worker `w1` stopped renewing its lease (ran out at 20")
            && error.ends_with("Z)"),
        "{error}"
    );
    // `volley why` says the same, names and time as they are.
    let batch_id = report["batch_id"].as_str().expect("batch id");
    let why = volley()
        .args(["why", batch_id, "slow"])
        .env("VOLLEY_COORDINATOR", &cluster.url)
        .env("VOLLEY_TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .expect("volley why");
    let why_stdout = String::from_utf8_lossy(&why.stdout);
    assert!(
        why_stdout.contains(&format!("it has ended (failed): {error}")),
        "{why_stdout}"
    );
    // A bad budget is refused before anything runs.
    let bad = batch_file(
        cluster.root(),
        "bad.yaml",
        &first_run_hangs("retry: {lost_worker: 1000}\n"),
    );
    let refused = volley()
        .args(["submit", bad.to_str().expect("utf-8")])
        .env("VOLLEY_COORDINATOR", &cluster.url)
        .env("VOLLEY_TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .expect("volley submit");
    let refused_stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{refused_stderr}");
    assert!(
        refused_stderr.contains("1000 lost-worker retries; the most is 100"),
        "{refused_stderr}"
    );
}

/// The batch id from `submit --watch`'s "batch ID submitted: N ops" line.
fn stdout_batch_id(stderr: &str) -> &str {
    stderr
        .lines()
        .find_map(|line| line.strip_prefix("batch ")?.split(' ').next())
        .unwrap_or_else(|| panic!("no batch id in:\n{stderr}"))
}
