//! Memory watches and waits keep their promises when the parts under them
//! fail: a store that restarts empty (or is flushed) ends a watch with an
//! explicit reset, never a silent gap; a coordinator that stops or dies is
//! ridden out on another one behind the same address, with every change
//! printed exactly once; and no coordinator at all is exit 3, "cluster
//! unreachable". Real processes throughout; assertions are on what
//! `volley memory` prints and its exit code.

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ADMIN_TOKEN, Cluster, Fleet, free_port, volley};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use volley_testkit::RedisServer;

/// Only a guard against hanging; never asserted on.
const DEADLINE: Duration = Duration::from_secs(60);

const FLAGS: &[&str] = &["--resync-interval", "200ms"];

/// `volley memory ARGS --namespace NS` against `url`, output piped.
fn memory(url: &str, namespace: &str, args: &[&str]) -> Child {
    volley()
        .arg("memory")
        .args(args)
        .args(["--namespace", namespace])
        .env("VOLLEY_COORDINATOR", url)
        .env("VOLLEY_TOKEN", ADMIN_TOKEN)
        .env("VOLLEY_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("volley memory starts")
}

/// A running `volley memory watch --output json` whose stdout lines are
/// collected as they come.
struct Watcher {
    child: Child,
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Watcher {
    fn start(url: &str, namespace: &str, extra: &[&str]) -> Watcher {
        let mut args = vec!["watch", "--output", "json"];
        args.extend_from_slice(extra);
        let mut child = memory(url, namespace, &args);
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let collected = Arc::clone(&lines);
        let reader = tokio::spawn(async move {
            let mut stdout = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = stdout.next_line().await {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|error| panic!("{error}: a line that is not JSON: {line}"));
                collected.lock().expect("lines").push(value);
            }
        });
        Watcher {
            child,
            lines,
            reader,
        }
    }

    fn lines(&self) -> Vec<serde_json::Value> {
        self.lines.lock().expect("lines").clone()
    }

    /// Waits until at least `count` lines were printed.
    async fn wait_for_lines(&self, count: usize) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while self.lines().len() < count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the watch printed {:?}, not {count} lines",
                self.lines()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the watch to exit on its own: its exit code, every line
    /// it printed and its stderr.
    async fn finished(mut self) -> (Option<i32>, Vec<serde_json::Value>, String) {
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("the watch ends instead of hanging")
            .expect("volley memory watch");
        let _ = self.reader.await;
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            use tokio::io::AsyncReadExt;
            let _ = pipe.read_to_string(&mut stderr).await;
        }
        let lines = self.lines.lock().expect("lines").clone();
        (status.code(), lines, stderr)
    }
}

