//! The worker table: who is connected, their credits, kinds and labels,
//! what each runs, and the ledger each session checks results against.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, warn};
use volley_proto::{BatchId, v1};
use volley_store::{Claimed, WorkerEntry};

use super::{BatchResults, Dispatcher};
use crate::domain::WorkerInfo;
use crate::service::now_ms;

/// The attempts one worker session was given and has not reported yet.
/// The dispatcher writes each assignment (and each adoption) here before
/// sending it; the session takes an attempt off when its result or
/// hand-back comes, and refuses what is not here. A std mutex: held for one
/// set operation, never across an await.
///
/// Kept as 64-bit fingerprints of (batch, op index, attempt) under a
/// SipHash key of this ledger's own (random, never sent anywhere): no
/// allocation per op on the dispatcher's hot path, and a worker cannot
/// aim for a collision with a key it does not know.
#[derive(Default)]
pub(crate) struct Ledger {
    key: std::hash::RandomState,
    given: std::sync::Mutex<HashSet<u64>>,
}

impl Ledger {
    fn fingerprint(&self, batch: &str, index: u32, attempt: u32) -> u64 {
        std::hash::BuildHasher::hash_one(&self.key, (batch, index, attempt))
    }

    pub(crate) fn give(&self, batch: &BatchId, index: u32, attempt: u32) {
        let fingerprint = self.fingerprint(batch.as_str(), index, attempt);
        if let Ok(mut given) = self.given.lock() {
            given.insert(fingerprint);
        }
    }

    /// Whether the attempt was given to this session (and is now taken).
    pub(crate) fn take(&self, batch: &str, index: u32, attempt: u32) -> bool {
        let fingerprint = self.fingerprint(batch, index, attempt);
        self.given
            .lock()
            .is_ok_and(|mut given| given.remove(&fingerprint))
    }
}

/// The kinds some live worker runs: those connected to this coordinator
/// (kept by the dispatcher as they come and go) and those of the whole
/// cluster (from the store's worker registry, refreshed every tick).
#[derive(Debug, Default)]
pub(crate) struct KnownKinds {
    pub(crate) local: HashSet<String>,
    pub(crate) cluster: HashSet<String>,
}

impl KnownKinds {
    pub(crate) fn contains(&self, kind: &str) -> bool {
        self.local.contains(kind) || self.cluster.contains(kind)
    }
}

pub(super) struct Worker {
    pub(super) worker_id: String,
    /// `<token id>/<worker id>`: signed into its assignments' lease tickets.
    pub(super) holder: Arc<str>,
    pub(super) ledger: Arc<Ledger>,
    pub(super) kinds: HashSet<String>,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) slots: u32,
    pub(super) free: u32,
    pub(super) outbound: mpsc::Sender<v1::CoordinatorMessage>,
    /// What it runs now: (batch, op index) → attempt.
    pub(super) running: HashMap<(BatchId, u32), u32>,
    /// When it last said anything (a heartbeat or results).
    pub(super) last_seen: tokio::time::Instant,
    /// It is shutting down: nothing more is assigned to it.
    pub(super) draining: bool,
}

impl Worker {
    /// What it runs, grouped by batch.
    fn running_by_batch(&self) -> HashMap<BatchId, Vec<Claimed>> {
        let mut by_batch: HashMap<BatchId, Vec<Claimed>> = HashMap::new();
        for ((batch, index), attempt) in &self.running {
            by_batch.entry(batch.clone()).or_default().push(Claimed {
                index: *index,
                attempt: *attempt,
            });
        }
        by_batch
    }

    pub(super) fn accepts(&self, kind: &str, requires: &BTreeMap<String, String>) -> bool {
        self.kinds.contains(kind) && has_labels(&self.labels, requires)
    }
}

/// Whether a worker of the cluster registry (connected here or elsewhere)
/// runs `kind` with the `requires` labels: [`Worker::accepts`] for entries.
pub(super) fn entry_accepts(
    entry: &WorkerEntry,
    kind: &str,
    requires: &BTreeMap<String, String>,
) -> bool {
    entry.kinds.iter().any(|known| known == kind) && has_labels(&entry.labels, requires)
}

fn has_labels(labels: &BTreeMap<String, String>, requires: &BTreeMap<String, String>) -> bool {
    requires
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value))
}

/// `" with labels k=v,…"` for messages about an op's `requires`; "" for none.
pub(super) fn with_labels(requires: &BTreeMap<String, String>) -> String {
    let mut labels = Vec::new();
    let mut secrets = Vec::new();
    for (key, value) in requires {
        match key.strip_prefix(volley_plan::SECRET_LABEL_PREFIX) {
            Some(secret) => secrets.push(format!("`{secret}`")),
            None => labels.push(format!("{key}={value}")),
        }
    }
    let mut words = String::new();
    if !labels.is_empty() {
        words.push_str(&format!(" with labels {}", labels.join(",")));
    }
    if !secrets.is_empty() {
        let noun = if secrets.len() == 1 {
            "secret"
        } else {
            "secrets"
        };
        words.push_str(&format!(" holding {noun} {}", secrets.join(", ")));
    }
    words
}

