//! The one gRPC client of `MemoryService`, shared by the SDK's [`Memory`](crate::Memory) and the worker's op memory.
//!
//! It owns what both must do alike: the message limits, the token of the
//! connection with an optional per-call one on top (an op's capability),
//! how a scope, a ttl and a writer are spelled on the wire, and which
//! response means "no such key". It answers with `tonic::Status`: each
//! caller maps that to its own error type (`ClientError` for the SDK,
//! `MemoryError` for handlers), and keeps its own policy (the SDK's waits
//! ride out a failover, an op's do not).

use std::time::Duration;

use tonic::Status;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use volley_proto::MAX_MESSAGE_BYTES;
use volley_proto::v1;
use volley_proto::v1::memory_service_client::MemoryServiceClient;

use crate::client::AuthedChannel;
use crate::connect::BearerToken;

/// Where memory calls go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// A batch's own memory (its id).
    Batch(String),
    /// A named namespace shared by batches and clients.
    Namespace(String),
}

impl Scope {
    /// `(batch_id, namespace)` as the requests carry them: exactly one set.
    pub(crate) fn fields(&self) -> (String, String) {
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
    /// The entry a get or wait answered, `None` when the key was not set.
    pub(crate) fn from_response(
        found: bool,
        value: Vec<u8>,
        content_type: String,
        version: u64,
    ) -> Option<MemoryEntry> {
        found.then_some(MemoryEntry {
            value,
            content_type,
            version,
        })
    }
}

/// How a write is made beyond its value.
#[derive(Clone, Debug, Default)]
pub struct PutOptions {
    pub content_type: String,
    /// The key expires this long after the write (rounded up to a
    /// millisecond: a ttl is never "forever"); `None`: never.
    pub ttl: Option<Duration>,
    /// Compare-and-set: write only at this version (0: only if absent).
    pub if_version: Option<u64>,
}

/// The op attempt a write comes from, so the coordinator can refuse the
/// writes of a stale attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Writer {
    pub op_id: String,
    pub attempt: u32,
}

/// `duration` in whole milliseconds, saturating.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// `MemoryService` over one channel. Cheap to clone.
#[derive(Clone, Debug)]
pub struct MemoryRpc {
    client: MemoryServiceClient<AuthedChannel>,
    /// Sent instead of the connection's token, when set: an op's capability.
    call_token: Option<MetadataValue<Ascii>>,
}

impl MemoryRpc {
    /// Calls on `channel` carrying `bearer` (the connection's token).
    pub fn new(channel: Channel, bearer: BearerToken) -> MemoryRpc {
        let client = MemoryServiceClient::with_interceptor(channel, bearer)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        MemoryRpc {
            client,
            call_token: None,
        }
    }

