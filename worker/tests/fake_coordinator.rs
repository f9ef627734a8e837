//! The worker runtime against a fake coordinator: a tonic `WorkerService` on
//! 127.0.0.1:0 that the test drives message by message, a `MemoryService`
//! (Put/Get/Wait over a map) and a `BatchService` that only spawns ops.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use tokio::sync::{Notify, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use volley_builtins::{BuiltinConfig, BuiltinRegistry};
use volley_proto::v1::batch_service_server::{BatchService, BatchServiceServer};
use volley_proto::v1::memory_service_server::{MemoryService, MemoryServiceServer};
use volley_proto::v1::worker_service_server::WorkerServiceServer;
use volley_proto::v1::{
    Assignment, Assignments, BatchEvent, BatchStatus, CancelBatchRequest, CancelBatchResponse,
    CancelOps, DeleteMemoryRequest, DeleteMemoryResponse, FailureKind, GetBatchRequest,
    GetMemoryRequest, GetMemoryResponse, IncrMemoryRequest, IncrMemoryResponse, ListBatchesRequest,
    ListBatchesResponse, ListMemoryRequest, ListMemoryResponse, MemoryChange, Op, OpRef, OpResult,
    Problem, PutMemoryRequest, PutMemoryResponse, ReturnOps, SpawnOpsRequest, SpawnOpsResponse,
    SubmitBatchChunk, SubmitBatchResponse, ValidationFailure, WaitMemoryRequest, WatchBatchRequest,
    WatchMemoryRequest, WhyRequest, WhyResponse, WorkerMessage, coordinator_message,
    worker_message,
};
use volley_testkit::fake_coordinator::{
    FakeSession, FakeSessions, FakeWorkerService, collect_results,
};
use volley_worker::{
    HandlerError, MemoryError, OpOutput, PutOptions, Registry, WorkerConfig, handler_fn, run_worker,
};

const DEADLINE: Duration = Duration::from_secs(20);

/// (batch_id, namespace, key): the scope as the request names it, and the key.
type MemoryKey = (String, String, String);
/// A stored value and its version.
type Versioned = (Vec<u8>, u64);

/// A `MemoryService` over a map: Put, Get and Wait; the rest is unimplemented.
#[derive(Clone, Default)]
struct FakeMemory {
    entries: Arc<Mutex<HashMap<MemoryKey, Versioned>>>,
    /// Every put, as received, so tests can check scope and writer fields.
    puts: Arc<Mutex<Vec<PutMemoryRequest>>>,
    /// Rung on every put: wakes waiters and tests waiting for a put.
    written: Arc<Notify>,
}

impl FakeMemory {
    fn scope_key(batch_id: &str, namespace: &str, key: &str) -> Result<MemoryKey, Status> {
        if batch_id.is_empty() == namespace.is_empty() {
            return Err(Status::invalid_argument(
                "exactly one of batch_id and namespace must be set",
            ));
        }
        Ok((batch_id.to_owned(), namespace.to_owned(), key.to_owned()))
    }

    fn lookup(&self, key: &MemoryKey) -> Option<Versioned> {
        self.entries.lock().unwrap().get(key).cloned()
    }

    /// Writes as a client would (the test playing another agent).
    fn write(&self, key: MemoryKey, value: &[u8]) -> u64 {
        let version = {
            let mut entries = self.entries.lock().unwrap();
            let version = entries.get(&key).map_or(0, |(_, version)| *version) + 1;
            entries.insert(key, (value.to_vec(), version));
            version
        };
        self.written.notify_waiters();
        version
    }

    /// The first put that `matches`, once it has arrived; fails at the deadline.
    async fn wait_for_put(&self, matches: impl Fn(&PutMemoryRequest) -> bool) -> PutMemoryRequest {
        tokio::time::timeout(DEADLINE, async {
            loop {
                let written = self.written.notified();
                tokio::pin!(written);
                written.as_mut().enable();
                if let Some(put) = self.puts.lock().unwrap().iter().find(|put| matches(put)) {
                    return put.clone();
                }
                written.await;
            }
        })
        .await
        .expect("the put did not arrive before the deadline")
    }
}

