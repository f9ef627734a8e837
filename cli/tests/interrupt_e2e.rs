//! Ctrl-C means something: on `volley run` it cancels the batch and kills
//! its ops' process groups (SIGTERM, then SIGKILL; a second Ctrl-C kills at
//! once) and exits 130; on `volley submit --watch` and `volley watch` it
//! says the batch keeps running and how to cancel it, or with
//! `--cancel-on-interrupt` cancels it; a stopped worker leaves no program
//! behind. Real processes throughout: the programs' pids are read from the
//! files they write and checked in /proc.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{ADMIN_TOKEN, Cluster, batch_file, volley};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStderr};
use volley_client::v1::BatchState;

/// Only a guard against hanging; never asserted on.
const DEADLINE: Duration = Duration::from_secs(60);

/// A shell op whose program starts a long `sleep` in the background, writes
/// its pid to `PID_FILE` and waits for it: the pid of a grandchild in the
/// op's process group, which only a group kill reaches.
fn sleeper(id: &str, pid_file: &str, trap_term: bool) -> String {
    let trap = if trap_term { "trap \"\" TERM; " } else { "" };
    format!(
        "  - {{id: {id}, kind: shell, args: {{cmd: '{trap}sleep 300 & echo $! > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; wait'}}}}\n"
    )
}

/// Waits (with a deadline) until the program wrote its pid.
async fn pid_in(path: &Path) -> i32 {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse::<i32>()
        {
            return pid;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{} was never written",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await; // poll interval, not a synchronization sleep
    }
}

/// Whether `pid` runs (a zombie waiting to be reaped does not).
fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit(") ")
        .next()
        .and_then(|rest| rest.chars().next());
    state != Some('Z')
}

/// Waits (with a deadline) until `pid` no longer runs.
async fn assert_gone(pid: i32, what: &str) {
    let until = tokio::time::Instant::now() + DEADLINE;
    while alive(pid) {
        assert!(
            tokio::time::Instant::now() < until,
            "{what} (pid {pid}) outlived the interrupt"
        );
        tokio::time::sleep(Duration::from_millis(20)).await; // poll interval, not a synchronization sleep
    }
}

/// `volley ARGS` in `dir` with both outputs piped.
fn spawn_volley(dir: &Path, args: &[&str], coordinator: Option<&str>) -> Child {
    let mut command = volley();
    command
        .args(args)
        .current_dir(dir)
        .env("VOLLEY_TOKEN", ADMIN_TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(url) = coordinator {
        command.env("VOLLEY_COORDINATOR", url);
    }
    command.spawn().expect("volley starts")
}

/// Reads `stderr` line by line into `seen` until a line contains `needle`.
async fn read_until(stderr: &mut BufReader<ChildStderr>, seen: &mut String, needle: &str) {
    let found = tokio::time::timeout(DEADLINE, async {
        loop {
            let mut line = String::new();
            let read = stderr.read_line(&mut line).await.expect("read stderr");
            seen.push_str(&line);
            if read == 0 || line.contains(needle) {
                return line.contains(needle);
            }
        }
    })
    .await
    .unwrap_or(false);
    assert!(found, "stderr never said {needle:?}:\n{seen}");
}

/// Waits for `child` to end (under the hang guard): its exit code, all of
/// its stdout, and the rest of its stderr appended to `seen`.
async fn ended(
    mut child: Child,
    stderr: Option<BufReader<ChildStderr>>,
    mut seen: String,
) -> (Option<i32>, String, String) {
    let mut stdout = child.stdout.take().expect("stdout piped");
    let mut stderr = match stderr {
        Some(stderr) => stderr,
        None => BufReader::new(child.stderr.take().expect("stderr piped")),
    };
    let (status, out, err) = tokio::time::timeout(DEADLINE, async {
        let mut out = String::new();
        let mut err = String::new();
        let (read_out, read_err, status) = tokio::join!(
            stdout.read_to_string(&mut out),
            stderr.read_to_string(&mut err),
            child.wait()
        );
        read_out.expect("read stdout");
        read_err.expect("read stderr");
        (status.expect("wait"), out, err)
    })
    .await
    .expect("volley ends after the interrupt");
    seen.push_str(&err);
    (status.code(), out, seen)
}

/// The batch id from `batch ID submitted: N ops` on stderr.
fn submitted_id(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|line| {
            line.strip_prefix("batch ")
                .and_then(|rest| rest.split_once(" submitted:"))
                .map(|(id, _)| id.to_owned())
        })
        .unwrap_or_else(|| panic!("no `batch ID submitted` line in:\n{stderr}"))
}

fn report(stdout: &str, stderr: &str) -> serde_json::Value {
    serde_json::from_str(stdout)
        .unwrap_or_else(|error| panic!("no JSON report ({error}):\n{stdout}\nstderr:\n{stderr}"))
}

