//! Every caller proves who it is: real coordinators, workers and CLI
//! commands, attacked as an intruder would — no token, a revoked one, a
//! client posing as a worker, another tenant's reads, a forged result from
//! a second worker session, a fake worker adopting someone else's op, and an
//! op's token used after its attempt ended.

mod common;

use std::process::{Output, Stdio};
use std::time::Duration;

use common::{ADMIN_TOKEN, Cluster, batch_file, free_port, volley};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use volley_client::Client;
use volley_client::v1::worker_service_client::WorkerServiceClient;
use volley_client::v1::{self, coordinator_message, worker_message};

/// Only a guard against hanging; never asserted on.
const DEADLINE: Duration = Duration::from_secs(60);

/// `volley ARGS` against the cluster with `token` (None: no token at all).
async fn volley_as(cluster: &Cluster, token: Option<&str>, args: &[&str]) -> Output {
    let mut command = volley();
    command
        .args(args)
        .env("VOLLEY_COORDINATOR", &cluster.url)
        .env_remove("VOLLEY_TOKEN")
        .current_dir(cluster.root())
        .stdin(Stdio::null());
    if let Some(token) = token {
        command.env("VOLLEY_TOKEN", token);
    }
    command.output().await.expect("volley runs")
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
    let output = volley_as(cluster, Some(ADMIN_TOKEN), &full).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let printed = stdout(&output);
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 1, "the token alone on stdout: {printed:?}");
    assert!(lines[0].starts_with("vly_"), "{printed:?}");
    lines[0].to_owned()
}

async fn wait_for<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < until, "never: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_coordinator_without_a_token_refuses_to_start_and_auth_none_stays_on_loopback() {
    let redis = volley_testkit::RedisServer::start().expect("redis-server starts");
    let port = free_port();
    let no_token = volley()
        .args(["coordinator", "--listen", &format!("127.0.0.1:{port}")])
        .env("VOLLEY_REDIS", redis.url())
        .env_remove("VOLLEY_ADMIN_TOKEN_FILE")
        .output()
        .await
        .expect("volley runs");
    assert_eq!(no_token.status.code(), Some(2), "{}", stderr(&no_token));
    assert!(
        stderr(&no_token).contains("--admin-token-file"),
        "{}",
        stderr(&no_token)
    );
    let open = volley()
        .args([
            "coordinator",
            "--auth",
            "none",
            "--listen",
            &format!("0.0.0.0:{port}"),
        ])
        .env("VOLLEY_REDIS", redis.url())
        .output()
        .await
        .expect("volley runs");
    assert_eq!(open.status.code(), Some(2), "{}", stderr(&open));
    assert!(
        stderr(&open).contains("--auth none is refused"),
        "{}",
        stderr(&open)
    );
    let short = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(short.path(), "too-short").expect("write");
    let weak = volley()
        .args(["coordinator", "--listen", &format!("127.0.0.1:{port}")])
        .env("VOLLEY_REDIS", redis.url())
        .env("VOLLEY_ADMIN_TOKEN_FILE", short.path())
        .output()
        .await
        .expect("volley runs");
    assert_eq!(weak.status.code(), Some(2), "{}", stderr(&weak));
    assert!(stderr(&weak).contains("at least 32"), "{}", stderr(&weak));
}

