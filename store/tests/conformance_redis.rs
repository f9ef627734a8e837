//! The conformance suite against the Redis store, each test on its own
//! `redis-server` (never a shared database), plus Redis-only behaviour:
//! doorbell resync and epoch loss across a restart.

use std::sync::Arc;
use std::time::Duration;

use volley_proto::BatchId;
use volley_store::conformance::SMALL_CHANGE_LOG_CAP;
use volley_store::{Doorbell, MemoryScope, PutOptions, RedisStore, Store};
use volley_testkit::RedisServer;

async fn make_store() -> (Arc<dyn Store>, RedisServer) {
    let server = RedisServer::start().expect("start redis-server");
    let store = RedisStore::connect(&server.url()).await.expect("connect");
    (Arc::new(store), server)
}

async fn make_small_change_log_store() -> (Arc<dyn Store>, RedisServer) {
    let server = RedisServer::start().expect("start redis-server");
    let store = RedisStore::connect(&server.url())
        .await
        .expect("connect")
        .with_change_log_cap(SMALL_CHANGE_LOG_CAP);
    (Arc::new(store), server)
}

volley_store::conformance_tests!(make_store(), make_small_change_log_store());

/// Only a guard against hanging; never asserted on.
const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_sends_resync_and_changes_the_epoch() {
    let mut server = RedisServer::start().expect("start redis-server");
    let store = RedisStore::connect(&server.url()).await.expect("connect");
    let epoch = store.epoch().await.expect("epoch");
    let mut receiver = store.doorbells();
    server.restart().expect("restart");
    let bell = tokio::time::timeout(DEADLINE, receiver.recv())
        .await
        .expect("a bell before the deadline")
        .expect("channel open");
    assert_eq!(bell, Doorbell::Resync);
    // The store reconnects by itself; the restarted Redis is empty.
    let new_epoch = tokio::time::timeout(DEADLINE, async {
        loop {
            match store.epoch().await {
                Ok(epoch) => return epoch,
                Err(error) => {
                    assert!(error.is_retryable(), "{error}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    })
    .await
    .expect("reconnected before the deadline");
    assert_ne!(new_epoch, epoch);
    // And bells flow again after the resubscription.
    let batch_id = BatchId::new("after-restart");
    let scope = MemoryScope::Batch(batch_id.clone());
    store
        .memory_put(&scope, "k", b"v", &PutOptions::default(), 1)
        .await
        .expect("put");
    let bell = tokio::time::timeout(DEADLINE, receiver.recv())
        .await
        .expect("a bell before the deadline")
        .expect("channel open");
    assert_eq!(bell, Doorbell::Memory(scope));
    store.shutdown().await;
}

/// A million-op batch is written in bounded pipelined steps (no giant
/// command). Slow in debug builds, so opt-in:
/// `cargo test -p volley-store --test conformance_redis -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn million_op_batch_is_writable() {
    use volley_store::{NewBatch, NewOp, OnFailure};
    let server = RedisServer::start().expect("start redis-server");
    let store = RedisStore::connect(&server.url()).await.expect("connect");
    let batch_id = BatchId::new("million");
    let ops = (0..1_000_000u32)
        .map(|index| NewOp {
            priority: 2,
            max_attempts: 1,
            deps: u32::from(index % 2 == 1),
            dependents: if index % 2 == 0 {
                vec![index + 1]
            } else {
                vec![]
            },
            wait_for: if index % 10 == 0 {
                vec![format!("k{}", index % 100)]
            } else {
                vec![]
            },
            ..NewOp::default()
        })
        .collect();
    store
        .create_batch(NewBatch {
            id: batch_id.clone(),
            name: "million".to_owned(),
            memory: MemoryScope::Batch(batch_id.clone()),
            max_parallel: 0,
            on_failure: OnFailure::Continue,
            created_ms: 1,
            deadline_ms: 0,
            spec: vec![0; 1024],
            ops,
            retry_failed_sequential: false,
        })
        .await
        .expect("create");
    let meta = store.meta(&batch_id).await.expect("meta").expect("exists");
    assert_eq!(meta.total, 1_000_000);
    let claimed = store
        .claim(&batch_id, 1_000, 2, 60_000)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1_000);
    assert_eq!(claimed[0].index, 2);
    store.shutdown().await;
}

/// Creating a small batch is one pipeline ending in `create.lua`; when
/// Redis has lost its script cache that script fails inside the pipeline,
/// and the store loads it and finishes the creation: the batch runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_created_after_a_script_flush_runs() {
    use volley_store::{Completion, FailureKind, NewBatch, NewOp, OnFailure};
    let server = RedisServer::start().expect("start redis-server");
    let store = RedisStore::connect(&server.url()).await.expect("connect");
    let client = redis::Client::open(server.url()).expect("client");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut connection)
        .await
        .expect("script flush");
    let mut receiver = store.doorbells();
    let batch_id = BatchId::new("after-flush");
    let op = NewOp {
        priority: 2,
        max_attempts: 1,
        ..NewOp::default()
    };
    store
        .create_batch(NewBatch {
            id: batch_id.clone(),
            name: "after-flush".to_owned(),
            memory: MemoryScope::Batch(batch_id.clone()),
            max_parallel: 0,
            on_failure: OnFailure::Continue,
            created_ms: 1_000,
            deadline_ms: 0,
            spec: b"spec".to_vec(),
            ops: vec![op.clone(), op],
            retry_failed_sequential: false,
        })
        .await
        .expect("create after a script flush");
    assert!(
        store
            .active_batches()
            .await
            .expect("active")
            .contains(&batch_id)
    );
    let started = tokio::time::timeout(DEADLINE, async {
        loop {
            if receiver.recv().await.expect("channel open") == Doorbell::Started(batch_id.clone()) {
                return;
            }
        }
    })
    .await;
    assert!(started.is_ok(), "no Started bell");
    let claimed = store
        .claim(&batch_id, 2, 1_001, 60_000)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 2);
    let completions: Vec<Completion> = claimed
        .iter()
        .map(|claimed| Completion {
            index: claimed.index,
            attempt: claimed.attempt,
            ok: true,
            failure: FailureKind::Error,
            retry_after_ms: 0,
            output: String::new(),
            error: String::new(),
            details_json: String::new(),
            ..Completion::default()
        })
        .collect();
    store
        .complete(&batch_id, &completions, 1_002)
        .await
        .expect("complete");
    let status = store.meta(&batch_id).await.expect("meta").expect("exists");
    assert_eq!(status.succeeded, 2);
    store.shutdown().await;
}

/// The ready gauge is a real list that KEDA's `redis` scaler can `LLEN`,
/// of 1-byte items, gone when the gauge is 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ready_gauge_is_a_list_of_that_length() {
    let server = RedisServer::start().expect("start redis-server");
    let store = RedisStore::connect(&server.url()).await.expect("connect");
    let client = redis::Client::open(server.url()).expect("client");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let key = volley_store::keys::QUEUE_READY;
    assert_eq!(key, "volley:queue:ready");
    for total in [2_500u64, 40, 0, 1] {
        store.publish_ready_gauge(total).await.expect("publish");
        let length: u64 = redis::cmd("LLEN")
            .arg(key)
            .query_async(&mut connection)
            .await
            .expect("llen");
        assert_eq!(length, total);
    }
    let item: Vec<u8> = redis::cmd("LINDEX")
        .arg(key)
        .arg(0)
        .query_async(&mut connection)
        .await
        .expect("lindex");
    assert_eq!(item.len(), 1);
    store.publish_ready_gauge(0).await.expect("publish");
    let exists: u64 = redis::cmd("EXISTS")
        .arg(key)
        .query_async(&mut connection)
        .await
        .expect("exists");
    assert_eq!(exists, 0);
    store.shutdown().await;
}