type ChangeStream = Pin<Box<dyn Stream<Item = Result<MemoryChange, Status>> + Send>>;
type EventStream = Pin<Box<dyn Stream<Item = Result<BatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl MemoryService for FakeMemory {
    type WatchMemoryStream = ChangeStream;

    async fn get_memory(
        &self,
        request: Request<GetMemoryRequest>,
    ) -> Result<Response<GetMemoryResponse>, Status> {
        let request = request.into_inner();
        let key = Self::scope_key(&request.batch_id, &request.namespace, &request.key)?;
        Ok(Response::new(match self.lookup(&key) {
            Some((value, version)) => GetMemoryResponse {
                found: true,
                value,
                version,
                ..GetMemoryResponse::default()
            },
            None => GetMemoryResponse::default(),
        }))
    }

    async fn put_memory(
        &self,
        request: Request<PutMemoryRequest>,
    ) -> Result<Response<PutMemoryResponse>, Status> {
        let request = request.into_inner();
        let key = Self::scope_key(&request.batch_id, &request.namespace, &request.key)?;
        if let Some(expected) = request.if_version {
            let current = self.lookup(&key).map_or(0, |(_, version)| version);
            if current != expected {
                return Err(Status::failed_precondition(format!(
                    "version is {current}, not {expected}"
                )));
            }
        }
        self.puts.lock().unwrap().push(request.clone());
        let version = self.write(key, &request.value);
        Ok(Response::new(PutMemoryResponse {
            unblocked: 0,
            version,
        }))
    }

    async fn wait_memory(
        &self,
        request: Request<WaitMemoryRequest>,
    ) -> Result<Response<GetMemoryResponse>, Status> {
        let request = request.into_inner();
        let key = Self::scope_key(&request.batch_id, &request.namespace, &request.key)?;
        let wait = async {
            loop {
                let written = self.written.notified();
                tokio::pin!(written);
                written.as_mut().enable();
                if let Some((value, version)) = self.lookup(&key) {
                    return GetMemoryResponse {
                        found: true,
                        value,
                        version,
                        ..GetMemoryResponse::default()
                    };
                }
                written.await;
            }
        };
        let response = if request.timeout_ms == 0 {
            wait.await
        } else {
            tokio::time::timeout(Duration::from_millis(request.timeout_ms), wait)
                .await
                .map_err(|_| Status::deadline_exceeded("key did not appear"))?
        };
        Ok(Response::new(response))
    }

    async fn delete_memory(
        &self,
        _: Request<DeleteMemoryRequest>,
    ) -> Result<Response<DeleteMemoryResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_memory(
        &self,
        _: Request<ListMemoryRequest>,
    ) -> Result<Response<ListMemoryResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn incr_memory(
        &self,
        _: Request<IncrMemoryRequest>,
    ) -> Result<Response<IncrMemoryResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn watch_memory(
        &self,
        _: Request<WatchMemoryRequest>,
    ) -> Result<Response<Self::WatchMemoryStream>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// A `BatchService` that only spawns: an op named `cycle` is refused with a
/// `ValidationFailure`, anything else is accepted and recorded.
#[derive(Clone, Default)]
struct FakeBatches {
    spawned: Arc<Mutex<Vec<SpawnOpsRequest>>>,
}

#[tonic::async_trait]
impl BatchService for FakeBatches {
    type WatchBatchStream = EventStream;

    async fn spawn_ops(
        &self,
        request: Request<SpawnOpsRequest>,
    ) -> Result<Response<SpawnOpsResponse>, Status> {
        let request = request.into_inner();
        if request.ops.iter().any(|op| op.id == "cycle") {
            let failure = ValidationFailure {
                problems: vec![Problem {
                    op_id: "cycle".into(),
                    field: "after".into(),
                    message: "cycle: cycle -> cycle".into(),
                }],
                total: 1,
            };
            return Err(Status::with_details(
                tonic::Code::InvalidArgument,
                "spawned ops are invalid",
                failure.encode_to_vec().into(),
            ));
        }
        let op_count = u32::try_from(request.ops.len()).unwrap();
        self.spawned.lock().unwrap().push(request);
        Ok(Response::new(SpawnOpsResponse {
            op_count,
            warnings: vec!["nothing reads their output".into()],
        }))
    }

    async fn submit_batch(
        &self,
        _: Request<Streaming<SubmitBatchChunk>>,
    ) -> Result<Response<SubmitBatchResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn watch_batch(
        &self,
        _: Request<WatchBatchRequest>,
    ) -> Result<Response<Self::WatchBatchStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_batch(
        &self,
        _: Request<GetBatchRequest>,
    ) -> Result<Response<BatchStatus>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn cancel_batch(
        &self,
        _: Request<CancelBatchRequest>,
    ) -> Result<Response<CancelBatchResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_batches(
        &self,
        _: Request<ListBatchesRequest>,
    ) -> Result<Response<ListBatchesResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn why(&self, _: Request<WhyRequest>) -> Result<Response<WhyResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

struct Harness {
    url: String,
    sessions: FakeSessions,
    memory: FakeMemory,
    batches: FakeBatches,
    server_shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

async fn start_fake_coordinator() -> Harness {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (worker_service, sessions) = FakeWorkerService::new();
    let memory = FakeMemory::default();
    let batches = FakeBatches::default();
    let server_shutdown = CancellationToken::new();
    let shutdown_signal = server_shutdown.clone();
    let services = (memory.clone(), batches.clone());
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(WorkerServiceServer::new(worker_service))
            .add_service(MemoryServiceServer::new(services.0))
            .add_service(BatchServiceServer::new(services.1))
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                shutdown_signal.cancelled_owned(),
            )
            .await
            .unwrap();
    });
    Harness {
        url,
        sessions,
        memory,
        batches,
        server_shutdown,
        server,
    }
}

