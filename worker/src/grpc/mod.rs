//! The tonic side of the worker: channels to the coordinator, the `Session` stream, and the memory client.

pub(crate) mod session;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use prost::Message;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use volley_proto::BatchId;
use volley_proto::v1::batch_service_client::BatchServiceClient;
use volley_proto::v1::memory_service_client::MemoryServiceClient;
use volley_proto::v1::{
    DeleteMemoryRequest, GetMemoryRequest, IncrMemoryRequest, Op, PutMemoryRequest,
    SpawnOpsRequest, ValidationFailure, WaitMemoryRequest,
};
use volley_tls::ClientTlsFiles;

use crate::memory::{MemoryEntry, MemoryError, MemoryScope, MemoryStore, MemoryWriter, PutOptions};
use crate::spawn::{OpSpawner, SpawnError, SpawnOutcome};

/// How long one connection attempt may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an idle connection is pinged, to notice a coordinator that
/// vanished without closing the connection.
pub(crate) const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// How long a ping may go unanswered before the connection counts as dead.
pub(crate) const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The coordinator's address could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("coordinator at {url} is unreachable: {source}")]
    Unreachable {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("coordinator url {url}: {source}")]
    Tls {
        url: String,
        source: Box<volley_tls::TlsError>,
    },
    /// The worker's token cannot be sent as a header.
    #[error("the worker's token holds characters a header cannot carry")]
    BadToken,
}

tokio::task_local! {
    /// The capability token of the op whose handler runs on this task: the
    /// memory and spawn calls it makes carry it, so the coordinator scopes
    /// them to that op's batch and attempt. Set by the executor.
    pub(crate) static OP_TOKEN: Arc<str>;
}

/// `message` as a request carrying the current op's token, if any.
fn op_request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(Some(header)) = OP_TOKEN.try_with(|token| bearer_value(token).ok()) {
        request.metadata_mut().insert("authorization", header);
    }
    request
}

fn bearer_value(token: &str) -> Result<MetadataValue<Ascii>, ConnectError> {
    if token.is_empty() {
        return Err(ConnectError::BadToken);
    }
    format!("Bearer {token}")
        .parse()
        .map_err(|_| ConnectError::BadToken)
}

/// Adds the worker's own token to its session calls.
#[derive(Clone, Debug, Default)]
pub(crate) struct WorkerToken {
    header: Option<MetadataValue<Ascii>>,
}

impl WorkerToken {
    pub(crate) fn new(token: Option<&str>) -> Result<WorkerToken, ConnectError> {
        Ok(WorkerToken {
            header: token.map(bearer_value).transpose()?,
        })
    }
}

impl Interceptor for WorkerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

pub(crate) fn endpoint(url: &str, tls: &ClientTlsFiles) -> Result<Endpoint, ConnectError> {
    let endpoint = volley_tls::client_endpoint(url, tls).map_err(|source| ConnectError::Tls {
        url: url.to_owned(),
        source: Box::new(source),
    })?;
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        // Notice a coordinator that vanished without closing the connection.
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}

/// Connects to the coordinator at `url` (`http://127.0.0.1:7070`) now,
/// failing if it cannot be reached.
pub async fn connect_channel(url: &str) -> Result<Channel, ConnectError> {
    endpoint(url, &ClientTlsFiles::default())?
        .connect()
        .await
        .map_err(|source| ConnectError::Unreachable {
            url: url.to_owned(),
            source,
        })
}

