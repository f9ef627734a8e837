//! A batch's DAG aggregated for drawing: the page gets hundreds of nodes
//! whatever the batch's size, never one node per op of a 100,000-op batch.
//!
//! Ops are folded into one node when they are the same step repeated:
//! the expansions of one `foreach:` op (a *group*), or failing that ops of
//! the same kind with exactly the same dependencies and dependents (a
//! hand-written fan-out). A folded node carries its ops' counts by state,
//! and expanding it (`?expand=`) shows its members, up to
//! [`MAX_EXPANDED`]. Should the graph still be too big to draw — a chain
//! of 100,000 distinct steps — it falls back to one node per kind per
//! layer.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

/// The most members an expanded node shows; the rest stay one node.
pub const MAX_EXPANDED: usize = 500;

/// Past this many nodes, the graph is folded by kind and layer.
pub const MAX_NODES: usize = 2_000;

/// One op as the graph sees it.
pub struct GraphOp<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    pub group: Option<&'a str>,
    pub deps: &'a [u32],
    pub dependents: &'a [u32],
    pub state: &'static str,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Graph {
    pub op_count: usize,
    pub layers: u32,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// The node ids the critical path goes through, in order.
    pub critical: Vec<String>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Node {
    pub id: String,
    pub label: String,
    pub kind: String,
    pub count: usize,
    pub layer: u32,
    pub group: Option<String>,
    /// The op's id when the node is one op.
    pub op: Option<String>,
    pub states: BTreeMap<&'static str, usize>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub count: usize,
}

