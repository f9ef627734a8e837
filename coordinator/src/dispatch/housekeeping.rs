//! Housekeeping: the tick's work (epoch, silent workers, registry, leases,
//! pruning, blocked ops), the timers of deadlines and waits, and the batch
//! holds that say which coordinator does what must happen once.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use tracing::{debug, info, warn};
use volley_proto::{BatchId, v1};
use volley_store::{Claimed, Fence, StoreError};

use super::workers::{entry_accepts, with_labels};
use super::{BatchResults, Dispatcher};
use crate::plans::PlannedBatch;
use crate::service::now_ms;

/// How long releasing batch holds may take at shutdown.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often, and how many entries at a time, the batch index is walked for
/// batches whose retention ran out.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
const PRUNE_STEP: u32 = 1_000;
/// Most expired batches deleted per tick.
const DROP_STEP: u32 = 100;

impl Dispatcher {
    /// The slow timer's work: notice a store that restarted empty, drop
    /// workers that went silent, keep the worker registry and the set of
    /// active batches current, renew the leases of what our workers run,
    /// and for the batches we own end what ran out of time — leases of ops
    /// whose worker died or hung (also those another coordinator handed
    /// out), batch deadlines, waits for keys.
    pub(super) async fn housekeeping(&mut self) {
        self.check_epoch().await;
        self.drop_silent_workers().await;
        self.sample_workers();
        if self.store_down {
            return;
        }
        self.refresh_registry().await;
        if let Some(active) = self.discover().await {
            self.publish_ready_depth(&active).await;
            self.drain_outboxes(&active).await;
        }
        self.drop_expired().await;
        self.prune_batch_index().await;
        self.renew_leases().await;
        self.report_blocked().await;
        let may_expire = match self.expire_after {
            Some(after) if after > tokio::time::Instant::now() => false,
            _ => {
                self.expire_after = None;
                true
            }
        };
        let now = now_ms();
        let batches: Vec<(BatchId, bool, bool)> = self
            .batches
            .values()
            .map(|active| {
                (
                    active.planned.id.clone(),
                    active.planned.plan.deadline_ms > 0,
                    active.planned.has_wait_timeouts(),
                )
            })
            .collect();
        for (batch, has_deadline, has_wait_timeouts) in batches {
            let Some(fence) = self.hold(&batch, now).await else {
                continue;
            };
            if !may_expire {
                continue;
            }
            match self.store.expire_leases(&batch, now, &fence).await {
                Ok(outcome) => {
                    if outcome.recorded > 0 || !outcome.retried.is_empty() {
                        warn!(%batch, retried = outcome.retried.len(), failed = outcome.recorded, "leases ran out");
                    }
                    // Ops whose lease ran out are not ours any more, or are
                    // counted when their silent worker is dropped.
                    self.apply_results(BatchResults {
                        batch: batch.clone(),
                        indices: Vec::new(),
                        outcome: Some(outcome),
                    });
                }
                Err(error) => {
                    self.housekeeping_failed(&batch, "expire leases", error);
                    continue;
                }
            }
            self.expire_timers_of(&batch, has_deadline, has_wait_timeouts, &fence)
                .await;
        }
    }

    /// Shutting down: let other coordinators take our batches over at once
    /// rather than after our holds run out. Our workers reconnect to them
    /// and report what they still run, so nothing is re-run.
    pub(super) async fn release_holds(&mut self) {
        let owned: Vec<(BatchId, Fence)> = self.owned.drain().collect();
        if owned.is_empty() {
            return;
        }
        let store = self.store.clone();
        let count = owned.len();
        let released = tokio::time::timeout(RELEASE_TIMEOUT, async move {
            for (batch, fence) in owned {
                if let Err(error) = store.release_batch(&batch, &fence).await {
                    warn!(%batch, %error, "could not release the batch");
                }
            }
        })
        .await;
        match released {
            Ok(()) => info!(
                batches = count,
                "released our batches for other coordinators"
            ),
            Err(_) => warn!("releasing batches timed out; their holds run out instead"),
        }
    }

