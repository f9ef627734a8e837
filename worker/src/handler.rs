//! The `Handler` trait users implement for their own op kinds, and what a handler sees and returns.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use volley_proto::v1::{FailureKind, Op};
use volley_proto::{BatchId, OpId};

use crate::memory::{MemoryError, MemoryScope, MemoryStore, MemoryWriter, PutOptions};
use crate::spawn::{OpSpawner, SpawnError, SpawnOutcome};

/// Runs the ops of one kind. One instance serves every op of its kind, concurrently.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Runs one op. `args` is the op's JSON args with templates already filled in.
    async fn run(&self, ctx: &OpContext, args: serde_json::Value)
    -> Result<OpOutput, HandlerError>;
}

/// What a successful op produced: its text output and optional structured details.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OpOutput {
    pub output: String,
    pub details: Option<serde_json::Value>,
}

impl OpOutput {
    /// An output with text and no details.
    pub fn text(output: impl Into<String>) -> Self {
        Self {
            output: output.into(),
            details: None,
        }
    }

    /// An empty output (`noop`, `sleep`).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Adds structured details (sent as the op's `details_json`).
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
}

/// Why an op failed, and what the handler wants done about it: give up
/// (`Permanent`) or try again, optionally not before `after`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum HandlerError {
    /// Retrying cannot help (bad args, a path outside the root, a disabled kind).
    #[error("{message}")]
    Permanent {
        message: String,
        details: Option<serde_json::Value>,
    },
    /// Another attempt may succeed (a failed command, a timeout, an unreachable service).
    #[error("{message}")]
    Retry {
        message: String,
        after: Option<Duration>,
        details: Option<serde_json::Value>,
    },
}

impl HandlerError {
    /// A failure that retrying cannot fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent {
            message: message.into(),
            details: None,
        }
    }

    /// A failure another attempt may fix, as soon as the coordinator likes.
    pub fn retry(message: impl Into<String>) -> Self {
        Self::Retry {
            message: message.into(),
            after: None,
            details: None,
        }
    }

    /// A failure another attempt may fix, not before `after`.
    pub fn retry_after(message: impl Into<String>, after: Duration) -> Self {
        Self::Retry {
            message: message.into(),
            after: Some(after),
            details: None,
        }
    }

    /// Attaches structured details (sent as the op's `details_json`).
    pub fn with_details(mut self, new_details: serde_json::Value) -> Self {
        match &mut self {
            Self::Permanent { details, .. } | Self::Retry { details, .. } => {
                *details = Some(new_details)
            }
        }
        self
    }

    pub fn message(&self) -> &str {
        match self {
            Self::Permanent { message, .. } | Self::Retry { message, .. } => message,
        }
    }

    pub fn details(&self) -> Option<&serde_json::Value> {
        match self {
            Self::Permanent { details, .. } | Self::Retry { details, .. } => details.as_ref(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retry { .. })
    }

    /// How the coordinator sees this error: `Permanent` is
    /// [`FailureKind::Permanent`], `Retry` is [`FailureKind::Error`] (a
    /// retryable failure). Timeouts and cancels are classified by the executor.
    pub fn failure_kind(&self) -> FailureKind {
        match self {
            Self::Permanent { .. } => FailureKind::Permanent,
            Self::Retry { .. } => FailureKind::Error,
        }
    }

    /// The delay a `Retry` asks for, if any.
    pub fn retry_after_delay(&self) -> Option<Duration> {
        match self {
            Self::Retry { after, .. } => *after,
            Self::Permanent { .. } => None,
        }
    }
}

impl From<MemoryError> for HandlerError {
    fn from(error: MemoryError) -> Self {
        // Classified by variant: a coordinator that cannot be reached now may be reachable later.
        if error.is_retryable() {
            Self::retry(error.to_string())
        } else {
            Self::permanent(error.to_string())
        }
    }
}

