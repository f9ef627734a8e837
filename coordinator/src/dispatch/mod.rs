//! The dispatcher: one task that owns the worker table (credits, kinds,
//! labels) and the active batches (in-flight counts against `max_parallel`),
//! claims ready ops from the store and routes them to workers.
//!
//! One task, not a lock: every dispatch decision reads and changes credits
//! and in-flight counts together, and a single owner makes that trivially
//! consistent. Store calls that are not dispatch decisions — recording
//! results — happen on the workers' own stream tasks, in parallel, and only
//! their effect on credits comes back here as a `Completed` command.
//!
//! Claims are bounded by free worker credits and the batch's parallelism, so
//! ops never queue up inside the coordinator: a claimed op is either sent at
//! once or, when no connected worker supports its kind or labels, handed
//! back for another coordinator whose workers do, or parked until one
//! connects.
//!
//! # Several coordinators
//! Every coordinator dispatches every active batch to its own workers:
//! claims and completions are atomic in the store, so they never hand out
//! the same attempt twice, and a batch's workers are wherever they happened
//! to connect. What must happen once per batch — expiring leases, the
//! deadline, waits that timed out — is done by the batch's *owner*: the
//! coordinator holding its renewable, fenced hold in the store (see
//! `Store::hold_batch`). When an owner dies its hold runs out and another
//! coordinator takes the batch over at its next tick; a coordinator that
//! shuts down releases its holds so others take over at once. Leases of
//! running ops are renewed every tick by the coordinator their worker is
//! connected to, and a worker that reconnects (anywhere) reports what it
//! still runs, so that coordinator adopts those ops instead of re-running
//! them.
//!
//! # Layout
//! - `mod.rs`: the command loop — [`Dispatcher::run`] and `handle`, one
//!   named step per [`Command`].
//! - `workers`: the worker table (credits, kinds, labels, the [`Ledger`]).
//! - `batches`: the active batches (in-flight counts, parked ops).
//! - `claim`: fair shares of credits and each batch's claim.
//! - `route`: claimed ops to workers, templates filled in.
//! - `housekeeping`: the tick, timers, leases, pruning, batch holds.
//! - `why`: what holds an op back here.

mod batches;
mod claim;
mod housekeeping;
mod route;
#[cfg(test)]
mod tests;
mod why;
mod workers;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};
use volley_proto::{BatchId, v1};
use volley_store::{Claimed, CompleteOutcome, Doorbell, Fence, Store, WorkerEntry};

use crate::config::CoordinatorConfig;
use crate::domain::WorkerInfo;
use crate::metrics::DispatchMetrics;
use crate::plans::{PlanCache, PlannedBatch};
use crate::service::now_ms;

use batches::ActiveBatch;
use workers::Worker;
pub(crate) use workers::{KnownKinds, Ledger};

/// Room for commands: workers send at most one `Completed` per results
/// message and results are bounded by credits, so this only absorbs bursts.
const COMMAND_CAPACITY: usize = 4096;

pub(crate) enum Command {
    WorkerJoined {
        conn: u64,
        worker_id: String,
        kinds: HashSet<String>,
        labels: BTreeMap<String, String>,
        slots: u32,
        outbound: mpsc::Sender<v1::CoordinatorMessage>,
        /// Ops it still runs from a session with another (or an earlier)
        /// coordinator whose lease tickets it showed (the session checked
        /// them and wrote them in its ledger): adopted, not re-run.
        running: Vec<(BatchId, Claimed)>,
        /// Its identity, signed into each assignment's lease ticket:
        /// `<token id>/<worker id>`.
        holder: Arc<str>,
        /// Where its assignments are written down for its session.
        ledger: Arc<Ledger>,
    },
    WorkerLeft {
        conn: u64,
        /// It ended its stream itself: what it still holds never started.
        clean: bool,
    },
    Completed {
        conn: u64,
        returned: u32,
        per_batch: Vec<BatchResults>,
    },
    BatchAdded(Arc<PlannedBatch>),
    /// A batch learned of from the store could not be loaded.
    BatchLoadFailed(BatchId),
    /// The batch grew (spawned ops): dispatch from this plan on.
    BatchReplanned(Arc<PlannedBatch>),
    BatchCancelled {
        batch: BatchId,
        running: Vec<Claimed>,
    },
    ListWorkers(oneshot::Sender<Vec<WorkerInfo>>),
    /// A worker is alive: renew the leases of what it runs.
    Heartbeat {
        conn: u64,
    },
    /// A worker handed ops back: it is draining and takes no more work.
    Draining {
        conn: u64,
    },
    /// Why is this op not running: the dispatcher's side of the answer.
    Why {
        batch: BatchId,
        index: u32,
        reply: oneshot::Sender<WhyAnswer>,
    },
}

