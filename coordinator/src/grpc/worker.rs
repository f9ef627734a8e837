//! `volley.v1.WorkerService` over [`Coordinator`]: one task per worker
//! stream reads its results and hands them to the worker's session.

use std::pin::Pin;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, info_span, warn};
use volley_proto::v1::worker_service_server::WorkerService;
use volley_proto::v1::{self, worker_message::Msg};

use crate::service::Coordinator;

pub(crate) struct WorkerAdapter {
    coordinator: Coordinator,
}

impl WorkerAdapter {
    pub(crate) fn new(coordinator: Coordinator) -> Self {
        WorkerAdapter { coordinator }
    }
}

type CoordinatorStream = Pin<Box<dyn Stream<Item = Result<v1::CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl WorkerService for WorkerAdapter {
    type SessionStream = CoordinatorStream;

    #[tracing::instrument(name = "worker.Session", skip_all)]
    async fn session(
        &self,
        request: Request<Streaming<v1::WorkerMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let principal = super::auth::principal(&request)?;
        let mut inbound = request.into_inner();
        let register = match inbound.message().await? {
            Some(v1::WorkerMessage {
                msg: Some(Msg::Register(register)),
            }) => register,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message on a worker stream must be Register",
                ));
            }
        };
        // Assignments never exceed the worker's slots; the extra room is for
        // cancels and the greeting.
        let capacity = register.slots as usize + 16;
        let (outbound, outbound_receiver) = mpsc::channel(capacity);
        let mut session = self
            .coordinator
            .connect_worker(register, outbound.clone(), &principal)
            .await?;
        let greeting = v1::CoordinatorMessage {
            msg: Some(v1::coordinator_message::Msg::Registered(v1::Registered {
                worker_id: session.worker_id().to_owned(),
            })),
        };
        let _ = outbound.try_send(greeting);
        let refused = session.take_refused();
        if !refused.is_empty() {
            let _ = outbound.try_send(v1::CoordinatorMessage {
                msg: Some(v1::coordinator_message::Msg::Cancel(v1::CancelOps {
                    ops: refused,
                })),
            });
        }
        let span = info_span!("worker.stream", worker = %session.worker_id());
        self.coordinator.spawn(
            async move {
                loop {
                    match inbound.message().await {
                        Ok(Some(v1::WorkerMessage {
                            msg: Some(Msg::Results(results)),
                        })) => {
                            session.results(results.results).await;
                        }
                        Ok(Some(v1::WorkerMessage {
                            msg: Some(Msg::Heartbeat(_)),
                        })) => session.heartbeat().await,
                        Ok(Some(v1::WorkerMessage {
                            msg: Some(Msg::ReturnOps(returned)),
                        })) => session.return_ops(returned.ops, &returned.reason).await,
                        Ok(Some(_)) => warn!("unexpected message on a registered worker stream"),
                        Ok(None) => {
                            // A clean end: the worker reported all it ran.
                            session.close(true).await;
                            return;
                        }
                        Err(status) => {
                            warn!(%status, "worker stream broke");
                            break;
                        }
                    }
                }
                session.close(false).await;
            }
            .instrument(span),
        );
        let stream = ReceiverStream::new(outbound_receiver).map(Ok);
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(name = "worker.ListWorkers", skip_all)]
    async fn list_workers(
        &self,
        _request: Request<v1::ListWorkersRequest>,
    ) -> Result<Response<v1::ListWorkersResponse>, Status> {
        Ok(Response::new(v1::ListWorkersResponse {
            workers: self.coordinator.workers().await,
        }))
    }
}
