//! The planner on arbitrary small batches (ids, kinds, edges, waits).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|ops: Vec<(u8, Vec<u8>, Vec<u8>, bool)>| {
    let ops = ops
        .into_iter()
        .take(64)
        .enumerate()
        .map(|(index, (kind, after, waits, store))| volley_client::v1::Op {
            id: format!("op{index}"),
            kind: ["noop", "echo", "shell", "memory.put"][usize::from(kind % 4)].to_owned(),
            after: after.iter().map(|dep| format!("op{}", dep % 64)).collect(),
            wait_for: waits.iter().map(|key| format!("k{}", key % 8)).collect(),
            store_as: if store { format!("k{}", index % 8) } else { String::new() },
            ..volley_client::v1::Op::default()
        })
        .collect();
    let batch = volley_client::v1::Batch {
        name: "fuzz".to_owned(),
        ops,
        ..volley_client::v1::Batch::default()
    };
    let _ = volley_plan::plan(&batch, &|_| true, &volley_plan::Limits::default());
});