impl Dispatcher {
    /// A worker registered: it joins the table, and the ops it still runs
    /// from an earlier session are adopted (counted in flight, their
    /// leases renewed as ours) rather than run again.
    pub(super) async fn worker_joined(
        &mut self,
        conn: u64,
        mut worker: Worker,
        running: Vec<(BatchId, Claimed)>,
    ) {
        let adopted = running.len();
        worker.running = running
            .into_iter()
            .map(|(batch, claim)| ((batch, claim.index), claim.attempt))
            .collect();
        for (batch, _) in worker.running.keys() {
            if let Some(active) = self.batches.get_mut(batch) {
                active.in_flight += 1;
            }
        }
        worker.free = worker.slots.saturating_sub(worker.running.len() as u32);
        if adopted > 0 {
            info!(worker = %worker.worker_id, ops = adopted, "worker still runs ops from an earlier session: adopting them");
        }
        self.workers.insert(conn, worker);
        self.publish_kinds();
        self.sample_workers();
        if adopted > 0 {
            // Their leases are ours to keep now; stale ones are stopped.
            self.renew_leases().await;
        }
        self.refresh_registry().await;
    }

    /// A worker's stream ended: what it held goes back at once (it said
    /// goodbye) or after the reconnect grace (its stream broke).
    pub(super) async fn worker_left(&mut self, conn: u64, clean: bool) {
        let Some(worker) = self.workers.remove(&conn) else {
            return;
        };
        self.publish_kinds();
        self.sample_workers();
        if clean {
            self.hand_back_unstarted(worker).await;
        } else {
            // It may reconnect (here or elsewhere) and carry on.
            let until = now_ms() + self.reconnect_grace.as_millis() as u64;
            self.orphan(worker, until, "its stream broke").await;
        }
        self.refresh_registry().await;
    }

    /// A worker's results were recorded (on its own stream task): its
    /// credits come back, and each batch's in-flight count goes down.
    pub(super) fn results_recorded(
        &mut self,
        conn: u64,
        returned: u32,
        per_batch: Vec<BatchResults>,
    ) {
        if let Some(worker) = self.workers.get_mut(&conn) {
            worker.last_seen = tokio::time::Instant::now();
            worker.free = (worker.free + returned).min(worker.slots);
            for results in &per_batch {
                for index in &results.indices {
                    worker.running.remove(&(results.batch.clone(), *index));
                }
            }
        }
        for results in per_batch {
            self.apply_results(results);
        }
    }

    /// A worker handed ops back: it is shutting down, nothing more for it.
    pub(super) fn worker_draining(&mut self, conn: u64) {
        if let Some(worker) = self.workers.get_mut(&conn)
            && !worker.draining
        {
            info!(worker = %worker.worker_id, "worker is draining; no more work for it");
            worker.draining = true;
        }
    }

    /// Our workers, for `volley workers`.
    pub(super) fn list_workers(&self) -> Vec<WorkerInfo> {
        self.workers
            .values()
            .map(|worker| WorkerInfo {
                worker_id: worker.worker_id.clone(),
                kinds: worker.kinds.iter().cloned().collect(),
                labels: worker.labels.clone(),
                slots: worker.slots,
                busy: worker.slots.saturating_sub(worker.free),
                draining: worker.draining,
                coordinator: self.id.clone(),
            })
            .collect()
    }

    pub(super) fn free_credits(&self) -> u32 {
        self.workers
            .values()
            .filter(|worker| !worker.draining)
            .map(|worker| worker.free)
            .sum()
    }

    pub(super) fn publish_kinds(&self) {
        let kinds: HashSet<String> = self
            .workers
            .values()
            .flat_map(|worker| worker.kinds.iter().cloned())
            .collect();
        if let Ok(mut shared) = self.kinds.write() {
            shared.local = kinds;
        }
    }

    /// Our workers and their slots, for the gauges.
    pub(super) fn sample_workers(&self) {
        let (mut busy, mut free) = (0u64, 0u64);
        for worker in self.workers.values() {
            free += u64::from(worker.free);
            busy += u64::from(worker.slots.saturating_sub(worker.free));
        }
        self.metrics
            .workers_connected
            .set(self.workers.len() as f64);
        self.metrics.slots_busy.set(busy as f64);
        self.metrics.slots_free.set(free as f64);
    }

