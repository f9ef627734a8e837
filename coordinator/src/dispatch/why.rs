//! The dispatcher's side of `why`: what holds an op back here.

use volley_proto::BatchId;

use super::workers::{entry_accepts, with_labels};
use super::{Dispatcher, WhyAnswer};

impl Dispatcher {
    /// The dispatcher's view of why an op is not running.
    pub(super) fn why(&self, batch: &BatchId, index: u32) -> WhyAnswer {
        let parked = self
            .batches
            .get(batch)
            .is_some_and(|active| active.parked.iter().any(|claim| claim.index == index));
        WhyAnswer {
            parked,
            reasons: self.why_reasons(batch, index),
        }
    }

    pub(super) fn why_reasons(&self, batch: &BatchId, index: u32) -> Vec<String> {
        let mut reasons = Vec::new();
        let Some(active) = self.batches.get(batch) else {
            reasons.push(
                "this coordinator is not dispatching the batch (it has ended, or another coordinator runs it)"
                    .to_owned(),
            );
            return reasons;
        };
        let Some(op) = active.planned.plan.ops.get(index as usize) else {
            return reasons;
        };
        // Our workers as they are now, the others' as of the last tick.
        let mut live = self.workers.len();
        let mut able = 0;
        let mut able_free = 0;
        for worker in self.workers.values() {
            if worker.accepts(&op.kind, &op.requires) {
                able += 1;
                able_free += usize::from(worker.free > 0 && !worker.draining);
            }
        }
        for (coordinator, entry) in &self.cluster {
            if coordinator == &self.id {
                continue;
            }
            live += 1;
            if entry_accepts(entry, &op.kind, &op.requires) {
                able += 1;
                able_free += usize::from(entry.busy < entry.slots);
            }
        }
        if able == 0 {
            let requires = with_labels(&op.requires);
            reasons.push(format!(
                "no live worker runs `{}` ops{requires} ({live} worker(s) live in the cluster)",
                op.kind,
            ));
        } else if able_free == 0 {
            reasons.push(format!(
                "all {able} worker(s) that run `{}` ops are busy",
                op.kind
            ));
        }
        let max_parallel = active.planned.plan.max_parallel;
        if max_parallel > 0 && active.in_flight >= max_parallel {
            reasons.push(format!(
                "max_parallel {max_parallel} holds it back: {} of the batch's ops are in flight",
                active.in_flight
            ));
        }
        if active.parked.iter().any(|claim| claim.index == index) {
            reasons.push("claimed, waiting for a worker that can take it".to_owned());
        }
        reasons
    }
}
