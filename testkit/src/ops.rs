//! Ops as tests write them: an id, a kind and JSON args (feature `proto`).

use volley_proto::v1;

/// The op `id` of `kind` with `args`, everything else at its default.
pub fn op(id: &str, kind: &str, args: serde_json::Value) -> v1::Op {
    v1::Op {
        id: id.to_owned(),
        kind: kind.to_owned(),
        args_json: args.to_string(),
        ..Default::default()
    }
}
