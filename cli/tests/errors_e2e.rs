//! Errors a newcomer meets in the first hour (issue 16), each as the real
//! binary prints it: what is wrong, where, and what to do. `volley run`
//! checks in-process; `volley submit` is checked by a real coordinator.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::{ADMIN_TOKEN, Cluster, batch_file, report_op, submit_watched_json, volley};

/// Every command here ends well within this, or the test fails.
const HANG_GUARD: Duration = Duration::from_secs(60);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn run_in(dir: &Path, args: &[&str]) -> Output {
    let command = volley()
        .args(["run"])
        .args(args)
        .current_dir(dir)
        .env("VOLLEY_LOG", "error")
        .stdin(Stdio::null())
        .output();
    tokio::time::timeout(HANG_GUARD, command)
        .await
        .expect("volley run ends")
        .expect("volley runs")
}

async fn submit_to(url: &str, dir: &Path, args: &[&str]) -> Output {
    let command = volley()
        .args(["submit"])
        .args(args)
        .current_dir(dir)
        .env("VOLLEY_COORDINATOR", url)
        .env("VOLLEY_TOKEN", ADMIN_TOKEN)
        .env("VOLLEY_LOG", "error")
        .stdin(Stdio::null())
        .output();
    tokio::time::timeout(HANG_GUARD, command)
        .await
        .expect("volley submit ends")
        .expect("volley submit runs")
}

const TYPOS: &str = "ops:
  - id: a
    kind: shell
    timout: 5s
    args:
      cmd: ls
  - id: b
    kind: shell
    cmd: ls
";

#[tokio::test]
async fn every_unknown_field_is_named_at_once_with_a_did_you_mean_or_its_place() {
    let dir = tempfile::tempdir().expect("dir");
    batch_file(dir.path(), "typos.yaml", TYPOS);
    let output = run_in(dir.path(), &["typos.yaml"]).await;
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        text(&output.stderr),
        "error: typos.yaml: 2 unknown field(s); nothing ran:
  op `a`: field `timout` (line 4): unknown field; did you mean `timeout`?
  op `b`: field `cmd` (line 9): unknown field: `cmd` belongs under `args:` (kind `shell` takes `cmd`); indent it under `args:`
"
    );
    assert!(output.stdout.is_empty());
}

#[tokio::test]
async fn a_plain_text_file_is_told_what_a_batch_file_is() {
    let dir = tempfile::tempdir().expect("dir");
    batch_file(dir.path(), "notes.txt", "run the tests please\n");
    let output = run_in(dir.path(), &["notes.txt"]).await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert_eq!(
        stderr,
        "error: notes.txt: a batch file is a YAML or JSON mapping with `ops:` (a list of ops, each with `id`, `kind` and `args`) and optional batch settings; line 1 is plain text\n"
    );
    assert!(!stderr.contains("BatchFile"), "{stderr}");
}

#[tokio::test]
async fn no_coordinator_says_how_to_get_one_once_and_exits_3() {
    let dir = tempfile::tempdir().expect("dir");
    batch_file(dir.path(), "b.yaml", "ops:\n  - {id: a, kind: noop}\n");
    let url = format!("http://127.0.0.1:{}", common::free_port());
    let output = submit_to(&url, dir.path(), &["b.yaml"]).await;
    assert_eq!(output.status.code(), Some(3));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "hint: no coordinator at {url}: start one with `volley up` (or `volley run FILE` to run without a cluster), or point VOLLEY_COORDINATOR / --coordinator at yours\n"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("error: cannot reach the coordinator at {url}: ")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("tcp connect error: tcp connect error"),
        "{stderr}"
    );
}

const BAD_REGEX: &str = "ops:
  - id: g
    kind: grep
    args:
      pattern: \"fn (main\"
      path: .
";

#[tokio::test]
async fn a_bad_regex_is_refused_before_anything_runs_in_run_and_on_a_cluster() {
    let dir = tempfile::tempdir().expect("dir");
    batch_file(dir.path(), "grep.yaml", BAD_REGEX);
    let expected = "error: the batch is invalid (1 problem(s)); nothing ran:
  op `g`: field `args.pattern`: invalid regex `fn (main`: unclosed group
";
    let output = run_in(dir.path(), &["grep.yaml"]).await;
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(text(&output.stderr), expected);

    let cluster = Cluster::start(1).await;
    let output = submit_to(&cluster.url, dir.path(), &["grep.yaml"]).await;
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(text(&output.stderr), expected);
    assert!(
        output.stdout.is_empty(),
        "no batch id: nothing was accepted"
    );
}

#[tokio::test]
async fn json_mode_prints_invalid_batches_as_one_json_document() {
    let dir = tempfile::tempdir().expect("dir");
    batch_file(dir.path(), "typos.yaml", TYPOS);
    batch_file(dir.path(), "grep.yaml", BAD_REGEX);

    // A file problem, from `volley run`.
    let output = run_in(dir.path(), &["typos.yaml", "--output", "json"]).await;
    assert_eq!(output.status.code(), Some(2));
    let document: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON document on stdout");
    assert_eq!(document["error"], "invalid");
    assert_eq!(document["total"], 2);
    assert_eq!(
        document["problems"][0],
        serde_json::json!({"op": "a", "field": "timout", "line": 4, "message": "unknown field; did you mean `timeout`?"})
    );
    assert_eq!(document["problems"][1]["field"], "cmd");
    assert!(text(&output.stderr).is_empty(), "{}", text(&output.stderr));

    // A validation problem, from `volley run` and from a coordinator.
    let output = run_in(dir.path(), &["grep.yaml", "--output", "json"]).await;
    assert_eq!(output.status.code(), Some(2));
    let from_run: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON document on stdout");
    let cluster = Cluster::start(1).await;
    let output = submit_to(&cluster.url, dir.path(), &["grep.yaml", "--output", "json"]).await;
    assert_eq!(output.status.code(), Some(2));
    let from_submit: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON document on stdout");
    for document in [from_run, from_submit] {
        assert_eq!(document["error"], "invalid", "{document}");
        assert_eq!(
            document["problems"],
            serde_json::json!([{"op": "g", "field": "args.pattern", "line": null, "message": "invalid regex `fn (main`: unclosed group"}]),
            "{document}"
        );
    }
}

