//! `Client`: one connection to a coordinator, cheap to clone.

use std::time::Duration;

use futures::Stream;
use prost::Message;
use tokio::time::Instant;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};
use volley_proto::MAX_MESSAGE_BYTES;
use volley_proto::v1::batch_service_client::BatchServiceClient;
use volley_proto::v1::plan_service_client::PlanServiceClient;
use volley_proto::v1::token_service_client::TokenServiceClient;
use volley_proto::v1::worker_service_client::WorkerServiceClient;
use volley_proto::v1::{self, submit_batch_chunk::Part};

use crate::connect::{BearerToken, Connection};
use crate::error::ClientError;
use crate::memory_rpc::{MemoryRpc, Writer};
// Where they were first defined; `volley_client::client::Scope` still names them.
pub use crate::memory_rpc::{MemoryEntry, PutOptions, Scope};

/// A channel whose every call carries the connection's token.
pub(crate) type AuthedChannel = InterceptedService<Channel, BearerToken>;

/// Ops go to the coordinator in chunks of about this many encoded bytes,
/// far below gRPC's 4 MiB default message limit.
const CHUNK_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
pub struct Client {
    url: String,
    batches: BatchServiceClient<AuthedChannel>,
    memory: MemoryRpc,
    workers: WorkerServiceClient<AuthedChannel>,
    tokens: TokenServiceClient<AuthedChannel>,
    plans: PlanServiceClient<AuthedChannel>,
}

impl Client {
    /// Connects to a coordinator, e.g. `http://127.0.0.1:7070`, with no
    /// token and no TLS files (see [`Client::connect_with`]).
    pub async fn connect(url: &str) -> Result<Client, ClientError> {
        Client::connect_with(&Connection::new(url)).await
    }

    /// Connects as `connection` says: `https://` means TLS (and fails
    /// loudly against a plaintext server), and every call carries its token.
    pub async fn connect_with(connection: &Connection) -> Result<Client, ClientError> {
        let url = connection.full_url();
        let bearer = connection.bearer()?;
        let channel = connection
            .endpoint(Duration::from_secs(5))?
            .connect()
            .await
            .map_err(|error| ClientError::unreachable(&url, source_chain(&error)))?;
        Ok(Client::from_channel_with(url, channel, bearer))
    }

    /// A client on a channel made elsewhere, sending no token.
    pub fn from_channel(url: String, channel: Channel) -> Client {
        Client::from_channel_with(url, channel, BearerToken::default())
    }

