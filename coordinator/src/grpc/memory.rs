//! `volley.v1.MemoryService` over [`Coordinator`].

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use volley_proto::v1;
use volley_proto::v1::memory_service_server::MemoryService;
use volley_proto::{BatchId, STORE_EPOCH_HEADER, WATCH_AFTER_HEADER, WATCH_EXISTING_HEADER};
use volley_store::{MemoryValue, PutOptions};

use super::auth::principal;
use crate::memory::Writer;
use crate::service::Coordinator;

pub(crate) struct MemoryAdapter {
    coordinator: Coordinator,
}

impl MemoryAdapter {
    pub(crate) fn new(coordinator: Coordinator) -> Self {
        MemoryAdapter { coordinator }
    }
}

fn found(value: Option<MemoryValue>) -> v1::GetMemoryResponse {
    match value {
        Some(value) => v1::GetMemoryResponse {
            found: true,
            value: value.value,
            content_type: value.content_type,
            version: value.version,
        },
        None => v1::GetMemoryResponse::default(),
    }
}

type ChangeStream = Pin<Box<dyn Stream<Item = Result<v1::MemoryChange, Status>> + Send>>;

#[tonic::async_trait]
impl MemoryService for MemoryAdapter {
    #[tracing::instrument(name = "memory.GetMemory", skip_all)]
    async fn get_memory(
        &self,
        request: Request<v1::GetMemoryRequest>,
    ) -> Result<Response<v1::GetMemoryResponse>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let scope = self
            .coordinator
            .memory_scope(&request.batch_id, &request.namespace, &principal)
            .await?;
        let value = self.coordinator.memory_get(&scope, &request.key).await?;
        Ok(Response::new(found(value)))
    }

    #[tracing::instrument(name = "memory.PutMemory", skip_all)]
    async fn put_memory(
        &self,
        request: Request<v1::PutMemoryRequest>,
    ) -> Result<Response<v1::PutMemoryResponse>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let scope = self
            .coordinator
            .memory_scope(&request.batch_id, &request.namespace, &principal)
            .await?;
        let options = PutOptions {
            content_type: request.content_type,
            ttl_ms: (request.ttl_ms > 0).then_some(request.ttl_ms),
            if_version: request.if_version,
        };
        let writer = Writer {
            batch: (!request.batch_id.is_empty()).then(|| BatchId::new(request.batch_id)),
            op_id: request.writer_op,
            attempt: request.writer_attempt,
        };
        let outcome = self
            .coordinator
            .memory_put(
                &scope,
                &request.key,
                &request.value,
                &options,
                &writer,
                &principal,
            )
            .await?;
        Ok(Response::new(v1::PutMemoryResponse {
            unblocked: outcome.unblocked,
            version: outcome.version,
        }))
    }

    #[tracing::instrument(name = "memory.DeleteMemory", skip_all)]
    async fn delete_memory(
        &self,
        request: Request<v1::DeleteMemoryRequest>,
    ) -> Result<Response<v1::DeleteMemoryResponse>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let scope = self
            .coordinator
            .memory_scope(&request.batch_id, &request.namespace, &principal)
            .await?;
        let deleted = self
            .coordinator
            .memory_delete(&scope, &request.key, request.if_version)
            .await?;
        Ok(Response::new(v1::DeleteMemoryResponse { deleted }))
    }

    #[tracing::instrument(name = "memory.ListMemory", skip_all)]
    async fn list_memory(
        &self,
        request: Request<v1::ListMemoryRequest>,
    ) -> Result<Response<v1::ListMemoryResponse>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let scope = self
            .coordinator
            .memory_scope(&request.batch_id, &request.namespace, &principal)
            .await?;
        let (keys, next_page_token) = self
            .coordinator
            .memory_list(&scope, &request.prefix, &request.page_token, request.limit)
            .await?;
        let keys = keys
            .into_iter()
            .map(|info| v1::MemoryKeyInfo {
                key: info.key,
                version: info.version,
                size: info.size,
                content_type: info.content_type,
                expires_at_ms: info.expires_at_ms,
            })
            .collect();
        Ok(Response::new(v1::ListMemoryResponse {
            keys,
            next_page_token,
        }))
    }

    #[tracing::instrument(name = "memory.IncrMemory", skip_all)]
    async fn incr_memory(
        &self,
        request: Request<v1::IncrMemoryRequest>,
    ) -> Result<Response<v1::IncrMemoryResponse>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let scope = self
            .coordinator
            .memory_scope(&request.batch_id, &request.namespace, &principal)
            .await?;
        let (value, outcome) = self
            .coordinator
            .memory_incr(&scope, &request.key, request.delta)
            .await?;
        Ok(Response::new(v1::IncrMemoryResponse {
            value,
            version: outcome.version,
            unblocked: outcome.unblocked,
        }))
    }

    type WatchMemoryStream = ChangeStream;

    #[tracing::instrument(name = "memory.WatchMemory", skip_all)]
    async fn watch_memory(
        &self,
        request: Request<v1::WatchMemoryRequest>,
    ) -> Result<Response<Self::WatchMemoryStream>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let scope = self
            .coordinator
            .memory_scope(&request.batch_id, &request.namespace, &principal)
            .await?;
        let watch = self
            .coordinator
            .memory_watch(
                scope,
                request.prefix,
                request.after_revision,
                request.include_existing,
                &request.store_epoch,
            )
            .await?;
        let stream = ReceiverStream::new(watch.changes).map(|change| change.map_err(Status::from));
        let mut response = Response::new(Box::pin(stream) as Self::WatchMemoryStream);
        // The epoch the revisions belong to: the client sends it back when
        // it resumes, so a store that restarted empty in between is a reset.
        let metadata = response.metadata_mut();
        if let Ok(epoch) = MetadataValue::try_from(watch.epoch.as_str()) {
            metadata.insert(STORE_EPOCH_HEADER, epoch);
        }
        metadata.insert(WATCH_AFTER_HEADER, MetadataValue::from(watch.after));
        metadata.insert(WATCH_EXISTING_HEADER, MetadataValue::from(watch.existing));
        Ok(response)
    }

    #[tracing::instrument(name = "memory.WaitMemory", skip_all)]
    async fn wait_memory(
        &self,
        request: Request<v1::WaitMemoryRequest>,
    ) -> Result<Response<v1::GetMemoryResponse>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let scope = self
            .coordinator
            .memory_scope(&request.batch_id, &request.namespace, &principal)
            .await?;
        let timeout = (request.timeout_ms > 0).then(|| Duration::from_millis(request.timeout_ms));
        let value = self
            .coordinator
            .memory_wait(&scope, &request.key, timeout)
            .await?;
        Ok(Response::new(found(Some(value))))
    }
}