#[tokio::test]
async fn ctrl_c_on_run_cancels_the_batch_kills_its_programs_and_exits_130() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = batch_file(
        dir.path(),
        "sleepers.yaml",
        &format!(
            "name: sleepers\nops:\n{}{}  - {{id: later, kind: echo, after: [a], args: {{text: never}}}}\n",
            sleeper("a", "a.pid", false),
            sleeper("b", "b.pid", false)
        ),
    );
    let run = spawn_volley(
        dir.path(),
        &[
            "run",
            file.to_str().expect("utf-8"),
            "--output",
            "json",
            "--workers",
            "1",
        ],
        None,
    );
    let a = pid_in(&dir.path().join("a.pid")).await;
    let b = pid_in(&dir.path().join("b.pid")).await;
    Cluster::signal(&run, "INT");
    let (code, stdout, stderr) = ended(run, None, String::new()).await;

    assert_eq!(code, Some(130), "stderr:\n{stderr}");
    assert!(
        stderr.contains("SIGINT: stopping: cancelling batch ")
            && stderr
                .contains("(2 op(s) running; their programs get SIGTERM, then SIGKILL after 5s"),
        "stderr:\n{stderr}"
    );
    // The report of a cancelled batch: its ops cancelled, not failed.
    let report = report(&stdout, &stderr);
    assert_eq!(report["state"], "cancelled", "{report}");
    for id in ["a", "b", "later"] {
        assert_eq!(
            common::report_op(&report, id)["state"],
            "cancelled",
            "{report}"
        );
    }
    assert_gone(a, "op a's background sleep").await;
    assert_gone(b, "op b's background sleep").await;
}

#[tokio::test]
async fn sigterm_on_run_stops_it_like_ctrl_c() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = batch_file(
        dir.path(),
        "sleeper.yaml",
        &format!("name: sleeper\nops:\n{}", sleeper("a", "a.pid", false)),
    );
    let run = spawn_volley(
        dir.path(),
        &["run", file.to_str().expect("utf-8"), "--workers", "1"],
        None,
    );
    let a = pid_in(&dir.path().join("a.pid")).await;
    Cluster::signal(&run, "TERM");
    let (code, _stdout, stderr) = ended(run, None, String::new()).await;

    assert_eq!(code, Some(130), "stderr:\n{stderr}");
    assert!(
        stderr.contains("SIGTERM: stopping: cancelling batch ")
            && stderr.contains("(1 op(s) running;"),
        "stderr:\n{stderr}"
    );
    assert_gone(a, "op a's background sleep").await;
}

#[tokio::test]
async fn a_second_ctrl_c_on_run_kills_programs_that_ignore_sigterm_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    // `trap "" TERM`: sh and its sleep ignore SIGTERM; only SIGKILL ends them.
    let file = batch_file(
        dir.path(),
        "stubborn.yaml",
        &format!("name: stubborn\nops:\n{}", sleeper("a", "a.pid", true)),
    );
    let mut run = spawn_volley(
        dir.path(),
        &[
            "run",
            file.to_str().expect("utf-8"),
            "--output",
            "json",
            "--workers",
            "1",
        ],
        None,
    );
    let a = pid_in(&dir.path().join("a.pid")).await;
    let mut stderr = BufReader::new(run.stderr.take().expect("stderr piped"));
    let mut seen = String::new();
    Cluster::signal(&run, "INT");
    read_until(&mut stderr, &mut seen, "stopping: cancelling batch").await;
    assert!(
        alive(a),
        "the sleep ignores SIGTERM: still running in its grace"
    );
    Cluster::signal(&run, "INT");
    let (code, _stdout, stderr) = ended(run, Some(stderr), seen).await;

    // At once: the report may or may not have made it out first.
    assert_eq!(code, Some(130), "stderr:\n{stderr}");
    assert!(
        stderr.contains("SIGINT again: killed 1 program(s) at once"),
        "stderr:\n{stderr}"
    );
    assert_gone(a, "op a's background sleep that ignores SIGTERM").await;
}