    /// A client on a channel made elsewhere whose calls carry `bearer`.
    pub fn from_channel_with(url: String, channel: Channel, bearer: BearerToken) -> Client {
        Client {
            url,
            batches: BatchServiceClient::with_interceptor(channel.clone(), bearer.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            memory: MemoryRpc::new(channel.clone(), bearer.clone()),
            workers: WorkerServiceClient::with_interceptor(channel.clone(), bearer.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            tokens: TokenServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            plans: PlanServiceClient::with_interceptor(channel, bearer)
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Submits a batch, streamed as a header and chunks of ops.
    ///
    /// Runs in a `submit_batch` span; the current OpenTelemetry context (that
    /// span's, when an OpenTelemetry layer records it) travels in the
    /// request's metadata as W3C `traceparent`, so the batch's trace goes on
    /// in the coordinator and the workers.
    ///
    /// Sends a new idempotency key; to retry a call whose answer was lost
    /// without risking a second batch, use [`Client::submit_idempotent`]
    /// with one key for every try.
    pub async fn submit(&self, batch: v1::Batch) -> Result<v1::SubmitBatchResponse, ClientError> {
        self.submit_idempotent(batch, &new_idempotency_key()).await
    }

    /// Submits a batch with an idempotency key (at most 128 bytes of
    /// printable ASCII): a retry with the same key and the same batch gets
    /// the first call's answer (same batch id) instead of a second batch,
    /// on any coordinator of the cluster. The same key with another batch
    /// fails with [`ClientError::AlreadyExists`].
    #[tracing::instrument(name = "submit_batch", skip_all, fields(otel.kind = "client", name = %batch.name, ops = batch.ops.len()))]
    pub async fn submit_idempotent(
        &self,
        mut batch: v1::Batch,
        idempotency_key: &str,
    ) -> Result<v1::SubmitBatchResponse, ClientError> {
        // Reversed, so each chunk is cut off the end and the ops' buffer
        // shrinks as the chunks go: a big batch is held about once, not as
        // its ops and its chunks, nor beside the coordinator's copy of it.
        let mut ops = std::mem::take(&mut batch.ops);
        ops.reverse();
        let header = v1::SubmitBatchChunk {
            part: Some(Part::Header(batch)),
            idempotency_key: idempotency_key.to_owned(),
        };
        let chunks = std::iter::once(header).chain(std::iter::from_fn(move || {
            let mut count = 0;
            let mut bytes = 0;
            for op in ops.iter().rev() {
                bytes += op.encoded_len();
                count += 1;
                if bytes >= CHUNK_BYTES {
                    break;
                }
            }
            if count == 0 {
                return None;
            }
            let mut chunk = ops.split_off(ops.len() - count);
            chunk.reverse();
            ops.shrink_to_fit();
            Some(ops_chunk(chunk))
        }));
        let mut request = tonic::Request::new(tokio_stream::iter(chunks));
        crate::trace::inject_current(request.metadata_mut());
        let response = self.batches.clone().submit_batch(request).await?;
        Ok(response.into_inner())
    }

    /// The batch's events after `after_seq`, until it finishes, riding out
    /// coordinator failover with the default [`WatchOptions`].
    pub async fn watch(
        &self,
        batch_id: &str,
        after_seq: u64,
    ) -> Result<impl Stream<Item = Result<v1::BatchEvent, ClientError>> + use<>, ClientError> {
        self.watch_with(batch_id, after_seq, WatchOptions::default())
            .await
    }

    /// The batch's events after `after_seq`, each exactly once and in `seq`
    /// order, until the `BatchFinished` event.
    ///
    /// When the stream breaks in a way a reconnection can cure (the
    /// coordinator is unavailable, the call was cancelled, the connection
    /// died under it, or the stream ended before the batch finished), the
    /// watch reconnects with backoff and resumes after the last event it
    /// yielded, until `options.reconnect_budget` runs out. Other errors end
    /// the stream, as does an event whose `seq` does not follow the last one
    /// (events are gapless, so that is a coordinator bug, surfaced rather
    /// than hidden). The first stream is opened here, retried the same way;
    /// an error that cannot be retried (a batch that does not exist, say)
    /// is returned here.
    #[tracing::instrument(name = "client.watch", skip_all, fields(batch = batch_id, after_seq))]
    pub async fn watch_with(
        &self,
        batch_id: &str,
        after_seq: u64,
        options: WatchOptions,
    ) -> Result<impl Stream<Item = Result<v1::BatchEvent, ClientError>> + use<>, ClientError> {
        let mut watch = ResumableWatch {
            batches: self.batches.clone(),
            batch_id: batch_id.to_owned(),
            last_seq: after_seq,
            stream: None,
            retry: Reconnect::new(&options),
            ended: false,
            drained_once: false,
            options,
        };
        watch.open().await?;
        // Boxed so that callers can poll it without pinning it themselves.
        Ok(Box::pin(futures::stream::unfold(
            watch,
            |mut watch| async move {
                let item = watch.next().await?;
                Some((item, watch))
            },
        )))
    }

    /// The batch's status with every op in one message (see
    /// [`Client::status_page`] for a big batch).
    pub async fn status(&self, batch_id: &str) -> Result<v1::BatchStatus, ClientError> {
        let request = v1::GetBatchRequest {
            batch_id: batch_id.to_owned(),
            ..v1::GetBatchRequest::default()
        };
        Ok(self.batches.clone().get_batch(request).await?.into_inner())
    }

    /// The batch's status with the ops of indices `offset..offset + limit`
    /// only (`limit` at least 1). The first page (`offset` 0) has the
    /// critical path and sequential time; later ones have the counters, not
    /// those. A coordinator that predates paging sends every op.
    pub async fn status_page(
        &self,
        batch_id: &str,
        offset: u32,
        limit: u32,
    ) -> Result<v1::BatchStatus, ClientError> {
        let request = v1::GetBatchRequest {
            batch_id: batch_id.to_owned(),
            omit_ops: false,
            ops_offset: offset,
            ops_limit: limit.max(1),
            ..v1::GetBatchRequest::default()
        };
        Ok(self.batches.clone().get_batch(request).await?.into_inner())
    }

    /// A page of the batch as planned: its namespace and the args of the
    /// ops `offset..offset + limit` (at most 1,000), secrets masked by the
    /// coordinator. A coordinator that predates it answers `Unimplemented`.
    pub async fn batch_plan(
        &self,
        batch_id: &str,
        offset: u32,
        limit: u32,
    ) -> Result<v1::BatchPlanPage, ClientError> {
        let request = v1::GetBatchPlanRequest {
            batch_id: batch_id.to_owned(),
            ops_offset: offset,
            ops_limit: limit,
        };
        Ok(self
            .plans
            .clone()
            .get_batch_plan(request)
            .await?
            .into_inner())
    }

    /// Counts and timings only, without the per-op list.
    pub async fn summary(&self, batch_id: &str) -> Result<v1::BatchStatus, ClientError> {
        let request = v1::GetBatchRequest {
            batch_id: batch_id.to_owned(),
            omit_ops: true,
            ..v1::GetBatchRequest::default()
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

    /// Mints a token (admin only); the response holds it, once.
    pub async fn create_token(
        &self,
        request: v1::CreateTokenRequest,
    ) -> Result<v1::CreateTokenResponse, ClientError> {
        Ok(self
            .tokens
            .clone()
            .create_token(request)
            .await?
            .into_inner())
    }

    /// Every token's record (admin only).
    pub async fn list_tokens(&self) -> Result<Vec<v1::TokenInfo>, ClientError> {
        Ok(self
            .tokens
            .clone()
            .list_tokens(v1::ListTokensRequest {})
            .await?
            .into_inner()
            .tokens)
    }

    /// Revokes a token (admin only); `false` for an unknown id.
    pub async fn revoke_token(&self, id: &str) -> Result<bool, ClientError> {
        let request = v1::RevokeTokenRequest { id: id.to_owned() };
        Ok(self
            .tokens
            .clone()
            .revoke_token(request)
            .await?
            .into_inner()
            .revoked)
    }

    /// Who the connection's token speaks for.
    pub async fn who_am_i(&self) -> Result<v1::WhoAmIResponse, ClientError> {
        Ok(self
            .tokens
            .clone()
            .who_am_i(v1::WhoAmIRequest {})
            .await?
            .into_inner())
    }

    /// A handle on a memory scope: a batch's own memory or a shared namespace.
    pub fn memory(&self, scope: Scope) -> Memory {
        Memory {
            rpc: self.memory.clone(),
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
        self.spawn_ops_idempotent(batch_id, ops, spawned_by, &new_idempotency_key())
            .await
    }

    /// Adds ops with an idempotency key: a retry with the same key and the
    /// same ops gets the first call's answer instead of adding them again
    /// (or failing on their ids); the same key with other ops fails with
    /// [`ClientError::AlreadyExists`].
    pub async fn spawn_ops_idempotent(
        &self,
        batch_id: &str,
        ops: Vec<v1::Op>,
        spawned_by: &str,
        idempotency_key: &str,
    ) -> Result<v1::SpawnOpsResponse, ClientError> {
        let request = v1::SpawnOpsRequest {
            batch_id: batch_id.to_owned(),
            ops,
            spawned_by: spawned_by.to_owned(),
            idempotency_key: idempotency_key.to_owned(),
        };
        Ok(self.batches.clone().spawn_ops(request).await?.into_inner())
    }
}
impl Client {
    /// The op `op_id` of the batch, with its whole output and details (what
    /// `volley logs` prints). `None` when the batch has no such op and the
    /// coordinator predates the lookup by id (a newer one says NOT_FOUND,
    /// naming a close id).
    pub async fn op_status(
        &self,
        batch_id: &str,
        op_id: &str,
    ) -> Result<Option<v1::OpStatus>, ClientError> {
        let request = v1::GetBatchRequest {
            batch_id: batch_id.to_owned(),
            op_id: op_id.to_owned(),
            ..v1::GetBatchRequest::default()
        };
        let status = self.batches.clone().get_batch(request).await?.into_inner();
        // A coordinator that ignores `op_id` sends every op: pick ours.
        Ok(status.ops.into_iter().find(|op| op.id == op_id))
    }
}

/// How a watch rides out a coordinator going away (see
/// [`Client::watch_with`]).
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// How long the watch keeps trying to reconnect before it gives up with
    /// the last error, counted from the moment it lost its stream; an
    /// event or a newly opened stream starts the count afresh (so a
    /// coordinator that keeps accepting the watch and failing it at once is
    /// retried, every `max_backoff`, without end). Zero: never reconnect.
    pub reconnect_budget: Duration,
    /// The pause before the first reconnection attempt of an outage; it
    /// doubles after each failed attempt.
    pub initial_backoff: Duration,
    /// The longest pause between two reconnection attempts.
    pub max_backoff: Duration,
}

impl WatchOptions {
    /// How long a watch or a wait keeps reconnecting by default
    /// (`volley memory --reconnect-for`).
    pub const DEFAULT_RECONNECT_BUDGET: Duration = Duration::from_secs(60);
}

impl Default for WatchOptions {
    fn default() -> WatchOptions {
        WatchOptions {
            reconnect_budget: WatchOptions::DEFAULT_RECONNECT_BUDGET,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// Why a watch (of a batch or of memory) lost its stream.
enum Interruption {
    /// The call failed with a status a reconnection may cure.
    Status(Status),
    /// The coordinator closed the stream before the watch was done (it
    /// shut down, say).
    EndedEarly,
}

impl Interruption {
    /// The error the caller sees if the watch gives up on this;
    /// `ended_early` says what ended, for [`Interruption::EndedEarly`].
    fn into_error(self, ended_early: impl FnOnce() -> String) -> ClientError {
        match self {
            Interruption::Status(status) => ClientError::from(status),
            Interruption::EndedEarly => ClientError::Unavailable(ended_early()),
        }
    }
}

impl std::fmt::Display for Interruption {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Interruption::Status(status) => {
                write!(formatter, "{:?}: {}", status.code(), status.message())
            }
            Interruption::EndedEarly => formatter.write_str("the stream ended early"),
        }
    }
}

/// One watch's state: enough to reopen its stream right after the last
/// event it yielded.
struct ResumableWatch {
    batches: BatchServiceClient<AuthedChannel>,
    batch_id: String,
    options: WatchOptions,
    /// The last event yielded (or the caller's `after_seq`): the next one
    /// must be `last_seq + 1`, and a new stream starts after it.
    last_seq: u64,
    stream: Option<Streaming<v1::BatchEvent>>,
    /// The current outage, while the watch is trying to get a stream back.
    /// Only an event resets it, so a coordinator that accepts watches and
    /// fails them at once is retried at `max_backoff`, not in a tight loop.
    retry: Reconnect,
    /// Set once the batch finished or an error ended the watch.
    ended: bool,
    /// A stream of the ended batch was reopened once after it closed
    /// without its `BatchFinished` (see `next_event`).
    drained_once: bool,
}

impl ResumableWatch {
    /// The next item; `None` once the watch ended.
    async fn next(&mut self) -> Option<Result<v1::BatchEvent, ClientError>> {
        if self.ended {
            return None;
        }
        let item = match self.next_event().await {
            Ok(Some(event)) => Ok(event),
            // The batch ended and no event is left after the last one seen.
            Ok(None) => {
                self.ended = true;
                self.stream = None;
                return None;
            }
            Err(error) => Err(error),
        };
        let goes_on = matches!(&item, Ok(event) if event.kind() != v1::EventKind::BatchFinished);
        if !goes_on {
            // Done: drop the stream even if the coordinator keeps it open.
            self.ended = true;
            self.stream = None;
        }
        Some(item)
    }

    /// Whether the batch has ended (anything but running): a stream that
    /// closed without its `BatchFinished` then has nothing more to give —
    /// the watch resumed at or past its last event, or the batch was lost
    /// with the store's data and its events were numbered afresh.
    async fn batch_ended(&mut self) -> bool {
        let request = v1::GetBatchRequest {
            batch_id: self.batch_id.clone(),
            omit_ops: true,
            ..v1::GetBatchRequest::default()
        };
        self.batches
            .get_batch(request)
            .await
            .is_ok_and(|status| status.into_inner().state() != v1::BatchState::Running)
    }

    async fn next_event(&mut self) -> Result<Option<v1::BatchEvent>, ClientError> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                self.open().await?;
                continue;
            };
            let interruption = match stream.message().await {
                Ok(Some(event)) => return self.accept(event).map(Some),
                Ok(None) => {
                    self.stream = None;
                    // The batch ended: one more stream from the last event
                    // seen delivers any events still due (its
                    // `BatchFinished` among them); if that one ends empty
                    // too, nothing is left to hear.
                    if self.batch_ended().await {
                        if self.drained_once {
                            return Ok(None);
                        }
                        self.drained_once = true;
                        continue;
                    }
                    Interruption::EndedEarly
                }
                Err(status) if watch_can_resume(&status) => Interruption::Status(status),
                Err(status) => return Err(ClientError::from(status)),
            };
            self.stream = None;
            self.pause_before_retry(interruption).await?;
        }
    }

    /// Checks that `event` follows the last one (never repeat, never skip).
    fn accept(&mut self, event: v1::BatchEvent) -> Result<v1::BatchEvent, ClientError> {
        self.drained_once = false;
        let expected = self.last_seq + 1;
        if event.seq != expected {
            tracing::error!(
                batch = %self.batch_id,
                expected,
                received = event.seq,
                "watch: event out of sequence"
            );
            return Err(ClientError::Other {
                code: Code::Internal,
                message: format!(
                    "watch of batch {}: expected event {expected}, received event {} \
                     (events are gapless; stopping rather than skip or repeat)",
                    self.batch_id, event.seq
                ),
            });
        }
        self.last_seq = event.seq;
        self.retry = Reconnect::new(&self.options);
        Ok(event)
    }

    /// Opens a stream of the events after `last_seq`, retrying what a
    /// reconnection may cure until the budget runs out.
    async fn open(&mut self) -> Result<(), ClientError> {
        loop {
            let request = v1::WatchBatchRequest {
                batch_id: self.batch_id.clone(),
                after_seq: self.last_seq,
            };
            match self.batches.clone().watch_batch(request).await {
                Ok(response) => {
                    if self.retry.outage_started.take().is_some() {
                        tracing::info!(
                            batch = %self.batch_id,
                            after_seq = self.last_seq,
                            attempts = self.retry.attempts,
                            "watch resumed"
                        );
                    }
                    self.retry.attempts = 0;
                    self.stream = Some(response.into_inner());
                    return Ok(());
                }
                Err(status) if watch_can_resume(&status) => {
                    self.pause_before_retry(Interruption::Status(status))
                        .await?;
                }
                Err(status) => return Err(ClientError::from(status)),
            }
        }
    }

    /// Waits out the backoff before the next attempt, or gives up with
    /// `interruption`'s error once the outage has lasted the whole budget.
    async fn pause_before_retry(&mut self, interruption: Interruption) -> Result<(), ClientError> {
        let span = tracing::info_span!("watch", batch = %self.batch_id, after_seq = self.last_seq);
        let paused = tracing::Instrument::instrument(
            self.retry.pause(&self.options, &interruption.to_string()),
            span,
        )
        .await;
        match paused {
            Ok(()) => Ok(()),
            Err(()) => {
                let (batch_id, last_seq) = (&self.batch_id, self.last_seq);
                Err(interruption.into_error(|| {
                    format!(
                        "the watch of batch {batch_id} ended after event {last_seq}, before the batch finished"
                    )
                }))
            }
        }
    }
}

/// Whether a watch that failed with `status` may reconnect and resume: the
/// coordinator cannot serve now (`Unavailable`), the call was cut
/// (`Cancelled`), or the transport failed under it. Tonic builds an
/// `Unknown` status on this side from an I/O or HTTP/2 error and keeps that
/// error as its source; a status a coordinator sent never has one.
fn watch_can_resume(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable | Code::Cancelled => true,
        Code::Unknown => std::error::Error::source(status).is_some(),
        _ => false,
    }
}

/// Memory calls on one scope. Cheap to clone.
#[derive(Clone)]
pub struct Memory {
    rpc: MemoryRpc,
    scope: Scope,
    /// The op attempt writing, so a stale attempt's writes are refused.
    writer: Option<Writer>,
}

impl Memory {
    /// Tags writes as coming from this attempt of an op.
    pub fn with_writer(mut self, op_id: &str, attempt: u32) -> Memory {
        self.writer = Some(Writer {
            op_id: op_id.to_owned(),
            attempt,
        });
        self
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    pub async fn get(&self, key: &str) -> Result<Option<MemoryEntry>, ClientError> {
        Ok(self.rpc.get(&self.scope, key).await?)
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
        // A ttl under a millisecond has always gone out as 0 (no expiry)
        // from the SDK (`volley memory put --ttl 0s`); kept so.
        let options = PutOptions {
            ttl: options.ttl.filter(|ttl| ttl.as_millis() > 0),
            ..options.clone()
        };
        Ok(self
            .rpc
            .put(&self.scope, key, value, &options, self.writer.as_ref())
            .await?)
    }

    /// Deletes a key (only at `if_version`, when given); whether it existed.
    pub async fn delete(&self, key: &str, if_version: Option<u64>) -> Result<bool, ClientError> {
        Ok(self.rpc.delete(&self.scope, key, if_version).await?)
    }

    /// One page of keys under `prefix`; pass the returned token for the next.
    pub async fn list(
        &self,
        prefix: &str,
        page_token: &str,
        limit: u32,
    ) -> Result<v1::ListMemoryResponse, ClientError> {
        Ok(self
            .rpc
            .list(&self.scope, prefix, page_token, limit)
            .await?)
    }

    pub async fn incr(&self, key: &str, delta: i64) -> Result<i64, ClientError> {
        Ok(self.rpc.incr(&self.scope, key, delta).await?)
    }

    /// Changes under `prefix` after `after_revision` (0: from now on, with
    /// every existing key first when `include_existing`), riding out
    /// coordinator failover with the default [`WatchOptions`].
    pub async fn watch(
        &self,
        prefix: &str,
        after_revision: u64,
        include_existing: bool,
    ) -> Result<impl Stream<Item = Result<v1::MemoryChange, ClientError>> + use<>, ClientError>
    {
        self.watch_with(
            prefix,
            after_revision,
            include_existing,
            WatchOptions::default(),
        )
        .await
    }

    /// Changes under `prefix` after `after_revision`, each exactly once and
    /// in revision order, without end — unless the watch cannot go on
    /// without a gap.
    ///
    /// When the stream breaks in a way a reconnection can cure (the
    /// coordinator shut down or died, the connection broke), the watch
    /// reconnects with backoff — through the same URL, so to any
    /// coordinator behind it — and resumes after the last revision it
    /// yielded, until `options.reconnect_budget` runs out; then the last
    /// error ends it. It sends the store epoch its revisions belong to, so
    /// a store that restarted empty in between is not mistaken for more
    /// changes.
    ///
    /// When the changes to resume from are gone (the store restarted
    /// empty, the log was trimmed), the last item is a change of kind
    /// [`v1::MemoryChangeKind::Reset`]: read the keys again, then watch
    /// after its revision. A change out of sequence ends the watch with an
    /// error (revisions are gapless within a prefix's order; a repeat or a
    /// step back is surfaced, never yielded).
    ///
    /// The existing keys (`include_existing`) are a snapshot: if the stream
    /// breaks before all of them arrived, the watch takes a fresh snapshot
    /// and yields only the keys (at versions) it has not yielded yet.
    #[tracing::instrument(name = "client.watch_memory", skip_all, fields(prefix, after_revision))]
    pub async fn watch_with(
        &self,
        prefix: &str,
        after_revision: u64,
        include_existing: bool,
        options: WatchOptions,
    ) -> Result<impl Stream<Item = Result<v1::MemoryChange, ClientError>> + use<>, ClientError>
    {
        let mut watch = ResumableMemoryWatch {
            memory: self.clone(),
            prefix: prefix.to_owned(),
            last_revision: after_revision,
            store_epoch: String::new(),
            snapshot: include_existing && after_revision == 0,
            snapshot_left: 0,
            snapshot_seen: std::collections::HashSet::new(),
            stream: None,
            retry: Reconnect::new(&options),
            ended: false,
            options,
        };
        watch.open().await?;
        // Boxed so that callers can poll it without pinning it themselves.
        Ok(Box::pin(futures::stream::unfold(
            watch,
            |mut watch| async move {
                let item = watch.next().await?;
                Some((item, watch))
            },
        )))
    }

    /// The key's value once it exists; `None` for no timeout. Rides out
    /// coordinator failover with the default [`WatchOptions`].
    pub async fn wait(
        &self,
        key: &str,
        timeout: Option<Duration>,
    ) -> Result<MemoryEntry, ClientError> {
        self.wait_with(key, timeout, WatchOptions::default()).await
    }

    /// The key's value once it exists; `None` for no timeout.
    ///
    /// A wait is only a read: when its call breaks in a way a reconnection
    /// can cure (see [`Memory::watch_with`]), it is made again, through the
    /// same URL, for what is left of `timeout`, until the outage has lasted
    /// `options.reconnect_budget`.
    #[tracing::instrument(name = "client.wait_memory", skip_all, fields(key))]
    pub async fn wait_with(
        &self,
        key: &str,
        timeout: Option<Duration>,
        options: WatchOptions,
    ) -> Result<MemoryEntry, ClientError> {
        let deadline = timeout.map(|timeout| Instant::now() + timeout);
        let mut retry = Reconnect::new(&options);
        loop {
            let left = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(ClientError::TimedOut(format!(
                            "memory key `{key}` did not appear within {}",
                            humantime::format_duration(timeout.unwrap_or_default())
                        )));
                    }
                    Some(left)
                }
                None => None,
            };
            match self.rpc.wait(&self.scope, key, left).await {
                Ok(entry) => {
                    return entry.ok_or_else(|| ClientError::NotFound(format!("memory key {key}")));
                }
                Err(status) if watch_can_resume(&status) => {
                    retry
                        .pause(&options, &status.to_string())
                        .await
                        .map_err(|()| ClientError::from(status))?;
                }
                Err(status) => return Err(ClientError::from(status)),
            }
        }
    }
}

/// One outage's reconnection state: when it started, the next pause.
struct Reconnect {
    outage_started: Option<Instant>,
    backoff: Duration,
    attempts: u32,
}

impl Reconnect {
    fn new(options: &WatchOptions) -> Reconnect {
        Reconnect {
            outage_started: None,
            backoff: options.initial_backoff,
            attempts: 0,
        }
    }

