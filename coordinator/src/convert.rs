//! Store ⇄ proto conversions of states and events.

use volley_proto::v1;
use volley_store::{BatchState, Event, EventKind, OpState};

use crate::plans::PlannedBatch;

pub(crate) fn op_state(state: OpState) -> v1::OpState {
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

pub(crate) fn batch_state(state: BatchState) -> v1::BatchState {
    match state {
        BatchState::Running => v1::BatchState::Running,
        BatchState::Succeeded => v1::BatchState::Succeeded,
        BatchState::Failed => v1::BatchState::Failed,
        BatchState::Cancelled => v1::BatchState::Cancelled,
        BatchState::Lost => v1::BatchState::Lost,
    }
}

pub(crate) fn event_kind(kind: EventKind) -> v1::EventKind {
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

pub(crate) fn event(planned: &PlannedBatch, event: Event) -> v1::BatchEvent {
    let op_id = event
        .op_index
        .map(|index| planned.op_id(index).to_owned())
        .unwrap_or_default();
    v1::BatchEvent {
        seq: event.seq,
        at_ms: event.at_ms,
        kind: event_kind(event.kind) as i32,
        op_id,
        attempt: event.attempt,
        worker: event.worker,
        message: planned.describe(event.cause.as_ref(), &event.message),
        batch_state: event
            .batch_state
            .map(|state| batch_state(state) as i32)
            .unwrap_or_default(),
    }
}
