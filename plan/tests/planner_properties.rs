//! The planner over generated batches: it never panics; a batch whose
//! `after` edges only point backwards (a DAG) always plans, with every
//! edge kept; adding one edge that closes a loop is always a cycle. The
//! same for memory waits: ops that wait only for keys earlier ops write
//! always plan, and a wait that closes a loop of waits is refused.

use proptest::prelude::*;
use volley_plan::{Limits, plan};
use volley_proto::v1;

fn op(index: usize, after: &[usize]) -> v1::Op {
    v1::Op {
        id: format!("op{index}"),
        kind: "noop".to_owned(),
        after: after.iter().map(|dep| format!("op{dep}")).collect(),
        ..v1::Op::default()
    }
}

fn batch(ops: Vec<v1::Op>) -> v1::Batch {
    v1::Batch {
        name: "generated".to_owned(),
        ops,
        ..v1::Batch::default()
    }
}

/// For op `i`, a set of earlier ops it runs after.
fn dag() -> impl Strategy<Value = Vec<Vec<usize>>> {
    (1_usize..60).prop_flat_map(|count| {
        (0..count)
            .map(|index| {
                if index == 0 {
                    Just(Vec::new()).boxed()
                } else {
                    prop::collection::btree_set(0..index, 0..4.min(index + 1))
                        .prop_map(|set| set.into_iter().collect())
                        .boxed()
                }
            })
            .collect::<Vec<_>>()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_edges_never_panic(edges in prop::collection::vec(prop::collection::vec(0_usize..30, 0..4), 1..30)) {
        let ops = edges.iter().enumerate().map(|(index, after)| op(index, after)).collect();
        let _ = plan(&batch(ops), &|_| true, &Limits::default());
    }

    #[test]
    fn a_dag_always_plans_with_its_edges(edges in dag()) {
        let ops = edges.iter().enumerate().map(|(index, after)| op(index, after)).collect();
        let planned = plan(&batch(ops), &|_| true, &Limits::default()).expect("a DAG plans");
        prop_assert_eq!(planned.ops.len(), edges.len());
        for (index, after) in edges.iter().enumerate() {
            let mut deps: Vec<u32> = planned.ops[index].deps.to_vec();
            deps.sort_unstable();
            let mut expected: Vec<u32> = after.iter().map(|dep| *dep as u32).collect();
            expected.sort_unstable();
            prop_assert_eq!(deps, expected);
        }
    }

    #[test]
    fn closing_a_loop_is_a_cycle(edges in dag()) {
        prop_assume!(edges.len() > 1);
        let mut ops: Vec<v1::Op> = edges.iter().enumerate().map(|(index, after)| op(index, after)).collect();
        // op0 after the last op, and the last after op0 through a chain.
        let last = ops.len() - 1;
        ops[last].after.push("op0".to_owned());
        ops[0].after.push(format!("op{last}"));
        let problems = plan(&batch(ops), &|_| true, &Limits::default()).expect_err("a cycle");
        prop_assert!(problems.iter().any(|problem| problem.message.contains("cycle")), "{:?}", problems);
    }

    #[test]
    fn waits_on_earlier_writers_plan_and_closing_a_wait_loop_is_refused(edges in dag()) {
        // Op i writes `k{i}` and waits for the keys of the ops `edges[i]` names.
        let ops: Vec<v1::Op> = edges.iter().enumerate().map(|(index, waits)| v1::Op {
            store_as: format!("k{index}"),
            wait_for: waits.iter().map(|dep| format!("k{dep}")).collect(),
            ..op(index, &[])
        }).collect();
        let planned = plan(&batch(ops.clone()), &|_| true, &Limits::default()).expect("waits on earlier writers plan");
        prop_assert!(planned.warnings.is_empty(), "{:?}", planned.warnings);

        // Op 0 also waits for the last op's key: a loop exactly when the
        // last op (transitively) waits for op 0.
        let last = edges.len() - 1;
        let mut reaches_first = vec![false; edges.len()];
        reaches_first[0] = true;
        for (index, waits) in edges.iter().enumerate().skip(1) {
            reaches_first[index] = waits.iter().any(|&dep| reaches_first[dep]);
        }
        let mut looped = ops;
        looped[0].wait_for.push(format!("k{last}"));
        match plan(&batch(looped), &|_| true, &Limits::default()) {
            Ok(_) => prop_assert!(!reaches_first[last], "a loop through op0 and op{} was accepted", last),
            Err(problems) => {
                prop_assert!(reaches_first[last], "{:?}", problems);
                prop_assert_eq!(problems.len(), 1, "{:?}", problems);
                prop_assert!(problems[0].message.contains("wait for each other") || problems[0].message.contains("only this op writes"), "{:?}", problems);
                prop_assert_eq!(problems[0].op_id.as_str(), "op0");
            }
        }
    }
}
