//! Graph algorithms over op indices — topological order, cycles,
//! reachability, critical path — all iterative, since a batch may hold a
//! million ops in one chain and recursion that deep would overflow the stack.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use crate::model::PlannedOp;

/// Dependency edges both ways: `deps[i]` run before `i`, `dependents[i]`
/// run after it.
pub(crate) struct Graph {
    pub(crate) deps: Vec<Vec<u32>>,
    pub(crate) dependents: Vec<Vec<u32>>,
}

impl Graph {
    /// Builds the reverse edges of `deps` (each list sorted, deduplicated).
    pub(crate) fn from_deps(deps: Vec<Vec<u32>>) -> Graph {
        let mut dependents: Vec<Vec<u32>> = vec![Vec::new(); deps.len()];
        // Visiting ops in index order pushes each dependents list already sorted.
        for (index, op_deps) in deps.iter().enumerate() {
            for &dep in op_deps {
                dependents[dep as usize].push(index as u32);
            }
        }
        Graph { deps, dependents }
    }

    /// Adds `before -> after`, keeping both lists sorted.
    pub(crate) fn add_edge(&mut self, before: u32, after: u32) {
        insert_sorted(&mut self.deps[after as usize], before);
        insert_sorted(&mut self.dependents[before as usize], after);
    }

    /// A topological order that takes the lowest index among the ready ops
    /// first, so ops left unordered by the graph keep their file order. Ops
    /// on or behind a cycle are missing from it.
    pub(crate) fn topological_order(&self) -> Vec<u32> {
        let op_count = self.deps.len();
        let mut waiting_on: Vec<u32> = self.deps.iter().map(|deps| deps.len() as u32).collect();
        let sources: Vec<Reverse<u32>> = (0..op_count as u32)
            .filter(|&index| waiting_on[index as usize] == 0)
            .map(Reverse)
            .collect();
        let mut ready = BinaryHeap::from(sources);
        let mut order = Vec::with_capacity(op_count);
        while let Some(Reverse(index)) = ready.pop() {
            order.push(index);
            for &dependent in &self.dependents[index as usize] {
                let count = &mut waiting_on[dependent as usize];
                *count -= 1;
                if *count == 0 {
                    ready.push(Reverse(dependent));
                }
            }
        }
        order
    }

    /// One cycle per strongly connected component among the ops `ordered`
    /// leaves out, in run order (each op runs after the one before it),
    /// starting at the component's lowest index. Sorted by that index.
    pub(crate) fn cycles(&self, ordered: &[u32]) -> Vec<Vec<u32>> {
        let op_count = self.deps.len();
        if ordered.len() == op_count {
            return Vec::new();
        }
        let mut unordered = vec![true; op_count];
        for &index in ordered {
            unordered[index as usize] = false;
        }
        let components = self.strongly_connected(&unordered);
        let mut component_of = vec![u32::MAX; op_count];
        let mut cycles = Vec::new();
        for (component_id, component) in components.iter().enumerate() {
            if component.len() < 2 {
                continue;
            }
            for &member in component {
                component_of[member as usize] = component_id as u32;
            }
            let start = component.iter().copied().min().unwrap_or(component[0]);
            cycles.push(self.shortest_cycle_through(start, component_id as u32, &component_of));
        }
        cycles.sort_by_key(|cycle| cycle[0]);
        cycles
    }

    /// Tarjan's algorithm with an explicit call stack, over the ops `within`.
    fn strongly_connected(&self, within: &[bool]) -> Vec<Vec<u32>> {
        const UNVISITED: u32 = u32::MAX;
        let op_count = self.deps.len();
        let mut visit_index = vec![UNVISITED; op_count];
        let mut low_link = vec![0u32; op_count];
        let mut on_stack = vec![false; op_count];
        let mut component_stack: Vec<u32> = Vec::new();
        let mut call_stack: Vec<(u32, usize)> = Vec::new();
        let mut next_index = 0u32;
        let mut components = Vec::new();
        for start in 0..op_count {
            if !within[start] || visit_index[start] != UNVISITED {
                continue;
            }
            visit_index[start] = next_index;
            low_link[start] = next_index;
            next_index += 1;
            component_stack.push(start as u32);
            on_stack[start] = true;
            call_stack.push((start as u32, 0));
            while let Some(frame) = call_stack.last_mut() {
                let node = frame.0 as usize;
                if let Some(&next) = self.dependents[node].get(frame.1) {
                    frame.1 += 1;
                    let next = next as usize;
                    if !within[next] {
                        continue;
                    }
                    if visit_index[next] == UNVISITED {
                        visit_index[next] = next_index;
                        low_link[next] = next_index;
                        next_index += 1;
                        component_stack.push(next as u32);
                        on_stack[next] = true;
                        call_stack.push((next as u32, 0));
                    } else if on_stack[next] {
                        low_link[node] = low_link[node].min(visit_index[next]);
                    }
                    continue;
                }
                call_stack.pop();
                if let Some(&(parent, _)) = call_stack.last() {
                    low_link[parent as usize] = low_link[parent as usize].min(low_link[node]);
                }
                if low_link[node] == visit_index[node] {
                    let mut component = Vec::new();
                    while let Some(member) = component_stack.pop() {
                        on_stack[member as usize] = false;
                        component.push(member);
                        if member as usize == node {
                            break;
                        }
                    }
                    components.push(component);
                }
            }
        }
        components
    }

