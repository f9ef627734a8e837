//! Checks a submitted batch and compiles it into a [`Plan`], reporting every
//! problem at once so a user fixes a batch file in one round trip.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use serde_json::Value;
use volley_kinds::template::{is_id_byte, is_memory_key_byte};
use volley_kinds::touches::{is_glob, normalize_path};
use volley_kinds::{BUILTIN_KINDS, Reference, Target};
use volley_proto::OpId;
use volley_proto::v1::{Batch, Hazards, OnFailure, Op, Priority, RetryFailed, RetryOn, RunIf};

use crate::graph::{Graph, Reachability};
use crate::hazards::{Access, compile_glob, find_hazards};
use crate::liveness::{
    KEY_SUGGESTION_CELLS, LivenessCheck, MAX_CYCLES, UnwrittenWait, bounded_edit_distance,
    unwritten_waits, wait_cycles,
};
use crate::model::{HazardPolicy, Limits, Plan, PlannedOp, Problem, Retry};

/// Declared `reads:`/`writes:` entries with this prefix name memory keys.
const MEMORY_PREFIX: &str = "memory:";

/// Most tries an op may ask for.
const MAX_ATTEMPTS: u32 = 100;
/// Longest op id (and `foreach:` group name), in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Ids compared, over the whole batch, when looking for a close id to
/// suggest, so a batch full of typos stays linear.
const SUGGESTION_BUDGET: usize = 2_000_000;
/// Warnings kept; the rest are counted.
const MAX_WARNINGS: usize = 100;

/// Validates `batch` and compiles it into a [`Plan`], or returns every
/// problem found. `known_kinds` says whether some worker (or the built-ins)
/// runs a kind.
pub fn plan(
    batch: &Batch,
    known_kinds: &dyn Fn(&str) -> bool,
    limits: &Limits,
) -> Result<Plan, Vec<Problem>> {
    plan_with(batch, known_kinds, limits, &LivenessCheck::default())
}

/// [`plan`], with what the liveness checks may take as given: ops accepted
/// earlier (a batch growing by `SpawnOps`, or planned again from the
/// store) and keys already in the batch's memory.
pub fn plan_with(
    batch: &Batch,
    known_kinds: &dyn Fn(&str) -> bool,
    limits: &Limits,
    liveness: &LivenessCheck,
) -> Result<Plan, Vec<Problem>> {
    let ops = &batch.ops;
    let mut problems = Problems::default();
    if ops.is_empty() {
        problems.batch("ops", "the batch has no ops".to_owned());
    }
    if ops.len() > limits.max_ops {
        problems.batch(
            "ops",
            format!(
                "the batch has {} ops, more than the limit of {}",
                ops.len(),
                limits.max_ops
            ),
        );
        return Err(problems.into_sorted());
    }
    let fail_fast = match OnFailure::try_from(batch.on_failure) {
        Ok(on_failure) => on_failure == OnFailure::FailFast,
        Err(_) => {
            problems.batch("on_failure", format!("unknown value {}", batch.on_failure));
            false
        }
    };
    let retry_failed_sequential = match RetryFailed::try_from(batch.retry_failed) {
        Ok(RetryFailed::Unspecified | RetryFailed::None) => false,
        Ok(RetryFailed::Sequential) => {
            if fail_fast {
                problems.batch(
                    "retry_failed",
                    "`sequential` cannot be combined with `on_failure: fail_fast`: the batch stops at its first failure, so there is no failed op to retry".to_owned(),
                );
            }
            true
        }
        Err(_) => {
            problems.batch(
                "retry_failed",
                format!("unknown value {}", batch.retry_failed),
            );
            false
        }
    };
    let hazard_policy = match Hazards::try_from(batch.hazards) {
        Ok(Hazards::Unspecified | Hazards::Reject) => HazardPolicy::Reject,
        Ok(Hazards::Order) => HazardPolicy::Order,
        Ok(Hazards::Allow) => HazardPolicy::Allow,
        Err(_) => {
            problems.batch("hazards", format!("unknown value {}", batch.hazards));
            HazardPolicy::Reject
        }
    };

    let namespace = (!batch.namespace.is_empty()).then(|| batch.namespace.clone());
    if let Some(namespace) = &namespace
        && let Err(message) = check_memory_key(namespace)
    {
        problems.batch("namespace", message.replace("memory key", "namespace"));
    }
    let index_of = index_ids(ops, &mut problems);
    let mut checker = OpChecker {
        ops,
        index_of: &index_of,
        known_kinds,
        limits,
        problems: &mut problems,
        suggestion_budget: SUGGESTION_BUDGET,
    };
    // Built in place from the start: for a million ops, a second copy of the
    // plan costs more in page faults than all the checks together.
    let mut planned_ops: Vec<PlannedOp> = Vec::with_capacity(ops.len());
    let mut accesses: Vec<Access> = Vec::new();
    for (index, op) in ops.iter().enumerate() {
        planned_ops.push(checker.check(index as u32, op, &mut accesses));
    }
    // The id index is done with (the checker borrowing it is not used
    // again): freed before the graph is built, not held with it (tens of
    // MB for a million ops).
    drop(index_of);

    // Independent ops that touch no file or key (the usual very big batch)
    // need no graph: no edges, so no cycles, no hazards and nothing to
    // link; for a million ops that is ~50 MB not allocated.
    let graph = if accesses.is_empty() && planned_ops.iter().all(|op| op.deps.is_empty()) {
        None
    } else {
        let deps: Vec<Vec<u32>> = planned_ops
            .iter_mut()
            .map(|op| std::mem::take(&mut op.deps).into_vec())
            .collect();
        let mut graph = Graph::from_deps(deps);
        // Without edges, file order is the topological order (and no heap needed).
        let order = if graph.deps.iter().all(Vec::is_empty) {
            (0..ops.len() as u32).collect()
        } else {
            graph.topological_order()
        };
        let cycles = graph.cycles(&order);
        for cycle in &cycles {
            let mut names: Vec<&str> = cycle
                .iter()
                .map(|&index| ops[index as usize].id.as_str())
                .collect();
            names.push(names[0]);
            problems.op(
                cycle[0],
                &ops[cycle[0] as usize].id,
                "after",
                format!(
                    "cycle: {} (each runs after the one before it)",
                    names.join(" -> ")
                ),
            );
        }
        // A cyclic graph has no topological order to prune reachability with;
        // the batch is rejected for its cycles anyway.
        if cycles.is_empty() && !accesses.is_empty() {
            let mut reach = Reachability::new(&order);
            for (index, problem) in
                find_hazards(&accesses, ops, &mut graph, &mut reach, hazard_policy)
            {
                problems.list.push((index as u64 + 1, problem));
            }
        }
        Some(graph)
    };
    // Keys of a shared namespace may come from other batches or clients:
    // only a batch's own memory can be checked for writers and cycles.
    let mut suggestion_cells = KEY_SUGGESTION_CELLS;
    let unwritten = if namespace.is_some() {
        Vec::new()
    } else {
        unwritten_waits(ops, &planned_ops, liveness, &mut suggestion_cells)
    };
    // A client may be expected to write them (`allow_unwritten`), unless
    // every warning is to be an error (`strict`).
    let unwritten_allowed = batch.allow_unwritten && !batch.strict;
    if !unwritten_allowed {
        for wait in &unwritten {
            let (then, remedy) = if batch.strict {
                ("", " (strict)".to_owned())
            } else {
                let key = wait.keys.first().map_or("KEY", String::as_str);
                (
                    ", so it would wait forever",
                    format!(
                        " (if an op's program writes it, an agent's `volley memory put`, declare that on the op: `writes: [memory:{key}]`; if a client writes it, submit with --allow-unwritten or `allow_unwritten: true`)"
                    ),
                )
            };
            problems.op(
                wait.op,
                planned_ops[wait.op as usize].id.as_str(),
                &wait.field,
                format!(
                    "waits for {}, which no op of this batch writes{then}{}{remedy}",
                    wait.keys_text(),
                    wait.hint()
                ),
            );
        }
    }
    // Cycles through keys are looked for in a graph that is otherwise
    // sound: an `after` cycle or a bad reference would show up again here.
    let graph_is_sound = problems.list.len()
        == if unwritten_allowed {
            0
        } else {
            unwritten.len()
        };
    if namespace.is_none() && graph_is_sound {
        let (cycles, total) = wait_cycles(ops, &planned_ops, graph.as_ref(), liveness);
        for cycle in &cycles {
            problems.op(
                cycle.op,
                planned_ops[cycle.op as usize].id.as_str(),
                &cycle.field,
                cycle.message.clone(),
            );
        }
        if total > cycles.len() {
            problems.batch(
                "ops",
                format!(
                    "… and {} more cycles of ops waiting for each other (the first {MAX_CYCLES} are named)",
                    total - cycles.len()
                ),
            );
        }
    }
    if !problems.list.is_empty() {
        return Err(problems.into_sorted());
    }
    let mut warnings = unwritten_warnings(&planned_ops, &unwritten);
    let unwritten_waits = unwritten_by_op(unwritten);
    warnings.extend(credential_warnings(&planned_ops));
    for op in &mut planned_ops {
        if op.wait_timeout_ms == 0 {
            op.wait_timeout_ms = batch.wait_timeout_ms;
        }
    }
    link_wait_writers(&mut planned_ops);
    if let Some(Graph { deps, dependents }) = graph {
        for ((planned, deps), dependents) in planned_ops.iter_mut().zip(deps).zip(dependents) {
            planned.deps = deps.into_boxed_slice();
            planned.dependents = dependents.into_boxed_slice();
        }
    }
    Ok(Plan {
        name: batch.name.clone(),
        max_parallel: batch.max_parallel,
        fail_fast,
        hazards: hazard_policy,
        ops: planned_ops,
        warnings,
        namespace,
        deadline_ms: batch.deadline_ms,
        retry_failed_sequential,
        groups: crate::model::group_runs(batch.ops.iter().map(|op| op.group.as_str())),
        unwritten_waits,
    })
}