/// A channel that connects on first use and reconnects by itself after a
/// failure; calls on it fail (`UNAVAILABLE`) while the coordinator is down.
pub(crate) fn lazy_channel(url: &str, tls: &ClientTlsFiles) -> Result<Channel, ConnectError> {
    Ok(endpoint(url, tls)?.connect_lazy())
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

/// A scope as the proto spells it: `(batch_id, namespace)`, exactly one set.
fn scope_fields(scope: &MemoryScope) -> (String, String) {
    match scope {
        MemoryScope::Batch(batch_id) => (batch_id.as_str().to_owned(), String::new()),
        MemoryScope::Namespace(namespace) => (String::new(), namespace.clone()),
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Whether the call carried a compare-and-set condition: the coordinator
/// answers FAILED_PRECONDITION both to a failed condition and to other
/// refusals (a stale writer, `incr` of a non-integer), so only a conditional
/// call's FAILED_PRECONDITION is a version mismatch.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Condition {
    None,
    IfVersion,
}

fn memory_error(key: &str, condition: Condition, status: &tonic::Status) -> MemoryError {
    let key = key.to_owned();
    let message = status.message().to_owned();
    match status.code() {
        tonic::Code::Unavailable
        | tonic::Code::DeadlineExceeded
        | tonic::Code::ResourceExhausted
        | tonic::Code::Aborted
        | tonic::Code::Cancelled
        | tonic::Code::Unknown
        | tonic::Code::Internal => MemoryError::Unavailable { key, message },
        tonic::Code::FailedPrecondition if condition == Condition::IfVersion => {
            MemoryError::VersionMismatch { key, message }
        }
        tonic::Code::Ok
        | tonic::Code::FailedPrecondition
        | tonic::Code::InvalidArgument
        | tonic::Code::NotFound
        | tonic::Code::AlreadyExists
        | tonic::Code::PermissionDenied
        | tonic::Code::OutOfRange
        | tonic::Code::Unimplemented
        | tonic::Code::DataLoss
        | tonic::Code::Unauthenticated => MemoryError::Refused { key, message },
    }
}

#[async_trait]
impl MemoryStore for GrpcMemory {
    #[tracing::instrument(name = "volley.MemoryService/GetMemory", skip_all, fields(scope = %scope, key = %key))]
    async fn get(
        &self,
        scope: &MemoryScope,
        key: &str,
    ) -> Result<Option<MemoryEntry>, MemoryError> {
        let (batch_id, namespace) = scope_fields(scope);
        let request = GetMemoryRequest {
            batch_id,
            key: key.to_owned(),
            namespace,
        };
        let response = self
            .client
            .clone()
            .get_memory(op_request(request))
            .await
            .map_err(|status| memory_error(key, Condition::None, &status))?
            .into_inner();
        Ok(response.found.then_some(MemoryEntry {
            value: response.value,
            content_type: response.content_type,
            version: response.version,
        }))
    }

    #[tracing::instrument(name = "volley.MemoryService/PutMemory", skip_all, fields(scope = %scope, key = %key))]
    async fn put(
        &self,
        scope: &MemoryScope,
        key: &str,
        value: Vec<u8>,
        options: &PutOptions,
        writer: Option<&MemoryWriter>,
    ) -> Result<u64, MemoryError> {
        let (batch_id, namespace) = scope_fields(scope);
        let request = PutMemoryRequest {
            batch_id,
            key: key.to_owned(),
            value,
            namespace,
            content_type: options.content_type.clone().unwrap_or_default(),
            // A ttl under a millisecond still expires, it does not mean "never".
            ttl_ms: options.ttl.map_or(0, |ttl| millis(ttl).max(1)),
            if_version: options.if_version,
            writer_op: writer.map_or_else(String::new, |writer| writer.op_id.as_str().to_owned()),
            writer_attempt: writer.map_or(0, |writer| writer.attempt),
        };
        let condition = if options.if_version.is_some() {
            Condition::IfVersion
        } else {
            Condition::None
        };
        let response = self
            .client
            .clone()
            .put_memory(op_request(request))
            .await
            .map_err(|status| memory_error(key, condition, &status))?
            .into_inner();
        Ok(response.version)
    }

    #[tracing::instrument(name = "volley.MemoryService/DeleteMemory", skip_all, fields(scope = %scope, key = %key))]
    async fn delete(&self, scope: &MemoryScope, key: &str) -> Result<bool, MemoryError> {
        let (batch_id, namespace) = scope_fields(scope);
        let request = DeleteMemoryRequest {
            batch_id,
            key: key.to_owned(),
            namespace,
            if_version: None,
        };
        let response = self
            .client
            .clone()
            .delete_memory(op_request(request))
            .await
            .map_err(|status| memory_error(key, Condition::None, &status))?
            .into_inner();
        Ok(response.deleted)
    }

    #[tracing::instrument(name = "volley.MemoryService/IncrMemory", skip_all, fields(scope = %scope, key = %key))]
    async fn incr(&self, scope: &MemoryScope, key: &str, delta: i64) -> Result<i64, MemoryError> {
        let (batch_id, namespace) = scope_fields(scope);
        let request = IncrMemoryRequest {
            batch_id,
            key: key.to_owned(),
            namespace,
            delta,
        };
        let response = self
            .client
            .clone()
            .incr_memory(op_request(request))
            .await
            .map_err(|status| memory_error(key, Condition::None, &status))?
            .into_inner();
        Ok(response.value)
    }

    #[tracing::instrument(name = "volley.MemoryService/WaitMemory", skip_all, fields(scope = %scope, key = %key))]
    async fn wait_for(
        &self,
        scope: &MemoryScope,
        key: &str,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, MemoryError> {
        let (batch_id, namespace) = scope_fields(scope);
        let request = WaitMemoryRequest {
            batch_id,
            key: key.to_owned(),
            namespace,
            // 0 means "forever" on the wire, so a zero timeout becomes the shortest real one.
            timeout_ms: timeout.map_or(0, |limit| millis(limit).max(1)),
        };
        let outcome = self.client.clone().wait_memory(op_request(request)).await;
        let response = match (outcome, timeout) {
            (Ok(response), _) => response.into_inner(),
            // The coordinator's way of saying the key did not appear in time.
            (Err(status), Some(limit)) if status.code() == tonic::Code::DeadlineExceeded => {
                return Err(MemoryError::WaitTimedOut {
                    key: key.to_owned(),
                    timeout: limit,
                });
            }
            (Err(status), _) => return Err(memory_error(key, Condition::None, &status)),
        };
        if response.found {
            Ok(response.value)
        } else {
            // A coordinator answering without the key breaks the contract; another try may not.
            Err(MemoryError::Unavailable {
                key: key.to_owned(),
                message: "WaitMemory returned without the key".to_owned(),
            })
        }
    }
}

/// The coordinator's `BatchService.SpawnOps` as an [`OpSpawner`].
#[derive(Clone, Debug)]
pub struct GrpcSpawner {
    client: BatchServiceClient<Channel>,
}

impl GrpcSpawner {
    pub fn new(channel: Channel) -> Self {
        let client = BatchServiceClient::new(channel)
            .max_decoding_message_size(volley_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(volley_proto::MAX_MESSAGE_BYTES);
        Self { client }
    }
}

fn spawn_error(status: &tonic::Status) -> SpawnError {
    let message = status.message().to_owned();
    match status.code() {
        tonic::Code::InvalidArgument => match ValidationFailure::decode(status.details()) {
            Ok(failure) if !failure.problems.is_empty() => SpawnError::Invalid {
                problems: failure.problems,
            },
            // No (readable) details: still invalid, with the status message as the one problem.
            _ => SpawnError::Invalid {
                problems: vec![volley_proto::v1::Problem {
                    op_id: String::new(),
                    field: String::new(),
                    message,
                }],
            },
        },
        tonic::Code::Unavailable
        | tonic::Code::DeadlineExceeded
        | tonic::Code::ResourceExhausted
        | tonic::Code::Aborted
        | tonic::Code::Cancelled
        | tonic::Code::Unknown
        | tonic::Code::Internal => SpawnError::Unavailable { message },
        tonic::Code::Ok
        | tonic::Code::NotFound
        | tonic::Code::AlreadyExists
        | tonic::Code::PermissionDenied
        | tonic::Code::FailedPrecondition
        | tonic::Code::OutOfRange
        | tonic::Code::Unimplemented
        | tonic::Code::DataLoss
        | tonic::Code::Unauthenticated => SpawnError::Other { message },
    }
}

#[async_trait]
impl OpSpawner for GrpcSpawner {
    #[tracing::instrument(name = "volley.BatchService/SpawnOps", skip_all, fields(batch = %batch_id, spawned_by = %spawned_by, ops = ops.len()))]
    async fn spawn(
        &self,
        batch_id: &BatchId,
        ops: Vec<Op>,
        spawned_by: &str,
    ) -> Result<SpawnOutcome, SpawnError> {
        let mut ops = ops;
        // Derived from the op and its ops: the op's next attempt spawning
        // the same ops gets this attempt's answer, not "duplicate id".
        let idempotency_key = if spawned_by.is_empty() {
            String::new()
        } else {
            volley_proto::digest::op_spawn_key(spawned_by, &mut ops)
        };
        let request = SpawnOpsRequest {
            batch_id: batch_id.as_str().to_owned(),
            ops,
            spawned_by: spawned_by.to_owned(),
            idempotency_key,
        };
        let response = self
            .client
            .clone()
            .spawn_ops(op_request(request))
            .await
            .map_err(|status| spawn_error(&status))?
            .into_inner();
        Ok(SpawnOutcome {
            op_count: response.op_count,
            warnings: response.warnings,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use volley_proto::v1::Problem;

    use super::*;

    #[test]
    fn invalid_argument_details_become_problems() {
        let failure = ValidationFailure {
            problems: vec![Problem {
                op_id: "b".into(),
                field: "after".into(),
                message: "cycle".into(),
            }],
            total: 1,
        };
        let status = tonic::Status::with_details(
            tonic::Code::InvalidArgument,
            "invalid ops",
            failure.encode_to_vec().into(),
        );
        assert_eq!(
            spawn_error(&status),
            SpawnError::Invalid {
                problems: failure.problems
            }
        );
        let bare = tonic::Status::invalid_argument("no details");
        let SpawnError::Invalid { problems } = spawn_error(&bare) else {
            panic!("not invalid");
        };
        assert_eq!(problems[0].message, "no details");
        assert!(spawn_error(&tonic::Status::unavailable("down")).is_retryable());
        assert!(matches!(
            spawn_error(&tonic::Status::not_found("no batch")),
            SpawnError::Other { .. }
        ));
    }

    #[test]
    fn memory_statuses_are_classified_by_code() {
        let precondition = tonic::Status::failed_precondition("version 3, not 2");
        let mismatch = memory_error("k", Condition::IfVersion, &precondition);
        assert!(matches!(mismatch, MemoryError::VersionMismatch { .. }));
        assert!(!mismatch.is_retryable());
        // Unconditional: a stale writer or a non-integer, not a version mismatch.
        let refused = memory_error("k", Condition::None, &precondition);
        assert!(matches!(refused, MemoryError::Refused { .. }));
        assert!(!refused.is_retryable());
        let down = tonic::Status::unavailable("down");
        assert!(memory_error("k", Condition::None, &down).is_retryable());
        let bad_key = tonic::Status::invalid_argument("bad key");
        assert!(!memory_error("k", Condition::None, &bad_key).is_retryable());
    }

    #[test]
    fn scope_sets_exactly_one_field() {
        assert_eq!(
            scope_fields(&MemoryScope::Batch(BatchId::new("b1"))),
            ("b1".to_owned(), String::new())
        );
        assert_eq!(
            scope_fields(&MemoryScope::Namespace("swarm".into())),
            (String::new(), "swarm".to_owned())
        );
    }
}
