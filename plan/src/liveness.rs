//! Waits that could never end: a key no op of the batch writes, and ops that
//! wait for each other through memory keys (and `after:` edges).
//!
//! Both are found before the batch is stored, because once it runs such an
//! op only sits in `waiting` with nothing to say why (a `wait_timeout`, if
//! set, only turns the hang into a late failure). Keys of a shared
//! namespace are never checked: other batches and clients write them.
//!
//! Cycles are found as in a deadlock detector over an AND-OR graph: an op
//! can run once all its deps ended, each `wait_for` key has one writer
//! that can run, and one `wait_for_any` key does. Whatever that fixpoint
//! never reaches is stuck; every stuck op waits on another stuck op, so the
//! stuck ops hold cycles, and one cycle per strongly connected component is
//! named. A key with several writers blocks only when every one of them is
//! stuck, so it forms a cycle only then.

use std::collections::{HashMap, HashSet};

use volley_kinds::Reference;
use volley_proto::v1::Op;

use crate::graph::Graph;
use crate::model::PlannedOp;

/// Cycles named in full; the rest are counted.
pub(crate) const MAX_CYCLES: usize = 20;
/// Writers named for one key in a cycle's description.
const MAX_WRITERS_NAMED: usize = 3;

/// What the liveness checks may take as given.
#[derive(Clone, Debug, Default)]
pub struct LivenessCheck {
    /// Ops before this index were accepted earlier (a running batch that
    /// grows by `SpawnOps`, or a stored batch planned again): a wait of
    /// theirs is never refused, and a cycle only among them is not named.
    pub checked_from: u32,
    /// Keys that already exist in the batch's memory: they count as
    /// written (a client or an earlier op wrote them).
    pub present_keys: HashSet<String>,
}

impl LivenessCheck {
    /// For a batch that was accepted when it was stored: nothing refused.
    pub fn accepted() -> LivenessCheck {
        LivenessCheck {
            checked_from: u32::MAX,
            present_keys: HashSet::new(),
        }
    }
}

/// A wait for a key (or, for `wait_for_any`, a group of keys) that no op of
/// the batch writes and that is not present.
#[derive(Clone, Debug)]
pub(crate) struct UnwrittenWait {
    pub(crate) op: u32,
    /// `wait_for`, `wait_for_any`, or the path of a `${memory.K}` in args.
    pub(crate) field: String,
    /// One key; several for a `wait_for_any` group.
    pub(crate) keys: Vec<String>,
    /// A key the batch writes within a small edit distance of the missing
    /// one (for a group, of its first key that has one).
    pub(crate) suggestion: Option<String>,
}

impl UnwrittenWait {
    /// `` `k` `` or `` any of `a`, `b` ``.
    pub(crate) fn keys_text(&self) -> String {
        let quoted: Vec<String> = self.keys.iter().map(|key| format!("`{key}`")).collect();
        if self.keys.len() == 1 {
            format!("memory key {}", quoted[0])
        } else {
            format!("any of memory keys {}", quoted.join(", "))
        }
    }

    pub(crate) fn hint(&self) -> String {
        match &self.suggestion {
            Some(close) => format!("; did you mean `{close}`?"),
            None => String::new(),
        }
    }
}

/// The field of op `proto`'s wait for `key`: `wait_for` when it names the
/// key there, else the args path of its first `${memory.key}`.
fn wait_field(proto: &Op, planned: &PlannedOp, key: &str) -> String {
    if proto.wait_for.iter().any(|waited| waited == key) {
        return "wait_for".to_owned();
    }
    volley_kinds::located_references(&planned.args)
        .ok()
        .and_then(|references| {
            references.into_iter().find_map(|(path, reference)| {
                matches!(&reference, Reference::Memory(referenced) if referenced == key)
                    .then_some(path)
            })
        })
        .unwrap_or_else(|| "args".to_owned())
}

