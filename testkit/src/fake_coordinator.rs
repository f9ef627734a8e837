//! A fake coordinator's `WorkerService` for worker tests (feature `proto`):
//! each worker session is handed to the test, which plays the coordinator's
//! side of the stream by hand.
//!
//! ```no_run
//! # async fn example() {
//! use volley_proto::v1::worker_service_server::WorkerServiceServer;
//! let (service, mut sessions) = volley_testkit::fake_coordinator::FakeWorkerService::new();
//! // Serve `WorkerServiceServer::new(service)` (with more services if the
//! // test needs them), start a worker against it, then:
//! let mut session = sessions.next().await;
//! let results = session.results(1).await;
//! # }
//! ```

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use volley_proto::v1::worker_service_server::WorkerService;
use volley_proto::v1::{
    Assignment, Assignments, CoordinatorMessage, ListWorkersRequest, ListWorkersResponse, OpResult,
    Register, Registered, ReturnOps, WorkerMessage, coordinator_message, worker_message,
};

/// How long a fake session waits for what the worker owes: a hang guard,
/// never a timing assertion.
pub const SESSION_DEADLINE: Duration = Duration::from_secs(20);

/// One accepted session, as the test sees it: the worker's `Register`, the
/// coordinator's side of the stream, and what the worker sent after it.
pub struct FakeSession {
    pub register: Register,
    pub to_worker: mpsc::Sender<Result<CoordinatorMessage, Status>>,
    pub from_worker: mpsc::Receiver<WorkerMessage>,
}

impl FakeSession {
    /// Sends `msg` to the worker.
    pub async fn send(&self, msg: coordinator_message::Msg) {
        self.to_worker
            .send(Ok(CoordinatorMessage { msg: Some(msg) }))
            .await
            .expect("the worker's session is open");
    }

    /// Assigns `assignments` to the worker.
    pub async fn assign(&self, assignments: Vec<Assignment>) {
        self.send(coordinator_message::Msg::Assignments(Assignments {
            assignments,
        }))
        .await;
    }

    /// The coordinator goes away: the stream ends with an error.
    pub async fn cut(self) {
        self.to_worker
            .send(Err(Status::unavailable("coordinator restarting")))
            .await
            .expect("the worker's session is open");
    }

    /// The next results, until `count` arrived (heartbeats and the rest
    /// skipped), sorted by op index; fails at the deadline.
    pub async fn results(&mut self, count: usize) -> Vec<OpResult> {
        collect_results(&mut self.from_worker, count).await
    }

    /// Everything the worker sends until it closes its side (having let
    /// the fake close its own), as results and hand-backs.
    pub async fn until_closed(mut self) -> (Vec<OpResult>, Vec<ReturnOps>) {
        drop(self.to_worker);
        let mut results = Vec::new();
        let mut returned = Vec::new();
        tokio::time::timeout(SESSION_DEADLINE, async {
            while let Some(message) = self.from_worker.recv().await {
                match message.msg {
                    Some(worker_message::Msg::Results(batch)) => results.extend(batch.results),
                    Some(worker_message::Msg::ReturnOps(ops)) => returned.push(ops),
                    _ => {}
                }
            }
        })
        .await
        .expect("the worker did not close its stream before the deadline");
        results.sort_by_key(|result| result.op_index);
        (results, returned)
    }
}

/// Results from `from_worker` until `count` arrived (heartbeats and the
/// rest skipped), sorted by op index; fails at the deadline.
pub async fn collect_results(
    from_worker: &mut mpsc::Receiver<WorkerMessage>,
    count: usize,
) -> Vec<OpResult> {
    let mut results = Vec::new();
    tokio::time::timeout(SESSION_DEADLINE, async {
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

/// A `WorkerService` that answers `Register` with `Registered` and hands
/// each session to the test, or turns sessions away while refusing (the
/// coordinator is down).
pub struct FakeWorkerService {
    sessions: mpsc::Sender<FakeSession>,
    refusing: Arc<AtomicBool>,
    /// Told of every session turned away.
    refused: mpsc::UnboundedSender<()>,
}

/// The test's end of a [`FakeWorkerService`].
pub struct FakeSessions {
    sessions: mpsc::Receiver<FakeSession>,
    refusing: Arc<AtomicBool>,
    refused: mpsc::UnboundedReceiver<()>,
}

impl FakeWorkerService {
    /// The service (to serve) and the test's end of it.
    #[allow(clippy::new_ret_no_self)] // a pair: the service and its handle
    pub fn new() -> (FakeWorkerService, FakeSessions) {
        let (sessions_tx, sessions) = mpsc::channel(4);
        let refusing = Arc::new(AtomicBool::new(false));
        let (refused_tx, refused) = mpsc::unbounded_channel();
        let service = FakeWorkerService {
            sessions: sessions_tx,
            refusing: Arc::clone(&refusing),
            refused: refused_tx,
        };
        let handle = FakeSessions {
            sessions,
            refusing,
            refused,
        };
        (service, handle)
    }
}

impl FakeSessions {
    /// The next session a worker opened; fails at the deadline.
    pub async fn next(&mut self) -> FakeSession {
        tokio::time::timeout(SESSION_DEADLINE, self.sessions.recv())
            .await
            .expect("no session before the deadline")
            .expect("the fake coordinator is serving")
    }

    /// While `refusing`, sessions are turned away (`UNAVAILABLE`).
    pub fn refuse(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::SeqCst);
    }

    /// Waits until a session was turned away: the worker knows it is
    /// disconnected.
    pub async fn wait_refused(&mut self) {
        tokio::time::timeout(SESSION_DEADLINE, self.refused.recv())
            .await
            .expect("the worker did not try to reconnect before the deadline")
            .expect("the fake coordinator is serving");
    }
}

type CoordinatorStream = Pin<Box<dyn Stream<Item = Result<CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl WorkerService for FakeWorkerService {
    type SessionStream = CoordinatorStream;

    async fn session(
        &self,
        request: Request<Streaming<WorkerMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        if self.refusing.load(Ordering::SeqCst) {
            let _ = self.refused.send(());
            return Err(Status::unavailable("no coordinator here"));
        }
        let mut inbound = request.into_inner();
        let Some(WorkerMessage {
            msg: Some(worker_message::Msg::Register(register)),
        }) = inbound.message().await?
        else {
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
        let until_worker_closes = to_worker.clone();
        tokio::spawn(async move {
            while let Ok(Some(message)) = inbound.message().await {
                if from_worker_tx.send(message).await.is_err() {
                    break;
                }
            }
            // The worker closed its side: end ours too, as a coordinator does.
            drop(until_worker_closes);
        });
        self.sessions
            .send(FakeSession {
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