#[tokio::test]
async fn ctrl_c_on_submit_watch_and_watch_leaves_the_batch_running_and_says_how_to_cancel_it() {
    let cluster = Cluster::start(1).await;
    let file = batch_file(
        cluster.root(),
        "sleeper.yaml",
        &format!("name: sleeper\nops:\n{}", sleeper("a", "a.pid", false)),
    );
    let submit = spawn_volley(
        cluster.root(),
        &["submit", file.to_str().expect("utf-8"), "--watch"],
        Some(&cluster.url),
    );
    let a = pid_in(&cluster.root().join("a.pid")).await;
    Cluster::signal(&submit, "INT");
    let (code, _stdout, stderr) = ended(submit, None, String::new()).await;
    let batch = submitted_id(&stderr);

    assert_eq!(code, Some(130), "stderr:\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "SIGINT: batch {batch} keeps running; cancel it with `volley cancel {batch}`"
        )),
        "stderr:\n{stderr}"
    );
    let summary = cluster.client.summary(&batch).await.expect("summary");
    assert_eq!(summary.state(), BatchState::Running, "{summary:?}");
    assert!(alive(a), "the op's program goes on");

    // `volley watch` only looks, and says the same.
    let mut watch = spawn_volley(cluster.root(), &["watch", &batch], Some(&cluster.url));
    let mut stderr = BufReader::new(watch.stderr.take().expect("stderr piped"));
    // Once it follows the batch (the op started before: its event is replayed).
    let mut seen = String::new();
    read_until(&mut stderr, &mut seen, "starting").await;
    Cluster::signal(&watch, "INT");
    let (code, _stdout, stderr) = ended(watch, Some(stderr), seen).await;
    assert_eq!(code, Some(130), "stderr:\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "SIGINT: batch {batch} keeps running; cancel it with `volley cancel {batch}`"
        )),
        "stderr:\n{stderr}"
    );
    let summary = cluster.client.summary(&batch).await.expect("summary");
    assert_eq!(summary.state(), BatchState::Running, "{summary:?}");

    // The command it named does it.
    let cancel = volley()
        .args(["cancel", &batch])
        .env("VOLLEY_COORDINATOR", &cluster.url)
        .output()
        .await
        .expect("volley cancel");
    assert_eq!(cancel.status.code(), Some(0));
    assert_gone(a, "the cancelled op's background sleep").await;
}

#[tokio::test]
async fn cancel_on_interrupt_cancels_the_batch_and_its_program() {
    let cluster = Cluster::start(1).await;
    let file = batch_file(
        cluster.root(),
        "sleeper.yaml",
        &format!("name: sleeper\nops:\n{}", sleeper("a", "a.pid", false)),
    );
    let submit = spawn_volley(
        cluster.root(),
        &[
            "submit",
            file.to_str().expect("utf-8"),
            "--watch",
            "--cancel-on-interrupt",
            "--output",
            "json",
        ],
        Some(&cluster.url),
    );
    let a = pid_in(&cluster.root().join("a.pid")).await;
    Cluster::signal(&submit, "INT");
    let (code, stdout, stderr) = ended(submit, None, String::new()).await;

    assert_eq!(code, Some(130), "stderr:\n{stderr}");
    let report = report(&stdout, &stderr);
    let batch = report["batch_id"].as_str().expect("batch id").to_owned();
    assert!(
        stderr.contains(&format!("SIGINT: cancelling batch {batch}")),
        "stderr:\n{stderr}"
    );
    assert_eq!(report["state"], "cancelled", "{report}");
    assert_eq!(
        common::report_op(&report, "a")["state"],
        "cancelled",
        "{report}"
    );
    let summary = cluster.client.summary(&batch).await.expect("summary");
    assert_eq!(summary.state(), BatchState::Cancelled, "{summary:?}");
    assert_gone(a, "the cancelled op's background sleep").await;
}

#[tokio::test]
async fn cancel_on_interrupt_without_watch_is_refused_before_anything_is_sent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = batch_file(
        dir.path(),
        "one.yaml",
        "name: one\nops:\n  - {id: a, kind: echo, args: {text: hi}}\n",
    );
    // No coordinator listens there: refused before connecting, so exit 2, not 3.
    let port = common::free_port();
    let output = volley()
        .args([
            "submit",
            file.to_str().expect("utf-8"),
            "--cancel-on-interrupt",
        ])
        .env("VOLLEY_COORDINATOR", format!("http://127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .output()
        .await
        .expect("volley submit");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(
        stderr.contains("--cancel-on-interrupt needs --watch"),
        "stderr:\n{stderr}"
    );
    assert!(output.stdout.is_empty());

    // Its variable takes a boolean, nothing else.
    let output = volley()
        .args(["submit", file.to_str().expect("utf-8"), "--watch"])
        .env("VOLLEY_COORDINATOR", format!("http://127.0.0.1:{port}"))
        .env("VOLLEY_CANCEL_ON_INTERRUPT", "maybe; rm -rf /")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("volley submit");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("cancel-on-interrupt"), "stderr:\n{stderr}");
}

#[tokio::test]
async fn a_stopped_worker_leaves_no_program_running() {
    let mut cluster = Cluster::start(0).await;
    cluster
        .add_worker_with("w0", &["--drain-timeout", "1s"])
        .await;
    let file = batch_file(
        cluster.root(),
        "sleeper.yaml",
        &format!("name: sleeper\nops:\n{}", sleeper("a", "a.pid", false)),
    );
    cluster
        .client
        .submit(volley_client::read_batch_file(&file).expect("batch"))
        .await
        .expect("submit");
    let a = pid_in(&cluster.root().join("a.pid")).await;
    let mut worker = cluster.workers.pop().expect("the worker");
    Cluster::signal(&worker, "TERM");
    let status = tokio::time::timeout(DEADLINE, worker.wait())
        .await
        .expect("the worker stops after its drain timeout")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    assert_gone(a, "the op's background sleep").await;
}
