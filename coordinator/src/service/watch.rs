//! A batch's event stream: read from the store after a sequence number,
//! woken by doorbells, always ended by a `BatchFinished`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tracing::{Instrument, debug, info_span};
use volley_proto::BatchId;
use volley_store::Doorbell;

use super::{Access, Coordinator};
use crate::auth::Principal;
use crate::convert;
use crate::domain::BatchEvent;
use crate::error::CoordinatorError;
use crate::plans::PlannedBatch;

impl Coordinator {
    /// Streams a batch's events after `after_seq`, in order, until the batch
    /// has finished. Wakes on doorbells, and re-reads on a slow timer in
    /// case one was missed. Every stream ends with a `BatchFinished`: the
    /// store's, or — when the watch resumed at or past the batch's last
    /// event, or the batch was lost with the store's data and its events
    /// are gone — one made from the batch's record (see [`final_event`]).
    pub async fn watch(
        &self,
        batch: BatchId,
        after_seq: u64,
        principal: &Principal,
    ) -> Result<mpsc::Receiver<Result<BatchEvent, CoordinatorError>>, CoordinatorError> {
        let planned = self.authorize(principal, &batch, Access::Read).await?;
        let (sender, receiver) = mpsc::channel(256);
        let coordinator = self.clone();
        let span = info_span!("coordinator.watch", batch = %batch);
        self.inner.tasks.spawn(
            async move {
                coordinator.pump_events(planned, after_seq, sender).await;
            }
            .instrument(span),
        );
        Ok(receiver)
    }

    async fn pump_events(
        &self,
        mut planned: Arc<PlannedBatch>,
        mut after_seq: u64,
        sender: mpsc::Sender<Result<BatchEvent, CoordinatorError>>,
    ) {
        let mut doorbells = self.store().doorbells();
        // Since when the batch's record has been missing (the store was
        // emptied and nobody has marked the batch lost yet, or its
        // retention ran out).
        let mut missing_since: Option<tokio::time::Instant> = None;
        loop {
            let events = match self.store().events(&planned.id, after_seq, 1000).await {
                Ok(events) => events,
                Err(error) => {
                    let _ = sender.send(Err(error.into())).await;
                    return;
                }
            };
            let fetched = events.len();
            let mut finished = false;
            for event in events {
                after_seq = event.seq;
                finished |= event.kind == volley_store::EventKind::BatchFinished;
                // Ops another coordinator spawned into the batch: learn
                // their names before naming them.
                if event
                    .op_index
                    .is_some_and(|index| index as usize >= planned.plan.ops.len())
                    && let Ok(fresh) = self
                        .plan_covering(&planned, event.op_index.unwrap_or(0) + 1)
                        .await
                {
                    planned = fresh;
                }
                if sender
                    .send(Ok(convert::event(&planned, event)))
                    .await
                    .is_err()
                {
                    return; // the client went away
                }
            }
            if finished {
                return;
            }
            if fetched > 0 {
                continue;
            }
            // Nothing new: if the batch has ended and no event is left
            // after `after_seq` (the watch resumed at or past its end, now
            // or since, or the batch was lost with its events), nothing
            // more comes from the store: end with the batch's final event,
            // made from its record. Asked at each idle wake, not only the
            // first: a watch past the end of a running batch must end when
            // the batch does, though its `BatchFinished` is behind it.
            match self.store().meta(&planned.id).await {
                Ok(Some(meta)) => {
                    missing_since = None;
                    if meta.finished_ms.is_some()
                        && self
                            .store()
                            .events(&planned.id, after_seq, 1)
                            .await
                            .is_ok_and(|events| events.is_empty())
                    {
                        let _ = sender.send(Ok(final_event(&meta, after_seq))).await;
                        return;
                    }
                }
                Ok(None) => {
                    let since = *missing_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= MISSING_BATCH_GRACE {
                        let _ = sender
                            .send(Err(CoordinatorError::BatchNotFound(planned.id.clone())))
                            .await;
                        return;
                    }
                }
                Err(error) => {
                    debug!(%error, batch = %planned.id, "watch: could not read the batch's record; trying again")
                }
            }
            tokio::select! {
                () = self.inner.shutdown.cancelled() => return,
                () = sender.closed() => return,
                () = wait_for_bell(&mut doorbells, &planned.id) => {}
                () = tokio::time::sleep(self.inner.config.resync_interval) => {}
            }
        }
    }
}

/// How long a watch waits for a batch whose record is gone to be marked
/// lost (the store restarted empty) before it ends with "not found" (its
/// retention ran out).
const MISSING_BATCH_GRACE: Duration = Duration::from_secs(30);

/// The `BatchFinished` of an ended batch whose own final event the watch
/// cannot deliver: it resumed at or past it, or the batch was lost with the
/// store's data (its events were numbered afresh). Numbered right after the
/// last event the watcher saw, so the stream stays gapless for it; says the
/// batch's state and why it ended.
fn final_event(meta: &volley_store::BatchMeta, after_seq: u64) -> BatchEvent {
    BatchEvent {
        seq: after_seq + 1,
        at_ms: meta.finished_ms.unwrap_or_default(),
        kind: volley_store::EventKind::BatchFinished,
        op_id: None,
        attempt: 0,
        worker: String::new(),
        message: meta.error.clone(),
        batch_state: Some(meta.state),
    }
}

async fn wait_for_bell(doorbells: &mut broadcast::Receiver<Doorbell>, batch: &BatchId) {
    loop {
        match doorbells.recv().await {
            Ok(Doorbell::Batch(rung) | Doorbell::Events(rung)) if &rung == batch => return,
            // The batch ended: its last events are there to read.
            Ok(Doorbell::Ended(rung)) if &rung == batch => return,
            Ok(
                Doorbell::Batch(_)
                | Doorbell::Events(_)
                | Doorbell::Memory(_)
                | Doorbell::Started(_)
                | Doorbell::Ended(_),
            ) => {}
            // Missed bells or a resync: re-read to be sure.
            Ok(Doorbell::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => {
                // No more bells: fall back to the timer alone.
                std::future::pending::<()>().await;
            }
        }
    }
}