    /// Waits out the backoff before the next attempt; `Err` once the outage
    /// has lasted the whole budget.
    async fn pause(&mut self, options: &WatchOptions, error: &str) -> Result<(), ()> {
        let now = Instant::now();
        let outage_started = *self.outage_started.get_or_insert(now);
        let outage = now.duration_since(outage_started);
        let budget = options.reconnect_budget;
        if outage >= budget {
            tracing::warn!(
                attempts = self.attempts,
                outage_ms = outage.as_millis() as u64,
                error,
                "giving up reconnecting"
            );
            return Err(());
        }
        let delay = self.backoff.min(budget - outage);
        if self.attempts == 0 {
            tracing::warn!(
                delay_ms = delay.as_millis() as u64,
                error,
                "interrupted; reconnecting"
            );
        } else {
            tracing::debug!(
                attempt = self.attempts,
                delay_ms = delay.as_millis() as u64,
                error,
                "reconnection failed; retrying"
            );
        }
        self.attempts += 1;
        tokio::time::sleep(delay).await;
        self.backoff = (self.backoff * 2).min(options.max_backoff);
        Ok(())
    }
}

/// One memory watch's state: enough to reopen its stream right after the
/// last change it yielded, in the same store epoch.
struct ResumableMemoryWatch {
    memory: Memory,
    prefix: String,
    options: WatchOptions,
    /// The last revision yielded (or where the stream started): a new
    /// stream starts after it.
    last_revision: u64,
    /// The store epoch `last_revision` belongs to (empty until a stream
    /// said it).
    store_epoch: String,
    /// Still in (or yet to start) the snapshot of existing keys.
    snapshot: bool,
    /// Changes of the current stream's snapshot not received yet.
    snapshot_left: u64,
    /// `(key, version)` of the snapshot changes yielded, so a fresh
    /// snapshot after a break yields only what is new.
    snapshot_seen: std::collections::HashSet<(String, u64)>,
    stream: Option<Streaming<v1::MemoryChange>>,
    /// The current outage, while the watch is trying to get a stream back.
    retry: Reconnect,
    /// Set once a reset or an error ended the watch.
    ended: bool,
}

/// A response header's value as text.
fn header_text(metadata: &tonic::metadata::MetadataMap, name: &str) -> Option<String> {
    metadata
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

impl ResumableMemoryWatch {
    async fn next(&mut self) -> Option<Result<v1::MemoryChange, ClientError>> {
        if self.ended {
            return None;
        }
        let item = self.next_change().await;
        let goes_on = matches!(&item, Ok(change) if change.kind() != v1::MemoryChangeKind::Reset);
        if !goes_on {
            self.ended = true;
            self.stream = None;
        }
        Some(item)
    }

    async fn next_change(&mut self) -> Result<v1::MemoryChange, ClientError> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                self.open().await?;
                continue;
            };
            let interruption = match stream.message().await {
                Ok(Some(change)) => match self.accept(change)? {
                    Some(change) => return Ok(change),
                    None => continue,
                },
                Ok(None) => Interruption::EndedEarly,
                Err(status) if watch_can_resume(&status) => Interruption::Status(status),
                Err(status) => return Err(ClientError::from(status)),
            };
            self.stream = None;
            self.pause_before_retry(interruption).await?;
        }
    }

    /// Checks `change` against the last one: `None` for a snapshot change
    /// already yielded before a break.
    fn accept(
        &mut self,
        change: v1::MemoryChange,
    ) -> Result<Option<v1::MemoryChange>, ClientError> {
        self.retry = Reconnect::new(&self.options);
        if change.kind() == v1::MemoryChangeKind::Reset {
            self.last_revision = change.revision;
            return Ok(Some(change));
        }
        if self.snapshot_left > 0 {
            self.snapshot_left -= 1;
            if self.snapshot_left == 0 {
                self.snapshot = false;
                self.snapshot_seen.clear();
            }
            let fresh = self
                .snapshot_seen
                .insert((change.key.clone(), change.version));
            return Ok(fresh.then_some(change));
        }
        self.snapshot = false;
        if change.revision <= self.last_revision {
            tracing::error!(
                last = self.last_revision,
                received = change.revision,
                "memory watch: change out of order"
            );
            return Err(ClientError::Other {
                code: Code::Internal,
                message: format!(
                    "memory watch: received revision {} after revision {} \
                     (stopping rather than repeat or reorder)",
                    change.revision, self.last_revision
                ),
            });
        }
        self.last_revision = change.revision;
        Ok(Some(change))
    }

    /// Opens a stream of the changes after `last_revision`, retrying what
    /// a reconnection may cure until the budget runs out.
    async fn open(&mut self) -> Result<(), ClientError> {
        loop {
            let (batch_id, namespace) = self.memory.scope.fields();
            let request = v1::WatchMemoryRequest {
                batch_id,
                namespace,
                prefix: self.prefix.clone(),
                // A snapshot not yet whole is taken again from now on.
                after_revision: if self.snapshot { 0 } else { self.last_revision },
                include_existing: self.snapshot,
                store_epoch: self.store_epoch.clone(),
            };
            match self.memory.rpc.watch(request).await {
                Ok(response) => {
                    if self.retry.attempts > 0 {
                        tracing::info!(
                            after_revision = self.last_revision,
                            attempts = self.retry.attempts,
                            "memory watch resumed"
                        );
                    }
                    // A new stream starts the count afresh; only a change
                    // resets the backoff (as batch watches do).
                    self.retry.outage_started = None;
                    self.retry.attempts = 0;
                    let metadata = response.metadata();
                    if let Some(epoch) = header_text(metadata, volley_proto::STORE_EPOCH_HEADER) {
                        self.store_epoch = epoch;
                    }
                    if self.snapshot {
                        let after = header_text(metadata, volley_proto::WATCH_AFTER_HEADER)
                            .and_then(|text| text.parse::<u64>().ok());
                        let existing = header_text(metadata, volley_proto::WATCH_EXISTING_HEADER)
                            .and_then(|text| text.parse::<u64>().ok());
                        match (after, existing) {
                            (Some(after), Some(existing)) => {
                                self.last_revision = after;
                                self.snapshot_left = existing;
                                self.snapshot = existing > 0;
                            }
                            // A coordinator that does not say: resume as
                            // the old watches did, from the first change.
                            _ => self.snapshot = false,
                        }
                    } else if self.last_revision == 0
                        && let Some(after) = header_text(metadata, volley_proto::WATCH_AFTER_HEADER)
                            .and_then(|text| text.parse::<u64>().ok())
                    {
                        // "From now on": now has a revision, resume after it.
                        self.last_revision = after;
                    }
                    self.stream = Some(response.into_inner());
                    return Ok(());
                }
                Err(status) if watch_can_resume(&status) => {
                    self.pause_before_retry(Interruption::Status(status))
                        .await?;
                }
                Err(status) => return Err(ClientError::from(status)),
            }
        }
    }

    /// Waits out the backoff before the next attempt, or gives up with
    /// `interruption`'s error once the outage has lasted the whole budget.
    async fn pause_before_retry(&mut self, interruption: Interruption) -> Result<(), ClientError> {
        match self
            .retry
            .pause(&self.options, &interruption.to_string())
            .await
        {
            Ok(()) => Ok(()),
            Err(()) => {
                let last_revision = self.last_revision;
                Err(interruption.into_error(|| {
                    format!(
                        "the memory watch ended after revision {last_revision} and no coordinator took it over"
                    )
                }))
            }
        }
    }
}

