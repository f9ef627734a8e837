//! A batch's status (whole or a page of its ops), cancelling it, and the
//! list of batches.

use std::ops::Range;

use tracing::info;
use volley_proto::BatchId;

use super::{Access, Coordinator, now_ms};
use crate::auth::Principal;
use crate::dispatch::Command;
use crate::domain::{BatchReport, BatchSummary, CancelOutcome};
use crate::error::CoordinatorError;
use crate::report;

impl Coordinator {
    /// The batch's status: states, outputs, timings, critical path.
    #[tracing::instrument(skip_all, fields(batch = %batch))]
    pub async fn status(
        &self,
        batch: &BatchId,
        include_ops: bool,
        principal: &Principal,
    ) -> Result<BatchReport, CoordinatorError> {
        self.status_page(batch, include_ops.then_some(0..u32::MAX), principal)
            .await
    }

    /// The batch's status with the ops of indices in `ops` (clamped to the
    /// batch), or none. A page that does not start at 0 has no critical
    /// path and no sequential time (the first page has them): a report read
    /// in pages reads every op's duration once, not once a page.
    #[tracing::instrument(skip_all, fields(batch = %batch))]
    pub async fn status_page(
        &self,
        batch: &BatchId,
        ops: Option<Range<u32>>,
        principal: &Principal,
    ) -> Result<BatchReport, CoordinatorError> {
        let planned = self.authorize(principal, batch, Access::Read).await?;
        let meta = self
            .store()
            .meta(batch)
            .await?
            .ok_or_else(|| CoordinatorError::BatchNotFound(batch.clone()))?;
        // Ops another coordinator spawned since this one planned the batch.
        let planned = self.plan_covering(&planned, meta.total).await?;
        let total = (planned.plan.ops.len() as u32).min(meta.total);
        let first_page = ops.as_ref().is_none_or(|range| range.start == 0);
        // A summary of a running batch is its counters: reading every op's
        // record for it would make polling cost as much as the batch.
        let ops_wanted = ops.is_some();
        let wants_durations = first_page && (ops_wanted || meta.finished_ms.is_some());
        let (durations, records, offset) = match ops {
            // Every op: one read gives the records and the durations.
            Some(range) if range.start == 0 && range.end >= total => {
                let records = self.store().op_records(batch).await?;
                let durations = records.iter().map(|record| record.duration_ms).collect();
                (durations, records, 0)
            }
            Some(range) => {
                let indices: Vec<u32> = (range.start.min(total)..range.end.min(total)).collect();
                let records = self.store().op_records_at(batch, &indices).await?;
                let durations = if wants_durations {
                    self.store().op_durations(batch).await?
                } else {
                    Vec::new()
                };
                (durations, records, range.start)
            }
            None if wants_durations => (self.store().op_durations(batch).await?, Vec::new(), 0),
            None => (Vec::new(), Vec::new(), 0),
        };
        let page = ops_wanted.then_some(report::OpsPage {
            offset,
            records: &records,
        });
        let mut status = report::build(&planned, &meta, &durations, page, now_ms());
        if meta.finished_ms.is_none() {
            status.owner = self
                .store()
                .batch_owner(batch, now_ms())
                .await?
                .map(|fence| fence.coordinator)
                .unwrap_or_default();
        }
        Ok(status)
    }

    /// Cancels a batch: pending ops at once, running ones are told to stop.
    #[tracing::instrument(skip_all, fields(batch = %batch))]
    pub async fn cancel(
        &self,
        batch: &BatchId,
        principal: &Principal,
    ) -> Result<CancelOutcome, CoordinatorError> {
        self.authorize(principal, batch, Access::Cancel).await?;
        if self.store().meta(batch).await?.is_none() {
            return Err(CoordinatorError::BatchNotFound(batch.clone()));
        }
        // The store prefixes "cancelled: ", so the op errors read
        // "cancelled: by token T".
        let reason = format!("by token {}", principal.token_id);
        let outcome = self.store().cancel(batch, &reason, now_ms()).await?;
        info!(%batch, audit = "cancel", token = %principal.token_id, tenant = %principal.tenant, cancelled = outcome.cancelled, "batch cancelled");
        self.inner
            .dispatch
            .send(Command::BatchCancelled {
                batch: batch.clone(),
                running: outcome.running,
            })
            .await;
        self.inner.plans.finished(batch);
        let state = self.store().meta(batch).await?.map(|meta| meta.state);
        Ok(CancelOutcome {
            state,
            cancelled: outcome.cancelled,
        })
    }

    /// The latest batches (50 by default, at most 1,000), the caller's
    /// tenant's only unless it is an admin.
    pub async fn list(
        &self,
        limit: u32,
        principal: &Principal,
    ) -> Result<Vec<BatchSummary>, CoordinatorError> {
        let limit = if limit == 0 { 50 } else { limit.min(1000) };
        let tenant = (!principal.is_admin()).then_some(principal.tenant.as_str());
        let batches = self
            .store()
            .list_batches(limit, tenant)
            .await?
            .into_iter()
            .map(|meta| BatchSummary {
                done: meta.done(),
                tenant: crate::auth::tenant_or_default(&meta.tenant).to_owned(),
                batch: meta.id,
                name: meta.name,
                state: meta.state,
                created_ms: meta.created_ms,
                total: meta.total,
                finished_ms: meta.finished_ms,
                sequential_ms: meta.sequential_ms,
            })
            .collect();
        Ok(batches)
    }
}