/// Problems with a sort key: 0 for the batch, op index + 1 for an op.
#[derive(Default)]
struct Problems {
    list: Vec<(u64, Problem)>,
}

impl Problems {
    fn batch(&mut self, field: &str, message: String) {
        self.list.push((
            0,
            Problem {
                op_id: String::new(),
                field: field.to_owned(),
                message,
            },
        ));
    }

    fn op(&mut self, index: u32, op_id: &str, field: &str, message: String) {
        self.list.push((
            index as u64 + 1,
            Problem {
                op_id: op_id.to_owned(),
                field: field.to_owned(),
                message,
            },
        ));
    }

    /// In file order, each op's problems in the order they were found.
    fn into_sorted(mut self) -> Vec<Problem> {
        self.list.sort_by_key(|(key, _)| *key);
        self.list.into_iter().map(|(_, problem)| problem).collect()
    }
}

/// Maps each id to its first position, reporting bad and duplicate ids.
fn index_ids<'a>(ops: &'a [Op], problems: &mut Problems) -> HashMap<&'a str, u32> {
    let mut index_of: HashMap<&str, u32> = HashMap::with_capacity(ops.len());
    for (index, op) in ops.iter().enumerate() {
        let index = index as u32;
        if op.id.is_empty() {
            problems.op(index, &op.id, "id", format!("op #{} has no id", index + 1));
            continue;
        }
        if op.id.len() > MAX_ID_LEN || !op.id.bytes().all(is_id_byte) {
            problems.op(
                index,
                &op.id,
                "id",
                format!("bad id: an id is 1 to {MAX_ID_LEN} of `A-Z a-z 0-9 _ . -`"),
            );
        }
        if op.group.len() > MAX_ID_LEN || !op.group.bytes().all(is_id_byte) {
            problems.op(
                index,
                &op.id,
                "group",
                format!(
                    "bad group: a group is the id of the `foreach:` op it was expanded from, up to {MAX_ID_LEN} of `A-Z a-z 0-9 _ . -`"
                ),
            );
        }
        match index_of.entry(op.id.as_str()) {
            Entry::Occupied(first) => problems.op(
                index,
                &op.id,
                "id",
                format!(
                    "duplicate id, also op #{} (this is op #{}, counting from 1)",
                    first.get() + 1,
                    index + 1
                ),
            ),
            Entry::Vacant(slot) => {
                slot.insert(index);
            }
        }
    }
    index_of
}

struct OpChecker<'a> {
    ops: &'a [Op],
    index_of: &'a HashMap<&'a str, u32>,
    known_kinds: &'a dyn Fn(&str) -> bool,
    limits: &'a Limits,
    problems: &'a mut Problems,
    suggestion_budget: usize,
}

impl OpChecker<'_> {
    /// The op's retry policy: `retry_on` (empty: every kind of failure) and
    /// `backoff`.
    fn retry(&mut self, index: u32, id: &str, op: &Op) -> Retry {
        let mut retry = Retry::default();
        if !op.retry_on.is_empty() {
            retry.on_failure = false;
            retry.on_timeout = false;
            retry.on_lost_worker = false;
            for value in &op.retry_on {
                match RetryOn::try_from(*value) {
                    Ok(RetryOn::Failure) => retry.on_failure = true,
                    Ok(RetryOn::Timeout) => retry.on_timeout = true,
                    Ok(RetryOn::LostWorker) => retry.on_lost_worker = true,
                    Ok(RetryOn::Unspecified) | Err(_) => self.problems.op(
                        index,
                        id,
                        "retry_on",
                        format!("unknown value {value}: use failure, timeout or lost_worker"),
                    ),
                }
            }
        }
        if let Some(backoff) = &op.backoff {
            retry.backoff_initial_ms = backoff.initial_ms;
            retry.backoff_max_ms = backoff.max_ms;
            retry.backoff_jitter = !backoff.no_jitter;
            if backoff.multiplier != 0.0 {
                retry.backoff_multiplier = backoff.multiplier;
            }
            if !(1.0..=100.0).contains(&retry.backoff_multiplier) {
                self.problems.op(
                    index,
                    id,
                    "backoff.multiplier",
                    format!("{} is not between 1 and 100", backoff.multiplier),
                );
            }
            if backoff.max_ms != 0 && backoff.max_ms < backoff.initial_ms {
                self.problems.op(
                    index,
                    id,
                    "backoff.max",
                    format!(
                        "{} ms is below the initial delay of {} ms",
                        backoff.max_ms, backoff.initial_ms
                    ),
                );
            }
        }
        retry
    }

    /// Checks one op and compiles it, `deps` holding its own dependencies
    /// only (no hazard edges) and `dependents` left empty.
    fn check(&mut self, index: u32, op: &Op, accesses: &mut Vec<Access>) -> PlannedOp {
        let id = op.id.as_str();
        let first_access = accesses.len();
        if op.kind.is_empty() {
            self.problems.op(
                index,
                id,
                "kind",
                format!("no kind; built-in kinds are {}", BUILTIN_KINDS.join(", ")),
            );
        } else if !(self.known_kinds)(&op.kind) {
            self.problems.op(
                index,
                id,
                "kind",
                format!(
                    "unknown kind `{}`: no worker runs it; built-in kinds are {}",
                    op.kind,
                    BUILTIN_KINDS.join(", ")
                ),
            );
        }

        // Args with a problem of their own are not checked against the kind.
        let (args, args_ok) = match self.parse_args_json(index, op) {
            Some(args) => (args, true),
            None => (Value::Object(serde_json::Map::new()), false),
        };
        let mut deps: Vec<u32> = Vec::new();
        let mut wait_for: Vec<String> = Vec::new();
        // Secrets the op's program needs: only a worker that holds them
        // (it advertises a `secret.NAME` label) may take it.
        let mut secrets: Vec<String> = Vec::new();
        let has_templates = volley_kinds::has_templates(&args);

        let builtin = if args_ok {
            volley_kinds::parse_args(&op.kind, &args)
        } else {
            Ok(None)
        };
        match builtin {
            Ok(Some(builtin)) => {
                if let volley_kinds::BuiltinArgs::Grep(grep) = &builtin
                    && !volley_kinds::has_templates(&Value::String(grep.pattern.clone()))
                    && let Err(message) = check_grep_pattern(&grep.pattern)
                {
                    self.problems.op(index, id, "args.pattern", message);
                }
                for (field, path) in file_path_args(&builtin) {
                    if climbs_above_start(path) {
                        self.problems.op(
                            index,
                            id,
                            field,
                            format!(
                                "`{path}` climbs above the worker's root, where no file op may reach: paths resolve against the worker's --root (`volley run`: its --root, or the current directory); give a path inside it"
                            ),
                        );
                    }
                }
                let touched = volley_kinds::touches(&builtin);
                for (targets, write) in [(touched.reads, false), (touched.writes, true)] {
                    for target in targets {
                        if let Target::File(pattern) = &target
                            && is_glob(pattern)
                            && let Err(message) = compile_glob(pattern)
                        {
                            self.problems.op(index, id, "args", message);
                            continue;
                        }
                        accesses.push(Access {
                            op: index,
                            target,
                            write,
                        });
                    }
                }
            }
            Ok(None) => {}
            Err(error) => self.problems.op(index, id, &error.field, error.message),
        }

        if has_templates {
            match volley_kinds::located_references(&args) {
                Ok(references) => {
                    for (path, reference) in references {
                        match reference {
                            Reference::Memory(key) => wait_for.push(key),
                            Reference::OpOutput(target) | Reference::OpStatus(target) => {
                                if let Some(dep) =
                                    self.resolve(index, id, &path, &target, "refers to")
                                {
                                    deps.push(dep);
                                }
                            }
                            // Resolved by the worker into the program's
                            // environment: only a program's `cmd` or a
                            // whole `env` value may hold one.
                            Reference::Secret(name) => {
                                secrets.push(name.clone());
                                let host =
                                    volley_kinds::HOST_PROGRAM_KINDS.contains(&op.kind.as_str());
                                let whole_env_value = path.starts_with("args.env.")
                                    && args
                                        .pointer(&format!("/env/{}", &path["args.env.".len()..]))
                                        .and_then(Value::as_str)
                                        == Some(format!("${{secret.{name}}}").as_str());
                                if !host || !(path == "args.cmd" || whole_env_value) {
                                    self.problems.op(
                                        index,
                                        id,
                                        &path,
                                        format!("`${{secret.{name}}}` can stand only in a shell or agent `cmd`, or as a whole `env` value: a secret reaches a program's environment, never its args"),
                                    );
                                }
                            }
                        }
                    }
                }
                Err(error) => self.problems.op(index, id, &error.path, error.message),
            }
        }

        for after in &op.after {
            if let Some(dep) = self.resolve(index, id, "after", after, "runs after") {
                deps.push(dep);
            }
        }
        deps.sort_unstable();
        deps.dedup();

        if !op.store_as.is_empty() {
            if let Err(message) = check_memory_key(&op.store_as) {
                self.problems.op(index, id, "store_as", message);
            } else {
                accesses.push(Access {
                    op: index,
                    target: Target::Memory(op.store_as.clone()),
                    write: true,
                });
            }
        }
        for key in &op.wait_for {
            match check_memory_key(key) {
                Ok(()) => wait_for.push(key.clone()),
                Err(message) => self.problems.op(index, id, "wait_for", message),
            }
        }
        if wait_for.len() > 1 {
            let mut seen = HashSet::with_capacity(wait_for.len());
            wait_for.retain(|key| seen.insert(key.clone()));
        }
        let mut wait_for_any: Vec<String> = Vec::new();
        for key in &op.wait_for_any {
            match check_memory_key(key) {
                Ok(()) if !wait_for_any.contains(key) => wait_for_any.push(key.clone()),
                Ok(()) => {}
                Err(message) => self.problems.op(index, id, "wait_for_any", message),
            }
        }
        // Reading a key the op waits for cannot race with its writer: the op
        // only starts once the key is written.
        if !wait_for.is_empty() {
            let own = accesses.split_off(first_access);
            accesses.extend(own.into_iter().filter(|access| {
                access.write
                    || !matches!(&access.target, Target::Memory(key) if wait_for.contains(key))
            }));
        }

        for (declared, field, write) in [(&op.reads, "reads", false), (&op.writes, "writes", true)]
        {
            for path in declared {
                if path.trim().is_empty() {
                    self.problems.op(index, id, field, "empty path".to_owned());
                    continue;
                }
                // `memory:KEY`: a key the op reads or writes while it runs
                // (an agent's `volley memory put`), declared for the planner.
                if let Some(key) = path.strip_prefix(MEMORY_PREFIX) {
                    match check_memory_key(key) {
                        Err(message) => self.problems.op(index, id, field, message),
                        // Reading a key the op waits for cannot race its writer.
                        Ok(()) if !write && wait_for.iter().any(|waited| waited == key) => {}
                        Ok(()) => accesses.push(Access {
                            op: index,
                            target: Target::Memory(key.to_owned()),
                            write,
                        }),
                    }
                    continue;
                }
                let normalized = normalize_path(path);
                if is_glob(&normalized)
                    && let Err(message) = compile_glob(&normalized)
                {
                    self.problems.op(index, id, field, message);
                    continue;
                }
                accesses.push(Access {
                    op: index,
                    target: Target::File(normalized),
                    write,
                });
            }
        }

        if op.attempts > MAX_ATTEMPTS {
            self.problems.op(
                index,
                id,
                "attempts",
                format!(
                    "{} attempts, more than the limit of {MAX_ATTEMPTS}",
                    op.attempts
                ),
            );
        }
        if Priority::try_from(op.priority).is_err() {
            self.problems.op(
                index,
                id,
                "priority",
                format!("unknown priority {}", op.priority),
            );
        }
        if RunIf::try_from(op.run_if).is_err() {
            self.problems
                .op(index, id, "run_if", format!("unknown run_if {}", op.run_if));
        }

        PlannedOp {
            id: OpId::new(op.id.clone()),
            kind: op.kind.clone(),
            args,
            deps: deps.into_boxed_slice(),
            dependents: Box::default(),
            run_if_always: op.run_if == RunIf::Always as i32,
            priority: match Priority::try_from(op.priority) {
                Ok(Priority::Critical) => 0,
                Ok(Priority::High) => 1,
                Ok(Priority::Low) => 3,
                _ => 2,
            },
            max_attempts: op.attempts.max(1),
            retry_policy: Some(self.retry(index, id, op))
                .filter(|retry| *retry != Retry::default())
                .map(Box::new),
            timeout_ms: op.timeout_ms,
            max_output_bytes: op.max_output_bytes,
            store_as: (!op.store_as.is_empty()).then(|| op.store_as.clone()),
            memory_writes: accesses[first_access.min(accesses.len())..]
                .iter()
                .filter(|access| access.write && access.op == index)
                .filter_map(|access| match &access.target {
                    Target::Memory(key) => Some(key.clone()),
                    Target::File(_) => None,
                })
                .collect(),
            wait_for: wait_for.into_boxed_slice(),
            wait_for_any: wait_for_any.into_boxed_slice(),
            wait_timeout_ms: op.wait_timeout_ms,
            wait_writers: Box::default(),
            requires: op
                .requires
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .chain(
                    secrets
                        .iter()
                        .map(|name| (format!("{SECRET_LABEL_PREFIX}{name}"), "1".to_owned())),
                )
                .collect(),
            has_templates,
        }
    }

    /// `args_json` as a JSON object (`{}` when absent); `None` after
    /// reporting why it is not one.
    fn parse_args_json(&mut self, index: u32, op: &Op) -> Option<Value> {
        let empty = || Some(Value::Object(serde_json::Map::new()));
        if op.args_json.len() > self.limits.max_arg_bytes {
            self.problems.op(
                index,
                &op.id,
                "args",
                format!(
                    "{} bytes, more than the limit of {}",
                    op.args_json.len(),
                    self.limits.max_arg_bytes
                ),
            );
            return None;
        }
        let text = op.args_json.trim();
        if text.is_empty() {
            return empty();
        }
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Null) => empty(),
            Ok(value @ Value::Object(_)) => Some(value),
            Ok(_) => {
                self.problems
                    .op(index, &op.id, "args", "must be a JSON object".to_owned());
                None
            }
            Err(error) => {
                self.problems
                    .op(index, &op.id, "args", format!("not valid JSON: {error}"));
                None
            }
        }
    }

    /// The index of op `target`, which op `index` depends on through `field`;
    /// `None` (and a problem) when it does not exist or is the op itself.
    fn resolve(
        &mut self,
        index: u32,
        id: &str,
        field: &str,
        target: &str,
        verb: &str,
    ) -> Option<u32> {
        match self.index_of.get(target) {
            Some(&dep) if dep == index || target == id => {
                self.problems.op(index, id, field, format!("{verb} itself"));
                None
            }
            Some(&dep) => Some(dep),
            None => {
                let hint = match self.suggest(target) {
                    Some(close) => format!("; did you mean `{close}`?"),
                    None => String::new(),
                };
                self.problems.op(
                    index,
                    id,
                    field,
                    format!("{verb} `{target}`, which is no op of this batch{hint}"),
                );
                None
            }
        }
    }

    /// The closest id within edit distance 2 of `missing`, while the budget
    /// of comparisons lasts.
    fn suggest(&mut self, missing: &str) -> Option<&str> {
        if self.suggestion_budget < self.ops.len() {
            return None;
        }
        self.suggestion_budget -= self.ops.len();
        let mut best: Option<(usize, &str)> = None;
        for op in self.ops {
            if op.id.len().abs_diff(missing.len()) > 2 || op.id.is_empty() {
                continue;
            }
            if let Some(distance) = bounded_edit_distance(missing, &op.id, 2)
                && best.is_none_or(|(best_distance, _)| distance < best_distance)
            {
                best = Some((distance, op.id.as_str()));
            }
        }
        best.map(|(_, id)| id)
    }
}

