//! The conformance suite against the Redis store, each test on its own
//! `redis-server` (never a shared database), plus Redis-only behaviour:
//! doorbell resync and epoch loss across a restart.

use std::sync::Arc;
use std::time::Duration;

use volley_proto::BatchId;
use volley_store::conformance::SMALL_CHANGE_LOG_CAP;
use volley_store::{
    Completion, Doorbell, FailureKind, MemoryScope, NewBatch, NewOp, OnFailure, PutOptions,
    RedisStore, Store,
};
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
            retain_ms: 0,
            tenant: String::new(),
            submitted_by: String::new(),
            request_digest: String::new(),
            lost_worker_retries: 0,
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

/// A store on its own redis-server (kept alive by the returned guard).
async fn connected_store() -> (RedisStore, RedisServer) {
    let server = RedisServer::start().expect("start redis-server");
    let store = RedisStore::connect(&server.url()).await.expect("connect");
    (store, server)
}

/// A plain connection to `server`, for what the store does not expose.
async fn raw_connection(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

/// A batch of `ops` independent one-attempt ops in its own memory scope.
fn small_batch(id: &str, ops: usize, created_ms: u64, retain_ms: u64) -> NewBatch {
    let batch_id = BatchId::new(id);
    let op = NewOp {
        priority: 2,
        max_attempts: 1,
        ..NewOp::default()
    };
    NewBatch {
        id: batch_id.clone(),
        name: id.to_owned(),
        memory: MemoryScope::Batch(batch_id),
        max_parallel: 0,
        on_failure: OnFailure::Continue,
        created_ms,
        deadline_ms: 0,
        spec: b"spec".to_vec(),
        ops: vec![op; ops],
        retry_failed_sequential: false,
        retain_ms,
        tenant: String::new(),
        submitted_by: String::new(),
        request_digest: String::new(),
        lost_worker_retries: 0,
    }
}

/// Claims every op of `batch_id` (all ready) at `now_ms` and records each a
/// success a ms later; returns how many ran.
async fn run_every_op(store: &RedisStore, batch_id: &BatchId, ops: u32, now_ms: u64) -> usize {
    let claimed = store
        .claim(batch_id, ops, now_ms, 60_000)
        .await
        .expect("claim");
    let completions: Vec<Completion> = claimed
        .iter()
        .map(|claimed| Completion {
            index: claimed.index,
            attempt: claimed.attempt,
            ok: true,
            failure: FailureKind::Error,
            ..Completion::default()
        })
        .collect();
    store
        .complete(batch_id, &completions, now_ms + 1)
        .await
        .expect("complete");
    claimed.len()
}

/// Creating a small batch is one pipeline that runs `create.lua` (loading
/// it first only the first time). When Redis has lost its script cache
/// since, the script fails inside the pipeline and the store loads and runs
/// it after: the batch starts and runs all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_created_after_a_script_flush_runs() {
    let (store, server) = connected_store().await;
    let mut connection = raw_connection(&server).await;
    // The store has created a batch: it counts `create.lua` as loaded.
    store
        .create_batch(small_batch("before-flush", 1, 1_000, 0))
        .await
        .expect("create before the flush");
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut connection)
        .await
        .expect("script flush");
    let mut receiver = store.doorbells();
    let batch_id = BatchId::new("after-flush");
    store
        .create_batch(small_batch("after-flush", 2, 1_000, 0))
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
    assert_eq!(run_every_op(&store, &batch_id, 2, 1_001).await, 2);
    let status = store.meta(&batch_id).await.expect("meta").expect("exists");
    assert_eq!(status.succeeded, 2);
    store.shutdown().await;
}

/// The batch index (`volley:batches`) loses the entries of batches whose
/// records are gone (expired by the safety-net TTL), walked in steps, and
/// keeps the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_drops_expired_batches_from_the_index() {
    let (store, server) = connected_store().await;
    let mut connection = raw_connection(&server).await;
    for (number, retain_ms) in [50, 50, 0, 50].into_iter().enumerate() {
        let batch = small_batch(
            &format!("prune-{number}"),
            1,
            1_000 + number as u64,
            retain_ms,
        );
        let batch_id = batch.id.clone();
        store.create_batch(batch).await.expect("create");
        assert_eq!(run_every_op(&store, &batch_id, 1, 2_000).await, 1);
    }
    // As the safety-net TTL would (a batch no coordinator deleted): the
    // records of three of them are gone.
    for number in [0, 1, 3] {
        let _: i64 = redis::cmd("DEL")
            .arg(format!("volley:{{b:prune-{number}}}:meta"))
            .query_async(&mut connection)
            .await
            .expect("del");
    }
    // Two entries per step: the walk takes three steps and drops three.
    let (first, next) = store.prune_batch_index(0, 2).await.expect("prune");
    assert_eq!((first, next), (2, 1_001));
    let (second, next) = store.prune_batch_index(next, 2).await.expect("prune");
    assert_eq!(second, 1);
    let (third, next) = store.prune_batch_index(next, 2).await.expect("prune");
    assert_eq!((third, next), (0, 0));
    let left: Vec<String> = redis::cmd("ZRANGE")
        .arg("volley:batches")
        .arg(0)
        .arg(-1)
        .query_async(&mut connection)
        .await
        .expect("zrange");
    assert_eq!(left, vec!["prune-2".to_owned()]);
    store.shutdown().await;
}

