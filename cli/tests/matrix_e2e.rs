//! `foreach:` on an op, from the real binary: a list, a range or a glob
//! expands into named ops that run like hand-written ones, a failing
//! expansion is named, a bad item is refused before anything runs, and an
//! item is data even in a shell `cmd` — embedded (`volley run`) and on a
//! cluster of real processes.

mod common;

use common::{Cluster, batch_file, report_op, run_json, submit_watched_json, volley};
use std::process::Stdio;
use std::time::Duration;

/// A guard against a hang, not a timing assertion.
const HANG_GUARD: Duration = Duration::from_secs(120);

const TWO_HUNDRED: &str = r#"name: two-hundred
max_parallel: 8
ops:
  - id: job
    kind: shell
    foreach: {range: [1, 200]}
    args: {cmd: "echo job ${item} of 200 at ${index}"}
  - id: summary
    kind: echo
    after: [job]
    args: {text: "done"}
"#;

#[tokio::test]
async fn a_range_of_200_shell_commands_runs_8_at_a_time_each_with_its_item() {
    let root = tempfile::tempdir().expect("temp dir");
    let file = batch_file(root.path(), "matrix.yaml", TWO_HUNDRED);
    let (code, report) = tokio::time::timeout(HANG_GUARD, run_json(root.path(), &file, &[]))
        .await
        .expect("volley run ends");
    assert_eq!(code, Some(0), "{report}");
    let ops = report["ops"].as_array().expect("ops");
    assert_eq!(ops.len(), 201, "200 expansions and the summary");
    for number in 1..=200 {
        let op = report_op(&report, &format!("job-{number}"));
        assert_eq!(op["state"], "succeeded", "{op}");
        assert_eq!(
            op["output"],
            format!("job {number} of 200 at {number}\n"),
            "{op}"
        );
    }
    // `after: [job]` waited for every expansion.
    let summary = report_op(&report, "summary");
    assert_eq!(summary["state"], "succeeded");
}

#[tokio::test]
async fn a_glob_runs_one_op_per_file_relative_to_the_batch_file() {
    let root = tempfile::tempdir().expect("temp dir");
    let suites = root.path().join("suites");
    std::fs::create_dir_all(suites.join("nested")).expect("mkdir");
    for name in ["api.txt", "unit.txt", "skip.md", "nested/deep.txt"] {
        std::fs::write(suites.join(name), format!("suite {name}\n")).expect("write");
    }
    let file = batch_file(
        root.path(),
        "glob.yaml",
        "name: glob\nops:\n  - id: cat\n    kind: shell\n    foreach: {glob: \"suites/*.txt\"}\n    args: {cmd: \"cat ${item}\"}\n",
    );
    let (code, report) = tokio::time::timeout(HANG_GUARD, run_json(root.path(), &file, &[]))
        .await
        .expect("volley run ends");
    assert_eq!(code, Some(0), "{report}");
    let ids: Vec<&str> = report["ops"]
        .as_array()
        .expect("ops")
        .iter()
        .filter_map(|op| op["id"].as_str())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["cat-suites_api.txt", "cat-suites_unit.txt"]);
    assert_eq!(
        report_op(&report, "cat-suites_api.txt")["output"],
        "suite api.txt\n"
    );
    // Named bare, from its own directory, as a user types it.
    let (code, report) = tokio::time::timeout(
        HANG_GUARD,
        run_json(root.path(), std::path::Path::new("glob.yaml"), &[]),
    )
    .await
    .expect("volley run ends");
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["total"], 2, "{report}");
}

#[tokio::test]
async fn a_failing_expansion_is_named_in_what_the_user_sees() {
    let root = tempfile::tempdir().expect("temp dir");
    let file = batch_file(
        root.path(),
        "fail.yaml",
        "name: fail\nops:\n  - id: test\n    kind: shell\n    foreach: [unit, api, e2e]\n    args: {cmd: \"test ${item} != api\"}\n",
    );
    let (code, report) = tokio::time::timeout(HANG_GUARD, run_json(root.path(), &file, &[]))
        .await
        .expect("volley run ends");
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report_op(&report, "test-api")["state"], "failed");
    assert_eq!(report_op(&report, "test-unit")["state"], "succeeded");
    assert_eq!(report_op(&report, "test-e2e")["state"], "succeeded");
    assert_eq!(report_op(&report, "test-api")["group"], "test", "{report}");
    // The table names the op too, and sums the group up.
    let output = tokio::time::timeout(
        HANG_GUARD,
        volley()
            .args(["run", file.to_str().expect("utf-8")])
            .current_dir(root.path())
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("volley run ends")
    .expect("volley run");
    assert_eq!(output.status.code(), Some(1));
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("test-api"), "{table}");

    assert!(
        table.contains("foreach groups:\n  test  3 ops: 2 succeeded, 1 failed\n"),
        "{table}"
    );
}

