//! Runs one assignment into one result: args, handler lookup, timeout, cancel, panics.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use volley_proto::v1::{Assignment, FailureKind, OpResult};

use crate::handler::{HandlerError, OpContext, OpOutput};
use crate::memory::MemoryStore;
use crate::metrics::OpMetrics;
use crate::registry::Registry;
use crate::spawn::OpSpawner;

/// Runs assignments with a registry's handlers. Shared by every op of a worker
/// (and usable without a coordinator, with [`LocalMemory`](crate::LocalMemory)).
#[derive(Clone)]
pub struct Executor {
    registry: Registry,
    memory: Arc<dyn MemoryStore>,
    root: Option<PathBuf>,
    allow_shell: bool,
    coordinator_url: Option<String>,
    spawner: Option<Arc<dyn OpSpawner>>,
    /// Per-kind metric handles, made once for the registry's kinds.
    metrics: Arc<OpMetrics>,
    /// Named in each op's span.
    worker_id: Option<Arc<str>>,
    /// The most bytes any op's output may hold (an op may ask for less).
    max_output: usize,
}

impl Executor {
    /// `root` and `allow_shell` are what handlers see in their [`OpContext`];
    /// pass the same values as the registry's handlers were made with (the
    /// built-ins' `BuiltinConfig`).
    pub fn new(
        registry: Registry,
        memory: Arc<dyn MemoryStore>,
        root: Option<PathBuf>,
        allow_shell: bool,
    ) -> Self {
        let metrics = Arc::new(OpMetrics::new(registry.kinds()));
        Self {
            registry,
            memory,
            root,
            allow_shell,
            coordinator_url: None,
            spawner: None,
            metrics,
            worker_id: None,
            max_output: crate::DEFAULT_MAX_OUTPUT,
        }
    }

    /// The worker these ops run on, named in each op's span.
    /// The most bytes any op's output may hold (default
    /// [`crate::DEFAULT_MAX_OUTPUT`]); an op's `max_output` may lower it.
    pub fn with_max_output(mut self, bytes: usize) -> Self {
        self.max_output = bytes;
        self
    }

    pub fn with_worker_id(mut self, worker_id: impl Into<Arc<str>>) -> Self {
        self.worker_id = Some(worker_id.into());
        self
    }