/// A `grep` pattern compiled as the worker's `grep` compiles it (the
/// `regex` crate, default options), so a bad one is refused before
/// anything runs. The crate's multi-line report (pattern, caret, reason)
/// is folded into one line.
fn check_grep_pattern(pattern: &str) -> Result<(), String> {
    match regex::Regex::new(pattern) {
        Ok(_) => Ok(()),
        Err(regex::Error::Syntax(report)) => {
            // The last line says what is wrong ("error: unclosed group").
            let reason = report
                .lines()
                .rev()
                .map(str::trim)
                .find(|line| !line.is_empty())
                .unwrap_or("invalid")
                .trim_start_matches("error: ");
            Err(format!("invalid regex `{pattern}`: {reason}"))
        }
        Err(error) => Err(format!(
            "invalid regex `{pattern}`: {}",
            error
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        )),
    }
}

/// The file paths an op's args name, by field, as the file kinds resolve
/// them against the worker's root. Templated ones are filled in later and
/// left out.
fn file_path_args(builtin: &volley_kinds::BuiltinArgs) -> Vec<(&'static str, &str)> {
    use volley_kinds::BuiltinArgs;
    let mut paths: Vec<(&'static str, &str)> = match builtin {
        BuiltinArgs::Read(read) => vec![("args.path", read.path.as_str())],
        BuiltinArgs::Write(write) => vec![("args.path", write.path.as_str())],
        BuiltinArgs::Glob(glob) => vec![("args.pattern", glob.pattern.as_str())],
        BuiltinArgs::Grep(grep) => [("args.path", &grep.path), ("args.glob", &grep.glob)]
            .into_iter()
            .filter_map(|(field, path)| path.as_deref().map(|path| (field, path)))
            .collect(),
        _ => Vec::new(),
    };
    paths.retain(|(_, path)| !volley_kinds::has_templates(&Value::String((*path).to_owned())));
    paths
}

/// The `cwd` a host program runs in, unless templated.
fn cwd_arg(builtin: &volley_kinds::BuiltinArgs) -> Option<&str> {
    use volley_kinds::BuiltinArgs;
    let cwd = match builtin {
        BuiltinArgs::Shell(shell) => shell.cwd.as_deref(),
        BuiltinArgs::Agent(agent) => agent.cwd.as_deref(),
        _ => None,
    }?;
    (!volley_kinds::has_templates(&Value::String(cwd.to_owned()))).then_some(cwd)
}

/// A relative path whose `..` climb above where it starts: outside any
/// root, whatever the root is.
fn climbs_above_start(path: &str) -> bool {
    if path.starts_with('/') {
        return false;
    }
    let normalized = normalize_path(path);
    normalized == ".." || normalized.starts_with("../")
}

