//! The one place domain errors become gRPC statuses. Every variant is
//! matched explicitly so a new one cannot slip through as `Internal`.

use prost::Message;
use tonic::{Code, Status};
use volley_proto::v1;
use volley_store::StoreError;

use crate::auth::AuthError;
use crate::error::CoordinatorError;

impl From<CoordinatorError> for Status {
    fn from(error: CoordinatorError) -> Status {
        let message = error.to_string();
        match error {
            CoordinatorError::Invalid(problems) => {
                let details = v1::ValidationFailure {
                    problems: problems
                        .into_iter()
                        .map(|problem| v1::Problem {
                            op_id: problem.op_id,
                            field: problem.field,
                            message: problem.message,
                        })
                        .collect(),
                }
                .encode_to_vec();
                Status::with_details(Code::InvalidArgument, message, details.into())
            }
            CoordinatorError::BatchNotFound(_) => Status::not_found(message),
            CoordinatorError::Auth(AuthError::Unauthenticated(_)) => {
                Status::unauthenticated(message)
            }
            CoordinatorError::Auth(AuthError::PermissionDenied(_)) => {
                Status::permission_denied(message)
            }
            CoordinatorError::Token(_) => Status::invalid_argument(message),
            CoordinatorError::BadRequest(_) => Status::invalid_argument(message),
            CoordinatorError::ShuttingDown => Status::unavailable(message),
            CoordinatorError::ValueTooLarge { .. } => Status::invalid_argument(message),
            CoordinatorError::StaleWriter { .. } => Status::failed_precondition(message),
            CoordinatorError::WaitTimedOut { .. } => Status::deadline_exceeded(message),
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
                StoreError::NotOwner { .. } => Status::failed_precondition(message),
                StoreError::Redis(_) if store_error.is_retryable() => Status::unavailable(message),
                StoreError::Redis(_) => Status::internal(message),
            },
        }
    }
}
