//! Store events as the coordinator answers them: ops named by id, causes
//! written out.

use volley_store::Event;

use crate::domain::BatchEvent;
use crate::plans::PlannedBatch;

pub(crate) fn event(planned: &PlannedBatch, event: Event) -> BatchEvent {
    BatchEvent {
        seq: event.seq,
        at_ms: event.at_ms,
        kind: event.kind,
        op_id: event.op_index.map(|index| planned.op_id(index).to_owned()),
        attempt: event.attempt,
        worker: event.worker,
        message: planned.describe(event.cause.as_ref(), &event.message),
        batch_state: event.batch_state,
    }
}
