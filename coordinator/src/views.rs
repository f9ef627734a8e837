//! Read models for the dashboard: a batch's graph as planned and every op's
//! row without its output, authorized like every other read of a batch.
//!
//! The gRPC API pages ops with their whole output; a picture of a batch
//! (its DAG coloured by state, a timeline) wants the opposite: every op,
//! but only its state and timings. These calls give exactly that, through
//! the same `authorize` as status and watch, so a dashboard session sees
//! no more than the token it logged in with.

use std::sync::Arc;

use volley_plan::Plan;
use volley_proto::BatchId;
use volley_store::OpState;

use crate::auth::Principal;
use crate::error::CoordinatorError;
use crate::plans::PlannedBatch;
use crate::service::{Access, Coordinator};

/// A batch a caller may read: its plan, covering every op it has now.
#[derive(Clone, Debug)]
pub struct BatchView {
    planned: Arc<PlannedBatch>,
    created_ms: u64,
}

impl BatchView {
    pub fn id(&self) -> &BatchId {
        &self.planned.id
    }

    /// The ops by index, their dependencies, groups and memory waits.
    pub fn plan(&self) -> &Plan {
        &self.planned.plan
    }

    /// The tenant that submitted it.
    pub fn tenant(&self) -> &str {
        &self.planned.tenant
    }

    /// Unix ms.
    pub fn created_ms(&self) -> u64 {
        self.created_ms
    }

    /// The index of the op `op_id`, if the batch has it.
    pub fn index_of(&self, op_id: &str) -> Option<u32> {
        self.planned
            .plan
            .ops
            .iter()
            .position(|op| op.id.as_str() == op_id)
            .map(|index| index as u32)
    }
}

/// One op's state and timings: what a graph or a timeline draws.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpRow {
    /// The CLI's word: `waiting`, `running`, `succeeded`, …
    pub state: &'static str,
    pub attempts: u32,
    pub worker: String,
    /// Since the batch was created; 0 when it never started.
    pub started_ms: u64,
    pub duration_ms: u64,
    /// The first line of its error, if any.
    pub error: String,
}

/// The CLI's word for an op state (the one vocabulary of every view).
pub fn op_state_word(state: OpState) -> &'static str {
    match state {
        OpState::Waiting => "waiting",
        OpState::Ready => "ready",
        OpState::Running => "running",
        OpState::Succeeded => "succeeded",
        OpState::Failed => "failed",
        OpState::Skipped => "skipped",
        OpState::Cancelled => "cancelled",
    }
}

impl Coordinator {
    /// The batch's view, if `principal` may read it (another tenant's batch
    /// is `BatchNotFound`, as everywhere).
    #[tracing::instrument(skip_all, fields(batch = %batch))]
    pub async fn batch_view(
        &self,
        batch: &BatchId,
        principal: &Principal,
    ) -> Result<BatchView, CoordinatorError> {
        let planned = self.authorize(principal, batch, Access::Read).await?;
        let meta = self
            .store()
            .meta(batch)
            .await?
            .ok_or_else(|| CoordinatorError::BatchNotFound(batch.clone()))?;
        let planned = self.plan_covering(&planned, meta.total).await?;
        Ok(BatchView {
            planned,
            created_ms: meta.created_ms,
        })
    }

    /// Every op's row, by index (the batch's ops as `view` knows them).
    #[tracing::instrument(skip_all, fields(batch = %view.id()))]
    pub async fn op_rows(&self, view: &BatchView) -> Result<Vec<OpRow>, CoordinatorError> {
        let records = self.store().op_records(view.id()).await?;
        let count = view.plan().ops.len();
        Ok(records
            .into_iter()
            .take(count)
            .map(|record| OpRow {
                state: op_state_word(record.state),
                attempts: record.attempts,
                worker: record.worker,
                started_ms: if record.started_ms == 0 {
                    0
                } else {
                    record.started_ms.saturating_sub(view.created_ms)
                },
                duration_ms: record.duration_ms,
                error: record.error.lines().next().unwrap_or_default().to_owned(),
            })
            .collect())
    }
}
