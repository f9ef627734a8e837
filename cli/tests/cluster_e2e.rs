//! The whole path with real parts: redis-server, a coordinator and three
//! workers as separate `volley` processes, driven through the Rust SDK.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use volley_client::v1::{self, BatchState, EventKind, OpState};
use volley_testkit::op;

fn after(mut op: v1::Op, deps: &[String]) -> v1::Op {
    op.after = deps.to_vec();
    op
}

/// 500 ops mixing every pattern; returns the batch and the expected output
/// of each op (None: checked separately).
fn mixed_batch() -> (v1::Batch, HashMap<String, Option<String>>) {
    let mut ops = Vec::new();
    let mut expected: HashMap<String, Option<String>> = HashMap::new();
    // 100 independent echoes.
    for index in 0..100 {
        let id = format!("echo-{index}");
        ops.push(op(&id, "echo", json!({"text": format!("hello {index}")})));
        expected.insert(id, Some(format!("hello {index}")));
    }
    // 40 chains of 3 passing results: a → b → c.
    for chain in 0..40 {
        let a = format!("chain-{chain}-a");
        let b = format!("chain-{chain}-b");
        let c = format!("chain-{chain}-c");
        ops.push(op(&a, "echo", json!({"text": format!("{chain}")})));
        ops.push(op(
            &b,
            "echo",
            json!({"text": format!("${{ops.{a}.output}}+b")}),
        ));
        ops.push(op(
            &c,
            "echo",
            json!({"text": format!("${{ops.{b}.output}}+c")}),
        ));
        expected.insert(a, Some(format!("{chain}")));
        expected.insert(b, Some(format!("{chain}+b")));
        expected.insert(c, Some(format!("{chain}+b+c")));
    }
    // Fan-out: one contract file written, 40 readers after it.
    ops.push(op(
        "contract",
        "write",
        json!({"path": "shared/contract.txt", "content": "the contract"}),
    ));
    expected.insert("contract".into(), None);
    for reader in 0..40 {
        let id = format!("impl-{reader}");
        ops.push(after(
            op(&id, "read", json!({"path": "shared/contract.txt"})),
            &["contract".to_owned()],
        ));
        expected.insert(id, Some("the contract".into()));
    }
    // Fan-in: one op after 30 sleeps, reporting their states.
    let mut sleepers = Vec::new();
    for sleeper in 0..30 {
        let id = format!("sleep-{sleeper}");
        ops.push(op(&id, "sleep", json!({"ms": 5 + sleeper})));
        expected.insert(id.clone(), Some(String::new()));
        sleepers.push(id);
    }
    ops.push(op(
        "gather",
        "echo",
        json!({"text": "${ops.sleep-0.status} ${ops.sleep-29.status}"}),
    ));
    ops.last_mut().expect("gather").after = sleepers;
    expected.insert("gather".into(), Some("succeeded succeeded".into()));
    // Memory: 25 producers store_as a key; 25 consumers wait for it.
    for pair in 0..25 {
        let producer = format!("produce-{pair}");
        let consumer = format!("consume-{pair}");
        let mut produce = op(
            &producer,
            "echo",
            json!({"text": format!("finding {pair}")}),
        );
        produce.store_as = format!("swarm/findings/{pair}");
        ops.push(produce);
        let mut consume = op(
            &consumer,
            "echo",
            json!({"text": format!("got ${{memory.swarm/findings/{pair}}}")}),
        );
        consume.wait_for = vec![format!("swarm/findings/{pair}")];
        ops.push(consume);
        expected.insert(producer, Some(format!("finding {pair}")));
        expected.insert(consumer, Some(format!("got finding {pair}")));
    }
    // memory.put then memory.get of the same key.
    for pair in 0..10 {
        let put = format!("put-{pair}");
        let get = format!("get-{pair}");
        ops.push(op(
            &put,
            "memory.put",
            json!({"key": format!("kv/{pair}"), "value": format!("v{pair}")}),
        ));
        ops.push(after(
            op(&get, "memory.get", json!({"key": format!("kv/{pair}")})),
            std::slice::from_ref(&put),
        ));
        expected.insert(put, Some(format!("v{pair}")));
        expected.insert(get, Some(format!("v{pair}")));
    }
    // Shell.
    for index in 0..40 {
        let id = format!("shell-{index}");
        ops.push(op(
            &id,
            "shell",
            json!({"cmd": format!("echo $(({index} * {index}))")}),
        ));
        expected.insert(id, Some(format!("{}\n", index * index)));
    }
    // Files: 20 writes, then a glob and a grep over them.
    let mut writers = Vec::new();
    for index in 0..20 {
        let id = format!("file-{index}");
        ops.push(op(&id, "write", json!({"path": format!("data/f{index:02}.txt"), "content": format!("line one\nneedle {index}\n")})));
        expected.insert(id.clone(), None);
        writers.push(id);
    }
    ops.push(after(
        op("list", "glob", json!({"pattern": "data/*.txt"})),
        &writers,
    ));
    let listing: Vec<String> = (0..20)
        .map(|index| format!("data/f{index:02}.txt"))
        .collect();
    expected.insert("list".into(), Some(listing.join("\n")));
    ops.push(after(
        op(
            "search",
            "grep",
            json!({"pattern": "needle 1[0-9]", "glob": "data/*.txt"}),
        ),
        &writers,
    ));
    let matches: Vec<String> = (10..20)
        .map(|index| format!("data/f{index}.txt:2:needle {index}"))
        .collect();
    expected.insert("search".into(), Some(matches.join("\n")));
    // Fill to 500 with noops.
    let mut filler = 0;
    while ops.len() < 500 {
        let id = format!("noop-{filler}");
        ops.push(op(&id, "noop", json!({})));
        expected.insert(id, Some(String::new()));
        filler += 1;
    }
    let batch = v1::Batch {
        name: "mixed-500".into(),
        max_parallel: 0,
        ops,
        ..Default::default()
    };
    (batch, expected)
}

