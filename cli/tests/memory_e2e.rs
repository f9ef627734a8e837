//! Shared memory and agents, with real parts: redis-server, a coordinator
//! and workers as separate `volley` processes, driven through the Rust SDK
//! and the `volley` CLI.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use volley_client::v1::{self, BatchState, OpState};
use volley_client::{PutOptions, Scope};
use volley_testkit::op;

fn waiting(id: &str, key: &str) -> v1::Op {
    let mut waiter = op(
        id,
        "echo",
        json!({"text": format!("got ${{memory.{key}}}")}),
    );
    waiter.wait_for = vec![key.to_owned()];
    waiter
}

async fn finish(cluster: &common::Cluster, batch_id: &str) -> v1::BatchStatus {
    let stream = cluster.client.watch(batch_id, 0).await.expect("watch");
    let _: Vec<_> = tokio::time::timeout(Duration::from_secs(120), stream.collect::<Vec<_>>())
        .await
        .expect("batch finishes");
    cluster.client.status(batch_id).await.expect("status")
}

fn by_id(status: &v1::BatchStatus) -> HashMap<&str, &v1::OpStatus> {
    status.ops.iter().map(|op| (op.id.as_str(), op)).collect()
}

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_namespace_write_unblocks_ops_in_two_batches() {
    let cluster = common::Cluster::start(2).await;
    let mut ids = Vec::new();
    for name in ["first", "second"] {
        let batch = v1::Batch {
            name: name.into(),
            namespace: "team-e2e".into(),
            ops: vec![
                waiting("waiter", "go/signal"),
                op("free", "echo", json!({"text": "independent"})),
            ],
            ..Default::default()
        };
        let submitted = cluster.client.submit(batch).await.expect("submit");
        assert!(
            submitted.warnings.is_empty(),
            "no warning in a shared namespace: {:?}",
            submitted.warnings
        );
        ids.push(submitted.batch_id);
    }
    let team = cluster.client.memory(Scope::Namespace("team-e2e".into()));
    let written = team.put("go/signal", b"now".to_vec()).await.expect("put");
    assert_eq!(written.version, 1);
    assert_eq!(written.unblocked, 2, "one waiter in each batch");
    for id in &ids {
        let status = finish(&cluster, id).await;
        assert_eq!(status.state(), BatchState::Succeeded);
        assert_eq!(by_id(&status)["waiter"].output, "got now");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_as_in_a_shared_namespace_unblocks_another_batch() {
    let cluster = common::Cluster::start(2).await;
    let consumer = v1::Batch {
        name: "consumer".into(),
        namespace: "relay".into(),
        ops: vec![waiting("use", "relay/result")],
        ..Default::default()
    };
    let consumer = cluster.client.submit(consumer).await.expect("submit");
    let mut produce = op("produce", "echo", json!({"text": "42"}));
    produce.store_as = "relay/result".into();
    let producer = v1::Batch {
        name: "producer".into(),
        namespace: "relay".into(),
        ops: vec![produce],
        ..Default::default()
    };
    let producer = cluster.client.submit(producer).await.expect("submit");
    assert_eq!(
        finish(&cluster, &producer.batch_id).await.state(),
        BatchState::Succeeded
    );
    let status = finish(&cluster, &consumer.batch_id).await;
    assert_eq!(by_id(&status)["use"].output, "got 42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_compare_and_set_increments_from_four_workers_lose_none() {
    let cluster = common::Cluster::start(4).await;
    // Each op reads the counter and its version, and writes +1 only if the
    // version did not move; on a conflict it reads again.
    let script = r#"
tries=0
while [ $tries -lt 1000 ]; do
  tries=$((tries + 1))
  doc=$(volley memory get counter --output json 2>/dev/null || echo '{"value":"0","version":0}')
  version=$(echo "$doc" | sed 's/.*"version":\([0-9]*\).*/\1/')
  value=$(echo "$doc" | sed 's/.*"value":"\([0-9]*\)".*/\1/')
  if volley memory put counter $((value + 1)) --if-version "$version" 2>/dev/null; then
    echo "from $value"
    exit 0
  fi
done
echo "gave up after $tries conflicts" >&2
exit 1
"#;
    let ops = (0..200)
        .map(|index| op(&format!("inc-{index}"), "agent", json!({"cmd": script})))
        .collect();
    let batch = v1::Batch {
        name: "cas".into(),
        namespace: "cas-e2e".into(),
        ops,
        ..Default::default()
    };
    let submitted = cluster.client.submit(batch).await.expect("submit");
    let status = finish(&cluster, &submitted.batch_id).await;
    let failures: Vec<_> = status
        .ops
        .iter()
        .filter(|op| op.state() != OpState::Succeeded)
        .map(|op| (&op.id, &op.error))
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
    let workers: BTreeSet<_> = status.ops.iter().map(|op| op.worker.as_str()).collect();
    assert_eq!(
        workers.len(),
        4,
        "all four workers incremented: {workers:?}"
    );
    // Every op saw a different starting value: no increment was lost.
    let starts: BTreeSet<String> = status
        .ops
        .iter()
        .map(|op| op.output.trim().to_owned())
        .collect();
    assert_eq!(starts.len(), 200);
    let counter = cluster
        .client
        .memory(Scope::Namespace("cas-e2e".into()))
        .get("counter")
        .await
        .expect("get")
        .expect("counter");
    assert_eq!(String::from_utf8_lossy(&counter.value), "200");
    assert_eq!(counter.version, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_expiry_and_compare_and_set_over_grpc() {
    let cluster = common::Cluster::start(1).await;
    let memory = cluster.client.memory(Scope::Namespace("ttl-e2e".into()));
    let short = PutOptions {
        ttl: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    memory
        .put_with("brief", b"soon gone".to_vec(), &short)
        .await
        .expect("put");
    memory.put("lasting", b"stays".to_vec()).await.expect("put");
    assert!(memory.get("brief").await.expect("get").is_some());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while memory.get("brief").await.expect("get").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the key never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed = memory.list("", "", 100).await.expect("list");
    let keys: Vec<_> = listed.keys.iter().map(|info| info.key.as_str()).collect();
    assert_eq!(keys, vec!["lasting"]);
    // Compare-and-set: a stale version is refused.
    let create_only = PutOptions {
        if_version: Some(0),
        ..Default::default()
    };
    let error = memory
        .put_with("lasting", b"x".to_vec(), &create_only)
        .await
        .expect_err("exists");
    assert!(
        matches!(error, volley_client::ClientError::Conflict(_)),
        "{error:?}"
    );
    let at_one = PutOptions {
        if_version: Some(1),
        ..Default::default()
    };
    assert_eq!(
        memory
            .put_with("lasting", b"y".to_vec(), &at_one)
            .await
            .expect("cas")
            .version,
        2
    );
    assert_eq!(memory.incr("count", 5).await.expect("incr"), 5);
    assert_eq!(memory.incr("count", -2).await.expect("incr"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_disconnects_and_resumes_misses_no_write() {
    let cluster = common::Cluster::start(1).await;
    let memory = cluster.client.memory(Scope::Namespace("watch-e2e".into()));
    let writer = memory.clone();
    let writes = tokio::spawn(async move {
        for index in 0..60 {
            writer
                .put(
                    &format!("feed/{index:02}"),
                    format!("v{index}").into_bytes(),
                )
                .await
                .expect("put");
            // A write to another prefix is not part of the watch.
            writer
                .put(&format!("other/{index:02}"), b"x".to_vec())
                .await
                .expect("put");
        }
    });
    // The first connection reads 20 changes and goes away.
    let mut seen: Vec<v1::MemoryChange> = Vec::new();
    {
        let stream = memory.watch("feed/", 0, true).await.expect("watch");
        futures::pin_mut!(stream);
        while seen.len() < 20 {
            let change = tokio::time::timeout(Duration::from_secs(20), stream.next())
                .await
                .expect("a change in time")
                .expect("stream open")
                .expect("change");
            seen.push(change);
        }
    }
    // Resume after the last revision seen.
    let resume_from = seen.last().expect("changes").revision;
    let stream = memory
        .watch("feed/", resume_from, false)
        .await
        .expect("watch");
    futures::pin_mut!(stream);
    let keys = |changes: &[v1::MemoryChange]| -> BTreeSet<String> {
        changes.iter().map(|change| change.key.clone()).collect()
    };
    while keys(&seen).len() < 60 {
        let change = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("a change in time")
            .expect("stream open")
            .expect("change");
        assert!(change.revision > resume_from);
        seen.push(change);
    }
    writes.await.expect("writer");
    let all = keys(&seen);
    assert_eq!(all.len(), 60);
    assert!(all.iter().all(|key| key.starts_with("feed/")));
    for change in &seen {
        let index: usize = change.key["feed/".len()..].parse().expect("index");
        assert_eq!(change.value, format!("v{index}").into_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_spawns_a_hundred_ops_and_a_spawned_cycle_is_rejected() {
    let cluster = common::Cluster::start(2).await;
    let script = r#"
set -eu
dir=$(mktemp -d)
{
  echo "ops:"
  i=0
  while [ $i -lt 100 ]; do
    echo "  - {id: child-$i, kind: echo, args: {text: 'child $i of $VOLLEY_OP'}}"
    i=$((i + 1))
  done
} > "$dir/children.yaml"
volley spawn "$dir/children.yaml"
printf 'ops:\n  - {id: loop-a, kind: noop, after: [loop-b]}\n  - {id: loop-b, kind: noop, after: [loop-a]}\n' > "$dir/cycle.yaml"
if volley spawn "$dir/cycle.yaml" 2> "$dir/err"; then echo "cycle accepted"; exit 1; fi
grep -q "cycle" "$dir/err"
echo "spawned 100, cycle rejected"
"#;
    let mut after = op(
        "after-parent",
        "echo",
        json!({"text": "parent said: ${ops.parent.output}"}),
    );
    after.after = vec!["parent".into()];
    let batch = v1::Batch {
        name: "spawn".into(),
        ops: vec![op("parent", "agent", json!({"cmd": script})), after],
        ..Default::default()
    };
    let submitted = cluster.client.submit(batch).await.expect("submit");
    let status = finish(&cluster, &submitted.batch_id).await;
    let ops = by_id(&status);
    assert_eq!(
        ops["parent"].state(),
        OpState::Succeeded,
        "{}",
        ops["parent"].error
    );
    assert_eq!(ops["parent"].output.trim(), "spawned 100, cycle rejected");
    assert_eq!(
        status.total, 102,
        "the 100 children joined the batch, the cycle did not"
    );
    for index in 0..100 {
        let child = ops[format!("child-{index}").as_str()];
        assert_eq!(child.state(), OpState::Succeeded);
        assert_eq!(child.output, format!("child {index} of parent"));
    }
    assert!(!ops.contains_key("loop-a"));
    assert_eq!(status.state(), BatchState::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_never_appears_fails_the_wait_with_its_name() {
    let cluster = common::Cluster::start(1).await;
    let mut waiter = waiting("waiter", "never/written");
    waiter.wait_timeout_ms = 500;
    let mut dependent = op("dependent", "noop", json!({}));
    dependent.after = vec!["waiter".into()];
    let batch = v1::Batch {
        name: "timeout".into(),
        // Nothing writes the key: the wait times out.
        allow_unwritten: true,
        ops: vec![waiter, dependent],
        ..Default::default()
    };
    let submitted = cluster.client.submit(batch).await.expect("submit");
    let status = finish(&cluster, &submitted.batch_id).await;
    let ops = by_id(&status);
    assert_eq!(ops["waiter"].state(), OpState::Failed);
    assert!(
        ops["waiter"].error.contains("never/written")
            && ops["waiter"].error.contains("never appeared"),
        "{}",
        ops["waiter"].error
    );
    assert_eq!(ops["dependent"].state(), OpState::Skipped);
    // wait_for_any: the first key to appear is enough.
    let mut any = op("any", "echo", json!({"text": "one arrived"}));
    any.wait_for_any = vec!["a/one".into(), "a/two".into()];
    let batch = v1::Batch {
        name: "any".into(),
        // The test writes a key as a client.
        allow_unwritten: true,
        ops: vec![any],
        ..Default::default()
    };
    let submitted = cluster.client.submit(batch).await.expect("submit");
    cluster
        .client
        .memory(Scope::Batch(submitted.batch_id.clone()))
        .put("a/two", b"!".to_vec())
        .await
        .expect("put");
    assert_eq!(
        finish(&cluster, &submitted.batch_id).await.state(),
        BatchState::Succeeded
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_swarm_example_runs_embedded_and_on_a_cluster() {
    // Embedded, from the repository root as the README says.
    let output = common::volley()
        .args(["run", "examples/swarm/swarm.yaml", "--output", "json"])
        .current_dir(repo_root())
        .env("VOLLEY_LOG", "error")
        .output()
        .await
        .expect("volley run");
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json report");
    check_swarm(report["ops"].as_array().expect("ops").iter().map(|op| {
        (
            op["id"].as_str().unwrap_or(""),
            op["output"].as_str().unwrap_or(""),
        )
    }));

    // On a cluster: workers rooted at the repository run the same file.
    let mut cluster = common::Cluster::start(0).await;
    let root = repo_root().to_string_lossy().into_owned();
    for id in ["s1", "s2", "s3"] {
        cluster
            .add_bare_worker(id, &["--allow-shell", "--slots", "4", "--root", &root])
            .await;
    }
    cluster
        .client
        .wait_for_workers(3, Duration::from_secs(20))
        .await
        .expect("workers");
    let batch = volley_client::read_batch_file(&repo_root().join("examples/swarm/swarm.yaml"))
        .expect("swarm file");
    let submitted = cluster.client.submit(batch).await.expect("submit");
    assert!(
        submitted.warnings.is_empty(),
        "every awaited key is written: {:?}",
        submitted.warnings
    );
    let status = finish(&cluster, &submitted.batch_id).await;
    assert_eq!(
        status.state(),
        BatchState::Succeeded,
        "{:?}",
        status
            .ops
            .iter()
            .map(|op| (&op.id, &op.error))
            .collect::<Vec<_>>()
    );
    check_swarm(
        status
            .ops
            .iter()
            .map(|op| (op.id.as_str(), op.output.as_str())),
    );
    let note = cluster
        .client
        .memory(Scope::Batch(submitted.batch_id.clone()))
        .get("swarm/docs/release-note")
        .await
        .expect("get")
        .expect("release note");
    assert!(String::from_utf8_lossy(&note.value).starts_with("Saved searches:"));
}

fn check_swarm<'a>(outputs: impl Iterator<Item = (&'a str, &'a str)>) {
    let outputs: HashMap<&str, &str> = outputs.collect();
    let expect = [
        (
            "researcher",
            "researcher: users re-run the same searches daily",
        ),
        ("database", "database: table saved_search("),
        ("backend", "backend: implemented GET /v1/saved-searches"),
        (
            "frontend",
            "frontend: saved-searches sidebar using 3 endpoints",
        ),
        (
            "tester",
            "tester: 3 passed: test GET /v1/saved-searches,test POST /v1/saved-searches,test DELETE /v1/saved-searches/{id}",
        ),
        (
            "security",
            "security: approved: rows scoped by user_id, limit enforced (409)",
        ),
        (
            "docs",
            "docs: Saved searches: saved-searches sidebar using 3 endpoints.",
        ),
    ];
    assert_eq!(outputs.len(), expect.len(), "{outputs:#?}");
    for (agent, start) in expect {
        let output = outputs.get(agent).copied().unwrap_or_default();
        assert!(
            output.starts_with(start),
            "{agent}: {output:?} does not start with {start:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_round_trip_in_chunks_and_oversized_ones_are_refused() {
    let cluster = common::Cluster::start_with(0, &["--max-value-bytes", "3000000"]).await;
    let memory = cluster.client.memory(Scope::Namespace("big-e2e".into()));
    // 2.5 MB: stored in chunks, read back whole.
    let big: Vec<u8> = (0..2_500_000u32).map(|index| (index % 251) as u8).collect();
    memory
        .put("blob", big.clone())
        .await
        .expect("put a large value");
    let read = memory.get("blob").await.expect("get").expect("present");
    assert_eq!(read.value.len(), big.len());
    assert!(read.value == big, "the value came back intact");
    // Over the configured maximum: refused with the key and the sizes.
    let error = memory
        .put("huge", vec![0u8; 3_000_001])
        .await
        .expect_err("too large");
    let message = error.to_string();
    assert!(
        matches!(error, volley_client::ClientError::Invalid { .. }),
        "{error:?}"
    );
    assert!(
        message.contains("huge") && message.contains("3000001") && message.contains("3000000"),
        "{message}"
    );
    assert!(
        memory.get("huge").await.expect("get").is_none(),
        "nothing stored"
    );
}
