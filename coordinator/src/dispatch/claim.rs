//! Claiming: how free credits are shared between tenants and batches, and
//! each batch's claim from the store.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tracing::warn;
use volley_proto::BatchId;
use volley_store::{Claimed, Completion, FailureKind};

use super::{BatchResults, Dispatcher};
use crate::metrics::{count_recorded, count_started};
use crate::plans::PlannedBatch;
use crate::service::now_ms;

/// How many credits each batch may claim in one pass of [`Dispatcher::pump`]:
/// the free credits are split evenly between the tenants that want some,
/// then a tenant's share evenly between its batches that want some
/// (rounded up, so every wanting batch can claim at least one). A tenant
/// with fifty batches gets what a tenant with one gets; the pass repeats
/// while anything moved, so credits a tenant leaves unused go to the others.
#[derive(Default)]
struct FairShares {
    /// Credits each tenant may still claim in this pass.
    tenant_budget: HashMap<String, u32>,
    /// The most one batch of the tenant may claim in this pass.
    per_batch: HashMap<String, u32>,
}

impl FairShares {
    fn new<'a>(free: u32, wanting: impl Iterator<Item = &'a str>) -> FairShares {
        let mut batches_of: BTreeMap<&str, u32> = BTreeMap::new();
        for tenant in wanting {
            *batches_of.entry(tenant).or_default() += 1;
        }
        let mut shares = FairShares::default();
        if batches_of.is_empty() {
            return shares;
        }
        let tenant_share = free.div_ceil(batches_of.len() as u32).max(1);
        for (tenant, batches) in batches_of {
            shares.tenant_budget.insert(tenant.to_owned(), tenant_share);
            shares
                .per_batch
                .insert(tenant.to_owned(), tenant_share.div_ceil(batches).max(1));
        }
        shares
    }

    /// The most this batch of `tenant` may claim now (0: its tenant's
    /// budget is spent, or it wanted nothing when the pass began).
    fn cap(&self, tenant: &str) -> u32 {
        let budget = self.tenant_budget.get(tenant).copied().unwrap_or(0);
        let per_batch = self.per_batch.get(tenant).copied().unwrap_or(0);
        budget.min(per_batch)
    }

    fn spend(&mut self, tenant: &str, claimed: u32) {
        if let Some(budget) = self.tenant_budget.get_mut(tenant) {
            *budget = budget.saturating_sub(claimed);
        }
    }
}

impl Dispatcher {
    /// Claims and sends as much as credits and parallelism allow, shared
    /// fairly between tenants, then between each tenant's batches
    /// ([`FairShares`]); the batches take turns (round-robin) across passes.
    pub(super) async fn pump(&mut self) {
        loop {
            let mut progress = false;
            let now = tokio::time::Instant::now();
            let mut shares = FairShares::new(
                self.free_credits(),
                self.batches
                    .values()
                    .filter(|active| active.wants_credits(now))
                    .map(|active| active.planned.tenant.as_str()),
            );
            let rounds = self.order.len();
            for _ in 0..rounds {
                if self.free_credits() == 0 {
                    return;
                }
                let Some(batch) = self.order.pop_front() else {
                    return;
                };
                self.order.push_back(batch.clone());
                let Some(tenant) = self
                    .batches
                    .get(&batch)
                    .map(|active| active.planned.tenant.clone())
                else {
                    continue;
                };
                let (moved, claimed) = self.pump_batch(&batch, shares.cap(&tenant)).await;
                shares.spend(&tenant, claimed);
                progress |= moved;
            }
            if !progress {
                return;
            }
        }
    }

    /// One round for one batch: route parked ops, then claim up to what the
    /// batch, the free workers and `cap` (its fair share) allow, and route
    /// what came. Returns whether anything moved, and how many ops it
    /// claimed.
    async fn pump_batch(&mut self, batch: &BatchId, cap: u32) -> (bool, u32) {
        let progress = self.route_parked(batch).await;
        let want = self.claim_size(batch, cap);
        if want == 0 {
            return (progress, 0);
        }
        let claim_started = tokio::time::Instant::now();
        let Some(claimed) = self.claim(batch, want).await else {
            return (progress, 0);
        };
        if claimed.is_empty() {
            return (progress, 0);
        }
        let claimed_count = claimed.len() as u32;
        self.dispatch_claimed(batch, claimed, claim_started).await;
        (true, claimed_count)
    }

    /// Routes the batch's parked ops again (a worker that takes them may
    /// have come). Returns whether any left the parking.
    async fn route_parked(&mut self, batch: &BatchId) -> bool {
        let Some(active) = self.batches.get_mut(batch) else {
            return false;
        };
        if active.parked.is_empty() {
            return false;
        }
        let planned = active.planned.clone();
        let parked: Vec<Claimed> = active.parked.drain(..).collect();
        let before = parked.len();
        // Each parked op's clock started at its own claim.
        self.route(&planned, parked, tokio::time::Instant::now())
            .await;
        let after = self
            .batches
            .get(batch)
            .map_or(0, |active| active.parked.len());
        after < before
    }

    /// How many ops to claim from the batch now: 0 when its queue is
    /// known empty, it holds off after a hand-back, no worker is free, or
    /// `max_parallel` or `cap` leave no room.
    fn claim_size(&mut self, batch: &BatchId, cap: u32) -> u32 {
        let free = self.free_credits();
        let Some(active) = self.batches.get_mut(batch) else {
            return 0;
        };
        if !active.maybe_ready || free == 0 {
            return 0;
        }
        if let Some(after) = active.claim_after {
            if after > tokio::time::Instant::now() {
                return 0;
            }
            active.claim_after = None;
        }
        active.capacity().min(free).min(cap)
    }

