//! Results a newcomer can read (issue 16): a report names its failed ops,
//! `volley logs BATCH OP` prints one op's whole output and stderr (and
//! only to those who may read the batch), a unique prefix of a batch id
//! does, `volley list` has a header and times, a narrow terminal gets a
//! table that fits, a cancelled report says what happened once, and
//! `started` is not claimed for an op no worker took. Real processes, the
//! user's view: printed lines and exit codes.

mod common;

use std::process::{Output, Stdio};
use std::time::Duration;

use common::{ADMIN_TOKEN, Cluster, batch_file, volley};
use futures::StreamExt;
use volley_client::v1::EventKind;

/// Only a guard against hanging; never asserted on.
const DEADLINE: Duration = Duration::from_secs(60);

/// `volley ARGS` against the cluster with `token`, `COLUMNS` pinned to
/// `columns` (the report's width when stdout is no terminal).
async fn volley_as(cluster: &Cluster, token: &str, columns: u16, args: &[&str]) -> Output {
    let mut command = volley();
    command
        .args(args)
        .env("VOLLEY_COORDINATOR", &cluster.url)
        .env("VOLLEY_TOKEN", token)
        .env("COLUMNS", columns.to_string())
        .env_remove("VOLLEY_LOG")
        .current_dir(cluster.root())
        .stdin(Stdio::null());
    tokio::time::timeout(DEADLINE, command.output())
        .await
        .unwrap_or_else(|_| panic!("volley {args:?} did not end"))
        .expect("volley runs")
}

