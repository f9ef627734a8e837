//! The ready-queue depth: read from every batch's ready lists, published as the global gauge list.

use std::sync::LazyLock;

use redis::Script;
use volley_proto::BatchId;

use super::RedisStore;
use crate::StoreResult;
use crate::keys;
use crate::model::{PRIORITY_LEVELS, READY_GAUGE_CAP, ReadyDepth};

/// Touches no batch: not prefixed with common.lua.
static READY_GAUGE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/ready_gauge.lua")));

impl RedisStore {
    /// One pipeline of `LLEN`s, one per ready list of each batch. A finished
    /// batch's ready lists are gone (compaction), so it counts 0 without
    /// a look at its state.
    pub(super) async fn read_ready_depth(&self, batches: &[BatchId]) -> StoreResult<ReadyDepth> {
        let mut depth = ReadyDepth::default();
        if batches.is_empty() {
            return Ok(depth);
        }
        let mut pipe = redis::pipe();
        for batch in batches {
            for priority in 0..PRIORITY_LEVELS {
                pipe.llen(keys::ready(batch, priority));
            }
        }
        let lengths: Vec<u64> = pipe.query_async(&mut self.connection()).await?;
        for per_batch in lengths.chunks(usize::from(PRIORITY_LEVELS)) {
            for (slot, length) in depth.by_priority.iter_mut().zip(per_batch) {
                *slot += length;
            }
        }
        Ok(depth)
    }

    pub(super) async fn write_ready_gauge(&self, total: u64) -> StoreResult<u64> {
        let length: u64 = READY_GAUGE
            .key(keys::QUEUE_READY)
            .arg(total.min(READY_GAUGE_CAP))
            .invoke_async(&mut self.connection())
            .await?;
        Ok(length)
    }
}