/// Folds `ops` (by index) into a graph; `expand` names nodes to show op by
/// op; `critical_ops` is the critical path as op indices.
pub fn aggregate(ops: &[GraphOp<'_>], expand: &HashSet<String>, critical_ops: &[u32]) -> Graph {
    let mut key_of = fold(ops, expand);
    let mut distinct: HashSet<&str> = key_of.iter().map(|(key, _)| key.as_str()).collect();
    if distinct.len() > MAX_NODES {
        // One node per kind per band of layers, bands as wide as it takes
        // to stay under MAX_NODES.
        let layer_of = op_layers(ops);
        let kinds: HashSet<&str> = ops.iter().map(|op| op.kind).collect();
        let layers = layer_of.iter().max().map_or(1, |deepest| deepest + 1) as usize;
        let per_kind = (MAX_NODES / kinds.len().max(1)).max(1);
        let step = layers.div_ceil(per_kind).max(1) as u32;
        key_of = ops
            .iter()
            .zip(&layer_of)
            .map(|(op, layer)| {
                let band = layer / step * step;
                let label = if step == 1 {
                    format!("{} ×", op.kind)
                } else {
                    format!("{} × (steps {}–{})", op.kind, band + 1, band + step)
                };
                (format!("l:{band}:{}", op.kind), label)
            })
            .collect();
        distinct = key_of.iter().map(|(key, _)| key.as_str()).collect();
    }
    let _ = distinct;
    // Nodes in first-seen order; each op's node by index (looked up by key
    // once per op, not again per dependency: 100,000 ops, as many edges).
    let mut index_of: HashMap<&str, usize> = HashMap::new();
    let mut node_of: Vec<usize> = Vec::with_capacity(ops.len());
    let mut nodes: Vec<Node> = Vec::new();
    for (op, (key, label)) in ops.iter().zip(&key_of) {
        let at = match index_of.get(key.as_str()) {
            Some(at) => *at,
            None => {
                nodes.push(Node {
                    id: key.clone(),
                    label: label.clone(),
                    kind: op.kind.to_owned(),
                    count: 0,
                    layer: 0,
                    group: op.group.map(str::to_owned),
                    op: None,
                    states: BTreeMap::new(),
                });
                index_of.insert(key.as_str(), nodes.len() - 1);
                nodes.len() - 1
            }
        };
        node_of.push(at);
        let node = &mut nodes[at];
        node.count += 1;
        *node.states.entry(op.state).or_default() += 1;
        node.op = if node.count == 1 && key.starts_with("o:") {
            Some(op.id.to_owned())
        } else {
            None
        };
        if node.kind != op.kind {
            node.kind = "mixed".to_owned();
        }
    }
    let mut edge_counts: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    for (index, op) in ops.iter().enumerate() {
        let to = node_of[index];
        for dep in op.deps {
            let Some(&from) = node_of.get(*dep as usize) else {
                continue;
            };
            if from != to {
                *edge_counts.entry((from, to)).or_default() += 1;
            }
        }
    }
    let layers = node_layers(nodes.len(), edge_counts.keys().copied());
    for (node, layer) in nodes.iter_mut().zip(&layers) {
        node.layer = *layer;
    }
    let mut critical: Vec<String> = Vec::new();
    for index in critical_ops {
        if let Some((key, _)) = key_of.get(*index as usize)
            && critical.last() != Some(key)
        {
            critical.push(key.clone());
        }
    }
    Graph {
        op_count: ops.len(),
        layers: layers.iter().max().map_or(0, |layer| layer + 1),
        edges: edge_counts
            .into_iter()
            .map(|((from, to), count)| Edge {
                from: nodes[from].id.clone(),
                to: nodes[to].id.clone(),
                count,
            })
            .collect(),
        nodes,
        critical,
    }
}

/// Each op's node key and label.
fn fold(ops: &[GraphOp<'_>], expand: &HashSet<String>) -> Vec<(String, String)> {
    // Same-shape classes of ungrouped ops: (kind, deps, dependents).
    let mut first_of_shape: HashMap<(&str, &[u32], &[u32]), usize> = HashMap::new();
    let mut shape_size: HashMap<usize, usize> = HashMap::new();
    let mut shape_of: Vec<usize> = Vec::with_capacity(ops.len());
    for (index, op) in ops.iter().enumerate() {
        let first = *first_of_shape
            .entry((op.kind, op.deps, op.dependents))
            .or_insert(index);
        *shape_size.entry(first).or_default() += 1;
        shape_of.push(first);
    }
    let mut shown: HashMap<String, usize> = HashMap::new();
    ops.iter()
        .enumerate()
        .map(|(index, op)| {
            let one = || (format!("o:{}", op.id), op.id.to_owned());
            let (folded, label) = match op.group {
                Some(group) => (format!("g:{group}"), group.to_owned()),
                None => {
                    let first = shape_of[index];
                    if shape_size[&first] < 2 {
                        return one();
                    }
                    let first_id = ops[first].id;
                    (
                        format!("s:{first_id}"),
                        format!("{first_id} … ({})", op.kind),
                    )
                }
            };
            if !expand.contains(&folded) {
                return (folded, label);
            }
            let count = shown.entry(folded.clone()).or_default();
            *count += 1;
            if *count <= MAX_EXPANDED {
                one()
            } else {
                (format!("{folded}:rest"), format!("{label} (the rest)"))
            }
        })
        .collect()
}

/// Each op's layer: the longest chain of dependencies before it.
fn op_layers(ops: &[GraphOp<'_>]) -> Vec<u32> {
    node_layers(
        ops.len(),
        ops.iter().enumerate().flat_map(|(index, op)| {
            op.deps
                .iter()
                .filter(|dep| (**dep as usize) < ops.len())
                .map(move |dep| (*dep as usize, index))
        }),
    )
}

/// Longest-path layers of a graph of `count` nodes (Kahn's order); nodes on
/// a cycle, which a plan never has but folding might make, go after what
/// was placed.
fn node_layers(count: usize, edges: impl Iterator<Item = (usize, usize)>) -> Vec<u32> {
    let mut outgoing: Vec<Vec<usize>> = vec![Vec::new(); count];
    let mut incoming = vec![0usize; count];
    for (from, to) in edges {
        outgoing[from].push(to);
        incoming[to] += 1;
    }
    let mut layer = vec![0u32; count];
    let mut ready: Vec<usize> = (0..count).filter(|node| incoming[*node] == 0).collect();
    let mut placed = vec![false; count];
    while let Some(node) = ready.pop() {
        placed[node] = true;
        for next in &outgoing[node] {
            layer[*next] = layer[*next].max(layer[node] + 1);
            incoming[*next] -= 1;
            if incoming[*next] == 0 {
                ready.push(*next);
            }
        }
    }
    let deepest = layer.iter().max().copied().unwrap_or(0);
    for (node, done) in placed.iter().enumerate() {
        if !done {
            layer[node] = layer[node].max(deepest + 1);
        }
    }
    layer
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    struct Ops {
        ids: Vec<String>,
        kinds: Vec<&'static str>,
        groups: Vec<Option<String>>,
        deps: Vec<Vec<u32>>,
        dependents: Vec<Vec<u32>>,
        states: Vec<&'static str>,
    }

    impl Ops {
        fn new() -> Ops {
            Ops {
                ids: Vec::new(),
                kinds: Vec::new(),
                groups: Vec::new(),
                deps: Vec::new(),
                dependents: Vec::new(),
                states: Vec::new(),
            }
        }

        fn add(&mut self, id: &str, group: Option<&str>, deps: &[u32], state: &'static str) -> u32 {
            let index = self.ids.len() as u32;
            self.ids.push(id.to_owned());
            self.kinds.push("shell");
            self.groups.push(group.map(str::to_owned));
            self.deps.push(deps.to_vec());
            self.dependents.push(Vec::new());
            for dep in deps {
                self.dependents[*dep as usize].push(index);
            }
            self.states.push(state);
            index
        }

        fn graph(&self, expand: &[&str], critical: &[u32]) -> Graph {
            let ops: Vec<GraphOp<'_>> = (0..self.ids.len())
                .map(|index| GraphOp {
                    id: &self.ids[index],
                    kind: self.kinds[index],
                    group: self.groups[index].as_deref(),
                    deps: &self.deps[index],
                    dependents: &self.dependents[index],
                    state: self.states[index],
                })
                .collect();
            let expand = expand.iter().map(|key| (*key).to_owned()).collect();
            aggregate(&ops, &expand, critical)
        }
    }

    fn fan_out(width: usize) -> Ops {
        let mut ops = Ops::new();
        let build = ops.add("build", None, &[], "succeeded");
        let mut members = Vec::new();
        for index in 0..width {
            let state = if index % 10 == 0 {
                "failed"
            } else {
                "succeeded"
            };
            members.push(ops.add(&format!("test-{index}"), Some("test"), &[build], state));
        }
        ops.add("report", None, &members, "waiting");
        ops
    }

    #[test]
    fn a_fan_out_of_5000_is_three_nodes_with_counts_and_layers() {
        let ops = fan_out(5_000);
        let graph = ops.graph(&[], &[0, 7, 5_001]);
        assert_eq!(graph.op_count, 5_002);
        assert_eq!(graph.nodes.len(), 3);
        let test = &graph.nodes[1];
        assert_eq!(test.id, "g:test");
        assert_eq!(test.count, 5_000);
        assert_eq!(test.layer, 1);
        assert_eq!(test.states["failed"], 500);
        assert_eq!(test.states["succeeded"], 4_500);
        assert_eq!(graph.nodes[2].layer, 2);
        assert_eq!(graph.nodes[0].op.as_deref(), Some("build"));
        assert_eq!(
            graph.edges,
            [
                Edge {
                    from: "o:build".into(),
                    to: "g:test".into(),
                    count: 5_000
                },
                Edge {
                    from: "g:test".into(),
                    to: "o:report".into(),
                    count: 5_000
                },
            ]
        );
        assert_eq!(graph.critical, ["o:build", "g:test", "o:report"]);
        assert_eq!(graph.layers, 3);
    }

    #[test]
    fn expanding_a_group_shows_its_first_members_and_folds_the_rest() {
        let ops = fan_out(MAX_EXPANDED + 20);
        let graph = ops.graph(&["g:test"], &[]);
        assert_eq!(graph.nodes.len(), 1 + MAX_EXPANDED + 1 + 1);
        let rest = graph
            .nodes
            .iter()
            .find(|node| node.id == "g:test:rest")
            .expect("the rest");
        assert_eq!(rest.count, 20);
        assert!(graph.nodes.iter().any(|node| node.id == "o:test-0"));
    }

    #[test]
    fn a_hand_written_fan_out_folds_by_shape_and_a_chain_does_not() {
        let mut ops = Ops::new();
        let root = ops.add("root", None, &[], "succeeded");
        for index in 0..50 {
            ops.add(&format!("lint-{index}"), None, &[root], "running");
        }
        let mut before = root;
        for index in 0..5 {
            before = ops.add(&format!("step-{index}"), None, &[before], "waiting");
        }
        let graph = ops.graph(&[], &[]);
        // root, the 50 (one node), step-0..4 — step-0 shares the lint
        // ops' dependencies but not their dependents.
        assert_eq!(graph.nodes.len(), 1 + 1 + 5, "{:?}", graph.nodes);
        assert_eq!(graph.nodes[1].id, "s:lint-0");
        assert_eq!(graph.nodes[1].count, 50);
        assert_eq!(graph.nodes[1].states["running"], 50);
    }

    #[test]
    fn a_long_distinct_chain_falls_back_to_kind_by_layer() {
        let mut ops = Ops::new();
        let mut before: Option<u32> = None;
        for index in 0..(MAX_NODES + 10) {
            let deps: Vec<u32> = before.into_iter().collect();
            // Two ops a layer, different dependents: no shape folds them.
            let first = ops.add(&format!("a-{index}"), None, &deps, "succeeded");
            ops.add(&format!("b-{index}"), None, &deps, "succeeded");
            before = Some(first);
        }
        let graph = ops.graph(&[], &[]);
        assert!(graph.nodes.len() <= MAX_NODES, "{}", graph.nodes.len());
        assert_eq!(graph.op_count, 2 * (MAX_NODES + 10));
        assert_eq!(graph.nodes[0].id, "l:0:shell");
        // Two layers a band: four ops a node.
        assert_eq!(graph.nodes[0].count, 4);
        assert_eq!(
            graph.nodes.iter().map(|node| node.count).sum::<usize>(),
            graph.op_count
        );
    }
}
