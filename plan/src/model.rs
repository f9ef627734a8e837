//! The planned batch and the problems validation reports.

use std::collections::BTreeMap;

use volley_proto::OpId;

/// Bounds a submission must stay within.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Ops per batch (default 1,000,000).
    pub max_ops: usize,
    /// Bytes of one op's `args_json` (default 1 MiB).
    pub max_arg_bytes: usize,
    /// Encoded bytes of a whole submission's ops (default 512 MiB): the
    /// coordinator stops reading a batch there.
    pub max_batch_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_ops: 1_000_000,
            max_arg_bytes: 1024 * 1024,
            max_batch_bytes: 512 * 1024 * 1024,
        }
    }
}

/// One thing wrong with a batch. `op_id` is empty for batch-level problems.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub op_id: String,
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.op_id.is_empty() {
            write!(formatter, "batch: field `{}`: {}", self.field, self.message)
        } else {
            write!(
                formatter,
                "op `{}`: field `{}`: {}",
                self.op_id, self.field, self.message
            )
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HazardPolicy {
    #[default]
    Reject,
    Order,
    Allow,
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    pub max_parallel: u32,
    pub fail_fast: bool,
    pub hazards: HazardPolicy,
    pub ops: Vec<PlannedOp>,
    /// Things worth saying that do not stop the batch.
    pub warnings: Vec<String>,
    /// The shared memory namespace the batch's keys live in; `None`: the
    /// batch's own memory.
    pub namespace: Option<String>,
    /// The batch ends this long after submission; 0: never.
    pub deadline_ms: u64,
    /// `retry_failed: sequential`: once nothing else can run, the ops that
    /// failed get one more attempt each, one at a time.
    pub retry_failed_sequential: bool,
    /// Runs of ops expanded from one `foreach:` op (`Op.group`), for
    /// reports: kept once per run, not once per op, so a plan of a million
    /// ungrouped ops pays nothing. Sorted by first index, not overlapping.
    pub groups: Vec<GroupRun>,
    /// Ops of a batch with its own memory that wait for keys no op of the
    /// batch writes (accepted only with `allow_unwritten`): by op index,
    /// ascending, the op's unwritten `wait_for` keys in order, then its
    /// whole `wait_for_any` group when no key of it is written. Only a
    /// client or an agent's put can unblock them, which the coordinator
    /// says in the batch's events as it starts. Empty for a shared
    /// namespace and for ops accepted earlier (see `LivenessCheck`).
    pub unwritten_waits: Vec<(u32, Vec<String>)>,
}

/// Ops `start..end` (by index) were all expanded from the `foreach:` op
/// `id`. One group may be several runs when its ops are not contiguous.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRun {
    pub start: u32,
    pub end: u32,
    pub id: String,
}

/// Which failures get another attempt, and how long to wait first.
#[derive(Clone, Debug, PartialEq)]
pub struct Retry {
    pub on_failure: bool,
    pub on_timeout: bool,
    pub on_lost_worker: bool,
    /// 0: retry at once.
    pub backoff_initial_ms: u64,
    /// 0: no cap.
    pub backoff_max_ms: u64,
    pub backoff_multiplier: f64,
    pub backoff_jitter: bool,
}

impl Default for Retry {
    fn default() -> Self {
        DEFAULT_RETRY
    }
}

