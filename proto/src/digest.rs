//! Digests of what a client sends, the same in every process: a retried
//! call is recognised by them (the coordinator compares a submission's or a
//! spawn's digest with the first call's), and an op's own spawn derives its
//! idempotency key from one, in the worker SDK and in `volley spawn` alike.
//! Maps are hashed sorted: prost encodes a `HashMap` in iteration order,
//! which differs between processes.

use prost::Message;
use sha2::{Digest, Sha256};

use crate::v1;

/// A digest of a submission: the same batch gives the same digest however
/// its maps (labels, `requires`) happen to be ordered; the trace context,
/// which differs on every retry, is left out.
pub fn submission_digest(batch: &mut v1::Batch) -> String {
    let mut hasher = Sha256::new();
    let ops = std::mem::take(&mut batch.ops);
    let labels = std::mem::take(&mut batch.labels);
    let trace_context = std::mem::take(&mut batch.trace_context);
    hasher.update(b"header\0");
    hasher.update(batch.encode_to_vec());
    hash_map(&mut hasher, &labels);
    batch.labels = labels;
    batch.trace_context = trace_context;
    batch.ops = ops;
    hash_ops(&mut hasher, &mut batch.ops);
    hex::encode(hasher.finalize())
}

/// A digest of the ops of a spawn (see [`submission_digest`]).
pub fn spawn_digest(ops: &mut [v1::Op]) -> String {
    let mut hasher = Sha256::new();
    hash_ops(&mut hasher, ops);
    hex::encode(hasher.finalize())
}

/// The key an op's own spawn carries when it names none: derived from the
/// spawning op and the ops it spawns, so the op's next attempt (an agent
/// run again after a lost worker or a failure) that spawns the same ops
/// gets the first attempt's answer instead of "duplicate id", and ops the
/// first attempt did not spawn are added as new. Spawn keys are per batch.
pub fn op_spawn_key(op: &str, ops: &mut [v1::Op]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"volley.v1 op spawn\0");
    hasher.update(op.as_bytes());
    hasher.update(b"\0");
    hasher.update(spawn_digest(ops).as_bytes());
    format!("op-spawn-{}", &hex::encode(hasher.finalize())[..48])
}

fn hash_ops(hasher: &mut Sha256, ops: &mut [v1::Op]) {
    for op in ops {
        let requires = std::mem::take(&mut op.requires);
        hasher.update(b"op\0");
        let encoded = op.encode_to_vec();
        hasher.update((encoded.len() as u64).to_le_bytes());
        hasher.update(&encoded);
        hash_map(hasher, &requires);
        op.requires = requires;
    }
}

fn hash_map(hasher: &mut Sha256, map: &std::collections::HashMap<String, String>) {
    let mut entries: Vec<(&String, &String)> = map.iter().collect();
    entries.sort();
    hasher.update((entries.len() as u64).to_le_bytes());
    for (key, value) in entries {
        for text in [key, value] {
            hasher.update((text.len() as u64).to_le_bytes());
            hasher.update(text.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_ignore_map_order_and_trace_context_but_not_content() {
        let op = |id: &str| v1::Op {
            id: id.to_owned(),
            kind: "shell".to_owned(),
            requires: (0..20)
                .map(|n| (format!("r{n}"), format!("v{n}")))
                .collect(),
            ..v1::Op::default()
        };
        let batch = || v1::Batch {
            name: "b".to_owned(),
            labels: (0..20).map(|n| (format!("l{n}"), n.to_string())).collect(),
            ops: vec![op("a"), op("b")],
            ..v1::Batch::default()
        };
        let mut first = batch();
        let digest = submission_digest(&mut first);
        assert_eq!(first, batch(), "the batch is given back whole");
        for _ in 0..5 {
            let mut again = batch();
            again.trace_context = [("traceparent".to_owned(), "00-1-2-01".to_owned())].into();
            assert_eq!(submission_digest(&mut again), digest);
        }
        let mut other = batch();
        other.ops[1].id = "c".to_owned();
        assert_ne!(submission_digest(&mut other), digest);
        let mut relabelled = batch();
        relabelled.labels.insert("l0".to_owned(), "x".to_owned());
        assert_ne!(submission_digest(&mut relabelled), digest);
        assert_eq!(spawn_digest(&mut [op("a")]), spawn_digest(&mut [op("a")]));
        assert_ne!(spawn_digest(&mut [op("a")]), spawn_digest(&mut [op("b")]));
    }

    #[test]
    fn an_op_spawn_key_is_per_op_and_ops_and_fits_a_key() {
        let ops = |text: &str| {
            vec![v1::Op {
                id: "child".into(),
                kind: "echo".into(),
                args_json: format!("{{\"text\":\"{text}\"}}"),
                ..v1::Op::default()
            }]
        };
        let key = op_spawn_key("agent", &mut ops("a"));
        assert_eq!(key, op_spawn_key("agent", &mut ops("a")));
        assert_ne!(key, op_spawn_key("agent", &mut ops("b")));
        assert_ne!(key, op_spawn_key("other", &mut ops("a")));
        assert!(key.len() <= 128 && key.bytes().all(|byte| (0x21..=0x7e).contains(&byte)));
    }
}
