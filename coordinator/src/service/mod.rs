//! `Coordinator`: the domain API behind the gRPC adapters — submit, report,
//! cancel, list, watch, memory, and the worker sessions.
//!
//! It speaks the types of [`crate::domain`] and the store's; converting
//! them to and from proto is the adapters' job (`grpc/`).
//!
//! # Layout
//! - `submit` — limits checked as a batch arrives, validating, planning
//!   and storing it.
//! - `status` — a batch's status, cancel, list.
//! - `watch` — a batch's event stream.
//! - `workers` — the cluster's workers and a connected worker's session.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};
use volley_proto::BatchId;
use volley_store::Store;

use crate::auth::{AuthError, Authenticator, Principal};
use crate::config::CoordinatorConfig;
use crate::dispatch::{self, Command, DispatchHandle, KnownKinds};
use crate::error::CoordinatorError;
use crate::metrics::MeteredStore;
use crate::plans::{PlanCache, PlannedBatch};

mod status;
mod submit;
mod watch;
mod workers;

pub(crate) use submit::new_op;
pub use workers::WorkerSession;

/// The coordinator's domain API. Cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: CoordinatorConfig,
    pub(crate) plans: Arc<PlanCache>,
    pub(crate) dispatch: DispatchHandle,
    /// Kinds some live worker registered, here or anywhere in the cluster
    /// (kept by the dispatcher).
    pub(crate) kinds: Arc<RwLock<KnownKinds>>,
    pub(crate) tasks: TaskTracker,
    pub(crate) shutdown: CancellationToken,
    /// Spawns re-plan a whole batch: one at a time.
    pub(crate) spawn_lock: tokio::sync::Mutex<()>,
    /// Whether the coordinator can do its work: false while the store is
    /// unreachable (grpc.health.v1 says NOT_SERVING then).
    pub(crate) serving: Arc<tokio::sync::watch::Sender<bool>>,
    /// Checks callers' tokens; mints op capabilities.
    pub(crate) auth: Arc<Authenticator>,
}

/// What a caller wants to do with a batch (see [`Coordinator::authorize`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Status, events, why, memory reads and writes.
    Read,
    /// Spawning ops into it.
    Spawn,
    /// Cancelling it.
    Cancel,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

impl Coordinator {
    /// Checks the store, starts the dispatcher and resumes the batches the
    /// store says are active.
    pub async fn start(
        store: Arc<dyn Store>,
        config: CoordinatorConfig,
        shutdown: CancellationToken,
    ) -> Result<Coordinator, CoordinatorError> {
        // Every store call of the coordinator is counted at this one boundary.
        let store: Arc<dyn Store> = Arc::new(MeteredStore::new(store));
        let epoch = store.epoch().await?;
        info!(epoch = %epoch, coordinator = %config.id, "store epoch");
        let tasks = TaskTracker::new();
        let kinds = Arc::new(RwLock::new(KnownKinds::default()));
        let plans = Arc::new(PlanCache::new(config.finished_plans_cached));
        let (dispatch, commands) = dispatch::channel();
        let serving = Arc::new(tokio::sync::watch::Sender::new(true));
        let auth = Arc::new(Authenticator::new(&config.auth, store.clone()));
        tasks.spawn(auth.clone().watch_revocations(shutdown.child_token()));
        let coordinator = Coordinator {
            inner: Arc::new(Inner {
                store: store.clone(),
                config: config.clone(),
                plans: plans.clone(),
                dispatch: dispatch.clone(),
                kinds: kinds.clone(),
                tasks: tasks.clone(),
                shutdown: shutdown.clone(),
                spawn_lock: tokio::sync::Mutex::new(()),
                serving: serving.clone(),
                auth: auth.clone(),
            }),
        };
        let dispatcher = dispatch::Dispatcher::new(
            store.clone(),
            &config,
            commands,
            dispatch,
            plans,
            kinds,
            epoch,
            serving,
            auth,
            shutdown.child_token(),
        );
        tasks.spawn(
            dispatcher
                .run()
                .instrument(info_span!("coordinator.dispatch")),
        );
        for batch in store.active_batches().await? {
            match coordinator.inner.plans.get(store.as_ref(), &batch).await {
                Ok(planned) => {
                    coordinator
                        .inner
                        .dispatch
                        .send(Command::BatchAdded(planned))
                        .await
                }
                Err(error) => warn!(%batch, %error, "cannot resume batch"),
            }
        }
        Ok(coordinator)
    }