    /// Writes our workers into the store's registry (so every coordinator
    /// knows the kinds the cluster runs, and `volley workers` lists them
    /// all) and reads the whole cluster's back.
    pub(super) async fn refresh_registry(&mut self) {
        let now = now_ms();
        let entries: Vec<WorkerEntry> = self
            .workers
            .values()
            .map(|worker| {
                let mut kinds: Vec<String> = worker.kinds.iter().cloned().collect();
                kinds.sort();
                WorkerEntry {
                    worker_id: worker.worker_id.clone(),
                    kinds,
                    labels: worker.labels.clone(),
                    slots: worker.slots,
                    busy: worker.slots.saturating_sub(worker.free),
                    draining: worker.draining,
                }
            })
            .collect();
        let ttl = (self.resync_interval * 3).max(Duration::from_secs(5));
        if let Err(error) = self
            .store
            .publish_workers(&self.id, &entries, now + ttl.as_millis() as u64)
            .await
        {
            warn!(%error, "could not publish our workers");
        }
        match self.store.workers(now).await {
            Ok(cluster) => {
                let kinds: HashSet<String> = cluster
                    .iter()
                    .flat_map(|(_, entry)| entry.kinds.iter().cloned())
                    .collect();
                if let Ok(mut shared) = self.kinds.write() {
                    shared.cluster = kinds;
                }
                self.cluster = cluster;
            }
            Err(error) => warn!(%error, "could not read the worker registry"),
        }
    }

    /// Whether a worker connected to another coordinator runs the op: then
    /// we hand the op back for that coordinator instead of parking it.
    pub(super) fn elsewhere_accepts(
        &self,
        kind: &str,
        requires: &BTreeMap<String, String>,
    ) -> bool {
        self.cluster.iter().any(|(coordinator, entry)| {
            // A draining worker takes no more work, there as here.
            coordinator != &self.id && !entry.draining && entry_accepts(entry, kind, requires)
        })
    }

    pub(super) fn cancel_running(&mut self, batch: &BatchId, running: &[Claimed]) {
        let wanted: HashSet<u32> = running.iter().map(|claimed| claimed.index).collect();
        for worker in self.workers.values() {
            let ops: Vec<v1::OpRef> = worker
                .running
                .iter()
                .filter(|((running_batch, index), _)| {
                    running_batch == batch && wanted.contains(index)
                })
                .map(|((_, index), attempt)| v1::OpRef {
                    batch_id: batch.to_string(),
                    op_index: *index,
                    attempt: *attempt,
                    ticket: String::new(),
                })
                .collect();
            if !ops.is_empty() {
                let message = v1::CoordinatorMessage {
                    msg: Some(v1::coordinator_message::Msg::Cancel(v1::CancelOps { ops })),
                };
                if worker.outbound.try_send(message).is_err() {
                    warn!(worker = %worker.worker_id, "could not deliver a cancel");
                }
            }
        }
    }

    /// Tells workers to stop the ops of a batch that ended under them.
    pub(super) fn cancel_running_of(&mut self, batch: &BatchId) {
        let running: Vec<Claimed> = self
            .workers
            .values()
            .flat_map(|worker| worker.running.iter())
            .filter(|((running_batch, _), _)| running_batch == batch)
            .map(|((_, index), attempt)| Claimed {
                index: *index,
                attempt: *attempt,
            })
            .collect();
        self.cancel_running(batch, &running);
    }

    /// A worker is gone (its stream broke, it went silent, or it stopped
    /// taking assignments): the leases of what it ran now end at
    /// `until_ms`. If it reconnects by then (to any coordinator) and reports
    /// those ops, they are adopted and carry on; otherwise the batch's owner
    /// expires the leases and the ops run again (attempt + 1; a lost-worker
    /// retry while the batch allows, then a lost-worker failure for their
    /// retry policy).
    pub(super) async fn orphan(&mut self, worker: Worker, until_ms: u64, why: &str) {
        for (batch, claims) in worker.running_by_batch() {
            warn!(%batch, worker = %worker.worker_id, ops = claims.len(), why, lease_until_ms = until_ms, "worker gone with ops running; they run again unless it comes back");
            // Noting the worker: if the leases run out, the errors name it.
            if let Err(error) = self
                .store
                .renew_leases_on(&batch, &claims, until_ms, &worker.worker_id)
                .await
            {
                warn!(%batch, %error, "could not shorten the leases; they run out as they were");
            }
            let indices = claims.iter().map(|claim| claim.index).collect();
            self.apply_results(BatchResults {
                batch,
                indices,
                outcome: None,
            });
        }
    }

    /// A worker that ended its stream cleanly had reported every op it ran:
    /// the assignments still on its books crossed its goodbye and never
    /// started. They go back to the queue without costing an attempt.
    pub(super) async fn hand_back_unstarted(&mut self, worker: Worker) {
        for (batch, claims) in worker.running_by_batch() {
            info!(%batch, worker = %worker.worker_id, ops = claims.len(), "assignments a leaving worker never started go back");
            if let Err(error) = self.store.return_ops(&batch, &claims, now_ms()).await {
                warn!(%batch, %error, "could not take ops back; their leases will run out");
            }
            let indices = claims.iter().map(|claim| claim.index).collect();
            self.apply_results(BatchResults {
                batch,
                indices,
                outcome: None,
            });
        }
    }
}