fn test_registry() -> Registry {
    test_registry_with_gate(mpsc::channel(1).0)
}

/// The test registry plus `gated`: tells `started` when it runs, then sleeps `ms`.
fn test_registry_with_gate(started: mpsc::Sender<()>) -> Registry {
    let mut registry = Registry::with_builtins(&BuiltinConfig::default());
    registry.register(
        "gated",
        handler_fn(move |_ctx, args| {
            let started = started.clone();
            async move {
                let _ = started.send(()).await;
                tokio::time::sleep(Duration::from_millis(args["ms"].as_u64().unwrap_or(0))).await;
                Ok(OpOutput::text("finished"))
            }
        }),
    );
    registry.register(
        "wordcount",
        handler_fn(|_ctx, args| async move {
            let words = args["text"]
                .as_str()
                .unwrap_or_default()
                .split_whitespace()
                .count();
            Ok(OpOutput::text(words.to_string()))
        }),
    );
    registry
}

fn assignment(op_index: u32, kind: &str, args: serde_json::Value) -> Assignment {
    Assignment {
        batch_id: "batch-1".into(),
        op_index,
        op_id: format!("op{op_index}"),
        kind: kind.into(),
        args_json: args.to_string(),
        attempt: 1,
        timeout_ms: 10_000,
        ..Assignment::default()
    }
}

fn config(url: &str) -> WorkerConfig {
    let mut config = WorkerConfig::new(url);
    config.worker_id = Some("test-worker".into());
    config.slots = 4;
    config.labels.insert("zone".into(), "test".into());
    config.drain_timeout = Duration::from_secs(10);
    config
}