    /// Takes or keeps the batch's hold; `None` when another coordinator
    /// owns it (or the store cannot say).
    pub(super) async fn hold(&mut self, batch: &BatchId, now: u64) -> Option<Fence> {
        let ttl = self.ownership_ttl.as_millis() as u64;
        match self.store.hold_batch(batch, &self.id, ttl, now).await {
            Ok(Some(fence)) => {
                if self.owned.get(batch) != Some(&fence) {
                    info!(%batch, token = fence.token, "this coordinator owns the batch now");
                    self.owned.insert(batch.clone(), fence.clone());
                    // Taken over (or resumed): what the last owner left
                    // unwritten goes first.
                    self.drain_outbox(batch).await;
                }
                Some(fence)
            }
            Ok(None) => {
                if self.owned.remove(batch).is_some() {
                    warn!(%batch, "another coordinator owns the batch now");
                }
                None
            }
            Err(error) => {
                warn!(%batch, %error, "could not renew our hold on the batch");
                None
            }
        }
    }

    pub(super) fn housekeeping_failed(&mut self, batch: &BatchId, what: &str, error: StoreError) {
        if let StoreError::NotOwner { .. } = error {
            warn!(%batch, %error, "lost the batch to another coordinator");
            self.owned.remove(batch);
        } else {
            warn!(%batch, %error, "could not {what}");
        }
    }

    /// Timers for the batch's deadline (when `from_op` is 0: the batch is
    /// new to us) and for the `wait_timeout` of its ops from `from_op` on
    /// (spawned ops count from now, as the store counts them from
    /// `add_ops`). One timer per distinct instant.
    pub(super) fn set_timers(&mut self, planned: &PlannedBatch, from_op: usize) {
        // A millisecond after the store's instant: the store's deadline was
        // counted from a creation time taken before this.
        let now = now_ms() + 1;
        let plan = &planned.plan;
        if from_op == 0 && plan.deadline_ms > 0 {
            self.timers
                .insert((now + plan.deadline_ms, planned.id.clone()));
        }
        let timeouts: BTreeSet<u64> = plan.ops[from_op.min(plan.ops.len())..]
            .iter()
            .filter(|op| op.wait_timeout_ms > 0)
            .map(|op| op.wait_timeout_ms)
            .collect();
        for timeout in timeouts {
            self.timers.insert((now + timeout, planned.id.clone()));
        }
    }

    /// Runs the deadline and wait checks of every batch whose timer is due
    /// (a batch we do not hold, or no longer run, is skipped: its owner or
    /// the tick sees to it).
    pub(super) async fn fire_timers(&mut self) {
        let now = now_ms();
        let mut due = BTreeSet::new();
        while let Some((at, _)) = self.timers.first()
            && *at <= now
        {
            if let Some((_, batch)) = self.timers.pop_first() {
                due.insert(batch);
            }
        }
        if self.store_down
            || self
                .expire_after
                .is_some_and(|after| after > tokio::time::Instant::now())
        {
            return;
        }
        for batch in due {
            let Some(active) = self.batches.get(&batch) else {
                continue;
            };
            let (has_deadline, has_wait_timeouts) = (
                active.planned.plan.deadline_ms > 0,
                active.planned.has_wait_timeouts(),
            );
            let Some(fence) = self.hold(&batch, now).await else {
                continue;
            };
            self.expire_timers_of(&batch, has_deadline, has_wait_timeouts, &fence)
                .await;
        }
    }

    /// Ends the batch if its deadline passed, and fails its ops that waited
    /// for memory keys past their `wait_timeout`.
    pub(super) async fn expire_timers_of(
        &mut self,
        batch: &BatchId,
        has_deadline: bool,
        has_wait_timeouts: bool,
        fence: &Fence,
    ) {
        if has_deadline {
            match self.store.expire_deadline(batch, now_ms(), fence).await {
                Ok(outcome) if outcome.finished.is_some() => {
                    warn!(%batch, "the batch's deadline passed");
                    self.cancel_running_of(batch);
                    self.apply_results(BatchResults {
                        batch: batch.clone(),
                        indices: Vec::new(),
                        outcome: Some(outcome),
                    });
                }
                Ok(_) => {}
                Err(error) => self.housekeeping_failed(batch, "check the deadline", error),
            }
        }
        if has_wait_timeouts {
            self.expire_waits_of(batch, fence).await;
        }
    }

