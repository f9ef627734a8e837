//! Read models for the dashboard: a batch's graph as planned and every op's
//! row without its output, authorized like every other read of a batch.
//!
//! The gRPC API pages ops with their whole output; a picture of a batch
//! (its DAG coloured by state, a timeline) wants the opposite: every op,
//! but only its state and timings. These calls give exactly that, through
//! the same `authorize` as status and watch, so a dashboard session sees
//! no more than the token it logged in with.

use std::sync::Arc;

use serde_json::Value;
use volley_plan::Plan;
use volley_proto::BatchId;
use volley_store::BatchMeta;

use crate::auth::Principal;
use crate::error::CoordinatorError;
use crate::plans::PlannedBatch;
use crate::service::{Access, Coordinator};

/// A batch a caller may read: its plan, covering every op it has now.
#[derive(Clone, Debug)]
pub struct BatchView {
    planned: Arc<PlannedBatch>,
    /// The batch's record as read with the view: state, counters, times.
    meta: BatchMeta,
    /// Succeeded, failed or cancelled when read: its rows no longer change.
    finished: bool,
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
        self.meta.created_ms
    }

    /// The batch's record when the view was read: its name, state,
    /// counters, error and times (a batch header reads no more).
    pub fn meta(&self) -> &BatchMeta {
        &self.meta
    }

    /// Whether the batch had finished (succeeded, failed or cancelled) when
    /// this view was read: its ops' rows no longer change, so a reader may
    /// keep them longer.
    pub fn finished(&self) -> bool {
        self.finished
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

/// The most ops a [`Coordinator::plan_page`] holds.
pub const PLAN_PAGE_MAX_OPS: u32 = 1_000;

/// A page of a batch as planned (see [`Coordinator::plan_page`]).
#[derive(Clone, Debug, PartialEq)]
pub struct PlanPage {
    /// The shared memory namespace it uses, if any.
    pub namespace: Option<String>,
    /// All its ops.
    pub total: u32,
    /// The page's ops' args, masked.
    pub args: Vec<Value>,
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
        self.view_of(batch, planned).await
    }

    /// The batch's view and the seq of its latest event, read before the
    /// view: the view shows every event up to that seq (and maybe some
    /// after), so a reader that follows the stream after it misses none.
    #[tracing::instrument(skip_all, fields(batch = %batch))]
    pub async fn batch_view_and_seq(
        &self,
        batch: &BatchId,
        principal: &Principal,
    ) -> Result<(BatchView, u64), CoordinatorError> {
        let planned = self.authorize(principal, batch, Access::Read).await?;
        let last_seq = self.store().last_event_seq(batch).await?;
        Ok((self.view_of(batch, planned).await?, last_seq))
    }

    async fn view_of(
        &self,
        batch: &BatchId,
        planned: Arc<PlannedBatch>,
    ) -> Result<BatchView, CoordinatorError> {
        let meta = self
            .store()
            .meta(batch)
            .await?
            .ok_or_else(|| CoordinatorError::BatchNotFound(batch.clone()))?;
        let planned = self.plan_covering(&planned, meta.total).await?;
        let finished = matches!(
            meta.state,
            volley_store::BatchState::Succeeded
                | volley_store::BatchState::Failed
                | volley_store::BatchState::Cancelled
        );
        Ok(BatchView {
            planned,
            meta,
            finished,
        })
    }

    /// A page of the batch as planned, for an export: its namespace and
    /// the args of the ops of indices `offset..offset + limit` (at most
    /// [`PLAN_PAGE_MAX_OPS`]), masked with [`mask_args`].
    #[tracing::instrument(skip_all, fields(batch = %batch, offset, limit))]
    pub async fn plan_page(
        &self,
        batch: &BatchId,
        offset: u32,
        limit: u32,
        principal: &Principal,
    ) -> Result<PlanPage, CoordinatorError> {
        let view = self.batch_view(batch, principal).await?;
        let ops = &view.plan().ops;
        let start = (offset as usize).min(ops.len());
        let end = start
            .saturating_add(limit.min(PLAN_PAGE_MAX_OPS) as usize)
            .min(ops.len());
        Ok(PlanPage {
            namespace: view.plan().namespace.clone(),
            total: u32::try_from(ops.len()).unwrap_or(u32::MAX),
            args: ops[start..end]
                .iter()
                .map(|op| mask_args(&op.args))
                .collect(),
        })
    }

    /// The coordinator holding `view`'s batch while it runs (empty when
    /// none does, or once it finished).
    #[tracing::instrument(skip_all, fields(batch = %view.id()))]
    pub async fn batch_owner_of(&self, view: &BatchView) -> Result<String, CoordinatorError> {
        if view.meta.finished_ms.is_some() {
            return Ok(String::new());
        }
        Ok(self
            .store()
            .batch_owner(view.id(), crate::service::now_ms())
            .await?
            .map(|fence| fence.coordinator)
            .unwrap_or_default())
    }

    /// Every op's row, by index (the batch's ops as `view` knows them):
    /// read with [`volley_store::Store::op_summaries`], so no op's output
    /// is moved to draw a picture of the batch.
    #[tracing::instrument(skip_all, fields(batch = %view.id()))]
    pub async fn op_rows(&self, view: &BatchView) -> Result<Vec<OpRow>, CoordinatorError> {
        let count = u32::try_from(view.plan().ops.len()).unwrap_or(u32::MAX);
        let summaries = self.store().op_summaries(view.id(), 0..count).await?;
        Ok(summaries
            .into_iter()
            .map(|summary| OpRow {
                state: summary.state.word(),
                attempts: summary.attempts,
                worker: summary.worker,
                started_ms: if summary.started_ms == 0 {
                    0
                } else {
                    summary.started_ms.saturating_sub(view.created_ms())
                },
                duration_ms: summary.duration_ms,
                error: match summary.cause {
                    // A cause's message is written from the plan (op ids
                    // for indices): only then is there more to describe.
                    Some(cause) => self::first_line(
                        &view
                            .planned
                            .describe(Some(&cause), &summary.error_first_line),
                    ),
                    None => summary.error_first_line,
                },
            })
            .collect())
    }

    /// The events of the op at `index`, in order: at most `max` of them,
    /// from the first `scan` events of the batch (a batch's events are
    /// read in order; an op's are among the first of a small batch, and a
    /// page of them is all a panel shows).
    #[tracing::instrument(skip_all, fields(batch = %view.id(), index))]
    pub async fn op_events(
        &self,
        view: &BatchView,
        index: u32,
        max: usize,
        scan: u64,
    ) -> Result<Vec<EventRow>, CoordinatorError> {
        const PAGE: u32 = 1_000;
        let mut found = Vec::new();
        let mut after = 0u64;
        while after < scan && found.len() < max {
            let events = self.store().events(view.id(), after, PAGE).await?;
            let Some(last) = events.last() else { break };
            after = last.seq;
            let read = events.len();
            for event in events {
                if event.op_index == Some(index) && found.len() < max {
                    found.push(EventRow {
                        seq: event.seq,
                        at_ms: event.at_ms,
                        kind: event.kind.word(),
                        attempt: event.attempt,
                        worker: event.worker,
                        message: view.planned.describe(event.cause.as_ref(), &event.message),
                    });
                }
            }
            if read < PAGE as usize {
                break;
            }
        }
        Ok(found)
    }
}

