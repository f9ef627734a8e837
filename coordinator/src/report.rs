//! Builds a batch's report: every op's state, output and timing, and the
//! batch's wall time, sequential-equivalent time, speedup and critical path.

use volley_store::{BatchMeta, OpRecord};

use crate::domain::{BatchReport, OpReport};
use crate::plans::PlannedBatch;

/// The ops a report carries: their first index and their records.
pub(crate) struct OpsPage<'a> {
    pub(crate) offset: u32,
    pub(crate) records: &'a [OpRecord],
}

/// `durations`: every op's duration in index order (the sequential time
/// and the critical path are computed from them), or empty to leave those
/// out. `ops`: the ops to list, if any.
pub(crate) fn build(
    planned: &PlannedBatch,
    meta: &BatchMeta,
    durations: &[u64],
    ops: Option<OpsPage<'_>>,
    now_ms: u64,
) -> BatchReport {
    let plan = &planned.plan;
    let end_ms = meta.finished_ms.unwrap_or(now_ms);
    let wall_ms = end_ms.saturating_sub(meta.created_ms);
    let sequential_ms: u64 = durations.iter().sum();
    let speedup = if wall_ms == 0 {
        0.0
    } else {
        sequential_ms as f64 / wall_ms as f64
    };
    // A summary of a running batch reads no records: no critical path yet.
    let (path, critical_path_ms) = if !durations.is_empty() && durations.len() == plan.ops.len() {
        plan.critical_path(durations)
    } else {
        (Vec::new(), 0)
    };
    let critical_path = path
        .iter()
        .map(|index| planned.op_id(*index).to_owned())
        .collect();
    let ops = match ops {
        Some(page) => plan
            .ops
            .iter()
            .enumerate()
            .skip(page.offset as usize)
            .zip(page.records)
            .map(|((index, op), record)| OpReport {
                id: op.id.as_str().to_owned(),
                kind: op.kind.clone(),
                state: record.state,
                attempts: record.attempts,
                worker: record.worker.clone(),
                started_ms: if record.started_ms == 0 {
                    0
                } else {
                    record.started_ms.saturating_sub(meta.created_ms)
                },
                duration_ms: record.duration_ms,
                output: record.output.clone(),
                error: planned.describe(record.cause.as_ref(), &record.error),
                details_json: record.details_json.clone(),
                after: op
                    .deps
                    .iter()
                    .map(|index| planned.op_id(*index).to_owned())
                    .collect(),
                group: plan.group_of(index as u32).map(str::to_owned),
            })
            .collect(),
        None => Vec::new(),
    };
    BatchReport {
        batch: meta.id.clone(),
        name: meta.name.clone(),
        state: meta.state,
        created_ms: meta.created_ms,
        wall_ms,
        sequential_ms,
        speedup,
        total: meta.total,
        succeeded: meta.succeeded,
        failed: meta.failed,
        skipped: meta.skipped,
        cancelled: meta.cancelled,
        running: meta.running,
        ops,
        critical_path,
        critical_path_ms,
        // The batch's error names no op by index.
        error: meta.error.clone(),
        owner: String::new(),
    }
}