    /// Fails ops of the batch whose wait for memory keys ran past its deadline.
    pub(super) async fn expire_waits_of(&mut self, batch: &BatchId, fence: &Fence) {
        match self.store.expire_waits(batch, now_ms(), fence).await {
            Ok(outcome) if outcome.recorded > 0 || outcome.finished.is_some() => {
                warn!(%batch, failed = outcome.recorded, "ops waited too long for memory keys");
                self.apply_results(BatchResults {
                    batch: batch.clone(),
                    indices: Vec::new(),
                    outcome: Some(outcome),
                });
            }
            Ok(_) => {}
            Err(error) => self.housekeeping_failed(batch, "expire waits", error),
        }
    }

    /// Renews the lease of every op our live workers run and of every op
    /// parked here. Stale ones (their attempt ended meanwhile — an adopted
    /// op whose lease had already run out, say) are stopped on the worker,
    /// which then reports them and gets its slot back; parked ones are
    /// dropped.
    pub(super) async fn renew_leases(&mut self) {
        let mut by_batch: HashMap<BatchId, Vec<Claimed>> = HashMap::new();
        for worker in self.workers.values() {
            for ((batch, index), attempt) in &worker.running {
                by_batch.entry(batch.clone()).or_default().push(Claimed {
                    index: *index,
                    attempt: *attempt,
                });
            }
        }
        for active in self.batches.values() {
            if !active.parked.is_empty() {
                by_batch
                    .entry(active.planned.id.clone())
                    .or_default()
                    .extend(active.parked.iter().cloned());
            }
        }
        let until = now_ms() + self.lease.as_millis() as u64;
        for (batch, claims) in by_batch {
            let stale = match self.store.renew_leases(&batch, &claims, until).await {
                Ok(stale) => stale,
                Err(error) => {
                    warn!(%batch, %error, "could not renew leases");
                    continue;
                }
            };
            if stale.is_empty() {
                continue;
            }
            let stale: HashSet<(u32, u32)> = stale
                .iter()
                .map(|claim| (claim.index, claim.attempt))
                .collect();
            if let Some(active) = self.batches.get_mut(&batch) {
                let before = active.parked.len();
                active
                    .parked
                    .retain(|claim| !stale.contains(&(claim.index, claim.attempt)));
                let dropped = (before - active.parked.len()) as u32;
                active.in_flight = active.in_flight.saturating_sub(dropped);
            }
            for worker in self.workers.values() {
                let ops: Vec<v1::OpRef> = worker
                    .running
                    .iter()
                    .filter(|((running_batch, index), attempt)| {
                        running_batch == &batch && stale.contains(&(*index, **attempt))
                    })
                    .map(|((_, index), attempt)| v1::OpRef {
                        batch_id: batch.to_string(),
                        op_index: *index,
                        attempt: *attempt,
                        ticket: String::new(),
                    })
                    .collect();
                if ops.is_empty() {
                    continue;
                }
                info!(%batch, worker = %worker.worker_id, ops = ops.len(), "stopping stale attempts");
                let message = v1::CoordinatorMessage {
                    msg: Some(v1::coordinator_message::Msg::Cancel(v1::CancelOps { ops })),
                };
                if worker.outbound.try_send(message).is_err() {
                    warn!(worker = %worker.worker_id, "could not deliver a cancel");
                }
            }
        }
    }

    /// Deletes finished batches whose retention ran out (every coordinator
    /// does, each tick; a batch deleted twice is deleted once).
    pub(super) async fn drop_expired(&mut self) {
        match self.store.drop_expired(now_ms(), DROP_STEP).await {
            Ok(0) => {}
            Ok(dropped) => debug!(dropped, "finished batches past their retention deleted"),
            Err(error) => warn!(%error, "cannot delete expired batches"),
        }
    }