/// Every wait of an op at or past `check.checked_from` for keys that no op
/// of the batch writes and that are not present. A `wait_for_any` group
/// counts only when none of its keys is written.
pub(crate) fn unwritten_waits(
    proto_ops: &[Op],
    planned_ops: &[PlannedOp],
    check: &LivenessCheck,
    suggestion_budget: &mut usize,
) -> Vec<UnwrittenWait> {
    let checked_from = check.checked_from as usize;
    if planned_ops
        .iter()
        .skip(checked_from)
        .all(|op| op.wait_for.is_empty() && op.wait_for_any.is_empty())
    {
        return Vec::new();
    }
    let written: HashSet<&str> = planned_ops
        .iter()
        .flat_map(|op| op.memory_writes.iter().map(String::as_str))
        .chain(check.present_keys.iter().map(String::as_str))
        .collect();
    // Sorted, so that of two equally close keys the suggestion is always
    // the same one.
    let mut candidates: Vec<&str> = written.iter().copied().collect();
    candidates.sort_unstable();
    let mut unwritten = Vec::new();
    for (index, op) in planned_ops.iter().enumerate().skip(checked_from) {
        for key in &op.wait_for {
            if !written.contains(key.as_str()) {
                unwritten.push(UnwrittenWait {
                    op: index as u32,
                    field: wait_field(&proto_ops[index], op, key),
                    keys: vec![key.clone()],
                    suggestion: closest(key, &candidates, suggestion_budget).map(str::to_owned),
                });
            }
        }
        if !op.wait_for_any.is_empty()
            && !op
                .wait_for_any
                .iter()
                .any(|key| written.contains(key.as_str()))
        {
            let suggestion = op
                .wait_for_any
                .iter()
                .find_map(|key| closest(key, &candidates, suggestion_budget))
                .map(str::to_owned);
            unwritten.push(UnwrittenWait {
                op: index as u32,
                field: "wait_for_any".to_owned(),
                keys: op.wait_for_any.to_vec(),
                suggestion,
            });
        }
    }
    unwritten
}

