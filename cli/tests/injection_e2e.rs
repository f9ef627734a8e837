//! Hostile data stays data: an op's output (or a memory value) filled into
//! a later `shell` op's command is never parsed as shell syntax, whatever
//! it holds — quotes, `$(…)`, backticks, `;`, newlines — embedded
//! (`volley run`) and on a cluster of real processes. Filled outputs lose
//! their trailing newlines, as `$(…)` does.

mod common;

use common::{Cluster, batch_file, report_op, run_json, submit_watched_json};
use std::path::Path;

/// The five forms that ran commands before, and what `use` must print.
const BATCH: &str = r#"name: injection
ops:
  - {id: q1, kind: echo, args: {text: "x'; touch PWNED1; echo '"}}
  - {id: q2, kind: echo, args: {text: "$(touch PWNED2)"}}
  - {id: q3, kind: echo, args: {text: "`touch PWNED3`"}}
  - {id: q4, kind: echo, args: {text: "a\"; touch PWNED4; echo \"b"}}
  - {id: q5, kind: shell, args: {cmd: "printf 'hi\\n touch PWNED5\\n'"}}
  - {id: q6, kind: memory.put, args: {key: note, value: "; touch PWNED6 #"}}
  - id: use
    kind: shell
    after: [q6]
    args: {cmd: "printf '%s|' '${ops.q1.output}' \"${ops.q2.output}\" ${ops.q3.output} '[${ops.q4.output}]' \"${ops.q5.output}\" ${memory.note}"}
  - {id: nl, kind: shell, args: {cmd: "echo hi"}}
  - {id: wrap, kind: shell, args: {cmd: "echo '[${ops.nl.output}]'"}}
"#;

const EXPECTED_USE: &str = "x'; touch PWNED1; echo '|$(touch PWNED2)|`touch PWNED3`|[a\"; touch PWNED4; echo \"b]|hi\n touch PWNED5|; touch PWNED6 #|";

fn check_report(report: &serde_json::Value, root: &Path) {
    assert_eq!(report["state"], "succeeded", "{report}");
    let output = |id: &str| {
        report_op(report, id)["output"]
            .as_str()
            .unwrap_or_else(|| panic!("op {id} has no output in {report}"))
            .to_owned()
    };
    assert_eq!(output("use"), EXPECTED_USE);
    // Filled without its trailing newline; the report keeps the raw output.
    assert_eq!(output("wrap"), "[hi]\n");
    assert_eq!(output("nl"), "hi\n");
    let pwned: Vec<_> = std::fs::read_dir(root)
        .expect("read the root")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("PWNED"))
        .collect();
    assert!(
        pwned.is_empty(),
        "a filled value ran as a command: {pwned:?}"
    );
}

#[tokio::test]
async fn hostile_outputs_filled_into_a_shell_command_stay_data_embedded() {
    let root = tempfile::tempdir().expect("temp dir");
    let file = batch_file(root.path(), "injection.yaml", BATCH);
    let (code, report) = run_json(root.path(), &file, &[]).await;
    assert_eq!(code, Some(0), "{report}");
    check_report(&report, root.path());
}

#[tokio::test]
async fn hostile_outputs_filled_into_a_shell_command_stay_data_on_a_cluster() {
    let cluster = Cluster::start(2).await;
    let file = batch_file(cluster.root(), "injection.yaml", BATCH);
    let (code, report) = submit_watched_json(&cluster, &file).await;
    assert_eq!(code, Some(0), "{report}");
    check_report(&report, cluster.root());
}