#[tokio::test]
async fn calls_without_a_valid_token_exit_5_and_a_revocation_holds_within_a_second() {
    let cluster = Cluster::start(0).await;
    let missing = volley_as(&cluster, None, &["list"]).await;
    assert_eq!(missing.status.code(), Some(5), "{}", stderr(&missing));
    assert!(
        stderr(&missing).contains("not authenticated"),
        "{}",
        stderr(&missing)
    );
    assert_eq!(stderr(&missing).lines().count(), 1, "{}", stderr(&missing));
    let wrong = volley_as(&cluster, Some("vly_000000000000_nope"), &["list"]).await;
    assert_eq!(wrong.status.code(), Some(5), "{}", stderr(&wrong));
    // Health needs no token (Kubernetes probes carry none).
    let health = volley_as(&cluster, None, &["health"]).await;
    assert_eq!(health.status.code(), Some(0), "{}", stderr(&health));

    let token = create_token(
        &cluster,
        &["--role", "client", "--tenant", "a", "--name", "ci"],
    )
    .await;
    assert_eq!(
        volley_as(&cluster, Some(&token), &["list"])
            .await
            .status
            .code(),
        Some(0)
    );
    let whoami = volley_as(&cluster, Some(&token), &["token", "whoami"]).await;
    assert!(
        stdout(&whoami).contains("role client · tenant a"),
        "{}",
        stdout(&whoami)
    );
    // A client cannot manage tokens.
    let denied = volley_as(&cluster, Some(&token), &["token", "ls"]).await;
    assert_eq!(denied.status.code(), Some(6), "{}", stderr(&denied));

    // The admin sees it listed by id, never the token.
    let listed = volley_as(
        &cluster,
        Some(ADMIN_TOKEN),
        &["token", "ls", "--output", "json"],
    )
    .await;
    let tokens: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert!(!stdout(&listed).contains(&token));
    let id = tokens
        .as_array()
        .and_then(|tokens| tokens.iter().find(|token| token["name"] == "ci"))
        .and_then(|token| token["id"].as_str())
        .expect("the token is listed")
        .to_owned();
    assert!(token.contains(&id));

    let revoked = volley_as(&cluster, Some(ADMIN_TOKEN), &["token", "revoke", &id]).await;
    assert_eq!(revoked.status.code(), Some(0), "{}", stderr(&revoked));
    // Within a second on every coordinator: polled, not timed (CI is slow).
    wait_for("the revoked token is refused", async || {
        let output = volley_as(&cluster, Some(&token), &["list"]).await;
        (output.status.code() == Some(5)).then_some(())
    })
    .await;
    let output = volley_as(&cluster, Some(&token), &["list"]).await;
    assert!(stderr(&output).contains("revoked"), "{}", stderr(&output));

    let expiring = create_token(&cluster, &["--role", "client", "--ttl", "1s"]).await;
    wait_for("the token expires", async || {
        let output = volley_as(&cluster, Some(&expiring), &["list"]).await;
        (output.status.code() == Some(5)).then_some(())
    })
    .await;
}

/// Runs `volley worker` with `token` and `flags`: it must stop with exit 6
/// and say `why`.
async fn worker_refused(cluster: &Cluster, token: &str, flags: &[&str], why: &str) {
    let output = volley()
        .args(["worker", "--coordinator", &cluster.url])
        .args(flags)
        .env("VOLLEY_TOKEN", token)
        .output()
        .await
        .expect("volley runs");
    assert_eq!(output.status.code(), Some(6), "{}", stderr(&output));
    assert!(stderr(&output).contains(why), "{}", stderr(&output));
}

#[tokio::test]
async fn a_client_token_cannot_register_a_worker_and_a_worker_token_cannot_submit() {
    let mut cluster = Cluster::start(0).await;
    let client_token = create_token(&cluster, &["--role", "client"]).await;
    let worker_token = create_token(
        &cluster,
        &["--role", "worker", "--label", "zone=eu", "--kind", "echo"],
    )
    .await;
    // A real `volley worker` with a client token stops with exit 6.
    worker_refused(
        &cluster,
        &client_token,
        &["--id", "intruder"],
        "may not call volley.v1.WorkerService/Session",
    )
    .await;
    // A worker token may not claim labels it was not given...
    worker_refused(
        &cluster,
        &worker_token,
        &["--id", "w-us", "--label", "zone=us"],
        "zone=us",
    )
    .await;
    // ...nor kinds beyond `echo` (a worker advertises every built-in it runs).
    worker_refused(
        &cluster,
        &worker_token,
        &["--id", "w-eu", "--label", "zone=eu"],
        "may not register kind",
    )
    .await;
    // A worker token calls WorkerService only.
    let submit = volley_as(&cluster, Some(&worker_token), &["list"]).await;
    assert_eq!(submit.status.code(), Some(6), "{}", stderr(&submit));
    assert!(cluster.client.workers().await.expect("workers").is_empty());
    // With the admin token the same worker registers.
    cluster.add_bare_worker("w-ok", &["--slots", "1"]).await;
    cluster
        .client
        .wait_for_workers(1, DEADLINE)
        .await
        .expect("workers");
}