#[tokio::test]
async fn registers_runs_assignments_and_returns_results() {
    let mut harness = start_fake_coordinator().await;
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(run_worker(
        config(&harness.url),
        test_registry(),
        shutdown.clone(),
    ));

    let mut session = harness.sessions.next().await;
    assert_eq!(session.register.worker_id, "test-worker");
    assert_eq!(session.register.slots, 4);
    assert_eq!(
        session.register.labels.get("zone").map(String::as_str),
        Some("test")
    );
    for kind in ["echo", "noop", "memory.get", "wordcount"] {
        assert!(
            session
                .register
                .kinds
                .iter()
                .any(|registered| registered == kind),
            "missing {kind}"
        );
    }
    // Without a root or --allow-shell these are switched off: not offered.
    for kind in ["shell", "read"] {
        assert!(
            !session
                .register
                .kinds
                .iter()
                .any(|registered| registered == kind),
            "{kind} offered though switched off"
        );
    }

    session
        .send(coordinator_message::Msg::Assignments(Assignments {
            assignments: vec![
                assignment(0, "echo", serde_json::json!({"text": "hello volley"})),
                assignment(1, "wordcount", serde_json::json!({"text": "one two three"})),
            ],
        }))
        .await;
    let results = collect_results(&mut session.from_worker, 2).await;
    assert_eq!(results.len(), 2);
    assert!(
        results
            .iter()
            .all(|result| result.ok && result.batch_id == "batch-1" && result.attempt == 1)
    );
    assert_eq!(results[0].output, "hello volley");
    assert_eq!(results[1].output, "3");

    // A failing op reports a failure, not silence.
    session
        .send(coordinator_message::Msg::Assignments(Assignments {
            assignments: vec![assignment(2, "no-such-kind", serde_json::json!({}))],
        }))
        .await;
    let results = collect_results(&mut session.from_worker, 1).await;
    assert!(!results[0].ok);
    assert!(
        results[0].error.contains("not registered"),
        "{}",
        results[0].error
    );
    assert_eq!(results[0].failure_kind(), FailureKind::Permanent);

    drop(session.to_worker); // lets the fake end its side once the worker half-closes
    shutdown.cancel();
    tokio::time::timeout(DEADLINE, worker)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    harness.server_shutdown.cancel();
    harness.server.await.unwrap();
}

#[tokio::test]
async fn cancel_aborts_a_running_op_and_shutdown_drains() {
    let mut harness = start_fake_coordinator().await;
    let shutdown = CancellationToken::new();
    let (started_tx, mut started) = mpsc::channel(4);
    let worker = tokio::spawn(run_worker(
        config(&harness.url),
        test_registry_with_gate(started_tx),
        shutdown.clone(),
    ));
    let mut session = harness.sessions.next().await;

    let mut long_sleep = assignment(0, "sleep", serde_json::json!({"ms": 3_600_000}));
    long_sleep.timeout_ms = 0;
    session
        .send(coordinator_message::Msg::Assignments(Assignments {
            assignments: vec![long_sleep],
        }))
        .await;
    session
        .send(coordinator_message::Msg::Cancel(CancelOps {
            ops: vec![OpRef {
                batch_id: "batch-1".into(),
                op_index: 0,
                attempt: 1,
                ticket: String::new(),
            }],
        }))
        .await;
    // Same stream, same order: the op is running when the cancel is read.
    let results = collect_results(&mut session.from_worker, 1).await;
    assert!(!results[0].ok);
    assert_eq!(results[0].error, "cancelled");
    assert_eq!(results[0].failure_kind(), FailureKind::Cancelled);

    // An op running at shutdown finishes and its result is delivered before the worker returns.
    session
        .send(coordinator_message::Msg::Assignments(Assignments {
            assignments: vec![assignment(1, "gated", serde_json::json!({"ms": 50}))],
        }))
        .await;
    tokio::time::timeout(DEADLINE, started.recv())
        .await
        .unwrap()
        .unwrap();
    drop(session.to_worker); // lets the fake end its side once the worker half-closes
    shutdown.cancel();
    let results = collect_results(&mut session.from_worker, 1).await;
    assert!(results[0].ok, "{:?}", results[0]);
    assert_eq!(results[0].output, "finished");
    tokio::time::timeout(DEADLINE, worker)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    harness.server_shutdown.cancel();
    harness.server.await.unwrap();
}

#[tokio::test]
async fn reconnects_and_registers_again_after_the_stream_breaks() {
    let mut harness = start_fake_coordinator().await;
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(run_worker(
        config(&harness.url),
        test_registry(),
        shutdown.clone(),
    ));

    let first = harness.sessions.next().await;
    // Break the stream from the coordinator's side.
    first
        .to_worker
        .send(Err(Status::unavailable("coordinator restarting")))
        .await
        .unwrap();
    drop(first);

    let mut second = harness.sessions.next().await;
    assert_eq!(second.register.worker_id, "test-worker");
    second
        .send(coordinator_message::Msg::Assignments(Assignments {
            assignments: vec![assignment(5, "echo", serde_json::json!({"text": "again"}))],
        }))
        .await;
    let results = collect_results(&mut second.from_worker, 1).await;
    assert_eq!(results[0].output, "again");

    drop(second.to_worker); // lets the fake end its side once the worker half-closes
    shutdown.cancel();
    tokio::time::timeout(DEADLINE, worker)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    harness.server_shutdown.cancel();
    harness.server.await.unwrap();
}

