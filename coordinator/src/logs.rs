//! One op's status by its id (`volley logs BATCH OP`): GetBatch with
//! `op_id`, read through the same authorization as every other read of a
//! batch, so an op's token or another tenant sees no more than a status
//! page would show them. The op is found in the batch's plan, which the
//! coordinator holds anyway: no store scan, and a "did you mean" costs one
//! bounded pass over ids already in memory.

use volley_plan::{MAX_ID_LEN, bounded_edit_distance};
use volley_proto::BatchId;

use crate::auth::Principal;
use crate::domain::BatchReport;
use crate::error::CoordinatorError;
use crate::service::{Access, Coordinator};

/// The most ids compared for a "did you mean": past it a batch of a
/// million ops answers without one rather than slowly.
const SUGGESTION_BUDGET: usize = 200_000;

impl Coordinator {
    /// The batch's status with the op `op_id` as its only op.
    #[tracing::instrument(skip_all, fields(batch = %batch))]
    pub async fn op_status(
        &self,
        batch: &BatchId,
        op_id: &str,
        principal: &Principal,
    ) -> Result<BatchReport, CoordinatorError> {
        // The planner's rule: anything longer is no op of any batch.
        if op_id.len() > MAX_ID_LEN {
            return Err(CoordinatorError::BadRequest(format!(
                "op_id of {} bytes: an op id is at most {MAX_ID_LEN}",
                op_id.len()
            )));
        }
        let mut planned = self.authorize(principal, batch, Access::Read).await?;
        if !planned.plan.ops.iter().any(|op| op.id.as_str() == op_id)
            && let Some(meta) = self.store().meta(batch).await?
        {
            // Maybe spawned through another coordinator since this one
            // planned the batch.
            planned = self.plan_covering(&planned, meta.total).await?;
        }
        let ops = &planned.plan.ops;
        let Some(index) = ops.iter().position(|op| op.id.as_str() == op_id) else {
            let suggestion = closest_id(op_id, ops.iter().map(|op| op.id.as_str()));
            return Err(CoordinatorError::OpNotFound {
                batch: batch.clone(),
                op_id: op_id.to_owned(),
                suggestion: suggestion.map(str::to_owned),
            });
        };
        let index = index as u32;
        self.status_page(batch, Some(index..index + 1), principal)
            .await
    }
}

/// The id within edit distance 2 of `missing` (the closest, the first of
/// equals), while [`SUGGESTION_BUDGET`] comparisons last.
fn closest_id<'a>(missing: &str, ids: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    for id in ids.take(SUGGESTION_BUDGET) {
        if id.len().abs_diff(missing.len()) > 2 {
            continue;
        }
        if let Some(distance) = bounded_edit_distance(missing, id, 2)
            && best.is_none_or(|(best_distance, _)| distance < best_distance)
        {
            best = Some((distance, id));
        }
    }
    best.map(|(_, id)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_id_is_suggested_and_a_far_one_is_not() {
        let ids = ["build", "test-unit", "test-integration", "deploy"];
        assert_eq!(closest_id("biuld", ids.into_iter()), Some("build"));
        assert_eq!(closest_id("test-unti", ids.into_iter()), Some("test-unit"));
        assert_eq!(closest_id("nothing-like", ids.into_iter()), None);
        assert_eq!(closest_id("", ids.into_iter()), None);
        assert_eq!(bounded_edit_distance("build", "build", 2), Some(0));
        assert_eq!(bounded_edit_distance("build", "xxxxx", 2), None);
    }
}