async fn admin(cluster: &Cluster, args: &[&str]) -> Output {
    volley_as(cluster, ADMIN_TOKEN, 80, args).await
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `volley token create` as the admin; the token is stdout's only line.
async fn create_token(cluster: &Cluster, args: &[&str]) -> String {
    let mut full = vec!["token", "create"];
    full.extend_from_slice(args);
    let output = admin(cluster, &full).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    stdout(&output).trim().to_owned()
}

/// The lines of a report's table (its borders and rows).
fn table_lines(report: &str) -> impl Iterator<Item = &str> {
    report
        .lines()
        .filter(|line| line.starts_with(['┌', '│', '╞', '└']))
}

/// Submits `file` (no watch) and returns the batch id.
/// Two keys whose batch ids, for the default tenant, start alike for
/// `chars` characters (a birthday search: a few hundred hashes for 4).
fn keys_with_a_shared_id_prefix(chars: usize) -> (String, String) {
    let mut seen = std::collections::HashMap::new();
    for number in 0.. {
        let key = format!("results-e2e-{number}");
        let id = volley_coordinator::idempotency::batch_id_for("default", &key);
        if let Some(earlier) = seen.insert(id.as_str()[..chars].to_owned(), key.clone()) {
            return (earlier, key);
        }
    }
    unreachable!()
}

async fn submit_with_key(cluster: &Cluster, file: &str, key: &str) -> String {
    let output = admin(cluster, &["submit", file, "--idempotency-key", key]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    stdout(&output).trim().to_owned()
}

async fn submit(cluster: &Cluster, file: &str) -> String {
    let output = admin(cluster, &["submit", file]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    stdout(&output).trim().to_owned()
}

const FAILING: &str = r#"name: mixed
ops:
  - id: ok
    kind: shell
    args: {cmd: "echo line1; echo line2; echo 'to stderr' >&2"}
  - id: bad1
    kind: shell
    attempts: 1
    args: {cmd: "echo partial; echo 'oops: no such suite' >&2; exit 3"}
  - id: bad2
    kind: shell
    attempts: 1
    args: {cmd: "exit 4"}
  - id: long-output-in-a-narrow-terminal
    kind: echo
    args: {text: "a very long line of output that would wrap a narrow terminal's table into seven lines a row and more"}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_names_its_failed_ops_and_logs_prints_one_in_full() {
    let cluster = Cluster::start(1).await;
    batch_file(cluster.root(), "mixed.yaml", FAILING);
    let watched = admin(&cluster, &["submit", "mixed.yaml", "--watch"]).await;
    assert_eq!(watched.status.code(), Some(1), "{}", stderr(&watched));
    let report = stdout(&watched);
    let batch = report
        .lines()
        .find_map(|line| line.strip_prefix("batch mixed ("))
        .and_then(|rest| rest.split(')').next())
        .expect("the summary line names the batch")
        .to_owned();
    // The closing lines name the failed ops, each with its first error line.
    let closing: Vec<&str> = report
        .lines()
        .skip_while(|line| !line.starts_with("failed ops"))
        .take(4)
        .collect();
    assert_eq!(
        closing,
        [
            "failed ops (2):",
            "  bad1  shell exited with code 3: oops: no such suite",
            "  bad2  shell exited with code 4",
            &format!("  see one in full: volley logs {batch} bad1"),
        ],
        "{report}"
    );
    // 80 columns: every line fits, one line a row, and the cut output
    // points to `volley logs`.
    for line in table_lines(&report) {
        assert!(
            line.chars().count() <= 80,
            "wider than 80: {line:?}\n{report}"
        );
    }
    let rows = report.lines().filter(|line| line.starts_with("│ ")).count();
    assert_eq!(rows, 1 + 4, "a header and one line an op:\n{report}");
    assert!(
        report.contains(&format!(
            "one op's whole output and stderr: volley logs {batch} OP"
        )),
        "{report}"
    );
    assert!(report.contains("a very long line of out"), "{report}");
    assert!(report.contains('…'), "{report}");

    // `volley status` by a unique prefix prints the same closing lines.
    let status = admin(&cluster, &["status", &batch[..8]]).await;
    assert_eq!(status.status.code(), Some(1), "{}", stderr(&status));
    assert!(
        stdout(&status).contains("  bad1  shell exited with code 3: oops: no such suite"),
        "{}",
        stdout(&status)
    );

    // Every op's streams as files: `--logs-dir`, beside the same report.
    let logs_dir = cluster.root().join("logs-of-mixed");
    let with_files = admin(
        &cluster,
        &[
            "status",
            &batch,
            "--logs-dir",
            logs_dir.to_str().expect("utf-8"),
        ],
    )
    .await;
    assert_eq!(with_files.status.code(), Some(1), "{}", stderr(&with_files));
    let read = |name: &str| std::fs::read_to_string(logs_dir.join(name)).expect(name);
    assert_eq!(read("ok.out"), "line1\nline2\n");
    assert_eq!(read("ok.err"), "to stderr\n");
    assert_eq!(read("bad1.out"), "partial\n");
    assert_eq!(read("bad1.err"), "oops: no such suite\n");
    assert!(
        stdout(&with_files).contains(&format!(
            "each op's whole output and stderr: {}/OP.out, OP.err",
            logs_dir.display()
        )),
        "{}",
        stdout(&with_files)
    );
    // A directory that cannot be made: refused before anything is read.
    let blocked = cluster.root().join("a-file");
    std::fs::write(&blocked, "x").expect("write");
    let refused = admin(
        &cluster,
        &[
            "status",
            &batch,
            "--logs-dir",
            blocked.join("sub").to_str().expect("utf-8"),
        ],
    )
    .await;
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).starts_with("error: --logs-dir "),
        "{}",
        stderr(&refused)
    );
    assert_eq!(stdout(&refused), "");

    // One op in full: stdout on stdout, stderr on stderr, exit 0.
    let logs = admin(&cluster, &["logs", &batch, "ok"]).await;
    assert_eq!(logs.status.code(), Some(0), "{}", stderr(&logs));
    assert_eq!(stdout(&logs), "line1\nline2\n");
    assert_eq!(stderr(&logs), "to stderr\n");
    let only_stdout = admin(&cluster, &["logs", &batch[..8], "ok", "--stream", "stdout"]).await;
    assert_eq!(only_stdout.status.code(), Some(0));
    assert_eq!(stdout(&only_stdout), "line1\nline2\n");
    assert_eq!(stderr(&only_stdout), "");
    let only_stderr = admin(&cluster, &["logs", &batch, "ok", "--stream", "stderr"]).await;
    assert_eq!(stdout(&only_stderr), "");
    assert_eq!(stderr(&only_stderr), "to stderr\n");
    // A failed op: what it printed, then why it failed.
    let failed = admin(&cluster, &["logs", &batch, "bad1"]).await;
    assert_eq!(failed.status.code(), Some(0), "{}", stderr(&failed));
    assert_eq!(stdout(&failed), "partial\n");
    assert_eq!(
        stderr(&failed),
        "oops: no such suite\nvolley logs: op `bad1` failed after 1 attempt(s): shell exited with code 3: oops: no such suite\n"
    );
    // The same for a script: one JSON document.
    let json = admin(&cluster, &["logs", &batch[..8], "bad1", "--output", "json"]).await;
    assert_eq!(json.status.code(), Some(0), "{}", stderr(&json));
    assert_eq!(stderr(&json), "");
    let document: serde_json::Value =
        serde_json::from_str(&stdout(&json)).expect("logs --output json prints JSON");
    assert_eq!(document["batch_id"], batch.as_str());
    assert_eq!(document["op_id"], "bad1");
    assert_eq!(document["state"], "failed");
    assert_eq!(document["attempts"], 1);
    assert_eq!(document["stdout"], "partial\n");
    assert_eq!(document["stderr"], "oops: no such suite\n");
    assert_eq!(
        document["error"],
        "shell exited with code 3: oops: no such suite"
    );
    let echoed = admin(
        &cluster,
        &["logs", &batch, "long-output-in-a-narrow-terminal"],
    )
    .await;
    assert!(
        stdout(&echoed).contains("into seven lines a row and more"),
        "the whole output: {}",
        stdout(&echoed)
    );

    // No such op: NotFound, with the close id.
    let typo = admin(&cluster, &["logs", &batch, "bda1"]).await;
    assert_eq!(typo.status.code(), Some(2));
    assert_eq!(
        stderr(&typo).trim(),
        format!("error: not found: batch {batch} has no op `bda1`; did you mean `bad1`?")
    );
    // Odd characters and a huge id: refused, nothing printed on stdout.
    for odd in ["a b/../$(x)\n", "ok\u{7}", "", &"x".repeat(5000)] {
        let output = admin(&cluster, &["logs", &batch, odd]).await;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{odd:?}: {}",
            stderr(&output)
        );
        assert_eq!(stdout(&output), "", "{odd:?}");
    }
    let huge = admin(&cluster, &["logs", &batch, &"x".repeat(5000)]).await;
    assert!(stderr(&huge).contains("at most 128"), "{}", stderr(&huge));

    // Another tenant's token reads nothing, by id or by prefix; an op's
    // output is not theirs to read.
    let other = create_token(&cluster, &["--role", "client", "--tenant", "other"]).await;
    let denied = volley_as(&cluster, &other, 80, &["logs", &batch, "ok"]).await;
    assert_eq!(denied.status.code(), Some(2), "{}", stderr(&denied));
    assert_eq!(stdout(&denied), "");
    assert!(
        stderr(&denied).contains(&format!("batch {batch} not found")),
        "{}",
        stderr(&denied)
    );
    let denied = volley_as(&cluster, &other, 80, &["logs", &batch[..8], "ok"]).await;
    assert_eq!(denied.status.code(), Some(2), "{}", stderr(&denied));
    assert_eq!(stdout(&denied), "");
    assert!(
        stderr(&denied).contains(&format!("no batch id starts with `{}`", &batch[..8])),
        "{}",
        stderr(&denied)
    );

    // Logs written to a pipe hold no colour codes.
    let logged = volley()
        .args(["status", &batch, "--output", "json"])
        .env("VOLLEY_COORDINATOR", &cluster.url)
        .env("VOLLEY_LOG", "debug")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("volley runs");
    assert!(!logged.stderr.is_empty(), "debug logs on stderr");
    assert!(
        !stderr(&logged).contains('\u{1b}'),
        "no ANSI codes in a log that is not a terminal: {:?}",
        stderr(&logged)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_max_parallel_beyond_the_workers_slots_is_said_at_submit() {
    let cluster = Cluster::start(1).await;
    batch_file(
        cluster.root(),
        "wide.yaml",
        "name: wide\nmax_parallel: 8\nops:\n  - id: n\n    kind: noop\n    foreach: {range: [1, 10]}\n",
    );
    let submitted = admin(&cluster, &["submit", "wide.yaml", "--watch"]).await;
    assert_eq!(submitted.status.code(), Some(0), "{}", stderr(&submitted));
    assert!(
        stderr(&submitted).contains(
            "warning: max_parallel is 8, but the connected workers have 4 slot(s) in all: at most 4 op(s) run at once"
        ),
        "{}",
        stderr(&submitted)
    );
    // Within the slots: nothing to say.
    batch_file(
        cluster.root(),
        "narrow.yaml",
        "name: narrow\nmax_parallel: 4\nops:\n  - id: n\n    kind: noop\n    foreach: {range: [1, 10]}\n",
    );
    let narrow = admin(&cluster, &["submit", "narrow.yaml", "--watch"]).await;
    assert_eq!(narrow.status.code(), Some(0), "{}", stderr(&narrow));
    assert!(
        !stderr(&narrow).contains("max_parallel"),
        "{}",
        stderr(&narrow)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_ids_take_a_unique_prefix_and_list_has_a_header_and_times() {
    let cluster = Cluster::start(1).await;
    let file = batch_file(
        cluster.root(),
        "hold.yaml",
        "name: held\nallow_unwritten: true\nops:\n  - {id: hold, kind: echo, args: {text: hi}, wait_for: [go]}\n",
    );
    let file = file.to_str().expect("utf-8");
    // Two idempotency keys whose batch ids (derived from the key) share
    // their first 4 characters, for an ambiguous prefix.
    let (key_a, key_b) = keys_with_a_shared_id_prefix(4);
    let first = submit_with_key(&cluster, file, &key_a).await;
    let second = submit_with_key(&cluster, file, &key_b).await;
    assert_eq!(first[..4], second[..4], "{first} {second}");

    // Too short, ambiguous, no match: each says what to do; nothing runs.
    let short = admin(&cluster, &["status", &first[..1]]).await;
    assert_eq!(short.status.code(), Some(2));
    assert_eq!(
        stderr(&short).trim(),
        format!(
            "error: batch id `{}` is too short: give the whole id or at least 4 of its first characters (see `volley list`)",
            &first[..1]
        )
    );
    let ambiguous = admin(&cluster, &["cancel", &first[..4]]).await;
    assert_eq!(ambiguous.status.code(), Some(2));
    let text = stderr(&ambiguous);
    assert!(
        text.starts_with(&format!(
            "error: batch id prefix `{}` is ambiguous: 2 batches start with it; give more characters:",
            &first[..4]
        )),
        "{text}"
    );
    assert!(text.contains(&first) && text.contains(&second), "{text}");
    let nothing = admin(&cluster, &["watch", "zzzz"]).await;
    assert_eq!(nothing.status.code(), Some(2));
    assert!(
        stderr(&nothing).contains("no batch id starts with `zzzz`"),
        "{}",
        stderr(&nothing)
    );
    // Still running: neither was cancelled by the ambiguous prefix.
    for batch in [&first, &second] {
        let summary = cluster.client.summary(batch).await.expect("summary");
        assert_eq!(summary.state(), volley_client::v1::BatchState::Running);
    }

    // A unique prefix works for why and cancel; the cancelled report says
    // so once, with no durations or speedup for what never ran.
    let unique = &first[..first.len() - 2];
    // `memory --batch` takes the prefix too: the key lands in that batch.
    let put = admin(
        &cluster,
        &["memory", "--batch", unique, "put", "note", "by-prefix"],
    )
    .await;
    assert_eq!(put.status.code(), Some(0), "{}", stderr(&put));
    let got = admin(&cluster, &["memory", "--batch", &first, "get", "note"]).await;
    assert_eq!(stdout(&got), "by-prefix", "{}", stderr(&got));
    let ambiguous_memory =
        admin(&cluster, &["memory", "--batch", &first[..4], "get", "note"]).await;
    assert_eq!(
        ambiguous_memory.status.code(),
        Some(2),
        "{}",
        stderr(&ambiguous_memory)
    );
    // So does `spawn --batch`: the op is added to that batch, and the
    // message names it in full.
    batch_file(
        cluster.root(),
        "more.yaml",
        "ops:\n  - {id: extra, kind: echo, args: {text: more}}\n",
    );
    let spawned = admin(&cluster, &["spawn", "more.yaml", "--batch", unique]).await;
    assert_eq!(spawned.status.code(), Some(0), "{}", stderr(&spawned));
    assert_eq!(
        stderr(&spawned).trim(),
        format!("1 op(s) added to batch {first}")
    );
    let summary = cluster.client.summary(&first).await.expect("summary");
    assert_eq!(summary.total, 2, "{summary:?}");
    let ambiguous_spawn = admin(&cluster, &["spawn", "more.yaml", "--batch", &first[..4]]).await;
    assert_eq!(
        ambiguous_spawn.status.code(),
        Some(2),
        "{}",
        stderr(&ambiguous_spawn)
    );
    assert!(
        stderr(&ambiguous_spawn).contains("is ambiguous"),
        "{}",
        stderr(&ambiguous_spawn)
    );
    let why = admin(&cluster, &["why", unique, "hold"]).await;
    assert_eq!(why.status.code(), Some(0), "{}", stderr(&why));
    assert!(stdout(&why).starts_with("hold: "), "{}", stdout(&why));
    let cancelled = admin(&cluster, &["cancel", &unique.to_uppercase()]).await;
    assert_eq!(cancelled.status.code(), Some(0), "{}", stderr(&cancelled));
    let report = admin(&cluster, &["status", unique]).await;
    assert_eq!(report.status.code(), Some(1), "{}", stderr(&report));
    let text = stdout(&report);
    assert!(!text.contains("cancelled: cancelled"), "{text}");
    assert!(text.contains("\ncancelled by token "), "{text}");
    assert!(text.contains("speedup —"), "{text}");
    assert!(!text.contains("0.00x"), "{text}");
    let row = text
        .lines()
        .find(|line| line.starts_with("│ hold "))
        .expect("the op's row");
    assert!(
        row.contains(" — "),
        "no 0ms for an op that never ran: {row}"
    );
    assert!(!row.contains("0ms"), "{row}");

    // The list: a header, then each batch with its start time and, once
    // it ended, how long it took.
    let listed = admin(&cluster, &["list"]).await;
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    let text = stdout(&listed);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("BATCH")
            && lines[0].contains("STARTED (UTC)")
            && lines[0].contains("WALL"),
        "{text}"
    );
    let first_row = lines
        .iter()
        .find(|line| line.starts_with(&first))
        .expect("the first batch listed");
    assert!(first_row.contains("cancelled"), "{first_row}");
    assert!(first_row.contains(" 20"), "a date: {first_row}");
    assert!(first_row.ends_with("held"), "{first_row}");
    let second_row = lines
        .iter()
        .find(|line| line.starts_with(&second))
        .expect("the second batch listed");
    assert!(
        second_row.contains("running") && second_row.contains("0/1"),
        "{second_row}"
    );
    let _ = admin(&cluster, &["cancel", &second]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_op_no_worker_takes_is_never_said_to_have_started() {
    let mut cluster = Cluster::start_with(0, &["--report-blocked-after", "1s"]).await;
    let root = cluster.root().to_string_lossy().into_owned();
    cluster
        .add_bare_worker("plain", &["--slots", "2", "--root", &root])
        .await;
    let file = batch_file(
        cluster.root(),
        "shell.yaml",
        "name: shell\nops:\n  - {id: s, kind: shell, args: {cmd: 'true'}}\n",
    );
    let batch = submit(&cluster, file.to_str().expect("utf-8")).await;
    // Wait (bounded) for the coordinator to say the op is blocked.
    let events = cluster.client.watch(&batch, 0).await.expect("watch");
    futures::pin_mut!(events);
    tokio::time::timeout(DEADLINE, async {
        while let Some(event) = events.next().await {
            if event.expect("an event").kind() == EventKind::OpBlocked {
                return;
            }
        }
        panic!("the events ended before the op was reported blocked");
    })
    .await
    .expect("the op is reported blocked");
    let cancelled = admin(&cluster, &["cancel", &batch]).await;
    assert_eq!(cancelled.status.code(), Some(0), "{}", stderr(&cancelled));
    let watched = admin(&cluster, &["watch", &batch]).await;
    let lines = stderr(&watched);
    let story: Vec<&str> = lines
        .lines()
        .filter_map(|line| line.split_whitespace().nth(2))
        .collect();
    assert!(
        story.starts_with(&["batch", "starting", "blocked"]),
        "{lines}"
    );
    assert!(!lines.contains("started"), "{lines}");
    assert!(lines.contains("cancelled s: by token "), "{lines}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_names_its_failed_ops_and_points_to_json() {
    let dir = tempfile::tempdir().expect("dir");
    batch_file(
        dir.path(),
        "run.yaml",
        "name: local\nops:\n  - {id: fine, kind: echo, args: {text: hi}}\n  - {id: broken, kind: shell, attempts: 1, args: {cmd: \"echo first >&2; echo last >&2; exit 2\"}}\n",
    );
    let output = tokio::time::timeout(
        DEADLINE,
        volley()
            .args(["run", "run.yaml"])
            .env("COLUMNS", "60")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("volley run ends")
    .expect("volley runs");
    let report = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{}{report}", stderr(&output));
    assert!(
        report.contains("failed ops (1):\n  broken  shell exited with code 2: last\n"),
        "{report}"
    );
    // The batch of a run is gone once it ends: no `volley logs` to point at.
    assert!(!report.contains("volley logs"), "{report}");
    assert!(
        report.contains(
            "every op's whole output and stderr: --logs-dir DIR (a file each) or --output json"
        ),
        "{report}"
    );
    for line in table_lines(&report) {
        assert!(
            line.chars().count() <= 60,
            "wider than 60: {line:?}\n{report}"
        );
    }
    assert!(
        report
            .lines()
            .last()
            .unwrap_or_default()
            .contains("speedup"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ops_token_reads_the_logs_of_its_own_batch_only() {
    let cluster = Cluster::start(1).await;
    let other = batch_file(
        cluster.root(),
        "other.yaml",
        "name: other\nops:\n  - {id: ok, kind: echo, args: {text: the-other-batchs-secret}}\n",
    );
    let watched = admin(
        &cluster,
        &["submit", other.to_str().expect("utf-8"), "--watch"],
    )
    .await;
    assert_eq!(watched.status.code(), Some(0), "{}", stderr(&watched));
    let other_batch = stdout(&watched)
        .lines()
        .find_map(|line| line.strip_prefix("batch other ("))
        .and_then(|rest| rest.split(')').next())
        .expect("the summary line names the batch")
        .to_owned();
    let agent = batch_file(
        cluster.root(),
        "agent.yaml",
        &format!(
            "name: agentic\nops:\n  - {{id: first, kind: echo, args: {{text: mine}}}}\n  - id: think\n    kind: agent\n    after: [first]\n    args: {{cmd: 'volley logs {other_batch} ok; echo \"other exit $?\"; volley logs {} ok; echo \"prefix exit $?\"; volley logs \"$VOLLEY_BATCH\" first; echo \" own exit $?\"'}}\n",
            &other_batch[..8]
        ),
    );
    let output = admin(
        &cluster,
        &[
            "submit",
            agent.to_str().expect("utf-8"),
            "--watch",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json report");
    let think = common::report_op(&report, "think");
    let printed = think["output"].as_str().unwrap_or_default();
    let errors = think["details"]["stderr"].as_str().unwrap_or_default();
    assert!(printed.contains("other exit 2"), "{think}");
    assert!(printed.contains("prefix exit 2"), "{think}");
    assert!(printed.contains("mine own exit 0"), "{think}");
    assert!(!printed.contains("the-other-batchs-secret"), "{think}");
    assert!(
        errors.contains(&format!("batch {other_batch} not found")),
        "{think}"
    );
}
