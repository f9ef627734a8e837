//! Routing: claimed ops to the worker that takes them, with their
//! templates filled in; parked or handed back when none can.

use std::collections::HashMap;
use std::sync::Arc;

use tracing::{debug, warn};
use volley_kinds::Reference;
use volley_proto::v1;
use volley_store::{Claimed, Completion, OpRecord};

use super::batches::{DECLINE_HOLD_OFF, DECLINE_HOLD_OFF_MAX};
use super::claim::permanent_failure;
use super::{BatchResults, Dispatcher};
use crate::plans::PlannedBatch;
use crate::service::now_ms;

/// Where one route's ops went.
#[derive(Default)]
struct Routed {
    /// Assignments by worker connection, sent as one message each.
    outgoing: HashMap<u64, Vec<v1::Assignment>>,
    /// Sent ops claimed at the route's `claimed_at`.
    sent_fresh: usize,
    /// Sent ops that waited parked, since their own claim.
    sent_parked: Vec<tokio::time::Instant>,
    /// No connected worker takes them, and none elsewhere either: kept.
    parked: Vec<Claimed>,
    /// Only workers of other coordinators take them: handed back.
    declined: Vec<Claimed>,
    /// Their args could not be filled in: failed for good.
    failed: Vec<Completion>,
}

impl Dispatcher {
    /// Sends claimed ops to workers, many per message; parks what no worker
    /// can take now. `claimed_at`: when the claim that took them started
    /// (the dispatch latency's start; a parked op keeps its own).
    pub(super) async fn route(
        &mut self,
        planned: &Arc<PlannedBatch>,
        claimed: Vec<Claimed>,
        claimed_at: tokio::time::Instant,
    ) {
        let total = claimed.len();
        // Templates are filled (a store read) only for ops some worker can
        // take now: a parked op is filled when it leaves the parking.
        let routable = self.routable(planned, &claimed);
        let fill: Vec<Claimed> = claimed
            .iter()
            .zip(&routable)
            .filter(|(_, routable)| **routable)
            .map(|(claim, _)| *claim)
            .collect();
        let mut args = self.fill_templates(planned, &fill).await.into_iter();
        let mut routed = Routed::default();
        for (claim, routable) in claimed.into_iter().zip(routable) {
            if !routable {
                self.no_worker_for(planned, claim, &mut routed);
                continue;
            }
            match args.next() {
                Some(Ok(args_json)) => self.assign(planned, claim, args_json, &mut routed),
                Some(Err(error)) => routed.failed.push(permanent_failure(&claim, error)),
                None => self.no_worker_for(planned, claim, &mut routed),
            }
        }
        let Routed {
            outgoing,
            sent_fresh,
            sent_parked,
            parked,
            declined,
            failed,
        } = routed;
        self.send_assignments(outgoing).await;
        self.record_dispatch_latency(claimed_at, sent_fresh, sent_parked);
        self.park(planned, parked, declined.len(), total, claimed_at);
        if !declined.is_empty() {
            self.hand_back(planned, declined).await;
        }
        if !failed.is_empty() {
            self.fail_permanently(planned, failed).await;
        }
    }

    /// Per claimed op, whether a connected worker with a free slot takes
    /// it now. Slots only run out while routing, so an op without one here
    /// finds none later in the same route either. Every op counts as
    /// routable when none has templates: no store read to save, so no
    /// second pass over the workers.
    fn routable(&self, planned: &PlannedBatch, claimed: &[Claimed]) -> Vec<bool> {
        let ops = &planned.plan.ops;
        if !claimed
            .iter()
            .any(|claim| ops[claim.index as usize].has_templates)
        {
            return vec![true; claimed.len()];
        }
        claimed
            .iter()
            .map(|claim| {
                let op = &ops[claim.index as usize];
                self.workers.values().any(|worker| {
                    worker.free > 0 && !worker.draining && worker.accepts(&op.kind, &op.requires)
                })
            })
            .collect()
    }

    /// An op none of our workers can take now: handed back when a worker
    /// of another coordinator runs it, else parked here.
    fn no_worker_for(&self, planned: &PlannedBatch, claim: Claimed, routed: &mut Routed) {
        let op = &planned.plan.ops[claim.index as usize];
        if self.elsewhere_accepts(&op.kind, &op.requires) {
            routed.declined.push(claim);
        } else {
            routed.parked.push(claim);
        }
    }