    /// Once a minute, a step of the walk that drops expired batches from
    /// the batch index (their records expired by their retention).
    pub(super) async fn prune_batch_index(&mut self) {
        let now = tokio::time::Instant::now();
        if self.pruned_at.is_some_and(|at| now < at + PRUNE_EVERY) {
            return;
        }
        self.pruned_at = Some(now);
        match self
            .store
            .prune_batch_index(self.prune_from_ms, PRUNE_STEP)
            .await
        {
            Ok((dropped, next)) => {
                if dropped > 0 {
                    debug!(dropped, "expired batches left the index");
                }
                self.prune_from_ms = next;
            }
            Err(error) => warn!(%error, "cannot prune the batch index"),
        }
    }

    /// Parked ops that no live worker anywhere runs, for a while now: the
    /// batch's events say so once (`OP_BLOCKED`), so a user watching sees
    /// why nothing moves; the op stays parked until such a worker connects.
    pub(super) async fn report_blocked(&mut self) {
        let now = tokio::time::Instant::now();
        let mut notes: Vec<(BatchId, u32, String)> = Vec::new();
        for active in self.batches.values_mut() {
            let mut still: HashSet<u32> = HashSet::new();
            for claim in &active.parked {
                let Some(op) = active.planned.plan.ops.get(claim.index as usize) else {
                    continue;
                };
                let runnable = self
                    .workers
                    .values()
                    .any(|worker| worker.accepts(&op.kind, &op.requires))
                    || self
                        .cluster
                        .iter()
                        .any(|(_, entry)| entry_accepts(entry, &op.kind, &op.requires));
                if runnable {
                    continue;
                }
                still.insert(claim.index);
                let since = *active.unrunnable_since.entry(claim.index).or_insert(now);
                if now.duration_since(since) >= self.report_blocked_after
                    && active.reported_blocked.insert(claim.index)
                {
                    let labels = with_labels(&op.requires);
                    notes.push((
                        active.planned.id.clone(),
                        claim.index,
                        format!(
                            "no live worker runs `{}` ops{labels}; it waits until one connects",
                            op.kind
                        ),
                    ));
                }
            }
            active
                .unrunnable_since
                .retain(|index, _| still.contains(index));
        }
        for (batch, index, message) in notes {
            warn!(%batch, op_index = index, %message, "op blocked");
            if let Err(error) = self
                .store
                .note_blocked(&batch, index, &message, now_ms())
                .await
            {
                warn!(%batch, %error, "could not note a blocked op");
            }
        }
    }

    /// Writes the shared `store_as` values a coordinator recorded but died
    /// before writing (`Store::drain_outbox`), for every active batch whose
    /// outbox holds some: one pipelined read per tick, a drain only where
    /// needed. A batch whose last op's completion was cut short is still in
    /// the active set (its finish was never announced), so it is found here
    /// though nobody holds it; the writes are guarded per op attempt, so
    /// coordinators draining the same batch write each value once.
    pub(super) async fn drain_outboxes(&mut self, active: &[BatchId]) {
        let pending = match self.store.outboxes_pending(active).await {
            Ok(pending) => pending,
            Err(error) => {
                warn!(%error, "could not read the outboxes of shared writes");
                return;
            }
        };
        for batch in pending {
            self.drain_outbox(&batch).await;
        }
    }

    pub(super) async fn drain_outbox(&mut self, batch: &BatchId) {
        match self.store.drain_outbox(batch, now_ms()).await {
            Ok(0) => {}
            Ok(handled) => {
                info!(%batch, handled, "wrote shared store_as values left by a coordinator that died");
                self.mark_all_ready();
            }
            Err(error) => warn!(%batch, %error, "could not drain the outbox of shared writes"),
        }
    }

