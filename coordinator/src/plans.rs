//! The cache of planned batches. A plan is derived from the spec stored with
//! its batch, so any coordinator can rebuild one it has not seen; the cache
//! only saves re-planning.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use prost::Message;
use volley_plan::{Limits, LivenessCheck, Plan};
use volley_proto::{BatchId, v1};
use volley_store::{Cause, MemoryScope, Store, StoredSpec};

use crate::error::CoordinatorError;
use crate::tracing_ctx::BatchTrace;

/// A batch's plan with its id.
#[derive(Debug)]
pub(crate) struct PlannedBatch {
    pub(crate) id: BatchId,
    pub(crate) plan: Plan,
    /// What the batch's op spans hang from (none: not traced).
    pub(crate) trace: BatchTrace,
    /// The submitter's tenant (never empty: the default tenant for a batch
    /// stored before tenants).
    pub(crate) tenant: String,
    /// Whether any op has a `wait_timeout`: known once, so housekeeping's
    /// tick does not scan every op of every batch for it.
    wait_timeouts: bool,
}

impl PlannedBatch {
    pub(crate) fn new(id: BatchId, plan: Plan, trace: BatchTrace, tenant: String) -> Self {
        let wait_timeouts = plan.ops.iter().any(|op| op.wait_timeout_ms > 0);
        Self {
            id,
            plan,
            trace,
            tenant,
            wait_timeouts,
        }
    }

    /// Whether any of its ops waits for memory with a `wait_timeout`.
    pub(crate) fn has_wait_timeouts(&self) -> bool {
        self.wait_timeouts
    }

    /// Where the batch's memory lives: its own scope, or its namespace as
    /// its tenant's (see [`crate::auth::tenant_namespace`]). The one place
    /// a plan's namespace becomes a store scope.
    pub(crate) fn memory_scope(&self) -> MemoryScope {
        match &self.plan.namespace {
            Some(namespace) => {
                MemoryScope::Shared(crate::auth::tenant_namespace(&self.tenant, namespace))
            }
            None => MemoryScope::Batch(self.id.clone()),
        }
    }

    pub(crate) fn op_id(&self, index: u32) -> &str {
        self.plan
            .ops
            .get(index as usize)
            .map(|op| op.id.as_str())
            .unwrap_or("?")
    }

    /// What the store wrote for an op it ended without running (a
    /// record's error, an event's message), its ops named by id from the
    /// cause's data. A message without a cause (one that names no op, or
    /// one stored before causes were kept) reads as it is.
    pub(crate) fn describe(&self, cause: Option<&Cause>, message: &str) -> String {
        match cause {
            Some(cause) => cause.render(&|index| match self.plan.ops.get(index as usize) {
                Some(op) => op.id.as_str().to_owned(),
                // An op past the plan keeps its index, as the store wrote it.
                None => index.to_string(),
            }),
            None => message.to_owned(),
        }
    }
}

pub(crate) struct PlanCache {
    inner: Mutex<CacheInner>,
    finished_capacity: usize,
}

struct CacheInner {
    plans: HashMap<BatchId, Arc<PlannedBatch>>,
    /// Finished batches, oldest first: evicted beyond the capacity.
    finished: VecDeque<BatchId>,
}

impl PlanCache {
    pub(crate) fn new(finished_capacity: usize) -> Self {
        PlanCache {
            inner: Mutex::new(CacheInner {
                plans: HashMap::new(),
                finished: VecDeque::new(),
            }),
            finished_capacity,
        }
    }

    pub(crate) fn insert(&self, planned: Arc<PlannedBatch>) {
        let mut inner = self.inner.lock().expect("plan cache lock poisoned");
        inner.plans.insert(planned.id.clone(), planned);
    }

    /// Forgets a plan whose batch never made it into the store.
    pub(crate) fn remove(&self, batch: &BatchId) {
        let mut inner = self.inner.lock().expect("plan cache lock poisoned");
        inner.plans.remove(batch);
    }

    pub(crate) fn cached(&self, batch: &BatchId) -> Option<Arc<PlannedBatch>> {
        let inner = self.inner.lock().expect("plan cache lock poisoned");
        inner.plans.get(batch).cloned()
    }

    /// Marks a batch finished: its plan stays for a while for reports.
    pub(crate) fn finished(&self, batch: &BatchId) {
        let mut inner = self.inner.lock().expect("plan cache lock poisoned");
        if inner.finished.contains(batch) {
            return;
        }
        inner.finished.push_back(batch.clone());
        while inner.finished.len() > self.finished_capacity {
            if let Some(evicted) = inner.finished.pop_front() {
                inner.plans.remove(&evicted);
            }
        }
    }

