//! What the coordinator's domain calls fail with. `grpc::status` maps each
//! variant to a precise `tonic::Code`.

use volley_plan::Problem;
use volley_proto::BatchId;
use volley_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The batch is invalid; nothing was stored.
    #[error("invalid batch: {}", summarize(.0))]
    Invalid(Vec<Problem>),
    #[error("batch {0} not found")]
    BatchNotFound(BatchId),
    /// The batch has no op of this id (it is visible to the caller).
    #[error("batch {batch} has no op `{op_id}`{}", suggestion.as_ref().map(|close| format!("; did you mean `{close}`?")).unwrap_or_default())]
    OpNotFound {
        batch: BatchId,
        op_id: String,
        suggestion: Option<String>,
    },
    /// The request itself is malformed (not the batch's content).
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// A `token create` request that cannot be honoured.
    #[error("{0}")]
    Token(#[from] crate::auth::TokenSpecError),
    /// An idempotency key came again with another request than the one
    /// it was first used for (`what`: the batch it created, or the ops it
    /// spawned); nothing was done.
    #[error("idempotency key `{key}` was used for {what}; use a new key for a new request")]
    IdempotencyConflict { key: String, what: String },
    #[error("the coordinator is shutting down")]
    ShuttingDown,
    #[error("memory value for `{key}` is {size} bytes; the most is {max}")]
    ValueTooLarge {
        key: String,
        size: usize,
        max: usize,
    },
    #[error(
        "stale write refused: op `{op_id}` attempt {attempt} is not running (its current attempt is {current})"
    )]
    StaleWriter {
        op_id: String,
        attempt: u32,
        current: u32,
    },
    #[error("memory key `{key}` did not appear within {}", humantime::format_duration(*.waited))]
    WaitTimedOut {
        key: String,
        waited: std::time::Duration,
    },
    /// A memory watch cannot go on without a gap: the store restarted empty
    /// (its epoch changed, or the scope's revisions went back behind the
    /// one the watch resumes after).
    #[error(
        "memory of {scope} was reset: the store restarted empty and revision {after} is gone (the scope is at revision {latest}); read the keys again"
    )]
    MemoryReset {
        scope: String,
        after: u64,
        latest: u64,
    },
}

fn summarize(problems: &[Problem]) -> String {
    let mut text = format!("{} problem(s)", problems.len());
    for problem in problems {
        text.push_str("\n  ");
        text.push_str(&problem.to_string());
    }
    text
}