#[tokio::test]
async fn run_writes_each_ops_output_and_stderr_to_the_logs_dir() {
    let root = tempfile::tempdir().expect("temp dir");
    let file = batch_file(
        root.path(),
        "suites.yaml",
        "name: suites\nops:\n  - id: suite\n    kind: shell\n    foreach: [unit, api]\n    args: {cmd: \"echo ran ${item}; echo ${item} says >&2; test ${item} != api\"}\n",
    );
    let output = tokio::time::timeout(
        HANG_GUARD,
        volley()
            .args([
                "run",
                file.to_str().expect("utf-8"),
                "--logs-dir",
                "out/logs",
            ])
            .current_dir(root.path())
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("volley run ends")
    .expect("volley run");
    assert_eq!(output.status.code(), Some(1));
    let read =
        |name: &str| std::fs::read_to_string(root.path().join("out/logs").join(name)).expect(name);
    assert_eq!(read("suite-unit.out"), "ran unit\n");
    assert_eq!(read("suite-unit.err"), "unit says\n");
    assert_eq!(read("suite-api.out"), "ran api\n");
    assert_eq!(read("suite-api.err"), "api says\n");
}

#[tokio::test]
async fn a_numeric_item_works_inside_shell_arithmetic() {
    let root = tempfile::tempdir().expect("temp dir");
    let file = batch_file(
        root.path(),
        "modulo.yaml",
        "name: modulo\nops:\n  - id: cmd\n    kind: shell\n    foreach: {range: [35, 38]}\n    args: {cmd: \"test $((${item} % 37)) -ne 0 && echo ${item}\"}\n",
    );
    let (code, report) = tokio::time::timeout(HANG_GUARD, run_json(root.path(), &file, &[]))
        .await
        .expect("volley run ends");
    assert_eq!(code, Some(1), "{report}");
    for (item, state) in [
        (35, "succeeded"),
        (36, "succeeded"),
        (37, "failed"),
        (38, "succeeded"),
    ] {
        let op = report_op(&report, &format!("cmd-{item}"));
        assert_eq!(op["state"], state, "{op}");
        if state == "succeeded" {
            assert_eq!(op["output"], format!("{item}\n"), "{op}");
        }
    }
}

#[tokio::test]
async fn a_bad_item_or_source_is_refused_before_anything_runs_naming_op_item_and_line() {
    let root = tempfile::tempdir().expect("temp dir");
    for (name, text, expected) in [
        (
            "field.yaml",
            "ops:\n  - id: touch\n    kind: shell\n    args: {cmd: \"touch ran-${item.name}\"}\n    foreach: [{name: a}, {name: b}, {title: c}]\n",
            "op `touch` (line 5) item 3 (`{title: c}`): field `args.cmd`: `${item.name}`: the item has no field `name`",
        ),
        (
            "huge.yaml",
            "ops:\n  - id: touch\n    kind: shell\n    foreach: {range: [0, 9999999999]}\n    args: {cmd: \"touch ran-${item}\"}\n",
            "op `touch` (line 4): field `foreach`: `range: [0, 9999999999]` has 10000000000 items",
        ),
        (
            "arithmetic.yaml",
            "ops:\n  - id: touch\n    kind: shell\n    foreach: [1, \"a[$(touch ran-pwned)]\"]\n    args: {cmd: \"touch ran-$((${item} % 37))\"}\n",
            "op `touch` (line 4) item 2 (`a[$(touch ran-pwned)]`): field `args.cmd`: `${item}` stands inside `$((…))`, where only a whole number can go",
        ),
        (
            "race.yaml",
            "ops:\n  - id: touch\n    kind: write\n    foreach: [a, b]\n    args: {path: ran-out.txt, content: \"${item}\"}\n",
            "op `touch-b`: field `writes`: races with op `touch-a` on file `ran-out.txt`",
        ),
    ] {
        let file = batch_file(root.path(), name, text);
        let output = tokio::time::timeout(
            HANG_GUARD,
            volley()
                .args(["run", file.to_str().expect("utf-8")])
                .current_dir(root.path())
                .stdin(Stdio::null())
                .output(),
        )
        .await
        .expect("volley run ends")
        .expect("volley run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
    }
    let ran: Vec<_> = std::fs::read_dir(root.path())
        .expect("read the root")
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("ran-"))
        .collect();
    assert!(ran.is_empty(), "an op ran: {ran:?}");
}

const INJECTION: &str = r#"name: injection
ops:
  - id: say
    kind: shell
    foreach: ["$(touch pwned1)", "`touch pwned2`", "x'; touch pwned3; echo '", "${memory.k}", "a\"; touch pwned4; echo \"b"]
    args: {cmd: "printf '%s|%s|%s' ${item} '${item}' \"${item}\""}
"#;

fn check_injection(report: &serde_json::Value, root: &std::path::Path) {
    assert_eq!(report["state"], "succeeded", "{report}");
    let items = [
        "$(touch pwned1)",
        "`touch pwned2`",
        "x'; touch pwned3; echo '",
        "${memory.k}",
        "a\"; touch pwned4; echo \"b",
    ];
    for (number, item) in items.iter().enumerate() {
        let op = report_op(report, &format!("say-{}", number + 1));
        assert_eq!(op["output"], format!("{item}|{item}|{item}"), "{op}");
    }
    let pwned: Vec<_> = std::fs::read_dir(root)
        .expect("read the root")
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("pwned"))
        .collect();
    assert!(pwned.is_empty(), "an item ran as a command: {pwned:?}");
}

