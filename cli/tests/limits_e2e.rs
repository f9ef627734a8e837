//! Limits that hold before memory is spent, on real processes: a 300 MB
//! output fails its op ("output exceeded …") while the worker's stream
//! stays up and the next op runs on it; an op's own `max_output` caps it
//! lower; a batch file nested 100,000 levels deep is refused at once.

mod common;

use std::process::Stdio;

use common::{ADMIN_TOKEN, Cluster, batch_file, report_op, run_json, submit_watched_json, volley};

#[tokio::test]
async fn a_300_mb_output_fails_its_op_and_the_worker_carries_on() {
    let cluster = Cluster::start(1).await;
    let file = batch_file(
        cluster.root(),
        "big.yaml",
        r#"name: big-output
on_failure: continue
ops:
  - {id: flood, kind: shell, args: {cmd: "head -c 300000000 /dev/zero"}}
  - {id: small-cap, kind: shell, max_output: 1KB, args: {cmd: "head -c 2000 /dev/zero"}}
  - {id: after, kind: shell, after: [flood], run_if: always, args: {cmd: "echo still here"}}
"#,
    );
    // Some op failed: exit 1, and the report says which and why.
    let (code, report) = submit_watched_json(&cluster, &file).await;
    assert_eq!(code, Some(1), "{report}");
    let op = |id: &str| report_op(&report, id);
    assert_eq!(op("flood")["state"], "failed");
    assert!(
        op("flood")["error"]
            .as_str()
            .unwrap_or("")
            .contains("output exceeded 16777216 bytes"),
        "{}",
        op("flood")
    );
    // Permanent: another attempt would write as much.
    assert_eq!(op("flood")["attempts"], 1);
    assert!(
        op("small-cap")["error"]
            .as_str()
            .unwrap_or("")
            .contains("output exceeded 1000 bytes"),
        "{}",
        op("small-cap")
    );
    // The worker's stream stayed up: the same worker ran the next op.
    assert_eq!(op("after")["state"], "succeeded");
    assert_eq!(op("after")["output"], "still here\n");
    assert_eq!(op("after")["worker"], op("flood")["worker"]);
    assert_eq!(
        cluster.client.workers().await.expect("workers").len(),
        1,
        "the worker is still connected"
    );
}

#[tokio::test]
async fn a_batch_nested_100000_levels_deep_is_refused_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = batch_file(
        dir.path(),
        "deep.yaml",
        &format!(
            "name: deep\nops:\n  - {{id: a, kind: echo, args: {{text: {}x{}}}}}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
    );
    let output = volley()
        .args(["run", file.to_str().expect("utf-8")])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("volley run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("deep.yaml:3:"), "{stderr}");
    assert!(stderr.contains("nested deeper than 64 levels"), "{stderr}");
}

/// `volley run FILE` and `volley submit FILE` on a cluster: both exit 2
/// with a readable list that starts with `error: the batch is invalid`.
async fn invalid_everywhere(name: &str, text: &str, expect: &[&str]) {
    let cluster = Cluster::start(0).await;
    let file = batch_file(cluster.root(), name, text);
    for args in [
        vec!["run", file.to_str().expect("utf-8")],
        vec!["submit", file.to_str().expect("utf-8")],
    ] {
        let output = volley()
            .args(&args)
            .env("VOLLEY_COORDINATOR", &cluster.url)
            .env("VOLLEY_TOKEN", ADMIN_TOKEN)
            .current_dir(cluster.root())
            .stdin(Stdio::null())
            .output()
            .await
            .expect("volley runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: the batch is invalid"),
            "{args:?}: {stderr}"
        );
        for expected in expect {
            assert!(
                stderr.contains(expected),
                "{args:?}: no {expected:?} in {stderr}"
            );
        }
        assert!(!stderr.contains("h2 protocol error"), "{stderr}");
    }
}

#[tokio::test]
async fn forty_problems_are_listed_with_exit_2() {
    let mut text = String::from("name: forty\nops:\n");
    for index in 0..40 {
        text.push_str(&format!(
            "  - {{id: op{index}, kind: echo, after: [nobody{index}], args: {{text: x}}}}\n"
        ));
    }
    invalid_everywhere(
        "forty.yaml",
        &text,
        &["(40 problem(s))", "op `op0`", "nobody0"],
    )
    .await;
}

#[tokio::test]
async fn a_100000_op_cycle_is_refused_with_exit_2() {
    let mut text = String::from("{\"name\": \"cycle\", \"ops\": [");
    let count = 100_000;
    for index in 0..count {
        if index > 0 {
            text.push(',');
        }
        text.push_str(&format!(
            "{{\"id\": \"c{index}\", \"kind\": \"noop\", \"after\": [\"c{}\"]}}",
            (index + 1) % count
        ));
    }
    text.push_str("]}");
    invalid_everywhere("cycle.json", &text, &["cycle"]).await;
}

#[tokio::test]
async fn a_submission_past_its_byte_limits_is_refused_as_it_arrives() {
    let cluster = Cluster::start_with(0, &["--max-batch-bytes", "1MiB"]).await;
    let text = "x".repeat(10_000);
    let mut many = String::from("{\"name\": \"heavy\", \"ops\": [");
    for index in 0..400 {
        if index > 0 {
            many.push(',');
        }
        many.push_str(&format!(
            "{{\"id\": \"op{index}\", \"kind\": \"echo\", \"args\": {{\"text\": \"{text}\"}}}}"
        ));
    }
    many.push_str("]}");
    let huge_arg = format!(
        "{{\"name\": \"one-huge\", \"ops\": [{{\"id\": \"big\", \"kind\": \"echo\", \"args\": {{\"text\": \"{}\"}}}}]}}",
        "y".repeat(1_500_000)
    );
    for (name, text, expected) in [
        ("heavy.json", many, "--max-batch-bytes"),
        ("huge.json", huge_arg, "--max-arg-bytes"),
    ] {
        let file = batch_file(cluster.root(), name, &text);
        let output = volley()
            .args(["submit", file.to_str().expect("utf-8")])
            .env("VOLLEY_COORDINATOR", &cluster.url)
            .env("VOLLEY_TOKEN", ADMIN_TOKEN)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("volley submit");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
    }
    assert!(
        cluster.client.list(10).await.expect("list").is_empty(),
        "nothing was stored"
    );
}

#[tokio::test]
async fn a_300_mb_output_fails_its_op_embedded_too() {
    let root = tempfile::tempdir().expect("temp dir");
    let file = batch_file(
        root.path(),
        "big.yaml",
        r#"name: big-output-embedded
ops:
  - {id: flood, kind: shell, args: {cmd: "head -c 300000000 /dev/zero"}}
  - {id: after, kind: shell, after: [flood], run_if: always, args: {cmd: "echo still here"}}
"#,
    );
    let (code, report) = run_json(root.path(), &file, &[]).await;
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report["ops"][0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("output exceeded 16777216 bytes"),
        "{report}"
    );
    assert_eq!(report["ops"][1]["output"], "still here\n");
}