/// The dispatcher's side of `why`.
#[derive(Debug, Default)]
pub(crate) struct WhyAnswer {
    /// Claimed (the store says running) but no connected worker can take it.
    pub(crate) parked: bool,
    pub(crate) reasons: Vec<String>,
}

/// Results of one worker flush for one batch, as recorded by the store.
pub(crate) struct BatchResults {
    pub(crate) batch: BatchId,
    pub(crate) indices: Vec<u32>,
    /// `None` when the store could not record them.
    pub(crate) outcome: Option<CompleteOutcome>,
}

#[derive(Clone)]
pub(crate) struct DispatchHandle {
    commands: mpsc::Sender<Command>,
    next_conn: Arc<AtomicU64>,
}

pub(crate) fn channel() -> (DispatchHandle, mpsc::Receiver<Command>) {
    let (commands, receiver) = mpsc::channel(COMMAND_CAPACITY);
    (
        DispatchHandle {
            commands,
            next_conn: Arc::new(AtomicU64::new(1)),
        },
        receiver,
    )
}

impl DispatchHandle {
    pub(crate) async fn send(&self, command: Command) {
        if self.commands.send(command).await.is_err() {
            debug!("dispatcher stopped; command dropped");
        }
    }

    pub(crate) fn next_conn(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) async fn workers(&self) -> Vec<WorkerInfo> {
        let (reply, receiver) = oneshot::channel();
        self.send(Command::ListWorkers(reply)).await;
        receiver.await.unwrap_or_default()
    }
}

pub(crate) struct Dispatcher {
    store: Arc<dyn Store>,
    /// This coordinator's id (registry, batch holds).
    id: String,
    commands: mpsc::Receiver<Command>,
    /// For tasks that load batches learned of from the store.
    handle: DispatchHandle,
    plans: Arc<PlanCache>,
    doorbells: broadcast::Receiver<Doorbell>,
    kinds: Arc<RwLock<KnownKinds>>,
    resync_interval: Duration,
    lease: Duration,
    ownership_ttl: Duration,
    reconnect_grace: Duration,
    report_blocked_after: Duration,
    /// Batches being loaded (planned from their stored spec).
    loading: HashSet<BatchId>,
    /// Batches this coordinator owns, with its fence for each.
    owned: HashMap<BatchId, Fence>,
    /// Every live worker of the cluster, by coordinator (last tick's view).
    cluster: Vec<(String, WorkerEntry)>,
    /// The store could not be reached at the last tick.
    store_down: bool,
    /// Told false while the store is unreachable (health: NOT_SERVING).
    serving: Arc<tokio::sync::watch::Sender<bool>>,
    /// No lease expiry before this: the store just came back, and every
    /// coordinator must first renew what its workers ran meanwhile.
    expire_after: Option<tokio::time::Instant>,
    /// The store's epoch when we started: another value later means the
    /// store restarted empty.
    epoch: String,
    /// When a retry delayed by backoff becomes ready: look again then.
    next_retry_at_ms: Option<u64>,
    /// When a batch's deadline or an op's `wait_timeout` runs out (unix
    /// ms), so they fire on time rather than at the next tick. Set when the
    /// dispatcher learns of the batch or its spawned ops, from its own
    /// clock (never before the store's deadline, which was counted from
    /// the creation just before); the tick still checks every batch.
    timers: BTreeSet<(u64, BatchId)>,
    shutdown: CancellationToken,
    workers: BTreeMap<u64, Worker>,
    batches: HashMap<BatchId, ActiveBatch>,
    /// Round-robin order of active batches.
    order: VecDeque<BatchId>,
    /// When the batch index was last pruned, and where the walk goes on.
    pruned_at: Option<tokio::time::Instant>,
    prune_from_ms: u64,
    /// Mints each assignment's capability token.
    auth: Arc<crate::auth::Authenticator>,
    metrics: DispatchMetrics,
}