/// One event of an op.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRow {
    pub seq: u64,
    pub at_ms: u64,
    /// `op_started`, `op_succeeded`, …
    pub kind: &'static str,
    pub attempt: u32,
    pub worker: String,
    pub message: String,
}

/// An op's args as the dashboard and `volley export` show them: values of
/// `env` and of fields named like credentials masked; `${secret.X}`
/// references are names, not values, and stay.
pub fn mask_args(args: &Value) -> Value {
    mask_args_at(args, 0)
}

/// [`mask_args`] of a value `depth` levels down (deeper than 16 is shown
/// as it is: no args nest so deep).
pub fn mask_args_at(value: &Value, depth: usize) -> Value {
    const MASK: &str = "••••••";
    match value {
        Value::Object(map) if depth < 16 => Value::Object(
            map.iter()
                .map(|(key, inner)| {
                    let lower = key.to_ascii_lowercase();
                    let secret = lower == "env"
                        || [
                            "token",
                            "secret",
                            "password",
                            "passwd",
                            "credential",
                            "api_key",
                            "apikey",
                            "authorization",
                        ]
                        .iter()
                        .any(|word| lower.contains(word));
                    let shown = if secret {
                        match inner {
                            Value::Object(entries) => Value::Object(
                                entries
                                    .iter()
                                    .map(|(name, value)| {
                                        // A foreach item is data the batch
                                        // file spelled out, not a secret.
                                        let shown = if name.starts_with("VOLLEY_ITEM")
                                            || name == "VOLLEY_INDEX"
                                        {
                                            value.clone()
                                        } else {
                                            masked(value, MASK)
                                        };
                                        (name.clone(), shown)
                                    })
                                    .collect(),
                            ),
                            other => masked(other, MASK),
                        }
                    } else {
                        mask_args_at(inner, depth + 1)
                    };
                    (key.clone(), shown)
                })
                .collect(),
        ),
        Value::Array(items) if depth < 16 => Value::Array(
            items
                .iter()
                .map(|item| mask_args_at(item, depth + 1))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn masked(value: &Value, mask: &str) -> Value {
    match value {
        Value::String(text) if text.starts_with("${secret.") && text.ends_with('}') => {
            value.clone()
        }
        Value::Null => Value::Null,
        _ => Value::String(mask.to_owned()),
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}
