//! What both stores compute alike from a batch's ops, outside either
//! backend so neither imports the other: the memory waits and declared
//! writers of new ops, the edges of added ops, the backoff multiplier and
//! the doorbell channel's capacity. (The Redis store's Lua scripts do the
//! same in `lua/common.lua`.)

use std::collections::BTreeMap;

use volley_proto::BatchId;

use crate::model::NewOp;
use crate::{AddOpsRefusal, StoreError, StoreResult};

/// Doorbell channel capacity; a receiver that lags gets `Lagged` and should
/// resync, exactly as after `Doorbell::Resync`.
pub(crate) const DOORBELL_CAPACITY: usize = 1024;

/// The edges of ops added to a batch, from their `after` lists.
pub(crate) struct AddedEdges {
    /// Per new op: the existing ops (index < first_index) it runs after.
    pub(crate) existing_after: Vec<Vec<u32>>,
    /// Per new op: the new ops that run after it.
    pub(crate) new_dependents: Vec<Vec<u32>>,
}

/// Checks the `after` lists of ops added at `first_index` and splits them
/// into edges from existing ops and edges among the new ones.
pub(crate) fn added_edges(
    batch: &BatchId,
    first_index: u32,
    ops: &[NewOp],
) -> StoreResult<AddedEdges> {
    let end = u64::from(first_index) + ops.len() as u64;
    let mut edges = AddedEdges {
        existing_after: vec![Vec::new(); ops.len()],
        new_dependents: vec![Vec::new(); ops.len()],
    };
    for (offset, op) in ops.iter().enumerate() {
        let index = first_index + offset as u32;
        let cannot = |reason: AddOpsRefusal| StoreError::CannotAddOps {
            batch: batch.clone(),
            reason,
        };
        if op.deps as usize != op.after.len() {
            return Err(cannot(AddOpsRefusal::DepsMismatch {
                index,
                deps: op.deps,
                after: op.after.len() as u32,
            }));
        }
        for &before in &op.after {
            if u64::from(before) >= end || before == index {
                return Err(cannot(AddOpsRefusal::BadAfter { index, before }));
            }
            if before < first_index {
                edges.existing_after[offset].push(before);
            } else {
                edges.new_dependents[(before - first_index) as usize].push(index);
            }
        }
    }
    Ok(edges)
}

/// A backoff multiplier both stores can use: not finite or negative → 1.
pub(crate) fn sane_multiplier(multiplier: f64) -> f64 {
    if multiplier.is_finite() && multiplier >= 0.0 {
        multiplier
    } else {
        1.0
    }
}

/// `(op index, key, "all"|"any")` of every memory wait of `ops` (numbered
/// from `first_index`), in index order; per op its `wait_for` keys sorted,
/// then its `wait_for_any` keys sorted, duplicates dropped.
pub(crate) fn wait_triples(first_index: u32, ops: &[NewOp]) -> Vec<(u32, String, &'static str)> {
    let mut triples = Vec::new();
    for (offset, op) in ops.iter().enumerate() {
        let index = first_index + offset as u32;
        let (all, any) = wait_keys(op);
        triples.extend(all.into_iter().map(|key| (index, key, "all")));
        triples.extend(any.into_iter().map(|key| (index, key, "any")));
    }
    triples
}

/// The declared memory writes of `ops` (numbered from `first_index`): per
/// op with any, its keys sorted and deduplicated; per key, its writers in
/// index order.
pub(crate) struct DeclaredWriters {
    pub(crate) by_op: Vec<(u32, Vec<String>)>,
    pub(crate) by_key: BTreeMap<String, Vec<u32>>,
}

pub(crate) fn declared_writers(first_index: u32, ops: &[NewOp]) -> DeclaredWriters {
    let mut declared = DeclaredWriters {
        by_op: Vec::new(),
        by_key: BTreeMap::new(),
    };
    for (offset, op) in ops.iter().enumerate() {
        if op.writes.is_empty() {
            continue;
        }
        let index = first_index + offset as u32;
        let mut keys = op.writes.clone();
        keys.sort_unstable();
        keys.dedup();
        for key in &keys {
            declared.by_key.entry(key.clone()).or_default().push(index);
        }
        declared.by_op.push((index, keys));
    }
    declared
}

/// An op's `wait_for` and `wait_for_any` keys, each sorted and deduplicated.
pub(crate) fn wait_keys(op: &NewOp) -> (Vec<String>, Vec<String>) {
    let mut all = op.wait_for.clone();
    all.sort_unstable();
    all.dedup();
    let mut any = op.wait_for_any.clone();
    any.sort_unstable();
    any.dedup();
    (all, any)
}

/// Inputs an op waits for: its dependencies, each `wait_for` key, and one
/// for its `wait_for_any` group.
pub(crate) fn pending_count(op: &NewOp) -> u32 {
    let (all, any) = wait_keys(op);
    op.deps + all.len() as u32 + u32::from(!any.is_empty())
}
