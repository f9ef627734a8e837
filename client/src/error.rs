//! Typed client errors: a gRPC status mapped back by its code (never by
//! its message), with the validation problems decoded from its details.

use prost::Message;
use tonic::Code;
use volley_proto::v1;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The coordinator could not be reached (connection refused, DNS, …).
    #[error("cannot reach the coordinator at {url}: {message}")]
    Unreachable { url: String, message: String },
    /// The batch was rejected; nothing ran. Every problem is listed.
    #[error("{message}")]
    Invalid {
        message: String,
        problems: Vec<v1::Problem>,
        /// Every problem found: more than `problems` when the coordinator
        /// cut the list to fit its answer.
        total: usize,
    },
    #[error("not found: {0}")]
    NotFound(String),
    /// The connection broke under the call, or never carried it (a TLS
    /// server spoken to in plaintext, a handshake the server refused).
    #[error("the connection to the coordinator failed: {0}")]
    Transport(String),
    /// The coordinator is there but cannot serve now (store down, draining).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A compare-and-set found another version, or a write came from a
    /// stale attempt.
    #[error("conflict: {0}")]
    Conflict(String),
    /// What the call would create exists already, made by another request
    /// (e.g. an idempotency key reused for another batch); nothing was done.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// A wait ran out of time.
    #[error("timed out: {0}")]
    TimedOut(String),
    /// No token, or one that is unknown, expired or revoked.
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    /// The token's role (or tenant) may not do this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("{code:?}: {message}")]
    Other { code: Code, message: String },
}

impl ClientError {
    /// True when the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Unreachable { .. }
            | ClientError::Unavailable(_)
            | ClientError::Transport(_) => true,
            ClientError::Other { code, .. } => {
                matches!(code, Code::DeadlineExceeded | Code::Aborted)
            }
            ClientError::Invalid { .. }
            | ClientError::NotFound(_)
            | ClientError::Conflict(_)
            | ClientError::AlreadyExists(_)
            | ClientError::TimedOut(_)
            | ClientError::Unauthenticated(_)
            | ClientError::PermissionDenied(_) => false,
        }
    }

    pub(crate) fn unreachable(url: &str, error: impl std::fmt::Display) -> Self {
        ClientError::Unreachable {
            url: url.to_owned(),
            message: error.to_string(),
        }
    }
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().to_owned();
        // A status made on this side from a transport failure carries that
        // failure as its source; one the server sent never has a source.
        if std::error::Error::source(&status).is_some()
            && matches!(
                status.code(),
                Code::Unknown | Code::Internal | Code::Cancelled | Code::Unavailable
            )
        {
            return ClientError::Transport(crate::client::source_chain(&status));
        }
        match status.code() {
            Code::InvalidArgument => {
                let failure = v1::ValidationFailure::decode(status.details()).unwrap_or_default();
                let total = (failure.total as usize).max(failure.problems.len());
                ClientError::Invalid {
                    message,
                    problems: failure.problems,
                    total,
                }
            }
            Code::NotFound => ClientError::NotFound(message),
            Code::AlreadyExists => ClientError::AlreadyExists(message),
            Code::Unavailable => ClientError::Unavailable(message),
            Code::FailedPrecondition | Code::Aborted => ClientError::Conflict(message),
            Code::DeadlineExceeded => ClientError::TimedOut(message),
            Code::Unauthenticated => ClientError::Unauthenticated(message),
            Code::PermissionDenied => ClientError::PermissionDenied(message),
            code => ClientError::Other { code, message },
        }
    }
}