/// A fresh idempotency key: 128 random bits in hex (32 characters).
pub fn new_idempotency_key() -> String {
    let mut bytes = [0_u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    hex::encode(bytes)
}

fn ops_chunk(ops: Vec<v1::Op>) -> v1::SubmitBatchChunk {
    v1::SubmitBatchChunk {
        idempotency_key: String::new(),
        part: Some(Part::Ops(v1::OpChunk { ops })),
    }
}

/// A transport error's whole chain: its top line alone says only
/// "transport error".
pub(crate) fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::net::SocketAddr;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};

    use tokio::sync::oneshot;
    use tokio_stream::StreamExt;
    use tokio_stream::wrappers::TcpListenerStream;
    use volley_proto::v1::batch_service_server::{BatchService, BatchServiceServer};

    use super::*;

    /// Every test is bounded by this, so a broken watch fails instead of hanging.
    const TEST_DEADLINE: Duration = Duration::from_secs(30);

    /// What the fake coordinator does with one `WatchBatch` call.
    #[derive(Clone, Debug)]
    enum Serve {
        /// Sends the events after `after_seq` through `through`, then `end`.
        Through { through: u64, end: End },
        /// Refuses the call.
        Refuse(Code),
        /// Starts `skip` events too late (a buggy coordinator).
        Skipping { skip: u64 },
    }

    #[derive(Clone, Copy, Debug)]
    enum End {
        Status(Code),
        /// Closes the stream without an error.
        Clean,
        /// Keeps the stream open, sending nothing more.
        Hang,
    }

    /// A coordinator that only watches: batch `b1` has `total` events, the
    /// last one `BatchFinished`. Each call takes the next step of `plan`
    /// (once the plan runs out: everything, then hang).
    struct FakeBatchService {
        total: u64,
        plan: Mutex<VecDeque<Serve>>,
        /// The `after_seq` of every call, in order.
        after_seqs: Mutex<Vec<u64>>,
        /// Per submission: how many op chunks came, and the op ids in order.
        submitted: Mutex<Vec<(usize, Vec<String>)>>,
    }

    impl FakeBatchService {
        fn new(total: u64, plan: Vec<Serve>) -> Arc<FakeBatchService> {
            Arc::new(FakeBatchService {
                total,
                plan: Mutex::new(plan.into()),
                after_seqs: Mutex::new(Vec::new()),
                submitted: Mutex::new(Vec::new()),
            })
        }

        fn after_seqs(&self) -> Vec<u64> {
            self.after_seqs.lock().expect("after_seqs lock").clone()
        }

        fn event(&self, seq: u64) -> v1::BatchEvent {
            let finished = seq == self.total;
            v1::BatchEvent {
                seq,
                at_ms: seq * 10,
                kind: if seq == 1 {
                    v1::EventKind::BatchSubmitted
                } else if finished {
                    v1::EventKind::BatchFinished
                } else {
                    v1::EventKind::OpSucceeded
                } as i32,
                op_id: format!("op-{seq}"),
                batch_state: if finished {
                    v1::BatchState::Succeeded as i32
                } else {
                    v1::BatchState::Unspecified as i32
                },
                ..v1::BatchEvent::default()
            }
        }
    }

    type EventStream = Pin<Box<dyn Stream<Item = Result<v1::BatchEvent, Status>> + Send>>;

    #[tonic::async_trait]
    impl BatchService for FakeBatchService {
        type WatchBatchStream = EventStream;

        async fn watch_batch(
            &self,
            request: tonic::Request<v1::WatchBatchRequest>,
        ) -> Result<tonic::Response<EventStream>, Status> {
            let request = request.into_inner();
            if request.batch_id != "b1" {
                return Err(Status::not_found(format!("batch {}", request.batch_id)));
            }
            self.after_seqs
                .lock()
                .expect("after_seqs lock")
                .push(request.after_seq);
            let step = self.plan.lock().expect("plan lock").pop_front();
            let step = step.unwrap_or(Serve::Through {
                through: self.total,
                end: End::Hang,
            });
            let (first, through, end) = match step {
                Serve::Refuse(code) => return Err(Status::new(code, "refused by the plan")),
                Serve::Through { through, end } => (request.after_seq + 1, through, end),
                Serve::Skipping { skip } => (request.after_seq + 1 + skip, self.total, End::Hang),
            };
            let events: Vec<Result<v1::BatchEvent, Status>> =
                (first..=through).map(|seq| Ok(self.event(seq))).collect();
            let events = tokio_stream::iter(events);
            let stream: EventStream = match end {
                End::Status(code) => Box::pin(events.chain(tokio_stream::iter([Err(
                    Status::new(code, "broken by the plan"),
                )]))),
                End::Clean => Box::pin(events),
                End::Hang => Box::pin(events.chain(futures::stream::pending())),
            };
            Ok(tonic::Response::new(stream))
        }

        async fn submit_batch(
            &self,
            request: tonic::Request<tonic::Streaming<v1::SubmitBatchChunk>>,
        ) -> Result<tonic::Response<v1::SubmitBatchResponse>, Status> {
            let mut chunks = request.into_inner();
            let (mut count, mut ids) = (0, Vec::new());
            while let Some(chunk) = chunks.message().await? {
                if let Some(Part::Ops(ops)) = chunk.part {
                    count += 1;
                    ids.extend(ops.ops.into_iter().map(|op| op.id));
                }
            }
            let op_count = ids.len() as u32;
            self.submitted
                .lock()
                .expect("submitted lock")
                .push((count, ids));
            Ok(tonic::Response::new(v1::SubmitBatchResponse {
                batch_id: "fake".to_owned(),
                op_count,
                warnings: Vec::new(),
            }))
        }

        async fn get_batch(
            &self,
            _request: tonic::Request<v1::GetBatchRequest>,
        ) -> Result<tonic::Response<v1::BatchStatus>, Status> {
            Err(Status::unimplemented("fake coordinator"))
        }

        async fn cancel_batch(
            &self,
            _request: tonic::Request<v1::CancelBatchRequest>,
        ) -> Result<tonic::Response<v1::CancelBatchResponse>, Status> {
            Err(Status::unimplemented("fake coordinator"))
        }

        async fn list_batches(
            &self,
            _request: tonic::Request<v1::ListBatchesRequest>,
        ) -> Result<tonic::Response<v1::ListBatchesResponse>, Status> {
            Err(Status::unimplemented("fake coordinator"))
        }

        async fn spawn_ops(
            &self,
            _request: tonic::Request<v1::SpawnOpsRequest>,
        ) -> Result<tonic::Response<v1::SpawnOpsResponse>, Status> {
            Err(Status::unimplemented("fake coordinator"))
        }

        async fn why(
            &self,
            _request: tonic::Request<v1::WhyRequest>,
        ) -> Result<tonic::Response<v1::WhyResponse>, Status> {
            Err(Status::unimplemented("fake coordinator"))
        }
    }

    /// The fake coordinator served on its own thread and runtime, so that
    /// stopping it drops every connection task, as a dying process would.
    struct FakeCoordinator {
        addr: SocketAddr,
        stop: Option<oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl FakeCoordinator {
        /// Serves `service` on `addr` (port 0: a free one).
        fn start(addr: SocketAddr, service: Arc<FakeBatchService>) -> FakeCoordinator {
            let listener = std::net::TcpListener::bind(addr).expect("bind the fake coordinator");
            listener
                .set_nonblocking(true)
                .expect("nonblocking listener");
            let addr = listener.local_addr().expect("local addr");
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("fake coordinator runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let server = tonic::transport::Server::builder()
                        .add_service(BatchServiceServer::from_arc(service))
                        .serve_with_incoming(TcpListenerStream::new(listener));
                    tokio::select! {
                        result = server => result.expect("fake coordinator serves"),
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime here drops the listener and every
                // connection: the port is closed once the thread is joined.
            });
            FakeCoordinator {
                addr,
                stop: Some(stop),
                thread: Some(thread),
            }
        }

        fn url(&self) -> String {
            format!("http://{}", self.addr)
        }

        /// Stops serving and closes every connection, abruptly.
        fn stop(&mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            if let Some(thread) = self.thread.take() {
                thread.join().expect("fake coordinator thread");
            }
        }
    }

    impl Drop for FakeCoordinator {
        fn drop(&mut self) {
            self.stop();
        }
    }

    fn fast_options() -> WatchOptions {
        WatchOptions {
            reconnect_budget: Duration::from_secs(10),
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(50),
        }
    }

    fn any_port() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    /// Every item of the watch, until it ends.
    async fn collect(
        client: &Client,
        after_seq: u64,
        options: WatchOptions,
    ) -> Vec<Result<v1::BatchEvent, ClientError>> {
        let events = client
            .watch_with("b1", after_seq, options)
            .await
            .expect("watch opens");
        assert_send_and_unpin(&events);
        tokio::time::timeout(TEST_DEADLINE, events.collect::<Vec<_>>())
            .await
            .expect("the watch ends in time")
    }

    /// Callers spawn watches and poll them without pinning them.
    fn assert_send_and_unpin<T: Send + Unpin + 'static>(_: &T) {}

    fn seqs(items: &[Result<v1::BatchEvent, ClientError>]) -> Vec<u64> {
        items
            .iter()
            .map(|item| item.as_ref().expect("an event, not an error").seq)
            .collect()
    }

    #[tokio::test]
    async fn submit_streams_a_big_batch_in_chunks_in_order() {
        let service = FakeBatchService::new(1, Vec::new());
        let coordinator = FakeCoordinator::start(any_port(), service.clone());
        let client = Client::connect(&coordinator.url()).await.expect("connect");
        // ~3.5 MB of ops: several chunks.
        let ids: Vec<String> = (0..30_000).map(|index| format!("{index:0>100}")).collect();
        let batch = v1::Batch {
            name: "big".to_owned(),
            ops: ids
                .iter()
                .map(|id| v1::Op {
                    id: id.clone(),
                    kind: "noop".to_owned(),
                    ..v1::Op::default()
                })
                .collect(),
            ..v1::Batch::default()
        };
        let response = client.submit(batch).await.expect("submit");
        assert_eq!(response.op_count, 30_000);
        let submitted = service.submitted.lock().expect("submitted lock").clone();
        assert_eq!(submitted.len(), 1);
        let (chunks, received) = &submitted[0];
        assert!(*chunks >= 3, "{chunks} chunks");
        assert_eq!(received, &ids);
        client
            .submit(v1::Batch::default())
            .await
            .expect("an empty batch");
        let submitted = service.submitted.lock().expect("submitted lock").clone();
        assert_eq!(submitted[1], (0, Vec::new()));
    }

    #[tokio::test]
    async fn watch_resumes_after_each_broken_stream_where_it_stopped() {
        let service = FakeBatchService::new(
            12,
            vec![
                Serve::Through {
                    through: 3,
                    end: End::Status(Code::Unavailable),
                },
                Serve::Refuse(Code::Unavailable),
                Serve::Through {
                    through: 6,
                    end: End::Clean,
                },
                Serve::Through {
                    through: 9,
                    end: End::Status(Code::Cancelled),
                },
            ],
        );
        let _coordinator = FakeCoordinator::start(any_port(), service.clone());
        let client = Client::connect(&_coordinator.url()).await.expect("connect");

        let items = collect(&client, 0, fast_options()).await;

        assert_eq!(seqs(&items), (1..=12).collect::<Vec<_>>());
        assert_eq!(service.after_seqs(), vec![0, 3, 3, 6, 9]);
    }

    #[tokio::test]
    async fn watch_starts_after_the_callers_seq_and_stops_at_batch_finished() {
        // The stream stays open after BatchFinished: the watch ends anyway.
        let service = FakeBatchService::new(5, Vec::new());
        let coordinator = FakeCoordinator::start(any_port(), service.clone());
        let client = Client::connect(&coordinator.url()).await.expect("connect");

        let items = collect(&client, 2, fast_options()).await;

        assert_eq!(seqs(&items), vec![3, 4, 5]);
        let last = items.last().expect("events").as_ref().expect("event");
        assert_eq!(last.kind(), v1::EventKind::BatchFinished);
        assert_eq!(last.batch_state(), v1::BatchState::Succeeded);
        assert_eq!(service.after_seqs(), vec![2]);
    }

    #[tokio::test]
    async fn watch_resumes_when_the_coordinator_dies_and_comes_back_on_the_same_port() {
        let service = FakeBatchService::new(
            10,
            vec![Serve::Through {
                through: 4,
                end: End::Hang,
            }],
        );
        let mut coordinator = FakeCoordinator::start(any_port(), service.clone());
        let addr = coordinator.addr;
        let client = Client::connect(&coordinator.url()).await.expect("connect");
        let mut events = client
            .watch_with("b1", 0, fast_options())
            .await
            .expect("watch opens");
        let mut seen = Vec::new();
        for _ in 0..4 {
            let event = tokio::time::timeout(TEST_DEADLINE, events.next())
                .await
                .expect("an event in time")
                .expect("the watch goes on")
                .expect("an event");
            seen.push(event.seq);
        }

        // The coordinator dies with the watch open; its port is closed.
        coordinator.stop();
        assert!(std::net::TcpStream::connect(addr).is_err(), "port closed");
        // While it is down, the watch keeps trying (connections refused)
        // and yields nothing: no error within the budget.
        let while_down = tokio::time::timeout(Duration::from_millis(200), events.next()).await;
        assert!(while_down.is_err(), "nothing while down: {while_down:?}");
        let _coordinator = FakeCoordinator::start(addr, service.clone());

        let rest = tokio::time::timeout(TEST_DEADLINE, events.collect::<Vec<_>>())
            .await
            .expect("the watch ends in time");
        seen.extend(seqs(&rest));
        assert_eq!(seen, (1..=10).collect::<Vec<_>>());
        assert_eq!(service.after_seqs(), vec![0, 4]);
    }

    #[tokio::test]
    async fn watch_ends_with_an_error_that_reconnecting_cannot_cure() {
        let service = FakeBatchService::new(
            10,
            vec![Serve::Through {
                through: 2,
                end: End::Status(Code::OutOfRange),
            }],
        );
        let coordinator = FakeCoordinator::start(any_port(), service.clone());
        let client = Client::connect(&coordinator.url()).await.expect("connect");

        let items = collect(&client, 0, fast_options()).await;

        assert_eq!(seqs(&items[..2]), vec![1, 2]);
        assert!(matches!(
            items[2],
            Err(ClientError::Other {
                code: Code::OutOfRange,
                ..
            })
        ));
        assert_eq!(items.len(), 3);
        assert_eq!(service.after_seqs(), vec![0]);

        let missing = client.watch_with("nope", 0, fast_options()).await;
        assert!(matches!(missing, Err(ClientError::NotFound(_))));
    }

    #[tokio::test]
    async fn watch_surfaces_a_gap_instead_of_skipping_events() {
        let service = FakeBatchService::new(
            10,
            vec![
                Serve::Through {
                    through: 3,
                    end: End::Status(Code::Unavailable),
                },
                Serve::Skipping { skip: 1 },
            ],
        );
        let coordinator = FakeCoordinator::start(any_port(), service.clone());
        let client = Client::connect(&coordinator.url()).await.expect("connect");

        let items = collect(&client, 0, fast_options()).await;

        assert_eq!(seqs(&items[..3]), vec![1, 2, 3]);
        assert!(matches!(
            items[3],
            Err(ClientError::Other {
                code: Code::Internal,
                ..
            })
        ));
        assert_eq!(items.len(), 4);
        assert_eq!(service.after_seqs(), vec![0, 3]);
    }

    #[tokio::test]
    async fn watch_gives_up_once_the_reconnect_budget_is_spent() {
        let mut plan = vec![Serve::Through {
            through: 2,
            end: End::Status(Code::Unavailable),
        }];
        plan.extend(std::iter::repeat_n(Serve::Refuse(Code::Unavailable), 1000));
        let service = FakeBatchService::new(10, plan);
        let coordinator = FakeCoordinator::start(any_port(), service.clone());
        let client = Client::connect(&coordinator.url()).await.expect("connect");
        let options = WatchOptions {
            reconnect_budget: Duration::from_millis(200),
            ..fast_options()
        };

        let items = collect(&client, 0, options).await;

        assert_eq!(seqs(&items[..2]), vec![1, 2]);
        assert!(matches!(items[2], Err(ClientError::Unavailable(_))));
        assert_eq!(items.len(), 3);
        let after_seqs = service.after_seqs();
        assert!(after_seqs.len() > 2, "it retried: {after_seqs:?}");
        assert!(after_seqs[1..].iter().all(|&after_seq| after_seq == 2));
    }

    #[tokio::test]
    async fn watch_with_a_zero_budget_never_reconnects() {
        let service = FakeBatchService::new(
            10,
            vec![Serve::Through {
                through: 2,
                end: End::Clean,
            }],
        );
        let coordinator = FakeCoordinator::start(any_port(), service.clone());
        let client = Client::connect(&coordinator.url()).await.expect("connect");
        let options = WatchOptions {
            reconnect_budget: Duration::ZERO,
            ..fast_options()
        };

        let items = collect(&client, 0, options).await;

        assert_eq!(seqs(&items[..2]), vec![1, 2]);
        assert!(matches!(items[2], Err(ClientError::Unavailable(_))));
        assert_eq!(service.after_seqs(), vec![0]);
    }

    #[test]
    fn only_transport_failures_make_an_unknown_status_resumable() {
        let io_error = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let local = Status::from_error(Box::new(io_error));
        assert_eq!(local.code(), Code::Unknown);
        assert!(watch_can_resume(&local));

        let transport = Status::from_error("connection went away".into());
        assert_eq!(transport.code(), Code::Unknown);
        assert!(watch_can_resume(&transport));

        assert!(!watch_can_resume(&Status::unknown("sent by a coordinator")));
        assert!(watch_can_resume(&Status::cancelled("cut")));
        assert!(!watch_can_resume(&Status::not_found("batch")));
        assert!(!watch_can_resume(&Status::invalid_argument("batch id")));
        assert!(!watch_can_resume(&Status::out_of_range("seq")));
    }
}
