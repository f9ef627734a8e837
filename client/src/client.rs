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

    /// Why an op is not running (or how it ended).
    pub async fn why(&self, batch_id: &str, op_id: &str) -> Result<v1::WhyResponse, ClientError> {
        let request = v1::WhyRequest {
            batch_id: batch_id.to_owned(),
            op_id: op_id.to_owned(),
        };
        Ok(self.batches.clone().why(request).await?.into_inner())
    }

    /// A handle on a memory scope: a batch's own memory or a shared namespace.
    pub fn memory(&self, scope: Scope) -> Memory {
        Memory {
            client: self.memory.clone(),
            scope,
            writer: None,
        }
    }

    /// Adds ops to a running batch; validated with the batch like a submission.
    pub async fn spawn_ops(
        &self,
        batch_id: &str,
        ops: Vec<v1::Op>,
        spawned_by: &str,
    ) -> Result<v1::SpawnOpsResponse, ClientError> {
        let request = v1::SpawnOpsRequest {
            batch_id: batch_id.to_owned(),
            ops,
            spawned_by: spawned_by.to_owned(),
        };
        Ok(self.batches.clone().spawn_ops(request).await?.into_inner())
    }
}

/// Where memory calls go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// A batch's own memory (its id).
    Batch(String),
    /// A named namespace shared by batches and clients.
    Namespace(String),
}

impl Scope {
    /// `(batch_id, namespace)` as the requests carry them.
    fn fields(&self) -> (String, String) {
        match self {
            Scope::Batch(batch) => (batch.clone(), String::new()),
            Scope::Namespace(namespace) => (String::new(), namespace.clone()),
        }
    }
}

/// A value read from memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryEntry {
    pub value: Vec<u8>,
    pub content_type: String,
    pub version: u64,
}

impl MemoryEntry {
    fn from_response(response: v1::GetMemoryResponse) -> Option<MemoryEntry> {
        response.found.then_some(MemoryEntry {
            value: response.value,
            content_type: response.content_type,
            version: response.version,
        })
    }
}

#[derive(Clone, Debug, Default)]
pub struct PutOptions {
    pub content_type: String,
    pub ttl: Option<Duration>,
    /// Compare-and-set: write only at this version (0: only if absent).
    pub if_version: Option<u64>,
}

/// Memory calls on one scope. Cheap to clone.
#[derive(Clone)]
pub struct Memory {
    client: MemoryServiceClient<Channel>,
    scope: Scope,
    /// `(op id, attempt)` of the op writing, so a stale attempt's writes
    /// are refused.
    writer: Option<(String, u32)>,
}

impl Memory {
    /// Tags writes as coming from this attempt of an op.
    pub fn with_writer(mut self, op_id: &str, attempt: u32) -> Memory {
        self.writer = Some((op_id.to_owned(), attempt));
        self
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    pub async fn get(&self, key: &str) -> Result<Option<MemoryEntry>, ClientError> {
        let (batch_id, namespace) = self.scope.fields();
        let request = v1::GetMemoryRequest {
            batch_id,
            key: key.to_owned(),
            namespace,
        };
        let response = self.client.clone().get_memory(request).await?.into_inner();
        Ok(MemoryEntry::from_response(response))
    }

    /// Writes a key; returns the response (new version, ops unblocked).
    pub async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
    ) -> Result<v1::PutMemoryResponse, ClientError> {
        self.put_with(key, value, &PutOptions::default()).await
    }

    pub async fn put_with(
        &self,
        key: &str,
        value: Vec<u8>,
        options: &PutOptions,
    ) -> Result<v1::PutMemoryResponse, ClientError> {
        let (batch_id, namespace) = self.scope.fields();
        let (writer_op, writer_attempt) = self.writer.clone().unwrap_or_default();
        let request = v1::PutMemoryRequest {
            batch_id,
            key: key.to_owned(),
            value,
            namespace,
            content_type: options.content_type.clone(),
            ttl_ms: options.ttl.map_or(0, |ttl| ttl.as_millis() as u64),
            if_version: options.if_version,
            writer_op,
            writer_attempt,
        };
        Ok(self.client.clone().put_memory(request).await?.into_inner())
    }

    /// Deletes a key (only at `if_version`, when given); whether it existed.
    pub async fn delete(&self, key: &str, if_version: Option<u64>) -> Result<bool, ClientError> {
        let (batch_id, namespace) = self.scope.fields();
        let request = v1::DeleteMemoryRequest {
            batch_id,
            key: key.to_owned(),
            namespace,
            if_version,
        };
        Ok(self
            .client
            .clone()
            .delete_memory(request)
            .await?
            .into_inner()
            .deleted)
    }

    /// One page of keys under `prefix`; pass the returned token for the next.
    pub async fn list(
        &self,
        prefix: &str,
        page_token: &str,
        limit: u32,
    ) -> Result<v1::ListMemoryResponse, ClientError> {
        let (batch_id, namespace) = self.scope.fields();
        let request = v1::ListMemoryRequest {
            batch_id,
            namespace,
            prefix: prefix.to_owned(),
            page_token: page_token.to_owned(),
            limit,
        };
        Ok(self.client.clone().list_memory(request).await?.into_inner())
    }

    pub async fn incr(&self, key: &str, delta: i64) -> Result<i64, ClientError> {
        let (batch_id, namespace) = self.scope.fields();
        let request = v1::IncrMemoryRequest {
            batch_id,
            key: key.to_owned(),
            namespace,
            delta,
        };
        Ok(self
            .client
            .clone()
            .incr_memory(request)
            .await?
            .into_inner()
            .value)
    }

    /// Changes under `prefix` after `after_revision` (0: from now on, with
    /// every existing key first when `include_existing`).
    pub async fn watch(
        &self,
        prefix: &str,
        after_revision: u64,
        include_existing: bool,
    ) -> Result<impl Stream<Item = Result<v1::MemoryChange, ClientError>> + use<>, ClientError>
    {
        let (batch_id, namespace) = self.scope.fields();
        let request = v1::WatchMemoryRequest {
            batch_id,
            namespace,
            prefix: prefix.to_owned(),
            after_revision,
            include_existing,
        };
        let stream = self
            .client
            .clone()
            .watch_memory(request)
            .await?
            .into_inner();
        Ok(stream.map(|change| change.map_err(ClientError::from)))
    }

    /// The key's value once it exists; `None` for no timeout.
    pub async fn wait(
        &self,
        key: &str,
        timeout: Option<Duration>,
    ) -> Result<MemoryEntry, ClientError> {
        let (batch_id, namespace) = self.scope.fields();
        let request = v1::WaitMemoryRequest {
            batch_id,
            key: key.to_owned(),
            namespace,
            timeout_ms: timeout.map_or(0, |timeout| timeout.as_millis() as u64),
        };
        let response = self.client.clone().wait_memory(request).await?.into_inner();
        MemoryEntry::from_response(response)
            .ok_or_else(|| ClientError::NotFound(format!("memory key {key}")))
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
