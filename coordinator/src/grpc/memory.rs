//! `volley.v1.MemoryService` over [`Coordinator`].

use tonic::{Request, Response, Status};
use volley_proto::BatchId;
use volley_proto::v1;
use volley_proto::v1::memory_service_server::MemoryService;

use crate::service::Coordinator;

pub(crate) struct MemoryAdapter {
    coordinator: Coordinator,
}

impl MemoryAdapter {
    pub(crate) fn new(coordinator: Coordinator) -> Self {
        MemoryAdapter { coordinator }
    }
}

#[tonic::async_trait]
impl MemoryService for MemoryAdapter {
    #[tracing::instrument(name = "memory.GetMemory", skip_all)]
    async fn get_memory(
        &self,
        request: Request<v1::GetMemoryRequest>,
    ) -> Result<Response<v1::GetMemoryResponse>, Status> {
        let request = request.into_inner();
        let batch = BatchId::new(request.batch_id);
        let value = self.coordinator.get_memory(&batch, &request.key).await?;
        Ok(Response::new(v1::GetMemoryResponse {
            found: value.is_some(),
            value: value.unwrap_or_default(),
        }))
    }

    #[tracing::instrument(name = "memory.PutMemory", skip_all)]
    async fn put_memory(
        &self,
        request: Request<v1::PutMemoryRequest>,
    ) -> Result<Response<v1::PutMemoryResponse>, Status> {
        let request = request.into_inner();
        let batch = BatchId::new(request.batch_id);
        let unblocked = self
            .coordinator
            .put_memory(&batch, &request.key, &request.value)
            .await?;
        Ok(Response::new(v1::PutMemoryResponse { unblocked }))
    }
}
