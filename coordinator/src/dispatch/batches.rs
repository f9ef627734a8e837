//! The active batches: what the dispatcher knows of each batch it
//! dispatches, and how batches come, change and go.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;
use volley_proto::BatchId;
use volley_store::Claimed;

use super::{BatchResults, Command, Dispatcher};
use crate::plans::PlannedBatch;

/// The first pause before claiming again from a batch whose last claim held
/// only ops this coordinator's workers cannot run (handed back for others);
/// doubled on each such claim in a row, up to [`DECLINE_HOLD_OFF_MAX`].
pub(super) const DECLINE_HOLD_OFF: Duration = Duration::from_millis(250);
pub(super) const DECLINE_HOLD_OFF_MAX: Duration = Duration::from_secs(4);

pub(super) struct ActiveBatch {
    pub(super) planned: Arc<PlannedBatch>,
    /// Claimed and not yet ended: sent to a worker or parked.
    pub(super) in_flight: u32,
    /// Claimed ops no connected worker can take yet.
    pub(super) parked: VecDeque<Claimed>,
    /// The ready queue may hold ops (a doorbell rang, or a claim came back
    /// full). Cleared when a claim returns fewer ops than asked.
    pub(super) maybe_ready: bool,
    /// No claims before this: the last ones held only ops our workers
    /// cannot run, handed back for other coordinators to take.
    pub(super) claim_after: Option<tokio::time::Instant>,
    /// The pause after the next claim that holds nothing we can run.
    pub(super) hold_off: Duration,
    /// Parked ops no live worker of the cluster runs, since when.
    pub(super) unrunnable_since: HashMap<u32, tokio::time::Instant>,
    /// Parked ops already reported blocked (an `OP_BLOCKED` event).
    pub(super) reported_blocked: HashSet<u32>,
    /// When each parked attempt was claimed, for the dispatch latency.
    pub(super) parked_since: HashMap<(u32, u32), tokio::time::Instant>,
}

impl ActiveBatch {
    pub(super) fn capacity(&self) -> u32 {
        let max_parallel = self.planned.plan.max_parallel;
        if max_parallel == 0 {
            u32::MAX
        } else {
            max_parallel.saturating_sub(self.in_flight)
        }
    }

    /// Whether a claim now may find ops: the queue may hold some, no
    /// hand-back pause, room under `max_parallel`.
    pub(super) fn wants_credits(&self, now: tokio::time::Instant) -> bool {
        self.maybe_ready && self.claim_after.is_none_or(|after| after <= now) && self.capacity() > 0
    }
}

impl Dispatcher {
    /// A batch to dispatch (submitted here, loaded from the store, or
    /// resumed at start): it joins the round-robin, its timers are set.
    pub(super) fn batch_added(&mut self, planned: Arc<PlannedBatch>) {
        let id = planned.id.clone();
        self.loading.remove(&id);
        if self.batches.contains_key(&id) {
            return;
        }
        // Ops our workers already run (adopted before we knew the batch).
        let in_flight = self
            .workers
            .values()
            .flat_map(|worker| worker.running.keys())
            .filter(|(batch, _)| batch == &id)
            .count() as u32;
        self.order.push_back(id.clone());
        self.set_timers(&planned, 0);
        self.batches.insert(
            id,
            ActiveBatch {
                planned,
                in_flight,
                parked: VecDeque::new(),
                maybe_ready: true,
                claim_after: None,
                hold_off: DECLINE_HOLD_OFF,
                unrunnable_since: HashMap::new(),
                reported_blocked: HashSet::new(),
                parked_since: HashMap::new(),
            },
        );
    }

    /// The batch grew (spawned ops): dispatch from the new plan on.
    pub(super) fn batch_replanned(&mut self, planned: Arc<PlannedBatch>) {
        // Plans only grow; one reloaded from the store may already be newer
        // than this one.
        if let Some(active) = self.batches.get_mut(&planned.id)
            && planned.plan.ops.len() >= active.planned.plan.ops.len()
        {
            let known = active.planned.plan.ops.len();
            active.planned = planned.clone();
            active.maybe_ready = true;
            self.set_timers(&planned, known);
        }
    }

    /// Starts loading a batch this coordinator does not dispatch yet (its
    /// plan is rebuilt from the stored spec, off the dispatcher's task).
    pub(super) fn load(&mut self, batch: BatchId) {
        if self.batches.contains_key(&batch) || !self.loading.insert(batch.clone()) {
            return;
        }
        let store = self.store.clone();
        let plans = self.plans.clone();
        let handle = self.handle.clone();
        tokio::spawn(async move {
            match plans.get(store.as_ref(), &batch).await {
                Ok(planned) => handle.send(Command::BatchAdded(planned)).await,
                Err(error) => {
                    warn!(%batch, %error, "cannot load the batch");
                    handle.send(Command::BatchLoadFailed(batch)).await;
                }
            }
        });
    }

    /// The batch ended (here or at another coordinator): forget it and stop
    /// what our workers still run of it.
    pub(super) fn batch_ended(&mut self, batch: &BatchId) {
        self.cancel_running_of(batch);
        if self.batches.contains_key(batch) {
            self.remove_batch(batch);
            self.plans.finished(batch);
        }
    }

    pub(super) fn mark_all_ready(&mut self) {
        for active in self.batches.values_mut() {
            active.maybe_ready = true;
        }
    }

    pub(super) fn apply_results(&mut self, results: BatchResults) {
        let Some(active) = self.batches.get_mut(&results.batch) else {
            return;
        };
        // Every result ends one claim, whatever the store made of it.
        active.in_flight = active
            .in_flight
            .saturating_sub(results.indices.len() as u32);
        match results.outcome {
            Some(outcome) => {
                if outcome.became_ready > 0 || !outcome.retried.is_empty() {
                    active.maybe_ready = true;
                }
                if let Some(at) = outcome.next_retry_at_ms {
                    self.next_retry_at_ms =
                        Some(self.next_retry_at_ms.map_or(at, |next| next.min(at)));
                }
                if outcome.finished.is_some() {
                    self.remove_batch(&results.batch);
                }
            }
            // The store failed: look again rather than trust our counts.
            None => active.maybe_ready = true,
        }
    }

    pub(super) fn remove_batch(&mut self, batch: &BatchId) {
        self.owned.remove(batch);
        self.timers.retain(|(_, timed)| timed != batch);
        if self.batches.remove(batch).is_some() {
            self.order.retain(|id| id != batch);
        }
    }
}