    /// The plan of a batch, rebuilt from its stored spec when not cached.
    pub(crate) async fn get(
        &self,
        store: &dyn Store,
        batch: &BatchId,
    ) -> Result<Arc<PlannedBatch>, CoordinatorError> {
        if let Some(planned) = self.cached(batch) {
            return Ok(planned);
        }
        let spec = store
            .batch_spec(batch)
            .await?
            .ok_or_else(|| CoordinatorError::BatchNotFound(batch.clone()))?;
        let planned = Arc::new(replan_blocking(batch, spec).await?);
        self.insert(planned.clone());
        if let Some(meta) = store.meta(batch).await?
            && meta.finished_ms.is_some()
        {
            self.finished(batch);
        }
        Ok(planned)
    }
    /// The plan of a batch that has at least `ops` ops: the cached one if it
    /// knows that many, else rebuilt from the stored spec — another
    /// coordinator spawned ops into the batch since this one planned it.
    /// Spawned ops are in the store (and its events) the moment `add_ops`
    /// returns, so any coordinator that sees an index past its plan reads
    /// the spec again rather than name the op `?`.
    pub(crate) async fn covering(
        &self,
        store: &dyn Store,
        batch: &BatchId,
        ops: usize,
    ) -> Result<Arc<PlannedBatch>, CoordinatorError> {
        if let Some(planned) = self.cached(batch)
            && planned.plan.ops.len() >= ops
        {
            return Ok(planned);
        }
        let spec = store
            .batch_spec(batch)
            .await?
            .ok_or_else(|| CoordinatorError::BatchNotFound(batch.clone()))?;
        let planned = Arc::new(replan_blocking(batch, spec).await?);
        // Never replace a plan with an older one (a spawn on this
        // coordinator may have raced the read).
        let mut inner = self.inner.lock().expect("plan cache lock poisoned");
        let cached = inner.plans.get(batch).cloned();
        match cached {
            Some(cached) if cached.plan.ops.len() >= planned.plan.ops.len() => Ok(cached),
            _ => {
                inner.plans.insert(batch.clone(), planned.clone());
                Ok(planned)
            }
        }
    }
}

/// The whole batch a stored spec describes: the submission with every
/// `SpawnOps` chunk (an encoded `OpChunk`) appended, in order.
pub(crate) fn stored_batch(
    batch: &BatchId,
    spec: &StoredSpec,
) -> Result<v1::Batch, CoordinatorError> {
    let corrupt = |what: &str, error: prost::DecodeError| {
        CoordinatorError::Store(volley_store::StoreError::Corrupt(format!(
            "{what} of batch {batch}: {error}"
        )))
    };
    let mut decoded =
        v1::Batch::decode(spec.base.as_slice()).map_err(|error| corrupt("spec", error))?;
    for chunk in &spec.added {
        let added =
            v1::OpChunk::decode(chunk.as_slice()).map_err(|error| corrupt("spawned ops", error))?;
        decoded.ops.extend(added.ops);
    }
    Ok(decoded)
}

/// [`replan`] on the blocking pool: planning a big batch is CPU work, kept
/// off the async workers as submit's planning is. The one way the cache
/// re-plans.
async fn replan_blocking(
    batch: &BatchId,
    spec: StoredSpec,
) -> Result<PlannedBatch, CoordinatorError> {
    let id = batch.clone();
    tokio::task::spawn_blocking(move || replan(&id, &spec))
        .await
        .map_err(|error| {
            CoordinatorError::Store(volley_store::StoreError::Corrupt(format!(
                "re-planning batch {batch} panicked: {error}"
            )))
        })?
}

/// Plans a stored spec again. It was valid when stored, so every kind is
/// accepted now (the workers that knew it may be gone), and so are its
/// waits (a key a client was to write may still be missing).
pub(crate) fn replan(batch: &BatchId, spec: &StoredSpec) -> Result<PlannedBatch, CoordinatorError> {
    let decoded = stored_batch(batch, spec)?;
    let limits = Limits {
        max_ops: usize::MAX,
        max_arg_bytes: usize::MAX,
        max_batch_bytes: usize::MAX,
    };
    let plan = volley_plan::plan_with(&decoded, &|_| true, &limits, &LivenessCheck::accepted())
        .map_err(CoordinatorError::Invalid)?;
    Ok(PlannedBatch::new(
        batch.clone(),
        plan,
        BatchTrace::from_carrier(&decoded.trace_context),
        crate::auth::tenant_or_default(&decoded.tenant).to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use volley_store::OpState;

    use super::*;

    /// A batch of two ops, `build` (0) and `test` (1), planned from its
    /// stored spec.
    fn planned() -> PlannedBatch {
        let batch = v1::Batch {
            name: "named".to_owned(),
            ops: ["build", "test"]
                .iter()
                .map(|id| v1::Op {
                    id: (*id).to_owned(),
                    kind: "echo".to_owned(),
                    args_json: r#"{"text": "hi"}"#.to_owned(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let spec = StoredSpec {
            base: batch.encode_to_vec(),
            added: Vec::new(),
        };
        replan(&BatchId::new("named"), &spec).expect("the spec plans")
    }

    #[test]
    fn describe_names_the_ops_a_cause_holds() {
        let planned = planned();
        let dependency = Cause::Dependency {
            index: 0,
            state: OpState::Failed,
        };
        assert_eq!(
            planned.describe(Some(&dependency), &dependency.message()),
            "dependency `build` failed"
        );
        let fail_fast = Cause::FailFast { index: 1 };
        assert_eq!(
            planned.describe(Some(&fail_fast), &fail_fast.message()),
            "cancelled: fail_fast after op `test` failed"
        );
        let hopeless = Cause::never_written("k", &[(0, OpState::Failed), (1, OpState::Skipped)]);
        assert_eq!(
            planned.describe(Some(&hopeless), &hopeless.message()),
            "key `k` will never be written: its writers `build` (failed), `test` (skipped)"
        );
    }

    #[test]
    fn describe_keeps_a_message_without_a_cause_and_indices_past_the_plan() {
        let planned = planned();
        // A worker's error, a cancel reason, or a record stored before
        // causes were kept: as it is, backticked numbers and all.
        assert_eq!(planned.describe(None, "exit `1`"), "exit `1`");
        let past = Cause::Dependency {
            index: 7,
            state: OpState::Skipped,
        };
        assert_eq!(
            planned.describe(Some(&past), &past.message()),
            "dependency `7` skipped"
        );
    }
}
