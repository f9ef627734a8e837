//! The tonic side of the worker: channels to the coordinator, the `Session` stream, and the memory client.

pub(crate) mod session;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use prost::Message;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use volley_client::{BearerToken, MemoryRpc, Scope};
use volley_proto::BatchId;
use volley_proto::v1::batch_service_client::BatchServiceClient;
use volley_proto::v1::{Op, SpawnOpsRequest, ValidationFailure};
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

/// `Bearer <token>`; an empty token or one a header cannot carry is none.
fn bearer_value(token: &str) -> Result<MetadataValue<Ascii>, ConnectError> {
    if token.is_empty() {
        return Err(ConnectError::BadToken);
    }
    volley_client::bearer_value(token).map_err(|_| ConnectError::BadToken)
}

/// The current op's token as a header, if an op runs on this task.
fn op_token_header() -> Option<MetadataValue<Ascii>> {
    OP_TOKEN
        .try_with(|token| bearer_value(token).ok())
        .ok()
        .flatten()
}

/// `message` as a request carrying the current op's token, if any.
fn op_request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(header) = op_token_header() {
        request.metadata_mut().insert("authorization", header);
    }
    request
}

/// Adds the worker's own token to its session calls (the SDK's bearer
/// interceptor: the session's calls carry no token of their own).
pub(crate) type WorkerToken = BearerToken;

/// The interceptor of the worker's session; an empty token is refused.
pub(crate) fn worker_token(token: Option<&str>) -> Result<WorkerToken, ConnectError> {
    if token.is_some_and(str::is_empty) {
        return Err(ConnectError::BadToken);
    }
    BearerToken::new(token).map_err(|_| ConnectError::BadToken)
}

/// The SDK's endpoint ([`volley_client::connect::coordinator_endpoint`]:
/// TLS by the URL's scheme, the connect timeout, TCP_NODELAY) with HTTP/2
/// keepalives on top, since a worker holds its session open for hours.
pub(crate) fn endpoint(url: &str, tls: &ClientTlsFiles) -> Result<Endpoint, ConnectError> {
    let endpoint = volley_client::connect::coordinator_endpoint(url, tls, CONNECT_TIMEOUT)
        .map_err(|source| ConnectError::Tls {
            url: url.to_owned(),
            source: Box::new(source),
        })?;
    Ok(endpoint
        // Notice a coordinator that vanished without closing the connection.
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}

/// Connects to the coordinator at `url` (e.g.
/// [`volley_proto::DEFAULT_COORDINATOR_URL`]) now, failing if it cannot be
/// reached.
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

/// The coordinator's `MemoryService` as a [`MemoryStore`]: the SDK's
/// [`MemoryRpc`] with each call carrying the current op's token, and
/// statuses classified as [`MemoryError`]s.
#[derive(Clone, Debug)]
pub struct GrpcMemory {
    rpc: MemoryRpc,
}

impl GrpcMemory {
    pub fn new(channel: Channel) -> Self {
        // No token of the worker's own: each call carries its op's.
        let rpc = MemoryRpc::new(channel, BearerToken::default());
        Self { rpc }
    }

    /// The client for one call, with the current op's token.
    fn rpc(&self) -> MemoryRpc {
        match op_token_header() {
            Some(header) => self.rpc.clone().with_call_token(header),
            None => self.rpc.clone(),
        }
    }
}

/// A scope as the SDK's memory client spells it.
fn rpc_scope(scope: &MemoryScope) -> Scope {
    match scope {
        MemoryScope::Batch(batch_id) => Scope::Batch(batch_id.as_str().to_owned()),
        MemoryScope::Namespace(namespace) => Scope::Namespace(namespace.clone()),
    }
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
        self.rpc()
            .get(&rpc_scope(scope), key)
            .await
            .map_err(|status| memory_error(key, Condition::None, &status))
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
        let rpc_options = volley_client::PutOptions {
            content_type: options.content_type.clone().unwrap_or_default(),
            ttl: options.ttl,
            if_version: options.if_version,
        };
        let writer = writer.map(|writer| volley_client::Writer {
            op_id: writer.op_id.as_str().to_owned(),
            attempt: writer.attempt,
        });
        let condition = if options.if_version.is_some() {
            Condition::IfVersion
        } else {
            Condition::None
        };
        let response = self
            .rpc()
            .put(&rpc_scope(scope), key, value, &rpc_options, writer.as_ref())
            .await
            .map_err(|status| memory_error(key, condition, &status))?;
        Ok(response.version)
    }

    #[tracing::instrument(name = "volley.MemoryService/DeleteMemory", skip_all, fields(scope = %scope, key = %key))]
    async fn delete(&self, scope: &MemoryScope, key: &str) -> Result<bool, MemoryError> {
        self.rpc()
            .delete(&rpc_scope(scope), key, None)
            .await
            .map_err(|status| memory_error(key, Condition::None, &status))
    }

    #[tracing::instrument(name = "volley.MemoryService/IncrMemory", skip_all, fields(scope = %scope, key = %key))]
    async fn incr(&self, scope: &MemoryScope, key: &str, delta: i64) -> Result<i64, MemoryError> {
        self.rpc()
            .incr(&rpc_scope(scope), key, delta)
            .await
            .map_err(|status| memory_error(key, Condition::None, &status))
    }

    #[tracing::instrument(name = "volley.MemoryService/WaitMemory", skip_all, fields(scope = %scope, key = %key))]
    async fn wait_for(
        &self,
        scope: &MemoryScope,
        key: &str,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, MemoryError> {
        // One call, no reconnecting: an op that cannot reach its
        // coordinator fails retryably and runs again.
        match self.rpc().wait(&rpc_scope(scope), key, timeout).await {
            Ok(Some(entry)) => Ok(entry.value),
            // A coordinator answering without the key breaks the contract; another try may not.
            Ok(None) => Err(MemoryError::Unavailable {
                key: key.to_owned(),
                message: "WaitMemory returned without the key".to_owned(),
            }),
            // The coordinator's way of saying the key did not appear in time.
            Err(status) if status.code() == tonic::Code::DeadlineExceeded && timeout.is_some() => {
                Err(MemoryError::WaitTimedOut {
                    key: key.to_owned(),
                    timeout: timeout.unwrap_or_default(),
                })
            }
            Err(status) => Err(memory_error(key, Condition::None, &status)),
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
    fn scopes_become_the_sdk_scopes() {
        assert_eq!(
            rpc_scope(&MemoryScope::Batch(BatchId::new("b1"))),
            Scope::Batch("b1".to_owned())
        );
        assert_eq!(
            rpc_scope(&MemoryScope::Namespace("swarm".into())),
            Scope::Namespace("swarm".to_owned())
        );
    }
}