impl From<SpawnError> for HandlerError {
    fn from(error: SpawnError) -> Self {
        match &error {
            SpawnError::Invalid { problems } => {
                let problems: Vec<serde_json::Value> = problems
                    .iter()
                    .map(|problem| {
                        serde_json::json!({
                            "op_id": problem.op_id,
                            "field": problem.field,
                            "message": problem.message,
                        })
                    })
                    .collect();
                Self::permanent(error.to_string())
                    .with_details(serde_json::json!({ "problems": problems }))
            }
            _ if error.is_retryable() => Self::retry(error.to_string()),
            _ => Self::permanent(error.to_string()),
        }
    }
}

/// The most bytes an op's output may hold unless the worker or the op says
/// otherwise: 16 MiB.
pub const DEFAULT_MAX_OUTPUT: usize = 16 * 1024 * 1024;

/// Everything a handler knows about the op it runs. Cheap to clone.
#[derive(Clone)]
pub struct OpContext {
    inner: Arc<OpContextInner>,
}

struct OpContextInner {
    batch_id: BatchId,
    op_id: OpId,
    op_index: u32,
    attempt: u32,
    kind: String,
    /// The memory namespace of the op's batch; empty: the batch's own memory.
    namespace: String,
    cancel: CancellationToken,
    root: Option<PathBuf>,
    allow_shell: bool,
    memory: Arc<dyn MemoryStore>,
    coordinator_url: Option<String>,
    spawner: Option<Arc<dyn OpSpawner>>,
    /// The attempt's capability token from the coordinator ("" without
    /// authentication). Never printed.
    token: String,
    /// The most bytes the op's output may hold.
    max_output: usize,
    /// How long the executor waits, after the op's cancel, for the handler
    /// to end on its own before dropping it (ms; 0 until a handler asks).
    cancel_grace_ms: AtomicU64,
}

impl std::fmt::Debug for OpContext {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("OpContext")
            .field("batch_id", &self.inner.batch_id)
            .field("op_id", &self.inner.op_id)
            .field("op_index", &self.inner.op_index)
            .field("attempt", &self.inner.attempt)
            .field("kind", &self.inner.kind)
            .field("namespace", &self.inner.namespace)
            .finish_non_exhaustive()
    }
}

/// Builds an [`OpContext`]; the runtime does this for every assignment, tests
/// and embedded runners do it by hand.
pub struct OpContextBuilder {
    inner: OpContextInner,
}

impl OpContextBuilder {
    pub fn op(mut self, op_id: impl Into<OpId>, op_index: u32, attempt: u32) -> Self {
        self.inner.op_id = op_id.into();
        self.inner.op_index = op_index;
        self.inner.attempt = attempt;
        self
    }

    pub fn batch(mut self, batch_id: impl Into<BatchId>) -> Self {
        self.inner.batch_id = batch_id.into();
        self
    }

    /// The memory namespace of the op's batch (empty: the batch's own memory).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.inner.namespace = namespace.into();
        self
    }

    /// The URL of the coordinator the worker serves (agents get it as `VOLLEY_COORDINATOR`).
    /// The most bytes the op's output may hold (default
    /// [`DEFAULT_MAX_OUTPUT`]).
    pub fn max_output(mut self, bytes: usize) -> Self {
        self.inner.max_output = bytes;
        self
    }

    /// The attempt's capability token (`Assignment.token`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.inner.token = token.into();
        self
    }

    pub fn coordinator_url(mut self, coordinator_url: Option<String>) -> Self {
        self.inner.coordinator_url = coordinator_url;
        self
    }

    /// Where [`OpContext::spawn`] sends new ops; without one it fails with
    /// [`SpawnError::NoCoordinator`].
    pub fn spawner(mut self, spawner: Option<Arc<dyn OpSpawner>>) -> Self {
        self.inner.spawner = spawner;
        self
    }

    pub fn cancel(mut self, cancel: CancellationToken) -> Self {
        self.inner.cancel = cancel;
        self
    }

    pub fn root(mut self, root: Option<PathBuf>) -> Self {
        self.inner.root = root;
        self
    }

    pub fn allow_shell(mut self, allow_shell: bool) -> Self {
        self.inner.allow_shell = allow_shell;
        self
    }

    pub fn memory(mut self, memory: Arc<dyn MemoryStore>) -> Self {
        self.inner.memory = memory;
        self
    }

    pub fn build(self) -> OpContext {
        OpContext {
            inner: Arc::new(self.inner),
        }
    }
}