    /// Brings the set of batches we dispatch in line with the store's
    /// active set: batches submitted elsewhere are loaded, batches that
    /// ended while a bell was missed are dropped. Returns that set.
    pub(super) async fn discover(&mut self) -> Option<Vec<BatchId>> {
        let active = match self.store.active_batches().await {
            Ok(active) => active,
            Err(error) => {
                warn!(%error, "could not read the active batches");
                return None;
            }
        };
        let live: HashSet<&BatchId> = active.iter().collect();
        let ended: Vec<BatchId> = self
            .batches
            .keys()
            .filter(|batch| !live.contains(batch))
            .cloned()
            .collect();
        for batch in ended {
            self.batch_ended(&batch);
        }
        for batch in &active {
            self.load(batch.clone());
        }
        Some(active)
    }

    /// Reads how many ops wait on the ready queues of every active batch
    /// (the whole cluster's, not only what our workers could take), sets the
    /// `ready_ops` gauges and publishes the total as the store's ready gauge
    /// (`volley:queue:ready`, for KEDA). Every coordinator does this every
    /// tick: they publish the same queues, so the gauge converges, at most
    /// one tick stale.
    pub(super) async fn publish_ready_depth(&mut self, active: &[BatchId]) {
        let depth = match self.store.ready_depth(active).await {
            Ok(depth) => depth,
            Err(error) => {
                warn!(%error, "could not read the ready queues' depth");
                return;
            }
        };
        self.metrics.set_ready(&depth, active.len());
        if let Err(error) = self.store.publish_ready_gauge(depth.total()).await {
            warn!(%error, "could not publish the ready gauge");
        }
    }

    /// A store that comes back with another epoch restarted empty: every
    /// batch in flight is gone. Say so (`Lost`) rather than let them look
    /// finished or hang.
    pub(super) async fn check_epoch(&mut self) {
        let epoch = match self.store.epoch().await {
            Ok(epoch) => epoch,
            Err(error) => {
                if !self.store_down {
                    warn!(%error, "store unreachable; carrying on and retrying");
                }
                self.store_down = true;
                self.serving.send_replace(false);
                return;
            }
        };
        if self.store_down {
            // Leases could not be renewed while it was away: give every
            // coordinator a few ticks to renew its workers' before any
            // lease is judged run out.
            info!("store reachable again");
            self.store_down = false;
            // Silence is counted afresh: while the store was away, a
            // worker's session could not read its heartbeats.
            let now = tokio::time::Instant::now();
            for worker in self.workers.values_mut() {
                worker.last_seen = now;
            }
            self.serving.send_replace(true);
            self.expire_after = Some(tokio::time::Instant::now() + self.resync_interval * 3);
        }
        if epoch == self.epoch {
            return;
        }
        let lost: Vec<BatchId> = self.batches.keys().cloned().collect();
        tracing::error!(old = %self.epoch, new = %epoch, batches = lost.len(), "the store restarted empty: batches in flight are lost");
        let reason = "lost: the store restarted empty and the batch's state went with it";
        if let Err(error) = self.store.mark_lost(&lost, reason, now_ms()).await {
            warn!(%error, "could not mark lost batches");
        }
        for batch in &lost {
            self.cancel_running_of(batch);
            self.remove_batch(batch);
        }
        self.epoch = epoch;
    }

    /// Workers silent for a whole lease period are hung or gone: drop them
    /// (their stream ends) and re-queue what they ran. Not while the store
    /// is away: a worker cannot be heard then, since its session waits for
    /// the store to record its results and reads nothing else meanwhile
    /// (its heartbeats queue behind them). Dropping it would cut the leases
    /// of ops it ran to the end, and they would run again.
    pub(super) async fn drop_silent_workers(&mut self) {
        if self.store_down {
            return;
        }
        let silent: Vec<u64> = self
            .workers
            .iter()
            .filter(|(_, worker)| worker.last_seen.elapsed() > self.lease)
            .map(|(conn, _)| *conn)
            .collect();
        for conn in silent {
            if let Some(worker) = self.workers.remove(&conn) {
                warn!(worker = %worker.worker_id, "worker silent for a whole lease period; dropping it");
                self.publish_kinds();
                self.orphan(worker, now_ms(), "it went silent").await;
            }
        }
    }
}