    /// Gives the op to the connected worker with the most free slots that
    /// accepts it: its credit, its books and its ledger, and the
    /// assignment (with the op's capability token and lease ticket) queued
    /// for it.
    fn assign(
        &mut self,
        planned: &PlannedBatch,
        claim: Claimed,
        args_json: String,
        routed: &mut Routed,
    ) {
        let op = &planned.plan.ops[claim.index as usize];
        let chosen = self
            .workers
            .iter()
            .filter(|(_, worker)| {
                worker.free > 0 && !worker.draining && worker.accepts(&op.kind, &op.requires)
            })
            .max_by_key(|(_, worker)| worker.free)
            .map(|(conn, _)| *conn);
        let Some(conn) = chosen else {
            self.no_worker_for(planned, claim, routed);
            return;
        };
        // Most routes hold no parked op: then no per-op lookup at all.
        let parked_since = self.batches.get_mut(&planned.id).and_then(|active| {
            if active.parked_since.is_empty() {
                None
            } else {
                active.parked_since.remove(&(claim.index, claim.attempt))
            }
        });
        match parked_since {
            Some(since) => routed.sent_parked.push(since),
            None => routed.sent_fresh += 1,
        }
        let Some(worker) = self.workers.get_mut(&conn) else {
            return;
        };
        worker.free -= 1;
        worker
            .running
            .insert((planned.id.clone(), claim.index), claim.attempt);
        worker.ledger.give(&planned.id, claim.index, claim.attempt);
        let token = self
            .auth
            .capability(&planned.tenant, &planned.id, claim.index, claim.attempt);
        routed
            .outgoing
            .entry(conn)
            .or_default()
            .push(v1::Assignment {
                batch_id: planned.id.to_string(),
                op_index: claim.index,
                op_id: op.id.to_string(),
                kind: op.kind.clone(),
                args_json,
                attempt: claim.attempt,
                timeout_ms: op.timeout_ms,
                max_output_bytes: op.max_output_bytes,
                trace_context: planned.trace.dispatch(
                    &planned.id,
                    op.id.as_str(),
                    &op.kind,
                    claim.attempt,
                    &worker.worker_id,
                ),
                namespace: planned.plan.namespace.clone().unwrap_or_default(),
                token,
                lease_ticket: self.auth.lease_ticket(
                    &planned.id,
                    claim.index,
                    claim.attempt,
                    &worker.holder,
                ),
            });
    }

    /// One `Assignments` message per worker. A worker whose channel is
    /// full is stuck: it is dropped and what it ran is orphaned.
    async fn send_assignments(&mut self, outgoing: HashMap<u64, Vec<v1::Assignment>>) {
        for (conn, assignments) in outgoing {
            let Some(worker) = self.workers.get(&conn) else {
                continue;
            };
            let message = v1::CoordinatorMessage {
                msg: Some(v1::coordinator_message::Msg::Assignments(v1::Assignments {
                    assignments,
                })),
            };
            // Assignments never exceed the worker's slots, so its channel
            // (sized by slots) has room; if not, the worker is stuck.
            if let Err(error) = worker.outbound.try_send(message) {
                warn!(worker = %worker.worker_id, %error, "worker not taking assignments; dropping it");
                if let Some(worker) = self.workers.remove(&conn) {
                    self.publish_kinds();
                    Box::pin(self.orphan(worker, now_ms(), "it stopped taking assignments")).await;
                }
            }
        }
    }

    /// From claim to send: fresh ops from `claimed_at`, once-parked ones
    /// from their own claim.
    fn record_dispatch_latency(
        &self,
        claimed_at: tokio::time::Instant,
        sent_fresh: usize,
        sent_parked: Vec<tokio::time::Instant>,
    ) {
        let sent_at = tokio::time::Instant::now();
        if sent_fresh > 0 {
            self.metrics
                .dispatch_latency
                .record_many(sent_at.duration_since(claimed_at), sent_fresh);
        }
        for since in sent_parked {
            self.metrics
                .dispatch_latency
                .record(sent_at.duration_since(since));
        }
    }

    /// Keeps `parked` on the batch (each with the time of its claim), and
    /// holds the batch's claims off when all `total` ops of the route were
    /// `declined`: nothing here for our workers, let the others claim first.
    fn park(
        &mut self,
        planned: &PlannedBatch,
        parked: Vec<Claimed>,
        declined: usize,
        total: usize,
        claimed_at: tokio::time::Instant,
    ) {
        let Some(active) = self.batches.get_mut(&planned.id) else {
            return;
        };
        if !parked.is_empty() {
            debug!(batch = %planned.id, parked = parked.len(), "no worker for some ops yet");
        }
        for claim in &parked {
            active
                .parked_since
                .entry((claim.index, claim.attempt))
                .or_insert(claimed_at);
        }
        active.parked.extend(parked);
        if declined > 0 && declined == total {
            active.claim_after = Some(tokio::time::Instant::now() + active.hold_off);
            active.hold_off = (active.hold_off * 2).min(DECLINE_HOLD_OFF_MAX);
        } else if declined < total {
            active.hold_off = DECLINE_HOLD_OFF;
        }
    }