impl OpContext {
    /// A context for an op of `kind`, with a fresh cancel token, no root, shell
    /// off, an in-process [`LocalMemory`](crate::LocalMemory), no namespace, no
    /// coordinator and no spawner; adjust with the builder.
    pub fn builder(kind: impl Into<String>) -> OpContextBuilder {
        OpContextBuilder {
            inner: OpContextInner {
                batch_id: BatchId::new("local"),
                op_id: OpId::new("op"),
                op_index: 0,
                attempt: 1,
                kind: kind.into(),
                namespace: String::new(),
                cancel: CancellationToken::new(),
                root: None,
                allow_shell: false,
                memory: Arc::new(crate::memory::LocalMemory::default()),
                coordinator_url: None,
                token: String::new(),
                max_output: DEFAULT_MAX_OUTPUT,
                spawner: None,
                cancel_grace_ms: AtomicU64::new(0),
            },
        }
    }

    pub fn batch_id(&self) -> &BatchId {
        &self.inner.batch_id
    }

    pub fn op_id(&self) -> &OpId {
        &self.inner.op_id
    }

    pub fn op_index(&self) -> u32 {
        self.inner.op_index
    }

    /// 1 for the first try.
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    pub fn kind(&self) -> &str {
        &self.inner.kind
    }

    /// Fires when the op is cancelled or times out. The runtime also drops the
    /// handler's future then (after a cancel, once the grace the handler
    /// asked for with [`ask_cancel_grace`](Self::ask_cancel_grace) is over);
    /// the token lets a handler clean up cooperatively.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.inner.cancel
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Asks that after a cancel the runtime wait up to `grace` for this
    /// handler to end on its own before dropping it (the process runner
    /// gives a program SIGTERM and time to clean up). Timeouts never wait.
    /// The longest grace asked for wins.
    pub fn ask_cancel_grace(&self, grace: Duration) {
        let millis = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        self.inner
            .cancel_grace_ms
            .fetch_max(millis, std::sync::atomic::Ordering::Relaxed);
    }

    /// The grace a handler asked for with [`ask_cancel_grace`](Self::ask_cancel_grace); zero by default.
    pub fn cancel_grace(&self) -> Duration {
        Duration::from_millis(
            self.inner
                .cancel_grace_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// The worker's `--root`, if it has one.
    pub fn root(&self) -> Option<&Path> {
        self.inner.root.as_deref()
    }

    /// Whether the worker runs host programs (`--allow-shell`).
    pub fn allow_shell(&self) -> bool {
        self.inner.allow_shell
    }

    /// The memory namespace of the op's batch; empty when it uses its own memory.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The URL of the coordinator this worker serves; `None` when the op runs without one.
    /// The attempt's capability token: what `shell` and `agent` programs
    /// get as `VOLLEY_TOKEN` ("" without authentication).
    pub fn token(&self) -> &str {
        &self.inner.token
    }

    /// The most bytes the op's output may hold: a handler that would return
    /// more fails the op ("output exceeded …"), and a program's stdout is
    /// cut off (and the program killed) once it passes this.
    pub fn max_output(&self) -> usize {
        self.inner.max_output
    }

    pub fn coordinator_url(&self) -> Option<&str> {
        self.inner.coordinator_url.as_deref()
    }

    /// The op's memory: its batch's namespace when it has one, else the
    /// batch's own. Writes through it are tagged with this op and attempt.
    pub fn memory(&self) -> MemoryHandle {
        MemoryHandle {
            store: Arc::clone(&self.inner.memory),
            scope: MemoryScope::for_op(&self.inner.batch_id, &self.inner.namespace),
            writer: MemoryWriter {
                op_id: self.inner.op_id.clone(),
                attempt: self.inner.attempt,
            },
        }
    }

    /// Adds `ops` to this op's batch (`BatchService.SpawnOps`, `spawned_by`
    /// this op). They are validated with the batch: new ids unique, `after`
    /// may name existing ops, no cycles.
    pub async fn spawn(&self, ops: Vec<Op>) -> Result<SpawnOutcome, SpawnError> {
        let Some(spawner) = &self.inner.spawner else {
            return Err(SpawnError::NoCoordinator);
        };
        spawner
            .spawn(&self.inner.batch_id, ops, self.inner.op_id.as_str())
            .await
    }
}

/// The memory one op sees (its batch's namespace, or the batch's own), with
/// its writes tagged by the op's id and attempt.
#[derive(Clone)]
pub struct MemoryHandle {
    store: Arc<dyn MemoryStore>,
    scope: MemoryScope,
    writer: MemoryWriter,
}

impl std::fmt::Debug for MemoryHandle {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("MemoryHandle")
            .field("scope", &self.scope)
            .field("writer", &self.writer)
            .finish_non_exhaustive()
    }
}

impl MemoryHandle {
    /// Whose memory this is.
    pub fn scope(&self) -> &MemoryScope {
        &self.scope
    }