#[derive(Clone, Debug)]
pub struct PlannedOp {
    pub id: OpId,
    pub kind: String,
    /// The args as submitted (a JSON object), templates not yet filled in.
    pub args: serde_json::Value,
    /// Indices this op runs after: `after`, `${ops.X…}` references and edges
    /// added by `hazards: order`. Sorted, no duplicates. (The lists of a
    /// planned op are boxed slices, not `Vec`s: a million-op plan saves
    /// 8 bytes an op on each.)
    pub deps: Box<[u32]>,
    /// Indices that run after this op (the reverse of `deps`). Sorted.
    pub dependents: Box<[u32]>,
    pub run_if_always: bool,
    /// 0 = critical … 3 = low (default medium = 2).
    pub priority: u8,
    /// At least 1 (default 1).
    pub max_attempts: u32,
    /// `None`: [`Retry::default`] (see [`PlannedOp::retry`]); most ops
    /// have no policy of their own.
    pub retry_policy: Option<Box<Retry>>,
    /// 0: no timeout.
    pub timeout_ms: u64,
    /// The most bytes the op's output may hold; 0: the worker's cap.
    pub max_output_bytes: u64,
    pub store_as: Option<String>,
    /// Memory keys the op writes: `store_as`, a `memory.put` key, declared
    /// `writes: [memory:KEY]`.
    pub memory_writes: Box<[String]>,
    /// `wait_for` keys and `${memory.K}` references, deduplicated.
    pub wait_for: Box<[String]>,
    /// `wait_for_any` keys, deduplicated: the first to appear is enough.
    pub wait_for_any: Box<[String]>,
    /// How long the op may wait for its keys (its own `wait_timeout`, else
    /// the batch's); 0: as long as it takes.
    pub wait_timeout_ms: u64,
    pub requires: BTreeMap<String, String>,
    /// Ops of this batch that write a key this op waits for (`store_as` or
    /// `memory.put`). Not dispatch edges — a key may come from a client —
    /// but they order ops in time, so the critical path follows them.
    pub wait_writers: Box<[u32]>,
    /// The args hold `${…}` templates to fill in at dispatch.
    pub has_templates: bool,
}

/// [`Retry::default`], as a constant.
const DEFAULT_RETRY: Retry = Retry {
    on_failure: true,
    on_timeout: true,
    on_lost_worker: true,
    backoff_initial_ms: 0,
    backoff_max_ms: 0,
    backoff_multiplier: 2.0,
    backoff_jitter: true,
};

impl PlannedOp {
    /// Which failures get another attempt, and the backoff.
    pub fn retry(&self) -> &Retry {
        self.retry_policy.as_deref().unwrap_or(&DEFAULT_RETRY)
    }
}

impl Plan {
    /// The longest chain of ops by the given durations (one per op, by
    /// index): the ops on it in order and its total length.
    pub fn critical_path(&self, durations_ms: &[u64]) -> (Vec<u32>, u64) {
        crate::graph::critical_path(&self.ops, durations_ms)
    }

    /// The `foreach:` op the op at `index` was expanded from, if any.
    pub fn group_of(&self, index: u32) -> Option<&str> {
        let after = self.groups.partition_point(|run| run.start <= index);
        let run = self.groups.get(after.checked_sub(1)?)?;
        (index < run.end).then_some(run.id.as_str())
    }
}

/// The runs of `groups` (one per op, by index; empty: none).
pub fn group_runs<'a>(groups: impl IntoIterator<Item = &'a str>) -> Vec<GroupRun> {
    let mut runs: Vec<GroupRun> = Vec::new();
    for (index, group) in groups.into_iter().enumerate() {
        let index = index as u32;
        if group.is_empty() {
            continue;
        }
        match runs.last_mut() {
            Some(run) if run.end == index && run.id == group => run.end += 1,
            _ => runs.push(GroupRun {
                start: index,
                end: index + 1,
                id: group.to_owned(),
            }),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_found_by_index_across_runs() {
        let runs = group_runs(["", "t", "t", "", "u", "t", "t"]);
        assert_eq!(runs.len(), 3);
        let plan = Plan {
            name: String::new(),
            max_parallel: 0,
            fail_fast: false,
            hazards: HazardPolicy::Reject,
            ops: Vec::new(),
            warnings: Vec::new(),
            namespace: None,
            deadline_ms: 0,
            retry_failed_sequential: false,
            groups: runs,
            unwritten_waits: Vec::new(),
        };
        let found: Vec<Option<&str>> = (0..8).map(|index| plan.group_of(index)).collect();
        assert_eq!(
            found,
            [
                None,
                Some("t"),
                Some("t"),
                None,
                Some("u"),
                Some("t"),
                Some("t"),
                None
            ]
        );
    }

    #[test]
    fn a_planned_op_stays_small() {
        // A coordinator holds one per op of every batch it runs.
        assert!(
            std::mem::size_of::<PlannedOp>() <= 280,
            "{} bytes",
            std::mem::size_of::<PlannedOp>()
        );
    }
}