    /// The coordinator ops run for: its URL (agents get it as
    /// `VOLLEY_COORDINATOR`) and where [`OpContext::spawn`] sends new ops.
    /// Without it handlers see no coordinator URL and cannot spawn.
    pub fn with_coordinator(
        mut self,
        coordinator_url: impl Into<String>,
        spawner: Arc<dyn OpSpawner>,
    ) -> Self {
        self.coordinator_url = Some(coordinator_url.into());
        self.spawner = Some(spawner);
        self
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Runs `assignment` to its result. Never fails: every problem becomes a
    /// failed [`OpResult`] with its `failure_kind` set: the handler's error's
    /// ([`HandlerError::failure_kind`]; a panic is `ERROR`), `TIMEOUT` past
    /// `timeout_ms`, `CANCELLED` once `cancel` fired.
    /// `cancel` aborts the op: its handler's future is dropped, after the
    /// grace the handler asked for ([`OpContext::ask_cancel_grace`]; a
    /// shell's process group gets SIGTERM, then SIGKILL). `timeout_ms`
    /// drops it at once (the group gets SIGKILL).
    ///
    /// The op runs in an `op.execute` span, a child of the coordinator's
    /// dispatch span when the assignment carries a trace context (W3C, in
    /// `trace_context`), with how it ended as `outcome` (and an error
    /// status when it failed).
    pub async fn run(&self, assignment: Assignment, cancel: CancellationToken) -> OpResult {
        let span = tracing::info_span!(
            "op.execute",
            otel.kind = "consumer",
            batch = assignment.batch_id.as_str(),
            op = assignment.op_id.as_str(),
            kind = assignment.kind.as_str(),
            attempt = assignment.attempt,
            worker = self.worker_id.as_deref().unwrap_or(""),
            outcome = tracing::field::Empty,
            traceparent = tracing::field::Empty,
        );
        if !assignment.trace_context.is_empty() {
            crate::tracing_ctx::join_trace(&span, &assignment.trace_context);
        }
        self.run_in_span(assignment, cancel, span.clone())
            .instrument(span)
            .await
    }

    async fn run_in_span(
        &self,
        assignment: Assignment,
        cancel: CancellationToken,
        span: tracing::Span,
    ) -> OpResult {
        let started_at_ms = unix_millis();
        let started = Instant::now();
        let outcome = self.outcome(&assignment, cancel).await;
        let elapsed = started.elapsed();
        let duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        match &outcome {
            Ok(_) => {
                span.record("outcome", "succeeded");
                tracing::debug!(duration_ms, "op succeeded");
            }
            Err(failure) => {
                span.record("outcome", failure_outcome(failure.kind));
                crate::tracing_ctx::mark_failed(&span, failure.error.message());
                tracing::info!(
                    duration_ms,
                    error = failure.error.message(),
                    kind = failure.kind.as_str_name(),
                    "op failed"
                );
            }
        }
        let result = to_result(&assignment, outcome, started_at_ms, duration_ms);
        self.metrics.record(&assignment.kind, &result, elapsed);
        result
    }

    async fn outcome(
        &self,
        assignment: &Assignment,
        cancel: CancellationToken,
    ) -> Result<OpOutput, Failure> {
        let Some(handler) = self.registry.get(&assignment.kind) else {
            return Err(Failure::handler(HandlerError::permanent(format!(
                "kind {} is not registered on this worker (op {})",
                assignment.kind, assignment.op_id
            ))));
        };
        let args = if assignment.args_json.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&assignment.args_json).map_err(|error| {
                Failure::handler(HandlerError::permanent(format!(
                    "op {}: args_json is not valid JSON: {error}",
                    assignment.op_id
                )))
            })?
        };
        // A child token: firing it on timeout must not cancel anything else.
        let op_cancel = cancel.child_token();
        let max_output = match usize::try_from(assignment.max_output_bytes) {
            Ok(asked) if asked > 0 => asked.min(self.max_output),
            _ => self.max_output,
        };
        let ctx = OpContext::builder(assignment.kind.clone())
            .batch(assignment.batch_id.clone())
            .op(
                assignment.op_id.clone(),
                assignment.op_index,
                assignment.attempt,
            )
            .namespace(assignment.namespace.clone())
            .cancel(op_cancel.clone())
            .root(self.root.clone())
            .allow_shell(self.allow_shell)
            .memory(Arc::clone(&self.memory))
            .coordinator_url(self.coordinator_url.clone())
            .spawner(self.spawner.clone())
            .token(assignment.token.clone())
            .max_output(max_output)
            .build();
        // The handler's memory and spawn calls carry the attempt's token.
        let token: std::sync::Arc<str> = assignment.token.as_str().into();
        let run = crate::grpc::OP_TOKEN.scope(
            token,
            AssertUnwindSafe(handler.run(&ctx, args)).catch_unwind(),
        );
        tokio::pin!(run);
        let timeout =
            (assignment.timeout_ms > 0).then(|| Duration::from_millis(assignment.timeout_ms));
        let timer = async {
            match timeout {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        // Biased: a handler that finished wins over a timer or cancel that
        // fired in the same poll.
        tokio::select! {
            biased;
            outcome = &mut run => match outcome {
                // Never sent: an output past its cap fails the op, and the
                // worker's stream carries a short error instead.
                Ok(Ok(output)) if output.output.len() > max_output => Err(Failure {
                    error: output_exceeded(&assignment.kind, max_output),
                    kind: FailureKind::Error,
                }),
                Ok(Ok(output)) => Ok(output),
                // A handler that gave up because it saw the cancel was cancelled, not failing.
                Ok(Err(error)) if cancel.is_cancelled() => Err(Failure { error, kind: FailureKind::Cancelled }),
                Ok(Err(error)) => Err(Failure::handler(error)),
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|text| (*text).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".to_owned());
                    Err(Failure {
                        error: HandlerError::retry(format!("handler of kind {} panicked: {message}", assignment.kind)),
                        kind: FailureKind::Error,
                    })
                }
            },
            () = timer => {
                op_cancel.cancel();
                Err(Failure {
                    error: HandlerError::retry(format!("timed out after {}", format_duration(assignment.timeout_ms))),
                    kind: FailureKind::Timeout,
                })
            }
            () = op_cancel.cancelled() => {
                // A handler that asked for a grace (a host program that got
                // SIGTERM) may end on its own first; either way the op was
                // cancelled, whatever the handler says.
                let grace = ctx.cancel_grace();
                if !grace.is_zero() {
                    let _ = tokio::time::timeout(grace, &mut run).await;
                }
                Err(Failure {
                    error: HandlerError::retry("cancelled"),
                    kind: FailureKind::Cancelled,
                })
            }
        }
    }
}