    /// The key's value, `None` if it is not set.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, MemoryError> {
        Ok(self.get_entry(key).await?.map(|entry| entry.value))
    }

    /// The key's value with its content type and version, `None` if it is not set.
    pub async fn get_entry(
        &self,
        key: &str,
    ) -> Result<Option<crate::memory::MemoryEntry>, MemoryError> {
        self.store.get(&self.scope, key).await
    }

    /// The key's value as text (invalid UTF-8 replaced), `None` if it is not set.
    pub async fn get_string(&self, key: &str) -> Result<Option<String>, MemoryError> {
        Ok(self
            .get(key)
            .await?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Sets the key; ops that `wait_for` it are unblocked by the coordinator.
    pub async fn put(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<(), MemoryError> {
        self.put_with(key, value, PutOptions::default()).await?;
        Ok(())
    }

    /// Sets the key with a content type, an expiry or a compare-and-set
    /// condition; returns the key's new version. A failed condition is
    /// [`MemoryError::VersionMismatch`].
    pub async fn put_with(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
        options: PutOptions,
    ) -> Result<u64, MemoryError> {
        self.store
            .put(&self.scope, key, value.into(), &options, Some(&self.writer))
            .await
    }

    /// Removes the key; `false` if it was not set.
    pub async fn delete(&self, key: &str) -> Result<bool, MemoryError> {
        self.store.delete(&self.scope, key).await
    }

    /// Adds `delta` to the integer under the key (0 if unset); returns the sum.
    pub async fn incr(&self, key: &str, delta: i64) -> Result<i64, MemoryError> {
        self.store.incr(&self.scope, key, delta).await
    }

    /// The key's value once it exists; [`MemoryError::WaitTimedOut`] after
    /// `timeout` (`None`: as long as it takes — the op's own timeout and
    /// cancel still apply).
    pub async fn wait_for(
        &self,
        key: &str,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, MemoryError> {
        self.store.wait_for(&self.scope, key, timeout).await
    }
}

/// A [`Handler`] made of a closure; see [`handler_fn`].
pub struct FnHandler<F> {
    function: F,
}

/// Wraps `|ctx, args| async move { … }` as a [`Handler`]. The closure gets its
/// own clone of the context so the future can own it.
pub fn handler_fn<F, Fut>(function: F) -> FnHandler<F>
where
    F: Fn(OpContext, serde_json::Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<OpOutput, HandlerError>> + Send + 'static,
{
    FnHandler { function }
}

#[async_trait]
impl<F, Fut> Handler for FnHandler<F>
where
    F: Fn(OpContext, serde_json::Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<OpOutput, HandlerError>> + Send + 'static,
{
    async fn run(
        &self,
        ctx: &OpContext,
        args: serde_json::Value,
    ) -> Result<OpOutput, HandlerError> {
        (self.function)(ctx.clone(), args).await
    }
}
