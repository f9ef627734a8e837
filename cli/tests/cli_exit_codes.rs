//! The CLI contract's exit codes, each from the real binary: 0 all
//! succeeded, 1 some op failed, 2 invalid batch or command line, 3 cluster
//! unreachable. Plus `--output json`'s documented fields.

mod common;

use std::process::Output;

async fn volley(dir: &std::path::Path, args: &[&str]) -> Output {
    common::volley()
        .args(args)
        .current_dir(dir)
        .env("VOLLEY_LOG", "error")
        .output()
        .await
        .expect("volley runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn run_exits_0_when_every_op_succeeds_and_prints_the_speedup_last() {
    let dir = tempfile::tempdir().expect("dir");
    common::batch_file(
        dir.path(),
        "ok.yaml",
        "name: ok\nops:\n  - {id: a, kind: echo, args: {text: hi}}\n  - {id: b, kind: echo, after: [a], args: {text: '${ops.a.output} there'}}\n",
    );
    let output = volley(dir.path(), &["run", "ok.yaml"]).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        text(&output.stderr)
    );
    let stdout = text(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.contains("speedup"),
        "last line is the speedup line: {stdout}"
    );
    assert!(stdout.contains("critical path"), "{stdout}");
    assert!(stdout.contains("hi there"), "{stdout}");
}

#[tokio::test]
async fn run_json_has_the_documented_fields() {
    let dir = tempfile::tempdir().expect("dir");
    common::batch_file(
        dir.path(),
        "ok.json",
        r#"{"name": "j", "ops": [{"id": "a", "kind": "echo", "args": {"text": "hi"}}]}"#,
    );
    let output = volley(dir.path(), &["run", "ok.json", "--output", "json"]).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        text(&output.stderr)
    );
    let document: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON document on stdout");
    for field in [
        "batch_id",
        "state",
        "wall_ms",
        "sequential_ms",
        "speedup",
        "ops",
    ] {
        assert!(document.get(field).is_some(), "missing {field}: {document}");
    }
    assert_eq!(document["state"], "succeeded");
    let op = &document["ops"][0];
    for field in [
        "id",
        "kind",
        "state",
        "attempts",
        "worker",
        "started_ms",
        "duration_ms",
        "output",
        "error",
    ] {
        assert!(op.get(field).is_some(), "op missing {field}: {op}");
    }
    assert_eq!(op["output"], "hi");
}

#[tokio::test]
async fn run_exits_1_when_an_op_fails() {
    let dir = tempfile::tempdir().expect("dir");
    common::batch_file(
        dir.path(),
        "fail.yaml",
        "ops:\n  - {id: bad, kind: shell, args: {cmd: 'exit 7'}}\n  - {id: next, kind: noop, after: [bad]}\n",
    );
    let output = volley(dir.path(), &["run", "fail.yaml"]).await;
    assert_eq!(
        output.status.code(),
        Some(1),
        "stderr: {}",
        text(&output.stderr)
    );
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("failed") && stdout.contains("skipped"),
        "{stdout}"
    );
}

#[tokio::test]
async fn run_exits_2_on_a_cycle_naming_its_ops_in_order() {
    let dir = tempfile::tempdir().expect("dir");
    common::batch_file(
        dir.path(),
        "cycle.yaml",
        "ops:\n  - {id: a, kind: noop, after: [c]}\n  - {id: b, kind: noop, after: [a]}\n  - {id: c, kind: noop, after: [b]}\n",
    );
    let output = volley(dir.path(), &["run", "cycle.yaml"]).await;
    assert_eq!(
        output.status.code(),
        Some(2),
        "stderr: {}",
        text(&output.stderr)
    );
    let stderr = text(&output.stderr);
    assert!(stderr.contains("cycle"), "{stderr}");
    assert!(
        ["a -> b -> c -> a", "b -> c -> a -> b", "c -> a -> b -> c"]
            .iter()
            .any(|cycle| stderr.contains(cycle)),
        "the cycle's ops in order: {stderr}"
    );
    assert!(output.stdout.is_empty(), "nothing ran, nothing reported");
}

#[tokio::test]
async fn run_exits_2_on_a_syntax_error_with_line_and_column() {
    let dir = tempfile::tempdir().expect("dir");
    common::batch_file(
        dir.path(),
        "broken.yaml",
        "name: x\nops:\n  - id: a\n    kind: [noop\n",
    );
    let output = volley(dir.path(), &["run", "broken.yaml"]).await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("broken.yaml:"), "names the file: {stderr}");
    assert!(
        stderr.chars().any(|character| character.is_ascii_digit()),
        "has a line: {stderr}"
    );
}

