//! The one place domain errors become gRPC statuses. Every variant is
//! matched explicitly so a new one cannot slip through as `Internal`.

use prost::Message;
use tonic::{Code, Status};
use volley_proto::v1;
use volley_store::StoreError;

use crate::auth::AuthError;
use crate::error::CoordinatorError;

/// The most bytes of problems one status carries in its details, and of
/// its message: together well under the 16 KiB a peer's HTTP/2 header list
/// may hold (the details travel base64-encoded in a header), so a batch
/// with 40 problems or a 100,000-op cycle still gets a readable answer.
const PROBLEM_BYTES: usize = 6 * 1024;
const MESSAGE_BYTES: usize = 2 * 1024;
/// The longest one problem's message may be in a status.
const PROBLEM_MESSAGE_BYTES: usize = 1024;

/// `text` cut to at most `max` bytes on a character boundary, with `…`.
fn shortened(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// An INVALID_ARGUMENT status for `problems`: the first ones that fit the
/// byte budget in its details, with the count of all of them.
fn invalid(problems: Vec<volley_plan::Problem>) -> Status {
    let total = problems.len();
    let mut kept = Vec::new();
    let mut bytes = 0;
    for problem in problems {
        let problem = v1::Problem {
            op_id: shortened(&problem.op_id, 256),
            field: shortened(&problem.field, 256),
            message: shortened(&problem.message, PROBLEM_MESSAGE_BYTES),
        };
        bytes += problem.encoded_len() + 4;
        if bytes > PROBLEM_BYTES && !kept.is_empty() {
            break;
        }
        kept.push(problem);
    }
    let shown = kept.len();
    let mut message = format!("invalid batch: {total} problem(s)");
    if shown < total {
        message.push_str(&format!(" (the first {shown} below)"));
    }
    for problem in &kept {
        let line = if problem.op_id.is_empty() {
            format!("\n  batch: field `{}`: {}", problem.field, problem.message)
        } else {
            format!(
                "\n  op `{}`: field `{}`: {}",
                problem.op_id, problem.field, problem.message
            )
        };
        if message.len() + line.len() > MESSAGE_BYTES {
            break;
        }
        message.push_str(&line);
    }
    let details = v1::ValidationFailure {
        problems: kept,
        total: total as u32,
    }
    .encode_to_vec();
    Status::with_details(Code::InvalidArgument, message, details.into())
}

impl From<CoordinatorError> for Status {
    fn from(error: CoordinatorError) -> Status {
        let message = error.to_string();
        match error {
            CoordinatorError::Invalid(problems) => invalid(problems),
            CoordinatorError::BatchNotFound(_) => Status::not_found(message),
            CoordinatorError::OpNotFound { .. } => Status::not_found(message),
            CoordinatorError::Auth(AuthError::Unauthenticated(_)) => {
                Status::unauthenticated(message)
            }
            CoordinatorError::Auth(AuthError::PermissionDenied(_)) => {
                Status::permission_denied(message)
            }
            CoordinatorError::Token(_) => Status::invalid_argument(message),
            CoordinatorError::BadRequest(_) => Status::invalid_argument(message),
            CoordinatorError::IdempotencyConflict { .. } => Status::already_exists(message),
            CoordinatorError::ShuttingDown => Status::unavailable(message),
            CoordinatorError::ValueTooLarge { .. } => Status::invalid_argument(message),
            CoordinatorError::StaleWriter { .. } => Status::failed_precondition(message),
            CoordinatorError::WaitTimedOut { .. } => Status::deadline_exceeded(message),
            CoordinatorError::MemoryReset { .. } => Status::data_loss(message),
            CoordinatorError::Store(store_error) => match store_error {
                StoreError::BatchNotFound(_) => Status::not_found(message),
                StoreError::BatchExists(_) => Status::already_exists(message),
                StoreError::EpochLost { .. } => Status::data_loss(message),
                StoreError::Corrupt(_) => Status::internal(message),
                StoreError::VersionMismatch { .. } => Status::failed_precondition(message),
                StoreError::NotAnInteger { .. } => Status::failed_precondition(message),
                StoreError::ChangesTrimmed { .. } => Status::out_of_range(message),
                StoreError::CannotAddOps { .. } => Status::failed_precondition(message),
                StoreError::TokenExists(_) => Status::already_exists(message),
                StoreError::IdempotencyConflict(_) => Status::already_exists(message),
                // Another call is creating the same batch: a retry finds it.
                StoreError::StillCreating(_) => Status::unavailable(message),
                // The coordinator answers a replayed spawn itself; reaching
                // here means its record could not be read back.
                StoreError::AlreadySpawned { .. } => Status::already_exists(message),
                StoreError::NotOwner { .. } => Status::failed_precondition(message),
                StoreError::Redis(_) if store_error.is_retryable() => Status::unavailable(message),
                StoreError::Redis(_) => Status::internal(message),
            },
        }
    }
}
