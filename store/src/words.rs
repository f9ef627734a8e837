//! The store's states and event kinds on the wire and in words: each
//! converts to its `volley.v1` twin, and prints the word every view uses
//! (`volley_proto::words`, the one table).

use volley_proto::{v1, words};

use crate::model::{BatchState, EventKind, OpState};

impl From<OpState> for v1::OpState {
    fn from(state: OpState) -> Self {
        match state {
            OpState::Waiting => v1::OpState::Waiting,
            OpState::Ready => v1::OpState::Ready,
            OpState::Running => v1::OpState::Running,
            OpState::Succeeded => v1::OpState::Succeeded,
            OpState::Failed => v1::OpState::Failed,
            OpState::Skipped => v1::OpState::Skipped,
            OpState::Cancelled => v1::OpState::Cancelled,
        }
    }
}

impl From<BatchState> for v1::BatchState {
    fn from(state: BatchState) -> Self {
        match state {
            BatchState::Running => v1::BatchState::Running,
            BatchState::Succeeded => v1::BatchState::Succeeded,
            BatchState::Failed => v1::BatchState::Failed,
            BatchState::Cancelled => v1::BatchState::Cancelled,
            BatchState::Lost => v1::BatchState::Lost,
        }
    }
}

impl From<EventKind> for v1::EventKind {
    fn from(kind: EventKind) -> Self {
        match kind {
            EventKind::BatchSubmitted => v1::EventKind::BatchSubmitted,
            EventKind::OpStarted => v1::EventKind::OpStarted,
            EventKind::OpSucceeded => v1::EventKind::OpSucceeded,
            EventKind::OpFailed => v1::EventKind::OpFailed,
            EventKind::OpSkipped => v1::EventKind::OpSkipped,
            EventKind::OpCancelled => v1::EventKind::OpCancelled,
            EventKind::OpRetrying => v1::EventKind::OpRetrying,
            EventKind::BatchFinished => v1::EventKind::BatchFinished,
            EventKind::OpsAdded => v1::EventKind::OpsAdded,
            EventKind::OpBlocked => v1::EventKind::OpBlocked,
        }
    }
}

impl OpState {
    /// `waiting`, `succeeded`, …: the word every view prints.
    pub fn word(self) -> &'static str {
        words::op_state(self.into())
    }
}

impl BatchState {
    /// `running`, `failed`, …: the word every view prints.
    pub fn word(self) -> &'static str {
        words::batch_state(self.into())
    }
}

impl EventKind {
    /// `op_started`, `batch_finished`, …: the word every view prints.
    pub fn word(self) -> &'static str {
        words::event_kind(self.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_store_state_prints_as_unknown() {
        for code in ["W", "R", "U", "S", "F", "K", "C"] {
            let state = OpState::from_code(code).expect("a store code");
            assert_ne!(state.word(), "unknown", "{state:?}");
        }
        for code in ["running", "succeeded", "failed", "cancelled", "lost"] {
            // The Redis store's codes are the words themselves.
            assert_eq!(
                BatchState::from_code(code).expect("a store code").word(),
                code
            );
        }
        assert_eq!(EventKind::OpBlocked.word(), "op_blocked");
    }
}