#[tokio::test]
async fn many_results_are_coalesced_into_few_messages() {
    let mut harness = start_fake_coordinator().await;
    let shutdown = CancellationToken::new();
    let mut worker_config = config(&harness.url);
    worker_config.slots = 200;
    let worker = tokio::spawn(run_worker(worker_config, test_registry(), shutdown.clone()));
    let mut session = harness.sessions.next().await;

    let assignments = (0..200)
        .map(|index| assignment(index, "noop", serde_json::json!({})))
        .collect();
    session
        .send(coordinator_message::Msg::Assignments(Assignments {
            assignments,
        }))
        .await;
    let mut message_count = 0_usize;
    let mut results = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while results.len() < 200 {
            let message = session
                .from_worker
                .recv()
                .await
                .expect("worker stream ended early");
            if let Some(worker_message::Msg::Results(batch)) = message.msg {
                message_count += 1;
                results.extend(batch.results);
            }
        }
    })
    .await
    .expect("results did not arrive before the deadline");
    assert!(results.iter().all(|result| result.ok));
    assert!(
        message_count < 200,
        "200 results took {message_count} messages: not coalesced"
    );

    drop(session.to_worker); // lets the fake end its side once the worker half-closes
    shutdown.cancel();
    tokio::time::timeout(DEADLINE, worker)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    harness.server_shutdown.cancel();
    harness.server.await.unwrap();
}

/// A registry with `coordinate` (puts `greeting`, then waits for `reply`
/// and outputs it) and `fanout` (spawns an op per id in `args.ids`).
fn coordination_registry() -> Registry {
    let mut registry = Registry::new();
    registry.register(
        "coordinate",
        handler_fn(|ctx, _args| async move {
            let memory = ctx.memory();
            memory.put("greeting", "hello from the op").await?;
            let reply = memory.wait_for("reply", Some(DEADLINE)).await?;
            Ok(OpOutput::text(String::from_utf8_lossy(&reply).into_owned()))
        }),
    );
    registry.register(
        "claim",
        handler_fn(|ctx, _args| async move {
            // Create-only: the second claim finds the key taken.
            let only_if_absent = PutOptions {
                if_version: Some(0),
                content_type: Some("text/plain".into()),
                ttl: Some(Duration::from_secs(30)),
            };
            let memory = ctx.memory();
            let version = memory
                .put_with("owner", ctx.op_id().as_str(), only_if_absent.clone())
                .await?;
            match memory
                .put_with("owner", "someone else", only_if_absent)
                .await
            {
                Err(MemoryError::VersionMismatch { .. }) => {
                    Ok(OpOutput::text(format!("claimed at version {version}")))
                }
                other => Err(HandlerError::permanent(format!("no mismatch: {other:?}"))),
            }
        }),
    );
    registry.register(
        "fanout",
        handler_fn(|ctx, args| async move {
            let ops = args["ids"]
                .as_array()
                .ok_or_else(|| HandlerError::permanent("fanout needs args.ids"))?
                .iter()
                .map(|id| Op {
                    id: id.as_str().unwrap_or_default().to_owned(),
                    kind: "noop".into(),
                    after: vec!["cycle".into()],
                    ..Op::default()
                })
                .collect();
            // An invalid spawn fails the op permanently, its problems in the details.
            let outcome = ctx.spawn(ops).await?;
            Ok(OpOutput::text(format!(
                "added {}; warnings: {}",
                outcome.op_count,
                outcome.warnings.join(", ")
            )))
        }),
    );
    registry
}

async fn stop(
    harness: Harness,
    session: FakeSession,
    shutdown: CancellationToken,
    worker: tokio::task::JoinHandle<Result<(), volley_worker::WorkerError>>,
) {
    drop(session.to_worker); // lets the fake end its side once the worker half-closes
    shutdown.cancel();
    tokio::time::timeout(DEADLINE, worker)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    harness.server_shutdown.cancel();
    harness.server.await.unwrap();
}

