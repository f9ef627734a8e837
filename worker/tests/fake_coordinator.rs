//! The worker runtime against a fake coordinator: a tonic `WorkerService` on
//! 127.0.0.1:0 that the test drives message by message.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use volley_proto::v1::worker_service_server::{WorkerService, WorkerServiceServer};
use volley_proto::v1::{
    Assignment, Assignments, CancelOps, CoordinatorMessage, ListWorkersRequest,
    ListWorkersResponse, OpRef, OpResult, Register, Registered, WorkerMessage, coordinator_message,
    worker_message,
};
use volley_worker::{BuiltinConfig, OpOutput, Registry, WorkerConfig, handler_fn, run_worker};

const DEADLINE: Duration = Duration::from_secs(20);

/// One accepted session, as the test sees it.
struct SessionHandle {
    register: Register,
    to_worker: mpsc::Sender<Result<CoordinatorMessage, Status>>,
    from_worker: mpsc::Receiver<WorkerMessage>,
}

/// Hands each new session to the test through a channel.
struct FakeCoordinator {
    sessions: mpsc::Sender<SessionHandle>,
}

type CoordinatorStream = Pin<Box<dyn Stream<Item = Result<CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl WorkerService for FakeCoordinator {
    type SessionStream = CoordinatorStream;

    async fn session(
        &self,
        request: Request<Streaming<WorkerMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty stream"))?;
        let Some(worker_message::Msg::Register(register)) = first.msg else {
            return Err(Status::invalid_argument("first message must be Register"));
        };
        let (to_worker, outbound_rx) = mpsc::channel(16);
        let (from_worker_tx, from_worker) = mpsc::channel(64);
        to_worker
            .send(Ok(CoordinatorMessage {
                msg: Some(coordinator_message::Msg::Registered(Registered {
                    worker_id: register.worker_id.clone(),
                })),
            }))
            .await
            .map_err(|_| Status::internal("test gone"))?;
        let forward_to_test = to_worker.clone();
        tokio::spawn(async move {
            while let Ok(Some(message)) = inbound.message().await {
                if from_worker_tx.send(message).await.is_err() {
                    break;
                }
            }
            // The worker half-closed: end our side too, as a coordinator would.
            drop(forward_to_test);
        });
        self.sessions
            .send(SessionHandle {
                register,
                to_worker,
                from_worker,
            })
            .await
            .map_err(|_| Status::internal("test gone"))?;
        Ok(Response::new(Box::pin(ReceiverStream::new(outbound_rx))))
    }

    async fn list_workers(
        &self,
        _: Request<ListWorkersRequest>,
    ) -> Result<Response<ListWorkersResponse>, Status> {
        Ok(Response::new(ListWorkersResponse::default()))
    }
}

struct Harness {
    url: String,
    sessions: mpsc::Receiver<SessionHandle>,
    server_shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

async fn start_fake_coordinator() -> Harness {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (sessions_tx, sessions) = mpsc::channel(4);
    let server_shutdown = CancellationToken::new();
    let shutdown_signal = server_shutdown.clone();
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(WorkerServiceServer::new(FakeCoordinator {
                sessions: sessions_tx,
            }))
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

async fn send(session: &SessionHandle, msg: coordinator_message::Msg) {
    session
        .to_worker
        .send(Ok(CoordinatorMessage { msg: Some(msg) }))
        .await
        .unwrap();
}

/// Collects results until `count` arrived, ignoring heartbeats; fails at the deadline.
async fn collect_results(
    from_worker: &mut mpsc::Receiver<WorkerMessage>,
    count: usize,
) -> Vec<OpResult> {
    let mut results = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while results.len() < count {
            let message = from_worker.recv().await.expect("worker stream ended early");
            if let Some(worker_message::Msg::Results(batch)) = message.msg {
                results.extend(batch.results);
            }
        }
    })
    .await
    .expect("results did not arrive before the deadline");
    results.sort_by_key(|result| result.op_index);
    results
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

    let mut session = tokio::time::timeout(DEADLINE, harness.sessions.recv())
        .await
        .unwrap()
        .unwrap();
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

    send(
        &session,
        coordinator_message::Msg::Assignments(Assignments {
            assignments: vec![
                assignment(0, "echo", serde_json::json!({"text": "hello volley"})),
                assignment(1, "wordcount", serde_json::json!({"text": "one two three"})),
            ],
        }),
    )
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
    send(
        &session,
        coordinator_message::Msg::Assignments(Assignments {
            assignments: vec![assignment(2, "no-such-kind", serde_json::json!({}))],
        }),
    )
    .await;
    let results = collect_results(&mut session.from_worker, 1).await;
    assert!(!results[0].ok);
    assert!(
        results[0].error.contains("not registered"),
        "{}",
        results[0].error
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
    let mut session = tokio::time::timeout(DEADLINE, harness.sessions.recv())
        .await
        .unwrap()
        .unwrap();

    let mut long_sleep = assignment(0, "sleep", serde_json::json!({"ms": 3_600_000}));
    long_sleep.timeout_ms = 0;
    send(
        &session,
        coordinator_message::Msg::Assignments(Assignments {
            assignments: vec![long_sleep],
        }),
    )
    .await;
    send(
        &session,
        coordinator_message::Msg::Cancel(CancelOps {
            ops: vec![OpRef {
                batch_id: "batch-1".into(),
                op_index: 0,
                attempt: 1,
            }],
        }),
    )
    .await;
    // Same stream, same order: the op is running when the cancel is read.
    let results = collect_results(&mut session.from_worker, 1).await;
    assert!(!results[0].ok);
    assert_eq!(results[0].error, "cancelled");

    // An op running at shutdown finishes and its result is delivered before the worker returns.
    send(
        &session,
        coordinator_message::Msg::Assignments(Assignments {
            assignments: vec![assignment(1, "gated", serde_json::json!({"ms": 50}))],
        }),
    )
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

    let first = tokio::time::timeout(DEADLINE, harness.sessions.recv())
        .await
        .unwrap()
        .unwrap();
    // Break the stream from the coordinator's side.
    first
        .to_worker
        .send(Err(Status::unavailable("coordinator restarting")))
        .await
        .unwrap();
    drop(first);

    let mut second = tokio::time::timeout(DEADLINE, harness.sessions.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.register.worker_id, "test-worker");
    send(
        &second,
        coordinator_message::Msg::Assignments(Assignments {
            assignments: vec![assignment(5, "echo", serde_json::json!({"text": "again"}))],
        }),
    )
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
    let mut session = tokio::time::timeout(DEADLINE, harness.sessions.recv())
        .await
        .unwrap()
        .unwrap();

    let assignments = (0..200)
        .map(|index| assignment(index, "noop", serde_json::json!({})))
        .collect();
    send(
        &session,
        coordinator_message::Msg::Assignments(Assignments { assignments }),
    )
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