    /// Spawns a task the coordinator tracks, so shutdown can wait for it.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.inner.tasks.spawn(task);
    }

    pub(crate) fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    pub(crate) fn config(&self) -> &CoordinatorConfig {
        &self.inner.config
    }

    pub(crate) fn plans(&self) -> &PlanCache {
        &self.inner.plans
    }

    pub(crate) fn dispatch(&self) -> &DispatchHandle {
        &self.inner.dispatch
    }

    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    pub(crate) fn spawn_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.inner.spawn_lock
    }

    /// Who a bearer token belongs to (see [`Authenticator::authenticate`]).
    pub async fn authenticate(&self, bearer: Option<&str>) -> Result<Arc<Principal>, AuthError> {
        self.inner.auth.authenticate(bearer, now_ms()).await
    }

    pub(crate) fn authenticator(&self) -> &Authenticator {
        &self.inner.auth
    }

    /// The batch's plan, if `principal` may have `access` to it. A batch of
    /// another tenant is `BatchNotFound`, exactly like one that does not
    /// exist: its existence is not revealed. An op's capability reaches
    /// its own batch only, and never cancels it.
    pub(crate) async fn authorize(
        &self,
        principal: &Principal,
        batch: &BatchId,
        access: Access,
    ) -> Result<Arc<PlannedBatch>, CoordinatorError> {
        if let Some(agent) = &principal.agent {
            if &agent.batch != batch {
                return Err(CoordinatorError::BatchNotFound(batch.clone()));
            }
            if access == Access::Cancel {
                return Err(AuthError::PermissionDenied(
                    "an op's token cannot cancel its batch".to_owned(),
                )
                .into());
            }
        }
        let planned = self.plan_of(batch).await?;
        if !principal.sees_tenant(&planned.tenant) {
            return Err(CoordinatorError::BatchNotFound(batch.clone()));
        }
        Ok(planned)
    }

    /// The batch's plan (cached, or rebuilt from its stored spec).
    pub(crate) async fn plan_of(
        &self,
        batch: &BatchId,
    ) -> Result<Arc<PlannedBatch>, CoordinatorError> {
        self.inner.plans.get(self.store(), batch).await
    }

    /// Whether the coordinator can do its work now (false while its store is
    /// unreachable), as it changes.
    pub fn serving(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.serving.subscribe()
    }

    /// Waits for every task the coordinator spawned to end (after shutdown).
    pub async fn wait(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    /// Is `kind` runnable: built in, or registered by a live worker.
    pub(crate) fn known_kind(&self, kind: &str) -> bool {
        volley_kinds::BUILTIN_KINDS.contains(&kind)
            || self
                .inner
                .kinds
                .read()
                .map(|kinds| kinds.contains(kind))
                .unwrap_or(false)
    }

    /// `planned`, or the batch's plan read again from its stored spec when
    /// `planned` knows fewer than `ops` ops: another coordinator grew the
    /// batch (spawned ops) since this one planned it.
    pub(crate) async fn plan_covering(
        &self,
        planned: &Arc<PlannedBatch>,
        ops: u32,
    ) -> Result<Arc<PlannedBatch>, CoordinatorError> {
        self.inner
            .plans
            .covering(self.store(), &planned.id, ops as usize)
            .await
    }
}

/// Retrying a store call that failed for want of a connection: the first
/// pause, doubled up to the second.
const STORE_RETRY_START: Duration = Duration::from_millis(100);
const STORE_RETRY_MAX: Duration = Duration::from_secs(2);

/// Shutting the dispatcher down and waiting for it is `wait`'s job; this is
/// how long a caller should give it.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