#[tokio::test]
async fn a_small_bare_duration_is_warned_about_and_a_unit_silences_it() {
    let dir = tempfile::tempdir().expect("dir");
    batch_file(
        dir.path(),
        "bare.yaml",
        "ops:\n  - id: a\n    kind: noop\n    timeout: 30\n  - id: b\n    kind: noop\n    timeout: 30ms\n",
    );
    let output = run_in(dir.path(), &["bare.yaml", "--output", "json"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stderr),
        "warning: op `a`: `timeout: 30` is 30 ms; write `30s` if you meant seconds (write `30ms` to silence this)\n"
    );
    let cluster = Cluster::start(1).await;
    let output = submit_to(&cluster.url, dir.path(), &["bare.yaml"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("warning: op `a`: `timeout: 30` is 30 ms"),
        "{}",
        text(&output.stderr)
    );
}

#[tokio::test]
async fn a_missing_cwd_on_a_worker_is_named_with_where_it_resolved() {
    let cluster = Cluster::start(1).await;
    let dir = tempfile::tempdir().expect("dir");
    let file = batch_file(
        dir.path(),
        "cwd.yaml",
        "ops:\n  - id: a\n    kind: shell\n    args: {cmd: pwd, cwd: alpha}\n",
    );
    let (code, report) = tokio::time::timeout(HANG_GUARD, submit_watched_json(&cluster, &file))
        .await
        .expect("submit --watch ends");
    assert_eq!(code, Some(1), "{report}");
    let op = report_op(&report, "a");
    let resolved = cluster.root().canonicalize().expect("root").join("alpha");
    let expected = format!(
        "cwd `alpha` (resolved to {}) does not exist on this worker (a relative cwd resolves against the worker's --root)",
        resolved.display()
    );
    assert!(op.to_string().contains(&expected), "{op}");
    assert!(!op.to_string().contains("could not start sh"), "{op}");
}

#[tokio::test]
async fn run_refuses_paths_leaving_its_root_and_root_sets_where_paths_resolve() {
    let dir = tempfile::tempdir().expect("dir");
    let root = dir.path().join("project");
    std::fs::create_dir_all(root.join("sub")).expect("root");
    std::fs::write(root.join("sub/note.txt"), "inside").expect("file");
    let canonical_root = root.canonicalize().expect("canonical root");
    batch_file(
        dir.path(),
        "escape.yaml",
        "ops:\n  - {id: r, kind: read, args: {path: /etc/hostname}}\n  - {id: s, kind: shell, args: {cmd: pwd, cwd: ../up}}\n  - {id: g, kind: grep, args: {pattern: x, path: sub/../../..}}\n",
    );
    let output = run_in(dir.path(), &["escape.yaml", "--root", "project"]).await;
    assert_eq!(output.status.code(), Some(2));
    let root_text = canonical_root.display();
    assert_eq!(
        text(&output.stderr),
        format!(
            "error: the batch is invalid (3 problem(s)); nothing ran:
  op `r`: field `args.path`: `/etc/hostname` is outside the root {root_text}: paths resolve against it; give a path inside it, or choose the root with `volley run --root DIR`
  op `s`: field `args.cwd`: `../up` is outside the root {root_text}: paths resolve against it; give a path inside it, or choose the root with `volley run --root DIR`
  op `g`: field `args.path`: `sub/../../..` is outside the root {root_text}: paths resolve against it; give a path inside it, or choose the root with `volley run --root DIR`
"
        )
    );

    // Inside the root: relative paths and `cwd` resolve against --root.
    batch_file(
        dir.path(),
        "inside.yaml",
        "ops:\n  - {id: r, kind: read, args: {path: sub/note.txt}}\n  - {id: s, kind: shell, args: {cmd: pwd, cwd: sub}}\n",
    );
    let output = run_in(
        dir.path(),
        &["inside.yaml", "--root", "project", "--output", "json"],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("report");
    assert_eq!(report_op(&report, "r")["output"], "inside");
    assert_eq!(
        report_op(&report, "s")["output"].as_str().map(str::trim),
        Some(canonical_root.join("sub").to_str().expect("utf-8"))
    );

    // A root that is not there is refused before anything starts.
    let output = run_in(dir.path(), &["inside.yaml", "--root", "missing"]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).starts_with("error: --root missing: "),
        "{}",
        text(&output.stderr)
    );
}

#[tokio::test]
async fn a_cluster_refuses_a_file_path_climbing_above_any_root() {
    let cluster = Cluster::start(1).await;
    let dir = tempfile::tempdir().expect("dir");
    batch_file(
        dir.path(),
        "climb.yaml",
        "ops:\n  - {id: r, kind: read, args: {path: ../secrets.txt}}\n",
    );
    let output = submit_to(&cluster.url, dir.path(), &["climb.yaml"]).await;
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        text(&output.stderr),
        "error: the batch is invalid (1 problem(s)); nothing ran:
  op `r`: field `args.path`: `../secrets.txt` climbs above the worker's root, where no file op may reach: paths resolve against the worker's --root (`volley run`: its --root, or the current directory); give a path inside it
"
    );
}
