//! Idempotent submit and spawn, proven with real processes: `volley submit`
//! and `volley spawn` send an idempotency key (given with
//! `--idempotency-key`, else a new one per command) and retry a call whose
//! connection broke with the same key, so a retried call never creates a
//! second batch nor adds its ops twice; a key reused for another request is
//! refused; a cluster that cannot be reached is exit 3. Ops that count their
//! runs append to a file in the workers' root.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{ADMIN_TOKEN, Cluster, batch_file, connect_with_deadline, free_port, volley};
use tokio::process::Child;
use volley_client::v1::BatchState;
use volley_testkit::{RedisServer, TcpBalancer};

/// Only a guard against hanging; never asserted on.
const HANG_GUARD: Duration = Duration::from_secs(90);

/// `n` shell ops that each append their id to `ran.txt` once they run.
fn counting_batch(name: &str, n: usize) -> String {
    let mut text = format!("name: {name}\nops:\n");
    for index in 0..n {
        text.push_str(&format!(
            "  - {{id: op{index}, kind: shell, args: {{cmd: 'echo op{index} >> ran.txt'}}}}\n"
        ));
    }
    text
}

/// Runs `volley ARGS…` against `url` with the admin token: (exit code,
/// stdout, stderr), within the hang guard.
async fn volley_at(url: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let output = tokio::time::timeout(
        HANG_GUARD,
        volley()
            .args(args)
            .env("VOLLEY_COORDINATOR", url)
            .env("VOLLEY_TOKEN", ADMIN_TOKEN)
            .env_remove("VOLLEY_IDEMPOTENCY_KEY")
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("volley ends within the hang guard")
    .expect("volley runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Waits until `batch_id` has ended, and returns its state.
async fn ended(client: &volley_client::Client, batch_id: &str) -> BatchState {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        if let Ok(status) = client.status(batch_id).await
            && status.state() != BatchState::Running
        {
            return status.state();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "batch {batch_id} never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The lines of `ran.txt` in `root`, sorted.
fn runs(root: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(root.join("ran.txt")).unwrap_or_default();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitting_twice_with_one_key_makes_one_batch_whose_ops_run_once() {
    let cluster = Cluster::start(1).await;
    let file = batch_file(cluster.root(), "count.yaml", &counting_batch("count", 3));
    let file = file.to_str().expect("utf-8");
    let (code, first_id, stderr) = volley_at(
        &cluster.url,
        &["submit", file, "--idempotency-key", "nightly-2026-12-02"],
    )
    .await;
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let first_id = first_id.trim().to_owned();
    assert!(!first_id.is_empty());
    assert_eq!(
        ended(&cluster.client, &first_id).await,
        BatchState::Succeeded
    );
    // Again, after it ran: the same batch id, and nothing runs again.
    let (code, second_id, stderr) = volley_at(
        &cluster.url,
        &["submit", file, "--idempotency-key", "nightly-2026-12-02"],
    )
    .await;
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert_eq!(second_id.trim(), first_id);
    // Watched, the retry follows the first batch to its report: exit 0.
    let (code, _, stderr) = volley_at(
        &cluster.url,
        &[
            "submit",
            file,
            "--watch",
            "--idempotency-key",
            "nightly-2026-12-02",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("batch {first_id} submitted: 3 ops")),
        "{stderr}"
    );
    assert_eq!(runs(cluster.root()), vec!["op0", "op1", "op2"]);
    let batches = cluster.client.list(100).await.expect("list");
    assert_eq!(batches.len(), 1, "{batches:?}");
    // Without a key, each submit is a batch of its own.
    let (code, third_id, _) = volley_at(&cluster.url, &["submit", file]).await;
    assert_eq!(code, Some(0));
    assert_ne!(third_id.trim(), first_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reused_for_another_batch_or_malformed_is_refused_with_exit_2() {
    let cluster = Cluster::start(1).await;
    let first = batch_file(cluster.root(), "a.yaml", &counting_batch("a", 1));
    let other = batch_file(cluster.root(), "b.yaml", &counting_batch("b", 2));
    let (code, first_id, stderr) = volley_at(
        &cluster.url,
        &[
            "submit",
            first.to_str().expect("utf-8"),
            "--idempotency-key",
            "k-1",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let (code, stdout, stderr) = volley_at(
        &cluster.url,
        &[
            "submit",
            other.to_str().expect("utf-8"),
            "--idempotency-key",
            "k-1",
        ],
    )
    .await;
    assert_eq!(code, Some(2), "stdout: {stdout} stderr: {stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "idempotency key `k-1` was used for another batch `{}`",
            first_id.trim()
        )),
        "{stderr}"
    );
    // Malformed keys: too long, spaces, control bytes, non-ASCII.
    let long = "k".repeat(129);
    for (key, says) in [
        (
            long.as_str(),
            "idempotency key is 129 bytes; the most is 128",
        ),
        ("two words", "byte 0x20"),
        ("bell\u{7}", "byte 0x07"),
        ("clé", "byte 0xc3"),
    ] {
        let (code, _, stderr) = volley_at(
            &cluster.url,
            &[
                "submit",
                first.to_str().expect("utf-8"),
                "--idempotency-key",
                key,
            ],
        )
        .await;
        assert_eq!(code, Some(2), "key {key:?}: {stderr}");
        assert!(stderr.contains(says), "key {key:?}: {stderr}");
    }
    // 100 KB of key (near the most one argument may hold) is refused too.
    let huge = "k".repeat(100_000);
    let (code, _, stderr) = volley_at(
        &cluster.url,
        &[
            "submit",
            first.to_str().expect("utf-8"),
            "--idempotency-key",
            &huge,
        ],
    )
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("idempotency key is 100000 bytes"),
        "{stderr}"
    );
    assert_eq!(cluster.client.list(100).await.expect("list").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawning_twice_with_one_key_gives_the_first_answer() {
    let cluster = Cluster::start(1).await;
    // A batch that runs until the test writes `go`.
    let gated = batch_file(
        cluster.root(),
        "gated.yaml",
        "name: gated\nallow_unwritten: true\nops:\n  - {id: gate, kind: echo, wait_for: [go], args: {text: 'go ${memory.go}'}}\n",
    );
    let (code, batch_id, stderr) =
        volley_at(&cluster.url, &["submit", gated.to_str().expect("utf-8")]).await;
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let batch_id = batch_id.trim().to_owned();
    let children = batch_file(
        cluster.root(),
        "children.yaml",
        "ops:\n  - {id: child, kind: shell, args: {cmd: 'echo child >> ran.txt'}}\n",
    );
    let others = batch_file(
        cluster.root(),
        "others.yaml",
        "ops:\n  - {id: other, kind: noop}\n",
    );
    let spawn = |file: &Path, key: &str| {
        let mut args = vec![
            "spawn".to_owned(),
            file.to_str().expect("utf-8").to_owned(),
            "--batch".to_owned(),
            batch_id.clone(),
        ];
        if !key.is_empty() {
            args.extend(["--idempotency-key".to_owned(), key.to_owned()]);
        }
        args
    };
    for _ in 0..2 {
        let args = spawn(&children, "fan-out-1");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, stderr) = volley_at(&cluster.url, &args).await;
        assert_eq!(code, Some(0), "stderr: {stderr}");
        assert!(
            stderr.contains(&format!("1 op(s) added to batch {batch_id}")),
            "{stderr}"
        );
    }
    // The same key with other ops: refused, exit 2.
    let args = spawn(&others, "fan-out-1");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, stderr) = volley_at(&cluster.url, &args).await;
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!(
            "idempotency key `fan-out-1` was used for other ops spawned into batch `{batch_id}`"
        )),
        "{stderr}"
    );
    // A bad key is refused before anything else.
    let args = spawn(&children, "a b");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, stderr) = volley_at(&cluster.url, &args).await;
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(stderr.contains("byte 0x20"), "{stderr}");
    // Without a key the same ops again are new ops: their id is taken.
    let args = spawn(&children, "");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, stderr) = volley_at(&cluster.url, &args).await;
    assert_eq!(code, Some(2), "stderr: {stderr}");
    // An op's spawn (as an agent's `volley spawn`, VOLLEY_OP set) without
    // a key: its next attempt spawning the same ops gets the first answer.
    let agent_children = batch_file(
        cluster.root(),
        "agent-children.yaml",
        "ops:\n  - {id: agent-child, kind: shell, args: {cmd: 'echo agent-child >> ran.txt'}}\n",
    );
    for attempt in 1..=2 {
        let (code, _, stderr) = volley_at(
            &cluster.url,
            &[
                "spawn",
                agent_children.to_str().expect("utf-8"),
                "--batch",
                &batch_id,
                "--op",
                "gate",
            ],
        )
        .await;
        assert_eq!(code, Some(0), "attempt {attempt}: {stderr}");
    }
    cluster
        .client
        .memory(volley_client::Scope::Batch(batch_id.clone()))
        .put("go", b"now".to_vec())
        .await
        .expect("put go");
    assert_eq!(
        ended(&cluster.client, &batch_id).await,
        BatchState::Succeeded
    );
    let status = cluster.client.status(&batch_id).await.expect("status");
    assert_eq!(status.ops.len(), 3, "{status:?}");
    assert_eq!(runs(cluster.root()), vec!["agent-child", "child"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_coordinator_is_exit_3_for_submit_and_spawn() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = batch_file(dir.path(), "b.yaml", &counting_batch("b", 1));
    let file = file.to_str().expect("utf-8");
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let (code, stdout, stderr) = volley_at(&nobody, &["submit", file]).await;
    assert_eq!(code, Some(3), "stderr: {stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.contains("cannot reach the coordinator"), "{stderr}");
    assert!(stderr.contains("was not sent"), "{stderr}");
    let (code, _, stderr) = volley_at(&nobody, &["spawn", file, "--batch", "some-batch"]).await;
    assert_eq!(code, Some(3), "stderr: {stderr}");
    assert!(stderr.contains("cannot reach the coordinator"), "{stderr}");
}

/// A coordinator with the test-only crash point `fault` (debug builds; see
/// `volley_coordinator::idempotency::fault_point`) on `port`.
fn coordinator_with_fault(redis: &RedisServer, port: u16, id: &str, fault: &str) -> Child {
    volley()
        .args([
            "coordinator",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--redis",
            &redis.url(),
            "--id",
            id,
            "--resync-interval",
            "200ms",
            "--lease",
            "8s",
            "--ownership-ttl",
            "2s",
        ])
        .env("VOLLEY_TEST_FAULT", fault)
        .env("VOLLEY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("coordinator starts")
}

/// Coordinators behind a balancer, each dying at the crash point `fault`
/// (right after it stored a new batch or spawn, before answering), and one
/// worker through the balancer.
struct FaultyFleet {
    redis: RedisServer,
    balancer: TcpBalancer,
    ports: Vec<u16>,
    coordinators: Vec<Child>,
    _worker: Child,
    root: tempfile::TempDir,
}

impl FaultyFleet {
    async fn start(fault: &str) -> FaultyFleet {
        FaultyFleet::start_with(fault, 2).await
    }

    async fn start_with(fault: &str, coordinators: usize) -> FaultyFleet {
        let redis = RedisServer::start().expect("redis-server starts");
        let ports: Vec<u16> = (0..coordinators).map(|_| free_port()).collect();
        let balancer = TcpBalancer::start(
            ports
                .iter()
                .map(|port| std::net::SocketAddr::from(([127, 0, 0, 1], *port)))
                .collect(),
        )
        .expect("balancer starts");
        let coordinators: Vec<Child> = ports
            .iter()
            .enumerate()
            .map(|(index, port)| coordinator_with_fault(&redis, *port, &format!("c{index}"), fault))
            .collect();
        for port in &ports {
            connect_with_deadline(&format!("http://127.0.0.1:{port}"), HANG_GUARD).await;
        }
        let root = tempfile::tempdir().expect("temp dir");
        let worker = volley()
            .args(["worker", "--coordinator", &balancer.url(), "--id", "w0"])
            .args(["--slots", "4", "--allow-shell", "--heartbeat", "200ms"])
            .arg("--root")
            .arg(root.path())
            .env("VOLLEY_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("worker starts");
        let client = connect_with_deadline(&balancer.url(), HANG_GUARD).await;
        client
            .wait_for_workers(1, HANG_GUARD)
            .await
            .expect("the worker connects");
        FaultyFleet {
            redis,
            balancer,
            ports,
            coordinators,
            _worker: worker,
            root,
        }
    }

    /// How many coordinators have died.
    fn dead(&mut self) -> usize {
        let mut dead = 0;
        for child in &mut self.coordinators {
            if matches!(child.try_wait(), Ok(Some(_))) {
                dead += 1;
            }
        }
        dead
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_dying_during_a_submit_is_retried_into_one_batch() {
    let mut fleet = FaultyFleet::start("submit-stored").await;
    let file = batch_file(fleet.root.path(), "count.yaml", &counting_batch("count", 3));
    // No key given: the CLI makes one and keeps it across its retries.
    let (code, stdout, stderr) = volley_at(
        &fleet.balancer.url(),
        &[
            "submit",
            file.to_str().expect("utf-8"),
            "--watch",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    // One coordinator died with the batch stored and unanswered; the
    // retry reached the other, which answered with the same batch.
    assert_eq!(fleet.dead(), 1, "stderr: {stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("a JSON report");
    assert_eq!(report["state"], "succeeded", "{report}");
    let client = connect_with_deadline(&fleet.balancer.url(), HANG_GUARD).await;
    let batches = client.list(100).await.expect("list");
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert_eq!(runs(fleet.root.path()), vec!["op0", "op1", "op2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_dying_during_a_spawn_is_retried_into_one_spawn() {
    let mut fleet = FaultyFleet::start("spawn-stored").await;
    let url = fleet.balancer.url();
    let gated = batch_file(
        fleet.root.path(),
        "gated.yaml",
        "name: gated\nallow_unwritten: true\nops:\n  - {id: gate, kind: echo, wait_for: [go], args: {text: 'go ${memory.go}'}}\n",
    );
    let (code, batch_id, stderr) =
        volley_at(&url, &["submit", gated.to_str().expect("utf-8")]).await;
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let batch_id = batch_id.trim().to_owned();
    let children = batch_file(
        fleet.root.path(),
        "children.yaml",
        "ops:\n  - {id: child, kind: shell, args: {cmd: 'echo child >> ran.txt'}}\n",
    );
    let (code, _, stderr) = volley_at(
        &url,
        &[
            "spawn",
            children.to_str().expect("utf-8"),
            "--batch",
            &batch_id,
        ],
    )
    .await;
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("1 op(s) added to batch {batch_id}")),
        "{stderr}"
    );
    assert_eq!(fleet.dead(), 1, "stderr: {stderr}");
    let client = connect_with_deadline(&url, HANG_GUARD).await;
    client
        .memory(volley_client::Scope::Batch(batch_id.clone()))
        .put("go", b"now".to_vec())
        .await
        .expect("put go");
    assert_eq!(ended(&client, &batch_id).await, BatchState::Succeeded);
    assert_eq!(runs(fleet.root.path()), vec!["child"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_no_coordinator_answers_exits_3_with_the_key_that_retries_it_safely() {
    let mut fleet = FaultyFleet::start_with("submit-stored", 1).await;
    let file = batch_file(fleet.root.path(), "count.yaml", &counting_batch("count", 2));
    let file = file.to_str().expect("utf-8").to_owned();
    let url = fleet.balancer.url();
    // The only coordinator stores the batch and dies before answering; the
    // retries find nobody.
    let (code, stdout, stderr) = volley_at(&url, &["submit", &file]).await;
    assert_eq!(code, Some(3), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(fleet.dead(), 1);
    let key = stderr
        .split("--idempotency-key ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no key in:\n{stderr}"))
        .to_owned();
    assert!(
        stderr.contains("may or may not have taken effect"),
        "{stderr}"
    );
    // A coordinator is back (without the crash point): the same command
    // with that key gets the batch the first call made, which runs once.
    fleet.coordinators[0] = coordinator_with_fault(&fleet.redis, fleet.ports[0], "c0", "none");
    let client = connect_with_deadline(&url, HANG_GUARD).await;
    let (code, batch_id, stderr) =
        volley_at(&url, &["submit", &file, "--idempotency-key", &key]).await;
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let batches = client.list(100).await.expect("list");
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert_eq!(batches[0].batch_id, batch_id.trim());
    assert_eq!(ended(&client, batch_id.trim()).await, BatchState::Succeeded);
    assert_eq!(runs(fleet.root.path()), vec!["op0", "op1"]);
}

/// `volley token create ARGS…` as the admin: the token (stdout's one line).
async fn token(cluster: &Cluster, args: &[&str]) -> String {
    let mut full = vec!["token", "create"];
    full.extend_from_slice(args);
    let (code, stdout, stderr) = volley_at(&cluster.url, &full).await;
    assert_eq!(code, Some(0), "{stderr}");
    stdout.trim().to_owned()
}

/// `volley ARGS…` against the cluster as the holder of `token`.
async fn volley_as(cluster: &Cluster, token: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let output = tokio::time::timeout(
        HANG_GUARD,
        volley()
            .args(args)
            .env("VOLLEY_COORDINATOR", &cluster.url)
            .env("VOLLEY_TOKEN", token)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("volley ends within the hang guard")
    .expect("volley runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_in_two_tenants_is_two_batches_neither_sees_the_other() {
    let cluster = Cluster::start(1).await;
    let tenant_a = token(&cluster, &["--role", "client", "--tenant", "a"]).await;
    let tenant_b = token(&cluster, &["--role", "client", "--tenant", "b"]).await;
    let first = batch_file(cluster.root(), "a.yaml", &counting_batch("a", 1));
    let other = batch_file(cluster.root(), "b.yaml", &counting_batch("b", 2));
    let submit = |file: &Path| {
        vec![
            "submit".to_owned(),
            file.to_str().expect("utf-8").to_owned(),
            "--idempotency-key".to_owned(),
            "shared-key".to_owned(),
        ]
    };
    let args = submit(&first);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, a_id, stderr) = volley_as(&cluster, &tenant_a, &args).await;
    assert_eq!(code, Some(0), "{stderr}");
    // Tenant b, same key, another batch: no conflict, and no hint of a's.
    let args = submit(&other);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, b_id, stderr) = volley_as(&cluster, &tenant_b, &args).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_ne!(a_id.trim(), b_id.trim());
    assert!(!stderr.contains(a_id.trim()), "{stderr}");
    // Each tenant's retry finds its own batch; neither can read the other's.
    let args = submit(&other);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, b_again, _) = volley_as(&cluster, &tenant_b, &args).await;
    assert_eq!(code, Some(0));
    assert_eq!(b_again.trim(), b_id.trim());
    let (code, _, stderr) = volley_as(&cluster, &tenant_b, &["status", a_id.trim()]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("not found"), "{stderr}");
}