#[tokio::test]
async fn ops_write_and_wait_for_memory_in_their_namespace() {
    let mut harness = start_fake_coordinator().await;
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(run_worker(
        config(&harness.url),
        coordination_registry(),
        shutdown.clone(),
    ));
    let mut session = harness.sessions.next().await;

    let mut in_namespace = assignment(0, "coordinate", serde_json::json!({}));
    in_namespace.namespace = "swarm".into();
    in_namespace.attempt = 2;
    session
        .send(coordinator_message::Msg::Assignments(Assignments {
            assignments: vec![in_namespace],
        }))
        .await;
    // The op's write names the namespace (not the batch) and its attempt.
    let put = harness
        .memory
        .wait_for_put(|put| put.key == "greeting")
        .await;
    assert_eq!(put.namespace, "swarm");
    assert_eq!(put.batch_id, "");
    assert_eq!(put.value, b"hello from the op");
    assert_eq!((put.writer_op.as_str(), put.writer_attempt), ("op0", 2));
    assert_eq!(put.if_version, None);
    assert_eq!(put.ttl_ms, 0);

    // Another party answers; the op, blocked in WaitMemory, finishes with it.
    harness.memory.write(
        (String::new(), "swarm".into(), "reply".into()),
        b"hello back",
    );
    let results = collect_results(&mut session.from_worker, 1).await;
    assert!(results[0].ok, "{:?}", results[0]);
    assert_eq!(results[0].output, "hello back");

    // Without a namespace the op's batch is its scope.
    session
        .send(coordinator_message::Msg::Assignments(Assignments {
            assignments: vec![assignment(1, "coordinate", serde_json::json!({}))],
        }))
        .await;
    let put = harness
        .memory
        .wait_for_put(|put| put.key == "greeting" && put.writer_op == "op1")
        .await;
    assert_eq!(
        (put.batch_id.as_str(), put.namespace.as_str()),
        ("batch-1", "")
    );
    harness.memory.write(
        ("batch-1".into(), String::new(), "reply".into()),
        b"own memory",
    );
    let results = collect_results(&mut session.from_worker, 1).await;
    assert_eq!(results[0].output, "own memory");

    // Compare-and-set: FAILED_PRECONDITION comes back as a version mismatch.
    session
        .send(coordinator_message::Msg::Assignments(Assignments {
            assignments: vec![assignment(2, "claim", serde_json::json!({}))],
        }))
        .await;
    let results = collect_results(&mut session.from_worker, 1).await;
    assert!(results[0].ok, "{:?}", results[0]);
    assert_eq!(results[0].output, "claimed at version 1");
    let put = harness.memory.wait_for_put(|put| put.key == "owner").await;
    assert_eq!(
        (put.if_version, put.ttl_ms, put.content_type.as_str()),
        (Some(0), 30_000, "text/plain")
    );

    stop(harness, session, shutdown, worker).await;
}

#[tokio::test]
async fn ops_spawn_ops_and_see_why_invalid_ones_are_refused() {
    let mut harness = start_fake_coordinator().await;
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(run_worker(
        config(&harness.url),
        coordination_registry(),
        shutdown.clone(),
    ));
    let mut session = harness.sessions.next().await;

    session
        .send(coordinator_message::Msg::Assignments(Assignments {
            assignments: vec![
                assignment(0, "fanout", serde_json::json!({"ids": ["a", "b"]})),
                assignment(1, "fanout", serde_json::json!({"ids": ["c", "cycle"]})),
            ],
        }))
        .await;
    let results = collect_results(&mut session.from_worker, 2).await;

    assert!(results[0].ok, "{:?}", results[0]);
    assert_eq!(
        results[0].output,
        "added 2; warnings: nothing reads their output"
    );
    let spawned = harness.batches.spawned.lock().unwrap().clone();
    assert_eq!(spawned.len(), 1, "only the valid spawn is recorded");
    assert_eq!(spawned[0].batch_id, "batch-1");
    assert_eq!(spawned[0].spawned_by, "op0");
    let ids: Vec<&str> = spawned[0].ops.iter().map(|op| op.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);

    assert!(!results[1].ok);
    assert!(
        results[1]
            .error
            .contains("op cycle after: cycle: cycle -> cycle"),
        "{}",
        results[1].error
    );
    let details: serde_json::Value = serde_json::from_str(&results[1].details_json).unwrap();
    assert_eq!(details["retryable"], false);
    assert_eq!(details["problems"][0]["op_id"], "cycle");
    assert_eq!(details["problems"][0]["field"], "after");

    stop(harness, session, shutdown, worker).await;
}