#[tokio::test]
async fn hostile_items_in_a_shell_cmd_stay_data_embedded() {
    let root = tempfile::tempdir().expect("temp dir");
    let file = batch_file(root.path(), "injection.yaml", INJECTION);
    let (code, report) = tokio::time::timeout(HANG_GUARD, run_json(root.path(), &file, &[]))
        .await
        .expect("volley run ends");
    assert_eq!(code, Some(0), "{report}");
    check_injection(&report, root.path());
}

#[tokio::test]
async fn a_foreach_submitted_and_watched_on_a_cluster_runs_every_item() {
    let cluster = Cluster::start(2).await;
    let file = batch_file(
        cluster.root(),
        "matrix.yaml",
        r#"name: cluster-matrix
max_parallel: 4
ops:
  - id: square
    kind: shell
    foreach: [{n: 2, name: two}, {n: 3, name: three}, {n: 4, name: four}]
    args: {cmd: "echo ${item.name}=$(expr ${item.n} '*' ${item.n})"}
    store_as: squares/${item.name}
  - id: read
    kind: echo
    after: [square]
    args: {text: "${memory.squares/three}"}
"#,
    );
    let (code, report) = tokio::time::timeout(HANG_GUARD, submit_watched_json(&cluster, &file))
        .await
        .expect("volley submit --watch ends");
    assert_eq!(code, Some(0), "{report}");
    for (number, line) in ["two=4", "three=9", "four=16"].iter().enumerate() {
        let op = report_op(&report, &format!("square-{}", number + 1));
        assert_eq!(op["output"], format!("{line}\n"), "{op}");
        assert_eq!(op["group"], "square", "{op}");
    }
    assert!(report_op(&report, "read").get("group").is_none());
    assert!(
        report_op(&report, "read")["output"]
            .as_str()
            .is_some_and(|text| text.starts_with("three=9")),
        "{report}"
    );
    // And the hostile items, on real workers.
    let file = batch_file(cluster.root(), "injection.yaml", INJECTION);
    let (code, report) = tokio::time::timeout(HANG_GUARD, submit_watched_json(&cluster, &file))
        .await
        .expect("volley submit --watch ends");
    assert_eq!(code, Some(0), "{report}");
    check_injection(&report, cluster.root());
}
