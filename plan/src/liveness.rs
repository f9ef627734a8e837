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
        if self.keys.len() == 1 {
            format!("memory key `{}`", self.keys[0])
        } else {
            format!("any of memory keys {}", key_list(&self.keys))
        }
    }

    pub(crate) fn hint(&self) -> String {
        match &self.suggestion {
            Some(close) => format!("; did you mean `{close}`?"),
            None => String::new(),
        }
    }
}

/// Keys of a `wait_for_any` group named in a message.
const MAX_KEYS_NAMED: usize = 5;

/// `` `a`, `b` ``, the first [`MAX_KEYS_NAMED`] and a count of the rest.
fn key_list(keys: &[String]) -> String {
    let mut named: Vec<String> = keys
        .iter()
        .take(MAX_KEYS_NAMED)
        .map(|key| format!("`{key}`"))
        .collect();
    if keys.len() > MAX_KEYS_NAMED {
        named.push(format!("{} more", keys.len() - MAX_KEYS_NAMED));
    }
    named.join(", ")
}

/// Where an op's waits come from, to name the field of each: built once
/// per op that has a problem, so an op with many keys costs one pass over
/// its args, not one per key.
struct WaitFields<'a> {
    /// The op's `wait_for` list.
    listed: HashSet<&'a str>,
    /// The args path of the first `${memory.K}` of each key K.
    paths: HashMap<String, String>,
}

