//! `volley.v1.BatchService` over [`Coordinator`].

use std::pin::Pin;

use futures::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use volley_proto::BatchId;
use volley_proto::v1::batch_service_server::BatchService;
use volley_proto::v1::{self, submit_batch_chunk::Part};

use super::auth::principal;
use crate::domain::{BatchEvent, BatchReport, BatchSummary, OpReport, SubmitOutcome};
use crate::service::Coordinator;
use crate::tracing_ctx;

pub(crate) struct BatchAdapter {
    coordinator: Coordinator,
}

impl BatchAdapter {
    pub(crate) fn new(coordinator: Coordinator) -> Self {
        BatchAdapter { coordinator }
    }
}

/// A request's `batch_id`, refused when empty (every batch RPC's check).
pub(super) fn batch_id(value: String) -> Result<BatchId, Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument("batch_id is empty"));
    }
    Ok(BatchId::new(value))
}

impl BatchAdapter {
    /// SubmitBatch's work, inside its span.
    async fn submit_batch_in_span(
        &self,
        request: Request<Streaming<v1::SubmitBatchChunk>>,
    ) -> Result<Response<v1::SubmitBatchResponse>, Status> {
        let principal = principal(&request)?;
        let mut chunks = request.into_inner();
        let mut batch: Option<v1::Batch> = None;
        let mut received_bytes = 0;
        let mut idempotency_key = String::new();
        while let Some(chunk) = chunks.message().await? {
            match (chunk.part, batch.as_mut()) {
                (Some(Part::Header(header)), None) => {
                    batch = Some(header);
                    idempotency_key = chunk.idempotency_key;
                }
                (Some(Part::Header(_)), Some(_)) => {
                    return Err(Status::invalid_argument("a second header chunk"));
                }
                (Some(Part::Ops(ops)), Some(batch)) => {
                    // Checked as the chunks arrive: a batch past the limits
                    // is refused before it is held whole.
                    received_bytes = self.coordinator.check_arriving_ops(
                        batch.ops.len(),
                        received_bytes,
                        &ops.ops,
                    )?;
                    batch.ops.extend(ops.ops);
                }
                (Some(Part::Ops(_)), None) => {
                    return Err(Status::invalid_argument("ops before the header chunk"));
                }
                (None, _) => return Err(Status::invalid_argument("an empty chunk")),
            }
        }
        let mut batch = batch.ok_or_else(|| Status::invalid_argument("no header chunk"))?;
        // Stored with the batch: whichever coordinator dispatches its ops
        // parents their spans on this one. Empty when it is not traced.
        batch.trace_context = tracing_ctx::carrier_of(&tracing::Span::current());
        let outcome = self
            .coordinator
            .submit(batch, &idempotency_key, &principal)
            .await?;
        Ok(Response::new(submit_response(outcome)))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::BatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl BatchService for BatchAdapter {
    async fn submit_batch(
        &self,
        request: Request<Streaming<v1::SubmitBatchChunk>>,
    ) -> Result<Response<v1::SubmitBatchResponse>, Status> {
        // The span continues the caller's trace (W3C `traceparent` in the
        // metadata); it must get its parent before it is first entered.
        let span = tracing::info_span!("batch.SubmitBatch", otel.kind = "server");
        if let Some(parent) = super::trace::remote_parent(request.metadata()) {
            let _ = span.set_parent(parent);
        }
        self.submit_batch_in_span(request).instrument(span).await
    }

    type WatchBatchStream = EventStream;

    #[tracing::instrument(name = "batch.WatchBatch", skip_all)]
    async fn watch_batch(
        &self,
        request: Request<v1::WatchBatchRequest>,
    ) -> Result<Response<Self::WatchBatchStream>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let batch = batch_id(request.batch_id)?;
        let events = self
            .coordinator
            .watch(batch, request.after_seq, &principal)
            .await?;
        let stream =
            ReceiverStream::new(events).map(|event| event.map(batch_event).map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(name = "batch.GetBatch", skip_all)]
    async fn get_batch(
        &self,
        request: Request<v1::GetBatchRequest>,
    ) -> Result<Response<v1::BatchStatus>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let batch = batch_id(request.batch_id)?;
        if !request.op_id.is_empty() {
            return Ok(Response::new(batch_status(
                self.coordinator
                    .op_status(&batch, &request.op_id, &principal)
                    .await?,
            )));
        }
        let ops = if request.omit_ops {
            None
        } else if request.ops_limit == 0 {
            Some(request.ops_offset..u32::MAX)
        } else {
            Some(request.ops_offset..request.ops_offset.saturating_add(request.ops_limit))
        };
        Ok(Response::new(batch_status(
            self.coordinator
                .status_page(&batch, ops, &principal)
                .await?,
        )))
    }

    #[tracing::instrument(name = "batch.CancelBatch", skip_all)]
    async fn cancel_batch(
        &self,
        request: Request<v1::CancelBatchRequest>,
    ) -> Result<Response<v1::CancelBatchResponse>, Status> {
        let principal = principal(&request)?;
        let batch = batch_id(request.into_inner().batch_id)?;
        let outcome = self.coordinator.cancel(&batch, &principal).await?;
        Ok(Response::new(v1::CancelBatchResponse {
            state: outcome
                .state
                .map(|state| v1::BatchState::from(state) as i32)
                .unwrap_or_default(),
            cancelled: outcome.cancelled,
        }))
    }

    #[tracing::instrument(name = "batch.SpawnOps", skip_all)]
    async fn spawn_ops(
        &self,
        request: Request<v1::SpawnOpsRequest>,
    ) -> Result<Response<v1::SpawnOpsResponse>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let batch = batch_id(request.batch_id)?;
        let outcome = self
            .coordinator
            .spawn_ops(
                &batch,
                request.ops,
                &request.spawned_by,
                &request.idempotency_key,
                &principal,
            )
            .await?;
        Ok(Response::new(v1::SpawnOpsResponse {
            op_count: outcome.op_count,
            warnings: outcome.warnings,
        }))
    }

