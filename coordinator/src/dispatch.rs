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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use volley_kinds::Reference;
use volley_proto::{BatchId, v1};
use volley_store::{
    Claimed, CompleteOutcome, Completion, Doorbell, FailureKind, Fence, OpRecord, OpState, Store,
    StoreError, WorkerEntry,
};

use crate::config::CoordinatorConfig;
use crate::metrics::{DispatchMetrics, count_recorded, count_started};
use crate::plans::{PlanCache, PlannedBatch};
use crate::service::now_ms;

/// The first pause before claiming again from a batch whose last claim held
/// only ops this coordinator's workers cannot run (handed back for others);
/// doubled on each such claim in a row, up to [`DECLINE_HOLD_OFF_MAX`].
const DECLINE_HOLD_OFF: Duration = Duration::from_millis(250);
const DECLINE_HOLD_OFF_MAX: Duration = Duration::from_secs(4);
/// How long releasing batch holds may take at shutdown.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often, and how many entries at a time, the batch index is walked for
/// batches whose retention ran out.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
const PRUNE_STEP: u32 = 1_000;
/// Most expired batches deleted per tick.
const DROP_STEP: u32 = 100;

/// Room for commands: workers send at most one `Completed` per results
/// message and results are bounded by credits, so this only absorbs bursts.
const COMMAND_CAPACITY: usize = 4096;

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
    ListWorkers(oneshot::Sender<Vec<v1::WorkerInfo>>),
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

    pub(crate) async fn workers(&self) -> Vec<v1::WorkerInfo> {
        let (reply, receiver) = oneshot::channel();
        self.send(Command::ListWorkers(reply)).await;
        receiver.await.unwrap_or_default()
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

struct Worker {
    worker_id: String,
    /// `<token id>/<worker id>`: signed into its assignments' lease tickets.
    holder: Arc<str>,
    ledger: Arc<Ledger>,
    kinds: HashSet<String>,
    labels: BTreeMap<String, String>,
    slots: u32,
    free: u32,
    outbound: mpsc::Sender<v1::CoordinatorMessage>,
    /// What it runs now: (batch, op index) → attempt.
    running: HashMap<(BatchId, u32), u32>,
    /// When it last said anything (a heartbeat or results).
    last_seen: tokio::time::Instant,
    /// It is shutting down: nothing more is assigned to it.
    draining: bool,
}

impl Worker {
    fn accepts(&self, kind: &str, requires: &BTreeMap<String, String>) -> bool {
        self.kinds.contains(kind) && has_labels(&self.labels, requires)
    }
}

/// Whether a worker of the cluster registry (connected here or elsewhere)
/// runs `kind` with the `requires` labels: [`Worker::accepts`] for entries.
fn entry_accepts(entry: &WorkerEntry, kind: &str, requires: &BTreeMap<String, String>) -> bool {
    entry.kinds.iter().any(|known| known == kind) && has_labels(&entry.labels, requires)
}

fn has_labels(labels: &BTreeMap<String, String>, requires: &BTreeMap<String, String>) -> bool {
    requires
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value))
}

