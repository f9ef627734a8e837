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

use volley_proto::BatchId;
use volley_store::FailureKind;

use crate::domain::{HeldOp, OpRef, OpResult, WorkerInfo, WorkerRegistration};
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
            .connect_worker(registration(register), outbound.clone(), &principal)
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
                    ops: refused.into_iter().map(op_ref_of).collect(),
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
                            session
                                .results(results.results.into_iter().map(op_result).collect())
                                .await;
                        }
                        Ok(Some(v1::WorkerMessage {
                            msg: Some(Msg::Heartbeat(_)),
                        })) => session.heartbeat().await,
                        Ok(Some(v1::WorkerMessage {
                            msg: Some(Msg::ReturnOps(returned)),
                        })) => {
                            let ops = returned.ops.into_iter().map(op_ref).collect();
                            session.return_ops(ops, &returned.reason).await;
                        }
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
            workers: self
                .coordinator
                .workers()
                .await
                .into_iter()
                .map(worker_info)
                .collect(),
        }))
    }
}

fn registration(register: v1::Register) -> WorkerRegistration {
    WorkerRegistration {
        worker_id: register.worker_id,
        kinds: register.kinds,
        labels: register.labels.into_iter().collect(),
        slots: register.slots,
        running: register
            .running
            .into_iter()
            .map(|mut held| HeldOp {
                ticket: std::mem::take(&mut held.ticket),
                op: op_ref(held),
            })
            .collect(),
    }
}

fn op_ref(op: v1::OpRef) -> OpRef {
    OpRef {
        batch: BatchId::new(op.batch_id),
        index: op.op_index,
        attempt: op.attempt,
    }
}

/// An op the worker is told to stop; never with a ticket (a refused op's
/// ticket is not echoed back).
fn op_ref_of(op: OpRef) -> v1::OpRef {
    v1::OpRef {
        batch_id: op.batch.into_string(),
        op_index: op.index,
        attempt: op.attempt,
        ticket: String::new(),
    }
}

fn op_result(result: v1::OpResult) -> OpResult {
    let failure = failure_kind(&result);
    OpResult {
        op: OpRef {
            batch: BatchId::new(result.batch_id),
            index: result.op_index,
            attempt: result.attempt,
        },
        ok: result.ok,
        failure,
        retry_after_ms: result.retry_after_ms,
        output: result.output,
        error: result.error,
        details_json: result.details_json,
        started_ms: result.started_at_ms,
        duration_ms: result.duration_ms,
    }
}

/// What kind of failure a worker reported: its `failure_kind`, or for a
/// worker that predates it, the `retryable` flag in its details.
fn failure_kind(result: &v1::OpResult) -> FailureKind {
    match v1::FailureKind::try_from(result.failure_kind) {
        Ok(v1::FailureKind::Timeout) => FailureKind::Timeout,
        Ok(v1::FailureKind::Permanent) => FailureKind::Permanent,
        // A cancel came from us (a cancelled batch): nothing to retry.
        Ok(v1::FailureKind::Cancelled) => FailureKind::Permanent,
        Ok(v1::FailureKind::Error) => FailureKind::Error,
        Ok(v1::FailureKind::Unspecified) | Err(_) => {
            if declared_permanent(&result.details_json) {
                FailureKind::Permanent
            } else {
                FailureKind::Error
            }
        }
    }
}

fn declared_permanent(details_json: &str) -> bool {
    if !details_json.contains("retryable") {
        return false;
    }
    serde_json::from_str::<serde_json::Value>(details_json)
        .ok()
        .and_then(|details| {
            details
                .get("retryable")
                .and_then(serde_json::Value::as_bool)
        })
        .is_some_and(|retryable| !retryable)
}

fn worker_info(worker: WorkerInfo) -> v1::WorkerInfo {
    v1::WorkerInfo {
        worker_id: worker.worker_id,
        kinds: worker.kinds,
        labels: worker.labels.into_iter().collect(),
        slots: worker.slots,
        busy: worker.busy,
        coordinator: worker.coordinator,
        draining: worker.draining,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(kind: v1::FailureKind, details_json: &str) -> v1::OpResult {
        v1::OpResult {
            failure_kind: kind as i32,
            details_json: details_json.to_owned(),
            ..v1::OpResult::default()
        }
    }

    #[test]
    fn failure_kinds_and_the_older_retryable_flag() {
        assert_eq!(
            failure_kind(&failed(v1::FailureKind::Timeout, "")),
            FailureKind::Timeout
        );
        assert_eq!(
            failure_kind(&failed(v1::FailureKind::Cancelled, "")),
            FailureKind::Permanent
        );
        assert_eq!(
            failure_kind(&failed(v1::FailureKind::Error, r#"{"retryable":false}"#)),
            FailureKind::Error
        );
        assert_eq!(
            failure_kind(&failed(
                v1::FailureKind::Unspecified,
                r#"{"retryable":false}"#
            )),
            FailureKind::Permanent
        );
        assert_eq!(
            failure_kind(&failed(
                v1::FailureKind::Unspecified,
                r#"{"retryable":true}"#
            )),
            FailureKind::Error
        );
        assert_eq!(
            failure_kind(&failed(v1::FailureKind::Unspecified, "not json retryable")),
            FailureKind::Error
        );
    }

    #[test]
    fn a_register_keeps_its_tickets_and_refused_ops_go_back_without() {
        let registration = registration(v1::Register {
            worker_id: "w1".into(),
            slots: 2,
            running: vec![v1::OpRef {
                batch_id: "b".into(),
                op_index: 3,
                attempt: 1,
                ticket: "t".into(),
            }],
            ..v1::Register::default()
        });
        let held = &registration.running[0];
        assert_eq!(held.ticket, "t");
        let back = op_ref_of(held.op.clone());
        assert_eq!(
            (
                back.batch_id.as_str(),
                back.op_index,
                back.attempt,
                back.ticket.as_str()
            ),
            ("b", 3, 1, "")
        );
    }
}