    #[tracing::instrument(name = "batch.Why", skip_all)]
    async fn why(
        &self,
        request: Request<v1::WhyRequest>,
    ) -> Result<Response<v1::WhyResponse>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let batch = batch_id(request.batch_id)?;
        let why = self
            .coordinator
            .why(&batch, &request.op_id, &principal)
            .await?;
        Ok(Response::new(v1::WhyResponse {
            op_id: why.op_id,
            state: v1::OpState::from(why.state) as i32,
            reasons: why.reasons,
        }))
    }

    #[tracing::instrument(name = "batch.ListBatches", skip_all)]
    async fn list_batches(
        &self,
        request: Request<v1::ListBatchesRequest>,
    ) -> Result<Response<v1::ListBatchesResponse>, Status> {
        let principal = principal(&request)?;
        let batches = self
            .coordinator
            .list(request.into_inner().limit, &principal)
            .await?;
        Ok(Response::new(v1::ListBatchesResponse {
            batches: batches.into_iter().map(batch_summary).collect(),
        }))
    }
}

fn submit_response(outcome: SubmitOutcome) -> v1::SubmitBatchResponse {
    v1::SubmitBatchResponse {
        batch_id: outcome.batch.into_string(),
        op_count: outcome.op_count,
        warnings: outcome.warnings,
    }
}

fn batch_summary(summary: BatchSummary) -> v1::BatchSummary {
    v1::BatchSummary {
        batch_id: summary.batch.into_string(),
        name: summary.name,
        state: v1::BatchState::from(summary.state) as i32,
        created_at_ms: summary.created_ms,
        total: summary.total,
        done: summary.done,
        tenant: summary.tenant,
        finished_at_ms: summary.finished_ms.unwrap_or(0),
    }
}

fn batch_status(report: BatchReport) -> v1::BatchStatus {
    v1::BatchStatus {
        batch_id: report.batch.to_string(),
        name: report.name,
        state: v1::BatchState::from(report.state) as i32,
        created_at_ms: report.created_ms,
        wall_ms: report.wall_ms,
        sequential_ms: report.sequential_ms,
        speedup: report.speedup,
        total: report.total,
        succeeded: report.succeeded,
        failed: report.failed,
        skipped: report.skipped,
        cancelled: report.cancelled,
        running: report.running,
        ops: report.ops.into_iter().map(op_status).collect(),
        critical_path: report.critical_path,
        critical_path_ms: report.critical_path_ms,
        error: report.error,
        owner: report.owner,
    }
}

fn op_status(op: OpReport) -> v1::OpStatus {
    v1::OpStatus {
        id: op.id,
        kind: op.kind,
        state: v1::OpState::from(op.state) as i32,
        attempts: op.attempts,
        worker: op.worker,
        started_ms: op.started_ms,
        duration_ms: op.duration_ms,
        output: op.output,
        error: op.error,
        details_json: op.details_json,
        after: op.after,
        group: op.group.unwrap_or_default(),
    }
}

fn batch_event(event: BatchEvent) -> v1::BatchEvent {
    v1::BatchEvent {
        seq: event.seq,
        at_ms: event.at_ms,
        kind: v1::EventKind::from(event.kind) as i32,
        op_id: event.op_id.unwrap_or_default(),
        attempt: event.attempt,
        worker: event.worker,
        message: event.message,
        batch_state: event
            .batch_state
            .map(|state| v1::BatchState::from(state) as i32)
            .unwrap_or_default(),
    }
}