/// Everything the worker sends until its stream ends (it half-closed after a
/// drain), as results and hand-backs; fails at the deadline.
async fn collect_until_closed(
    from_worker: &mut mpsc::Receiver<WorkerMessage>,
) -> (Vec<OpResult>, Vec<ReturnOps>) {
    let mut results = Vec::new();
    let mut returned = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while let Some(message) = from_worker.recv().await {
            match message.msg {
                Some(worker_message::Msg::Results(batch)) => results.extend(batch.results),
                Some(worker_message::Msg::ReturnOps(ops)) => returned.push(ops),
                _ => {}
            }
        }
    })
    .await
    .expect("the worker's stream did not end before the deadline");
    results.sort_by_key(|result| result.op_index);
    (results, returned)
}

fn returned_indexes(returned: &[ReturnOps], reason: &str) -> Vec<u32> {
    let mut indexes: Vec<u32> = returned
        .iter()
        .filter(|ops| ops.reason == reason)
        .flat_map(|ops| ops.ops.iter())
        .map(|op| {
            assert_eq!((op.batch_id.as_str(), op.attempt), ("batch-1", 1));
            op.op_index
        })
        .collect();
    indexes.sort_unstable();
    indexes
}

async fn wait_worker(
    harness: Harness,
    worker: tokio::task::JoinHandle<Result<(), volley_worker::WorkerError>>,
) {
    tokio::time::timeout(DEADLINE, worker)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    harness.server_shutdown.cancel();
    harness.server.await.unwrap();
}

#[tokio::test]
async fn assignments_arriving_during_a_drain_are_handed_back() {
    let mut harness = start_fake_coordinator().await;
    let shutdown = CancellationToken::new();
    let (started_tx, mut started) = mpsc::channel(4);
    let worker = tokio::spawn(run_worker(
        config(&harness.url),
        test_registry_with_gate(started_tx),
        shutdown.clone(),
    ));
    let mut session = harness.sessions.next().await;

    // Keeps the drain going while the late assignments arrive.
    session
        .send(coordinator_message::Msg::Assignments(Assignments {
            assignments: vec![assignment(0, "gated", serde_json::json!({"ms": 500}))],
        }))
        .await;
    tokio::time::timeout(DEADLINE, started.recv())
        .await
        .unwrap()
        .unwrap();
    shutdown.cancel();
    session
        .send(coordinator_message::Msg::Assignments(Assignments {
            assignments: vec![
                assignment(1, "echo", serde_json::json!({"text": "too late"})),
                assignment(2, "noop", serde_json::json!({})),
            ],
        }))
        .await;
    // First it says it drains (a hand-back of nothing, at once); then the
    // late ones are handed back, while op 0 is still running.
    let mut hand_backs = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while hand_backs.len() < 2 {
            let message = session.from_worker.recv().await.expect("stream ended");
            match message.msg {
                Some(worker_message::Msg::ReturnOps(ops)) => hand_backs.push(ops),
                Some(worker_message::Msg::Results(results)) => {
                    panic!("a result before the hand-back: {results:?}")
                }
                _ => {}
            }
        }
    })
    .await
    .expect("no ReturnOps before the deadline");
    assert!(hand_backs[0].ops.is_empty(), "{hand_backs:?}");
    assert!(
        hand_backs
            .iter()
            .all(|ops| ops.reason == "worker is draining")
    );
    assert_eq!(returned_indexes(&hand_backs, "worker is draining"), [1, 2]);

    drop(session.to_worker); // lets the fake end its side once the worker half-closes
    let (results, returned) = collect_until_closed(&mut session.from_worker).await;
    assert_eq!(returned_indexes(&returned, "worker is draining"), [0u32; 0]);
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!((results[0].op_index, results[0].ok), (0, true));
    wait_worker(harness, worker).await;
}

