//! Adding ops to a running batch from inside one of its ops (dynamic fan-out).

use async_trait::async_trait;
use volley_proto::BatchId;
use volley_proto::v1::{Op, Problem};

/// What the coordinator said about ops it accepted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpawnOutcome {
    /// How many ops were added.
    pub op_count: u32,
    pub warnings: Vec<String>,
}

/// Why ops could not be added.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SpawnError {
    /// The coordinator validated the ops and refused them (a cycle, a duplicate id, …).
    #[error("spawned ops are invalid: {}", describe(problems))]
    Invalid { problems: Vec<Problem> },
    /// The coordinator could not be reached or failed transiently.
    #[error("spawning ops failed, coordinator unavailable: {message}")]
    Unavailable { message: String },
    /// The coordinator refused for another reason (unknown or finished batch, …).
    #[error("spawning ops refused: {message}")]
    Other { message: String },
    /// This op runs without a coordinator (a handler tested by hand, say).
    #[error("this op has no coordinator to spawn ops on")]
    NoCoordinator,
}

impl SpawnError {
    /// Only an unreachable coordinator may say yes later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unavailable { .. } => true,
            Self::Invalid { .. } | Self::Other { .. } | Self::NoCoordinator => false,
        }
    }
}

fn describe(problems: &[Problem]) -> String {
    if problems.is_empty() {
        return "no problem given".to_owned();
    }
    problems
        .iter()
        .map(|problem| {
            let place = match (problem.op_id.is_empty(), problem.field.is_empty()) {
                (true, true) => String::new(),
                (true, false) => format!("{}: ", problem.field),
                (false, true) => format!("op {}: ", problem.op_id),
                (false, false) => format!("op {} {}: ", problem.op_id, problem.field),
            };
            format!("{place}{}", problem.message)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Adds ops to running batches: the coordinator's `BatchService.SpawnOps`
/// ([`GrpcSpawner`](crate::GrpcSpawner)), or a fake in tests.
#[async_trait]
pub trait OpSpawner: Send + Sync + 'static {
    /// Adds `ops` to `batch_id`; `spawned_by` is the op asking, for the record.
    async fn spawn(
        &self,
        batch_id: &BatchId,
        ops: Vec<Op>,
        spawned_by: &str,
    ) -> Result<SpawnOutcome, SpawnError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_names_each_problem() {
        let error = SpawnError::Invalid {
            problems: vec![
                Problem {
                    op_id: "a".into(),
                    field: "after".into(),
                    message: "cycle a -> b -> a".into(),
                },
                Problem {
                    op_id: String::new(),
                    field: String::new(),
                    message: "too many ops".into(),
                },
            ],
        };
        assert_eq!(
            error.to_string(),
            "spawned ops are invalid: op a after: cycle a -> b -> a; too many ops"
        );
        assert!(!error.is_retryable());
    }
}