    /// Breadth-first from `start` inside its component back to `start`.
    fn shortest_cycle_through(
        &self,
        start: u32,
        component_id: u32,
        component_of: &[u32],
    ) -> Vec<u32> {
        let mut came_from: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(node) = queue.pop_front() {
            for &next in &self.dependents[node as usize] {
                if component_of[next as usize] != component_id {
                    continue;
                }
                if next == start {
                    let mut cycle = vec![node];
                    let mut current = node;
                    while current != start {
                        current = came_from[&current];
                        cycle.push(current);
                    }
                    cycle.reverse();
                    return cycle;
                }
                if let std::collections::hash_map::Entry::Vacant(entry) = came_from.entry(next) {
                    entry.insert(node);
                    queue.push_back(next);
                }
            }
        }
        // Unreachable for a strongly connected component of two or more ops.
        vec![start]
    }
}

fn insert_sorted(list: &mut Vec<u32>, value: u32) {
    if let Err(position) = list.binary_search(&value) {
        list.insert(position, value);
    }
}

/// Answers "does a path lead from `a` to `b`?" by a search pruned with a
/// topological position: a path from `a` to `b` only passes through ops
/// placed between them, so most searches stop after a few steps.
pub(crate) struct Reachability {
    position: Vec<u32>,
    seen: Vec<u32>,
    generation: u32,
    stack: Vec<u32>,
}

impl Reachability {
    /// `order` must hold every op (the graph has no cycle).
    pub(crate) fn new(order: &[u32]) -> Reachability {
        let mut position = vec![0u32; order.len()];
        for (place, &index) in order.iter().enumerate() {
            position[index as usize] = place as u32;
        }
        Reachability {
            position,
            seen: vec![0; order.len()],
            generation: 0,
            stack: Vec::new(),
        }
    }

    pub(crate) fn position(&self, index: u32) -> u32 {
        self.position[index as usize]
    }

    /// Whether `to` runs after `from` (a path leads from one to the other).
    pub(crate) fn reaches(&mut self, graph: &Graph, from: u32, to: u32) -> bool {
        if from == to {
            return true;
        }
        let limit = self.position[to as usize];
        if self.position[from as usize] >= limit {
            return false;
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.seen.fill(0);
            self.generation = 1;
        }
        self.stack.clear();
        self.stack.push(from);
        while let Some(node) = self.stack.pop() {
            for &next in &graph.dependents[node as usize] {
                if next == to {
                    return true;
                }
                let slot = &mut self.seen[next as usize];
                if self.position[next as usize] < limit && *slot != self.generation {
                    *slot = self.generation;
                    self.stack.push(next);
                }
            }
        }
        false
    }
}