/// Why an op whose output passed its cap failed: permanent, since another
/// attempt would write as much.
pub fn output_exceeded(kind: &str, max_output: usize) -> HandlerError {
    HandlerError::permanent(format!(
        "{kind} output exceeded {max_output} bytes (max_output): raise the op's max_output or the worker's --max-output, or write it to a file"
    ))
}

/// The `outcome` of a failed op's span.
fn failure_outcome(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::Timeout => "timeout",
        FailureKind::Cancelled => "cancelled",
        FailureKind::Permanent => "failed_permanently",
        FailureKind::Error | FailureKind::Unspecified => "failed",
    }
}

/// Why an op failed: the error it reports and how the coordinator should see it.
struct Failure {
    error: HandlerError,
    kind: FailureKind,
}

impl Failure {
    /// A handler's own error (or the executor's refusal to run it),
    /// classified by [`HandlerError::failure_kind`].
    fn handler(error: HandlerError) -> Self {
        let kind = error.failure_kind();
        Self { error, kind }
    }
}

fn to_result(
    assignment: &Assignment,
    outcome: Result<OpOutput, Failure>,
    started_at_ms: u64,
    duration_ms: u64,
) -> OpResult {
    let mut result = OpResult {
        batch_id: assignment.batch_id.clone(),
        op_index: assignment.op_index,
        attempt: assignment.attempt,
        started_at_ms,
        duration_ms,
        ..OpResult::default()
    };
    match outcome {
        Ok(output) => {
            result.ok = true;
            result.output = output.output;
            result.details_json = output
                .details
                .map(|details| details.to_string())
                .unwrap_or_default();
        }
        Err(Failure { error, kind }) => {
            result.ok = false;
            result.error = error.message().to_owned();
            result.details_json = failure_details(&error).to_string();
            result.set_failure_kind(kind);
            result.retry_after_ms = error.retry_after_delay().map_or(0, |after| {
                u64::try_from(after.as_millis()).unwrap_or(u64::MAX)
            });
        }
    }
    result
}

/// A failure's details: the handler's own (an object's fields, or under
/// `details`), plus `retryable` and `retry_after_ms` so the coordinator can
/// honour what the handler asked for.
fn failure_details(error: &HandlerError) -> serde_json::Value {
    let mut fields = match error.details() {
        Some(serde_json::Value::Object(object)) => object.clone(),
        Some(other) => {
            let mut object = serde_json::Map::new();
            object.insert("details".to_owned(), other.clone());
            object
        }
        None => serde_json::Map::new(),
    };
    fields.insert("retryable".to_owned(), error.is_retryable().into());
    if let Some(after) = error.retry_after_delay() {
        let after_ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        fields.insert("retry_after_ms".to_owned(), after_ms.into());
    }
    serde_json::Value::Object(fields)
}

fn format_duration(milliseconds: u64) -> String {
    if milliseconds >= 1000 && milliseconds.is_multiple_of(1000) {
        format!("{}s", milliseconds / 1000)
    } else {
        format!("{milliseconds}ms")
    }
}

pub(crate) fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
