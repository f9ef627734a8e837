//! The tonic side of the worker: channels to the coordinator, the `Session` stream, and the memory client.

pub(crate) mod session;

use std::time::Duration;

use async_trait::async_trait;
use tonic::transport::{Channel, Endpoint};
use volley_proto::BatchId;
use volley_proto::v1::memory_service_client::MemoryServiceClient;
use volley_proto::v1::{GetMemoryRequest, PutMemoryRequest};

use crate::memory::{MemoryError, MemoryStore};

/// How long one connection attempt may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The coordinator's address could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid coordinator url {url}: {source}")]
    InvalidUrl {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("coordinator at {url} is unreachable: {source}")]
    Unreachable {
        url: String,
        source: tonic::transport::Error,
    },
}

pub(crate) fn endpoint(url: &str) -> Result<Endpoint, ConnectError> {
    let endpoint =
        Endpoint::from_shared(url.to_owned()).map_err(|source| ConnectError::InvalidUrl {
            url: url.to_owned(),
            source,
        })?;
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        // Notice a coordinator that vanished without closing the connection.
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true))
}

/// Connects to the coordinator at `url` (`http://127.0.0.1:7070`) now,
/// failing if it cannot be reached.
pub async fn connect_channel(url: &str) -> Result<Channel, ConnectError> {
    endpoint(url)?
        .connect()
        .await
        .map_err(|source| ConnectError::Unreachable {
            url: url.to_owned(),
            source,
        })
}

/// A channel that connects on first use and reconnects by itself after a
/// failure; calls on it fail (`UNAVAILABLE`) while the coordinator is down.
pub(crate) fn lazy_channel(url: &str) -> Result<Channel, ConnectError> {
    Ok(endpoint(url)?.connect_lazy())
}

/// The coordinator's `MemoryService` as a [`MemoryStore`].
#[derive(Clone, Debug)]
pub struct GrpcMemory {
    client: MemoryServiceClient<Channel>,
}

impl GrpcMemory {
    pub fn new(channel: Channel) -> Self {
        let client = MemoryServiceClient::new(channel)
            .max_decoding_message_size(volley_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(volley_proto::MAX_MESSAGE_BYTES);
        Self { client }
    }
}

fn memory_error(key: &str, status: &tonic::Status) -> MemoryError {
    let message = status.message().to_owned();
    match status.code() {
        tonic::Code::Unavailable
        | tonic::Code::DeadlineExceeded
        | tonic::Code::ResourceExhausted
        | tonic::Code::Aborted
        | tonic::Code::Cancelled
        | tonic::Code::Unknown
        | tonic::Code::Internal => MemoryError::Unavailable {
            key: key.to_owned(),
            message,
        },
        tonic::Code::Ok
        | tonic::Code::InvalidArgument
        | tonic::Code::NotFound
        | tonic::Code::AlreadyExists
        | tonic::Code::PermissionDenied
        | tonic::Code::FailedPrecondition
        | tonic::Code::OutOfRange
        | tonic::Code::Unimplemented
        | tonic::Code::DataLoss
        | tonic::Code::Unauthenticated => MemoryError::Refused {
            key: key.to_owned(),
            message,
        },
    }
}

#[async_trait]
impl MemoryStore for GrpcMemory {
    #[tracing::instrument(name = "volley.MemoryService/GetMemory", skip_all, fields(batch = %batch_id, key = %key))]
    async fn get(&self, batch_id: &BatchId, key: &str) -> Result<Option<Vec<u8>>, MemoryError> {
        let request = GetMemoryRequest {
            batch_id: batch_id.as_str().to_owned(),
            key: key.to_owned(),
        };
        let response = self
            .client
            .clone()
            .get_memory(request)
            .await
            .map_err(|status| memory_error(key, &status))?
            .into_inner();
        Ok(response.found.then_some(response.value))
    }

    #[tracing::instrument(name = "volley.MemoryService/PutMemory", skip_all, fields(batch = %batch_id, key = %key))]
    async fn put(&self, batch_id: &BatchId, key: &str, value: Vec<u8>) -> Result<(), MemoryError> {
        let request = PutMemoryRequest {
            batch_id: batch_id.as_str().to_owned(),
            key: key.to_owned(),
            value,
        };
        self.client
            .clone()
            .put_memory(request)
            .await
            .map_err(|status| memory_error(key, &status))?;
        Ok(())
    }
}