/// The paths of `batch` that leave `root` (absolute, canonical): the
/// checks `volley run` adds to [`plan`], since only it knows the root its
/// workers use. File paths and `cwd`, absolute or climbing out with `..`.
pub fn paths_outside_root(batch: &Batch, root: &std::path::Path) -> Vec<Problem> {
    let root_text = root.to_string_lossy();
    let mut problems = Vec::new();
    for op in &batch.ops {
        let Ok(args) = serde_json::from_str::<Value>(if op.args_json.is_empty() {
            "{}"
        } else {
            &op.args_json
        }) else {
            continue;
        };
        let Ok(Some(builtin)) = volley_kinds::parse_args(&op.kind, &args) else {
            continue;
        };
        let mut paths = file_path_args(&builtin);
        if let Some(cwd) = cwd_arg(&builtin) {
            paths.push(("args.cwd", cwd));
        }
        for (field, path) in paths {
            let outside = if path.starts_with('/') {
                let normalized = normalize_path(path);
                !(normalized == root_text
                    || normalized.starts_with(&format!("{}/", root_text.trim_end_matches('/'))))
            } else {
                climbs_above_start(path)
            };
            if outside {
                problems.push(Problem {
                    op_id: op.id.clone(),
                    field: field.to_owned(),
                    message: format!(
                        "`{path}` is outside the root {root_text}: paths resolve against it; give a path inside it, or choose the root with `volley run --root DIR`"
                    ),
                });
            }
        }
    }
    problems
}

/// The longest memory key (or namespace name), in bytes: keys are
/// addresses, not data, and each one is spelled in several Redis keys.
pub const MAX_MEMORY_KEY_BYTES: usize = 512;

/// Checks a memory key (or namespace name): non-empty, at most
/// [`MAX_MEMORY_KEY_BYTES`], letters, digits and `/ . - _ :` only.
pub fn check_memory_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("empty memory key".to_owned());
    }
    if key.len() > MAX_MEMORY_KEY_BYTES {
        return Err(format!(
            "memory key of {} bytes: at most {MAX_MEMORY_KEY_BYTES}",
            key.len()
        ));
    }
    if let Some(bad) = key
        .chars()
        .find(|&character| !character.is_ascii() || !is_memory_key_byte(character as u8))
    {
        return Err(format!(
            "bad memory key `{key}`: `{bad}` is not allowed (letters, digits and `/ . - _ :`)"
        ));
    }
    Ok(())
}

/// Fills `wait_writers`: for each key an op waits for, the ops of the batch
/// that write it.
fn link_wait_writers(planned_ops: &mut [PlannedOp]) {
    if planned_ops
        .iter()
        .all(|op| op.wait_for.is_empty() && op.wait_for_any.is_empty())
    {
        return;
    }
    let mut writers: HashMap<String, Vec<u32>> = HashMap::new();
    for (index, op) in planned_ops.iter().enumerate() {
        for key in &op.memory_writes {
            writers.entry(key.clone()).or_default().push(index as u32);
        }
    }
    for (index, op) in planned_ops.iter_mut().enumerate() {
        let mut linked: Vec<u32> = op
            .wait_for
            .iter()
            .chain(&op.wait_for_any)
            .filter_map(|key| writers.get(key))
            .flatten()
            .copied()
            .filter(|writer| *writer as usize != index)
            .collect();
        linked.sort_unstable();
        linked.dedup();
        op.wait_writers = linked.into_boxed_slice();
    }
}

/// The unwritten waits (in op order) as [`Plan::unwritten_waits`]: each
/// op once, with the keys of all its waits in the order they were found.
fn unwritten_by_op(unwritten: Vec<UnwrittenWait>) -> Vec<(u32, Vec<String>)> {
    let mut by_op: Vec<(u32, Vec<String>)> = Vec::new();
    for wait in unwritten {
        match by_op.last_mut() {
            Some((op, keys)) if *op == wait.op => keys.extend(wait.keys),
            _ => by_op.push((wait.op, wait.keys)),
        }
    }
    by_op
}

/// The warnings for `unwritten_waits`, at most `MAX_WARNINGS` and a count.
fn unwritten_warnings(planned_ops: &[PlannedOp], unwritten: &[UnwrittenWait]) -> Vec<String> {
    let mut warnings: Vec<String> = unwritten
        .iter()
        .take(MAX_WARNINGS)
        .map(|wait| {
            format!(
                "op `{}` waits for {}, which no op of this batch writes{}; it runs only when a client writes it",
                planned_ops[wait.op as usize].id,
                wait.keys_text(),
                wait.hint()
            )
        })
        .collect();
    if unwritten.len() > MAX_WARNINGS {
        warnings.push(format!(
            "… and {} more ops wait for memory keys no op of this batch writes",
            unwritten.len() - MAX_WARNINGS
        ));
    }
    warnings
}

/// The label a worker advertises for each secret it holds
/// (`secret.NAME=1`), and an op that needs the secret requires.
pub const SECRET_LABEL_PREFIX: &str = "secret.";

/// Names of environment variables that usually hold credentials.
const CREDENTIAL_NAMES: &[&str] = &[
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "API_KEY",
    "APIKEY",
    "PRIVATE_KEY",
    "CREDENTIAL",
    "ACCESS_KEY",
];

