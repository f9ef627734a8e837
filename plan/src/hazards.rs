//! Finds ops that touch one file or memory key, at least one writing, with
//! nothing ordering them — a race the batch would otherwise lose silently —
//! and rejects it or orders it, as the batch's `hazards` asks.
//!
//! Ops are grouped by exact target in a hash map, so the cost follows the
//! ops that share a target, not the square of the batch. Within a group the
//! members are walked in topological order and each is checked only against
//! its neighbours (the last writer before it, or the readers since that
//! writer): if those are ordered, every pair is, by transitivity. Glob
//! patterns are compared against every distinct written or read path; two
//! different patterns are not compared with each other.

use std::collections::{HashMap, HashSet};

use volley_kinds::Target;
use volley_kinds::touches::is_glob;
use volley_proto::v1::Op;

use crate::graph::{Graph, Reachability};
use crate::model::{HazardPolicy, Problem};

/// One op reading or writing one target.
pub(crate) struct Access {
    pub(crate) op: u32,
    pub(crate) target: Target,
    pub(crate) write: bool,
}

/// Checks that `pattern` is a glob the hazard check understands.
pub(crate) fn compile_glob(pattern: &str) -> Result<globset::GlobMatcher, String> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|glob| glob.compile_matcher())
        .map_err(|error| format!("bad glob pattern `{pattern}`: {}", error.kind()))
}

#[derive(Clone, Copy)]
struct Member<'a> {
    op: u32,
    write: bool,
    /// The glob pattern through which this op touches the target, if any.
    through: Option<&'a str>,
}