    /// Hands ops only other coordinators' workers run back to the queue
    /// (without costing an attempt), for those coordinators to claim.
    async fn hand_back(&mut self, planned: &PlannedBatch, declined: Vec<Claimed>) {
        debug!(batch = %planned.id, ops = declined.len(), "only workers of other coordinators run these ops: handing them back");
        if let Err(error) = self
            .store
            .return_ops(&planned.id, &declined, now_ms())
            .await
        {
            warn!(batch = %planned.id, %error, "could not hand ops back; their leases run out instead");
        }
        let indices = declined.iter().map(|claim| claim.index).collect();
        self.apply_results(BatchResults {
            batch: planned.id.clone(),
            indices,
            outcome: None,
        });
    }

    /// The args of each claimed op as JSON, `${…}` filled in from the outputs
    /// and states of the ops they refer to and the batch's memory. One store
    /// read serves every claimed op.
    pub(super) async fn fill_templates(
        &self,
        planned: &PlannedBatch,
        claimed: &[Claimed],
    ) -> Vec<Result<String, String>> {
        let ops = &planned.plan.ops;
        let needs_records = claimed
            .iter()
            .any(|claim| ops[claim.index as usize].has_templates);
        if !needs_records {
            return claimed
                .iter()
                .map(|claim| Ok(ops[claim.index as usize].args.to_string()))
                .collect();
        }
        // Only the ops the templates refer to: their dependencies.
        let mut referenced: Vec<u32> = claimed
            .iter()
            .map(|claim| &ops[claim.index as usize])
            .filter(|op| op.has_templates)
            .flat_map(|op| op.deps.iter().copied())
            .collect();
        referenced.sort_unstable();
        referenced.dedup();
        let records = match self.store.op_records_at(&planned.id, &referenced).await {
            Ok(records) => records,
            Err(error) => {
                let message = format!("could not read inputs: {error}");
                return claimed.iter().map(|_| Err(message.clone())).collect();
            }
        };
        let record_of: HashMap<&str, &OpRecord> = referenced
            .iter()
            .zip(&records)
            .map(|(index, record)| (ops[*index as usize].id.as_str(), record))
            .collect();
        // Memory keys are read once per route, not once per op naming them.
        let scope = planned.memory_scope();
        let mut memory: HashMap<String, Option<String>> = HashMap::new();
        let mut results = Vec::with_capacity(claimed.len());
        for claim in claimed {
            let op = &ops[claim.index as usize];
            if !op.has_templates {
                results.push(Ok(op.args.to_string()));
                continue;
            }
            if let Ok(references) = volley_kinds::template::references(&op.args) {
                for reference in references {
                    if let Reference::Memory(key) = reference
                        && !memory.contains_key(&key)
                    {
                        let value = self.store.memory_get(&scope, &key).await.ok().flatten();
                        memory.insert(
                            key,
                            value.map(|value| String::from_utf8_lossy(&value.value).into_owned()),
                        );
                    }
                }
            }
            let lookup = |reference: &Reference| -> Option<String> {
                match reference {
                    // Trailing newlines dropped, as a shell's `$(…)` does:
                    // `echo hi` fills in `hi`. Reports keep the raw output.
                    Reference::OpOutput(id) => record_of
                        .get(id.as_str())
                        .map(|record| record.output.trim_end_matches('\n').to_owned()),
                    Reference::OpStatus(id) => record_of
                        .get(id.as_str())
                        .map(|record| record.state.word().to_owned()),
                    Reference::Memory(key) => memory.get(key).cloned().flatten(),
                    // Never filled here: the worker puts secrets into the
                    // program's environment (see `render_command`).
                    Reference::Secret(_) => None,
                }
            };
            // A program's `cmd` gets its values through the environment,
            // never as text the shell would parse (see `render_command`).
            let rendered = if volley_kinds::HOST_PROGRAM_KINDS.contains(&op.kind.as_str()) {
                volley_kinds::template::render_command(&op.args, &lookup)
            } else {
                volley_kinds::template::render(&op.args, &lookup)
            };
            results.push(
                rendered
                    .map(|value| value.to_string())
                    .map_err(|error| format!("cannot fill in the op's args: {error}")),
            );
        }
        results
    }
}