/// The longest chain by summed durations (missing durations count 0): its
/// ops in run order and its total. Empty for an empty or cyclic plan.
pub(crate) fn critical_path(ops: &[PlannedOp], durations_ms: &[u64]) -> (Vec<u32>, u64) {
    let op_count = ops.len();
    // Time edges: dependencies, and memory waits on the batch's own writers.
    let predecessors = |index: usize| ops[index].deps.iter().chain(&ops[index].wait_writers);
    let mut wait_dependents: Vec<Vec<u32>> = Vec::new();
    if ops.iter().any(|op| !op.wait_writers.is_empty()) {
        wait_dependents = vec![Vec::new(); op_count];
        for (index, op) in ops.iter().enumerate() {
            for &writer in &op.wait_writers {
                wait_dependents[writer as usize].push(index as u32);
            }
        }
    }
    let mut waiting_on: Vec<u32> = (0..op_count)
        .map(|index| predecessors(index).count() as u32)
        .collect();
    let mut queue: VecDeque<u32> = (0..op_count as u32)
        .filter(|&index| waiting_on[index as usize] == 0)
        .collect();
    // finish[i]: the longest total of a chain ending at i; best_previous[i]:
    // the op before i on it.
    let mut finish = vec![0u64; op_count];
    let mut best_previous = vec![u32::MAX; op_count];
    let mut processed = 0usize;
    while let Some(index) = queue.pop_front() {
        processed += 1;
        let own = durations_ms.get(index as usize).copied().unwrap_or(0);
        let start = predecessors(index as usize)
            .map(|&dep| (finish[dep as usize], dep))
            .max_by_key(|&(total, dep)| (total, Reverse(dep)));
        if let Some((total, dep)) = start {
            finish[index as usize] = total.saturating_add(own);
            best_previous[index as usize] = dep;
        } else {
            finish[index as usize] = own;
        }
        let waiters = wait_dependents.get(index as usize).into_iter().flatten();
        for &dependent in ops[index as usize].dependents.iter().chain(waiters) {
            let count = &mut waiting_on[dependent as usize];
            *count -= 1;
            if *count == 0 {
                queue.push_back(dependent);
            }
        }
    }
    if processed < op_count || op_count == 0 {
        return (Vec::new(), 0);
    }
    let mut end = 0usize;
    for index in 1..op_count {
        // On a tie, the later op: its chain holds the earlier one.
        if finish[index] >= finish[end] {
            end = index;
        }
    }
    let total = finish[end];
    let mut path = vec![end as u32];
    let mut current = end;
    while best_previous[current] != u32::MAX {
        current = best_previous[current] as usize;
        path.push(current as u32);
    }
    path.reverse();
    (path, total)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn graph(deps: &[&[u32]]) -> Graph {
        Graph::from_deps(deps.iter().map(|list| list.to_vec()).collect())
    }

    #[test]
    fn topological_order_prefers_file_order() {
        let graph = graph(&[&[2], &[], &[]]);
        assert_eq!(graph.topological_order(), vec![1, 2, 0]);
    }

    #[test]
    fn finds_each_cycle_once_in_run_order() {
        // 0 after 2, 1 after 0, 2 after 1: 0 -> 1 -> 2 -> 0; 3 and 4 after each other; 5 after 0.
        let graph = graph(&[&[2], &[0], &[1], &[4], &[3], &[0]]);
        let order = graph.topological_order();
        assert!(order.is_empty());
        assert_eq!(graph.cycles(&order), vec![vec![0, 1, 2], vec![3, 4]]);
    }

    #[test]
    fn deep_chain_does_not_overflow() {
        let op_count = 200_000u32;
        let mut deps: Vec<Vec<u32>> = (0..op_count)
            .map(|index| if index == 0 { vec![] } else { vec![index - 1] })
            .collect();
        deps[0] = vec![op_count - 1];
        let graph = Graph::from_deps(deps);
        let order = graph.topological_order();
        let cycles = graph.cycles(&order);
        assert_eq!(cycles.len(), 1);
        assert_eq!(cycles[0].len(), op_count as usize);
        assert_eq!(cycles[0][..3], [0, 1, 2]);
    }

    #[test]
    fn reachability_follows_edges_and_added_edges() {
        let mut graph = graph(&[&[], &[0], &[1], &[]]);
        let order = graph.topological_order();
        let mut reach = Reachability::new(&order);
        assert!(reach.reaches(&graph, 0, 2));
        assert!(!reach.reaches(&graph, 2, 0));
        assert!(!reach.reaches(&graph, 0, 3) && !reach.reaches(&graph, 3, 0));
        let (first, second) = if reach.position(2) < reach.position(3) {
            (2, 3)
        } else {
            (3, 2)
        };
        graph.add_edge(first, second);
        assert!(reach.reaches(&graph, 0, 3) || reach.reaches(&graph, 3, 0));
        assert_eq!(graph.deps[second as usize], vec![first]);
    }

    fn planned(deps: &[&[u32]]) -> Vec<PlannedOp> {
        let graph = graph(deps);
        graph
            .deps
            .into_iter()
            .zip(graph.dependents)
            .enumerate()
            .map(|(index, (deps, dependents))| PlannedOp {
                id: volley_proto::OpId::new(format!("op{index}")),
                kind: "noop".into(),
                args: serde_json::json!({}),
                deps: deps.into_boxed_slice(),
                dependents: dependents.into_boxed_slice(),
                run_if_always: false,
                priority: 2,
                max_attempts: 1,
                retry_policy: None,
                timeout_ms: 0,
                max_output_bytes: 0,
                store_as: None,
                memory_writes: Box::default(),
                wait_for: Box::default(),
                wait_for_any: Box::default(),
                wait_timeout_ms: 0,
                wait_writers: Box::default(),
                requires: Default::default(),
                has_templates: false,
            })
            .collect()
    }

    #[test]
    fn critical_path_takes_the_longest_chain() {
        // 0 -> 1 -> 3, 0 -> 2 -> 3; 2 is slow. 4 alone.
        let ops = planned(&[&[], &[0], &[0], &[1, 2], &[]]);
        let (path, total) = critical_path(&ops, &[10, 5, 50, 1, 60]);
        assert_eq!(path, vec![0, 2, 3]);
        assert_eq!(total, 61);
        assert_eq!(critical_path(&ops, &[10, 5, 50, 1, 100]), (vec![4], 100));
        assert_eq!(critical_path(&[], &[]), (vec![], 0));
    }
}