impl<'a> WaitFields<'a> {
    fn of(proto: &'a Op, planned: &PlannedOp) -> WaitFields<'a> {
        let listed: HashSet<&str> = proto.wait_for.iter().map(String::as_str).collect();
        let mut paths: HashMap<String, String> = HashMap::new();
        // Only needed when some key comes from the args alone.
        if planned
            .wait_for
            .iter()
            .any(|key| !listed.contains(key.as_str()))
            && let Ok(references) = volley_kinds::located_references(&planned.args)
        {
            for (path, reference) in references {
                if let Reference::Memory(key) = reference {
                    paths.entry(key).or_insert(path);
                }
            }
        }
        WaitFields { listed, paths }
    }

    /// `wait_for` when the op lists `key` there, else the args path of its
    /// first `${memory.key}`.
    fn field(&self, key: &str) -> String {
        if self.listed.contains(key) {
            return "wait_for".to_owned();
        }
        self.paths
            .get(key)
            .cloned()
            .unwrap_or_else(|| "args".to_owned())
    }
}

/// Every wait of an op at or past `check.checked_from` for keys that no op
/// of the batch writes and that are not present. A `wait_for_any` group
/// counts only when none of its keys is written.
pub(crate) fn unwritten_waits(
    proto_ops: &[Op],
    planned_ops: &[PlannedOp],
    check: &LivenessCheck,
    suggestion_cells: &mut usize,
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
        let mut fields: Option<WaitFields> = None;
        for key in &op.wait_for {
            if !written.contains(key.as_str()) {
                let fields = fields.get_or_insert_with(|| WaitFields::of(&proto_ops[index], op));
                unwritten.push(UnwrittenWait {
                    op: index as u32,
                    field: fields.field(key),
                    keys: vec![key.clone()],
                    suggestion: closest(key, &candidates, suggestion_cells).map(str::to_owned),
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
                .find_map(|key| closest(key, &candidates, suggestion_cells))
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

/// Cells of edit-distance tables filled, over a whole batch, when looking
/// for a written key close to a missing one: keys are up to 512 bytes, so
/// the bound is on the work (some milliseconds), not on the
/// number of keys compared.
pub(crate) const KEY_SUGGESTION_CELLS: usize = 10_000_000;

/// The closest of `candidates` within edit distance 2 of `missing` (ties:
/// the first), while `cells` (the work left, see [`KEY_SUGGESTION_CELLS`])
/// lasts, so a batch full of long typos stays fast.
pub(crate) fn closest<'a>(
    missing: &str,
    candidates: &[&'a str],
    cells: &mut usize,
) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    for &candidate in candidates {
        if candidate.len().abs_diff(missing.len()) > 2 || candidate.is_empty() {
            continue;
        }
        let cost = (missing.len() + 1) * (candidate.len() + 1);
        if *cells < cost {
            break;
        }
        *cells -= cost;
        if let Some(distance) = bounded_edit_distance(missing, candidate, 2)
            && best.is_none_or(|(best_distance, _)| distance < best_distance)
        {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// Levenshtein distance over bytes, `None` once it must exceed `bound`.
pub fn bounded_edit_distance(left: &str, right: &str, bound: usize) -> Option<usize> {
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
/// ops, at most [`MAX_CYCLES`] described) with at least one op at or past
/// `check.checked_from`, and how many there are in all. `deps` are the
/// batch's dependency edges (`after`, `${ops.…}`, hazard ordering); a key
/// no op writes (already reported, or allowed) or that is present blocks
/// nothing.
///
/// The stuck ops are searched in a graph with a node per key besides the
/// ops (op → key it waits for → each writer of the key), so that many
/// waiters of a key with many writers cost waiters + writers edges, not
/// their product.
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

    // The keys that block: written by some op and not present yet, each
    // with a number and its writers.
    let mut key_number: HashMap<&str, u32> = HashMap::new();
    let mut keys: Vec<&str> = Vec::new();
    let mut writers: Vec<Vec<u32>> = Vec::new();
    for (index, op) in planned_ops.iter().enumerate() {
        for key in &op.memory_writes {
            if check.present_keys.contains(key) {
                continue;
            }
            let number = *key_number.entry(key.as_str()).or_insert_with(|| {
                keys.push(key.as_str());
                writers.push(Vec::new());
                keys.len() as u32 - 1
            });
            let key_writers = &mut writers[number as usize];
            if key_writers.last() != Some(&(index as u32)) {
                key_writers.push(index as u32);
            }
        }
    }
    let number_of = |key: &str| key_number.get(key).copied();

    // The fixpoint: `pending[i]` counts what op i still waits on (each dep,
    // each blocking `wait_for` key, and its `wait_for_any` group as one).
    let mut waiters: Vec<Vec<(u32, bool)>> = vec![Vec::new(); keys.len()];
    let mut pending: Vec<u32> = Vec::with_capacity(op_count);
    // Whether the op's `wait_for_any` group blocks at all (every key of it
    // has a writer and none is present).
    let mut any_blocks: Vec<bool> = Vec::with_capacity(op_count);
    for (index, op) in planned_ops.iter().enumerate() {
        let mut count = deps_of(index).len() as u32;
        for number in op.wait_for.iter().filter_map(|key| number_of(key)) {
            count += 1;
            waiters[number as usize].push((index as u32, false));
        }
        let group_blocks = !op.wait_for_any.is_empty()
            && op.wait_for_any.iter().all(|key| number_of(key).is_some());
        if group_blocks {
            count += 1;
            for number in op.wait_for_any.iter().filter_map(|key| number_of(key)) {
                waiters[number as usize].push((index as u32, true));
            }
        }
        any_blocks.push(group_blocks);
        pending.push(count);
    }
    let mut runs = vec![false; op_count];
    let mut any_met = vec![false; op_count];
    let mut key_met = vec![false; keys.len()];
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
        for number in planned_ops[index]
            .memory_writes
            .iter()
            .filter_map(|key| number_of(key))
        {
            if std::mem::replace(&mut key_met[number as usize], true) {
                continue;
            }
            for &(waiter, in_any_group) in &waiters[number as usize] {
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
    drop(waiters);

    // Node `op_count + number` is key `number`. A stuck op points at the
    // stuck ops and unmet keys it waits on, an unmet key at its writers
    // (all stuck: none of them ran).
    let key_node = |number: u32| op_count as u32 + number;
    let mut blocked_by: Vec<Vec<u32>> = vec![Vec::new(); op_count + keys.len()];
    for (index, op) in planned_ops.iter().enumerate() {
        if runs[index] {
            continue;
        }
        let mut edges: Vec<u32> = deps_of(index)
            .iter()
            .copied()
            .filter(|&dep| !runs[dep as usize])
            .collect();
        let unmet = |number: &u32| !key_met[*number as usize];
        edges.extend(
            op.wait_for
                .iter()
                .filter_map(|key| number_of(key))
                .filter(unmet)
                .map(key_node),
        );
        if any_blocks[index] && !any_met[index] {
            edges.extend(
                op.wait_for_any
                    .iter()
                    .filter_map(|key| number_of(key))
                    .map(key_node),
            );
        }
        edges.sort_unstable();
        edges.dedup();
        blocked_by[index] = edges;
    }
    for (number, key_writers) in writers.iter().enumerate() {
        if !key_met[number] {
            blocked_by[op_count + number] = key_writers.clone();
        }
    }
    let blocking = Graph::from_deps(blocked_by);
    let running: Vec<u32> = (0..op_count as u32)
        .filter(|&index| runs[index as usize])
        .collect();
    let checked_from = check.checked_from;

    let mut cycles: Vec<WaitCycle> = Vec::new();
    let mut total = 0;
    for cycle in blocking.cycles(&running) {
        let is_op = |node: &u32| (*node as usize) < op_count;
        if cycle
            .iter()
            .filter(|node| is_op(node))
            .all(|&index| index < checked_from)
        {
            continue;
        }
        total += 1;
        if cycles.len() >= MAX_CYCLES {
            continue;
        }
        // `cycle` runs in dependents order, from its lowest node (an op:
        // ops are numbered before keys): each node is blocked by the one
        // before it. Told the other way: each op waits on the next node.
        let mut waits_on: Vec<u32> = vec![cycle[0]];
        waits_on.extend(cycle[1..].iter().rev());
        let describe = CycleWords {
            proto_ops,
            planned_ops,
            keys: &keys,
            writers: &writers,
        };
        cycles.push(describe.cycle(&waits_on));
    }
    cycles.sort_by_key(|cycle| cycle.op);
    (cycles, total)
}

/// Words for a cycle of the blocking graph.
struct CycleWords<'a> {
    proto_ops: &'a [Op],
    planned_ops: &'a [PlannedOp],
    keys: &'a [&'a str],
    writers: &'a [Vec<u32>],
}

impl CycleWords<'_> {
    fn name(&self, index: u32) -> &str {
        self.planned_ops[index as usize].id.as_str()
    }

    /// `waits_on`: nodes in the order each waits on the next (the last on
    /// the first), starting with an op.
    fn cycle(&self, waits_on: &[u32]) -> WaitCycle {
        let op_count = self.planned_ops.len() as u32;
        let first = waits_on[0];
        let first_fields = WaitFields::of(
            &self.proto_ops[first as usize],
            &self.planned_ops[first as usize],
        );
        let at = |position: usize| waits_on[position % waits_on.len()];
        let ops_in_cycle = waits_on.iter().filter(|&&node| node < op_count).count();
        if ops_in_cycle == 1 {
            // Op → key → the op itself.
            let key = self.keys[(at(1) - op_count) as usize];
            return WaitCycle {
                op: first,
                field: first_fields.field(key),
                message: format!(
                    "waits for memory key `{key}`, which only this op writes: it would wait forever"
                ),
            };
        }
        let mut steps: Vec<String> = Vec::new();
        let mut first_field = String::new();
        let mut through_after = false;
        let mut position = 0;
        while position < waits_on.len() {
            let waiter = waits_on[position];
            let next = at(position + 1);
            let op = &self.planned_ops[waiter as usize];
            if next < op_count {
                through_after = true;
                let after = self.proto_ops[waiter as usize]
                    .after
                    .iter()
                    .any(|after| after == self.name(next));
                if position == 0 {
                    first_field = if after { "after" } else { "args" }.to_owned();
                }
                steps.push(format!("`{}` runs after `{}`", op.id, self.name(next)));
                position += 1;
                continue;
            }
            let number = (next - op_count) as usize;
            let key = self.keys[number];
            let writer = at(position + 2);
            let written_by = self.written_by(number, writer);
            if op.wait_for.iter().any(|waited| waited == key) {
                if position == 0 {
                    first_field = first_fields.field(key);
                }
                steps.push(format!("`{}` waits for `{key}` ({written_by})", op.id));
            } else {
                if position == 0 {
                    first_field = "wait_for_any".to_owned();
                }
                steps.push(format!(
                    "`{}` waits for any of {}, and `{key}` is {written_by}",
                    op.id,
                    key_list(&op.wait_for_any)
                ));
            }
            position += 2;
        }
        let through = if through_after {
            "through memory keys and `after`"
        } else {
            "through memory keys"
        };
        WaitCycle {
            op: first,
            field: first_field,
            message: format!(
                "ops wait for each other {through}, so none of them would ever run: {}",
                steps.join(", ")
            ),
        }
    }

    /// `written by `b``, or with the key's other writers (all stuck too).
    fn written_by(&self, number: usize, writer: u32) -> String {
        let key_writers = &self.writers[number];
        if key_writers.len() == 1 {
            return format!("written by `{}`", self.name(writer));
        }
        let mut names: Vec<String> = vec![format!("`{}`", self.name(writer))];
        names.extend(
            key_writers
                .iter()
                .filter(|&&other| other != writer)
                .take(MAX_WRITERS_NAMED - 1)
                .map(|&other| format!("`{}`", self.name(other))),
        );
        if key_writers.len() > MAX_WRITERS_NAMED {
            names.push(format!("{} more", key_writers.len() - MAX_WRITERS_NAMED));
        }
        format!("written by {}, each waiting too", names.join(", "))
    }
}