/// Writes `key` through `url` with `volley memory put`, trying again while
/// the cluster is failing over (a fresh connection each time, so to any
/// coordinator behind the address).
async fn put(url: &str, namespace: &str, key: &str, value: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let output = memory(url, namespace, &["put", key, value])
            .wait_with_output()
            .await
            .expect("volley memory put");
        if output.status.success() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "put {key} never succeeded: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes the next three keys `k/NN` of the relay test.
async fn write_some(url: &str, written: &mut usize) {
    for _ in 0..3 {
        put(url, "relay", &format!("k/{written:02}"), "v").await;
        *written += 1;
    }
}

/// The `(revision, kind, key)` of printed changes.
fn changes(lines: &[serde_json::Value]) -> Vec<(u64, String, String)> {
    lines
        .iter()
        .map(|line| {
            (
                line["revision"].as_u64().expect("revision"),
                line["kind"].as_str().expect("kind").to_owned(),
                line["key"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Ends a process that has no end of its own, and returns its output.
async fn stop(mut child: Child) -> std::process::Output {
    let _ = child.start_kill();
    tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("the process ends once killed")
        .expect("output")
}

#[tokio::test]
async fn a_redis_that_restarts_empty_resets_a_memory_watch_instead_of_skipping() {
    let mut cluster = Cluster::start_with(0, FLAGS).await;
    // Revision 1, so the watch can start after it: whenever it opens, it
    // prints every change after that.
    put(&cluster.url, "feed", "seed", "x").await;
    let watcher = Watcher::start(&cluster.url, "feed", &["--after", "1"]);
    for number in 0..3 {
        put(&cluster.url, "feed", &format!("before/{number}"), "x").await;
    }
    watcher.wait_for_lines(3).await;

    cluster.redis.restart().expect("redis restarts empty");
    // New keys at revisions 1, 2, … of the empty store: never to be shown
    // as if they followed revision 3.
    for number in 0..5 {
        put(&cluster.url, "feed", &format!("after/{number}"), "y").await;
    }

    let (code, lines, stderr) = watcher.finished().await;
    let printed = changes(&lines);
    assert_eq!(
        printed[..3],
        [
            (2, "put".to_owned(), "before/0".to_owned()),
            (3, "put".to_owned(), "before/1".to_owned()),
            (4, "put".to_owned(), "before/2".to_owned()),
        ],
        "{lines:?}"
    );
    assert_eq!(printed.len(), 4, "only the reset follows: {lines:?}");
    let reset = &lines[3];
    assert_eq!(reset["kind"], "reset", "{lines:?}");
    assert_eq!(reset["reason"], "store_restarted", "{lines:?}");
    assert_eq!(code, Some(1), "a reset exits 1: {stderr}");
    assert!(
        stderr.contains("was reset") && stderr.contains("read the keys again"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_flushed_store_resets_a_memory_watch_even_after_many_new_writes() {
    let cluster = Cluster::start_with(0, FLAGS).await;
    put(&cluster.url, "flushed", "seed", "x").await;
    let watcher = Watcher::start(&cluster.url, "flushed", &["--after", "1"]);
    put(&cluster.url, "flushed", "old", "x").await;
    watcher.wait_for_lines(1).await;

    let redis = redis::Client::open(cluster.redis.url()).expect("redis url");
    let mut connection = redis
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut connection)
        .await
        .expect("FLUSHALL");
    // More writes than the watch had seen: revisions pass its own again.
    for number in 0..6 {
        put(&cluster.url, "flushed", &format!("new/{number}"), "y").await;
    }

    let (code, lines, stderr) = watcher.finished().await;
    let printed = changes(&lines);
    assert_eq!(printed[0], (2, "put".to_owned(), "old".to_owned()));
    assert_eq!(printed.len(), 2, "only the reset follows: {lines:?}");
    assert_eq!(lines[1]["kind"], "reset", "{lines:?}");
    assert_eq!(code, Some(1), "{stderr}");
}

#[tokio::test]
async fn a_watch_resuming_past_the_scopes_revision_is_reset_and_odd_flags_are_refused() {
    let cluster = Cluster::start_with(0, FLAGS).await;
    put(&cluster.url, "behind", "k", "v").await;
    // Revision 1000 never happened here: revisions went backwards.
    let watcher = Watcher::start(&cluster.url, "behind", &["--after", "1000"]);
    let (code, lines, stderr) = watcher.finished().await;
    assert_eq!(changes(&lines), [(1, "reset".to_owned(), String::new())]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("was reset"), "{stderr}");

    for bad in ["soon", "-1s", "400days", ""] {
        let output = memory(&cluster.url, "behind", &["watch", "--reconnect-for", bad])
            .wait_with_output()
            .await
            .expect("volley memory watch");
        assert_eq!(output.status.code(), Some(2), "--reconnect-for {bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_watch_and_wait_ride_out_coordinators_stopping_and_dying() {
    let redis = RedisServer::start().expect("redis-server starts");
    let mut fleet = Fleet::start(redis, 2, FLAGS).await;
    let url = fleet.url();
    put(&url, "relay", "seed", "v").await;
    let watcher = Watcher::start(&url, "relay", &["--after", "1"]);
    let waiter = memory(&url, "relay", &["wait", "last"]);
    put(&url, "relay", "k/00", "v").await;
    watcher.wait_for_lines(1).await;

    let mut written = 1;
    // Whichever coordinator the watch and the wait are on, each way of
    // going away hits them at least once: after the first stops, they
    // are on the other.
    for index in [0, 1] {
        write_some(&url, &mut written).await;
        fleet.stop_coordinator(index).await;
        write_some(&url, &mut written).await;
        fleet.start_coordinator(index).await;
    }
    for index in [0, 1] {
        write_some(&url, &mut written).await;
        fleet.kill_coordinator(index).await;
        write_some(&url, &mut written).await;
        fleet.start_coordinator(index).await;
    }
    write_some(&url, &mut written).await;
    let total = written;
    watcher.wait_for_lines(total).await;
    put(&url, "relay", "last", "done").await;

    let waited = tokio::time::timeout(DEADLINE, waiter.wait_with_output())
        .await
        .expect("the wait ends")
        .expect("volley memory wait");
    assert_eq!(
        waited.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&waited.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&waited.stdout), "done");

    watcher.wait_for_lines(total + 1).await;
    let lines = watcher.lines();
    let output = stop(watcher.child).await;
    let printed = changes(&lines);
    let expected: Vec<(u64, String, String)> = (0..total)
        .map(|number| {
            (
                number as u64 + 2,
                "put".to_owned(),
                format!("k/{number:02}"),
            )
        })
        .chain([(total as u64 + 2, "put".to_owned(), "last".to_owned())])
        .collect();
    assert_eq!(
        printed,
        expected,
        "every change once, in order: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn no_coordinator_is_exit_3_cluster_unreachable() {
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    for args in [
        vec!["watch"],
        vec!["wait", "k"],
        vec!["get", "k"],
        vec!["put", "k", "v"],
        vec!["ls"],
    ] {
        let output =
            tokio::time::timeout(DEADLINE, memory(&nowhere, "none", &args).wait_with_output())
                .await
                .expect("ends")
                .expect("volley memory");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{args:?}: {stderr}");
        assert!(
            stderr.contains("unreachable") || stderr.contains("cannot reach"),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn a_watch_and_a_wait_whose_coordinator_never_comes_back_exit_3() {
    for signal in ["TERM", "KILL"] {
        let mut cluster = Cluster::start_with(0, FLAGS).await;
        put(&cluster.url, "gone", "seed", "v").await;
        let watcher = Watcher::start(
            &cluster.url,
            "gone",
            &["--after", "1", "--reconnect-for", "2s"],
        );
        let waiter = memory(
            &cluster.url,
            "gone",
            &["wait", "never", "--reconnect-for", "2s"],
        );
        put(&cluster.url, "gone", "k", "v").await;
        watcher.wait_for_lines(1).await;

        Cluster::signal(&cluster.coordinator, signal);
        let _ = cluster.coordinator.wait().await;

        let (code, lines, stderr) = watcher.finished().await;
        assert_eq!(changes(&lines), [(2, "put".to_owned(), "k".to_owned())]);
        assert_eq!(code, Some(3), "{signal}: {stderr}");
        assert!(stderr.contains("cluster unreachable"), "{signal}: {stderr}");

        let waited = tokio::time::timeout(DEADLINE, waiter.wait_with_output())
            .await
            .expect("the wait ends")
            .expect("volley memory wait");
        let stderr = String::from_utf8_lossy(&waited.stderr);
        assert_eq!(waited.status.code(), Some(3), "{signal}: {stderr}");
        assert!(
            stderr.contains("cluster unreachable") || stderr.contains("cannot reach"),
            "{signal}: {stderr}"
        );
    }
}