/// Outputs of glob and grep may or may not end with a newline; compare lines.
fn same_text(actual: &str, expected: &str) -> bool {
    actual == expected || actual.trim_end_matches('\n') == expected.trim_end_matches('\n')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_mixed_ops_on_three_workers() {
    let cluster = common::Cluster::start(3).await;
    let (batch, expected) = mixed_batch();
    assert_eq!(batch.ops.len(), 500);
    let submitted = cluster.client.submit(batch).await.expect("submit");
    assert_eq!(submitted.op_count, 500);

    let mut events = Vec::new();
    let stream = cluster
        .client
        .watch(&submitted.batch_id, 0)
        .await
        .expect("watch");
    futures::pin_mut!(stream);
    let collect = async {
        while let Some(event) = stream.next().await {
            events.push(event.expect("event"));
        }
    };
    tokio::time::timeout(Duration::from_secs(120), collect)
        .await
        .expect("batch finishes");

    let status = cluster
        .client
        .status(&submitted.batch_id)
        .await
        .expect("status");
    let failures: Vec<_> = status
        .ops
        .iter()
        .filter(|op| op.state() != OpState::Succeeded)
        .map(|op| format!("{}: {:?} {}", op.id, op.state(), op.error))
        .collect();
    assert!(failures.is_empty(), "ops not succeeded: {failures:#?}");
    assert_eq!(status.state(), BatchState::Succeeded);
    assert_eq!(status.succeeded, 500);
    for op in &status.ops {
        if let Some(Some(want)) = expected.get(&op.id) {
            assert!(
                same_text(&op.output, want),
                "op {}: output {:?}, expected {:?}",
                op.id,
                op.output,
                want
            );
        }
        assert!(
            ["w0", "w1", "w2"].contains(&op.worker.as_str()),
            "op {} ran on {:?}",
            op.id,
            op.worker
        );
    }
    let contract =
        std::fs::read_to_string(cluster.root().join("shared/contract.txt")).expect("contract file");
    assert_eq!(contract, "the contract");
    let workers_used: std::collections::HashSet<_> =
        status.ops.iter().map(|op| op.worker.clone()).collect();
    assert_eq!(workers_used.len(), 3, "all three workers took ops");

    // The event stream is complete and ordered.
    let seqs: Vec<u64> = events.iter().map(|event| event.seq).collect();
    let want: Vec<u64> = (1..=events.len() as u64).collect();
    assert_eq!(seqs, want, "sequence numbers 1..=N without gaps");
    assert_eq!(
        events.first().map(|event| event.kind()),
        Some(EventKind::BatchSubmitted)
    );
    let last = events.last().expect("events");
    assert_eq!(last.kind(), EventKind::BatchFinished);
    assert_eq!(last.batch_state(), BatchState::Succeeded);
    let mut started: HashMap<&str, usize> = HashMap::new();
    let mut succeeded: HashMap<&str, usize> = HashMap::new();
    for (position, event) in events.iter().enumerate() {
        match event.kind() {
            EventKind::OpStarted => {
                started.insert(&event.op_id, position);
            }
            EventKind::OpSucceeded => {
                assert!(
                    succeeded.insert(&event.op_id, position).is_none(),
                    "{} succeeded twice",
                    event.op_id
                );
                assert!(
                    started
                        .get(event.op_id.as_str())
                        .is_some_and(|start| *start < position),
                    "{} succeeded before it started",
                    event.op_id
                );
            }
            EventKind::BatchSubmitted => assert_eq!(position, 0, "submitted comes first"),
            EventKind::BatchFinished => {
                assert_eq!(position, events.len() - 1, "finished comes last")
            }
            other => panic!("unexpected event {other:?} for {}", event.op_id),
        }
    }
    assert_eq!(started.len(), 500);
    assert_eq!(succeeded.len(), 500);
    // Dependencies ran first: every chain's c succeeded after its b.
    for chain in 0..40 {
        let b = succeeded[format!("chain-{chain}-b").as_str()];
        let c_start = started[format!("chain-{chain}-c").as_str()];
        assert!(b < c_start, "chain {chain}: c started before b succeeded");
    }

    // Resuming mid-stream yields exactly the rest.
    let resumed = cluster
        .client
        .watch(&submitted.batch_id, 100)
        .await
        .expect("watch");
    let rest: Vec<u64> = resumed
        .map(|event| event.expect("event").seq)
        .collect()
        .await;
    assert_eq!(rest, (101..=events.len() as u64).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_skip_dependents_and_a_client_put_unblocks_a_wait() {
    let cluster = common::Cluster::start(2).await;
    let mut broken = op("broken", "shell", json!({"cmd": "echo oops >&2; exit 3"}));
    broken.attempts = 2;
    let dependent = after(
        op("dependent", "echo", json!({"text": "never"})),
        &["broken".to_owned()],
    );
    let mut always = after(
        op(
            "always",
            "echo",
            json!({"text": "broken was ${ops.broken.status}"}),
        ),
        &["broken".to_owned()],
    );
    always.run_if = v1::RunIf::Always as i32;
    let mut waiter = op("waiter", "echo", json!({"text": "go: ${memory.signal}"}));
    waiter.wait_for = vec!["signal".to_owned()];
    let batch = v1::Batch {
        name: "failures".into(),
        ops: vec![broken, dependent, always, waiter],
        // The test writes `signal` as a client.
        allow_unwritten: true,
        ..Default::default()
    };
    let submitted = cluster.client.submit(batch).await.expect("submit");
    assert!(
        submitted
            .warnings
            .iter()
            .any(|warning| warning.contains("signal")),
        "a key nothing writes is warned about: {:?}",
        submitted.warnings
    );
    // Until the key exists the waiter does not run.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = cluster
            .client
            .status(&submitted.batch_id)
            .await
            .expect("status");
        let by_id: HashMap<_, _> = status.ops.iter().map(|op| (op.id.as_str(), op)).collect();
        if by_id["always"].state() == OpState::Succeeded {
            assert_eq!(by_id["waiter"].state(), OpState::Waiting);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "always never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let written = cluster
        .client
        .memory(volley_client::Scope::Batch(submitted.batch_id.clone()))
        .put("signal", b"now".to_vec())
        .await
        .expect("put");
    assert_eq!(written.unblocked, 1);
    let stream = cluster
        .client
        .watch(&submitted.batch_id, 0)
        .await
        .expect("watch");
    let _: Vec<_> = tokio::time::timeout(Duration::from_secs(30), stream.collect::<Vec<_>>())
        .await
        .expect("batch finishes");
    let status = cluster
        .client
        .status(&submitted.batch_id)
        .await
        .expect("status");
    let by_id: HashMap<_, _> = status.ops.iter().map(|op| (op.id.as_str(), op)).collect();
    assert_eq!(status.state(), BatchState::Failed);
    assert_eq!(by_id["broken"].state(), OpState::Failed);
    assert_eq!(by_id["broken"].attempts, 2, "a non-zero exit is retried");
    assert!(
        by_id["broken"].error.contains('3'),
        "error names the exit code: {}",
        by_id["broken"].error
    );
    assert_eq!(by_id["dependent"].state(), OpState::Skipped);
    assert!(
        by_id["dependent"].error.contains("broken"),
        "skip names the failed op: {}",
        by_id["dependent"].error
    );
    assert_eq!(by_id["always"].output, "broken was failed");
    assert_eq!(by_id["waiter"].output, "go: now");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_batches_store_nothing_and_name_op_and_field() {
    let cluster = common::Cluster::start(1).await;
    let mut a = op("a", "echo", json!({"text": "x"}));
    a.after = vec!["c".into()];
    let mut b = op("b", "echo", json!({"text": "x"}));
    b.after = vec!["a".into()];
    let mut c = op("c", "echo", json!({"text": "x"}));
    c.after = vec!["b".into()];
    let unknown = op("d", "teleport", json!({}));
    let batch = v1::Batch {
        name: "bad".into(),
        ops: vec![a, b, c, unknown],
        ..Default::default()
    };
    let error = cluster.client.submit(batch).await.expect_err("rejected");
    match error {
        volley_client::ClientError::Invalid { problems, .. } => {
            assert!(
                problems
                    .iter()
                    .any(|problem| problem.field == "after" && problem.message.contains("cycle")),
                "{problems:?}"
            );
            assert!(
                problems
                    .iter()
                    .any(|problem| problem.op_id == "d" && problem.field == "kind"),
                "{problems:?}"
            );
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(
        cluster.client.list(10).await.expect("list").is_empty(),
        "nothing stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_pending_ops() {
    let cluster = common::Cluster::start(1).await;
    let mut ops = vec![op("slow", "sleep", json!({"ms": 60_000}))];
    for index in 0..20 {
        ops.push(after(
            op(&format!("later-{index}"), "noop", json!({})),
            &["slow".to_owned()],
        ));
    }
    let batch = v1::Batch {
        name: "cancel".into(),
        ops,
        ..Default::default()
    };
    let submitted = cluster.client.submit(batch).await.expect("submit");
    let response = cluster
        .client
        .cancel(&submitted.batch_id)
        .await
        .expect("cancel");
    assert_eq!(response.state(), BatchState::Cancelled);
    let status = cluster
        .client
        .status(&submitted.batch_id)
        .await
        .expect("status");
    assert_eq!(status.state(), BatchState::Cancelled);
    assert_eq!(status.cancelled, 21);
    let stream = cluster
        .client
        .watch(&submitted.batch_id, 0)
        .await
        .expect("watch");
    let events: Vec<_> = tokio::time::timeout(Duration::from_secs(10), stream.collect::<Vec<_>>())
        .await
        .expect("watch ends");
    assert_eq!(
        events
            .last()
            .and_then(|event| event.as_ref().ok())
            .map(|event| event.kind()),
        Some(EventKind::BatchFinished)
    );
}

async fn run_to_end(cluster: &common::Cluster, batch: v1::Batch) -> v1::BatchStatus {
    let submitted = cluster.client.submit(batch).await.expect("submit");
    run_to_end_of(cluster, &submitted.batch_id).await
}

/// Follows a submitted batch's events to its end; returns its status.
async fn run_to_end_of(cluster: &common::Cluster, batch_id: &str) -> v1::BatchStatus {
    let stream = cluster.client.watch(batch_id, 0).await.expect("watch");
    let _: Vec<_> = tokio::time::timeout(Duration::from_secs(60), stream.collect::<Vec<_>>())
        .await
        .expect("batch finishes");
    cluster.client.status(batch_id).await.expect("status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_parallel_bounds_how_many_ops_run_at_once() {
    let cluster = common::Cluster::start(3).await;
    let ops = (0..12)
        .map(|index| op(&format!("s{index}"), "sleep", json!({"ms": 40})))
        .collect();
    let batch = v1::Batch {
        name: "bounded".into(),
        max_parallel: 2,
        ops,
        ..Default::default()
    };
    let status = run_to_end(&cluster, batch).await;
    assert_eq!(status.state(), BatchState::Succeeded);
    // Each op's recorded interval lies inside the time it held a claim, so
    // overlapping recorded intervals are a lower bound on concurrency.
    let mut edges: Vec<(u64, i32)> = Vec::new();
    for op in &status.ops {
        edges.push((op.started_ms, 1));
        edges.push((op.started_ms + op.duration_ms, -1));
    }
    edges.sort_by_key(|&(at, delta)| (at, delta));
    let (mut running, mut most) = (0, 0);
    for (_, delta) in edges {
        running += delta;
        most = most.max(running);
    }
    assert!(most <= 2, "{most} ops ran at once with max_parallel 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_that_require_labels_go_only_to_workers_that_have_them() {
    let mut cluster = common::Cluster::start(2).await;
    let mut ops: Vec<v1::Op> = Vec::new();
    for index in 0..20 {
        let mut gpu = op(&format!("gpu-{index}"), "echo", json!({"text": "on gpu"}));
        gpu.requires = [("gpu".to_owned(), "yes".to_owned())].into_iter().collect();
        ops.push(gpu);
        ops.push(op(
            &format!("any-{index}"),
            "echo",
            json!({"text": "anywhere"}),
        ));
    }
    let batch = v1::Batch {
        name: "labels".into(),
        ops,
        ..Default::default()
    };
    let submitted = cluster.client.submit(batch).await.expect("submit");
    // No worker has the label yet: the gpu ops wait, the rest run.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = cluster
            .client
            .status(&submitted.batch_id)
            .await
            .expect("status");
        let any_done = status
            .ops
            .iter()
            .filter(|op| op.id.starts_with("any-") && op.state() == OpState::Succeeded)
            .count();
        if any_done == 20 {
            assert!(
                status
                    .ops
                    .iter()
                    .filter(|op| op.id.starts_with("gpu-"))
                    .all(|op| op.state() != OpState::Succeeded)
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "unlabelled ops never ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster
        .add_worker_with("gpu-worker", &["--label", "gpu=yes"])
        .await;
    let stream = cluster
        .client
        .watch(&submitted.batch_id, 0)
        .await
        .expect("watch");
    let _: Vec<_> = tokio::time::timeout(Duration::from_secs(60), stream.collect::<Vec<_>>())
        .await
        .expect("batch finishes");
    let status = cluster
        .client
        .status(&submitted.batch_id)
        .await
        .expect("status");
    assert_eq!(status.state(), BatchState::Succeeded);
    for op in status.ops.iter().filter(|op| op.id.starts_with("gpu-")) {
        assert_eq!(op.worker, "gpu-worker", "op {} ran on {}", op.id, op.worker);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_ops_go_only_to_workers_that_allow_shell() {
    let mut cluster = common::Cluster::start(0).await;
    cluster.add_bare_worker("plain", &[]).await;
    let client = cluster.client.clone();
    client
        .wait_for_workers(1, Duration::from_secs(20))
        .await
        .expect("workers");
    let ops = (0..10)
        .map(|index| op(&format!("sh-{index}"), "shell", json!({"cmd": "echo hi"})))
        .collect();
    let submitted = client
        .submit(v1::Batch {
            name: "shell".into(),
            ops,
            ..Default::default()
        })
        .await
        .expect("submit");
    assert!(
        submitted
            .warnings
            .iter()
            .any(|warning| warning.contains("`shell`") && warning.contains("--allow-shell")),
        "warns that nothing runs shell: {:?}",
        submitted.warnings
    );
    cluster
        .add_bare_worker("shell-ok", &["--allow-shell"])
        .await;
    let status = run_to_end_of(&cluster, &submitted.batch_id).await;
    assert_eq!(status.state(), BatchState::Succeeded);
    assert!(
        status
            .ops
            .iter()
            .all(|op| op.worker == "shell-ok" && op.attempts == 1)
    );
}