/// `drop_expired` leaves no key of the batch behind: not its records, not
/// its memory (a chunked value's chunks included), not its expiry entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_expired_leaves_no_key_of_the_batch() {
    let (store, server) = connected_store().await;
    let mut connection = raw_connection(&server).await;
    let batch = small_batch("dropped", 2, 1_000, 5_000);
    let batch_id = batch.id.clone();
    let scope = batch.memory.clone();
    store.create_batch(batch).await.expect("create");
    store
        .memory_put(
            &scope,
            "big",
            &vec![1_u8; 700 * 1024],
            &PutOptions::default(),
            1_000,
        )
        .await
        .expect("put");
    assert_eq!(run_every_op(&store, &batch_id, 2, 1_001).await, 2);
    let count_keys = |mut connection: redis::aio::MultiplexedConnection| async move {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("volley:{b:dropped}:*")
            .query_async(&mut connection)
            .await
            .expect("keys");
        keys
    };
    assert!(!count_keys(connection.clone()).await.is_empty());
    assert_eq!(store.drop_expired(6_001, 10).await.expect("drop"), 0);
    assert_eq!(store.drop_expired(6_002, 10).await.expect("drop"), 1);
    assert_eq!(count_keys(connection.clone()).await, Vec::<String>::new());
    let expiring: i64 = redis::cmd("ZCARD")
        .arg("volley:expiring")
        .query_async(&mut connection)
        .await
        .expect("zcard");
    assert_eq!(expiring, 0);
    store.shutdown().await;
}

/// The ready gauge is a real list that KEDA's `redis` scaler can `LLEN`,
/// of 1-byte items, gone when the gauge is 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ready_gauge_is_a_list_of_that_length() {
    let (store, server) = connected_store().await;
    let mut connection = raw_connection(&server).await;
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