impl Dispatcher {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        store: Arc<dyn Store>,
        config: &CoordinatorConfig,
        commands: mpsc::Receiver<Command>,
        handle: DispatchHandle,
        plans: Arc<PlanCache>,
        kinds: Arc<RwLock<KnownKinds>>,
        epoch: String,
        serving: Arc<tokio::sync::watch::Sender<bool>>,
        auth: Arc<crate::auth::Authenticator>,
        shutdown: CancellationToken,
    ) -> Self {
        let doorbells = store.doorbells();
        Dispatcher {
            store,
            id: config.id.clone(),
            commands,
            handle,
            plans,
            doorbells,
            kinds,
            resync_interval: config.resync_interval,
            lease: config.lease,
            ownership_ttl: config.ownership_ttl,
            reconnect_grace: config.reconnect_grace,
            report_blocked_after: config.report_blocked_after,
            loading: HashSet::new(),
            owned: HashMap::new(),
            cluster: Vec::new(),
            store_down: false,
            expire_after: None,
            serving,
            epoch,
            next_retry_at_ms: None,
            timers: BTreeSet::new(),
            shutdown,
            workers: BTreeMap::new(),
            batches: HashMap::new(),
            order: VecDeque::new(),
            pruned_at: None,
            prune_from_ms: 0,
            metrics: DispatchMetrics::new(),
            auth,
        }
    }

    pub(crate) async fn run(mut self) {
        let mut resync = tokio::time::interval(self.resync_interval);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                command = self.commands.recv() => match command {
                    Some(command) => {
                        self.handle(command).await;
                        // Take every command already queued before pumping:
                        // one claim serves many results.
                        while let Ok(command) = self.commands.try_recv() {
                            self.handle(command).await;
                        }
                    }
                    None => break,
                },
                bell = self.doorbells.recv() => self.ring(bell),
                _ = resync.tick() => {
                    // Heartbeats queued while a store call blocked must count
                    // before anyone is judged silent.
                    while let Ok(command) = self.commands.try_recv() {
                        self.handle(command).await;
                    }
                    self.mark_all_ready();
                    self.housekeeping().await;
                }
                () = sleep_until_ms(self.next_retry_at_ms) => {
                    self.next_retry_at_ms = None;
                    self.mark_all_ready();
                }
                () = sleep_until_ms(self.timers.first().map(|(at, _)| *at)) => {
                    self.fire_timers().await;
                }
            }
            while let Ok(bell) = self.doorbells.try_recv() {
                self.ring(Ok(bell));
            }
            // Commands sent before a store change whose bell woke us (a
            // draining worker's `Draining` before its handed-back ops are
            // ready again) count before the claim that bell leads to:
            // `select!` may have picked the bell first.
            while let Ok(command) = self.commands.try_recv() {
                self.handle(command).await;
            }
            self.pump().await;
        }
        self.release_holds().await;
        info!("dispatcher stopped");
    }

    fn ring(&mut self, bell: Result<Doorbell, broadcast::error::RecvError>) {
        match bell {
            Ok(Doorbell::Batch(batch)) => {
                if let Some(active) = self.batches.get_mut(&batch) {
                    active.maybe_ready = true;
                }
            }
            // Submitted to another coordinator: dispatch it to our workers too.
            Ok(Doorbell::Started(batch)) => self.load(batch),
            // Finished anywhere (or cancelled): stop what our workers run of it.
            Ok(Doorbell::Ended(batch)) => self.batch_ended(&batch),
            Ok(Doorbell::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                self.mark_all_ready()
            }
            // Memory writes that unblock ops ring those ops' batches too;
            // a claim's or a note's events make nothing claimable.
            Ok(Doorbell::Memory(_) | Doorbell::Events(_))
            | Err(broadcast::error::RecvError::Closed) => {}
        }
    }

    /// One command, one named step.
    async fn handle(&mut self, command: Command) {
        match command {
            Command::WorkerJoined {
                conn,
                worker_id,
                kinds,
                labels,
                slots,
                outbound,
                running,
                holder,
                ledger,
            } => {
                let worker = Worker {
                    worker_id,
                    holder,
                    ledger,
                    kinds,
                    labels,
                    slots,
                    free: slots,
                    outbound,
                    running: HashMap::new(),
                    last_seen: tokio::time::Instant::now(),
                    draining: false,
                };
                self.worker_joined(conn, worker, running).await;
            }
            Command::WorkerLeft { conn, clean } => self.worker_left(conn, clean).await,
            Command::Completed {
                conn,
                returned,
                per_batch,
            } => self.results_recorded(conn, returned, per_batch),
            Command::BatchAdded(planned) => self.batch_added(planned),
            Command::BatchLoadFailed(batch) => {
                self.loading.remove(&batch);
            }
            Command::BatchReplanned(planned) => self.batch_replanned(planned),
            Command::BatchCancelled { batch, running } => {
                self.remove_batch(&batch);
                self.cancel_running(&batch, &running);
            }
            // Leases are renewed every tick for workers heard from lately.
            Command::Heartbeat { conn } => {
                if let Some(worker) = self.workers.get_mut(&conn) {
                    worker.last_seen = tokio::time::Instant::now();
                }
            }
            Command::Draining { conn } => self.worker_draining(conn),
            Command::Why {
                batch,
                index,
                reply,
            } => {
                let _ = reply.send(self.why(&batch, index));
            }
            Command::ListWorkers(reply) => {
                let _ = reply.send(self.list_workers());
            }
        }
    }
}

/// Sleeps until the unix ms `at`; forever when there is none.
async fn sleep_until_ms(at: Option<u64>) {
    match at {
        Some(at) => {
            let wait = at.saturating_sub(now_ms());
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        None => std::future::pending().await,
    }
}
