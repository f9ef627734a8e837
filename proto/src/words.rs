//! The words every view uses for states and event kinds: the CLI's table
//! and JSON, `watch` lines, the dashboard and exported files all print
//! these, so a script matching `failed` matches everywhere. One table per
//! enum, here; the store's own enums convert to these (`volley-store`'s
//! `From` impls) and print through them.

use crate::v1::{BatchState, EventKind, OpState};

/// `waiting`, `ready`, `running`, `succeeded`, `failed`, `skipped`,
/// `cancelled` (`unknown` for a value this build does not know).
pub fn op_state(state: OpState) -> &'static str {
    match state {
        OpState::Unspecified => "unknown",
        OpState::Waiting => "waiting",
        OpState::Ready => "ready",
        OpState::Running => "running",
        OpState::Succeeded => "succeeded",
        OpState::Failed => "failed",
        OpState::Skipped => "skipped",
        OpState::Cancelled => "cancelled",
    }
}

/// The op state a word of [`op_state`] names (not `unknown`).
pub fn op_state_named(word: &str) -> Option<OpState> {
    OP_STATES
        .iter()
        .copied()
        .find(|state| op_state(*state) == word)
}

/// Every op state a batch's op can be in, in the order ops move through them.
pub const OP_STATES: [OpState; 7] = [
    OpState::Waiting,
    OpState::Ready,
    OpState::Running,
    OpState::Succeeded,
    OpState::Failed,
    OpState::Skipped,
    OpState::Cancelled,
];

/// `running`, `succeeded`, `failed`, `cancelled`, `lost` (`unknown`).
pub fn batch_state(state: BatchState) -> &'static str {
    match state {
        BatchState::Unspecified => "unknown",
        BatchState::Running => "running",
        BatchState::Succeeded => "succeeded",
        BatchState::Failed => "failed",
        BatchState::Cancelled => "cancelled",
        BatchState::Lost => "lost",
    }
}

/// `op_started`, `batch_finished`, … (`unknown`).
pub fn event_kind(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Unspecified => "unknown",
        EventKind::BatchSubmitted => "batch_submitted",
        EventKind::OpStarted => "op_started",
        EventKind::OpSucceeded => "op_succeeded",
        EventKind::OpFailed => "op_failed",
        EventKind::OpSkipped => "op_skipped",
        EventKind::OpCancelled => "op_cancelled",
        EventKind::OpRetrying => "op_retrying",
        EventKind::BatchFinished => "batch_finished",
        EventKind::OpsAdded => "ops_added",
        EventKind::OpBlocked => "op_blocked",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_state_word_reads_back() {
        for state in OP_STATES {
            assert_eq!(op_state_named(op_state(state)), Some(state));
        }
        assert_eq!(op_state_named("unknown"), None);
        assert_eq!(op_state_named("Succeeded"), None);
    }
}
