//! A batch that could only wait forever is refused before anything runs:
//! a wait for a key no op writes (a typo, with "did you mean"), and ops
//! that wait for each other through memory keys. `volley submit` against a
//! cluster, `volley run` and `volley spawn` say so and exit 2;
//! `--allow-unwritten` (or `allow_unwritten: true`) and a shared namespace
//! keep an unwritten key a warning.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::{ADMIN_TOKEN, Cluster, batch_file, volley};

/// Only a guard against hanging; never asserted on.
const DEADLINE: Duration = Duration::from_secs(60);

/// The CLI's exit code for an invalid batch (cli/src/exit.rs `Invalid`).
const INVALID: i32 = 2;

/// `volley ARGS…` against `cluster` (when given), in `dir`, bounded.
async fn volley_in(dir: &Path, cluster: Option<&Cluster>, args: &[&str]) -> Output {
    let mut command = volley();
    command
        .args(args)
        .current_dir(dir)
        .env("VOLLEY_LOG", "error")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(cluster) = cluster {
        command
            .env("VOLLEY_COORDINATOR", &cluster.url)
            .env("VOLLEY_TOKEN", ADMIN_TOKEN);
    }
    tokio::time::timeout(DEADLINE, command.output())
        .await
        .unwrap_or_else(|_| panic!("volley {args:?} ends"))
        .expect("volley runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_invalid(output: &Output, what: &str) -> String {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(INVALID), "{what}: {stderr}");
    assert!(stderr.contains("nothing ran"), "{what}: {stderr}");
    stderr
}

async fn batches_on(cluster: &Cluster) -> usize {
    cluster.client.list(100).await.expect("list").len()
}

const TYPO: &str = "\
name: typo
ops:
  - {id: writer, kind: echo, args: {text: done}, store_as: report/final}
  - {id: reader, kind: echo, wait_for: [report/finl], args: {text: read}}
  - {id: templated, kind: echo, args: {text: 'got ${memory.report/fnal}'}}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelt_key_is_refused_by_submit_and_run_with_did_you_mean() {
    let cluster = Cluster::start(1).await;
    let dir = cluster.root();
    batch_file(dir, "typo.yaml", TYPO);
    for (how, output) in [
        (
            "submit",
            volley_in(dir, Some(&cluster), &["submit", "typo.yaml"]).await,
        ),
        ("run", volley_in(dir, None, &["run", "typo.yaml"]).await),
    ] {
        let stderr = assert_invalid(&output, how);
        assert!(
            stderr.contains("op `reader`: field `wait_for`: waits for memory key `report/finl`, which no op of this batch writes, so it would wait forever; did you mean `report/final`?"),
            "{how}: {stderr}"
        );
        assert!(
            stderr
                .contains("op `templated`: field `args.text`: waits for memory key `report/fnal`")
                && stderr.contains("--allow-unwritten"),
            "{how}: {stderr}"
        );
        assert!(text(&output.stdout).trim().is_empty(), "{how}: no batch id");
    }
    assert_eq!(batches_on(&cluster).await, 0, "nothing was stored");
}

const GATED: &str = "\
name: gated
ops:
  - {id: gate, kind: echo, wait_for: [go], args: {text: 'went ${memory.go}'}}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_unwritten_accepts_a_key_a_client_writes() {
    let cluster = Cluster::start(1).await;
    let dir = cluster.root();
    batch_file(dir, "gated.yaml", GATED);
    let refused = volley_in(dir, Some(&cluster), &["submit", "gated.yaml"]).await;
    let stderr = assert_invalid(&refused, "without --allow-unwritten");
    assert!(
        stderr.contains("op `gate`: field `wait_for`: waits for memory key `go`"),
        "{stderr}"
    );

    let accepted = volley_in(
        dir,
        Some(&cluster),
        &["submit", "gated.yaml", "--allow-unwritten"],
    )
    .await;
    let stderr = text(&accepted.stderr);
    assert_eq!(accepted.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: op `gate` waits for memory key `go`, which no op of this batch writes; it runs only when a client writes it"),
        "{stderr}"
    );
    let batch_id = text(&accepted.stdout).trim().to_owned();
    assert!(!batch_id.is_empty());
    let put = volley_in(
        dir,
        Some(&cluster),
        &["memory", "--batch", &batch_id, "put", "go", "now"],
    )
    .await;
    assert_eq!(put.status.code(), Some(0), "{}", text(&put.stderr));
    let watched = volley_in(dir, Some(&cluster), &["watch", &batch_id]).await;
    assert_eq!(
        watched.status.code(),
        Some(0),
        "the client's write lets it finish: {}",
        text(&watched.stderr)
    );
    assert!(
        text(&watched.stdout).contains("went now"),
        "{}",
        text(&watched.stdout)
    );

    // The batch file's `allow_unwritten: true` does the same, and `volley
    // run` honours it: with nobody to write the key, the wait times out.
    batch_file(
        dir,
        "allowed.yaml",
        "name: allowed\nallow_unwritten: true\nops:\n  - {id: gate, kind: echo, wait_for: [go], wait_timeout: 300ms, args: {text: x}}\n",
    );
    let ran = volley_in(dir, None, &["run", "allowed.yaml"]).await;
    let stderr = text(&ran.stderr);
    assert_eq!(ran.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("warning: op `gate`"), "{stderr}");
    assert!(
        text(&ran.stdout).contains("never appeared"),
        "{}",
        text(&ran.stdout)
    );

    // A shared namespace: other batches write its keys, so no error either.
    let shared = volley_in(
        dir,
        Some(&cluster),
        &["submit", "gated.yaml", "--namespace", "team"],
    )
    .await;
    assert_eq!(shared.status.code(), Some(0), "{}", text(&shared.stderr));
    let shared_id = text(&shared.stdout).trim().to_owned();
    cluster.client.cancel(&shared_id).await.expect("cancel");
}

const LOOP: &str = "\
name: loop
ops:
  - {id: a, kind: echo, store_as: k1, wait_for: [k2], args: {text: a}}
  - {id: b, kind: echo, store_as: k2, args: {text: 'b ${memory.k1}'}}
  - {id: c, kind: echo, store_as: k3, wait_for: [k4], args: {text: c}}
  - {id: d, kind: noop, after: [c]}
  - {id: e, kind: echo, store_as: k4, after: [d], args: {text: e}}
  - {id: free, kind: echo, args: {text: free}}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_wait_cycles_are_refused_naming_every_cycle_its_ops_and_keys() {
    let cluster = Cluster::start(1).await;
    let dir = cluster.root();
    batch_file(dir, "loop.yaml", LOOP);
    for (how, output) in [
        (
            "submit",
            volley_in(dir, Some(&cluster), &["submit", "loop.yaml"]).await,
        ),
        (
            "submit --allow-unwritten",
            volley_in(
                dir,
                Some(&cluster),
                &["submit", "loop.yaml", "--allow-unwritten"],
            )
            .await,
        ),
        ("run", volley_in(dir, None, &["run", "loop.yaml"]).await),
    ] {
        let stderr = assert_invalid(&output, how);
        assert!(
            stderr.contains("(2 problem(s))"),
            "{how}: both cycles at once: {stderr}"
        );
        assert!(
            stderr.contains("op `a`: field `wait_for`: ops wait for each other through memory keys, so none of them would ever run: `a` waits for `k2` (written by `b`), `b` waits for `k1` (written by `a`)"),
            "{how}: {stderr}"
        );
        assert!(
            stderr.contains("op `c`: field `wait_for`: ops wait for each other through memory keys and `after`, so none of them would ever run: `c` waits for `k4` (written by `e`), `e` runs after `d`, `d` runs after `c`"),
            "{how}: {stderr}"
        );
    }
    assert_eq!(batches_on(&cluster).await, 0, "nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_ops_are_held_to_the_same_rules_against_keys_already_written() {
    let cluster = Cluster::start(1).await;
    let dir = cluster.root();
    batch_file(
        dir,
        "grow.yaml",
        "name: grow\nops:\n  - {id: slow, kind: sleep, args: {ms: 50000}, store_as: result/slow}\n",
    );
    let submitted = volley_in(dir, Some(&cluster), &["submit", "grow.yaml"]).await;
    assert_eq!(
        submitted.status.code(),
        Some(0),
        "{}",
        text(&submitted.stderr)
    );
    let batch_id = text(&submitted.stdout).trim().to_owned();
    let put = volley_in(
        dir,
        Some(&cluster),
        &["memory", "--batch", &batch_id, "put", "from/client", "hi"],
    )
    .await;
    assert_eq!(put.status.code(), Some(0), "{}", text(&put.stderr));
    let spawn = |file: &'static str| {
        let batch_id = batch_id.clone();
        let cluster = &cluster;
        async move {
            volley_in(
                cluster.root(),
                Some(cluster),
                &["spawn", file, "--batch", &batch_id],
            )
            .await
        }
    };

    batch_file(
        dir,
        "typo.yaml",
        "ops:\n  - {id: t, kind: echo, wait_for: [result/slwo], args: {text: x}}\n",
    );
    let refused = spawn("typo.yaml").await;
    let stderr = assert_invalid(&refused, "spawned typo");
    assert!(
        stderr.contains("op `t`: field `wait_for`: waits for memory key `result/slwo`")
            && stderr.contains("did you mean `result/slow`?"),
        "{stderr}"
    );

    batch_file(
        dir,
        "loop.yaml",
        "ops:\n  - {id: x, kind: echo, store_as: kx, wait_for: [ky], args: {text: x}}\n  - {id: y, kind: echo, store_as: ky, wait_for: [kx], args: {text: y}}\n",
    );
    let refused = spawn("loop.yaml").await;
    let stderr = assert_invalid(&refused, "spawned loop");
    assert!(
        stderr.contains("`x` waits for `ky` (written by `y`), `y` waits for `kx` (written by `x`)"),
        "{stderr}"
    );

    // A key the client already wrote, and one an op of the batch writes.
    batch_file(
        dir,
        "fine.yaml",
        "ops:\n  - {id: f, kind: echo, wait_for: [from/client], args: {text: 'got ${memory.from/client}'}}\n  - {id: g, kind: echo, wait_for: [result/slow], args: {text: g}}\n",
    );
    let accepted = spawn("fine.yaml").await;
    assert_eq!(
        accepted.status.code(),
        Some(0),
        "{}",
        text(&accepted.stderr)
    );
    let status = cluster.client.status(&batch_id).await.expect("status");
    let ids: Vec<&str> = status.ops.iter().map(|op| op.id.as_str()).collect();
    assert_eq!(ids, ["slow", "f", "g"], "only the valid spawn joined");

    // Past 256 distinct keys a spawn's keys are not looked up one by one
    // in the store: its waits are taken on trust (docs/memory.md).
    let mut many = String::from("ops:\n");
    for index in 0..257 {
        many.push_str(&format!(
            "  - {{id: m{index}, kind: echo, wait_for: [elsewhere/{index}], args: {{text: x}}}}\n"
        ));
    }
    batch_file(dir, "many.yaml", &many);
    let trusted = spawn("many.yaml").await;
    assert_eq!(trusted.status.code(), Some(0), "{}", text(&trusted.stderr));
    cluster.client.cancel(&batch_id).await.expect("cancel");
}