#[tokio::test]
async fn another_tenants_batches_and_memory_are_not_found() {
    let cluster = Cluster::start(1).await;
    let tenant_a = create_token(&cluster, &["--role", "client", "--tenant", "a"]).await;
    let tenant_b = create_token(&cluster, &["--role", "client", "--tenant", "b"]).await;
    let file = batch_file(
        cluster.root(),
        "a.yaml",
        "name: secret-of-a\nallow_unwritten: true\nops:\n  - {id: hold, kind: echo, args: {text: hi}, wait_for: [go]}\n",
    );
    let submitted = volley_as(
        &cluster,
        Some(&tenant_a),
        &["submit", file.to_str().expect("utf-8")],
    )
    .await;
    assert_eq!(submitted.status.code(), Some(0), "{}", stderr(&submitted));
    let batch = stdout(&submitted).trim().to_owned();

    for args in [
        vec!["status", batch.as_str()],
        vec!["cancel", batch.as_str()],
        vec!["why", batch.as_str(), "hold"],
        vec!["watch", batch.as_str()],
        vec!["memory", "--batch", batch.as_str(), "put", "go", "1"],
    ] {
        let output = volley_as(&cluster, Some(&tenant_b), &args).await;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(&format!("batch {batch} not found")),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    let listed = volley_as(&cluster, Some(&tenant_b), &["list", "--output", "json"]).await;
    assert!(!stdout(&listed).contains(&batch), "{}", stdout(&listed));
    let listed = volley_as(&cluster, Some(&tenant_a), &["list", "--output", "json"]).await;
    let rows: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(rows[0]["batch_id"], batch.as_str());
    assert_eq!(rows[0]["name"], "secret-of-a");
    assert_eq!(rows[0]["tenant"], "a");
    // The admin sees every tenant's.
    let listed = volley_as(&cluster, Some(ADMIN_TOKEN), &["list", "--output", "json"]).await;
    assert!(stdout(&listed).contains(&batch));

    // Namespaces are per tenant: b's `shared` is not a's.
    let put = volley_as(
        &cluster,
        Some(&tenant_a),
        &["memory", "--namespace", "shared", "put", "k", "from-a"],
    )
    .await;
    assert_eq!(put.status.code(), Some(0), "{}", stderr(&put));
    let got = volley_as(
        &cluster,
        Some(&tenant_b),
        &["memory", "--namespace", "shared", "get", "k"],
    )
    .await;
    assert_ne!(stdout(&got), "from-a");
    let got = volley_as(
        &cluster,
        Some(&tenant_a),
        &["memory", "--namespace", "shared", "get", "k"],
    )
    .await;
    assert_eq!(stdout(&got), "from-a");

    // a releases its own batch; its events record who submitted it.
    let put = volley_as(
        &cluster,
        Some(&tenant_a),
        &["memory", "--batch", &batch, "put", "go", "1"],
    )
    .await;
    assert_eq!(put.status.code(), Some(0), "{}", stderr(&put));
    let watched = volley_as(&cluster, Some(&tenant_a), &["watch", &batch]).await;
    assert_eq!(watched.status.code(), Some(0), "{}", stderr(&watched));
    let mut events = cluster.client.watch(&batch, 0).await.expect("watch");
    let submitted = events.next().await.expect("an event").expect("no error");
    assert_eq!(submitted.kind, v1::EventKind::BatchSubmitted as i32);
    assert!(
        submitted.message.starts_with("submitted by token ")
            && submitted.message.ends_with("(tenant a)"),
        "{submitted:?}"
    );
}

/// A fake worker: a session registered with `token`, as a 40-line script
/// over the proto would open one. Returns what it sends on and what the
/// coordinator answers.
async fn fake_worker(
    url: &str,
    token: &str,
    register: v1::Register,
) -> (
    mpsc::Sender<v1::WorkerMessage>,
    tonic::Streaming<v1::CoordinatorMessage>,
) {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let header: tonic::metadata::MetadataValue<_> =
        format!("Bearer {token}").parse().expect("header");
    let mut client =
        WorkerServiceClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
            Ok(request)
        });
    let (sender, receiver) = mpsc::channel(16);
    sender
        .send(v1::WorkerMessage {
            msg: Some(worker_message::Msg::Register(register)),
        })
        .await
        .expect("queue register");
    let mut inbound = client
        .session(ReceiverStream::new(receiver))
        .await
        .expect("session opens")
        .into_inner();
    match inbound.next().await {
        Some(Ok(v1::CoordinatorMessage {
            msg: Some(coordinator_message::Msg::Registered(_)),
        })) => {}
        other => panic!("expected Registered, got {other:?}"),
    }
    (sender, inbound)
}