/// The closest of `candidates` within edit distance 2 of `missing` (ties:
/// the first), while `budget` comparisons last, so a batch full of typos
/// stays linear.
pub(crate) fn closest<'a>(
    missing: &str,
    candidates: &[&'a str],
    budget: &mut usize,
) -> Option<&'a str> {
    if *budget < candidates.len() {
        return None;
    }
    *budget -= candidates.len();
    let mut best: Option<(usize, &str)> = None;
    for &candidate in candidates {
        if candidate.len().abs_diff(missing.len()) > 2 || candidate.is_empty() {
            continue;
        }
        if let Some(distance) = bounded_edit_distance(missing, candidate, 2)
            && best.is_none_or(|(best_distance, _)| distance < best_distance)
        {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// Levenshtein distance over bytes, `None` once it must exceed `bound`.
pub(crate) fn bounded_edit_distance(left: &str, right: &str, bound: usize) -> Option<usize> {
    let (left, right) = (left.as_bytes(), right.as_bytes());
    let mut previous: Vec<usize> = (0..=right.len()).collect();
    let mut current = vec![0; right.len() + 1];
    for (row, &left_byte) in left.iter().enumerate() {
        current[0] = row + 1;
        let mut row_minimum = current[0];
        for (column, &right_byte) in right.iter().enumerate() {
            let substitution = previous[column] + usize::from(left_byte != right_byte);
            current[column + 1] = substitution
                .min(previous[column + 1] + 1)
                .min(current[column] + 1);
            row_minimum = row_minimum.min(current[column + 1]);
        }
        if row_minimum > bound {
            return None;
        }
        std::mem::swap(&mut previous, &mut current);
    }
    let distance = previous[right.len()];
    (distance <= bound).then_some(distance)
}

/// One cycle of ops that wait for each other: the op the problem is
/// reported on, its field, and the description.
#[derive(Clone, Debug)]
pub(crate) struct WaitCycle {
    pub(crate) op: u32,
    pub(crate) field: String,
    pub(crate) message: String,
}

/// Every key-wait cycle (one per strongly connected component of stuck
/// ops, at most [`MAX_CYCLES`]) with at least one op at or past
/// `check.checked_from`, and how many there are in all. `deps` are the
/// batch's dependency edges (`after`, `${ops.…}`, hazard ordering); a key
/// no op writes (already reported, or allowed) or that is present blocks
/// nothing.
pub(crate) fn wait_cycles(
    proto_ops: &[Op],
    planned_ops: &[PlannedOp],
    graph: Option<&Graph>,
    check: &LivenessCheck,
) -> (Vec<WaitCycle>, usize) {
    let op_count = planned_ops.len();
    if planned_ops
        .iter()
        .all(|op| op.wait_for.is_empty() && op.wait_for_any.is_empty())
        || op_count <= check.checked_from as usize
    {
        return (Vec::new(), 0);
    }
    let no_edges: &[u32] = &[];
    let deps_of = |index: usize| graph.map_or(no_edges, |graph| graph.deps[index].as_slice());
    let dependents_of =
        |index: usize| graph.map_or(no_edges, |graph| graph.dependents[index].as_slice());

    let mut writers: HashMap<&str, Vec<u32>> = HashMap::new();
    for (index, op) in planned_ops.iter().enumerate() {
        for key in &op.memory_writes {
            if !check.present_keys.contains(key) {
                writers.entry(key.as_str()).or_default().push(index as u32);
            }
        }
    }
    // Which keys block: written by some op and not present yet.
    let blocks = |key: &str| writers.contains_key(key);

    // The fixpoint: `pending[i]` counts what op i still waits on (each dep,
    // each blocking `wait_for` key, and its `wait_for_any` group as one).
    let mut waiters: HashMap<&str, Vec<(u32, bool)>> = HashMap::new();
    let mut pending: Vec<u32> = Vec::with_capacity(op_count);
    for (index, op) in planned_ops.iter().enumerate() {
        let mut count = deps_of(index).len() as u32;
        for key in op.wait_for.iter().filter(|key| blocks(key)) {
            count += 1;
            waiters.entry(key).or_default().push((index as u32, false));
        }
        if !op.wait_for_any.is_empty() && op.wait_for_any.iter().all(|key| blocks(key)) {
            count += 1;
            for key in &op.wait_for_any {
                waiters.entry(key).or_default().push((index as u32, true));
            }
        }
        pending.push(count);
    }
    let mut runs = vec![false; op_count];
    let mut any_met = vec![false; op_count];
    let mut key_met: HashSet<&str> = HashSet::new();
    let mut ready: Vec<u32> = (0..op_count as u32)
        .filter(|&index| pending[index as usize] == 0)
        .collect();
    while let Some(index) = ready.pop() {
        let index = index as usize;
        runs[index] = true;
        let mut release = |waiter: u32, ready: &mut Vec<u32>| {
            let count = &mut pending[waiter as usize];
            *count -= 1;
            if *count == 0 {
                ready.push(waiter);
            }
        };
        for &dependent in dependents_of(index) {
            release(dependent, &mut ready);
        }
        for key in &planned_ops[index].memory_writes {
            if !key_met.insert(key.as_str()) {
                continue;
            }
            for &(waiter, in_any_group) in waiters.get(key.as_str()).map_or(&[][..], Vec::as_slice)
            {
                // A group is released once, by its first key.
                if in_any_group && std::mem::replace(&mut any_met[waiter as usize], true) {
                    continue;
                }
                release(waiter, &mut ready);
            }
        }
    }
    if runs.iter().all(|&runs| runs) {
        return (Vec::new(), 0);
    }

    // What blocks each stuck op, as edges to the stuck ops it waits on.
    let stuck = |index: u32| !runs[index as usize];
    let unmet_key = |key: &str| blocks(key) && !key_met.contains(key);
    let mut blocked_by: Vec<Vec<u32>> = vec![Vec::new(); op_count];
    let mut self_waits: Vec<(u32, String)> = Vec::new();
    for (index, op) in planned_ops.iter().enumerate() {
        if runs[index] {
            continue;
        }
        let mut edges: Vec<u32> = deps_of(index)
            .iter()
            .copied()
            .filter(|&dep| stuck(dep))
            .collect();
        let any_unmet = !op.wait_for_any.is_empty()
            && op.wait_for_any.iter().all(|key| blocks(key))
            && !any_met[index];
        let blocking_keys = op
            .wait_for
            .iter()
            .filter(|key| unmet_key(key))
            .chain(op.wait_for_any.iter().filter(|_| any_unmet));
        for key in blocking_keys {
            let key_writers = &writers[key.as_str()];
            if key_writers == &[index as u32] && op.wait_for.contains(key) {
                self_waits.push((index as u32, key.clone()));
            }
            edges.extend(key_writers.iter().copied().filter(|&w| w != index as u32));
        }
        edges.sort_unstable();
        edges.dedup();
        blocked_by[index] = edges;
    }
    let blocking = Graph::from_deps(blocked_by);
    let running: Vec<u32> = (0..op_count as u32).filter(|&index| !stuck(index)).collect();
    let checked_from = check.checked_from;

    let mut cycles: Vec<WaitCycle> = Vec::new();
    let mut total = 0;
    for (index, key) in &self_waits {
        if *index < checked_from {
            continue;
        }
        total += 1;
        if cycles.len() < MAX_CYCLES {
            let proto = &proto_ops[*index as usize];
            let planned = &planned_ops[*index as usize];
            cycles.push(WaitCycle {
                op: *index,
                field: wait_field(proto, planned, key),
                message: format!(
                    "waits for memory key `{key}`, which only this op writes: it would wait forever"
                ),
            });
        }
    }
    for cycle in blocking.cycles(&running) {
        if cycle.iter().all(|&index| index < checked_from) {
            continue;
        }
        total += 1;
        if cycles.len() >= MAX_CYCLES {
            continue;
        }
        // `cycle` runs in dependents order: each op is blocked by the one
        // before it. Told the other way: each op waits on the next.
        let mut waits_on: Vec<u32> = vec![cycle[0]];
        waits_on.extend(cycle[1..].iter().rev());
        let mut steps: Vec<String> = Vec::with_capacity(waits_on.len());
        let mut first_field = String::new();
        for (position, &waiter) in waits_on.iter().enumerate() {
            let next = waits_on[(position + 1) % waits_on.len()];
            let (field, step) = describe_wait(
                proto_ops, planned_ops, &writers, &key_met, waiter, next, &deps_of,
            );
            if position == 0 {
                first_field = field;
            }
            steps.push(step);
        }
        let through_keys = if steps.iter().any(|step| step.contains(" runs after ")) {
            "through memory keys and `after`"
        } else {
            "through memory keys"
        };
        cycles.push(WaitCycle {
            op: waits_on[0],
            field: first_field,
            message: format!(
                "ops wait for each other {through_keys}, so none of them would ever run: {}",
                steps.join(", ")
            ),
        });
    }
    cycles.sort_by_key(|cycle| cycle.op);
    (cycles, total)
}

/// How stuck op `waiter` waits on stuck op `next`: the field and a step of
/// a cycle's description (`` `a` waits for `k` (written by `b`) `` or
/// `` `a` runs after `b` ``).
fn describe_wait<'a>(
    proto_ops: &[Op],
    planned_ops: &[PlannedOp],
    writers: &HashMap<&'a str, Vec<u32>>,
    key_met: &HashSet<&str>,
    waiter: u32,
    next: u32,
    deps_of: &dyn Fn(usize) -> &'a [u32],
) -> (String, String) {
    let op = &planned_ops[waiter as usize];
    let name = |index: u32| planned_ops[index as usize].id.as_str().to_owned();
    let written_by = |key: &str| {
        let key_writers = &writers[key];
        let mut names: Vec<String> = vec![format!("`{}`", name(next))];
        names.extend(
            key_writers
                .iter()
                .filter(|&&writer| writer != next)
                .take(MAX_WRITERS_NAMED - 1)
                .map(|&writer| format!("`{}`", name(writer))),
        );
        if key_writers.len() > MAX_WRITERS_NAMED {
            names.push(format!(
                "{} more",
                key_writers.len() - MAX_WRITERS_NAMED
            ));
        }
        if key_writers.len() > 1 {
            format!("written by {}, each waiting too", names.join(", "))
        } else {
            format!("written by {}", names[0])
        }
    };
    let writes = |key: &&String| {
        !key_met.contains(key.as_str())
            && writers
                .get(key.as_str())
                .is_some_and(|key_writers| key_writers.contains(&next))
    };
    if let Some(key) = op.wait_for.iter().find(writes) {
        return (
            wait_field(&proto_ops[waiter as usize], op, key),
            format!("`{}` waits for `{key}` ({})", op.id, written_by(key)),
        );
    }
    if let Some(key) = op.wait_for_any.iter().find(writes) {
        let group: Vec<String> = op
            .wait_for_any
            .iter()
            .map(|key| format!("`{key}`"))
            .collect();
        return (
            "wait_for_any".to_owned(),
            format!(
                "`{}` waits for any of {}, and `{key}` is {}",
                op.id,
                group.join(", "),
                written_by(key)
            ),
        );
    }
    debug_assert!(deps_of(waiter as usize).contains(&next));
    let field = if proto_ops[waiter as usize]
        .after
        .iter()
        .any(|after| after == planned_ops[next as usize].id.as_str())
    {
        "after"
    } else {
        "args"
    };
    (
        field.to_owned(),
        format!("`{}` runs after `{}`", op.id, name(next)),
    )
}