/// `" with labels k=v,…"` for messages about an op's `requires`; "" for none.
fn with_labels(requires: &BTreeMap<String, String>) -> String {
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

struct ActiveBatch {
    planned: Arc<PlannedBatch>,
    /// Claimed and not yet ended: sent to a worker or parked.
    in_flight: u32,
    /// Claimed ops no connected worker can take yet.
    parked: VecDeque<Claimed>,
    /// The ready queue may hold ops (a doorbell rang, or a claim came back
    /// full). Cleared when a claim returns fewer ops than asked.
    maybe_ready: bool,
    /// No claims before this: the last ones held only ops our workers
    /// cannot run, handed back for other coordinators to take.
    claim_after: Option<tokio::time::Instant>,
    /// The pause after the next claim that holds nothing we can run.
    hold_off: Duration,
    /// Parked ops no live worker of the cluster runs, since when.
    unrunnable_since: HashMap<u32, tokio::time::Instant>,
    /// Parked ops already reported blocked (an `OP_BLOCKED` event).
    reported_blocked: HashSet<u32>,
    /// When each parked attempt was claimed, for the dispatch latency.
    parked_since: HashMap<(u32, u32), tokio::time::Instant>,
}

impl ActiveBatch {
    fn capacity(&self) -> u32 {
        let max_parallel = self.planned.plan.max_parallel;
        if max_parallel == 0 {
            u32::MAX
        } else {
            max_parallel.saturating_sub(self.in_flight)
        }
    }

    /// Whether a claim now may find ops: the queue may hold some, no
    /// hand-back pause, room under `max_parallel`.
    fn wants_credits(&self, now: tokio::time::Instant) -> bool {
        self.maybe_ready && self.claim_after.is_none_or(|after| after <= now) && self.capacity() > 0
    }
}

/// How many credits each batch may claim in one pass of [`Dispatcher::pump`]:
/// the free credits are split evenly between the tenants that want some,
/// then a tenant's share evenly between its batches that want some
/// (rounded up, so every wanting batch can claim at least one). A tenant
/// with fifty batches gets what a tenant with one gets; the pass repeats
/// while anything moved, so credits a tenant leaves unused go to the others.
#[derive(Default)]
struct FairShares {
    /// Credits each tenant may still claim in this pass.
    tenant_budget: HashMap<String, u32>,
    /// The most one batch of the tenant may claim in this pass.
    per_batch: HashMap<String, u32>,
}

impl FairShares {
    fn new<'a>(free: u32, wanting: impl Iterator<Item = &'a str>) -> FairShares {
        let mut batches_of: BTreeMap<&str, u32> = BTreeMap::new();
        for tenant in wanting {
            *batches_of.entry(tenant).or_default() += 1;
        }
        let mut shares = FairShares::default();
        if batches_of.is_empty() {
            return shares;
        }
        let tenant_share = free.div_ceil(batches_of.len() as u32).max(1);
        for (tenant, batches) in batches_of {
            shares.tenant_budget.insert(tenant.to_owned(), tenant_share);
            shares
                .per_batch
                .insert(tenant.to_owned(), tenant_share.div_ceil(batches).max(1));
        }
        shares
    }

    /// The most this batch of `tenant` may claim now (0: its tenant's
    /// budget is spent, or it wanted nothing when the pass began).
    fn cap(&self, tenant: &str) -> u32 {
        let budget = self.tenant_budget.get(tenant).copied().unwrap_or(0);
        let per_batch = self.per_batch.get(tenant).copied().unwrap_or(0);
        budget.min(per_batch)
    }

    fn spend(&mut self, tenant: &str, claimed: u32) {
        if let Some(budget) = self.tenant_budget.get_mut(tenant) {
            *budget = budget.saturating_sub(claimed);
        }
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

    /// Shutting down: let other coordinators take our batches over at once
    /// rather than after our holds run out. Our workers reconnect to them
    /// and report what they still run, so nothing is re-run.
    async fn release_holds(&mut self) {
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

    /// Starts loading a batch this coordinator does not dispatch yet (its
    /// plan is rebuilt from the stored spec, off the dispatcher's task).
    fn load(&mut self, batch: BatchId) {
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
    fn batch_ended(&mut self, batch: &BatchId) {
        self.cancel_running_of(batch);
        if self.batches.contains_key(batch) {
            self.remove_batch(batch);
            self.plans.finished(batch);
        }
    }

    fn mark_all_ready(&mut self) {
        for active in self.batches.values_mut() {
            active.maybe_ready = true;
        }
    }

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
                let adopted = running.len();
                let running: HashMap<(BatchId, u32), u32> = running
                    .into_iter()
                    .map(|(batch, claim)| ((batch, claim.index), claim.attempt))
                    .collect();
                for (batch, _) in running.keys() {
                    if let Some(active) = self.batches.get_mut(batch) {
                        active.in_flight += 1;
                    }
                }
                let free = slots.saturating_sub(running.len() as u32);
                if adopted > 0 {
                    info!(worker = %worker_id, ops = adopted, "worker still runs ops from an earlier session: adopting them");
                }
                self.workers.insert(
                    conn,
                    Worker {
                        worker_id,
                        holder,
                        ledger,
                        kinds,
                        labels,
                        slots,
                        free,
                        outbound,
                        running,
                        last_seen: tokio::time::Instant::now(),
                        draining: false,
                    },
                );
                self.publish_kinds();
                self.sample_workers();
                if adopted > 0 {
                    // Their leases are ours to keep now; stale ones are stopped.
                    self.renew_leases().await;
                }
                self.refresh_registry().await;
            }
            Command::WorkerLeft { conn, clean } => {
                if let Some(worker) = self.workers.remove(&conn) {
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
            }
            Command::Completed {
                conn,
                returned,
                per_batch,
            } => {
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
            Command::BatchAdded(planned) => {
                let id = planned.id.clone();
                self.loading.remove(&id);
                if !self.batches.contains_key(&id) {
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
            }
            Command::BatchLoadFailed(batch) => {
                self.loading.remove(&batch);
            }
            Command::BatchReplanned(planned) => {
                // Plans only grow; one reloaded from the store may already
                // be newer than this one.
                if let Some(active) = self.batches.get_mut(&planned.id)
                    && planned.plan.ops.len() >= active.planned.plan.ops.len()
                {
                    let known = active.planned.plan.ops.len();
                    active.planned = planned.clone();
                    active.maybe_ready = true;
                    self.set_timers(&planned, known);
                }
            }
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
            Command::Draining { conn } => {
                if let Some(worker) = self.workers.get_mut(&conn)
                    && !worker.draining
                {
                    info!(worker = %worker.worker_id, "worker is draining; no more work for it");
                    worker.draining = true;
                }
            }
            Command::Why {
                batch,
                index,
                reply,
            } => {
                let _ = reply.send(self.why(&batch, index));
            }
            Command::ListWorkers(reply) => {
                let workers = self
                    .workers
                    .values()
                    .map(|worker| v1::WorkerInfo {
                        worker_id: worker.worker_id.clone(),
                        kinds: worker.kinds.iter().cloned().collect(),
                        labels: worker.labels.clone().into_iter().collect(),
                        slots: worker.slots,
                        busy: worker.slots.saturating_sub(worker.free),
                        coordinator: self.id.clone(),
                    })
                    .collect();
                let _ = reply.send(workers);
            }
        }
    }

    fn apply_results(&mut self, results: BatchResults) {
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

    /// Timers for the batch's deadline (when `from_op` is 0: the batch is
    /// new to us) and for the `wait_timeout` of its ops from `from_op` on
    /// (spawned ops count from now, as the store counts them from
    /// `add_ops`). One timer per distinct instant.
    fn set_timers(&mut self, planned: &PlannedBatch, from_op: usize) {
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
    async fn fire_timers(&mut self) {
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
            let plan = &active.planned.plan;
            let (has_deadline, has_wait_timeouts) = (
                plan.deadline_ms > 0,
                plan.ops.iter().any(|op| op.wait_timeout_ms > 0),
            );
            let Some(fence) = self.hold(&batch, now).await else {
                continue;
            };
            self.expire_timers_of(&batch, has_deadline, has_wait_timeouts, &fence)
                .await;
        }
    }

    fn remove_batch(&mut self, batch: &BatchId) {
        self.owned.remove(batch);
        self.timers.retain(|(_, timed)| timed != batch);
        if self.batches.remove(batch).is_some() {
            self.order.retain(|id| id != batch);
        }
    }

    fn cancel_running(&mut self, batch: &BatchId, running: &[Claimed]) {
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

    fn publish_kinds(&self) {
        let kinds: HashSet<String> = self
            .workers
            .values()
            .flat_map(|worker| worker.kinds.iter().cloned())
            .collect();
        if let Ok(mut shared) = self.kinds.write() {
            shared.local = kinds;
        }
    }

    /// Writes our workers into the store's registry (so every coordinator
    /// knows the kinds the cluster runs, and `volley workers` lists them
    /// all) and reads the whole cluster's back.
    async fn refresh_registry(&mut self) {
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
    fn elsewhere_accepts(&self, kind: &str, requires: &BTreeMap<String, String>) -> bool {
        self.cluster.iter().any(|(coordinator, entry)| {
            coordinator != &self.id && entry_accepts(entry, kind, requires)
        })
    }

    /// A worker is gone (its stream broke, it went silent, or it stopped
    /// taking assignments): the leases of what it ran now end at
    /// `until_ms`. If it reconnects by then (to any coordinator) and reports
    /// those ops, they are adopted and carry on; otherwise the batch's owner
    /// expires the leases and the ops run again (attempt + 1; a lost-worker
    /// retry while the batch allows, then a lost-worker failure for their
    /// retry policy).
    async fn orphan(&mut self, worker: Worker, until_ms: u64, why: &str) {
        let mut by_batch: HashMap<BatchId, Vec<Claimed>> = HashMap::new();
        for ((batch, index), attempt) in worker.running {
            by_batch
                .entry(batch)
                .or_default()
                .push(Claimed { index, attempt });
        }
        for (batch, claims) in by_batch {
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

    /// Fails ops of the batch whose wait for memory keys ran past its deadline.
    async fn expire_waits_of(&mut self, batch: &BatchId, fence: &Fence) {
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

    /// A worker that ended its stream cleanly had reported every op it ran:
    /// the assignments still on its books crossed its goodbye and never
    /// started. They go back to the queue without costing an attempt.
    async fn hand_back_unstarted(&mut self, worker: Worker) {
        let mut by_batch: HashMap<BatchId, Vec<Claimed>> = HashMap::new();
        for ((batch, index), attempt) in worker.running {
            by_batch
                .entry(batch)
                .or_default()
                .push(Claimed { index, attempt });
        }
        for (batch, claims) in by_batch {
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

    /// Renews the lease of every op our live workers run and of every op
    /// parked here. Stale ones (their attempt ended meanwhile — an adopted
    /// op whose lease had already run out, say) are stopped on the worker,
    /// which then reports them and gets its slot back; parked ones are
    /// dropped.
    async fn renew_leases(&mut self) {
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

    /// The slow timer's work: notice a store that restarted empty, drop
    /// workers that went silent, keep the worker registry and the set of
    /// active batches current, renew the leases of what our workers run,
    /// and for the batches we own end what ran out of time — leases of ops
    /// whose worker died or hung (also those another coordinator handed
    /// out), batch deadlines, waits for keys.
    /// Deletes finished batches whose retention ran out (every coordinator
    /// does, each tick; a batch deleted twice is deleted once).
    async fn drop_expired(&mut self) {
        match self.store.drop_expired(now_ms(), DROP_STEP).await {
            Ok(0) => {}
            Ok(dropped) => debug!(dropped, "finished batches past their retention deleted"),
            Err(error) => warn!(%error, "cannot delete expired batches"),
        }
    }

    /// Once a minute, a step of the walk that drops expired batches from
    /// the batch index (their records expired by their retention).
    async fn prune_batch_index(&mut self) {
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

    async fn housekeeping(&mut self) {
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
                let plan = &active.planned.plan;
                (
                    active.planned.id.clone(),
                    plan.deadline_ms > 0,
                    plan.ops.iter().any(|op| op.wait_timeout_ms > 0),
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

    /// Ends the batch if its deadline passed, and fails its ops that waited
    /// for memory keys past their `wait_timeout`.
    async fn expire_timers_of(
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

    /// Parked ops that no live worker anywhere runs, for a while now: the
    /// batch's events say so once (`OP_BLOCKED`), so a user watching sees
    /// why nothing moves; the op stays parked until such a worker connects.
    async fn report_blocked(&mut self) {
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
    async fn drain_outboxes(&mut self, active: &[BatchId]) {
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

    async fn drain_outbox(&mut self, batch: &BatchId) {
        match self.store.drain_outbox(batch, now_ms()).await {
            Ok(0) => {}
            Ok(handled) => {
                info!(%batch, handled, "wrote shared store_as values left by a coordinator that died");
                self.mark_all_ready();
            }
            Err(error) => warn!(%batch, %error, "could not drain the outbox of shared writes"),
        }
    }

    /// Takes or keeps the batch's hold; `None` when another coordinator
    /// owns it (or the store cannot say).
    async fn hold(&mut self, batch: &BatchId, now: u64) -> Option<Fence> {
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

    fn housekeeping_failed(&mut self, batch: &BatchId, what: &str, error: StoreError) {
        if let StoreError::NotOwner { .. } = error {
            warn!(%batch, %error, "lost the batch to another coordinator");
            self.owned.remove(batch);
        } else {
            warn!(%batch, %error, "could not {what}");
        }
    }

    /// Brings the set of batches we dispatch in line with the store's
    /// active set: batches submitted elsewhere are loaded, batches that
    /// ended while a bell was missed are dropped. Returns that set.
    async fn discover(&mut self) -> Option<Vec<BatchId>> {
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
    async fn publish_ready_depth(&mut self, active: &[BatchId]) {
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

    /// Our workers and their slots, for the gauges.
    fn sample_workers(&self) {
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

    /// Tells workers to stop the ops of a batch that ended under them.
    fn cancel_running_of(&mut self, batch: &BatchId) {
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

    /// A store that comes back with another epoch restarted empty: every
    /// batch in flight is gone. Say so (`Lost`) rather than let them look
    /// finished or hang.
    async fn check_epoch(&mut self) {
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
    /// (their stream ends) and re-queue what they ran.
    async fn drop_silent_workers(&mut self) {
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

    /// The dispatcher's view of why an op is not running.
    fn why(&self, batch: &BatchId, index: u32) -> WhyAnswer {
        let parked = self
            .batches
            .get(batch)
            .is_some_and(|active| active.parked.iter().any(|claim| claim.index == index));
        WhyAnswer {
            parked,
            reasons: self.why_reasons(batch, index),
        }
    }

    fn why_reasons(&self, batch: &BatchId, index: u32) -> Vec<String> {
        let mut reasons = Vec::new();
        let Some(active) = self.batches.get(batch) else {
            reasons.push(
                "this coordinator is not dispatching the batch (it has ended, or another coordinator runs it)"
                    .to_owned(),
            );
            return reasons;
        };
        let Some(op) = active.planned.plan.ops.get(index as usize) else {
            return reasons;
        };
        // Our workers as they are now, the others' as of the last tick.
        let mut live = self.workers.len();
        let mut able = 0;
        let mut able_free = 0;
        for worker in self.workers.values() {
            if worker.accepts(&op.kind, &op.requires) {
                able += 1;
                able_free += usize::from(worker.free > 0 && !worker.draining);
            }
        }
        for (coordinator, entry) in &self.cluster {
            if coordinator == &self.id {
                continue;
            }
            live += 1;
            if entry_accepts(entry, &op.kind, &op.requires) {
                able += 1;
                able_free += usize::from(entry.busy < entry.slots);
            }
        }
        if able == 0 {
            let requires = with_labels(&op.requires);
            reasons.push(format!(
                "no live worker runs `{}` ops{requires} ({live} worker(s) live in the cluster)",
                op.kind,
            ));
        } else if able_free == 0 {
            reasons.push(format!(
                "all {able} worker(s) that run `{}` ops are busy",
                op.kind
            ));
        }
        let max_parallel = active.planned.plan.max_parallel;
        if max_parallel > 0 && active.in_flight >= max_parallel {
            reasons.push(format!(
                "max_parallel {max_parallel} holds it back: {} of the batch's ops are in flight",
                active.in_flight
            ));
        }
        if active.parked.iter().any(|claim| claim.index == index) {
            reasons.push("claimed, waiting for a worker that can take it".to_owned());
        }
        reasons
    }

    fn free_credits(&self) -> u32 {
        self.workers
            .values()
            .filter(|worker| !worker.draining)
            .map(|worker| worker.free)
            .sum()
    }

    /// Claims and sends as much as credits and parallelism allow, shared
    /// fairly between tenants, then between each tenant's batches
    /// ([`FairShares`]); the batches take turns (round-robin) across passes.
    async fn pump(&mut self) {
        loop {
            let mut progress = false;
            let now = tokio::time::Instant::now();
            let mut shares = FairShares::new(
                self.free_credits(),
                self.batches
                    .values()
                    .filter(|active| active.wants_credits(now))
                    .map(|active| active.planned.tenant.as_str()),
            );
            let rounds = self.order.len();
            for _ in 0..rounds {
                if self.free_credits() == 0 {
                    return;
                }
                let Some(batch) = self.order.pop_front() else {
                    return;
                };
                self.order.push_back(batch.clone());
                let Some(tenant) = self
                    .batches
                    .get(&batch)
                    .map(|active| active.planned.tenant.clone())
                else {
                    continue;
                };
                let (moved, claimed) = self.pump_batch(&batch, shares.cap(&tenant)).await;
                shares.spend(&tenant, claimed);
                progress |= moved;
            }
            if !progress {
                return;
            }
        }
    }

    /// One round for one batch: route parked ops, then claim up to what the
    /// batch, the free workers and `cap` (its fair share) allow. Returns
    /// whether anything moved, and how many ops it claimed.
    async fn pump_batch(&mut self, batch: &BatchId, cap: u32) -> (bool, u32) {
        let Some(active) = self.batches.get_mut(batch) else {
            return (false, 0);
        };
        let planned = active.planned.clone();
        let parked: Vec<Claimed> = active.parked.drain(..).collect();
        let mut progress = false;
        if !parked.is_empty() {
            let before = parked.len();
            // Each parked op's clock started at its own claim.
            self.route(&planned, parked, tokio::time::Instant::now())
                .await;
            let after = self
                .batches
                .get(batch)
                .map_or(0, |active| active.parked.len());
            progress |= after < before;
        }
        let free = self.free_credits();
        let Some(active) = self.batches.get_mut(batch) else {
            return (progress, 0);
        };
        if !active.maybe_ready || free == 0 {
            return (progress, 0);
        }
        if let Some(after) = active.claim_after {
            if after > tokio::time::Instant::now() {
                return (progress, 0);
            }
            active.claim_after = None;
        }
        let want = active.capacity().min(free).min(cap);
        if want == 0 {
            return (progress, 0);
        }
        let now = now_ms();
        let lease_until = now + self.lease.as_millis() as u64;
        let claim_started = tokio::time::Instant::now();
        let claimed = match self.store.claim(batch, want, now, lease_until).await {
            Ok(claimed) => claimed,
            Err(error) => {
                warn!(%batch, %error, "claim failed");
                return (progress, 0);
            }
        };
        let Some(active) = self.batches.get_mut(batch) else {
            return (progress, 0);
        };
        if (claimed.len() as u32) < want {
            active.maybe_ready = false;
        }
        if claimed.is_empty() {
            return (progress, 0);
        }
        let claimed_count = claimed.len() as u32;
        active.in_flight += claimed_count;
        let needed = claimed
            .iter()
            .map(|claim| claim.index as usize + 1)
            .max()
            .unwrap_or(0);
        let planned = if needed > planned.plan.ops.len() {
            // The batch grew (spawned ops) and the store made the new ops
            // ready before the new plan reached us: read it from the store.
            match self.reload_plan(batch, needed).await {
                Some(reloaded) => reloaded,
                None => planned,
            }
        } else {
            planned
        };
        count_started(&planned.plan, &claimed);
        let (known, unknown): (Vec<Claimed>, Vec<Claimed>) = claimed
            .into_iter()
            .partition(|claim| (claim.index as usize) < planned.plan.ops.len());
        if !unknown.is_empty() {
            let failed: Vec<Completion> = unknown
                .iter()
                .map(|claim| Completion {
                    index: claim.index,
                    attempt: claim.attempt,
                    ok: false,
                    failure: FailureKind::Permanent,
                    error: "the coordinator has no plan for this op".into(),
                    started_ms: now_ms(),
                    ..Completion::default()
                })
                .collect();
            let indices = failed.iter().map(|completion| completion.index).collect();
            let outcome = self.store.complete(batch, &failed, now_ms()).await.ok();
            if let Some(outcome) = &outcome {
                count_recorded(&planned.plan, &failed, outcome);
            }
            self.apply_results(BatchResults {
                batch: batch.clone(),
                indices,
                outcome,
            });
        }
        if !known.is_empty() {
            self.route(&planned, known, claim_started).await;
        }
        (true, claimed_count)
    }

    /// The batch's plan with at least `ops` ops — the cache's, or re-planned
    /// from its stored spec (the submission and every spawned chunk) by
    /// [`PlanCache::covering`] — and dispatches from that plan on.
    async fn reload_plan(&mut self, batch: &BatchId, ops: usize) -> Option<Arc<PlannedBatch>> {
        match self.plans.covering(self.store.as_ref(), batch, ops).await {
            Ok(planned) => {
                if let Some(active) = self.batches.get_mut(batch) {
                    active.planned = planned.clone();
                }
                Some(planned)
            }
            Err(error) => {
                warn!(%batch, %error, "could not re-plan the batch from its stored spec");
                None
            }
        }
    }

    /// Sends claimed ops to workers, many per message; parks what no worker
    /// can take now. `claimed_at`: when the claim that took them started
    /// (the dispatch latency's start; a parked op keeps its own).
    async fn route(
        &mut self,
        planned: &Arc<PlannedBatch>,
        claimed: Vec<Claimed>,
        claimed_at: tokio::time::Instant,
    ) {
        let args = self.fill_templates(planned, &claimed).await;
        // Ops sent now that were claimed at `claimed_at`, and those that
        // waited parked since their own claim.
        let mut sent_fresh = 0usize;
        let mut sent_parked = Vec::new();
        // Most routes hold no parked op: then no per-op lookup at all.
        let any_parked = self
            .batches
            .get(&planned.id)
            .is_some_and(|active| !active.parked_since.is_empty());
        let mut outgoing: HashMap<u64, Vec<v1::Assignment>> = HashMap::new();
        let mut parked = Vec::new();
        let mut declined = Vec::new();
        let mut failed = Vec::new();
        let total = claimed.len();
        for (claim, args) in claimed.into_iter().zip(args) {
            let op = &planned.plan.ops[claim.index as usize];
            let args_json = match args {
                Ok(args_json) => args_json,
                Err(error) => {
                    failed.push(Completion {
                        index: claim.index,
                        attempt: claim.attempt,
                        ok: false,
                        failure: FailureKind::Permanent,
                        error,
                        started_ms: now_ms(),
                        ..Completion::default()
                    });
                    continue;
                }
            };
            // The worker with the most free slots that accepts the op.
            let chosen = self
                .workers
                .iter()
                .filter(|(_, worker)| {
                    worker.free > 0 && !worker.draining && worker.accepts(&op.kind, &op.requires)
                })
                .max_by_key(|(_, worker)| worker.free)
                .map(|(conn, _)| *conn);
            let Some(conn) = chosen else {
                if self.elsewhere_accepts(&op.kind, &op.requires) {
                    declined.push(claim);
                } else {
                    parked.push(claim);
                }
                continue;
            };
            let Some(worker) = self.workers.get_mut(&conn) else {
                continue;
            };
            let parked_since = if any_parked {
                self.batches
                    .get_mut(&planned.id)
                    .and_then(|active| active.parked_since.remove(&(claim.index, claim.attempt)))
            } else {
                None
            };
            match parked_since {
                Some(since) => sent_parked.push(since),
                None => sent_fresh += 1,
            }
            worker.free -= 1;
            worker
                .running
                .insert((planned.id.clone(), claim.index), claim.attempt);
            worker.ledger.give(&planned.id, claim.index, claim.attempt);
            let token =
                self.auth
                    .capability(&planned.tenant, &planned.id, claim.index, claim.attempt);
            outgoing.entry(conn).or_default().push(v1::Assignment {
                batch_id: planned.id.to_string(),
                op_index: claim.index,
                op_id: op.id.to_string(),
                kind: op.kind.clone(),
                args_json,
                attempt: claim.attempt,
                timeout_ms: op.timeout_ms,
                max_output_bytes: op.max_output_bytes,
                trace_context: planned.trace.dispatch(
                    &planned.id,
                    op.id.as_str(),
                    &op.kind,
                    claim.attempt,
                    &worker.worker_id,
                ),
                namespace: planned.plan.namespace.clone().unwrap_or_default(),
                token,
                lease_ticket: self.auth.lease_ticket(
                    &planned.id,
                    claim.index,
                    claim.attempt,
                    &worker.holder,
                ),
            });
        }
        for (conn, assignments) in outgoing {
            let Some(worker) = self.workers.get(&conn) else {
                continue;
            };
            let message = v1::CoordinatorMessage {
                msg: Some(v1::coordinator_message::Msg::Assignments(v1::Assignments {
                    assignments,
                })),
            };
            // Assignments never exceed the worker's slots, so its channel
            // (sized by slots) has room; if not, the worker is stuck.
            if let Err(error) = worker.outbound.try_send(message) {
                warn!(worker = %worker.worker_id, %error, "worker not taking assignments; dropping it");
                if let Some(worker) = self.workers.remove(&conn) {
                    self.publish_kinds();
                    Box::pin(self.orphan(worker, now_ms(), "it stopped taking assignments")).await;
                }
            }
        }
        let sent_at = tokio::time::Instant::now();
        if sent_fresh > 0 {
            self.metrics
                .dispatch_latency
                .record_many(sent_at.duration_since(claimed_at), sent_fresh);
        }
        for since in sent_parked {
            self.metrics
                .dispatch_latency
                .record(sent_at.duration_since(since));
        }
        if let Some(active) = self.batches.get_mut(&planned.id) {
            if !parked.is_empty() {
                debug!(batch = %planned.id, parked = parked.len(), "no worker for some ops yet");
            }
            for claim in &parked {
                active
                    .parked_since
                    .entry((claim.index, claim.attempt))
                    .or_insert(claimed_at);
            }
            active.parked.extend(parked);
            if !declined.is_empty() && declined.len() == total {
                // Nothing here for our workers: let the others claim first.
                active.claim_after = Some(tokio::time::Instant::now() + active.hold_off);
                active.hold_off = (active.hold_off * 2).min(DECLINE_HOLD_OFF_MAX);
            } else if declined.len() < total {
                active.hold_off = DECLINE_HOLD_OFF;
            }
        }
        if !declined.is_empty() {
            debug!(batch = %planned.id, ops = declined.len(), "only workers of other coordinators run these ops: handing them back");
            if let Err(error) = self
                .store
                .return_ops(&planned.id, &declined, now_ms())
                .await
            {
                warn!(batch = %planned.id, %error, "could not hand ops back; their leases run out instead");
            }
            let indices = declined.iter().map(|claim| claim.index).collect();
            self.apply_results(BatchResults {
                batch: planned.id.clone(),
                indices,
                outcome: None,
            });
        }
        if !failed.is_empty() {
            let indices = failed.iter().map(|completion| completion.index).collect();
            let outcome = self
                .store
                .complete(&planned.id, &failed, now_ms())
                .await
                .ok();
            if let Some(outcome) = &outcome {
                count_recorded(&planned.plan, &failed, outcome);
            }
            self.apply_results(BatchResults {
                batch: planned.id.clone(),
                indices,
                outcome,
            });
        }
    }

    /// The args of each claimed op as JSON, `${…}` filled in from the outputs
    /// and states of the ops they refer to and the batch's memory. One store
    /// read serves every claimed op.
    async fn fill_templates(
        &self,
        planned: &PlannedBatch,
        claimed: &[Claimed],
    ) -> Vec<Result<String, String>> {
        let ops = &planned.plan.ops;
        let needs_records = claimed
            .iter()
            .any(|claim| ops[claim.index as usize].has_templates);
        if !needs_records {
            return claimed
                .iter()
                .map(|claim| Ok(ops[claim.index as usize].args.to_string()))
                .collect();
        }
        // Only the ops the templates refer to: their dependencies.
        let mut referenced: Vec<u32> = claimed
            .iter()
            .map(|claim| &ops[claim.index as usize])
            .filter(|op| op.has_templates)
            .flat_map(|op| op.deps.iter().copied())
            .collect();
        referenced.sort_unstable();
        referenced.dedup();
        let records = match self.store.op_records_at(&planned.id, &referenced).await {
            Ok(records) => records,
            Err(error) => {
                let message = format!("could not read inputs: {error}");
                return claimed.iter().map(|_| Err(message.clone())).collect();
            }
        };
        let record_of: HashMap<&str, &OpRecord> = referenced
            .iter()
            .zip(&records)
            .map(|(index, record)| (ops[*index as usize].id.as_str(), record))
            .collect();
        let mut results = Vec::with_capacity(claimed.len());
        for claim in claimed {
            let op = &ops[claim.index as usize];
            if !op.has_templates {
                results.push(Ok(op.args.to_string()));
                continue;
            }
            let scope = planned.memory_scope();
            let mut memory = HashMap::new();
            if let Ok(references) = volley_kinds::template::references(&op.args) {
                for reference in references {
                    if let Reference::Memory(key) = reference
                        && !memory.contains_key(&key)
                    {
                        let value = self.store.memory_get(&scope, &key).await.ok().flatten();
                        memory.insert(
                            key,
                            value.map(|value| String::from_utf8_lossy(&value.value).into_owned()),
                        );
                    }
                }
            }
            let lookup = |reference: &Reference| -> Option<String> {
                match reference {
                    // Trailing newlines dropped, as a shell's `$(…)` does:
                    // `echo hi` fills in `hi`. Reports keep the raw output.
                    Reference::OpOutput(id) => record_of
                        .get(id.as_str())
                        .map(|record| record.output.trim_end_matches('\n').to_owned()),
                    Reference::OpStatus(id) => record_of
                        .get(id.as_str())
                        .map(|record| state_word(record.state)),
                    Reference::Memory(key) => memory.get(key).cloned().flatten(),
                    // Never filled here: the worker puts secrets into the
                    // program's environment (see `render_command`).
                    Reference::Secret(_) => None,
                }
            };
            // A program's `cmd` gets its values through the environment,
            // never as text the shell would parse (see `render_command`).
            let rendered = if volley_kinds::HOST_PROGRAM_KINDS.contains(&op.kind.as_str()) {
                volley_kinds::template::render_command(&op.args, &lookup)
            } else {
                volley_kinds::template::render(&op.args, &lookup)
            };
            results.push(
                rendered
                    .map(|value| value.to_string())
                    .map_err(|error| format!("cannot fill in the op's args: {error}")),
            );
        }
        results
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

fn state_word(state: OpState) -> String {
    match state {
        OpState::Waiting => "waiting",
        OpState::Ready => "ready",
        OpState::Running => "running",
        OpState::Succeeded => "succeeded",
        OpState::Failed => "failed",
        OpState::Skipped => "skipped",
        OpState::Cancelled => "cancelled",
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_with_fifty_batches_gets_what_a_tenant_with_one_gets() {
        let wanting = std::iter::repeat_n("many", 50).chain(std::iter::once("one"));
        let mut shares = FairShares::new(10, wanting);
        assert_eq!(shares.cap("one"), 5);
        assert_eq!(shares.cap("many"), 1);
        // The fifty take their five credits one at a time, then no more.
        for _ in 0..5 {
            assert_eq!(shares.cap("many"), 1);
            shares.spend("many", 1);
        }
        assert_eq!(shares.cap("many"), 0);
        assert_eq!(shares.cap("one"), 5);
        // A batch that wanted nothing when the pass began gets nothing in it.
        assert_eq!(shares.cap("late"), 0);
    }

    #[test]
    fn one_tenant_with_one_batch_may_take_every_credit() {
        let shares = FairShares::new(64, std::iter::once("default"));
        assert_eq!(shares.cap("default"), 64);
        // Fewer credits than batches: each may still claim one.
        let shares = FairShares::new(2, ["a", "a", "a", "b"].into_iter());
        assert_eq!(shares.cap("a"), 1);
        assert_eq!(shares.cap("b"), 1);
    }
}