async fn op_state(client: &Client, batch: &str, op: &str) -> (i32, String, u32) {
    let status = client.status(batch).await.expect("status");
    let found = status
        .ops
        .iter()
        .find(|status| status.id == op)
        .expect("op listed");
    (found.state, found.output.clone(), found.attempts)
}

async fn metric(port: u16, name: &str) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut body = String::new();
    stream.read_to_string(&mut body).await.expect("response");
    body.lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_forged_result_from_a_second_session_is_refused_and_the_real_one_counts() {
    let metrics_port = free_port();
    let metrics_flag = format!("127.0.0.1:{metrics_port}");
    let mut cluster = Cluster::start_with(0, &["--metrics-listen", &metrics_flag]).await;
    cluster.add_worker("real").await;
    cluster
        .client
        .wait_for_workers(1, DEADLINE)
        .await
        .expect("workers");
    let worker_token = create_token(&cluster, &["--role", "worker"]).await;
    // The intruder runs no kind the batch has, so it is sent nothing.
    let (intruder, _inbound) = fake_worker(
        &cluster.url,
        &worker_token,
        v1::Register {
            worker_id: "intruder".into(),
            kinds: vec!["nothing-real".into()],
            slots: 100_000,
            ..v1::Register::default()
        },
    )
    .await;
    let file = batch_file(
        cluster.root(),
        "victim.yaml",
        "name: victim\nops:\n  - {id: slow, kind: shell, args: {cmd: 'while [ ! -f release ]; do sleep 0.05; done; echo real'}}\n  - {id: after, kind: shell, after: [slow], args: {cmd: 'echo got ${ops.slow.output}'}}\n",
    );
    let submitted = cluster
        .client
        .submit(volley_client::read_batch_file(&file).expect("batch"))
        .await
        .expect("submit");
    let batch = submitted.batch_id;
    wait_for("slow runs", async || {
        (op_state(&cluster.client, &batch, "slow").await.0 == v1::OpState::Running as i32)
            .then_some(())
    })
    .await;
    // The forgery: a result for the op the real worker runs.
    intruder
        .send(v1::WorkerMessage {
            msg: Some(worker_message::Msg::Results(v1::Results {
                results: vec![v1::OpResult {
                    batch_id: batch.clone(),
                    op_index: 0,
                    attempt: 1,
                    ok: true,
                    output: "x; touch PWNED".into(),
                    ..v1::OpResult::default()
                }],
            })),
        })
        .await
        .expect("send the forgery");
    wait_for("the forgery is counted", async || {
        (metric(metrics_port, "volley_coordinator_worker_refusals_total").await >= 1.0)
            .then_some(())
    })
    .await;
    assert_eq!(
        op_state(&cluster.client, &batch, "slow").await.0,
        v1::OpState::Running as i32,
        "the forged result was not recorded"
    );
    std::fs::write(cluster.root().join("release"), "").expect("release the real op");
    let done = wait_for("the batch ends", async || {
        let status = cluster.client.status(&batch).await.ok()?;
        (status.state != v1::BatchState::Running as i32).then_some(status)
    })
    .await;
    assert_eq!(done.state, v1::BatchState::Succeeded as i32, "{done:?}");
    assert_eq!(op_state(&cluster.client, &batch, "slow").await.1, "real\n");
    assert_eq!(
        op_state(&cluster.client, &batch, "after").await.1,
        "got real\n"
    );
    assert!(!cluster.root().join("PWNED").exists());
    drop(intruder);
    cluster.workers.clear();
}