#[tokio::test]
async fn an_op_finishing_within_the_drain_timeout_reports_its_result() {
    let mut harness = start_fake_coordinator().await;
    let shutdown = CancellationToken::new();
    let (started_tx, mut started) = mpsc::channel(4);
    let mut worker_config = config(&harness.url);
    worker_config.drain_timeout = Duration::from_secs(5);
    let worker = tokio::spawn(run_worker(
        worker_config,
        test_registry_with_gate(started_tx),
        shutdown.clone(),
    ));
    let mut session = harness.sessions.next().await;

    session
        .send(coordinator_message::Msg::Assignments(Assignments {
            assignments: vec![assignment(0, "gated", serde_json::json!({"ms": 300}))],
        }))
        .await;
    tokio::time::timeout(DEADLINE, started.recv())
        .await
        .unwrap()
        .unwrap();
    drop(session.to_worker);
    shutdown.cancel();
    let (results, returned) = collect_until_closed(&mut session.from_worker).await;
    // It said it drains, and handed nothing back.
    assert_eq!(returned.len(), 1, "{returned:?}");
    assert!(returned[0].ops.is_empty(), "{returned:?}");
    assert_eq!(results.len(), 1, "{results:?}");
    assert!(results[0].ok, "{:?}", results[0]);
    assert_eq!(results[0].output, "finished");
    wait_worker(harness, worker).await;
}

#[tokio::test]
async fn ops_outliving_the_drain_timeout_are_cancelled_and_handed_back() {
    let mut harness = start_fake_coordinator().await;
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("sleep.pid");
    let shutdown = CancellationToken::new();
    let (started_tx, mut started) = mpsc::channel(4);
    let mut worker_config = config(&harness.url);
    worker_config.drain_timeout = Duration::from_millis(300);
    worker_config.allow_shell = true;
    let mut registry = test_registry_with_gate(started_tx);
    let shell_config = BuiltinConfig {
        root: None,
        allow_shell: true,
        ..BuiltinConfig::default()
    };
    let shell = Registry::with_builtins(&shell_config)
        .get("shell")
        .unwrap()
        .clone();
    registry.register_arc("shell", shell);
    let worker = tokio::spawn(run_worker(worker_config, registry, shutdown.clone()));
    let mut session = harness.sessions.next().await;

    let mut long_sleep = assignment(0, "sleep", serde_json::json!({"ms": 3_600_000}));
    long_sleep.timeout_ms = 0;
    let mut long_shell = assignment(
        1,
        "shell",
        serde_json::json!({"cmd": format!("sleep 3600 & echo $! > {}; wait", pid_file.display())}),
    );
    long_shell.timeout_ms = 0;
    session
        .send(coordinator_message::Msg::Assignments(Assignments {
            assignments: vec![
                long_sleep,
                long_shell,
                assignment(2, "gated", serde_json::json!({"ms": 20})),
            ],
        }))
        .await;
    tokio::time::timeout(DEADLINE, started.recv())
        .await
        .unwrap()
        .unwrap();
    let sleep_pid = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Ok(text) = std::fs::read_to_string(&pid_file)
                && let Ok(pid) = text.trim().parse::<u32>()
            {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the shell op did not start");
    drop(session.to_worker);
    shutdown.cancel();
    let (results, returned) = collect_until_closed(&mut session.from_worker).await;
    // The short op finished within the drain timeout: a normal result.
    assert_eq!(
        results.len(),
        1,
        "interrupted ops must not fail: {results:?}"
    );
    assert_eq!((results[0].op_index, results[0].ok), (2, true));
    // The long ones come back to be run elsewhere, without a failed attempt.
    assert_eq!(returned_indexes(&returned, "drain timeout"), [0, 1]);
    // Besides them, only the drain's announcement (a hand-back of nothing).
    assert!(
        returned
            .iter()
            .all(|ops| ops.reason == "drain timeout" || ops.ops.is_empty()),
        "{returned:?}"
    );
    wait_worker(harness, worker).await;

    // The shell's process group was killed, grandchildren included.
    let gone = tokio::time::timeout(DEADLINE, async {
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{sleep_pid}/stat"));
            // Gone, or a zombie waiting for its reaper.
            match stat {
                Err(_) => return,
                Ok(stat) if stat.contains(") Z ") => return,
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    assert!(gone.is_ok(), "sleep {sleep_pid} outlived the drain");
}