/// A warning for each program `env` value that looks like a credential
/// (by its variable's name) and is written in the batch: it would be stored
/// with the batch and sent to the worker. `${secret.NAME}` keeps it on the
/// workers. At most `MAX_WARNINGS`.
fn credential_warnings(planned_ops: &[PlannedOp]) -> Vec<String> {
    let mut warnings = Vec::new();
    for op in planned_ops {
        if !volley_kinds::HOST_PROGRAM_KINDS.contains(&op.kind.as_str()) {
            continue;
        }
        let Some(env) = op.args.get("env").and_then(Value::as_object) else {
            continue;
        };
        for (name, value) in env {
            let upper = name.to_ascii_uppercase();
            let literal = value
                .as_str()
                .is_some_and(|text| !text.is_empty() && !text.contains("${"));
            if literal
                && CREDENTIAL_NAMES
                    .iter()
                    .any(|credential| upper.contains(credential))
            {
                if warnings.len() == MAX_WARNINGS {
                    return warnings;
                }
                warnings.push(format!(
                    "op `{}`: env `{name}` looks like a credential written into the batch (stored with it, sent to the worker): pass it as `${{secret.{name}}}`, which the worker fills from --secret-dir or VOLLEY_SECRET_{name}",
                    op.id
                ));
            }
        }
    }
    warnings
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use serde_json::json;

    use super::*;

    fn op(id: &str, kind: &str, args: Value) -> Op {
        Op {
            id: id.into(),
            kind: kind.into(),
            args_json: args.to_string(),
            ..Default::default()
        }
    }

    fn after(mut op: Op, after: &[&str]) -> Op {
        op.after = after.iter().map(|id| id.to_string()).collect();
        op
    }

    fn batch(ops: Vec<Op>) -> Batch {
        Batch {
            name: "test".into(),
            ops,
            ..Default::default()
        }
    }

    fn known(kind: &str) -> bool {
        BUILTIN_KINDS.contains(&kind) || kind == "agent"
    }

    fn plan_of(batch: &Batch) -> Result<Plan, Vec<Problem>> {
        plan(batch, &known, &Limits::default())
    }

    fn problems_of(batch: &Batch) -> Vec<Problem> {
        match plan_of(batch) {
            Ok(_) => panic!("expected problems"),
            Err(problems) => problems,
        }
    }

    /// The only problem, checked to name `op_id` and `field`.
    fn only_problem(batch: &Batch, op_id: &str, field: &str) -> Problem {
        let problems = problems_of(batch);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(problems[0].op_id, op_id, "{problems:#?}");
        assert_eq!(problems[0].field, field, "{problems:#?}");
        problems[0].clone()
    }

    fn noop(id: &str) -> Op {
        op(id, "noop", json!({}))
    }

    #[test]
    fn strict_turns_an_allowed_unwritten_wait_back_into_an_error() {
        let mut waiter = op("waiter", "echo", json!({"text": "x"}));
        waiter.wait_for = vec!["nobody/writes".into()];
        let mut lenient = batch(vec![waiter]);
        lenient.allow_unwritten = true;
        let plan = plan_of(&lenient).unwrap();
        assert_eq!(plan.warnings.len(), 1);
        assert!(plan.warnings[0].contains("nobody/writes"));
        lenient.strict = true;
        let problem = only_problem(&lenient, "waiter", "wait_for");
        assert!(problem.message.contains("nobody/writes"), "{problem:?}");
        assert!(problem.message.ends_with("(strict)"), "{problem:?}");
    }

    #[test]
    fn a_misspelt_key_is_an_error_naming_op_field_and_the_close_key() {
        let mut writer = op("writer", "echo", json!({"text": "x"}));
        writer.store_as = "results/summary".into();
        let mut waiter = op("waiter", "echo", json!({"text": "x"}));
        waiter.wait_for = vec!["results/sumary".into()];
        let problem = only_problem(&batch(vec![writer.clone(), waiter]), "waiter", "wait_for");
        assert_eq!(
            problem.message,
            "waits for memory key `results/sumary`, which no op of this batch writes, so it would wait forever; did you mean `results/summary`? (if an op's program writes it, an agent's `volley memory put`, declare that on the op: `writes: [memory:results/sumary]`; if a client writes it, submit with --allow-unwritten or `allow_unwritten: true`)"
        );

        // A `${memory.K}` reference is named by its place in the args.
        let reader = op(
            "reader",
            "shell",
            json!({"cmd": "true", "env": {"SUMMARY": "${memory.results/summray}"}}),
        );
        let problem = only_problem(
            &batch(vec![writer.clone(), reader]),
            "reader",
            "args.env.SUMMARY",
        );
        assert!(
            problem.message.contains("`results/summray`")
                && problem.message.contains("did you mean `results/summary`?"),
            "{problem:?}"
        );

        // Nothing close: no suggestion.
        let mut far = op("far", "echo", json!({"text": "x"}));
        far.wait_for = vec!["something/else".into()];
        let problem = only_problem(&batch(vec![writer, far]), "far", "wait_for");
        assert!(!problem.message.contains("did you mean"), "{problem:?}");
    }

    #[test]
    fn every_unwritten_wait_is_reported_at_once_with_other_problems() {
        let mut first = op("first", "echo", json!({"text": "${memory.a}"}));
        first.wait_for = vec!["b".into()];
        let bad_kind = op("second", "no-such-kind", json!({}));
        let problems = problems_of(&batch(vec![first, bad_kind]));
        let fields: Vec<(&str, &str)> = problems
            .iter()
            .map(|problem| (problem.op_id.as_str(), problem.field.as_str()))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("first", "args.text"),
                ("first", "wait_for"),
                ("second", "kind")
            ],
            "{problems:#?}"
        );
    }

    #[test]
    fn allow_unwritten_keeps_an_unwritten_wait_a_warning_with_its_suggestion() {
        let mut writer = op("writer", "echo", json!({"text": "x"}));
        writer.store_as = "config".into();
        let mut waiter = op("waiter", "echo", json!({"text": "${memory.confg}"}));
        waiter.wait_for_any = vec!["approval/yes".into(), "approval/no".into()];
        let mut allowed = batch(vec![writer, waiter]);
        allowed.allow_unwritten = true;
        let plan = plan_of(&allowed).unwrap();
        assert_eq!(plan.warnings.len(), 2, "{:?}", plan.warnings);
        assert!(
            plan.warnings[0].contains("`confg`")
                && plan.warnings[0].contains("did you mean `config`?"),
            "{:?}",
            plan.warnings
        );
        assert!(
            plan.warnings[1].contains("any of memory keys `approval/yes`, `approval/no`"),
            "{:?}",
            plan.warnings
        );
        // The plan hands the waits over by op, `wait_for` keys first.
        assert_eq!(
            plan.unwritten_waits,
            vec![(
                1,
                vec![
                    "confg".to_owned(),
                    "approval/yes".to_owned(),
                    "approval/no".to_owned()
                ]
            )]
        );
        allowed.allow_unwritten = false;
        let problems = problems_of(&allowed);
        let fields: Vec<&str> = problems
            .iter()
            .map(|problem| problem.field.as_str())
            .collect();
        assert_eq!(fields, vec!["args.text", "wait_for_any"], "{problems:#?}");
    }

    #[test]
    fn keys_already_present_count_as_written_and_accepted_ops_are_not_judged() {
        let mut old = op("old", "echo", json!({"text": "x"}));
        old.wait_for = vec!["from/client".into()];
        let mut new = op("new", "echo", json!({"text": "${memory.exists}"}));
        new.wait_for = vec!["missing".into()];
        let grown = batch(vec![old, new]);
        let check = LivenessCheck {
            checked_from: 1,
            present_keys: ["exists".to_owned()].into(),
        };
        let problems = plan_with(&grown, &known, &Limits::default(), &check).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(
            (problems[0].op_id.as_str(), problems[0].field.as_str()),
            ("new", "wait_for")
        );
        let replanned = plan_with(
            &grown,
            &known,
            &Limits::default(),
            &LivenessCheck::accepted(),
        )
        .unwrap();
        // Accepted ops' waits were handed over when they were first planned.
        assert!(replanned.unwritten_waits.is_empty());
    }

    #[test]
    fn two_ops_waiting_for_each_other_through_keys_are_a_cycle() {
        let mut first = op("a", "echo", json!({"text": "x"}));
        first.store_as = "k1".into();
        first.wait_for = vec!["k2".into()];
        let mut second = op("b", "echo", json!({"text": "${memory.k1}"}));
        second.store_as = "k2".into();
        let problem = only_problem(&batch(vec![first, second]), "a", "wait_for");
        assert_eq!(
            problem.message,
            "ops wait for each other through memory keys, so none of them would ever run: `a` waits for `k2` (written by `b`), `b` waits for `k1` (written by `a`)"
        );
    }

    #[test]
    fn an_op_waiting_for_a_key_only_it_writes_is_refused() {
        let mut counter = op("counter", "echo", json!({"text": "${memory.count}"}));
        counter.store_as = "count".into();
        let problem = only_problem(&batch(vec![counter.clone()]), "counter", "args.text");
        assert!(
            problem.message.contains("only this op writes"),
            "{problem:?}"
        );
        // Another writer can start it.
        let mut seed = noop("seed");
        seed.store_as = "count".into();
        let mut ordered = batch(vec![seed, after(counter, &["seed"])]);
        ordered.hazards = Hazards::Order as i32;
        assert!(plan_of(&ordered).is_ok());
    }

    #[test]
    fn a_cycle_through_after_is_named_with_its_keys_and_edges() {
        // `a` waits for `k`, written by `c`, which runs after `b`, which
        // runs after `a`.
        let mut first = op("a", "echo", json!({"text": "x"}));
        first.wait_for = vec!["k".into()];
        let second = after(noop("b"), &["a"]);
        let mut third = after(noop("c"), &["b"]);
        third.store_as = "k".into();
        let unrelated = noop("d");
        let problem = only_problem(
            &batch(vec![first, second, third, unrelated]),
            "a",
            "wait_for",
        );
        assert_eq!(
            problem.message,
            "ops wait for each other through memory keys and `after`, so none of them would ever run: `a` waits for `k` (written by `c`), `c` runs after `b`, `b` runs after `a`"
        );
    }

    #[test]
    fn a_key_with_a_writer_outside_the_loop_is_no_cycle() {
        // `a` and `b` would be a cycle through `k2`, but `seed` writes `k2`
        // too and waits for nothing: it unblocks `a`, which unblocks `b`.
        let mut first = op("a", "echo", json!({"text": "x"}));
        first.store_as = "k1".into();
        first.wait_for = vec!["k2".into()];
        let mut second = op("b", "echo", json!({"text": "x"}));
        second.store_as = "k2".into();
        second.wait_for = vec!["k1".into()];
        let mut seed = op("seed", "memory.put", json!({"key": "k2", "value": "v"}));
        seed.after = vec![];
        let mut ordered = batch(vec![first.clone(), second.clone(), seed]);
        ordered.hazards = Hazards::Allow as i32;
        assert!(plan_of(&ordered).is_ok(), "{:?}", plan_of(&ordered).err());

        // With every writer of `k2` inside the loop, it is one.
        let mut third = op("c", "echo", json!({"text": "x"}));
        third.store_as = "k2".into();
        third.wait_for = vec!["k1".into()];
        let mut stuck = batch(vec![first, second, third]);
        stuck.hazards = Hazards::Allow as i32;
        let problems = problems_of(&stuck);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0]
                .message
                .contains("written by `b`, `c`, each waiting too")
                || problems[0]
                    .message
                    .contains("written by `c`, `b`, each waiting too"),
            "{problems:#?}"
        );
    }

    #[test]
    fn wait_for_any_blocks_in_a_cycle_only_when_every_key_of_it_does() {
        // `a` waits for any of `k2` (written by `b`, which waits for `a`)
        // and `free` (written by `w`, which waits for nothing).
        let mut first = op("a", "echo", json!({"text": "x"}));
        first.store_as = "k1".into();
        first.wait_for_any = vec!["k2".into(), "free".into()];
        let mut second = op("b", "echo", json!({"text": "x"}));
        second.store_as = "k2".into();
        second.wait_for = vec!["k1".into()];
        let mut free_writer = noop("w");
        free_writer.store_as = "free".into();
        assert!(plan_of(&batch(vec![first.clone(), second.clone(), free_writer])).is_ok());

        let mut blocked_writer = noop("w");
        blocked_writer.store_as = "free".into();
        blocked_writer.wait_for = vec!["k1".into()];
        let problems = problems_of(&batch(vec![first, second, blocked_writer]));
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(
            (problems[0].op_id.as_str(), problems[0].field.as_str()),
            ("a", "wait_for_any")
        );
        assert!(
            problems[0]
                .message
                .contains("`a` waits for any of `k2`, `free`, and `"),
            "{problems:#?}"
        );
    }

    #[test]
    fn every_cycle_is_reported_at_once_up_to_a_bound() {
        let mut ops = Vec::new();
        for pair in 0..(MAX_CYCLES + 5) {
            let mut first = noop(&format!("a{pair}"));
            first.store_as = format!("x{pair}");
            first.wait_for = vec![format!("y{pair}")];
            let mut second = noop(&format!("b{pair}"));
            second.store_as = format!("y{pair}");
            second.wait_for = vec![format!("x{pair}")];
            ops.extend([first, second]);
        }
        let problems = problems_of(&batch(ops));
        assert_eq!(problems.len(), MAX_CYCLES + 1, "{problems:#?}");
        assert_eq!(problems[0].field, "ops");
        assert!(
            problems[0].message.contains("5 more cycles"),
            "{problems:?}"
        );
        assert_eq!(problems[1].op_id, "a0");
    }

    #[test]
    fn many_waiters_of_a_key_with_many_stuck_writers_cost_their_sum_not_product() {
        // 20,000 writers of `k`, all waiting for `j`, whose one writer
        // waits for `k`; 20,000 more ops wait for `k`. A waiter × writer
        // edge each would be 8 × 10^8 edges.
        let count = 20_000;
        let mut ops: Vec<Op> = Vec::with_capacity(2 * count + 1);
        for index in 0..count {
            let mut writer = noop(&format!("w{index}"));
            writer.store_as = "k".into();
            writer.wait_for = vec!["j".into()];
            ops.push(writer);
            let mut waiter = noop(&format!("r{index}"));
            waiter.wait_for = vec!["k".into()];
            ops.push(waiter);
        }
        let mut hinge = noop("hinge");
        hinge.store_as = "j".into();
        hinge.wait_for = vec!["k".into()];
        ops.push(hinge);
        let mut racy = batch(ops);
        racy.hazards = Hazards::Allow as i32;
        let problems = problems_of(&racy);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0]
                .message
                .contains("`w0`, `w1`, `w2`, 19997 more, each waiting too"),
            "{problems:?}"
        );
    }

    #[test]
    fn long_misspelt_keys_stay_cheap_to_suggest_for() {
        // 3,000 writers and 3,000 waiters of 500-byte keys that differ only
        // at the end: every comparison would fill a 500 × 500 table.
        let stem = "k".repeat(494);
        let mut ops: Vec<Op> = Vec::new();
        for index in 0..3_000 {
            let mut writer = noop(&format!("w{index}"));
            writer.store_as = format!("{stem}{index:06}");
            ops.push(writer);
            let mut waiter = noop(&format!("r{index}"));
            waiter.wait_for = vec![format!("{stem}x{index:05}")];
            ops.push(waiter);
        }
        let problems = problems_of(&batch(ops));
        assert_eq!(problems.len(), 3_000);
        assert!(
            problems[0].message.contains("did you mean"),
            "the first ones still get a suggestion: {}",
            problems[0].message
        );
    }

    #[test]
    fn a_shared_namespace_keeps_unwritten_waits_and_key_loops_unjudged() {
        let mut first = op("a", "echo", json!({"text": "x"}));
        first.store_as = "k1".into();
        first.wait_for = vec!["k2".into(), "from/elsewhere".into()];
        let mut second = op("b", "echo", json!({"text": "x"}));
        second.store_as = "k2".into();
        second.wait_for = vec!["k1".into()];
        let mut shared = batch(vec![first, second]);
        shared.namespace = "team".into();
        let plan = plan_of(&shared).unwrap();
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
        assert!(plan.unwritten_waits.is_empty());
    }

    #[test]
    fn secrets_only_reach_programs_and_literal_credentials_are_warned_about() {
        let batch = Batch {
            name: "b".into(),
            ops: vec![
                op(
                    "ok",
                    "shell",
                    json!({"cmd": "echo ${secret.A}", "env": {"K": "${secret.B}"}}),
                ),
                op("bad", "echo", json!({"text": "${secret.A}"})),
                op(
                    "partial",
                    "shell",
                    json!({"cmd": "true", "env": {"K": "x ${secret.A}"}}),
                ),
            ],
            ..Batch::default()
        };
        let problems = plan(&batch, &|_| true, &Limits::default()).unwrap_err();
        let fields: Vec<(&str, &str)> = problems
            .iter()
            .map(|problem| (problem.op_id.as_str(), problem.field.as_str()))
            .collect();
        assert_eq!(
            fields,
            vec![("bad", "args.text"), ("partial", "args.env.K")]
        );
        let batch = Batch {
            name: "b".into(),
            ops: vec![op(
                "ok",
                "shell",
                json!({"cmd": "echo ${secret.A}", "env": {"K": "${secret.B}"}}),
            )],
            ..Batch::default()
        };
        let planned = plan(&batch, &|_| true, &Limits::default()).unwrap();
        let requires: Vec<(&str, &str)> = planned.ops[0]
            .requires
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        assert_eq!(requires, vec![("secret.A", "1"), ("secret.B", "1")]);
        let batch = Batch {
            name: "b".into(),
            ops: vec![op(
                "leaky",
                "shell",
                json!({"cmd": "deploy", "env": {"API_TOKEN": "abc123", "MODE": "fast"}}),
            )],
            ..Batch::default()
        };
        let planned = plan(&batch, &|_| true, &Limits::default()).unwrap();
        assert_eq!(planned.warnings.len(), 1, "{:?}", planned.warnings);
        assert!(planned.warnings[0].contains("${secret.API_TOKEN}"));
    }

    #[test]
    fn memory_keys_have_a_length_cap() {
        assert!(check_memory_key(&"k".repeat(MAX_MEMORY_KEY_BYTES)).is_ok());
        let error = check_memory_key(&"k".repeat(1024 * 1024)).unwrap_err();
        assert_eq!(error, "memory key of 1048576 bytes: at most 512");
    }

    #[test]
    fn waits_in_a_shared_namespace_are_not_warned_about() {
        let mut waiter = op("waiter", "echo", json!({"text": "x"}));
        waiter.wait_for = vec!["from/another/batch".into()];
        let mut shared = batch(vec![waiter]);
        shared.namespace = "team".into();
        shared.strict = true;
        let plan = plan_of(&shared).unwrap();
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
        assert_eq!(plan.namespace.as_deref(), Some("team"));
    }

    #[test]
    fn a_bad_namespace_is_named() {
        let mut bad = batch(vec![noop("a")]);
        bad.namespace = "has space".into();
        let problems = problems_of(&bad);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            (problems[0].op_id.as_str(), problems[0].field.as_str()),
            ("", "namespace")
        );
    }

    #[test]
    fn wait_for_any_keys_are_checked_deduplicated_and_warned_only_when_none_is_written() {
        let mut bad = op("a", "echo", json!({"text": "x"}));
        bad.wait_for_any = vec!["ok".into(), "not ok".into()];
        let mut ok_writer = noop("w");
        ok_writer.store_as = "ok".into();
        only_problem(&batch(vec![bad, ok_writer]), "a", "wait_for_any");

        let mut writer = op("w", "echo", json!({"text": "x"}));
        writer.store_as = "k1".into();
        let mut waiter = op("any", "echo", json!({"text": "x"}));
        waiter.wait_for_any = vec!["k1".into(), "k2".into(), "k1".into()];
        waiter.wait_timeout_ms = 0;
        let mut both = batch(vec![writer, waiter]);
        both.wait_timeout_ms = 5_000;
        let plan = plan_of(&both).unwrap();
        assert_eq!(
            *plan.ops[1].wait_for_any,
            ["k1".to_owned(), "k2".to_owned()]
        );
        assert!(
            plan.warnings.is_empty(),
            "k1 is written: {:?}",
            plan.warnings
        );
        assert_eq!(
            plan.ops[1].wait_timeout_ms, 5_000,
            "the batch's wait_timeout is the default"
        );
        assert_eq!(*plan.ops[1].wait_writers, [0]);
    }

    #[test]
    fn declared_memory_writes_count_as_writers_and_can_race() {
        let mut agent = op("agent", "agent", json!({"cmd": "volley memory put k v"}));
        agent.writes = vec!["memory:k".into()];
        let mut waiter = op("waiter", "echo", json!({"text": "x"}));
        waiter.wait_for = vec!["k".into()];
        let plan = plan_of(&batch(vec![agent.clone(), waiter])).unwrap();
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
        assert_eq!(*plan.ops[0].memory_writes, ["k".to_owned()]);
        assert_eq!(*plan.ops[1].wait_writers, [0]);

        let mut other = op("other", "agent", json!({"cmd": "volley memory put k w"}));
        other.writes = vec!["memory:k".into()];
        let problem = only_problem(&batch(vec![agent.clone(), other]), "other", "writes");
        assert!(
            problem.message.contains("`agent`") && problem.message.contains('k'),
            "{problem:?}"
        );

        let mut bad = agent;
        bad.writes = vec!["memory:has space".into()];
        only_problem(&batch(vec![bad]), "agent", "writes");
    }

    #[test]
    fn retry_policies_are_read_and_bad_ones_named() {
        let mut flaky = op("flaky", "echo", json!({"text": "x"}));
        flaky.attempts = 3;
        flaky.retry_on = vec![RetryOn::LostWorker as i32];
        flaky.backoff = Some(volley_proto::v1::Backoff {
            initial_ms: 100,
            max_ms: 1000,
            multiplier: 3.0,
            no_jitter: true,
        });
        let mut timed = batch(vec![flaky.clone()]);
        timed.deadline_ms = 60_000;
        let plan = plan_of(&timed).unwrap();
        let retry = plan.ops[0].retry();
        assert!(!retry.on_failure && !retry.on_timeout && retry.on_lost_worker);
        assert_eq!(
            (
                retry.backoff_initial_ms,
                retry.backoff_max_ms,
                retry.backoff_multiplier,
                retry.backoff_jitter
            ),
            (100, 1000, 3.0, false)
        );
        assert_eq!(plan.deadline_ms, 60_000);
        assert!(plan_of(&batch(vec![noop("plain")])).unwrap().ops[0].retry() == &Retry::default());

        let mut bad = flaky.clone();
        bad.retry_on = vec![42];
        only_problem(&batch(vec![bad]), "flaky", "retry_on");
        let mut bad = flaky.clone();
        bad.backoff = Some(volley_proto::v1::Backoff {
            initial_ms: 500,
            max_ms: 100,
            multiplier: 0.0,
            no_jitter: false,
        });
        only_problem(&batch(vec![bad]), "flaky", "backoff.max");
        let mut bad = flaky;
        bad.backoff = Some(volley_proto::v1::Backoff {
            initial_ms: 5,
            max_ms: 0,
            multiplier: 0.5,
            no_jitter: false,
        });
        only_problem(&batch(vec![bad]), "flaky", "backoff.multiplier");
    }

    #[test]
    fn critical_path_follows_memory_waits_on_the_batch_own_writers() {
        let mut slow = op("slow", "echo", json!({"text": "x"}));
        slow.store_as = "k".into();
        let mut fast = op("fast", "echo", json!({"text": "y"}));
        fast.store_as = "j".into();
        let mut waiter = op("waiter", "echo", json!({"text": "${memory.k}"}));
        waiter.wait_for = vec!["j".into()];
        let plan = plan_of(&batch(vec![slow, fast, waiter])).unwrap();
        assert_eq!(*plan.ops[2].wait_writers, [0, 1]);
        assert!(plan.ops[2].deps.is_empty(), "waits are not dispatch edges");
        let (path, total) = plan.critical_path(&[300, 10, 5]);
        assert_eq!(path, vec![0, 2]);
        assert_eq!(total, 305);
    }

    fn write(id: &str, path: &str) -> Op {
        op(id, "write", json!({"path": path, "content": "x"}))
    }

    fn read(id: &str, path: &str) -> Op {
        op(id, "read", json!({"path": path}))
    }

    #[test]
    fn a_bad_grep_pattern_is_refused_naming_op_field_and_reason() {
        let ops = vec![
            op("g", "grep", json!({"pattern": "(unclosed", "path": "src"})),
            op(
                "ok",
                "grep",
                json!({"pattern": "fn [a-z]+\\(", "path": "src"}),
            ),
            op(
                "t",
                "grep",
                json!({"pattern": "${ops.ok.output}(", "path": "src"}),
            ),
        ];
        let problem = only_problem(&batch(ops), "g", "args.pattern");
        assert_eq!(problem.message, "invalid regex `(unclosed`: unclosed group");
    }

    #[test]
    fn paths_climbing_above_any_root_are_refused_and_the_run_root_bounds_absolute_ones() {
        let ops = vec![
            op("r", "read", json!({"path": "../secrets.txt"})),
            op("ok", "read", json!({"path": "a/../b.txt"})),
            op("sh", "shell", json!({"cmd": "ls", "cwd": "../elsewhere"})),
        ];
        let problem = only_problem(&batch(ops.clone()), "r", "args.path");
        assert!(
            problem
                .message
                .starts_with("`../secrets.txt` climbs above the worker's root"),
            "{problem:?}"
        );
        let mut with_absolute = ops;
        with_absolute.push(op("abs", "write", json!({"path": "/etc/x", "content": ""})));
        with_absolute.push(op(
            "in",
            "write",
            json!({"path": "/work/root/x", "content": ""}),
        ));
        let outside = paths_outside_root(&batch(with_absolute), std::path::Path::new("/work/root"));
        let named: Vec<(&str, &str)> = outside
            .iter()
            .map(|problem| (problem.op_id.as_str(), problem.field.as_str()))
            .collect();
        assert_eq!(
            named,
            [("r", "args.path"), ("sh", "args.cwd"), ("abs", "args.path")]
        );
        assert_eq!(
            outside[2].message,
            "`/etc/x` is outside the root /work/root: paths resolve against it; give a path inside it, or choose the root with `volley run --root DIR`"
        );
    }

    #[test]
    fn no_ops() {
        let problem = only_problem(&batch(vec![]), "", "ops");
        assert!(problem.message.contains("no ops"));
    }

    #[test]
    fn too_many_ops() {
        let limits = Limits {
            max_ops: 2,
            ..Limits::default()
        };
        let problems = plan(
            &batch(vec![noop("a"), noop("b"), noop("c")]),
            &known,
            &limits,
        )
        .unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(
            (problems[0].op_id.as_str(), problems[0].field.as_str()),
            ("", "ops")
        );
        assert!(
            problems[0].message.contains('3') && problems[0].message.contains('2'),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn bad_id_syntax() {
        only_problem(&batch(vec![noop("has space")]), "has space", "id");
        only_problem(&batch(vec![noop(&"x".repeat(129))]), &"x".repeat(129), "id");
        only_problem(&batch(vec![noop("")]), "", "id");
    }

    #[test]
    fn bad_group_syntax() {
        let grouped = |group: &str| Op {
            group: group.into(),
            ..noop("a")
        };
        for bad in [
            "has space",
            "a/b",
            "$(touch pwned)",
            "new\nline",
            &"g".repeat(129),
        ] {
            let problem = only_problem(&batch(vec![grouped(bad)]), "a", "group");
            assert!(problem.message.contains("foreach"), "{}", problem.message);
        }
        // A good group, and none at all, plan.
        plan_of(&batch(vec![grouped("test-suite.v2"), noop("b")])).expect("a good group plans");
    }

    #[test]
    fn duplicate_id_names_both_positions() {
        let problem = only_problem(&batch(vec![noop("a"), noop("b"), noop("a")]), "a", "id");
        assert!(
            problem.message.contains("also op #1") && problem.message.contains("op #3"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn empty_kind() {
        let problem = only_problem(&batch(vec![op("a", "", json!({}))]), "a", "kind");
        assert!(problem.message.contains("echo"), "{}", problem.message);
    }

    #[test]
    fn unknown_kind() {
        let problem = only_problem(&batch(vec![op("a", "shel", json!({}))]), "a", "kind");
        assert!(
            problem.message.contains("`shel`") && problem.message.contains("shell"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn args_not_an_object() {
        only_problem(&batch(vec![op("a", "agent", json!([1, 2]))]), "a", "args");
        let mut broken = noop("b");
        broken.args_json = "{not json".into();
        only_problem(&batch(vec![broken]), "b", "args");
    }

    #[test]
    fn args_too_large() {
        let limits = Limits {
            max_arg_bytes: 10,
            ..Limits::default()
        };
        let problems = plan(
            &batch(vec![op("a", "echo", json!({"text": "a long text"}))]),
            &known,
            &limits,
        )
        .unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(
            (problems[0].op_id.as_str(), problems[0].field.as_str()),
            ("a", "args")
        );
    }

    #[test]
    fn builtin_args_name_the_field() {
        let problem = only_problem(
            &batch(vec![op("a", "echo", json!({"txt": "hi"}))]),
            "a",
            "args.txt",
        );
        assert!(
            problem.message.contains("unknown field"),
            "{}",
            problem.message
        );
        let problem = only_problem(&batch(vec![op("a", "echo", json!({}))]), "a", "args.text");
        assert_eq!(problem.message, "missing field `text`");
    }

    #[test]
    fn after_unknown_op_suggests_a_close_id() {
        let ops = vec![noop("build"), after(noop("test"), &["biuld"])];
        let problem = only_problem(&batch(ops), "test", "after");
        assert!(problem.message.contains("`biuld`"), "{}", problem.message);
        assert!(
            problem.message.contains("did you mean `build`"),
            "{}",
            problem.message
        );
        let problem = only_problem(&batch(vec![after(noop("a"), &["zzzzzz"])]), "a", "after");
        assert!(
            !problem.message.contains("did you mean"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn after_itself() {
        let problem = only_problem(&batch(vec![after(noop("a"), &["a"])]), "a", "after");
        assert!(problem.message.contains("itself"));
    }

    #[test]
    fn malformed_template() {
        let problem = only_problem(
            &batch(vec![op("a", "shell", json!({"cmd": "echo ${ops.x}"}))]),
            "a",
            "args.cmd",
        );
        assert!(problem.message.contains("${ops.x}"), "{}", problem.message);
    }

    #[test]
    fn template_refers_to_missing_op() {
        let ops = vec![
            noop("lint"),
            op("a", "shell", json!({"cmd": "echo ${ops.lnt.output}"})),
        ];
        let problem = only_problem(&batch(ops), "a", "args.cmd");
        assert!(
            problem.message.contains("`lnt`") && problem.message.contains("`lint`"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn cycle_lists_its_ops_in_order() {
        let ops = vec![
            after(noop("a"), &["c"]),
            after(noop("b"), &["a"]),
            after(noop("c"), &["b"]),
            after(noop("d"), &["a"]),
            after(noop("x"), &["y"]),
            after(noop("y"), &["x"]),
        ];
        let problems = problems_of(&batch(ops));
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert_eq!(
            (problems[0].op_id.as_str(), problems[0].field.as_str()),
            ("a", "after")
        );
        assert!(
            problems[0].message.starts_with("cycle: a -> b -> c -> a"),
            "{}",
            problems[0].message
        );
        assert_eq!(problems[1].op_id, "x");
        assert!(
            problems[1].message.starts_with("cycle: x -> y -> x"),
            "{}",
            problems[1].message
        );
    }

    #[test]
    fn cycle_through_a_template() {
        let ops = vec![
            op("a", "echo", json!({"text": "${ops.b.output}"})),
            after(noop("b"), &["a"]),
        ];
        let problem = only_problem(&batch(ops), "a", "after");
        assert!(
            problem.message.starts_with("cycle: a -> b -> a"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn bad_store_as() {
        let mut bad = noop("a");
        bad.store_as = "has space".into();
        only_problem(&batch(vec![bad]), "a", "store_as");
    }

    #[test]
    fn bad_wait_for() {
        let mut bad = noop("a");
        bad.wait_for = vec!["".into()];
        only_problem(&batch(vec![bad]), "a", "wait_for");
    }

    #[test]
    fn too_many_attempts() {
        let mut bad = noop("a");
        bad.attempts = 101;
        let problem = only_problem(&batch(vec![bad]), "a", "attempts");
        assert!(problem.message.contains("101"));
    }

    #[test]
    fn bad_declared_glob() {
        let mut bad = noop("a");
        bad.reads = vec!["src/[".into()];
        only_problem(&batch(vec![bad]), "a", "reads");
    }

    #[test]
    fn hazard_two_writers() {
        let problem = only_problem(
            &batch(vec![write("w1", "out.txt"), write("w2", "./out.txt")]),
            "w2",
            "writes",
        );
        assert!(
            problem.message.contains("`w1`") && problem.message.contains("`out.txt`"),
            "{}",
            problem.message
        );
        assert!(
            problem.message.contains("both write it"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn hazard_reader_and_writer() {
        let problem = only_problem(
            &batch(vec![write("w", "a/b.txt"), read("r", "a/../a/b.txt")]),
            "r",
            "reads",
        );
        assert!(
            problem.message.contains("`w`") && problem.message.contains("`a/b.txt`"),
            "{}",
            problem.message
        );
        // The later op is the writer: the problem is on it, field `writes`.
        only_problem(&batch(vec![read("r", "x"), write("w", "x")]), "w", "writes");
    }

    #[test]
    fn hazard_glob_read_matches_written_path() {
        let ops = vec![
            write("w", "src/a.rs"),
            op("g", "glob", json!({"pattern": "src/*.rs"})),
        ];
        let problem = only_problem(&batch(ops), "g", "reads");
        assert!(
            problem.message.contains("`src/a.rs`") && problem.message.contains("src/*.rs"),
            "{}",
            problem.message
        );
        let ops = vec![
            write("w", "docs/a.md"),
            op("g", "glob", json!({"pattern": "src/*.rs"})),
        ];
        assert!(plan_of(&batch(ops)).is_ok());
    }

    #[test]
    fn hazard_declared_writes() {
        let mut build = op("build", "shell", json!({"cmd": "make"}));
        build.writes = vec!["target/out".into()];
        let mut ship = op("ship", "shell", json!({"cmd": "cp target/out /"}));
        ship.reads = vec!["target/*".into()];
        only_problem(&batch(vec![build, ship]), "ship", "reads");
    }

    #[test]
    fn hazard_memory_writers_race_but_waiters_do_not() {
        let mut first = noop("first");
        first.store_as = "k".into();
        let second = op("second", "memory.put", json!({"key": "k", "value": "v"}));
        let problem = only_problem(&batch(vec![first.clone(), second]), "second", "writes");
        assert!(
            problem.message.contains("memory key `k`") && problem.message.contains("`first`"),
            "{}",
            problem.message
        );
        let mut waiter = noop("waiter");
        waiter.wait_for = vec!["k".into()];
        let templated = op("templated", "echo", json!({"text": "${memory.k}"}));
        assert!(plan_of(&batch(vec![first, waiter, templated])).is_ok());
    }

    #[test]
    fn reading_a_key_waited_for_does_not_race() {
        let mut writer = noop("writer");
        writer.store_as = "k".into();
        let mut reader = op("reader", "memory.get", json!({"key": "k"}));
        assert!(plan_of(&batch(vec![writer.clone(), reader.clone()])).is_err());
        reader.wait_for = vec!["k".into()];
        assert!(plan_of(&batch(vec![writer, reader])).is_ok());
    }

    #[test]
    fn hazards_order_chains_many_writers_in_linear_time() {
        let op_count = 20_000;
        let ops: Vec<Op> = (0..op_count)
            .map(|index| {
                op(
                    &format!("w{index}"),
                    "write",
                    json!({"path": "log.txt", "content": "x", "append": true}),
                )
            })
            .collect();
        let mut ordered = batch(ops);
        ordered.hazards = Hazards::Order as i32;
        let plan = plan_of(&ordered).unwrap();
        assert!(plan.ops[0].deps.is_empty());
        for (index, planned) in plan.ops.iter().enumerate().skip(1) {
            assert_eq!(*planned.deps, [index as u32 - 1]);
        }
        ordered.hazards = Hazards::Reject as i32;
        assert_eq!(problems_of(&ordered).len(), op_count - 1);
    }

    #[test]
    fn ordered_ops_do_not_race() {
        let ops = vec![
            write("w", "x"),
            noop("mid"),
            after(read("r", "x"), &["mid"]),
            after(noop("end"), &["r"]),
        ];
        let ops = {
            let mut ops = ops;
            ops[1].after = vec!["w".into()];
            ops
        };
        assert!(plan_of(&batch(ops)).is_ok());
    }

    #[test]
    fn hazards_order_adds_edges_in_file_order() {
        let mut order = batch(vec![
            write("w1", "x"),
            read("r1", "x"),
            read("r2", "x"),
            write("w2", "x"),
        ]);
        order.hazards = Hazards::Order as i32;
        let plan = plan_of(&order).unwrap();
        assert_eq!(plan.hazards, HazardPolicy::Order);
        let deps: Vec<&[u32]> = plan.ops.iter().map(|op| &*op.deps).collect();
        // Readers stay parallel between the two writers.
        assert_eq!(deps, vec![&[][..], &[0], &[0], &[1, 2]]);
        assert_eq!(*plan.ops[0].dependents, [1, 2]);
    }

    #[test]
    fn hazards_allow_adds_nothing() {
        let mut allow = batch(vec![write("w1", "x"), write("w2", "x")]);
        allow.hazards = Hazards::Allow as i32;
        let plan = plan_of(&allow).unwrap();
        assert!(plan.ops.iter().all(|op| op.deps.is_empty()));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut many_attempts = noop("c");
        many_attempts.attempts = 1000;
        let ops = vec![
            op("a", "nope", json!({})),
            after(noop("b"), &["missing"]),
            many_attempts,
            noop("a"),
            op("e", "echo", json!({})),
            write("w1", "f"),
            write("w2", "f"),
        ];
        let problems = problems_of(&batch(ops));
        let named: Vec<(&str, &str)> = problems
            .iter()
            .map(|problem| (problem.op_id.as_str(), problem.field.as_str()))
            .collect();
        assert_eq!(
            named,
            vec![
                ("a", "kind"),
                ("b", "after"),
                ("c", "attempts"),
                ("a", "id"),
                ("e", "args.text"),
                ("w2", "writes"),
            ]
        );
    }

    #[test]
    fn retry_failed_sequential_is_planned_and_refused_with_fail_fast() {
        let mut sequential = batch(vec![op("a", "noop", json!({}))]);
        sequential.retry_failed = RetryFailed::Sequential as i32;
        assert!(plan_of(&sequential).unwrap().retry_failed_sequential);
        assert!(
            !plan_of(&batch(vec![op("a", "noop", json!({}))]))
                .unwrap()
                .retry_failed_sequential
        );

        sequential.on_failure = OnFailure::FailFast as i32;
        let problems = plan_of(&sequential).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].field, "retry_failed");
        assert!(
            problems[0].message.contains("fail_fast"),
            "{}",
            problems[0].message
        );

        let mut unknown = batch(vec![op("a", "noop", json!({}))]);
        unknown.retry_failed = 9;
        let problems = plan_of(&unknown).unwrap_err();
        assert_eq!(problems[0].field, "retry_failed");
        assert!(problems[0].message.contains("unknown value 9"));
    }

    #[test]
    fn compiles_a_good_batch() {
        let mut lint = op("lint", "shell", json!({"cmd": "cargo clippy"}));
        lint.priority = Priority::High as i32;
        lint.attempts = 3;
        lint.timeout_ms = 600_000;
        lint.store_as = "swarm/lint".into();
        lint.requires = [("gpu".to_owned(), "true".to_owned())].into();
        let mut report = op(
            "report",
            "write",
            json!({"path": "r.md", "content": "${ops.lint.status} ${ops.lint.output} ${memory.swarm/lint} ${memory.other}"}),
        );
        report.after = vec!["lint".into(), "lint".into()];
        report.run_if = RunIf::Always as i32;
        report.wait_for = vec!["swarm/lint".into()];
        let mut empty_args = noop("empty");
        empty_args.args_json = String::new();
        let mut fail_fast = batch(vec![lint, report, empty_args]);
        fail_fast.on_failure = OnFailure::FailFast as i32;
        fail_fast.max_parallel = 4;
        // `other` comes from a client.
        fail_fast.allow_unwritten = true;

        let plan = plan_of(&fail_fast).unwrap();
        assert!(plan.fail_fast);
        assert_eq!(plan.max_parallel, 4);
        assert_eq!(plan.hazards, HazardPolicy::Reject);
        let [lint, report, empty] = &plan.ops[..] else {
            panic!("three ops")
        };
        assert_eq!(lint.priority, 1);
        assert_eq!(lint.max_attempts, 3);
        assert_eq!(lint.timeout_ms, 600_000);
        assert_eq!(lint.store_as.as_deref(), Some("swarm/lint"));
        assert_eq!(lint.requires.get("gpu").map(String::as_str), Some("true"));
        assert_eq!(*lint.dependents, [1]);
        assert!(!lint.has_templates && !lint.run_if_always);
        assert_eq!(*report.deps, [0]);
        assert!(report.has_templates && report.run_if_always);
        assert_eq!(
            *report.wait_for,
            ["swarm/lint".to_owned(), "other".to_owned()]
        );
        assert_eq!(report.priority, 2);
        assert_eq!(report.max_attempts, 1);
        assert_eq!(empty.args, json!({}));
        assert_eq!(empty.id.as_str(), "empty");
        assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
        assert!(
            plan.warnings[0].contains("`report`") && plan.warnings[0].contains("`other`"),
            "{:?}",
            plan.warnings
        );
    }

    #[test]
    fn edit_distance_is_bounded() {
        assert_eq!(bounded_edit_distance("build", "biuld", 2), Some(2));
        assert_eq!(bounded_edit_distance("build", "build", 2), Some(0));
        assert_eq!(bounded_edit_distance("build", "bild", 2), Some(1));
        assert_eq!(bounded_edit_distance("build", "xxxxx", 2), None);
    }

    #[test]
    fn a_long_chain_plans() {
        let op_count = 100_000;
        let ops: Vec<Op> = (0..op_count)
            .map(|index| {
                if index == 0 {
                    noop("op0")
                } else {
                    after(noop(&format!("op{index}")), &[&format!("op{}", index - 1)])
                }
            })
            .collect();
        let plan = plan_of(&batch(ops)).unwrap();
        let (path, _) = plan.critical_path(&vec![1; op_count]);
        assert_eq!(path.len(), op_count);
    }

    /// `cargo test -p volley-plan --release -- --ignored --nocapture`
    #[test]
    #[ignore = "timing; run in release"]
    fn a_million_noops_plan_fast() {
        let ops: Vec<Op> = (0..1_000_000)
            .map(|index| noop(&format!("op{index}")))
            .collect();
        let batch = batch(ops);
        let started = std::time::Instant::now();
        let plan = plan_of(&batch).unwrap();
        let elapsed = started.elapsed();
        assert_eq!(plan.ops.len(), 1_000_000);
        eprintln!("planned 1,000,000 noops in {elapsed:?}");
        assert!(elapsed < std::time::Duration::from_secs(2), "{elapsed:?}");
    }
}