#[tokio::test]
async fn a_fake_worker_cannot_adopt_an_op_and_hold_its_lease() {
    let mut cluster = Cluster::start_with(0, &["--lease", "2s", "--reconnect-grace", "1s"]).await;
    cluster.add_worker("real").await;
    cluster
        .client
        .wait_for_workers(1, DEADLINE)
        .await
        .expect("workers");
    let file = batch_file(
        cluster.root(),
        "held.yaml",
        "name: held\nops:\n  - {id: long, kind: shell, attempts: 2, args: {cmd: 'if [ -f first ]; then echo second; else touch first; sleep 600; fi'}}\n",
    );
    let submitted = cluster
        .client
        .submit(volley_client::read_batch_file(&file).expect("batch"))
        .await
        .expect("submit");
    let batch = submitted.batch_id;
    wait_for("the first attempt runs", async || {
        let (state, _, attempts) = op_state(&cluster.client, &batch, "long").await;
        (state == v1::OpState::Running as i32 && attempts == 1).then_some(())
    })
    .await;
    // The adoption attack: "I still run that op" from another identity.
    let worker_token = create_token(&cluster, &["--role", "worker"]).await;
    let (intruder, mut inbound) = fake_worker(
        &cluster.url,
        &worker_token,
        v1::Register {
            worker_id: "real".into(),
            kinds: vec!["nothing-real".into()],
            slots: 1,
            running: vec![v1::OpRef {
                batch_id: batch.clone(),
                op_index: 0,
                attempt: 1,
                // A made-up lease ticket: only the cluster can sign one.
                ticket: "0".repeat(64),
            }],
            ..v1::Register::default()
        },
    )
    .await;
    // It is told to stop it: the lease is not its to keep.
    let cancel = tokio::time::timeout(DEADLINE, inbound.next())
        .await
        .expect("an answer")
        .expect("a message")
        .expect("not an error");
    match cancel.msg {
        Some(coordinator_message::Msg::Cancel(cancel)) => {
            assert_eq!(cancel.ops.len(), 1);
            assert_eq!(cancel.ops[0].batch_id, batch);
        }
        other => panic!("expected CancelOps, got {other:?}"),
    }
    // The real worker dies; the intruder keeps its session (and heartbeats).
    let heartbeat = intruder.clone();
    let beating = tokio::spawn(async move {
        loop {
            if heartbeat
                .send(v1::WorkerMessage {
                    msg: Some(worker_message::Msg::Heartbeat(v1::Heartbeat {})),
                })
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut real = cluster.workers.remove(0);
    real.start_kill().expect("kill the real worker");
    let _ = real.wait().await;
    cluster.add_worker("rescuer").await;
    // The op runs again (its lease ran out), not held hostage.
    let done = wait_for("the op runs again and the batch ends", async || {
        let status = cluster.client.status(&batch).await.ok()?;
        (status.state != v1::BatchState::Running as i32).then_some(status)
    })
    .await;
    assert_eq!(done.state, v1::BatchState::Succeeded as i32, "{done:?}");
    let (_, output, attempts) = op_state(&cluster.client, &batch, "long").await;
    assert_eq!((output.as_str(), attempts), ("second\n", 2));
    beating.abort();
}

#[tokio::test]
async fn an_ops_token_reaches_its_own_batch_only_while_its_attempt_runs() {
    let cluster = Cluster::start(1).await;
    let file = batch_file(
        cluster.root(),
        "agent.yaml",
        "name: agentic\nops:\n  - {id: think, kind: agent, args: {cmd: 'echo \"$VOLLEY_TOKEN\" > token.txt; volley memory put note from-the-agent && volley list; echo \"list exit $?\"'}}\n",
    );
    let output = volley_as(
        &cluster,
        Some(ADMIN_TOKEN),
        &[
            "submit",
            file.to_str().expect("utf-8"),
            "--watch",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json report");
    let batch = report["batch_id"].as_str().expect("batch id").to_owned();
    let think = report["ops"]
        .as_array()
        .and_then(|ops| ops.iter().find(|op| op["id"] == "think"))
        .expect("op think");
    // It wrote its batch's memory, and could not list batches (exit 6).
    assert!(
        think["output"]
            .as_str()
            .unwrap_or("")
            .contains("list exit 6"),
        "{think}"
    );
    let got = volley_as(
        &cluster,
        Some(ADMIN_TOKEN),
        &["memory", "--batch", &batch, "get", "note"],
    )
    .await;
    assert_eq!(stdout(&got), "from-the-agent");
    // The token was a capability of that attempt, not OP@ATTEMPT, and it
    // died with the attempt.
    let token = std::fs::read_to_string(cluster.root().join("token.txt"))
        .expect("the agent wrote its token")
        .trim()
        .to_owned();
    assert!(token.starts_with("vlycap."), "{token}");
    assert!(!token.ends_with("think@1"));
    let after = volley_as(
        &cluster,
        Some(&token),
        &["memory", "--batch", &batch, "get", "note"],
    )
    .await;
    assert_eq!(after.status.code(), Some(5), "{}", stderr(&after));
    assert!(stderr(&after).contains("not running"), "{}", stderr(&after));
    // A forged capability for another op is refused outright.
    let forged = token.replacen(".0.1.", ".1.1.", 1);
    let refused = volley_as(
        &cluster,
        Some(&forged),
        &["memory", "--batch", &batch, "get", "note"],
    )
    .await;
    assert_eq!(refused.status.code(), Some(5), "{}", stderr(&refused));
}

#[tokio::test]
async fn a_tenant_with_many_batches_does_not_starve_a_tenant_with_one() {
    let cluster = Cluster::start(1).await;
    let many = create_token(&cluster, &["--role", "client", "--tenant", "many"]).await;
    let one = create_token(&cluster, &["--role", "client", "--tenant", "one"]).await;
    let connect = async |token: &str| {
        Client::connect_with(&volley_client::Connection::new(cluster.url.clone()).with_token(token))
            .await
            .expect("connect")
    };
    let many = connect(&many).await;
    let one = connect(&one).await;
    let sleepers = |name: &str| v1::Batch {
        name: name.to_owned(),
        ops: (0..20)
            .map(|index| v1::Op {
                id: format!("s{index}"),
                kind: "sleep".into(),
                args_json: r#"{"ms": 100}"#.into(),
                ..v1::Op::default()
            })
            .collect(),
        ..v1::Batch::default()
    };
    let mut crowd = Vec::new();
    for number in 0..20 {
        crowd.push(
            many.submit(sleepers(&format!("crowd-{number}")))
                .await
                .expect("submit")
                .batch_id,
        );
    }
    let lone = one.submit(sleepers("lone")).await.expect("submit").batch_id;
    wait_for("the lone tenant's batch ends", async || {
        let status = one.summary(&lone).await.ok()?;
        (status.state != v1::BatchState::Running as i32).then_some(())
    })
    .await;
    let mut crowd_done = 0;
    for batch in &crowd {
        crowd_done += many.summary(batch).await.expect("summary").succeeded;
    }
    // The worker's 4 slots were shared half and half between the tenants,
    // so the lone batch's 20 ops ended long before the crowd's 400 did:
    // shared between 21 batches instead, the crowd would be nearly done.
    assert!(
        crowd_done < 200,
        "the crowd ran {crowd_done} of its 400 ops before the lone batch's 20 ended"
    );
}

#[tokio::test]
async fn a_revocation_on_one_coordinator_holds_on_the_others() {
    let redis = volley_testkit::RedisServer::start().expect("redis-server starts");
    let fleet = common::Fleet::start(redis, 2, &[]).await;
    let direct = |index: usize| format!("http://127.0.0.1:{}", fleet.coordinators[index].0);
    let run = async |url: String, token: &str, args: &[&str]| {
        volley()
            .args(args)
            .env("VOLLEY_COORDINATOR", url)
            .env("VOLLEY_TOKEN", token)
            .output()
            .await
            .expect("volley runs")
    };
    let created = run(
        direct(0),
        ADMIN_TOKEN,
        &["token", "create", "--role", "client"],
    )
    .await;
    assert_eq!(created.status.code(), Some(0), "{}", stderr(&created));
    let token = stdout(&created).trim().to_owned();
    // Coordinator 1 checks it (and caches the check)...
    let listed = run(direct(1), &token, &["list"]).await;
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    let id = token
        .strip_prefix("vly_")
        .and_then(|rest| rest.split_once('_'))
        .map(|(id, _)| id.to_owned())
        .expect("a token id");
    // ...then coordinator 0 revokes it: coordinator 1 refuses it soon after.
    let revoked = run(direct(0), ADMIN_TOKEN, &["token", "revoke", &id]).await;
    assert_eq!(revoked.status.code(), Some(0), "{}", stderr(&revoked));
    wait_for("coordinator 1 refuses the revoked token", async || {
        let output = run(direct(1), &token, &["list"]).await;
        (output.status.code() == Some(5)).then_some(())
    })
    .await;
}