#[tokio::test]
async fn run_exits_2_on_a_bad_field_naming_op_and_field() {
    let dir = tempfile::tempdir().expect("dir");
    common::batch_file(
        dir.path(),
        "bad.yaml",
        "ops:\n  - {id: a, kind: echo, args: {txt: hi}}\n  - {id: b, kind: noop, after: [nope]}\n",
    );
    let output = volley(dir.path(), &["run", "bad.yaml"]).await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("op `a`") && stderr.contains("args"),
        "{stderr}"
    );
    assert!(
        stderr.contains("op `b`") && stderr.contains("after") && stderr.contains("nope"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_bad_command_line_exits_2() {
    let dir = tempfile::tempdir().expect("dir");
    let output = volley(dir.path(), &["run", "--no-such-flag", "x.yaml"]).await;
    assert_eq!(output.status.code(), Some(2));
    let output = volley(dir.path(), &["run", "missing.yaml"]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("missing.yaml"));
}

#[tokio::test]
async fn submit_exits_3_when_the_cluster_is_unreachable() {
    let dir = tempfile::tempdir().expect("dir");
    common::batch_file(dir.path(), "ok.yaml", "ops:\n  - {id: a, kind: noop}\n");
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let output = volley(dir.path(), &["submit", "ok.yaml", "--coordinator", &url]).await;
    assert_eq!(
        output.status.code(),
        Some(3),
        "stderr: {}",
        text(&output.stderr)
    );
    assert!(text(&output.stderr).contains(&url));
    let output = volley(dir.path(), &["status", "some-id", "--coordinator", &url]).await;
    assert_eq!(output.status.code(), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_watch_status_against_a_cluster() {
    let cluster = common::Cluster::start(2).await;
    let dir = cluster.root();
    common::batch_file(
        dir,
        "ok.yaml",
        "name: cluster\nops:\n  - {id: a, kind: echo, args: {text: one}}\n  - {id: b, kind: write, after: [a], args: {path: out.txt, content: '${ops.a.output}'}}\n",
    );
    let output = volley(
        dir,
        &[
            "submit",
            "ok.yaml",
            "--coordinator",
            &cluster.url,
            "--watch",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        text(&output.stderr)
    );
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(document["state"], "succeeded");
    assert_eq!(
        std::fs::read_to_string(dir.join("out.txt")).expect("written"),
        "one"
    );
    let batch_id = document["batch_id"].as_str().expect("batch id").to_owned();
    let output = volley(dir, &["status", &batch_id, "--coordinator", &cluster.url]).await;
    assert_eq!(output.status.code(), Some(0));
    assert!(text(&output.stdout).contains("speedup"));

    common::batch_file(
        dir,
        "fail.yaml",
        "ops:\n  - {id: bad, kind: shell, args: {cmd: 'exit 1'}}\n",
    );
    let output = volley(
        dir,
        &[
            "submit",
            "fail.yaml",
            "--coordinator",
            &cluster.url,
            "--watch",
        ],
    )
    .await;
    assert_eq!(
        output.status.code(),
        Some(1),
        "stderr: {}",
        text(&output.stderr)
    );
    let output = volley(
        dir,
        &["status", "no-such-batch", "--coordinator", &cluster.url],
    )
    .await;
    assert_eq!(
        output.status.code(),
        Some(2),
        "unknown batch id is a bad command line"
    );
    let output = volley(dir, &["submit", "ok.yaml", "--coordinator", &cluster.url]).await;
    assert_eq!(output.status.code(), Some(0));
    let batch_id = text(&output.stdout).trim().to_owned();
    let output = volley(dir, &["watch", &batch_id, "--coordinator", &cluster.url]).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        text(&output.stderr)
    );
}

#[tokio::test]
async fn strict_turns_an_allowed_unwritten_wait_into_exit_2_and_without_it_a_warning() {
    let dir = tempfile::tempdir().expect("dir");
    common::batch_file(
        dir.path(),
        "waits.yaml",
        "ops:\n  - {id: waiter, kind: echo, wait_for: [nobody/writes], wait_timeout: 300ms, args: {text: hi}}\n",
    );
    let output = volley(
        dir.path(),
        &["run", "waits.yaml", "--allow-unwritten", "--strict"],
    )
    .await;
    assert_eq!(
        output.status.code(),
        Some(2),
        "stderr: {}",
        text(&output.stderr)
    );
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("op `waiter`")
            && stderr.contains("wait_for")
            && stderr.contains("nobody/writes"),
        "{stderr}"
    );

    let output = volley(dir.path(), &["run", "waits.yaml", "--allow-unwritten"]).await;
    assert_eq!(
        output.status.code(),
        Some(1),
        "the wait times out: {}",
        text(&output.stderr)
    );
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("warning:") && stderr.contains("nobody/writes"),
        "{stderr}"
    );
    assert!(
        text(&output.stdout).contains("never appeared"),
        "{}",
        text(&output.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_commands_against_a_cluster() {
    let cluster = common::Cluster::start(1).await;
    let dir = cluster.root();
    let url = cluster.url.clone();
    let memory = |args: &[&str]| {
        let mut all = vec![
            "memory",
            "--coordinator",
            url.as_str(),
            "--namespace",
            "cli-e2e",
        ];
        all.extend_from_slice(args);
        all.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        volley(dir, &refs).await
    };
    assert_eq!(
        run(memory(&["put", "plan/a", "first"])).await.status.code(),
        Some(0)
    );
    let got = run(memory(&["get", "plan/a"])).await;
    assert_eq!(
        (got.status.code(), text(&got.stdout)),
        (Some(0), "first".to_owned()),
        "raw value, no newline"
    );
    let json_get = run(memory(&["get", "plan/a", "--output", "json"])).await;
    let document: serde_json::Value = serde_json::from_slice(&json_get.stdout).expect("json");
    assert_eq!(
        (document["value"].as_str(), document["version"].as_u64()),
        (Some("first"), Some(1))
    );
    let conflict = run(memory(&["put", "plan/a", "x", "--if-version", "7"])).await;
    assert_eq!(
        conflict.status.code(),
        Some(1),
        "{}",
        text(&conflict.stderr)
    );
    assert!(
        text(&conflict.stderr).contains("version"),
        "{}",
        text(&conflict.stderr)
    );
    assert_eq!(
        text(&run(memory(&["incr", "n", "5"])).await.stdout).trim(),
        "5"
    );
    assert_eq!(
        text(&run(memory(&["incr", "n", "-2"])).await.stdout).trim(),
        "3"
    );
    let listed = text(&run(memory(&["ls", "plan/"])).await.stdout);
    assert!(listed.starts_with("plan/a\tv1"), "{listed}");
    let keys = text(&run(memory(&["ls", "plan/", "--keys"])).await.stdout);
    assert_eq!(keys, "plan/a\n", "one key a line, nothing else");
    let missing = run(memory(&["get", "nope"])).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("nope"));
    let waited = run(memory(&["wait", "later", "--timeout", "300ms"])).await;
    assert_eq!(
        waited.status.code(),
        Some(1),
        "timed out: {}",
        text(&waited.stderr)
    );
    assert_eq!(run(memory(&["del", "plan/a"])).await.status.code(), Some(0));
    assert_eq!(run(memory(&["get", "plan/a"])).await.status.code(), Some(1));
    // Naming no scope is a usage error; no cluster is exit 3.
    let unscoped = volley(dir, &["memory", "--coordinator", &url, "get", "k"]).await;
    assert_eq!(unscoped.status.code(), Some(2));
    let port = common::free_port();
    let nowhere = format!("http://127.0.0.1:{port}");
    let unreachable = volley(
        dir,
        &[
            "memory",
            "--coordinator",
            &nowhere,
            "--namespace",
            "x",
            "get",
            "k",
        ],
    )
    .await;
    assert_eq!(unreachable.status.code(), Some(3));
}

/// A report bigger than one status page (2,000 ops) comes whole, in order,
/// with the first page's critical path; the table still puts a failure
/// found on a later page first.
#[tokio::test]
async fn run_reports_a_batch_of_several_status_pages_whole() {
    let dir = tempfile::tempdir().expect("dir");
    let count = 4_500;
    let failing = 4_321;
    let ops: Vec<serde_json::Value> = (0..count)
        .map(|index| match index {
            0 => serde_json::json!({"id": "op-0", "kind": "noop"}),
            1 => serde_json::json!({"id": "op-1", "kind": "noop", "after": ["op-0"]}),
            index if index == failing => serde_json::json!({
                "id": format!("op-{index}"), "kind": "read", "args": {"path": "missing.txt"}
            }),
            index => serde_json::json!({"id": format!("op-{index}"), "kind": "noop"}),
        })
        .collect();
    common::batch_file(
        dir.path(),
        "big.json",
        &serde_json::json!({"name": "big", "ops": ops}).to_string(),
    );
    let output = volley(dir.path(), &["run", "big.json", "--output", "json"]).await;
    assert_eq!(
        output.status.code(),
        Some(1),
        "stderr: {}",
        text(&output.stderr)
    );
    let document: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON document on stdout");
    let listed = document["ops"].as_array().expect("ops");
    assert_eq!(listed.len(), count);
    for (index, op) in listed.iter().enumerate() {
        assert_eq!(op["id"], format!("op-{index}"));
    }
    assert_eq!(listed[1]["after"], serde_json::json!(["op-0"]));
    assert_eq!(listed[failing]["state"], "failed");
    assert_eq!(document["total"], count);
    assert_eq!(document["failed"], 1);
    assert!(
        !document["critical_path"]
            .as_array()
            .expect("critical_path")
            .is_empty(),
        "{}",
        document["critical_path"]
    );

    let output = volley(dir.path(), &["run", "big.json"]).await;
    assert_eq!(output.status.code(), Some(1));
    let stdout = text(&output.stdout);
    assert!(stdout.contains(&format!("op-{failing}")), "{stdout}");
    assert!(
        stdout.contains(&format!("… and {} more ops", count - 200)),
        "{stdout}"
    );
}
