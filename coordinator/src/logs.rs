//! One op's status by its id (`volley logs BATCH OP`): GetBatch with
//! `op_id`, read through the same authorization as every other read of a
//! batch, so an op's token or another tenant sees no more than a status
//! page would show them. The op is found in the batch's plan, which the
//! coordinator holds anyway: no store scan, and a "did you mean" costs one
//! bounded pass over ids already in memory.

use volley_proto::{BatchId, v1};

use crate::auth::Principal;
use crate::error::CoordinatorError;
use crate::service::{Access, Coordinator};

/// The longest op id looked up; a valid one is at most 128 bytes (the
/// planner's rule), so anything longer is no op of any batch.
const MAX_OP_ID_BYTES: usize = 1024;

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
    ) -> Result<v1::BatchStatus, CoordinatorError> {
        if op_id.len() > MAX_OP_ID_BYTES {
            return Err(CoordinatorError::BadRequest(format!(
                "op_id of {} bytes: an op id is at most 128",
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

/// The Levenshtein distance between `left` and `right` (by characters), or
/// `None` when it is more than `max`.
fn bounded_edit_distance(left: &str, right: &str, max: usize) -> Option<usize> {
    let left: Vec<char> = left.chars().collect();
    let right: Vec<char> = right.chars().collect();
    if left.len().abs_diff(right.len()) > max {
        return None;
    }
    let mut previous: Vec<usize> = (0..=right.len()).collect();
    let mut current = vec![0; right.len() + 1];
    for (row, left_char) in left.iter().enumerate() {
        current[0] = row + 1;
        let mut row_min = current[0];
        for (column, right_char) in right.iter().enumerate() {
            let substitution = previous[column] + usize::from(left_char != right_char);
            current[column + 1] = substitution
                .min(previous[column + 1] + 1)
                .min(current[column] + 1);
            row_min = row_min.min(current[column + 1]);
        }
        if row_min > max {
            return None;
        }
        std::mem::swap(&mut previous, &mut current);
    }
    let distance = previous[right.len()];
    (distance <= max).then_some(distance)
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
        assert_eq!(bounded_edit_distance("é", "e", 2), Some(1));
    }
}