/// The crash window of a shared `store_as`: the completion script recorded
/// the op (and the batch finished) but the coordinator died before the
/// namespace write. The outbox keeps the write; the worker's resent result
/// repairs it, and a second drain of the same entry adds no revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_store_as_lost_in_a_crash_is_repaired_once() {
    let (clean, server) = connected_store().await;
    let faulty = RedisStore::connect(&server.url())
        .await
        .expect("connect")
        .with_test_fault_after_complete(|| panic!("the coordinator dies here"));
    let scope = MemoryScope::Shared("pipe".to_owned());
    let producer = BatchId::new("producer");
    let consumer = BatchId::new("consumer");
    let shared_batch = |id: &BatchId, op: NewOp| NewBatch {
        memory: scope.clone(),
        ops: vec![op],
        ..small_batch(id.as_str(), 0, 1, 0)
    };
    let plain = NewOp {
        priority: 2,
        max_attempts: 1,
        ..NewOp::default()
    };
    clean
        .create_batch(shared_batch(&producer, plain.clone()))
        .await
        .expect("create");
    clean
        .create_batch(shared_batch(
            &consumer,
            NewOp {
                wait_for: vec!["result".to_owned()],
                ..plain
            },
        ))
        .await
        .expect("create");
    let claimed = faulty.claim(&producer, 1, 2, 60_000).await.expect("claim");
    let completion = Completion {
        index: claimed[0].index,
        attempt: claimed[0].attempt,
        ok: true,
        output: "42".to_owned(),
        store_as: Some("result".to_owned()),
        ..Completion::default()
    };
    let dying = {
        let faulty = faulty.clone();
        let completion = completion.clone();
        let producer = producer.clone();
        tokio::spawn(async move { faulty.complete(&producer, &[completion], 3).await })
    };
    assert!(dying.await.expect_err("the fault fires").is_panic());
    // Recorded and finished, but nothing written: the consumer would hang.
    let meta = clean.meta(&producer).await.expect("meta").expect("exists");
    assert_eq!(meta.state, volley_store::BatchState::Succeeded);
    assert_eq!(clean.memory_get(&scope, "result").await.expect("get"), None);
    let both = [producer.clone(), consumer.clone()];
    assert_eq!(
        clean.outboxes_pending(&both).await.expect("pending"),
        vec![producer.clone()]
    );
    // Its finish was never announced: still in the active set, where
    // coordinators' housekeeping finds its outbox.
    assert!(
        clean
            .active_batches()
            .await
            .expect("active")
            .contains(&producer)
    );
    // The worker sends its result again: stale, and it drains the outbox.
    let resent = clean
        .complete(&producer, std::slice::from_ref(&completion), 4)
        .await
        .expect("complete");
    assert_eq!(resent.stale, vec![0]);
    let value = clean
        .memory_get(&scope, "result")
        .await
        .expect("get")
        .expect("written");
    assert_eq!(
        (value.value.as_slice(), value.version),
        (b"42".as_slice(), 1)
    );
    assert_eq!(
        clean.outboxes_pending(&both).await.expect("pending"),
        Vec::<BatchId>::new()
    );
    // The drain announced the finish the dead coordinator did not.
    assert_eq!(
        clean.active_batches().await.expect("active"),
        vec![consumer.clone()]
    );
    let consumer_ops = clean.op_records(&consumer).await.expect("records");
    assert_eq!(consumer_ops[0].state, volley_store::OpState::Ready);
    // A coordinator that died after the write but before clearing the entry:
    // the next drain finds the write's guard and writes nothing again.
    let mut connection = raw_connection(&server).await;
    let _: () = redis::cmd("HSET")
        .arg(volley_store::keys::outbox(&producer))
        .arg(0)
        .arg(r#"{"k":"result","a":1,"q":1}"#)
        .query_async(&mut connection)
        .await
        .expect("hset");
    assert_eq!(clean.drain_outbox(&producer, 5).await.expect("drain"), 1);
    assert_eq!(clean.drain_outbox(&producer, 6).await.expect("drain"), 0);
    let changes = clean
        .memory_changes(&scope, "", 0, 10)
        .await
        .expect("changes");
    assert_eq!(changes.len(), 1);
    let value = clean
        .memory_get(&scope, "result")
        .await
        .expect("get")
        .expect("written");
    assert_eq!(value.version, 1);
    clean.shutdown().await;
    faulty.shutdown().await;
}

/// An idempotent submission whose coordinator died half way leaves its
/// batch `creating`: a retry within [`volley_store::CREATING_STALE_MS`] is
/// told to come back (retryable); a retry after it clears the half-written
/// records and creates the batch whole, which then runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_created_idempotent_batch_is_taken_over_once_stale() {
    let (store, server) = connected_store().await;
    let mut connection = raw_connection(&server).await;
    let batch_id = BatchId::new("half");
    let claimed_ms = 1_000_u64;
    // What the dead call left: its claim and a stray ready entry.
    let _: () = redis::pipe()
        .hset_multiple(
            volley_store::keys::meta(&batch_id),
            &[
                ("state", "creating".to_owned()),
                ("digest", "d1".to_owned()),
                ("tenant", "acme".to_owned()),
                ("claimed_ms", claimed_ms.to_string()),
            ],
        )
        .rpush(volley_store::keys::ready(&batch_id, 2), 0)
        .query_async(&mut connection)
        .await
        .expect("half-written batch");
    let submission = |created_ms: u64, digest: &str| NewBatch {
        tenant: "acme".to_owned(),
        request_digest: digest.to_owned(),
        ..small_batch("half", 1, created_ms, 0)
    };
    let soon = store
        .create_batch(submission(claimed_ms + 10, "d1"))
        .await
        .expect_err("still creating");
    assert!(
        matches!(soon, volley_store::StoreError::StillCreating(_)) && soon.is_retryable(),
        "{soon}"
    );
    let other = store
        .create_batch(submission(claimed_ms + 10, "d2"))
        .await
        .expect_err("another digest");
    assert!(
        matches!(other, volley_store::StoreError::IdempotencyConflict(_)),
        "{other}"
    );
    let later = claimed_ms + volley_store::CREATING_STALE_MS;
    assert_eq!(
        store
            .create_batch(submission(later, "d1"))
            .await
            .expect("taken over"),
        volley_store::Created::New
    );
    // The stray entry went with the rest: the one op is claimed once.
    let claimed = store
        .claim(&batch_id, 10, later + 1, later + 60_000)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    assert!(
        store
            .claim(&batch_id, 10, later + 2, later + 60_000)
            .await
            .expect("claim")
            .is_empty()
    );
    assert_eq!(
        store
            .create_batch(submission(later + 5, "d1"))
            .await
            .expect("a retry now"),
        volley_store::Created::Existing
    );
}