    /// Claims up to `want` ready ops of the batch (leased for one lease
    /// period) and counts them in flight; `None` when the store failed.
    async fn claim(&mut self, batch: &BatchId, want: u32) -> Option<Vec<Claimed>> {
        let now = now_ms();
        let lease_until = now + self.lease.as_millis() as u64;
        let claimed = match self.store.claim(batch, want, now, lease_until).await {
            Ok(claimed) => claimed,
            Err(error) => {
                warn!(%batch, %error, "claim failed");
                return None;
            }
        };
        let active = self.batches.get_mut(batch)?;
        if (claimed.len() as u32) < want {
            active.maybe_ready = false;
        }
        active.in_flight += claimed.len() as u32;
        Some(claimed)
    }

    /// Routes freshly claimed ops by the plan that knows them (read again
    /// from the store when the batch grew behind our back); ops no plan
    /// knows fail for good.
    async fn dispatch_claimed(
        &mut self,
        batch: &BatchId,
        claimed: Vec<Claimed>,
        claim_started: tokio::time::Instant,
    ) {
        let Some(planned) = self.batches.get(batch).map(|active| active.planned.clone()) else {
            return;
        };
        let needed = claimed
            .iter()
            .map(|claim| claim.index as usize + 1)
            .max()
            .unwrap_or(0);
        let planned = if needed > planned.plan.ops.len() {
            // The batch grew (spawned ops) and the store made the new ops
            // ready before the new plan reached us: read it from the store.
            match self.reload_plan(batch, needed).await {
                Some(reloaded) => reloaded,
                None => planned,
            }
        } else {
            planned
        };
        count_started(&planned.plan, &claimed);
        let (known, unknown): (Vec<Claimed>, Vec<Claimed>) = claimed
            .into_iter()
            .partition(|claim| (claim.index as usize) < planned.plan.ops.len());
        if !unknown.is_empty() {
            let failed = unknown
                .iter()
                .map(|claim| {
                    permanent_failure(claim, "the coordinator has no plan for this op".into())
                })
                .collect();
            self.fail_permanently(&planned, failed).await;
        }
        if !known.is_empty() {
            self.route(&planned, known, claim_started).await;
        }
    }

    /// Records `failed` (attempts that can never run: no plan for the op,
    /// or its args cannot be filled in) as failed for good, and lets their
    /// claims go.
    pub(super) async fn fail_permanently(
        &mut self,
        planned: &PlannedBatch,
        failed: Vec<Completion>,
    ) {
        let indices = failed.iter().map(|completion| completion.index).collect();
        let outcome = self
            .store
            .complete(&planned.id, &failed, now_ms())
            .await
            .ok();
        if let Some(outcome) = &outcome {
            count_recorded(&planned.plan, &failed, outcome);
        }
        self.apply_results(BatchResults {
            batch: planned.id.clone(),
            indices,
            outcome,
        });
    }

    /// The batch's plan with at least `ops` ops — the cache's, or re-planned
    /// from its stored spec (the submission and every spawned chunk) by
    /// [`PlanCache::covering`] — and dispatches from that plan on.
    async fn reload_plan(&mut self, batch: &BatchId, ops: usize) -> Option<Arc<PlannedBatch>> {
        match self.plans.covering(self.store.as_ref(), batch, ops).await {
            Ok(planned) => {
                if let Some(active) = self.batches.get_mut(batch) {
                    active.planned = planned.clone();
                }
                Some(planned)
            }
            Err(error) => {
                warn!(%batch, %error, "could not re-plan the batch from its stored spec");
                None
            }
        }
    }
}

/// The completion that fails one claimed attempt for good.
pub(super) fn permanent_failure(claim: &Claimed, error: String) -> Completion {
    Completion {
        index: claim.index,
        attempt: claim.attempt,
        ok: false,
        failure: FailureKind::Permanent,
        error,
        started_ms: now_ms(),
        ..Completion::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_with_fifty_batches_gets_what_a_tenant_with_one_gets() {
        let wanting = std::iter::repeat_n("many", 50).chain(std::iter::once("one"));
        let mut shares = FairShares::new(10, wanting);
        assert_eq!(shares.cap("one"), 5);
        assert_eq!(shares.cap("many"), 1);
        // The fifty take their five credits one at a time, then no more.
        for _ in 0..5 {
            assert_eq!(shares.cap("many"), 1);
            shares.spend("many", 1);
        }
        assert_eq!(shares.cap("many"), 0);
        assert_eq!(shares.cap("one"), 5);
        // A batch that wanted nothing when the pass began gets nothing in it.
        assert_eq!(shares.cap("late"), 0);
    }

    #[test]
    fn one_tenant_with_one_batch_may_take_every_credit() {
        let shares = FairShares::new(64, std::iter::once("default"));
        assert_eq!(shares.cap("default"), 64);
        // Fewer credits than batches: each may still claim one.
        let shares = FairShares::new(2, ["a", "a", "a", "b"].into_iter());
        assert_eq!(shares.cap("a"), 1);
        assert_eq!(shares.cap("b"), 1);
    }
}
