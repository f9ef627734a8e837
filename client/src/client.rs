//! `Client`: one connection to a coordinator, cheap to clone.

use std::time::Duration;

use futures::Stream;
use prost::Message;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};
use volley_proto::MAX_MESSAGE_BYTES;
use volley_proto::v1::batch_service_client::BatchServiceClient;
use volley_proto::v1::memory_service_client::MemoryServiceClient;
use volley_proto::v1::worker_service_client::WorkerServiceClient;
use volley_proto::v1::{self, submit_batch_chunk::Part};

use crate::error::ClientError;

/// Ops go to the coordinator in chunks of about this many encoded bytes,
/// far below gRPC's 4 MiB default message limit.
const CHUNK_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
pub struct Client {
    url: String,
    batches: BatchServiceClient<Channel>,
    memory: MemoryServiceClient<Channel>,
    workers: WorkerServiceClient<Channel>,
}

impl Client {
    /// Connects to a coordinator, e.g. `http://127.0.0.1:7070`.
    pub async fn connect(url: &str) -> Result<Client, ClientError> {
        let url = if url.contains("://") {
            url.to_owned()
        } else {
            format!("http://{url}")
        };
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|error| ClientError::unreachable(&url, error))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|error| ClientError::unreachable(&url, source_chain(&error)))?;
        Ok(Client::from_channel(url, channel))
    }

    pub fn from_channel(url: String, channel: Channel) -> Client {
        Client {
            url,
            batches: BatchServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            memory: MemoryServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            workers: WorkerServiceClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Submits a batch, streamed as a header and chunks of ops.
    #[tracing::instrument(skip_all, fields(name = %batch.name, ops = batch.ops.len()))]
    pub async fn submit(
        &self,
        mut batch: v1::Batch,
    ) -> Result<v1::SubmitBatchResponse, ClientError> {
        let ops = std::mem::take(&mut batch.ops);
        let mut chunks = vec![v1::SubmitBatchChunk {
            part: Some(Part::Header(batch)),
        }];
        let mut current = Vec::new();
        let mut current_bytes = 0;
        for op in ops {
            current_bytes += op.encoded_len();
            current.push(op);
            if current_bytes >= CHUNK_BYTES {
                chunks.push(ops_chunk(std::mem::take(&mut current)));
                current_bytes = 0;
            }
        }
        if !current.is_empty() {
            chunks.push(ops_chunk(current));
        }
        let response = self
            .batches
            .clone()
            .submit_batch(tokio_stream::iter(chunks))
            .await?;
        Ok(response.into_inner())
    }

    /// The batch's events after `after_seq`, until it finishes.
    pub async fn watch(
        &self,
        batch_id: &str,
        after_seq: u64,
    ) -> Result<impl Stream<Item = Result<v1::BatchEvent, ClientError>> + use<>, ClientError> {
        let request = v1::WatchBatchRequest {
            batch_id: batch_id.to_owned(),
            after_seq,
        };
        let stream = self
            .batches
            .clone()
            .watch_batch(request)
            .await?
            .into_inner();
        Ok(stream.map(|event| event.map_err(ClientError::from)))
    }

    pub async fn status(&self, batch_id: &str) -> Result<v1::BatchStatus, ClientError> {
        let request = v1::GetBatchRequest {
            batch_id: batch_id.to_owned(),
            omit_ops: false,
        };
        Ok(self.batches.clone().get_batch(request).await?.into_inner())
    }

    /// Counts and timings only, without the per-op list.
    pub async fn summary(&self, batch_id: &str) -> Result<v1::BatchStatus, ClientError> {
        let request = v1::GetBatchRequest {
            batch_id: batch_id.to_owned(),
            omit_ops: true,
        };
        Ok(self.batches.clone().get_batch(request).await?.into_inner())
    }

    pub async fn cancel(&self, batch_id: &str) -> Result<v1::CancelBatchResponse, ClientError> {
        let request = v1::CancelBatchRequest {
            batch_id: batch_id.to_owned(),
        };
        Ok(self
            .batches
            .clone()
            .cancel_batch(request)
            .await?
            .into_inner())
    }

    pub async fn list(&self, limit: u32) -> Result<Vec<v1::BatchSummary>, ClientError> {
        let request = v1::ListBatchesRequest { limit };
        Ok(self
            .batches
            .clone()
            .list_batches(request)
            .await?
            .into_inner()
            .batches)
    }

    pub async fn workers(&self) -> Result<Vec<v1::WorkerInfo>, ClientError> {
        let request = v1::ListWorkersRequest {};
        Ok(self
            .workers
            .clone()
            .list_workers(request)
            .await?
            .into_inner()
            .workers)
    }

    /// Waits until at least `count` workers are connected, or `timeout`.
    pub async fn wait_for_workers(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Result<usize, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let connected = self.workers().await?.len();
            if connected >= count || tokio::time::Instant::now() >= deadline {
                return Ok(connected);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn get_memory(
        &self,
        batch_id: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, ClientError> {
        let request = v1::GetMemoryRequest {
            batch_id: batch_id.to_owned(),
            key: key.to_owned(),
        };
        let response = self.memory.clone().get_memory(request).await?.into_inner();
        Ok(response.found.then_some(response.value))
    }

    /// Writes a key of the batch's memory; returns how many ops it unblocked.
    pub async fn put_memory(
        &self,
        batch_id: &str,
        key: &str,
        value: Vec<u8>,
    ) -> Result<u32, ClientError> {
        let request = v1::PutMemoryRequest {
            batch_id: batch_id.to_owned(),
            key: key.to_owned(),
            value,
        };
        Ok(self
            .memory
            .clone()
            .put_memory(request)
            .await?
            .into_inner()
            .unblocked)
    }
}

fn ops_chunk(ops: Vec<v1::Op>) -> v1::SubmitBatchChunk {
    v1::SubmitBatchChunk {
        part: Some(Part::Ops(v1::OpChunk { ops })),
    }
}

/// A transport error's whole chain: its top line alone says only
/// "transport error".
fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