/// Applies `policy` to every race among `accesses`: with `Reject`, returns
/// one problem per racing pair (on the op later in the file); with `Order`,
/// adds an edge from the op earlier in the topological order (file order
/// where the graph allows) to the later one, keeping `reach` valid.
pub(crate) fn find_hazards(
    accesses: &[Access],
    ops: &[Op],
    graph: &mut Graph,
    reach: &mut Reachability,
    policy: HazardPolicy,
) -> Vec<(u32, Problem)> {
    if policy == HazardPolicy::Allow || accesses.len() < 2 {
        return Vec::new();
    }
    let mut groups: HashMap<&Target, Vec<Member<'_>>> = HashMap::new();
    let mut globs: Vec<&Access> = Vec::new();
    for access in accesses {
        if let Target::File(path) = &access.target
            && is_glob(path)
        {
            globs.push(access);
        }
        groups.entry(&access.target).or_default().push(Member {
            op: access.op,
            write: access.write,
            through: None,
        });
    }
    if !globs.is_empty() {
        let paths: Vec<(&Target, &str)> = groups
            .keys()
            .filter_map(|target| match target {
                Target::File(path) if !is_glob(path) => Some((*target, path.as_str())),
                _ => None,
            })
            .collect();
        for access in globs {
            let Target::File(pattern) = &access.target else {
                continue;
            };
            // A bad pattern was already reported by validation.
            let Ok(matcher) = compile_glob(pattern) else {
                continue;
            };
            for &(target, path) in &paths {
                if matcher.is_match(path)
                    && let Some(members) = groups.get_mut(target)
                {
                    members.push(Member {
                        op: access.op,
                        write: access.write,
                        through: Some(pattern),
                    });
                }
            }
        }
    }

    let mut contested: Vec<(&Target, Vec<Member<'_>>)> = groups
        .into_iter()
        .filter(|(_, members)| members.len() > 1 && members.iter().any(|member| member.write))
        .collect();
    // Sorted so problems and added edges do not depend on hash order.
    contested.sort_by(|left, right| left.0.cmp(right.0));

    let mut problems = Vec::new();
    let mut reported_pairs: HashSet<(u32, u32)> = HashSet::new();
    for (target, mut members) in contested {
        merge_same_op(&mut members);
        if members.len() < 2 || !members.iter().any(|member| member.write) {
            continue;
        }
        members.sort_by_key(|member| reach.position(member.op));
        let mut last_writer: Option<Member<'_>> = None;
        let mut readers_since_writer: Vec<Member<'_>> = Vec::new();
        let mut check = |before: Member<'_>, after: Member<'_>, graph: &mut Graph| {
            if reach.reaches(graph, before.op, after.op) {
                return;
            }
            match policy {
                HazardPolicy::Order => graph.add_edge(before.op, after.op),
                HazardPolicy::Reject => {
                    let (earlier, later) = if before.op < after.op {
                        (before, after)
                    } else {
                        (after, before)
                    };
                    if reported_pairs.insert((earlier.op, later.op)) {
                        problems.push((later.op, race_problem(ops, target, earlier, later)));
                    }
                }
                HazardPolicy::Allow => {}
            }
        };
        for member in members {
            if member.write {
                if readers_since_writer.is_empty() {
                    if let Some(writer) = last_writer {
                        check(writer, member, graph);
                    }
                } else {
                    for reader in readers_since_writer.drain(..) {
                        check(reader, member, graph);
                    }
                }
                last_writer = Some(member);
            } else {
                if let Some(writer) = last_writer {
                    check(writer, member, graph);
                }
                readers_since_writer.push(member);
            }
        }
    }
    problems
}

/// One entry per op: an op that reads and writes a target counts as writing.
fn merge_same_op(members: &mut Vec<Member<'_>>) {
    members.sort_by_key(|member| (member.op, member.through.is_some()));
    members.dedup_by(|duplicate, kept| {
        if duplicate.op != kept.op {
            return false;
        }
        kept.write |= duplicate.write;
        true
    });
}

fn race_problem(ops: &[Op], target: &Target, earlier: Member<'_>, later: Member<'_>) -> Problem {
    let earlier_id = &ops[earlier.op as usize].id;
    let what = match target {
        Target::File(path) => format!("file `{path}`"),
        Target::Memory(key) => format!("memory key `{key}`"),
    };
    let how = match (earlier.write, later.write) {
        (true, true) => "both write it".to_owned(),
        (true, false) => format!("`{earlier_id}` writes it and this op reads it"),
        _ => format!("this op writes it and `{earlier_id}` reads it"),
    };
    let mut through = String::new();
    for (member, who) in [
        (later, "this op".to_owned()),
        (earlier, format!("`{earlier_id}`")),
    ] {
        if let Some(pattern) = member.through {
            through.push_str(&format!(", {who} through the pattern `{pattern}`"));
        }
    }
    Problem {
        op_id: ops[later.op as usize].id.clone(),
        field: if later.write { "writes" } else { "reads" }.to_owned(),
        message: format!(
            "races with op `{earlier_id}` on {what} ({how}{through}, and neither runs after the other); \
             add `after: [{earlier_id}]`, or set `hazards: order`"
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn globs_do_not_cross_directories() {
        let matcher = compile_glob("src/*.rs").unwrap();
        assert!(matcher.is_match("src/a.rs"));
        assert!(!matcher.is_match("src/deep/a.rs"));
        assert!(
            compile_glob("src/**/*.rs")
                .unwrap()
                .is_match("src/deep/a.rs")
        );
        assert!(compile_glob("src/[").unwrap_err().contains("src/["));
    }

    #[test]
    fn an_op_reading_and_writing_a_target_counts_once_as_writer() {
        let mut members = vec![
            Member {
                op: 1,
                write: false,
                through: None,
            },
            Member {
                op: 0,
                write: false,
                through: None,
            },
            Member {
                op: 1,
                write: true,
                through: Some("*"),
            },
        ];
        merge_same_op(&mut members);
        let merged: Vec<(u32, bool)> = members
            .iter()
            .map(|member| (member.op, member.write))
            .collect();
        assert_eq!(merged, vec![(0, false), (1, true)]);
    }

    #[test]
    fn race_through_a_glob_names_the_pattern() {
        let ops: Vec<Op> = ["writer", "lister"]
            .map(|id| Op {
                id: id.into(),
                ..Default::default()
            })
            .into();
        let accesses = vec![
            Access {
                op: 0,
                target: Target::File("logs/a.log".into()),
                write: true,
            },
            Access {
                op: 1,
                target: Target::File("logs/*.log".into()),
                write: false,
            },
        ];
        let mut graph = Graph::from_deps(vec![Vec::new(), Vec::new()]);
        let mut reach = Reachability::new(&[0, 1]);
        let problems = find_hazards(
            &accesses,
            &ops,
            &mut graph,
            &mut reach,
            HazardPolicy::Reject,
        );
        assert_eq!(problems.len(), 1);
        let (index, problem) = &problems[0];
        assert_eq!(
            (*index, problem.op_id.as_str(), problem.field.as_str()),
            (1, "lister", "reads")
        );
        assert!(
            problem.message.contains("`logs/a.log`") && problem.message.contains("`logs/*.log`")
        );
        assert!(
            find_hazards(&accesses, &ops, &mut graph, &mut reach, HazardPolicy::Allow).is_empty()
        );
        assert!(
            find_hazards(&accesses, &ops, &mut graph, &mut reach, HazardPolicy::Order).is_empty()
        );
        assert_eq!(graph.deps[1], vec![0]);
    }
}