    /// The same client whose calls carry `header` (`Bearer <token>`, see
    /// [`crate::connect::bearer_value`]) instead of the connection's token.
    pub fn with_call_token(mut self, header: MetadataValue<Ascii>) -> MemoryRpc {
        self.call_token = Some(header);
        self
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(header) = &self.call_token {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        request
    }

    /// The key's entry, `None` when it is not set.
    pub async fn get(&self, scope: &Scope, key: &str) -> Result<Option<MemoryEntry>, Status> {
        let (batch_id, namespace) = scope.fields();
        let request = v1::GetMemoryRequest {
            batch_id,
            key: key.to_owned(),
            namespace,
        };
        let response = self
            .client
            .clone()
            .get_memory(self.request(request))
            .await?
            .into_inner();
        Ok(MemoryEntry::from_response(
            response.found,
            response.value,
            response.content_type,
            response.version,
        ))
    }

    /// Writes the key; the response holds its new version.
    pub async fn put(
        &self,
        scope: &Scope,
        key: &str,
        value: Vec<u8>,
        options: &PutOptions,
        writer: Option<&Writer>,
    ) -> Result<v1::PutMemoryResponse, Status> {
        let (batch_id, namespace) = scope.fields();
        let request = v1::PutMemoryRequest {
            batch_id,
            key: key.to_owned(),
            value,
            namespace,
            content_type: options.content_type.clone(),
            // A ttl under a millisecond still expires, it does not mean "never".
            ttl_ms: options.ttl.map_or(0, |ttl| millis(ttl).max(1)),
            if_version: options.if_version,
            writer_op: writer.map_or_else(String::new, |writer| writer.op_id.clone()),
            writer_attempt: writer.map_or(0, |writer| writer.attempt),
        };
        Ok(self
            .client
            .clone()
            .put_memory(self.request(request))
            .await?
            .into_inner())
    }

    /// Deletes the key (only at `if_version`, when given); whether it existed.
    pub async fn delete(
        &self,
        scope: &Scope,
        key: &str,
        if_version: Option<u64>,
    ) -> Result<bool, Status> {
        let (batch_id, namespace) = scope.fields();
        let request = v1::DeleteMemoryRequest {
            batch_id,
            key: key.to_owned(),
            namespace,
            if_version,
        };
        Ok(self
            .client
            .clone()
            .delete_memory(self.request(request))
            .await?
            .into_inner()
            .deleted)
    }

    /// Adds `delta` to the integer under the key (0 if unset); the sum.
    pub async fn incr(&self, scope: &Scope, key: &str, delta: i64) -> Result<i64, Status> {
        let (batch_id, namespace) = scope.fields();
        let request = v1::IncrMemoryRequest {
            batch_id,
            key: key.to_owned(),
            namespace,
            delta,
        };
        Ok(self
            .client
            .clone()
            .incr_memory(self.request(request))
            .await?
            .into_inner()
            .value)
    }

    /// One page of keys under `prefix`.
    pub async fn list(
        &self,
        scope: &Scope,
        prefix: &str,
        page_token: &str,
        limit: u32,
    ) -> Result<v1::ListMemoryResponse, Status> {
        let (batch_id, namespace) = scope.fields();
        let request = v1::ListMemoryRequest {
            batch_id,
            namespace,
            prefix: prefix.to_owned(),
            page_token: page_token.to_owned(),
            limit,
        };
        Ok(self
            .client
            .clone()
            .list_memory(self.request(request))
            .await?
            .into_inner())
    }

    /// One `WaitMemory` call: the key's entry once it exists. `timeout`
    /// `None` waits as long as it takes; a zero one becomes the shortest
    /// real one (0 means "forever" on the wire). The coordinator answers
    /// `DEADLINE_EXCEEDED` when the key did not appear in time; `None` is
    /// an answer without the key.
    pub async fn wait(
        &self,
        scope: &Scope,
        key: &str,
        timeout: Option<Duration>,
    ) -> Result<Option<MemoryEntry>, Status> {
        let (batch_id, namespace) = scope.fields();
        let request = v1::WaitMemoryRequest {
            batch_id,
            key: key.to_owned(),
            namespace,
            timeout_ms: timeout.map_or(0, |limit| millis(limit).max(1)),
        };
        let response = self
            .client
            .clone()
            .wait_memory(self.request(request))
            .await?
            .into_inner();
        Ok(MemoryEntry::from_response(
            response.found,
            response.value,
            response.content_type,
            response.version,
        ))
    }

    /// One `WatchMemory` stream, with its response headers (store epoch,
    /// start revision, count of existing keys).
    pub async fn watch(
        &self,
        request: v1::WatchMemoryRequest,
    ) -> Result<tonic::Response<tonic::Streaming<v1::MemoryChange>>, Status> {
        self.client
            .clone()
            .watch_memory(self.request(request))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_sets_exactly_one_field() {
        assert_eq!(
            Scope::Batch("b1".to_owned()).fields(),
            ("b1".to_owned(), String::new())
        );
        assert_eq!(
            Scope::Namespace("swarm".to_owned()).fields(),
            (String::new(), "swarm".to_owned())
        );
    }
}
